// Applying the OCI-only fields of a SpawnSpec (spec.oci) inside the container: thin named steps
// for the launcher's child, each throwing std::system_error naming what failed.
#pragma once

#include <sys/mount.h>

#include <cstdint>
#include <vector>

#include "core/kernel/userns.hpp"

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

// The per-mount flags of config.json's bind and tmpfs mounts, on top of what the mount plan made: nosuid,
// nodev, noexec, ro, the atime options and nosymfollow on the bind itself, the recursive forms
// (rro, rnosuid, ...) on it and its submounts, and the propagation. Targets resolve inside the
// root. Superblock flags (sync, dirsync, mand, lazytime, iversion, silent) cannot be set per bind;
// oci_unapplied_field() refuses them.
void apply_oci_mount_attributes(const OciSpec& oci, int root_fd);
// The MS_* flags a bind can carry per mount, and their MOUNT_ATTR_* counterparts.
inline constexpr unsigned long kOciBindMountFlags = MS_BIND | MS_REC | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC |
                                                    MS_NOATIME | MS_NODIRATIME | MS_RELATIME | MS_STRICTATIME |
                                                    MS_NOSYMFOLLOW;
uint64_t oci_mount_attrs_from_flags(unsigned long ms_flags);

// linux.rootfsPropagation: the container root's propagation (after pivot_root, on "/").
void apply_oci_rootfs_propagation(const OciSpec& oci);

// linux.devices: device nodes (and FIFOs) created in the tree at `root_fd` with their mode and
// owner, replacing what is there (a file the image put at that path). Needs CAP_MKNOD. With a
// user namespace, `uid_map`/`gid_map` (its maps) turn the owners into host IDs.
void apply_oci_devices(const OciSpec& oci, int root_fd, const std::vector<IdMapLine>& uid_map = {},
                       const std::vector<IdMapLine>& gid_map = {});

// domainname: setdomainname(2), in the container's UTS namespace.
void apply_oci_domainname(const OciSpec& oci);

// process.ioPriority, process.scheduler, process.user.umask: attributes execve() keeps.
// apply_oci_scheduling() needs CAP_SYS_NICE for realtime policies: call it before dropping
// capabilities. apply_oci_umask() last before exec. apply_oci_process_attributes() does both.
void apply_oci_scheduling(const OciSpec& oci);
// The same one field at a time, for a forked child that may not throw: 0 or -errno.
int set_oci_io_priority(const OciSpec::IoPriority& p) noexcept;
int set_oci_scheduler(const OciSpec::Scheduler& s) noexcept;
void apply_oci_umask(const OciSpec& oci);
void apply_oci_process_attributes(const OciSpec& oci);

}  // namespace mk::core
