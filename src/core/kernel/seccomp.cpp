#include "core/kernel/seccomp.hpp"

#include <fcntl.h>
#include <linux/audit.h>
#include <linux/netlink.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <set>
#include <unordered_set>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/base/unique_fd.hpp"
#include "core/kernel/capabilities.hpp"
#include "core/kernel/syscall_groups.hpp"

namespace mk::core {

namespace {

// A name or @group, allowed only when `cap` (if non-zero) is retained. This is nspawn v252's
// seccomp_add_default_syscall_filter() list [v252:src/nspawn/nspawn-seccomp.c].
struct AllowItem {
    int cap;  // -1: unconditional
    std::string_view name;
};

constexpr AllowItem kDefaultAllow[] = {
    {-1, "@aio"},
    {-1, "@basic-io"},
    {-1, "@chown"},
    {-1, "@default"},
    {-1, "@file-system"},
    {-1, "@io-event"},
    {-1, "@ipc"},
    {-1, "@mount"},
    {-1, "@network-io"},
    {-1, "@process"},
    {-1, "@resources"},
    {-1, "@setuid"},
    {-1, "@signal"},
    {-1, "@sync"},
    {-1, "@timer"},
    // Groups that only make sense when the matching capability is kept.
    {CAP_SYS_TIME, "@clock"},
    {CAP_SYS_MODULE, "@module"},
    {CAP_SYS_RAWIO, "@raw-io"},
    {CAP_IPC_LOCK, "@memlock"},
    // Syscalls in none of the groups above.
    {-1, "brk"},
    {-1, "capget"},
    {-1, "capset"},
    {-1, "copy_file_range"},
    {-1, "fadvise64"},
    {-1, "fadvise64_64"},
    {-1, "flock"},
    {-1, "get_mempolicy"},
    {-1, "getcpu"},
    {-1, "getpriority"},
    {-1, "getrandom"},
    {-1, "ioctl"},
    {-1, "ioprio_get"},
    {-1, "kcmp"},
    {-1, "madvise"},
    {-1, "mincore"},
    {-1, "mprotect"},
    {-1, "mremap"},
    {-1, "name_to_handle_at"},
    {-1, "oldolduname"},
    {-1, "olduname"},
    {-1, "personality"},
    {-1, "readahead"},
    {-1, "readdir"},
    {-1, "remap_file_pages"},
    {-1, "sched_get_priority_max"},
    {-1, "sched_get_priority_min"},
    {-1, "sched_getaffinity"},
    {-1, "sched_getattr"},
    {-1, "sched_getparam"},
    {-1, "sched_getscheduler"},
    {-1, "sched_rr_get_interval"},
    {-1, "sched_rr_get_interval_time64"},
    {-1, "sched_yield"},
    {-1, "seccomp"},
    {-1, "sendfile"},
    {-1, "sendfile64"},
    {-1, "setdomainname"},
    {-1, "setfsgid"},
    {-1, "setfsgid32"},
    {-1, "setfsuid"},
    {-1, "setfsuid32"},
    {-1, "sethostname"},
    {-1, "setpgid"},
    {-1, "setsid"},
    {-1, "splice"},
    {-1, "sysinfo"},
    {-1, "tee"},
    {-1, "umask"},
    {-1, "uname"},
    {-1, "userfaultfd"},
    {-1, "vmsplice"},
    // Single syscalls tied to a capability.
    {CAP_SYS_PACCT, "acct"},
    {CAP_SYS_PTRACE, "process_vm_readv"},
    {CAP_SYS_PTRACE, "process_vm_writev"},
    {CAP_SYS_PTRACE, "ptrace"},
    {CAP_SYS_BOOT, "reboot"},
    {CAP_SYSLOG, "syslog"},
    {CAP_SYS_TTY_CONFIG, "vhangup"},
};

// Capabilities that change the filter; the others are masked out of the policy key so that, e.g.,
// the default set with and without CAP_NET_ADMIN share one program.
constexpr uint64_t relevant_caps() {
    uint64_t m = 0;
    for (const auto& a : kDefaultAllow)
        if (a.cap >= 0) m |= cap_bit(a.cap);
    return m;
}

// Order as systemd's seccomp_local_archs: native last (see seccomp_compile()).
constexpr uint32_t kArchs[] = {SCMP_ARCH_X86, SCMP_ARCH_X32, SCMP_ARCH_X86_64};

// Arches consulted when validating a user-given name: any arch libseccomp supports.
constexpr uint32_t kAllArchs[] = {
    SCMP_ARCH_X86,    SCMP_ARCH_X86_64,    SCMP_ARCH_X32,      SCMP_ARCH_ARM,     SCMP_ARCH_AARCH64, SCMP_ARCH_MIPS,
    SCMP_ARCH_MIPS64, SCMP_ARCH_MIPS64N32, SCMP_ARCH_PPC,      SCMP_ARCH_PPC64,   SCMP_ARCH_PPC64LE, SCMP_ARCH_S390,
    SCMP_ARCH_S390X,  SCMP_ARCH_PARISC,    SCMP_ARCH_PARISC64, SCMP_ARCH_RISCV64,
};

const SyscallGroup* find_group(std::string_view name) {
    for (const auto& g : syscall_groups())
        if (g.name == name) return &g;
    return nullptr;
}

// Appends the syscall names `item` stands for (itself, or a group's members, recursively).
void expand(std::string_view item, std::vector<std::string_view>& out, int depth = 0) {
    if (!item.starts_with('@')) {
        out.push_back(item);
        return;
    }
    const SyscallGroup* g = find_group(item);
    if (!g || depth > 8) return;  // parse_syscall_filter() rejected unknown groups already
    for (auto sub : g->items) expand(sub, out, depth + 1);
}

bool name_is_known(std::string_view name) {
    std::vector<std::string_view> all;
    expand("@known", all);
    if (std::find(all.begin(), all.end(), name) != all.end()) return true;
    const std::string s(name);
    for (uint32_t arch : kAllArchs)
        if (seccomp_syscall_resolve_name_arch(arch, s.c_str()) != __NR_SCMP_ERROR) return true;
    return false;
}

// The policy as an ordered list of (name, action): allow-list first, then the explicit denies,
// then EPERM for every other name systemd knows. The first rule for a syscall number wins.
struct Rule {
    std::string_view name;
    uint32_t action;
};

std::vector<Rule> policy_rules(const SeccompPolicy& p) {
    std::vector<std::string_view> deny;
    for (const auto& d : p.deny) expand(d, deny);
    const std::unordered_set<std::string_view> denied(deny.begin(), deny.end());

    std::vector<Rule> rules;
    auto allow = [&](std::string_view item) {
        std::vector<std::string_view> names;
        expand(item, names);
        for (auto n : names)
            if (!denied.contains(n)) rules.push_back({n, SCMP_ACT_ALLOW});
    };
    for (const auto& a : kDefaultAllow)
        if (a.cap < 0 || (p.retained_caps & cap_bit(a.cap))) allow(a.name);
    for (const auto& a : p.allow_extra) allow(a);
    for (auto n : deny) rules.push_back({n, SCMP_ACT_ERRNO(EPERM)});
    std::vector<std::string_view> known;
    expand("@known", known);
    for (auto n : known) rules.push_back({n, SCMP_ACT_ERRNO(EPERM)});
    return rules;
}

struct CtxDeleter {
    void operator()(void* ctx) const noexcept { seccomp_release(ctx); }
};
using Ctx = std::unique_ptr<void, CtxDeleter>;

void check_scmp(int r, const std::string& what) {
    if (r < 0) throw_errno(-r, what);
}

// A filter for one arch only; foreign arches pass through (the filter for that arch judges them).
Ctx new_ctx(uint32_t arch, uint32_t default_action) {
    Ctx ctx(seccomp_init(default_action));
    if (!ctx) throw_errno(ENOMEM, "seccomp_init");
    if (arch != seccomp_arch_native()) {
        check_scmp(seccomp_arch_remove(ctx.get(), seccomp_arch_native()), "seccomp_arch_remove");
        check_scmp(seccomp_arch_add(ctx.get(), arch), "seccomp_arch_add");
    }
    check_scmp(seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_ALLOW), "seccomp_attr_set");
    // We never seccomp_load(); no_new_privs is the launcher's decision.
    check_scmp(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0), "seccomp_attr_set");
    // A binary tree over syscall numbers instead of a linear scan: besides faster syscalls, this
    // makes loading ~2x cheaper, because the kernel (5.11+) runs the filter for every syscall
    // number of the arch at load time to build its allow-bitmap cache.
    check_scmp(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2), "seccomp_attr_set");
    return ctx;
}

