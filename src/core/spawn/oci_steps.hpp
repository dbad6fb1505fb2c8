// Applying the OCI-only fields of a SpawnSpec (spec.oci) inside the container: thin named steps
// for the launcher's child, each throwing std::system_error naming what failed.
#pragma once

#include "core/spawn/oci_spec.hpp"

namespace mk::core {

// linux.sysctl: writes /proc/sys/NAME. Call in the container's namespaces before its /proc/sys is
// made read-only; the host's /proc does, since the net.*, IPC and UTS entries follow the writer's
// namespaces. parse_oci_config() admitted only those (oci_sysctl_allowed()).
void apply_oci_sysctls(const OciSpec& oci);

// domainname: setdomainname(2), in the container's UTS namespace.
void apply_oci_domainname(const OciSpec& oci);

// process.user.umask, process.ioPriority, process.scheduler: attributes execve() keeps. Call last
// before exec (after the uid change, so that a lowered priority is the payload's own).
void apply_oci_process_attributes(const OciSpec& oci);

}  // namespace mk::core
