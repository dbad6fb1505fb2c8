// Real-kernel tests of the container syscall filter: each case installs the filter in a forked
// child (seccomp is irrevocable) and reports the errno it saw through the exit code.
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/netlink.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <csignal>
#include <time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "core/base/error.hpp"
#include "core/kernel/capabilities.hpp"
#include "core/kernel/seccomp.hpp"

namespace mk::core {
namespace {

constexpr int kInstallFailed = 200;

// Runs `fn` in a child with `progs` installed; returns fn's result (an errno, 0 = success).
int run_filtered(const std::vector<BpfProgram>& progs, const std::function<int()>& fn) {
    pid_t pid = fork();
    if (pid == 0) {
        if (seccomp_install(progs) != 0) _exit(kInstallFailed);
        _exit(fn());
    }
    int status = 0;
    EXPECT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status)) << "status " << status;
    return WEXITSTATUS(status);
}

// errno of a raw syscall, 0 when it succeeded. Raw syscall() so glibc rewrites nothing.
int err_of(long r) { return r < 0 ? errno : 0; }

SeccompPolicy default_policy() { return SeccompPolicy{kDefaultCapabilities, {}, {}}; }

const std::vector<BpfProgram>& default_programs() {
    static const std::vector<BpfProgram> progs = seccomp_programs_for(default_policy(), "");
    return progs;
}

bool same(const std::vector<BpfProgram>& a, const std::vector<BpfProgram>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); i++) {
        if (a[i].insns.size() != b[i].insns.size()) return false;
        if (memcmp(a[i].insns.data(), b[i].insns.data(), a[i].insns.size() * sizeof(sock_filter)) != 0) return false;
    }
    return true;
}

TEST(Seccomp, UnknownSyscallIsEnosys) {
    EXPECT_EQ(run_filtered(default_programs(), [] { return err_of(syscall(1000)); }), ENOSYS);
    EXPECT_EQ(run_filtered(default_programs(), [] { return err_of(syscall(777, 0, 0)); }), ENOSYS);
}

TEST(Seccomp, KnownDeniedSyscallsAreEperm) {
    const auto& p = default_programs();
    EXPECT_EQ(run_filtered(p, [] { return err_of(syscall(SYS_kexec_load, 0, 0, nullptr, 0)); }), EPERM);
    EXPECT_EQ(run_filtered(p, [] { return err_of(syscall(SYS_kexec_file_load, -1, -1, 0, nullptr, 0)); }), EPERM);
    EXPECT_EQ(run_filtered(p, [] { return err_of(syscall(SYS_bpf, 0, nullptr, 0)); }), EPERM);
    EXPECT_EQ(run_filtered(p, [] { return err_of(syscall(SYS_perf_event_open, nullptr, 0, -1, -1, 0)); }), EPERM);
    EXPECT_EQ(run_filtered(p, [] { return err_of(syscall(SYS_open_by_handle_at, -1, nullptr, 0)); }), EPERM);
    EXPECT_EQ(run_filtered(p, [] { return err_of(syscall(SYS_add_key, "user", "x", "y", 1, -3)); }), EPERM);
    EXPECT_EQ(run_filtered(p, [] { return err_of(syscall(SYS_keyctl, 0, -3, 0)); }), EPERM);
    EXPECT_EQ(run_filtered(p, [] { return err_of(syscall(SYS_swapon, "/nonexistent", 0)); }), EPERM);
    EXPECT_EQ(run_filtered(p, [] { return err_of(syscall(SYS_init_module, nullptr, 0, "")); }), EPERM);
    EXPECT_EQ(run_filtered(p, [] { return err_of(syscall(SYS_iopl, 0)); }), EPERM);
    EXPECT_EQ(run_filtered(p, [] { return err_of(syscall(SYS_mlock, nullptr, 0)); }), EPERM);
}

