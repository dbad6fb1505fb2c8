#include "core/kernel/seccomp_oci.hpp"

#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <memory>
#include <set>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::core {
namespace {

struct CtxDeleter {
    void operator()(void* ctx) const noexcept { seccomp_release(ctx); }
};
using Ctx = std::unique_ptr<void, CtxDeleter>;

void check_scmp(int r, const std::string& what) {
    if (r < 0) throw_errno(-r, what);
}

[[noreturn]] void bad(const std::string& field, const std::string& why) {
    throw UsageError("OCI config field 'linux.seccomp." + field + "' is invalid: " + why);
}

uint32_t action_of(const std::string& name, std::optional<uint32_t> errno_ret, const std::string& field) {
    const uint32_t err = errno_ret.value_or(EPERM);
    if (errno_ret && *errno_ret > 4095) bad(field, "errnoRet above 4095");
    if (name == "SCMP_ACT_ALLOW") return SCMP_ACT_ALLOW;
    if (name == "SCMP_ACT_ERRNO") return SCMP_ACT_ERRNO(err);
    if (name == "SCMP_ACT_TRACE") return SCMP_ACT_TRACE(err);
    if (name == "SCMP_ACT_KILL" || name == "SCMP_ACT_KILL_THREAD") return SCMP_ACT_KILL_THREAD;
    if (name == "SCMP_ACT_KILL_PROCESS") return SCMP_ACT_KILL_PROCESS;
    if (name == "SCMP_ACT_TRAP") return SCMP_ACT_TRAP;
    if (name == "SCMP_ACT_LOG") return SCMP_ACT_LOG;
    if (name == "SCMP_ACT_NOTIFY")
        throw UsageError("OCI config field 'linux.seccomp." + field +
                         " SCMP_ACT_NOTIFY' is not supported (no seccomp notify agents)");
    bad(field, "unknown action " + name);
}

uint32_t arch_of(const std::string& name) {
    // "SCMP_ARCH_X86_64" -> libseccomp's "x86_64".
    if (!name.starts_with("SCMP_ARCH_")) bad("architectures", "unknown architecture " + name);
    std::string lower = name.substr(10);
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    uint32_t arch = seccomp_arch_resolve_name(lower.c_str());
    if (arch == 0) bad("architectures", "unknown architecture " + name);
    return arch;
}

scmp_compare op_of(const std::string& op) {
    static const std::pair<const char*, scmp_compare> kOps[] = {{"SCMP_CMP_NE", SCMP_CMP_NE},
                                                                {"SCMP_CMP_LT", SCMP_CMP_LT},
                                                                {"SCMP_CMP_LE", SCMP_CMP_LE},
                                                                {"SCMP_CMP_EQ", SCMP_CMP_EQ},
                                                                {"SCMP_CMP_GE", SCMP_CMP_GE},
                                                                {"SCMP_CMP_GT", SCMP_CMP_GT},
                                                                {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ}};
    for (auto [name, cmp] : kOps)
        if (op == name) return cmp;
    bad("syscalls[].args[].op", "unknown operator " + op);
}

unsigned flag_of(const std::string& f) {
    if (f == "SECCOMP_FILTER_FLAG_TSYNC") return SECCOMP_FILTER_FLAG_TSYNC;
    if (f == "SECCOMP_FILTER_FLAG_LOG") return SECCOMP_FILTER_FLAG_LOG;
    if (f == "SECCOMP_FILTER_FLAG_SPEC_ALLOW") return SECCOMP_FILTER_FLAG_SPEC_ALLOW;
    if (f == "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")
        throw UsageError("OCI config field 'linux.seccomp.flags " + f + "' is not supported (no seccomp notify agents)");
    bad("flags", "unknown flag " + f);
}

BpfProgram export_bpf(void* ctx) {
    // libseccomp 2.5 exports only to an fd (seccomp_export_bpf_mem() is 2.6), as in seccomp.cpp.
    UniqueFd fd(memfd_create("mk-seccomp-oci", MFD_CLOEXEC));
    if (!fd) throw_last_error("memfd_create");
    check_scmp(seccomp_export_bpf(ctx, fd.get()), "seccomp_export_bpf");
    struct stat st {};
    check(fstat(fd.get(), &st), "fstat");
    if (st.st_size <= 0 || st.st_size % sizeof(sock_filter) != 0)
        throw_errno(EBADMSG, "seccomp_export_bpf: unexpected program size");
    if (size_t(st.st_size) / sizeof(sock_filter) > BPF_MAXINSNS)
        throw UsageError(
            "OCI config field 'linux.seccomp' is invalid: the profile compiles to more than 4096 BPF instructions");
    BpfProgram prog;
    prog.insns.resize(st.st_size / sizeof(sock_filter));
    auto* buf = reinterpret_cast<char*>(prog.insns.data());
    for (size_t done = 0; done < size_t(st.st_size);) {
        ssize_t n = retry_eintr([&] { return pread(fd.get(), buf + done, st.st_size - done, off_t(done)); });
        if (n <= 0) throw_errno(n < 0 ? errno : EIO, "reading the exported seccomp program");
        done += size_t(n);
    }
    return prog;
}

}  // namespace

