// An OCI config.json's linux.seccomp profile, compiled with libseccomp when the container starts.
//
// The one path where a filter is not precompiled (core/kernel/seccomp.hpp): the profile comes with
// the bundle. Semantics follow runc: syscall names this libseccomp does not know are skipped (a
// profile names calls of newer kernels), rules whose action equals the default are dropped,
// SCMP_ACT_ERRNO/TRACE without errnoRet mean EPERM, and a rule whose conditions name one argument
// twice becomes one rule per condition (OR) instead of one rule with all of them (AND).
// Refused with UsageError naming the field: unknown actions, architectures, operators or flags, and
// SCMP_ACT_NOTIFY (no listener support).
//
// Thread-safety: compile is thread-safe; install changes the calling thread's seccomp state.
#pragma once

#include "core/kernel/seccomp.hpp"
#include "core/spawn/oci_spec.hpp"

namespace mk::core {

struct OciSeccompFilter {
    BpfProgram program;  // every architecture of the profile in one program
    unsigned flags = 0;  // SECCOMP_FILTER_FLAG_* for seccomp(2)
};

// Throws UsageError for what the profile gets wrong, std::system_error on libseccomp failures.
OciSeccompFilter seccomp_oci_compile(const OciSeccomp& profile);

// seccomp_oci_compile() through the on-disk cache of core/kernel/seccomp.hpp (an engine starts
// many containers with one profile: only the first pays libseccomp). "" disables the cache.
// Errors in the profile are reported even when a cached program exists (it is compiled first
// only on a miss, so the key covers the whole profile, flags included).
OciSeccompFilter seccomp_oci_programs_for(const OciSeccomp& profile, const std::string& cache_dir = kDefaultSeccompCacheDir);

// Installs the filter on the calling thread with seccomp(2) and the profile's flags. Needs
// no_new_privs or CAP_SYS_ADMIN in the current user namespace. Async-signal-safe, does not
// allocate. Returns 0 or -errno.
int seccomp_oci_install(const OciSeccompFilter& filter) noexcept;

}  // namespace mk::core
