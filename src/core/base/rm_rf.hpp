// The one tree remover, as systemd's rm_rf_at(dir_fd, path, flags) serves nspawn, machined, importd
// and cgroups alike. Used for image pool trees (btrfs subvolumes, immutable images), spawn's scratch
// directories (overlayfs work dirs of mode 0), OCI layer stores and cgroup hierarchies.
//
// Contract: removes dir_fd/name and everything below it; a missing name is success. Never follows
// symlinks. Never crosses into another file system: an entry on another device (a mount point, an
// overlay still mounted) stops the removal with EXDEV and leaves that entry and its parents in
// place (docs/security.md T-09: a mount inside a tree must never make us delete the host's files).
// Holds at most kOpenFrames directory fds whatever the depth (deeper levels re-open their parent
// through ".." and check it is the same inode), so a tree deeper than RLIMIT_NOFILE is removed
// too. Not thread-safe against a concurrent writer in the same tree (it rescans a directory it
// removed entries from, but a racing creator can make it fail with ENOTEMPTY).
#pragma once

#include <string>

namespace mk::core {

enum RemoveFlags : unsigned {
    kRemoveChmod = 1u << 0,       // make directories searchable first (overlayfs work dirs are mode 0)
    kRemoveImmutable = 1u << 1,   // lift the immutable attribute (chattr +i) of files and the top
    kRemoveSubvolumes = 1u << 2,  // a btrfs subvolume at the top: lift read-only, delete by ioctl
    // cgroupfs: directories only (its control files cannot be unlinked and vanish with their group);
    // an rmdir answering EBUSY (a group whose last task is still exiting) is retried for about a
    // second. On a file system that is not cgroupfs (a temp dir standing in) files are unlinked.
    kRemoveCgroup = 1u << 3,
};

// Throws std::system_error naming the entry that could not be removed.
void rm_rf_at(int dir_fd, const std::string& name, unsigned flags);

// The same for paths where a failure is only reported: 0, or -errno of the failure.
int rm_rf_at_noexcept(int dir_fd, const std::string& name, unsigned flags) noexcept;

// The file attributes rm_rf_at lifts, for the image pool's read-only marking.
bool is_btrfs_subvolume(int fd);
bool get_immutable(int fd);
void set_immutable(int fd, bool on);  // throws

}  // namespace mk::core
