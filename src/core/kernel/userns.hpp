// User namespaces for containers: the UID/GID range a machine gets, and the namespace itself.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/base/run_lock.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::core {

struct IdRange {
    uint32_t shift = 0;      // host UID of the container's root
    uint32_t count = 65536;  // how many UIDs/GIDs are mapped
};

// The pool --private-users=pick chooses from (as nspawn: 0x80000 .. 0x6FFF0000, 64K aligned).
inline constexpr uint32_t kPickFirst = 0x80000;
inline constexpr uint32_t kPickLast = 0x6FFF0000;

// The `attempt`-th candidate base for machine `name`: deterministic (the same machine gets the
// same range each time it starts), spread by a hash of the name. Pure.
uint32_t pick_uid_base(std::string_view name, unsigned attempt);

// Holds a range while the machine runs: the run lock "uidrange/<shift>" (run_lock.hpp), released
// by the kernel however spawn ends and out of any container's reach. Empty if taken.
RunLock lock_uid_range(uint32_t shift);

// One more single ID: `inside` in the container is `outside` on the host (--bind-user=).
struct IdMapping {
    uint32_t inside = 0;
    uint32_t outside = 0;
};

// The uid_map/gid_map text: 0..count-1 to shift.., with each `extra` inside ID cut out of that
// range and mapped on a line of its own (the kernel refuses overlapping lines). Pure.
std::string id_map_text(const IdRange& range, const std::vector<IdMapping>& extra);

// Creates a user namespace mapping 0..count-1 to shift..shift+count-1 (UIDs and GIDs), plus
// `uid_extra`/`gid_extra`, and returns an fd for it (for setns() and MOUNT_ATTR_IDMAP). Uses a
// short-lived child process that unshares it; the namespace lives on as long as the fd.
UniqueFd make_user_namespace(const IdRange& range, const std::vector<IdMapping>& uid_extra = {},
                             const std::vector<IdMapping>& gid_extra = {});

// One line of a uid_map/gid_map: `count` IDs from `inside` in the namespace are `outside`.. on the
// host. An OCI config.json gives its maps as such lines (several ranges, any order).
struct IdMapLine {
    uint32_t inside = 0;
    uint32_t outside = 0;
    uint32_t count = 0;
    bool operator==(const IdMapLine&) const = default;
};

// What the kernel would refuse in a map, as a sentence ("" if nothing): an empty map, an empty
// line, a range that wraps past 2^32-1, ranges overlapping inside or outside, more than 340 lines.
// Pure.
std::string id_map_problem(const std::vector<IdMapLine>& map);

// The uid_map/gid_map text of `map`, one line per entry. Pure.
std::string id_map_text(const std::vector<IdMapLine>& map);

// Reads a uid_map/gid_map text (as /proc/PID/uid_map shows it). Throws std::invalid_argument on a
// malformed line. Pure.
std::vector<IdMapLine> parse_id_map_text(std::string_view text);

// The host ID that `inside` is under `map`, if it is mapped. Pure.
std::optional<uint32_t> map_id_to_host(const std::vector<IdMapLine>& map, uint32_t inside);

// Creates a user namespace with these uid_map/gid_map texts and returns an fd for it, as above.
UniqueFd make_user_namespace(const std::string& uid_map, const std::string& gid_map);

// A new network namespace owned by the user namespace `userns_fd` (as nspawn's -U makes it): made
// by a short-lived child that joins that user namespace and unshares one; returns an fd for it.
// Root in that user namespace administers it (sysfs, links), host root may still move links into it.
UniqueFd make_network_namespace_in(int userns_fd);

// The uid_map and gid_map of the user namespace `userns_fd` (one the caller may enter): read by a
// short-lived child that joins it. Throws std::system_error if it cannot be entered or read.
std::pair<std::vector<IdMapLine>, std::vector<IdMapLine>> read_user_namespace_maps(int userns_fd);

}  // namespace mk::core

namespace mk::core {

// --private-users-ownership=chown: moves every owner in the tree at root_fd into `range` (an owner
// k becomes shift+k), and records the shift in the root's "trusted.machkit.uid_shift" xattr, so a
// second start with the same range costs nothing and one with another range shifts back first.
// Never follows symlinks and never leaves the tree's file system (T-09). Throws on failure.
// The walk also moves the ids in POSIX ACLs and file capabilities' root id (chown() drops
// security.capability: it is written back), and moves a file with several links once.
void shift_tree_ownership(int root_fd, const IdRange& range);

// Rootless --private-users-ownership=chown (rootless.hpp), run as root of a user namespace whose
// inside 0 is the user's own uid and 1.. its subordinate uids: every owner k < `count` (as that
// namespace sees it) becomes k+1, which moves the tree from the podman layout (inside 0 = the user)
// to the range layout (inside 0 = the first subordinate uid) in one pass. An owner the namespace
// does not map fails the chown (EPERM) and the walk stops there. Same walk as above.
void shift_tree_owners_up_one(int root_fd, uint32_t count);

// POSIX ACL xattr text (system.posix_acl_access/default) with its ACL_USER and ACL_GROUP ids in
// [from, from+count) moved to `to`; nullopt when nothing changes or the text is not an ACL. Pure.
std::optional<std::string> remap_acl_xattr(std::string_view acl, uint32_t from, uint32_t to, uint32_t count);

// security.capability text as revision 3 with its root id (0 for revision 2) moved likewise (chown()
// drops the xattr, so it is always written back); nullopt when it is not one. Pure.
std::optional<std::string> remap_file_caps(std::string_view caps, uint32_t from, uint32_t to, uint32_t count);

// Under --private-users-ownership=map a file that container root creates is owned by host root on
// disk and keeps its setuid bit (issue 19 B): any host user who can walk to the tree could run it
// as root. These answer whether one can.
//
// Whether a directory with this owner and mode stops every user but root from searching it: root's,
// with no search bit for others, nor for its group unless that group is root's. Pure.
bool keeps_out_other_users(uid_t owner, gid_t group, mode_t mode);

// Whether a user other than root can walk to the directory `dir_fd` along its path: true unless a
// directory above it, from / down to its parent, keeps out other users. The directory itself does
// not count (container root owns it through the idmapped mount and may chmod it). Only the path
// the kernel reports for `dir_fd` is checked, not other mounts of the same file system. Throws
// std::system_error when a directory on the way cannot be examined.
bool reachable_by_other_users(int dir_fd);

}  // namespace mk::core
