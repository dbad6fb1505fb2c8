// Pure parts of container checkpoint/restore: which of a container's mounts criu must treat as
// external (and where their sources are on the host), and the record machkit keeps next to criu's
// images (machkit-checkpoint.json) to restore the machine as it was. No I/O; unit-tested and fuzzed.
//
// Why externals: criu recreates mounts it can see the origin of (the root, proc, sysfs, tmpfs,
// devpts, binds of those). A bind from a host path outside the container (or a device node bound
// from the host's /dev) has no origin inside the dumped mount namespace, so criu needs it named
// as external at dump (key -> key, as runc does) and re-supplied at restore (key -> host source).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/criu/rpc.hpp"

namespace mk::core::criu {

struct MountInfo {
    int id = 0;
    int parent = 0;
    std::string dev;         // "major:minor"
    std::string root;        // path inside the file system
    std::string mountpoint;  // as the reading process sees it
    std::string fstype;
    std::string source;
};

// Parses /proc/PID/mountinfo text (octal escapes decoded). Throws std::runtime_error on a
// malformed line; at most kMaxMounts lines.
inline constexpr size_t kMaxMounts = 4096;
std::vector<MountInfo> parse_mountinfo(std::string_view text);

struct ExternalMount {
    std::string key;     // the mount point inside the container
    std::string source;  // the host path it comes from; kFreshSysfs: a fresh sysfs the restore makes
};

// The source of a sysfs that criu cannot mount itself at restore: in a user namespace that does not
// own the network namespace (a -U container on the host's network), the kernel refuses a new sysfs.
// The restore binds a fresh one made outside that user namespace instead (Swrk's fresh_sysfs).
inline constexpr std::string_view kFreshSysfs = "@fresh-sysfs";

// The container's mounts (seen from inside: its mountinfo after pivot_root, first line its root)
// that criu must treat as external, each with its host source found in the host's mountinfo.
// Throws UsageError naming a mount whose source cannot be found on the host.
std::vector<ExternalMount> plan_external_mounts(const std::vector<MountInfo>& container, const std::vector<MountInfo>& host);

struct HostAddress {
    int family = 0;  // AF_INET / AF_INET6
    std::string address;
    uint8_t prefixlen = 0;
};

// What machkit keeps with criu's images.
struct CheckpointRecord {
    static constexpr int kFormat = 1;
    std::string machine;
    std::string root;                         // the container's root directory on the host
    std::string criu_version;                 // of the criu that dumped
    bool host_network = false;                // the container shared the host's network namespace
    std::string veth_host;                    // ve-NAME when it had a plain veth; empty otherwise
    std::string veth_container;               // host0
    std::vector<HostAddress> veth_addresses;  // the host side's addresses, put back on restore
    std::vector<ExternalMount> mounts;
    bool tcp_established = false;
    // What the leader's fds 0..2 were ("pipe:[INODE]", as /proc/PID/fd shows): on restore the
    // supervisor's own stdio takes their place (criu inherit_fd), as runc's descriptors.json does.
    std::vector<std::string> stdio;
    std::string class_name = "container";
    // The leader's terminal was a pty of the container's own devpts whose master was outside
    // (spawn's console, an engine's): dumped with orphan_pts_master, restored with a new master.
    bool orphan_pty = false;
    // The container had a user namespace of its own: the host UID and GID of its root. criu opens
    // some images from inside that namespace at restore, so the directory is lent to them then.
    std::optional<uint32_t> userns_uid;
    std::optional<uint32_t> userns_gid;
    // criu's image files: name -> size and FNV-1a 64 of the contents (pages-*.img: size only, see
    // docs/criu.md). Detects a partial or damaged directory; not an authentication.
    struct File {
        std::string name;
        uint64_t size = 0;
        std::optional<uint64_t> hash;
    };
    std::vector<File> files;
};

inline constexpr std::string_view kRecordFile = "machkit-checkpoint.json";
inline constexpr size_t kMaxRecordSize = 1 << 20;
inline constexpr size_t kMaxImageFiles = 65536;

std::string encode_record(const CheckpointRecord& r);
// Throws UsageError("... is not a machkit checkpoint ...") on anything malformed.
CheckpointRecord decode_record(std::string_view json);

// Whether criu's image file `name` is hashed (everything but the page contents).
bool image_file_is_hashed(std::string_view name);
uint64_t fnv1a64(std::string_view data, uint64_t seed = 0xcbf29ce484222325ULL);

// Options common to our dump and restore requests (root, externals, cgroup mode, logging).
Options base_options(const CheckpointRecord& r, int images_dir_fd);

}  // namespace mk::core::criu
