// Path resolution inside an untrusted tree. Everything here works relative to a directory fd
// and never follows the guest's symlinks out of it: openat2(RESOLVE_IN_ROOT) confines absolute
// symlinks and ".." to the tree, RESOLVE_NO_MAGICLINKS refuses /proc/self/fd style jumps.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

#include "core/base/unique_fd.hpp"

namespace mk::core {

// openat2(root_fd, path, flags, RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS [| extra_resolve]).
// Returns an invalid fd and sets errno on failure (callers decide whether that is fatal).
UniqueFd open_in_root(int root_fd, std::string_view path, int flags, mode_t mode = 0, uint64_t extra_resolve = 0);

// Like open_in_root, but throws std::system_error naming `path` on failure.
UniqueFd open_in_root_or_throw(int root_fd, std::string_view path, int flags, mode_t mode = 0, uint64_t extra_resolve = 0);

// Creates every missing directory of `path` inside the tree (mode 0755) and returns an O_PATH fd
// to the last one. Each component is created with mkdirat() on the fd of its parent, so a symlink
// swapped in by the guest cannot redirect the creation out of the tree.
UniqueFd mkdir_p_in_root(int root_fd, std::string_view path, mode_t mode = 0755);

// Makes sure `path` exists as a regular file inside the tree (creating parents) and returns an
// O_PATH fd to it. Used for file bind-mount targets.
UniqueFd touch_in_root(int root_fd, std::string_view path, mode_t mode = 0644);

// Reads a whole small file inside the tree; nullopt if it does not exist. Throws if larger than max.
std::optional<std::string> read_file_in_root(int root_fd, std::string_view path, size_t max = 1 << 20);

// Reads a whole small host file (follows symlinks: host paths are trusted). nullopt if absent.
std::optional<std::string> read_host_file(const std::string& path, size_t max = 1 << 20);

// Writes `data` to dir_fd/name atomically enough for our use: O_CREAT|O_TRUNC|O_NOFOLLOW.
void write_file_at(int dir_fd, const std::string& name, std::string_view data, mode_t mode = 0644);

// Splits "/a/b/c" into its parent ("/a/b") and last component ("c").
std::pair<std::string, std::string> split_path(std::string_view path);

// True for absolute, normalised paths: no "." or ".." components, no "//", no trailing '/'.
bool path_is_normalized_absolute(std::string_view path);

}  // namespace mk::core