TEST(Seccomp, BasicSyscallsWork) {
    const auto& p = default_programs();
    EXPECT_EQ(run_filtered(p, [] { return err_of(syscall(SYS_getpid)); }), 0);
    EXPECT_EQ(run_filtered(p,
                           [] {
                               int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
                               if (fd < 0) return 100;
                               return err_of(syscall(SYS_write, fd, "x", 1));
                           }),
              0);
    // Kept by nspawn with the default capabilities: ptrace (SYS_PTRACE), name_to_handle_at.
    EXPECT_EQ(run_filtered(p, [] { return err_of(syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0)); }), 0);
    EXPECT_EQ(run_filtered(p, [] { return err_of(syscall(SYS_name_to_handle_at, AT_FDCWD, "/", nullptr, nullptr, 0)); }),
              EFAULT);
}

TEST(Seccomp, NetlinkAuditIsEafnosupport) {
    const auto& p = default_programs();
    EXPECT_EQ(run_filtered(p, [] { return err_of(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_AUDIT)); }),
              EAFNOSUPPORT);
    EXPECT_EQ(run_filtered(p, [] { return err_of(socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_AUDIT)); }),
              EAFNOSUPPORT);
    EXPECT_EQ(run_filtered(p, [] { return err_of(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)); }), 0);
    EXPECT_EQ(run_filtered(p, [] { return err_of(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)); }), 0);
}

// T-22, issue 19 A: no keystrokes into a terminal. The requests go to /dev/null (not a tty): the
// kernel would say ENOTTY, so EPERM can only be the filter's. The kernel reads the request as a
// 32-bit int, so TIOCSTI with garbage in the upper half is TIOCSTI as well (CVE-2019-10063).
int ioctl_errno(unsigned long request) {
    int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd < 0) return 100;
    char c = 'x';
    return err_of(syscall(SYS_ioctl, fd, request, &c));
}

void expect_terminal_ioctls_refused(const std::vector<BpfProgram>& p) {
    constexpr unsigned long kHigh = 0x123UL << 32;
    EXPECT_EQ(run_filtered(p, [] { return ioctl_errno(TIOCSTI); }), EPERM);
    EXPECT_EQ(run_filtered(p, [] { return ioctl_errno(kHigh | TIOCSTI); }), EPERM);
    EXPECT_EQ(run_filtered(p, [] { return ioctl_errno(0xffffffff00000000UL | TIOCSTI); }), EPERM);
    EXPECT_EQ(run_filtered(p, [] { return ioctl_errno(TIOCLINUX); }), EPERM);
    EXPECT_EQ(run_filtered(p, [] { return ioctl_errno(kHigh | TIOCLINUX); }), EPERM);
    // Other terminal ioctls are the kernel's to answer.
    EXPECT_EQ(run_filtered(p, [] { return ioctl_errno(TCGETS); }), ENOTTY);
    EXPECT_EQ(run_filtered(p, [] { return ioctl_errno(kHigh | TCGETS); }), ENOTTY);
    EXPECT_EQ(run_filtered(p, [] { return ioctl_errno(TIOCSTI + 1); }), ENOTTY);  // TIOCGWINSZ
}

TEST(Seccomp, TerminalInjectionIoctlsAreRefusedWhateverTheUpperBits) {
    // Without a filter the kernel truncates: the high-bits variant reaches the tty code (ENOTTY).
    EXPECT_EQ(ioctl_errno((0x123UL << 32) | TIOCSTI), ENOTTY);
    expect_terminal_ioctls_refused(default_programs());
    // Also with the user's own edits, and an explicit allow of ioctl does not lift it.
    SeccompPolicy p = default_policy();
    parse_syscall_filter("ioctl @keyring", p.allow_extra, p.deny);
    expect_terminal_ioctls_refused(seccomp_compile(p));
    // The filter alone, as machd's exec helper installs it.
    expect_terminal_ioctls_refused(seccomp_terminal_ioctl_filter());
}

TEST(Seccomp, ClockFollowsCapSysTime) {
    auto settime = [] { return err_of(syscall(SYS_clock_settime, CLOCK_REALTIME, nullptr)); };
    EXPECT_EQ(run_filtered(default_programs(), settime), EPERM);
    SeccompPolicy with_time{kDefaultCapabilities | cap_bit(CAP_SYS_TIME), {}, {}};
    // Allowed by the filter: the kernel now sees the NULL timespec.
    EXPECT_EQ(run_filtered(seccomp_programs_for(with_time, ""), settime), EFAULT);
}

