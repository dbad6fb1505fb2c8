// Rootless spawn's steps outside the container (issue 16): who the user is, which IDs it may map,
// and writing that map for the container's first process. The pure decisions are in rootless_plan.hpp
// and kernel/subid.hpp; these read the host's files and run the setuid helpers.
//
// The choreography (launcher.cpp): spawn clones the container's PID 1 with CLONE_NEWUSER together
// with its other namespaces, so they all belong to that user namespace; the child waits on the
// set-up channel until the parent has written its map (newuidmap/newgidmap on the child's PID, or
// the single-ID map itself), then carries out the rootless mount plan as root of that namespace.
// Before exec it enters a nested namespace that maps the same IDs to themselves, so every mount it
// made is locked (MNT_LOCKED) for the guest, as under -U.
//
// Thread-compatible. Side effects: write_rootless_maps() runs newuidmap/newgidmap.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/unique_fd.hpp"
#include "core/kernel/subid.hpp"
#include "core/spawn/container_cgroup.hpp"
#include "core/spawn/spawn_spec.hpp"

namespace mk::core {

struct RootlessUser {
    std::string name;  // from /etc/passwd; the decimal uid if it has no entry
    uid_t uid = 0;
    gid_t gid = 0;
    RootlessMap map;
    std::vector<SubidRange> uid_ranges;  // the user's subordinate ranges, in file order
    std::vector<SubidRange> gid_ranges;
    std::string newuidmap;  // paths of the helpers, when map.needs_helpers
    std::string newgidmap;
    std::string runtime_dir;  // $XDG_RUNTIME_DIR (or /run/user/UID): spawn's locks live below it
};

// Whether spawn runs rootless: its effective uid is not 0.
bool running_rootless();

// The calling user, its map and helpers, checked: refuses (UsageError, one line each) what needs
// root in `spec`, a tree the user cannot read, a subordinate range holding the user's own ID, and
// missing newuidmap/newgidmap when the user has ranges. Prints the map's limitation line (if any)
// unless `quiet`.
RootlessUser prepare_rootless_user(const SpawnSpec& spec);

// The tree's owners (--private-users-ownership=chown, plan_rootless_ownership()): reads the owner of
// the tree's root `root_fd`, and for a tree to shift now moves its owners into the range once
// (shift_rootless_tree), printing the one-line notice unless --quiet. On return `user.map` is the
// map to run with: the range map (own IDs not mapped) for a shifted tree, else unchanged.
void settle_rootless_tree_ownership(RootlessUser& user, const SpawnSpec& spec, int root_fd);

// Moves the tree at `tree_fd` from the podman layout into `range_map`'s (k -> k+1 in a namespace
// that maps both, made with newuidmap/newgidmap for a forked child: shift_tree_owners_up_one()).
// Marks the tree's root while it works ("user.machkit.shifting"), so an interrupted shift is found.
void shift_rootless_tree(int tree_fd, const RootlessUser& user, const RootlessMap& range_map);

// Runs `work` in a forked child that is root of a user namespace mapped with
// plan_rootless_shift_map(range_map) (newuidmap/newgidmap): it may chown between the user's own IDs
// and the range's. Throws UsageError when no user namespace can be made, else std::runtime_error
// with the child's failure.
void run_in_shift_namespace(const RootlessUser& user, const RootlessMap& range_map, const std::function<void()>& work);

// With the range map (the user's own IDs not mapped), the machine's cgroup groups, which the user
// made, are handed to root inside (chowned in the shift namespace), so a booted guest may write its
// cgroup2 view, as root -U's delegate_to() does. Call once the machine's init is in the groups (the
// user must still be able to clone into them). Nothing for the podman map.
void delegate_rootless_cgroup(const RootlessUser& user, const ContainerCgroup& cgroup);

// The guest's subgroups of such groups are the range's, which the user cannot remove: the remover
// (ContainerCgroup::set_remover(), before arm_reaper(), so the reaper has it too) removes them
// through the same namespace. Empty for the podman map.
std::function<void(const std::string&)> rootless_cgroup_remover(const RootlessUser& user);

// Inside the container's namespace, right after its map is written: with the range map (the user's
// own IDs not mapped) become root there (setresuid/setresgid 0, no supplementary groups, which would
// still be the user's own), else nothing.
void become_mapped_root(const RootlessUser& user);

// Writes the map of the user namespace of `pid` (a child that waits to be told it is mapped).
// Throws std::system_error / UsageError naming the helper and the file to check on failure.
void write_rootless_maps(pid_t pid, const RootlessUser& user);

// Inside the mapped namespace: a nested user namespace mapping each ID of `map` to itself, as an fd
// for setns(). Entering it locks every mount made before (MNT_LOCKED). Its lines follow the outer
// map's lines one for one: the kernel maps a line only into a single line of the parent's map.
// The child made to own it is SIGKILLed before this returns; reap it with reap_identity_maker()
// (the container's init makes the namespace first and enters it last, so by then it is gone and
// nothing waits for it to be scheduled).
struct IdentityUserNamespace {
    UniqueFd fd;       // the namespace, for setns()
    pid_t maker = -1;  // the killed child that made it, not yet reaped
};
IdentityUserNamespace make_identity_user_namespace(const RootlessMap& map);

// clone3() into a new user namespace, with a pidfd in *pidfd: 0 in the child, its PID in the
// caller, which may map the namespace at once (the child was born in it). Throws naming `what`.
pid_t clone_into_new_user_namespace(int* pidfd, const std::string& what);
void reap_identity_maker(IdentityUserNamespace& ns);

// Where a rootless machine's cgroup goes on this host (plan_rootless_cgroup() fed with the caller's
// own group and whether its parent is writable): the cgroup2 layout to create it in, and its path.
// nullopt when there is none; the notice saying so is printed unless `quiet`.
struct RootlessCgroups {
    CgroupLayout layout;  // mode Unified; unified_dir where cgroup2 is on the host
    std::string path;     // below the cgroup2 root: ".../machine-NAME.scope"
};
std::optional<RootlessCgroups> find_rootless_cgroups(const RootlessUser& user, std::string_view machine_name,
                                                     std::optional<unsigned> guest_systemd, bool quiet);

// Inside a rootless container with a network namespace of its own, before the nested user namespace:
// lets the guest bind ports below 1024. The network namespace is the outer user namespace's, and the
// guest's root, in the nested one, has no CAP_NET_BIND_SERVICE there (Docker sets the same).
void open_low_ports_to_guest();

// Why clone(CLONE_NEWUSER) failed with `err`, as one line saying what to do.
std::string explain_userns_failure(int err);

// The directory of the user's run locks: RUNTIME_DIR/machkit/locks.
std::string rootless_lock_dir(const RootlessUser& user);

}  // namespace mk::core
