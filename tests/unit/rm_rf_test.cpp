// The one tree remover (core/base/rm_rf.hpp): deep trees with few fds, mode-0 directories, the
// cgroup mode's directories-only walk, and the refusal to cross into another file system.
#include "core/base/rm_rf.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <system_error>

#include "core/base/unique_fd.hpp"

using namespace mk::core;

namespace {

struct Scratch {
    std::string path;
    UniqueFd fd;
    Scratch() {
        char tmpl[] = "/tmp/mk-rmrf-XXXXXX";
        if (!mkdtemp(tmpl)) throw std::system_error(errno, std::generic_category(), "mkdtemp");
        path = tmpl;
        fd.reset(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    }
    ~Scratch() { (void)rm_rf_at_noexcept(AT_FDCWD, path, kRemoveChmod); }
    bool has(const char* name) const { return faccessat(fd.get(), name, F_OK, AT_SYMLINK_NOFOLLOW) == 0; }
};

}  // namespace

TEST(RmRf, MissingIsSuccess) {
    Scratch s;
    EXPECT_NO_THROW(rm_rf_at(s.fd.get(), "absent", 0));
    EXPECT_EQ(rm_rf_at_noexcept(s.fd.get(), "absent", 0), 0);
}

TEST(RmRf, RemovesAFileAndDoesNotFollowSymlinks) {
    Scratch s;
    ASSERT_EQ(mkdirat(s.fd.get(), "keep", 0755), 0);
    UniqueFd(openat(s.fd.get(), "keep/precious", O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
    ASSERT_EQ(mkdirat(s.fd.get(), "t", 0755), 0);
    ASSERT_EQ(symlinkat((s.path + "/keep").c_str(), s.fd.get(), "t/link"), 0);
    rm_rf_at(s.fd.get(), "t", 0);
    EXPECT_FALSE(s.has("t"));
    EXPECT_TRUE(s.has("keep/precious"));
}

// Deeper than RLIMIT_NOFILE: the remover holds a bounded number of fds whatever the depth.
TEST(RmRf, TreeDeeperThanTheFdLimit) {
    Scratch s;
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        rlimit rl{128, 128};  // the remover holds at most 2 x 32 directory fds
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) _exit(2);
        int cur = dup(s.fd.get());
        for (int i = 0; i < 600; i++) {
            if (mkdirat(cur, "d", 0755) < 0) _exit(3);
            int next = openat(cur, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (next < 0) _exit(4);
            close(cur);
            cur = next;
        }
        close(cur);
        _exit(rm_rf_at_noexcept(s.fd.get(), "d", 0) == 0 ? 0 : 5);
    }
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT_TRUE(WIFEXITED(st));
    EXPECT_EQ(WEXITSTATUS(st), 0);
    EXPECT_FALSE(s.has("d"));
}

// overlayfs leaves work directories of mode 0; kRemoveChmod opens them anyway (also without
// CAP_DAC_OVERRIDE, as rootless spawn runs).
TEST(RmRf, ChmodOpensModeZeroDirectories) {
    Scratch s;
    ASSERT_EQ(mkdirat(s.fd.get(), "w", 0755), 0);
    ASSERT_EQ(mkdirat(s.fd.get(), "w/work", 0755), 0);
    UniqueFd(openat(s.fd.get(), "w/work/f", O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
    ASSERT_EQ(fchmodat(s.fd.get(), "w/work", 0, 0), 0);
    rm_rf_at(s.fd.get(), "w", kRemoveChmod);
    EXPECT_FALSE(s.has("w"));
}

// A temp dir standing in for cgroupfs: directories bottom-up, files unlinked since it is not
// cgroupfs.
TEST(RmRf, CgroupModeOnAPlainDirectory) {
    Scratch s;
    ASSERT_EQ(mkdirat(s.fd.get(), "g", 0755), 0);
    ASSERT_EQ(mkdirat(s.fd.get(), "g/a", 0755), 0);
    ASSERT_EQ(mkdirat(s.fd.get(), "g/a/b", 0755), 0);
    UniqueFd(openat(s.fd.get(), "g/a/cgroup.procs", O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
    EXPECT_EQ(rm_rf_at_noexcept(s.fd.get(), "g", kRemoveCgroup), 0);
    EXPECT_FALSE(s.has("g"));
}

// A mount inside the tree stops the removal with EXDEV and leaves the mounted files alone
// (docs/security.md T-09). Needs a private mount namespace: root only.
TEST(RmRf, StopsAtAMountPoint) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for a private mount namespace";
    Scratch s;
    ASSERT_EQ(mkdirat(s.fd.get(), "t", 0755), 0);
    ASSERT_EQ(mkdirat(s.fd.get(), "t/m", 0755), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        if (unshare(CLONE_NEWNS) < 0) _exit(2);
        if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0) _exit(3);
        std::string m = s.path + "/t/m";
        if (mount("tmpfs", m.c_str(), "tmpfs", 0, nullptr) < 0) _exit(4);
        std::string f = m + "/inside";
        int fd = open(f.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) _exit(5);
        close(fd);
        // An fd opened before unshare() sees the old namespace's mounts: open the scratch anew.
        int dfd = open(s.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int r = rm_rf_at_noexcept(dfd, "t", 0);
        if (r != -EXDEV) _exit(10 + (-r & 0x7f));
        _exit(access(f.c_str(), F_OK) == 0 ? 0 : 6);
    }
    int st = 0;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT_TRUE(WIFEXITED(st));
    EXPECT_EQ(WEXITSTATUS(st), 0);
    EXPECT_TRUE(s.has("t/m"));
}