TEST(Seccomp, DenyEditMakesMkdirEperm) {
    SeccompPolicy p = default_policy();
    parse_syscall_filter("~mkdir mkdirat", p.allow_extra, p.deny);
    auto mk = [] { return err_of(mkdir("/nonexistent-mk-dir/sub", 0755)); };
    EXPECT_EQ(run_filtered(default_programs(), mk), ENOENT);
    EXPECT_EQ(run_filtered(seccomp_compile(p), mk), EPERM);
    // A denied group as well.
    SeccompPolicy q = default_policy();
    parse_syscall_filter("~@basic-io", q.allow_extra, q.deny);
    EXPECT_EQ(run_filtered(seccomp_compile(q), [] { return err_of(syscall(SYS_dup, 0)); }), EPERM);
}

TEST(Seccomp, AllowEditLiftsDenial) {
    SeccompPolicy p = default_policy();
    parse_syscall_filter("perf_event_open @keyring", p.allow_extra, p.deny);
    const auto progs = seccomp_compile(p);
    // Now the kernel sees the NULL attr.
    EXPECT_EQ(run_filtered(progs, [] { return err_of(syscall(SYS_perf_event_open, nullptr, 0, -1, -1, 0)); }), EFAULT);
    EXPECT_NE(run_filtered(progs, [] { return err_of(syscall(SYS_keyctl, 0, -3, 0)); }), EPERM);
    // Deny beats allow, as in nspawn.
    parse_syscall_filter("~perf_event_open", p.allow_extra, p.deny);
    EXPECT_EQ(run_filtered(seccomp_compile(p), [] { return err_of(syscall(SYS_perf_event_open, nullptr, 0, -1, -1, 0)); }),
              EPERM);
}

#if defined(__x86_64__)
long int80(long nr, long a = 0, long b = 0, long c = 0, long d = 0) {
    long ret;
    asm volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d) : "memory", "r8", "r9", "r10", "r11");
    return ret;
}

// A kernel booted with ia32_emulation=0 (or built without it) answers `int $0x80` with a general
// protection fault, i.e. SIGSEGV: probe in a child.
bool has_ia32_emulation() {
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);  // die quietly, also under AddressSanitizer's SEGV report
        _exit(int80(20 /* i386 getpid */) == getpid() ? 0 : 1);
    }
    int status = 0;
    return waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST(Seccomp, I386AbiIsFiltered) {
    if (!has_ia32_emulation()) GTEST_SKIP() << "no IA-32 emulation in this kernel";
    const auto& p = default_programs();
    EXPECT_EQ(run_filtered(p, [] { return int80(20) > 0 ? 0 : 1; }), 0);
    EXPECT_EQ(run_filtered(p, [] { return int(-int80(283 /* i386 kexec_load */)); }), EPERM);
    EXPECT_EQ(run_filtered(p, [] { return int(-int80(357 /* i386 bpf */)); }), EPERM);
    EXPECT_EQ(run_filtered(p, [] { return int(-int80(336 /* i386 perf_event_open */)); }), EPERM);
    EXPECT_EQ(run_filtered(p, [] { return int(-int80(1000)); }), ENOSYS);
}

TEST(Seccomp, TerminalInjectionIoctlsAreRefusedForI386) {
    if (!has_ia32_emulation()) GTEST_SKIP() << "no IA-32 emulation in this kernel";
    for (const auto* progs : {&default_programs(), &seccomp_terminal_ioctl_filter()}) {
        EXPECT_EQ(run_filtered(*progs,
                               [] {
                                   int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
                                   return int(-int80(54 /* i386 ioctl */, fd, TIOCSTI, 0));
                               }),
                  EPERM);
        // Not a terminal: the kernel's answer for another request.
        EXPECT_EQ(run_filtered(*progs,
                               [] {
                                   int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
                                   return int(-int80(54, fd, TCGETS, 0));
                               }),
                  ENOTTY);
    }
}
#endif