BpfProgram export_bpf(const Ctx& ctx) {
    // libseccomp 2.5 only exports to an fd (seccomp_export_bpf_mem() is 2.6).
    UniqueFd fd(memfd_create("mk-seccomp-bpf", MFD_CLOEXEC));
    if (!fd) throw_last_error("memfd_create");
    check_scmp(seccomp_export_bpf(ctx.get(), fd.get()), "seccomp_export_bpf");
    struct stat st {};
    check(fstat(fd.get(), &st), "fstat");
    if (st.st_size <= 0 || st.st_size % sizeof(sock_filter) != 0 || st.st_size > BPF_MAXINSNS * 8)
        throw_errno(EBADMSG, "seccomp_export_bpf: unexpected program size");
    BpfProgram prog;
    prog.insns.resize(st.st_size / sizeof(sock_filter));
    size_t done = 0;
    auto* buf = reinterpret_cast<char*>(prog.insns.data());
    while (done < size_t(st.st_size)) {
        ssize_t n = retry_eintr([&] { return pread(fd.get(), buf + done, st.st_size - done, off_t(done)); });
        if (n <= 0) throw_errno(n < 0 ? errno : EIO, "reading the exported seccomp program");
        done += size_t(n);
    }
    return prog;
}

BpfProgram compile_main(uint32_t arch, const std::vector<Rule>& rules) {
    // ENOSYS for what nobody knows, so that glibc's fallbacks for new syscalls (clone3,
    // faccessat2, ...) keep working; known-but-denied gets EPERM (T-20).
    Ctx ctx = new_ctx(arch, SCMP_ACT_ERRNO(ENOSYS));
    std::unordered_set<std::string_view> done;
    for (const auto& r : rules) {
        if (!done.insert(r.name).second) continue;  // the first rule for a name wins
        const std::string name(r.name);
        // Resolve with the native table and let libseccomp translate by name to the filter's arch
        // (resolving per arch yields numbers seccomp_rule_add_exact() rejects for x86/x32).
        int nr = seccomp_syscall_resolve_name(name.c_str());
        if (nr == __NR_SCMP_ERROR) continue;
        int err = seccomp_rule_add_exact(ctx.get(), r.action, nr, 0);
        // EDOM: no such syscall on this arch; EEXIST: an alias of a number that already has a rule.
        if (err == -EDOM || err == -EEXIST) continue;
        check_scmp(err, "seccomp_rule_add_exact(" + name + ")");
    }
    return export_bpf(ctx);
}

