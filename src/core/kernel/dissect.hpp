// Disk images for `spawn -i`: a loop device over the file and what is on it — a GPT disk laid out
// per the Discoverable Partitions Specification (root, /usr, /home, /srv, /var for this
// architecture), or a bare file system. No udev needed: each partition gets its own loop device
// with an offset, so no partition device nodes are involved.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/unique_fd.hpp"

namespace mk::core {

struct Partition {
    std::string mount_point;  // "/", "/usr", "/home", "/srv", "/var"
    uint64_t offset = 0;      // bytes into the image
    uint64_t size = 0;
};

// Parses a GPT (primary header at LBA 1, 512-byte sectors) from the first bytes of an image and
// returns the partitions the Discoverable Partitions Specification names for x86-64, or nullopt if
// there is no valid GPT. Pure; `head` must hold the header and the partition entries.
std::optional<std::vector<Partition>> parse_gpt(std::string_view head, uint64_t image_size);

// The file system type a superblock at `data` (the first 68 KiB of a partition) belongs to:
// "ext4", "xfs", "btrfs", "squashfs", "erofs", "vfat"; empty if none of them.
std::string detect_fs_type(std::string_view data);

// A loop device over [offset, offset+size) of `image_fd` (size 0: to the end), read-only if asked,
// with LO_FLAGS_AUTOCLEAR: it detaches itself once the last mount of it goes, so a killed spawn
// leaves no loop device behind. Returns the device path; `fd` keeps it alive until mounted.
std::string attach_loop(int image_fd, uint64_t offset, uint64_t size, bool read_only, UniqueFd& fd);

struct DissectedImage {
    struct Fs {
        std::string mount_point;
        std::string device;  // /dev/loopN
        std::string fstype;
        UniqueFd loop;  // holds the loop device until it is mounted
    };
    std::vector<Fs> filesystems;  // root first
    bool read_only = false;
};

// Opens `path` (read-only if the file is not writable by us or `read_only`), finds its file
// systems and attaches a loop device to each. Throws UsageError for images it cannot use.
DissectedImage dissect_image(const std::string& path, bool read_only);

}  // namespace mk::core