TEST(Seccomp, PrecompiledMatchesFreshCompile) {
    for (uint64_t caps : {kDefaultCapabilities, kDefaultCapabilities | cap_bit(CAP_NET_ADMIN)}) {
        SeccompPolicy p{caps, {}, {}};
        auto pre = seccomp_precompiled(p);
        ASSERT_TRUE(pre.has_value()) << "no build-time program for caps " << std::hex << caps;
        EXPECT_TRUE(same(*pre, seccomp_compile(p))) << "rebuild: the precompiled table is stale";
    }
    EXPECT_FALSE(seccomp_precompiled(SeccompPolicy{kDefaultCapabilities | cap_bit(CAP_SYS_TIME), {}, {}}));
}

TEST(Seccomp, PolicyKeyIgnoresIrrelevantCapsAndOrder) {
    SeccompPolicy a{kDefaultCapabilities, {"b", "a"}, {}};
    SeccompPolicy b{kDefaultCapabilities | cap_bit(CAP_NET_ADMIN), {"a", "b", "a"}, {}};
    EXPECT_EQ(seccomp_policy_key(a), seccomp_policy_key(b));
    SeccompPolicy c{kDefaultCapabilities | cap_bit(CAP_SYS_TIME), {"a", "b"}, {}};
    EXPECT_NE(seccomp_policy_key(a), seccomp_policy_key(c));
}

class SeccompCache : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/mk-seccomp-test.XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        root_ = tmpl;
        dir_ = root_ + "/sub/seccomp";  // not there yet: must be created
    }
    void TearDown() override { std::filesystem::remove_all(root_); }
    std::vector<std::filesystem::path> files() const {
        std::vector<std::filesystem::path> v;
        if (std::filesystem::exists(dir_))
            for (const auto& e : std::filesystem::directory_iterator(dir_)) v.push_back(e.path());
        return v;
    }
    std::string root_, dir_;
};

TEST_F(SeccompCache, DefaultPolicyNeedsNoCache) {
    EXPECT_TRUE(same(seccomp_programs_for(default_policy(), dir_), default_programs()));
    EXPECT_TRUE(files().empty());
}

TEST_F(SeccompCache, WritesOnceAndReuses) {
    SeccompPolicy p{kDefaultCapabilities | cap_bit(CAP_SYS_TIME), {"perf_event_open"}, {}};
    const auto fresh = seccomp_compile(p);
    EXPECT_TRUE(same(seccomp_programs_for(p, dir_), fresh));
    auto f = files();
    ASSERT_EQ(f.size(), 1u);
    EXPECT_EQ(f[0].extension(), ".bpf");
    struct stat st1 {
    }, st2{};
    ASSERT_EQ(stat(f[0].c_str(), &st1), 0);
    EXPECT_TRUE(same(seccomp_programs_for(p, dir_), fresh));
    ASSERT_EQ(stat(f[0].c_str(), &st2), 0);
    EXPECT_EQ(st1.st_ino, st2.st_ino) << "cache file was rewritten instead of reused";
    EXPECT_EQ(files().size(), 1u);
    // A different policy gets its own file.
    p.deny.push_back("mkdir");
    seccomp_programs_for(p, dir_);
    EXPECT_EQ(files().size(), 2u);
}

TEST_F(SeccompCache, CorruptFileIsRebuilt) {
    SeccompPolicy p{kDefaultCapabilities | cap_bit(CAP_SYS_TIME), {}, {}};
    const auto fresh = seccomp_compile(p);
    seccomp_programs_for(p, dir_);
    auto f = files();
    ASSERT_EQ(f.size(), 1u);
    const auto full = std::filesystem::file_size(f[0]);
    for (auto damage : {0, 1, 2}) {
        if (damage == 0) std::filesystem::resize_file(f[0], full / 2);  // torn write
        if (damage == 1) std::filesystem::resize_file(f[0], 0);
        if (damage == 2) {  // flipped bit in an instruction
            std::fstream s(f[0], std::ios::in | std::ios::out | std::ios::binary);
            s.seekp(std::streamoff(full / 2));
            s.put('\x5a');
        }
        EXPECT_TRUE(same(seccomp_programs_for(p, dir_), fresh)) << "damage " << damage;
        EXPECT_EQ(std::filesystem::file_size(f[0]), full) << "damage " << damage;
    }
    EXPECT_EQ(files().size(), 1u);  // no temp files left behind
}