// TIOCSTI pushes bytes into a terminal's input queue and TIOCLINUX (subcode 2/3: selections)
// can paste; on a terminal of the host (--console=pipe, `machctl shell` on a pipe) either types
// commands into the user's shell, unless the kernel has legacy_tiocsti=0. Container root without
// -U holds CAP_SYS_ADMIN, which passes the kernel's own check. As nspawn and flatpak, refuse both.
//
// The kernel reads the request as `unsigned int`: (0x123UL << 32) | TIOCSTI *is* TIOCSTI to it.
// A rule comparing all 64 bits of the argument never matches that value (CVE-2019-10063, flatpak's
// bypass), so the rule compares the low 32 bits only: every 64-bit value the kernel truncates to
// TIOCSTI is refused.
int add_terminal_ioctl_rules(void* ctx) {
    int nr = seccomp_syscall_resolve_name("ioctl");
    if (nr == __NR_SCMP_ERROR) return 0;
    int added = 0;
    for (unsigned long req : {static_cast<unsigned long>(TIOCSTI), static_cast<unsigned long>(TIOCLINUX)}) {
        scmp_arg_cmp cmp{1, SCMP_CMP_MASKED_EQ, 0xffffffffu, req};
        int e = seccomp_rule_add_exact_array(ctx, SCMP_ACT_ERRNO(EPERM), nr, 1, &cmp);
        if (e == -EDOM || e == -EEXIST) continue;
        check_scmp(e, "seccomp_rule_add(ioctl)");
        added++;
    }
    return added;
}

