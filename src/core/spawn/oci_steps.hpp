// Applying the OCI-only fields of a SpawnSpec (spec.oci) inside the container: thin named steps
// for the launcher's child, each throwing std::system_error naming what failed.
#pragma once

#include "core/spawn/oci_spec.hpp"

namespace mk::core {

// linux.sysctl: writes /proc/sys/NAME. Call in the container's namespaces before its /proc/sys is
// made read-only; the host's /proc does, since the net.*, IPC and UTS entries follow the writer's
// namespaces. parse_oci_config() admitted only those (oci_sysctl_allowed()).
void apply_oci_sysctls(const OciSpec& oci);

// linux.readonlyPaths: each path inside the tree at `root_fd` becomes a read-only (recursive) bind
// of itself; missing paths are skipped, as runc. Paths resolve inside the root (openat2
// RESOLVE_IN_ROOT), so a symlink in the image cannot point the mount at the host.
void apply_oci_readonly_paths(const OciSpec& oci, int root_fd);

// linux.devices: device nodes (and FIFOs) created in the tree at `root_fd` with their mode and
// owner, replacing what is there (a file the image put at that path). Needs CAP_MKNOD.
void apply_oci_devices(const OciSpec& oci, int root_fd);

// domainname: setdomainname(2), in the container's UTS namespace.
void apply_oci_domainname(const OciSpec& oci);

// process.user.umask, process.ioPriority, process.scheduler: attributes execve() keeps. Call last
// before exec (after the uid change, so that a lowered priority is the payload's own).
void apply_oci_process_attributes(const OciSpec& oci);

}  // namespace mk::core
