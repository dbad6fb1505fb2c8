// Rootless spawn (issue 16): what changes when an ordinary user starts a container. Decided here, in
// pure code; the launcher's steps carry it out.
//
// An unprivileged user namespace allows only some mounts (mount_namespaces(7), user_namespaces(7)):
// proc (the PID namespace is the container's), tmpfs, devpts, mqueue, binds of what the user can
// reach, overlay (Linux >= 5.11) and cgroup2 (in a cgroup namespace). It does not allow mknod of
// devices, nor sysfs unless the network namespace is the container's own, nor idmapped binds.
//
// No side effects, thread-safe.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/kernel/subid.hpp"
#include "core/spawn/mount_plan.hpp"
#include "core/spawn/spawn_spec.hpp"

namespace mk::core {

// Refuses, with one UsageError line saying what to do, the options a rootless start cannot honour:
// disk images (-i), idmapped binds, -U (the range comes from /etc/subuid instead),
// --private-users-ownership=map, and networking other than --network-veth (pasta), -p and
// --private-network. --private-users-ownership=chown is the consent to shift the tree
// (plan_rootless_ownership).
void check_rootless_spec(const SpawnSpec& spec);

// How a rootless start treats the owners of its tree (--private-users-ownership=chown as consent).
enum class RootlessTreeOwnership {
    AsIs,      // the podman map (inside 0 = the user): the tree is used as it is
    ShiftNow,  // move the tree into the range once (shift_tree_owners_up_one), then run with the range map
    Shifted,   // moved by an earlier run: run with the range map (plan_rootless_range_map)
};

struct RootlessOwnershipInput {
    std::string tree;                      // for messages
    uid_t uid = 0;                         // the user
    uid_t root_owner = 0;                  // the owner of the tree's root directory: chowned last, so it records the shift
    std::optional<uint32_t> first_subuid;  // the range map's inside 0; nullopt without ranges
    bool has_ranges = false;               // both subordinate uids and gids
    bool consent = false;                  // --private-users-ownership=chown
    bool interrupted = false;              // the tree's root carries the marker of a shift that did not finish
    bool keeps_tree = false;               // -x, --volatile, --read-only: the tree must not change
};

struct RootlessOwnershipPlan {
    RootlessTreeOwnership how = RootlessTreeOwnership::AsIs;
    std::string notice;  // one line for stderr, empty if none
};

// A tree whose root belongs to the user's first subordinate uid was shifted: it runs with the range
// map, with or without the flag (without it, the notice says so). With the flag, a tree whose root
// is the user's own is shifted now (the notice says what that means for editing it). Refused in one
// line each, with the flag: no subordinate ranges, a root owned by anyone else, an interrupted
// earlier shift, and -x/--volatile/--read-only. Pure.
RootlessOwnershipPlan plan_rootless_ownership(const RootlessOwnershipInput& in);

// The root mount plan turned into one an unprivileged user namespace can carry out:
//  - device nodes become binds of the host's own nodes (mknod needs the initial namespace);
//  - sysfs becomes a read-only recursive bind of the host's /sys unless the container has its own
//    network namespace (sysfs is tied to the one current at mount time);
//  - devpts keeps gid=5 only when the map has that gid (`gid_count` > 5).
std::vector<MountStep> make_rootless_mount_plan(std::vector<MountStep> plan, bool private_network, uint32_t gid_count);

// Where the machine's processes go when the user cannot ask a service manager for a scope.
struct RootlessCgroupInput {
    uid_t uid = 0;
    // The caller's own cgroup2 path ("0::" in /proc/self/cgroup), empty if none.
    std::string own_cgroup2;
    // Whether the user may create a group beside its own (cgroup.procs and the directory writable):
    // a systemd user session's user@UID.service subtree is delegated so.
    bool own_parent_writable = false;
    // The guest's systemd major version, nullopt for a command or an unknown init.
    std::optional<unsigned> guest_systemd;
};

struct RootlessCgroupPlan {
    // The cgroup2 path (relative to the cgroup2 root) the machine's group is made in; empty: none.
    std::string parent;
    // Whether the guest gets a cgroup2 view of its group at /sys/fs/cgroup.
    bool guest_view = false;
    // One line for stderr when the machine runs without cgroup limits; empty otherwise.
    std::string notice;
};

// The user@UID.service prefix of `own_cgroup2` ("/user.slice/user-1000.slice/user@1000.service"),
// empty if the caller is not in its own user manager's subtree. Pure.
std::string user_manager_subtree(std::string_view own_cgroup2, uid_t uid);

// A delegated subtree (the user's own user@.service, writable) takes the machine; else the machine
// runs without limits and the notice says so. A writable own cgroup2 group outside user@.service
// (a test harness's delegation, a CI job's) is used the same way for a systemd >= 258 guest, which
// cannot boot without a cgroup2 view.
RootlessCgroupPlan plan_rootless_cgroup(const RootlessCgroupInput& in, std::string_view machine_name);

// The user namespace `machd --user` keeps mapped with the user's ranges (kept_userns.hpp), as its
// record names it in RUNTIME/machkit/userns: the holding process, its start time (field 22 of
// /proc/PID/stat, so a reused PID is not taken for it) and the namespace's inode.
struct KeptUsernsRecord {
    pid_t pid = 0;
    uint64_t start_time = 0;
    uint64_t ns_inode = 0;
    bool operator==(const KeptUsernsRecord&) const = default;
};
std::string kept_userns_record_path(std::string_view runtime_dir);
// "PID START INODE\n".
std::string kept_userns_record_text(const KeptUsernsRecord& r);
// nullopt unless `text` is exactly what kept_userns_record_text() writes (positive numbers).
std::optional<KeptUsernsRecord> parse_kept_userns_record(std::string_view text);
// Whether a uid_map/gid_map text (as /proc/PID/uid_map shows it) is exactly `lines`, line for line;
// false for a malformed text.
bool id_map_text_is(std::string_view text, const std::vector<MapLine>& lines);
// Whether a rootless start with `map` may join the kept namespace instead of mapping a new one: the
// kept one has the podman map of the user's ranges (plan_rootless_map()), so only that map, and only
// with ranges (without them the single-ID map costs no helper).
bool may_join_kept_userns(const RootlessMap& map);

}  // namespace mk::core