std::optional<BpfProgram> compile_argument_filters(uint32_t arch) {
    // Argument filters that the main allow-list cannot express (libseccomp will not mix a
    // conditional errno rule with an unconditional allow of the same syscall in one filter).
    Ctx ctx = new_ctx(arch, SCMP_ACT_ALLOW);
    bool any = false;

    // Audit does not work in containers; make userspace notice early (as nspawn). The mask
    // compares only the low 32 bits: the kernel reads these arguments as int.
    int nr = seccomp_syscall_resolve_name("socket");
    int err = seccomp_rule_add_exact(ctx.get(), SCMP_ACT_ERRNO(EAFNOSUPPORT), nr, 2,
                                     SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, AF_NETLINK),
                                     SCMP_A2(SCMP_CMP_MASKED_EQ, 0xffffffffu, NETLINK_AUDIT));
    if (err < 0)
        err = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EAFNOSUPPORT), nr, 2,
                               SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, AF_NETLINK),
                               SCMP_A2(SCMP_CMP_MASKED_EQ, 0xffffffffu, NETLINK_AUDIT));
    // On x86 libseccomp also has to cover socketcall(2), whose arguments sit in memory that BPF
    // cannot read: it refuses with EFAULT, and nspawn skips the filter for that arch as well.
    if (err == 0) any = true;
    else if (err != -EDOM && err != -EOPNOTSUPP && err != -EFAULT) check_scmp(err, "seccomp_rule_add(socket)");

    // No block device nodes: without a devices cgroup of its own, a container that could mknod
    // one would reach the host's disks. Character devices stay possible (CAP_MKNOD is kept).
    struct {
        const char* name;
        unsigned arg;
    } mknods[] = {{"mknod", 1}, {"mknodat", 2}};
    for (const auto& m : mknods) {
        int mnr = seccomp_syscall_resolve_name(m.name);
        if (mnr == __NR_SCMP_ERROR) continue;
        scmp_arg_cmp cmp{m.arg, SCMP_CMP_MASKED_EQ, S_IFMT, S_IFBLK};
        int e = seccomp_rule_add_exact_array(ctx.get(), SCMP_ACT_ERRNO(EPERM), mnr, 1, &cmp);
        if (e == -EDOM || e == -EEXIST) continue;
        check_scmp(e, std::string("seccomp_rule_add(") + m.name + ")");
        any = true;
    }
    if (add_terminal_ioctl_rules(ctx.get()) > 0) any = true;
    if (!any) return std::nullopt;
    return export_bpf(ctx);
}

std::string join_sorted(std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    std::string s;
    for (const auto& x : v) {
        if (!s.empty()) s += ',';
        s += x;
    }
    return s;
}

}  // namespace

void parse_syscall_filter(std::string_view arg, std::vector<std::string>& allow, std::vector<std::string>& deny) {
    constexpr std::string_view kSpace = " \t\n";
    auto trim_front = [&](std::string_view s) {
        size_t i = s.find_first_not_of(kSpace);
        return i == std::string_view::npos ? std::string_view{} : s.substr(i);
    };
    std::string_view s = trim_front(arg);
    bool negate = s.starts_with('~');
    if (negate) s = trim_front(s.substr(1));
    if (s.empty()) throw UsageError("--system-call-filter=: empty list of system calls");

    std::vector<std::string> items;
    while (!(s = trim_front(s)).empty()) {
        size_t end = std::min(s.find_first_of(kSpace), s.size());
        std::string_view item = s.substr(0, end);
        s.remove_prefix(end);
        if (item == "~" || item == "@") throw UsageError("--system-call-filter=: empty item in '" + std::string(arg) + "'");
        if (item.starts_with('@')) {
            if (!find_group(item))
                throw UsageError("unknown system call group '" + std::string(item) +
                                 "'; see 'systemd-analyze syscall-filter' for the list");
        } else if (!name_is_known(item)) {
            throw UsageError("unknown system call '" + std::string(item) +
                             "'; see 'systemd-analyze syscall-filter' for known names");
        }
        items.emplace_back(item);
    }
    auto& out = negate ? deny : allow;
    out.insert(out.end(), items.begin(), items.end());
}

