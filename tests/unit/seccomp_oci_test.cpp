// OCI seccomp profiles compiled at run time: loaded in a forked child, the calls they deny must
// fail with the profile's errno and the rest must keep working.
#include "core/kernel/seccomp_oci.hpp"

#include <gtest/gtest.h>
#include <linux/seccomp.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "core/base/error.hpp"

using namespace mk::core;

namespace {

// Runs `body` in a child with the filter installed (no_new_privs first, as an unprivileged
// runtime would); returns the child's exit code (or 128+signal).
int in_child_with(const OciSeccompFilter& f, const std::function<int()>& body) {
    pid_t pid = fork();
    if (pid == 0) {
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) _exit(100);
        if (seccomp_oci_install(f) < 0) _exit(101);
        _exit(body());
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

OciSeccompRule rule(std::vector<std::string> names, std::string action, std::optional<uint32_t> err = {},
                    std::vector<OciSeccompArg> args = {}) {
    return OciSeccompRule{std::move(names), std::move(action), err, std::move(args)};
}

std::string error_of(const OciSeccomp& p) {
    try {
        seccomp_oci_compile(p);
    } catch (const UsageError& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(SeccompOci, DeniesWithTheProfilesErrnoAndComparesMaskedArguments) {
    OciSeccomp p;
    p.default_action = "SCMP_ACT_ALLOW";
    p.architectures = {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"};
    p.syscalls = {
        rule({"mkdirat", "mkdir", "no_such_call_anywhere"}, "SCMP_ACT_ERRNO", ENOSYS),
        // personality(PER_LINUX32) is refused: (arg0 & 0xff) == 8; the query 0xffffffff still works.
        rule({"personality"}, "SCMP_ACT_ERRNO", EINVAL, {{0, 0xff, PER_LINUX32, "SCMP_CMP_MASKED_EQ"}}),
        rule({"getpid"}, "SCMP_ACT_ALLOW"),  // same as the default: dropped
        rule({"rmdir"}, "SCMP_ACT_ERRNO"),   // no errnoRet: EPERM
    };
    OciSeccompFilter f = seccomp_oci_compile(p);
    EXPECT_FALSE(f.program.insns.empty());
    EXPECT_EQ(in_child_with(f,
                            [] {
                                if (mkdir("/tmp/mk-seccomp-oci-never", 0700) == 0 || errno != ENOSYS) return 1;
                                if (personality(PER_LINUX32) != -1 || errno != EINVAL) return 2;
                                if (personality(0xffffffff) == -1) return 3;
                                if (rmdir("/tmp/mk-seccomp-oci-never") == 0 || errno != EPERM) return 4;
                                if (getpid() <= 0) return 5;
                                return 0;
                            }),
              0);
}

TEST(SeccompOci, DefaultErrnoRetAndAllowList) {
    OciSeccomp p;
    p.default_action = "SCMP_ACT_ERRNO";
    p.default_errno_ret = EXDEV;
    // Conditions on one argument twice are ORed (runc): write(1, ...) and write(2, ...) pass.
    // What the child itself needs, and what AddressSanitizer's runtime calls on its way out
    // (sigaltstack, signal masks, madvise): the ASan run of this test installs the same filter.
    p.syscalls = {rule({"exit_group", "exit", "getpid", "rt_sigreturn", "brk", "mmap", "munmap", "sigaltstack",
                        "rt_sigaction", "rt_sigprocmask", "madvise", "mprotect", "futex", "gettid", "prlimit64"},
                       "SCMP_ACT_ALLOW"),
                  rule({"write"}, "SCMP_ACT_ALLOW", {}, {{0, 1, 0, "SCMP_CMP_EQ"}, {0, 2, 0, "SCMP_CMP_EQ"}})};
    p.flags = {"SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_LOG"};
    OciSeccompFilter f = seccomp_oci_compile(p);
    EXPECT_EQ(f.flags, unsigned(SECCOMP_FILTER_FLAG_SPEC_ALLOW | SECCOMP_FILTER_FLAG_LOG));
    EXPECT_EQ(in_child_with(f,
                            [] {
                                if (syscall(SYS_getppid) != -1 || errno != EXDEV) return 1;
                                if (syscall(SYS_write, 3, "", 0) != -1 || errno != EXDEV) return 2;
                                if (syscall(SYS_write, 2, "", 0) != 0) return 3;
                                if (syscall(SYS_write, 1, "", 0) != 0) return 4;
                                return 0;
                            }),
              0);
}

TEST(SeccompOci, KillProcessAction) {
    OciSeccomp p;
    p.default_action = "SCMP_ACT_ALLOW";
    p.syscalls = {rule({"getppid"}, "SCMP_ACT_KILL_PROCESS")};
    OciSeccompFilter f = seccomp_oci_compile(p);
    EXPECT_EQ(in_child_with(f, [] { return static_cast<int>(syscall(SYS_getppid)) < 0 ? 1 : 2; }), 128 + SIGSYS);
}

TEST(SeccompOci, RefusesWhatItCannotHonour) {
    OciSeccomp p;
    p.default_action = "SCMP_ACT_ALLOW";
    EXPECT_EQ(error_of(p), "");
    p.default_action = "SCMP_ACT_BOGUS";
    EXPECT_NE(error_of(p).find("unknown action SCMP_ACT_BOGUS"), std::string::npos);
    p.default_action = "SCMP_ACT_ALLOW";
    p.default_errno_ret = 1;
    EXPECT_NE(error_of(p).find("defaultErrnoRet"), std::string::npos);
    p.default_errno_ret.reset();
    p.architectures = {"SCMP_ARCH_NOPE"};
    EXPECT_NE(error_of(p).find("unknown architecture"), std::string::npos);
    p.architectures = {};
    p.flags = {"SECCOMP_FILTER_FLAG_NOPE"};
    EXPECT_NE(error_of(p).find("unknown flag"), std::string::npos);
    p.flags = {};
    p.syscalls = {rule({"read"}, "SCMP_ACT_NOTIFY")};
    EXPECT_NE(error_of(p).find("SCMP_ACT_NOTIFY' is not supported"), std::string::npos);
    p.syscalls = {rule({"read"}, "SCMP_ACT_ERRNO", {}, {{0, 1, 0, "SCMP_CMP_ALMOST"}})};
    EXPECT_NE(error_of(p).find("unknown operator"), std::string::npos);
    p.syscalls = {rule({"read"}, "SCMP_ACT_ERRNO", 5000)};
    EXPECT_NE(error_of(p).find("errnoRet above 4095"), std::string::npos);
}

TEST(SeccompOci, CachedProgramsEqualFreshOnesAndSurviveCorruption) {
    char tmpl[] = "/tmp/mk-seccomp-oci-cache-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    const std::string dir = tmpl;
    OciSeccomp p;
    p.default_action = "SCMP_ACT_ALLOW";
    p.flags = {"SECCOMP_FILTER_FLAG_LOG"};
    p.syscalls = {rule({"mkdir", "mkdirat"}, "SCMP_ACT_ERRNO", ENOSYS)};
    const OciSeccompFilter fresh = seccomp_oci_compile(p);
    auto same = [&](const OciSeccompFilter& f) {
        return f.flags == fresh.flags && f.program.insns.size() == fresh.program.insns.size() &&
               memcmp(f.program.insns.data(), fresh.program.insns.data(), f.program.insns.size() * sizeof(sock_filter)) == 0;
    };
    EXPECT_TRUE(same(seccomp_oci_programs_for(p, dir)));  // miss: compiled, stored
    std::vector<std::string> files;
    for (const auto& e : std::filesystem::directory_iterator(dir)) files.push_back(e.path());
    ASSERT_EQ(files.size(), 1u);
    EXPECT_TRUE(same(seccomp_oci_programs_for(p, dir)));  // hit
    {
        std::fstream f(files[0], std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(-3, std::ios::end);
        f.put('\x55');
    }
    EXPECT_TRUE(same(seccomp_oci_programs_for(p, dir)));  // corrupt: ignored, recompiled
    OciSeccomp q = p;
    q.syscalls[0].errno_ret = EPERM;  // another profile: another key
    EXPECT_FALSE(same(seccomp_oci_programs_for(q, dir)));
    q.flags = {"SECCOMP_FILTER_FLAG_NOPE"};
    EXPECT_NE(std::string(error_of(q)).find("unknown flag"), std::string::npos);
    std::filesystem::remove_all(dir);
}
