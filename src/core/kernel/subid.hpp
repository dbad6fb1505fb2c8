// Subordinate IDs for rootless containers: /etc/subuid and /etc/subgid (subuid(5)), and the UID/GID
// map an ordinary user's container gets from them.
//
// Layout (as podman's rootless mode): inside 0 is the user's own ID, inside 1.. are the user's
// subordinate IDs in file order. So a file container root creates in a bound directory belongs to
// the user outside, and a tree unpacked by the user "as root inside" (podman unshare, or our own
// rootless copy) is used as it is. The shadow tools' setuid newuidmap/newgidmap write such a map
// after checking the same files; without ranges, the user may map only its own ID (user_namespaces(7)).
//
// Everything here is pure: the caller reads the files and the user's identity. No side effects,
// thread-safe.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mk::core {

// One line of /etc/subuid or /etc/subgid: "owner:start:count". `owner` is a login name or a
// decimal UID, as the shadow tools accept it.
struct SubidEntry {
    std::string owner;
    uint32_t start = 0;
    uint32_t count = 0;
};

// The files are root's, but a huge or hostile one must not make spawn hang or grow without end.
inline constexpr size_t kSubidMaxFileSize = 1 << 20;
inline constexpr size_t kSubidMaxEntries = 16384;

// Parses subuid(5) text. Blank lines and '#' comments are skipped, and so are lines the shadow tools
// would not use: a missing field, a count of 0, a range that runs past 2^32-1, non-decimal numbers.
// Stops after kSubidMaxFileSize bytes or kSubidMaxEntries entries.
std::vector<SubidEntry> parse_subid_file(std::string_view text);

struct SubidRange {
    uint32_t start = 0;
    uint32_t count = 0;
    bool operator==(const SubidRange&) const = default;
};

// The ranges of the user `name` with ID `id`, in file order: lines naming the user or its decimal
// ID. The caller decides what an overlap with `id` means (plan_rootless_map refuses it).
std::vector<SubidRange> subid_ranges_for(const std::vector<SubidEntry>& entries, std::string_view name, uint32_t id);

// One line of uid_map/gid_map: `count` IDs from `inside` in the container are `outside` on the host.
struct MapLine {
    uint32_t inside = 0;
    uint32_t outside = 0;
    uint32_t count = 0;
    bool operator==(const MapLine&) const = default;
};

// A rootless container gets at most 65536 IDs (0..65535: a distribution's "nobody" is 65534). More
// gives nothing a guest uses, and keeps the inside IDs of one tree the same across range edits.
inline constexpr uint32_t kRootlessMaxIds = 65536;
// The kernel takes at most 340 lines per map (since Linux 4.15); one is the user's own ID.
inline constexpr size_t kMaxMapLines = 340;

struct RootlessMap {
    std::vector<MapLine> uid_lines;
    std::vector<MapLine> gid_lines;
    // True when the map needs the setuid newuidmap/newgidmap (the user has subordinate ranges);
    // false when the user writes its single-ID map itself (after "deny" to setgroups).
    bool needs_helpers = false;
    // Whether inside 0 is the user's own ID (the podman layout); false for the range map of a tree
    // shifted by --private-users-ownership=chown, where the container must setresuid(0) itself.
    bool own_ids_mapped = true;
    // One line for stderr when the map is the single ID and what that limits; empty otherwise.
    std::string limitation;
    // How many IDs the container has (uid map; the gid map may be smaller).
    uint32_t uid_count() const;
    uint32_t gid_count() const;
};

// The map for user `name` (uid, gid) from its subordinate ranges. Throws UsageError, naming the
// file and what to do, when a range holds the user's own uid (or gid): mapping it twice is refused
// by the kernel, and the user's files would then be owned by a container ID.
RootlessMap plan_rootless_map(std::string_view name, uid_t uid, gid_t gid, const std::vector<SubidRange>& uid_ranges,
                              const std::vector<SubidRange>& gid_ranges);

// --private-users-ownership=chown as an ordinary user: the guest's IDs wholly inside the user's
// subordinate ranges (inside 0.. are the ranges in file order, at most 65536 IDs and 339 lines), the
// user's own ID not mapped, so a guest that breaks out of its root cannot touch the user's files.
// Throws UsageError (one line) without subordinate uids or gids, or when a range holds the user's ID.
RootlessMap plan_rootless_range_map(std::string_view name, uid_t uid, gid_t gid, const std::vector<SubidRange>& uid_ranges,
                                    const std::vector<SubidRange>& gid_ranges);

// The map of the one-time shift into `range_map`: inside 0 is the user's own ID, inside k+1 is
// `range_map`'s inside k. Both layouts' IDs are mapped there: podman's inside k is the shift map's
// k, the range map's inside k is its k+1 (userns.hpp, shift_tree_owners_up_one()).
RootlessMap plan_rootless_shift_map(const RootlessMap& range_map, uid_t uid, gid_t gid);

// The argument list for newuidmap/newgidmap: "PID inside outside count ...". Pure.
std::vector<std::string> id_map_helper_args(const std::string& helper, pid_t pid, const std::vector<MapLine>& lines);

// The uid_map/gid_map file text for `lines`. Pure.
std::string map_lines_text(const std::vector<MapLine>& lines);

}  // namespace mk::core
