// The launcher's steps outside the container's namespaces, before clone (as lmctfy's
// SetupOutsideNamespace): check the spec against what spawn supports, open the tree or the image,
// pick the user namespace range and the mount plan, read the facts the GuestPlan needs and plan
// the guest's cgroups. prepare() runs them in order; its result is all the inside steps read.
#pragma once

#include <sched.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/base/passwd.hpp"
#include "core/base/run_lock.hpp"
#include "core/base/unique_fd.hpp"
#include "core/kernel/seccomp.hpp"
#include "core/kernel/seccomp_oci.hpp"
#include "core/kernel/userns.hpp"
#include "core/spawn/bind_user.hpp"
#include "core/spawn/container_cgroup.hpp"
#include "core/spawn/guest_plan.hpp"
#include "core/spawn/mount_plan.hpp"
#include "core/spawn/rootless.hpp"
#include "core/spawn/spawn_spec.hpp"

namespace mk::core {

// What the child needs, computed before clone.
struct Prepared {
    GuestPlan guest;    // argv, environment, capabilities, machine ID, files for the guest
    UniqueFd root_dir;  // O_PATH of the tree, in the host namespace
    std::string root_path;
    std::vector<MountStep> plan;
    std::vector<MountStep> cgroup_plan;  // /sys/fs/cgroup, mounted inside the guest's cgroup namespace
    UserRecord user;
    std::vector<BpfProgram> seccomp;
    std::optional<OciSeccompFilter> oci_seccomp;  // linux.seccomp of a config.json: instead of `seccomp`
    bool wait_for_parent = false;                 // the child waits for placement/registration
    int exec_gate = -1;                           // the OCI runtime's detached start: DetachedLaunch::exec_gate
    bool wait_for_network = false;                // the parent sets up links for us (ContainerNetwork)
    UniqueFd netns;                               // --network-namespace-path=, opened in the host
    // UTS/IPC/PID (plan_oci_namespaces): the ones the clone creates, the UTS/IPC ones joined by path
    // (opened in the host, entered by the init), the PID one joined by path (entered by the
    // launcher around its clone), and whether the init sets the host name.
    unsigned long ns_clone_flags = CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID;
    std::vector<std::pair<int, UniqueFd>> joined_namespaces;
    UniqueFd pidns;
    bool set_hostname = true;
    std::optional<CgroupLayout> cgroups;                         // set when the guest gets its own cgroup namespace
    UniqueFd cgroup2_mount;                                      // no cgroup2 on the host: spawn's own (plan_guest_cgroups)
    std::vector<std::string> overlay_workdirs;                   // created for --overlay=, removed at exit
    std::vector<std::pair<std::string, UniqueFd>> image_mounts;  // -i: detached mounts, root first
    std::optional<IdRange> userns;                               // --private-users: the container's UID/GID range
    bool idmap = false;                                          // the root is an idmapped mount (ownership "map")
    RunLock uid_lock;                                            // holds the range while the machine runs
    UniqueFd userns_fd;                                          // the namespace, made anew for each run
    // config.json's user namespace (oci_userns.hpp): its maps, written by the parent before the
    // child runs on, or the namespace joined by path (then its maps, read from it). `userns` is then
    // the container root's range. Entered by the child last, as -U's.
    std::vector<IdMapLine> oci_uid_map, oci_gid_map;
    UniqueFd oci_userns_join;
    // -U without config.json (dev_can_be_built_in_userns): /dev's steps, applied by the child
    // from inside the user namespace, their host nodes cloned before pivot_root (dev_sources).
    std::vector<MountStep> userns_dev_plan;
    std::vector<UniqueFd> dev_sources;
    // -U without config.json, with a network namespace of its own: made in the user namespace
    // (as nspawn's), so that its root administers it; made anew for each run, joined by the child.
    bool netns_in_userns = false;
    UniqueFd userns_netns;
    std::vector<UniqueFd> idmap_namespaces;  // of the binds with maps of their own (MountStep::idmap_userns_fd)
    std::string host_os_release;
    UniqueFd pivot_dir;                  // --pivot-root=: the new root inside the tree (O_PATH, host namespace)
    std::vector<BoundUser> bound_users;  // --bind-user=
    // Rootless (issue 16, rootless.hpp): the calling user and its map. `userns` is then the identity
    // map of the map's IDs, made by the child inside the namespace the parent mapped.
    std::optional<RootlessUser> rootless;
    IdentityUserNamespace nested_userns;  // rootless: made by the child as soon as it is mapped, entered last
    std::string rootless_cgroup;          // the machine's cgroup2 group below the user's delegated subtree
    // Rootless: the user namespace `machd --user` keeps (kept_userns.hpp), when it has exactly the
    // map above: the child is cloned into it instead of a new namespace newuidmap/newgidmap map.
    UniqueFd kept_userns;
};

// Settings files and front ends can describe more than the launcher does yet: refuses those (a
// UsageError naming the option) rather than start a container that silently lacks them.
void check_supported(const SpawnSpec& spec);
void check_verity(const SpawnSpec& spec);

// Runs the outside steps for a finalized spec. `registering`: a machine manager will place the
// guest (LaunchHooks::register_machine), so the child waits for it.
Prepared prepare(const SpawnSpec& spec, bool registering);

// Where spawn puts a booted guest itself: machine.slice/machine-NAME.scope as machined would, or,
// under a service manager (--keep-unit), a payload group below spawn's own unit, as nspawn does.
std::string own_cgroup_path(const SpawnSpec& spec);

// The container's init for --boot: the first of /usr/lib/systemd/systemd, /lib/systemd/systemd,
// /sbin/init that exists in the tree (resolved inside it). Empty if none does.
std::string find_init(int root_fd);

bool is_executable_in_root(int root_fd, const std::string& path);

}  // namespace mk::core
