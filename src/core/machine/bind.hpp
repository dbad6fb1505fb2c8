// BindMountMachine without help from the container manager: the host source is cloned as a
// detached mount (open_tree(OPEN_TREE_CLONE)), made read-only if asked (mount_setattr), and a helper
// child that joined the container's mount namespace attaches it at the destination (move_mount).
// The destination resolves inside the container (its root is the namespace's root), so a guest
// symlink cannot redirect the mount onto the host. Side effects: a short-lived child. Not thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "core/machine/machine.hpp"

namespace mk::core {

// systemd's path_is_normalized() for absolute paths: starts with '/', no "." or ".." components,
// no "//", no trailing '/' (except "/" itself). Pure.
bool path_is_absolute_normalized(std::string_view p);

// Throws invalid_argument for bad paths, not_supported for non-containers or containers with a
// user namespace (machined 252: "Can't bind mount on container with user namespacing applied").
// `destination` empty = `source`.
void bind_mount_into_machine(const Machine& m, const std::string& source, const std::string& destination, bool read_only,
                             bool make_dir);

}  // namespace mk::core
