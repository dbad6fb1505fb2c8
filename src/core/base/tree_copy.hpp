// Copying whole directory trees, fd-relative: for --template and for the image pool's clones.
#pragma once

#include <dirent.h>
#include <sys/types.h>

namespace mk::core {

// A DIR stream over a duplicate of `fd` (the caller keeps `fd`), rewound. Throws on failure.
DIR* open_dir_stream(int fd);

// Copies file contents: reflink where the file system can, else copy_file_range, else read/write.
void copy_file_data(int from, int to, off_t size);

// Copies the directory tree at src_fd into the (empty) directory dst_fd: owners, modes, times,
// xattrs, symlinks, hard links, device nodes; never follows symlinks or crosses file systems.
void copy_tree(int src_fd, int dst_fd);

}  // namespace mk::core
