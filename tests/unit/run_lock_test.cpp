// RunLock: named locks as locked files in a private directory (issue 19 C). Each test uses its own
// temp directory, so the tests need no root and never touch /run/machkit.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <system_error>

#include "core/base/run_lock.hpp"

namespace mk::core {
namespace {

namespace fs = std::filesystem;

class RunLockTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/mk-runlock-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        base_ = tmpl;
        dir_ = base_ + "/locks";
    }
    void TearDown() override { fs::remove_all(base_); }

    // A child that takes `key` and waits to be killed; returns its pid once it holds the lock.
    pid_t holder(const std::string& key) {
        int p[2];
        EXPECT_EQ(pipe2(p, O_CLOEXEC), 0);
        pid_t pid = fork();
        if (pid == 0) {
            close(p[0]);
            RunLock l = RunLock::try_take(key, dir_);
            char c = l ? 'y' : 'n';
            (void)!write(p[1], &c, 1);
            for (;;) pause();
        }
        close(p[1]);
        char c = 0;
        EXPECT_EQ(read(p[0], &c, 1), 1);
        close(p[0]);
        EXPECT_EQ(c, 'y');
        return pid;
    }
    static void kill_and_reap(pid_t pid) {
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
    }

    std::string base_, dir_;
};

TEST_F(RunLockTest, OneHolderAtATimeAndTheFileGoesWithTheLock) {
    RunLock a = RunLock::try_take("machine/web", dir_);
    ASSERT_TRUE(a);
    EXPECT_TRUE(fs::exists(dir_ + "/machine.web"));
    EXPECT_FALSE(RunLock::try_take("machine/web", dir_));
    EXPECT_TRUE(run_lock_held("machine/web", dir_));
    EXPECT_FALSE(run_lock_held("machine/db", dir_));
    // Another key is independent.
    EXPECT_TRUE(RunLock::try_take("machine/db", dir_));
    a.release();
    EXPECT_FALSE(fs::exists(dir_ + "/machine.web"));
    EXPECT_FALSE(run_lock_held("machine/web", dir_));
    EXPECT_TRUE(RunLock::try_take("machine/web", dir_));
}

TEST_F(RunLockTest, TheDirectoryIsPrivateToItsOwner) {
    ASSERT_TRUE(RunLock::try_take("x", dir_));
    struct stat st;
    ASSERT_EQ(stat(dir_.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    // One made too open by someone else is closed again.
    ASSERT_EQ(chmod(dir_.c_str(), 0755), 0);
    ASSERT_TRUE(RunLock::try_take("x", dir_));
    ASSERT_EQ(stat(dir_.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u);
}

TEST_F(RunLockTest, ASigkilledHolderLeavesNoLockAndTheSweepRemovesItsFile) {
    pid_t pid = holder("machine/gone");
    EXPECT_TRUE(run_lock_held("machine/gone", dir_));
    EXPECT_FALSE(RunLock::try_take("machine/gone", dir_));
    pid_t other = holder("machine/alive");
    kill_and_reap(pid);
    // The kernel dropped the lock; the file stays until someone takes or sweeps it.
    EXPECT_FALSE(run_lock_held("machine/gone", dir_));
    EXPECT_TRUE(fs::exists(dir_ + "/machine.gone"));
    sweep_stale_run_locks(dir_);
    EXPECT_FALSE(fs::exists(dir_ + "/machine.gone"));
    EXPECT_TRUE(fs::exists(dir_ + "/machine.alive")) << "a held lock is never swept";
    EXPECT_TRUE(run_lock_held("machine/alive", dir_));
    kill_and_reap(other);
    // A stale file is simply reused by the next taker.
    RunLock again = RunLock::try_take("machine/alive", dir_);
    EXPECT_TRUE(again);
}

TEST_F(RunLockTest, AskingDoesNotTake) {
    pid_t pid = holder("machine/probe");
    kill_and_reap(pid);  // leaves an unlocked file behind
    EXPECT_FALSE(run_lock_held("machine/probe", dir_));
    EXPECT_TRUE(fs::exists(dir_ + "/machine.probe"));
    EXPECT_TRUE(RunLock::try_take("machine/probe", dir_));
    EXPECT_FALSE(run_lock_held("nothing", base_ + "/missing")) << "no directory: nobody holds anything";
}

TEST_F(RunLockTest, KeysWithPathSyntaxAreRefused) {
    for (const char* bad : {"", ".hidden", "/abs", "a/../b", "a/.x"})
        EXPECT_THROW(RunLock::try_take(bad, dir_), std::system_error) << bad;
}

TEST_F(RunLockTest, DirectoryOfAnotherOwnerIsRefused) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to make a directory someone else owns";
    ASSERT_EQ(mkdir(dir_.c_str(), 0700), 0);
    ASSERT_EQ(chown(dir_.c_str(), 65534, 65534), 0);
    EXPECT_THROW(RunLock::try_take("x", dir_), std::system_error);
}

// Many takers racing on one key with release (unlink) in between: never two holders at once, and
// no file is left once all are done.
TEST_F(RunLockTest, RacingTakersNeverHoldTogether) {
    auto* shared = static_cast<std::atomic<int>*>(
        mmap(nullptr, 2 * sizeof(std::atomic<int>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(shared, MAP_FAILED);
    new (&shared[0]) std::atomic<int>(0);  // holders now
    new (&shared[1]) std::atomic<int>(0);  // overlaps seen
    constexpr int kProcs = 3, kRounds = 400;
    pid_t kids[kProcs];
    for (int i = 0; i < kProcs; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            for (int r = 0; r < kRounds; r++) {
                RunLock l = RunLock::try_take("race", dir_);
                if (!l) continue;
                if (shared[0].fetch_add(1) != 0) shared[1].fetch_add(1);
                shared[0].fetch_sub(1);
            }
            _exit(0);
        }
    }
    for (pid_t k : kids) {
        int st = 0;
        ASSERT_EQ(waitpid(k, &st, 0), k);
        EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    EXPECT_EQ(shared[1].load(), 0);
    EXPECT_FALSE(fs::exists(dir_ + "/race"));
    munmap(shared, 2 * sizeof(std::atomic<int>));
}

}  // namespace
}  // namespace mk::core
