// Tar archives of image trees: safe extraction into a directory fd and export of a tree, both
// through libarchive for the tar format only (compression is compress.hpp's job).
//
// Extraction follows systemd main's tar_x rather than libarchive's archive_write_disk (whose
// metadata fixups were applied through symlinks, CVE-2021-23177/-31566): libarchive only parses;
// every inode is created by us relative to its parent directory fd, which is opened with
// openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS|RESOLVE_NO_XDEV), so no path
// ever traverses a symlink (also not one created earlier by the same archive); metadata is set on
// the fd of the inode just created. Device nodes are never created (a warning names each): the
// container gets its own /dev. Only a small set of xattrs is restored (user.*, security.capability,
// POSIX ACLs); file flags (chattr) are never restored, so nothing in an image can be immutable.
//
// Thread-hostile (one call at a time per destination); no global state.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>
#include <string_view>

#include "core/image/compress.hpp"

namespace mk::core {

struct ArchivePathLimits {
    size_t max_depth = 256;  // path components
    size_t max_path = 4095;  // bytes, PATH_MAX - 1
    size_t max_name = 255;   // bytes per component, NAME_MAX
};

// Validates one archive entry name (or hard link target) and returns it normalised: relative,
// without "." or empty components; "" is the archive's root ("./", "."). Rejects (nullopt, reason
// in *why) empty names, NUL bytes, absolute paths, any ".." component, and names beyond the limits.
// Pure; thread-safe.
std::optional<std::string> normalize_archive_path(std::string_view name, const ArchivePathLimits& limits = {},
                                                  std::string* why = nullptr);

// Whether an xattr from an archive is restored: user.*, security.capability (file capabilities)
// and system.posix_acl_{access,default}. trusted.* (overlayfs tricks) and security.selinux (the
// host's policy decides labels) are not.
bool archive_xattr_is_restored(std::string_view name);

struct ExtractOptions {
    ArchivePathLimits limits;
    uint64_t max_entries = 10'000'000;
    // Called with a human-readable warning (device node skipped, xattr dropped, ...).
    std::function<void(const std::string&)> warn;
    // Called after each entry with the number of entries so far (for progress; may be empty).
    std::function<void(uint64_t)> on_entry;
};

struct ExtractStats {
    uint64_t entries = 0;
    uint64_t file_bytes = 0;
    uint64_t devices_skipped = 0;      // char/block device nodes not created (never warned singly)
    std::string first_device_skipped;  // the first of them, "'dev/mem' (char 1:1)", for the summary
};

// Extracts the tar stream `in` into the (empty) directory `dest_fd`. Throws std::system_error on
// the first problem: an unsafe name (EINVAL/ELOOP), a corrupt or truncated archive (EBADMSG),
// disk full (ENOSPC), a bounded limit (E2BIG). What was written so far stays inside dest_fd; the
// caller removes the half-made tree. The whole input is read to its end, so a corrupt compressed
// trailer after the tar end marker is still reported.
ExtractStats extract_tar(ByteSource& in, int dest_fd, const ExtractOptions& opts = {});

struct ExportOptions {
    std::function<void(const std::string&)> warn;
    // Called as file data goes out with the bytes of file content written so far.
    std::function<void(uint64_t)> on_bytes;
    // Xattrs of the tree's root that are bookkeeping, not content: left out of the "./" entry.
    std::vector<std::string> root_skip_xattrs;
};

// Writes the tree at `src_dir_fd` as a POSIX (pax) tar to `out`: entries "./" and "./path",
// numeric owners, modes, mtimes, xattrs (with ACLs as system.posix_acl_* xattrs, as GNU tar
// --xattrs does), symlinks, hard links (by device+inode), device nodes and FIFOs. Never follows a
// symlink and never crosses into another file system (mount points are skipped with a warning).
// Calls out.finish() at the end.
void write_tar(int src_dir_fd, ByteSink& out, const ExportOptions& opts = {});

// Apparent size of the regular files under `dir_fd` (for export progress), same walk rules.
uint64_t tree_file_bytes(int dir_fd);

}  // namespace mk::core