OciSeccompFilter seccomp_oci_compile(const OciSeccomp& p) {
    if (p.default_errno_ret && p.default_action != "SCMP_ACT_ERRNO" && p.default_action != "SCMP_ACT_TRACE")
        bad("defaultErrnoRet", "only for SCMP_ACT_ERRNO or SCMP_ACT_TRACE");
    const uint32_t default_action = action_of(p.default_action, p.default_errno_ret, "defaultAction");
    OciSeccompFilter out;
    for (const auto& f : p.flags) out.flags |= flag_of(f);

    Ctx ctx(seccomp_init(default_action));
    if (!ctx) throw_errno(ENOMEM, "seccomp_init");
    // We export and install ourselves: no_new_privs is the launcher's decision.
    check_scmp(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0), "seccomp_attr_set");
    check_scmp(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2), "seccomp_attr_set");
    for (const auto& a : p.architectures) {
        int r = seccomp_arch_add(ctx.get(), arch_of(a));
        if (r != -EEXIST) check_scmp(r, "seccomp_arch_add " + a);
    }
    for (const auto& rule : p.syscalls) {
        const uint32_t action = action_of(rule.action, rule.errno_ret, "syscalls[].action");
        std::vector<scmp_arg_cmp> conds;
        std::set<uint32_t> indices;
        bool repeated = false;
        for (const auto& a : rule.args) {
            if (a.index > 5) bad("syscalls[].args[].index", "above 5");
            repeated |= !indices.insert(a.index).second;
            conds.push_back(scmp_arg_cmp{a.index, op_of(a.op), a.value, a.value_two});
        }
        if (action == default_action) continue;  // libseccomp refuses it; it changes nothing
        for (const auto& name : rule.names) {
            int nr = seccomp_syscall_resolve_name(name.c_str());
            if (nr == __NR_SCMP_ERROR) continue;  // not known here: skipped, as runc
            int r = 0;
            if (repeated) {
                for (const auto& c : conds)
                    if ((r = seccomp_rule_add_array(ctx.get(), action, nr, 1, &c)) < 0) break;
            } else {
                r = seccomp_rule_add_array(ctx.get(), action, nr, static_cast<unsigned>(conds.size()), conds.data());
            }
            // -EOPNOTSUPP/-EINVAL: a call this arch set cannot express (e.g. a multiplexed socketcall
            // argument filter on x86); runc skips those rules likewise.
            if (r == -EOPNOTSUPP || r == -EINVAL) continue;
            check_scmp(r, "seccomp_rule_add " + name);
        }
    }
    out.program = export_bpf(ctx.get());
    return out;
}

namespace {

// Every field of the profile, unambiguously (lengths before strings).
std::string profile_key(const OciSeccomp& p) {
    std::string k = "oci1";
    auto put = [&](const std::string& s) { k += std::to_string(s.size()) + ":" + s; };
    auto num = [&](uint64_t v) { k += std::to_string(v) + ";"; };
    put(p.default_action);
    num(p.default_errno_ret ? *p.default_errno_ret + 1ull : 0);
    num(p.architectures.size());
    for (const auto& a : p.architectures) put(a);
    num(p.flags.size());
    for (const auto& f : p.flags) put(f);
    num(p.syscalls.size());
    for (const auto& r : p.syscalls) {
        num(r.names.size());
        for (const auto& n : r.names) put(n);
        put(r.action);
        num(r.errno_ret ? *r.errno_ret + 1ull : 0);
        num(r.args.size());
        for (const auto& a : r.args) {
            num(a.index);
            num(a.value);
            num(a.value_two);
            put(a.op);
        }
    }
    return k;
}

}  // namespace

OciSeccompFilter seccomp_oci_programs_for(const OciSeccomp& profile, const std::string& cache_dir) {
    if (cache_dir.empty()) return seccomp_oci_compile(profile);
    OciSeccompFilter out;
    // The flags are not in the program: decoded (and checked) here, cheaply, on hits too.
    for (const auto& f : profile.flags) out.flags |= flag_of(f);
    // A key too long for the cache file (huge profiles) just skips the cache.
    std::string key = profile_key(profile);
    if (key.size() > 256 * 1024) return seccomp_oci_compile(profile);
    auto progs =
        seccomp_cached(key, cache_dir, [&] { return std::vector<BpfProgram>{seccomp_oci_compile(profile).program}; });
    if (progs.size() != 1) return seccomp_oci_compile(profile);
    out.program = std::move(progs[0]);
    return out;
}

int seccomp_oci_install(const OciSeccompFilter& f) noexcept {
    if (f.program.insns.empty() || f.program.insns.size() > BPF_MAXINSNS) return -E2BIG;
    sock_fprog fprog{static_cast<unsigned short>(f.program.insns.size()), const_cast<sock_filter*>(f.program.insns.data())};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, f.flags, &fprog) != 0) return -errno;
    return 0;
}

}  // namespace mk::core