std::string seccomp_policy_key(const SeccompPolicy& p) {
    // The version prefix changes whenever the generated programs change for an unchanged policy
    // (2: the terminal ioctl rules), so that no cache file of an older spawn is loaded.
    char caps[32];
    snprintf(caps, sizeof caps, "%llx", static_cast<unsigned long long>(p.retained_caps & relevant_caps()));
    return std::string("mk-seccomp-2 caps=") + caps + " allow=" + join_sorted(p.allow_extra) +
           " deny=" + join_sorted(p.deny);
}

std::vector<BpfProgram> seccomp_compile(const SeccompPolicy& policy) {
    const std::vector<Rule> rules = policy_rules(policy);
    std::vector<BpfProgram> progs;
    for (uint32_t arch : kArchs)
        if (auto p = compile_argument_filters(arch)) progs.push_back(std::move(*p));
    for (uint32_t arch : kArchs) progs.push_back(compile_main(arch, rules));
    return progs;
}

const std::vector<BpfProgram>& seccomp_terminal_ioctl_filter() {
    // Compiled once per process (a few hundred microseconds); then only loaded.
    static const std::vector<BpfProgram> progs = [] {
        std::vector<BpfProgram> out;
        for (uint32_t arch : kArchs) {
            Ctx ctx = new_ctx(arch, SCMP_ACT_ALLOW);
            if (add_terminal_ioctl_rules(ctx.get()) > 0) out.push_back(export_bpf(ctx));
        }
        return out;
    }();
    return progs;
}

std::vector<std::string> seccomp_allowed_syscalls(const SeccompPolicy& policy) {
    std::set<int> done;
    std::unordered_set<std::string_view> seen;
    std::vector<std::string> out;
    for (const auto& r : policy_rules(policy)) {
        if (!seen.insert(r.name).second) continue;
        const std::string name(r.name);
        int nr = seccomp_syscall_resolve_name_arch(SCMP_ARCH_X86_64, name.c_str());
        if (nr < 0 || !done.insert(nr).second) continue;
        if (r.action == SCMP_ACT_ALLOW) out.push_back(name);
    }
    std::sort(out.begin(), out.end());
    return out;
}

int seccomp_install(const std::vector<BpfProgram>& programs) noexcept {
    for (const auto& p : programs) {
        if (p.insns.empty() || p.insns.size() > BPF_MAXINSNS) return -E2BIG;
        sock_fprog fprog{static_cast<unsigned short>(p.insns.size()), const_cast<sock_filter*>(p.insns.data())};
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) == 0) continue;
        if (errno != ENOSYS) return -errno;
        // Kernels before 3.17 only have the prctl() interface.
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0) < 0) return -errno;
    }
    return 0;
}

std::vector<BpfProgram> seccomp_suppress_sync_programs() {
    std::vector<std::string_view> names;
    expand("@sync", names);
    std::vector<BpfProgram> progs;
    for (uint32_t arch : kArchs) {
        Ctx ctx = new_ctx(arch, SCMP_ACT_ALLOW);
        for (std::string_view n : names) {
            int nr = seccomp_syscall_resolve_name(std::string(n).c_str());
            if (nr == __NR_SCMP_ERROR) continue;
            int err = seccomp_rule_add_exact(ctx.get(), SCMP_ACT_ERRNO(0), nr, 0);
            if (err == -EDOM || err == -EEXIST) continue;
            check_scmp(err, "seccomp_rule_add_exact(" + std::string(n) + ")");
        }
        // O_SYNC includes the O_DSYNC bit, so one masked compare catches both.
        struct {
            const char* name;
            unsigned arg;
        } opens[] = {{"open", 1}, {"openat", 2}};
        for (const auto& o : opens) {
            int nr = seccomp_syscall_resolve_name(o.name);
            if (nr == __NR_SCMP_ERROR) continue;
            scmp_arg_cmp cmp{o.arg, SCMP_CMP_MASKED_EQ, O_DSYNC, O_DSYNC};
            int err = seccomp_rule_add_exact_array(ctx.get(), SCMP_ACT_ERRNO(EINVAL), nr, 1, &cmp);
            if (err == -EDOM || err == -EEXIST) continue;
            check_scmp(err, std::string("seccomp_rule_add(") + o.name + ")");
        }
        progs.push_back(export_bpf(ctx));
    }
    return progs;
}

}  // namespace mk::core
