// The container's syscall filter (nspawn v252's defaults plus --system-call-filter= edits), compiled
// to classic BPF once and only *loaded* at container start.
//
// Compilation (libseccomp) costs tens of milliseconds; loading a ready program costs microseconds.
// So seccomp_programs_for() prefers, in order: a program precompiled at build time
// (tools/seccomp-gen.cpp), a cache file, and only then libseccomp.
//
// Thread-safety: everything except seccomp_install() is thread-safe (no shared mutable state).
// seccomp_install() changes the calling thread's seccomp state irrevocably.
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mk::core {

inline constexpr const char* kDefaultSeccompCacheDir = "/var/cache/machkit/seccomp";

struct SeccompPolicy {
    uint64_t retained_caps = 0;            // bit n = CAP_* number n kept by the payload
    std::vector<std::string> allow_extra;  // syscall names or @groups allowed on top of the defaults
    std::vector<std::string> deny;         // names or @groups denied (EPERM); beats any allow
};

struct BpfProgram {
    std::vector<sock_filter> insns;
};

// Parses one --system-call-filter= argument: whitespace-separated names/@groups, allowed, or denied
// when the whole list starts with '~' (as nspawn). Appends to `allow` or `deny`.
// Throws UsageError on an empty item, an unknown @group, or a name neither systemd's @known table
// nor libseccomp (for any arch it supports) knows.
void parse_syscall_filter(std::string_view arg, std::vector<std::string>& allow, std::vector<std::string>& deny);

// A canonical string naming the policy's behaviour: two policies with equal keys compile to the
// same programs (capabilities that do not affect the filter are masked out, lists sorted).
std::string seccomp_policy_key(const SeccompPolicy& policy);

// Always compiles with libseccomp. Programs are in install order: the argument filters first
// (NETLINK_AUDIT sockets, block device nodes, ioctl TIOCSTI/TIOCLINUX),
// then the main filters for x86, x32 and x86-64 (native last, so a user deny of seccomp() cannot
// stop the remaining filters from loading). Throws std::system_error on libseccomp failures.
std::vector<BpfProgram> seccomp_compile(const SeccompPolicy& policy);

// The programs baked in at build time, if `policy` has the key of one of them.
std::optional<std::vector<BpfProgram>> seccomp_precompiled(const SeccompPolicy& policy);

// Precompiled, else `cache_dir`/<hash>.bpf (validated; corrupt files are ignored and replaced),
// else compiled now and written to the cache atomically. Cache write failures are ignored (the
// cache is an optimisation); an empty cache_dir disables the cache.
std::vector<BpfProgram> seccomp_programs_for(const SeccompPolicy& policy,
                                             const std::string& cache_dir = kDefaultSeccompCacheDir);

// The cache behind seccomp_programs_for(), for other policies (the OCI profiles of
// seccomp_oci.hpp): `policy_key` must name everything the programs depend on besides the compiler
// (which is added). Returns the cached programs, or compile()'s, then stored.
std::vector<BpfProgram> seccomp_cached(const std::string& policy_key, const std::string& cache_dir,
                                       const std::function<std::vector<BpfProgram>()>& compile);

// Only the refusal of ioctl(TIOCSTI) and ioctl(TIOCLINUX) (whatever the upper 32 bits of the
// request), for x86, x32 and x86-64: for commands machd starts in a running container on the
// caller's own descriptors, which may be a host terminal. Compiled on first use, then cached;
// call it before fork(). Throws std::system_error on libseccomp failures.
const std::vector<BpfProgram>& seccomp_terminal_ioctl_filter();

// The x86-64 names the policy allows (sorted), for review and the golden-file test (T-21).
std::vector<std::string> seccomp_allowed_syscalls(const SeccompPolicy& policy);

// nspawn's --suppress-sync=: the @sync calls (sync, fsync, fdatasync, msync, syncfs,
// sync_file_range) return 0 without doing anything, and open()/openat() with O_SYNC or O_DSYNC
// fail with EINVAL, as systemd's seccomp_suppress_sync(). One program per arch, installed after
// the main filters (the kernel applies the strictest answer, so denials elsewhere still win).
std::vector<BpfProgram> seccomp_suppress_sync_programs();

// Installs the programs on the calling thread with seccomp(2) (prctl fallback). Call in the forked
// container child before exec; async-signal-safe, does not allocate. Needs CAP_SYS_ADMIN in the
// current user namespace or no_new_privs set. Returns 0 or -errno.
int seccomp_install(const std::vector<BpfProgram>& programs) noexcept;

}  // namespace mk::core