TEST(SeccompParse, Lists) {
    std::vector<std::string> allow, deny;
    parse_syscall_filter("@clock  kexec_load\tbpf", allow, deny);
    EXPECT_EQ(allow, (std::vector<std::string>{"@clock", "kexec_load", "bpf"}));
    EXPECT_TRUE(deny.empty());
    parse_syscall_filter("~@mount mkdir", allow, deny);
    EXPECT_EQ(deny, (std::vector<std::string>{"@mount", "mkdir"}));
    parse_syscall_filter("~ chown", allow, deny);
    EXPECT_EQ(deny.back(), "chown");
    // Known to systemd or libseccomp on some arch only.
    parse_syscall_filter("chown32 arm_fadvise64_64", allow, deny);
    EXPECT_EQ(allow.back(), "arm_fadvise64_64");
}

TEST(SeccompParse, Errors) {
    std::vector<std::string> allow, deny;
    auto bad = [&](const char* s) {
        try {
            parse_syscall_filter(s, allow, deny);
        } catch (const UsageError& e) {
            EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
            return std::string(e.what());
        }
        return std::string("no error");
    };
    EXPECT_NE(bad("@nosuchgroup").find("unknown system call group '@nosuchgroup'"), std::string::npos);
    EXPECT_NE(bad("getpid frobnicate").find("unknown system call 'frobnicate'"), std::string::npos);
    EXPECT_NE(bad("").find("empty"), std::string::npos);
    EXPECT_NE(bad("~").find("empty"), std::string::npos);
    EXPECT_NE(bad("   ").find("empty"), std::string::npos);
    EXPECT_NE(bad("getpid @").find("empty"), std::string::npos);
    EXPECT_TRUE(allow.empty());  // nothing appended on error
    EXPECT_TRUE(deny.empty());
}

// T-21: the default allow-list is reviewed data; any drift must show up here.
TEST(Seccomp, DefaultAllowListMatchesGoldenFile) {
    std::ifstream in(MK_TEST_DATA_DIR "/seccomp-default-allow.txt");
    ASSERT_TRUE(in) << "missing golden file";
    std::vector<std::string> golden;
    for (std::string line; std::getline(in, line);)
        if (!line.empty() && line[0] != '#') golden.push_back(line);
    const auto actual = seccomp_allowed_syscalls(default_policy());
    std::ostringstream diff;
    for (const auto& n : actual)
        if (std::find(golden.begin(), golden.end(), n) == golden.end()) diff << " +" << n;
    for (const auto& n : golden)
        if (std::find(actual.begin(), actual.end(), n) == actual.end()) diff << " -" << n;
    EXPECT_EQ(diff.str(), "") << "allow-list drift (update the golden file after review)";
}

// Not an assertion: prints compile vs. load cost for the record.
TEST(Seccomp, TimingReport) {
    using clk = std::chrono::steady_clock;
    auto us = [](clk::duration d) { return std::chrono::duration<double, std::micro>(d).count(); };
    constexpr int kRounds = 20;
    auto t0 = clk::now();
    for (int i = 0; i < kRounds; i++) (void)seccomp_compile(default_policy());
    double compile_us = us(clk::now() - t0) / kRounds;
    t0 = clk::now();
    for (int i = 0; i < kRounds; i++) (void)seccomp_programs_for(default_policy(), "");
    double fetch_us = us(clk::now() - t0) / kRounds;
    int pipefd[2];
    ASSERT_EQ(pipe2(pipefd, O_CLOEXEC), 0);
    const auto progs = default_programs();
    pid_t pid = fork();
    if (pid == 0) {
        auto s = clk::now();
        int r = seccomp_install(progs);
        double v = us(clk::now() - s);
        (void)!write(pipefd[1], &v, sizeof v);
        _exit(r == 0 ? 0 : 1);
    }
    close(pipefd[1]);
    double install_us = -1;
    (void)!read(pipefd[0], &install_us, sizeof install_us);
    close(pipefd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_EQ(status, 0);
    printf("[seccomp timing] compile %.0f us; precompiled fetch %.1f us + install %.1f us\n", compile_us, fetch_us,
           install_us);
}

}  // namespace
}  // namespace mk::core
