// Thin wrappers over the kernel's fd-based mount API (fsopen/fsconfig/fsmount/open_tree/
// move_mount/mount_setattr). Every mount lands on an fd obtained inside the container tree, so
// the guest cannot redirect a mount by swapping a path component (runc CVE-2021-30465 class).
// All functions throw std::system_error naming what failed. Not thread-safe with respect to the
// caller's mount namespace (they change it).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/base/unique_fd.hpp"

namespace mk::core {

// Creates a detached mount of a new `fstype` instance with string options `opts`
// (key or key=value) and mount attributes `attrs` (MOUNT_ATTR_*). Returns its fd.
UniqueFd make_fs_mount(const char* fstype, const std::vector<std::pair<std::string, std::string>>& opts, uint64_t attrs,
                       const char* source = nullptr);

// Clones the mount tree at dir_fd/path (recursively when `recursive`) as a detached mount.
UniqueFd clone_tree(int dir_fd, const std::string& path, bool recursive);

// Sets (and clears) attributes on a mount, recursively when `recursive`.
void set_mount_attrs(int mount_fd, uint64_t set, uint64_t clear, bool recursive, const std::string& what);

// Attaches the detached mount `mount_fd` on top of the object `target_fd` refers to.
void attach_mount(int mount_fd, int target_fd, const std::string& what);

// Makes the mount at `fd` read-only (not recursively): for --read-only roots and /run/host.
void remount_read_only(int fd, bool recursive, const std::string& what);

}  // namespace mk::core
