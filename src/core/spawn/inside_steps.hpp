// The launcher's steps inside the container's namespaces, run by its PID 1 between clone and exec
// (as lmctfy's SetupInsideNamespace, porto's ChildMountRootFs/ChildExec). Each is one named
// thing the launcher's child_main() calls in order; each throws std::system_error / UsageError,
// and child_main reports the step's name with it over the set-up channel (child_channel.hpp).
// They read only the SpawnSpec and what prepare() computed (outside_steps.hpp), and talk to no
// parent: waiting for the parent is the choreography's business, so another choreography (the OCI
// runtime's create/start, CRIU restore) can run the same steps with its own synchronisation.
#pragma once

#include <utility>

#include "core/base/unique_fd.hpp"
#include "core/spawn/outside_steps.hpp"
#include "core/spawn/spawn_spec.hpp"

namespace mk::core {

// First thing in the child: SIGKILL when spawn dies; exits at once if spawn is already gone
// (`chan` hung up). Joins --network-namespace-path= and config.json's UTS/IPC namespaces by path.
void become_container_init(const Prepared& p, int chan);

// The container's root, attached over the tree's path in the new mount namespace.
struct RootFs {
    UniqueFd tree;     // the root mount
    UniqueFd raw;      // the tree's own directory (not idmapped), for writes an idmapped mount refuses
    UniqueFd pivoted;  // --pivot-root=: the new root inside the tree
    int root = -1;     // the guest's root: tree, or pivoted
};
// Makes the mount namespace private, builds the root (tree, image, ephemeral/volatile variants,
// --pivot-root, --volatile=state's /var) and applies the mount plan.
RootFs mount_root_fs(const SpawnSpec& spec, Prepared& p);
// Once the parent placed us in our groups: a cgroup namespace rooted there, and its /sys/fs/cgroup.
void enter_cgroup_namespace(const Prepared& p, int root);
// /run/host (os-release, container-manager, uuid, credentials, --bind-user records),
// /etc/resolv.conf and /etc/localtime; returns the notify socket for a booted guest.
UniqueFd populate_guest_files(const SpawnSpec& spec, const Prepared& p, const RootFs& fs);
// /run/host read-only, the bound users' homes, a --read-only root; then pivot_root into it.
void seal_and_pivot(const SpawnSpec& spec, const Prepared& p, RootFs& fs);
// Opens a pty on the container's own devpts, binds its peer over /dev/console; {master, peer}.
// Runs after pivot_root.
std::pair<UniqueFd, UniqueFd> setup_console();
// Console ownership, hostname (unless Prepared::set_hostname says not), a fresh session keyring.
void set_identity(const Prepared& p, int console_peer);
// Loopback up (private network), a new session with the console as controlling terminal.
void take_session(const SpawnSpec& spec, UniqueFd console_peer);
// Resource limits, OOM score adjustment, CPU affinity.
void apply_resource_limits(const SpawnSpec& spec);
// The same one field at a time, for a forked child that may not throw (machrun exec): 0 or -errno.
// set_rlimits() stops at the first limit it cannot set and names it in *failed.
int set_rlimits(const std::array<std::optional<ResourceLimit>, kRlimitCount>& limits, int* failed = nullptr) noexcept;
int set_oom_score_adjust(int value) noexcept;
int set_cpu_affinity(const std::vector<unsigned>& cpus) noexcept;
// Rootless: the nested user namespace (make_identity_user_namespace()), made as soon as the parent
// has mapped ours, so that its maker is gone by the time enter_user_namespace() enters it.
void make_nested_user_namespace(Prepared& p);
// -U: into the user namespace, with fresh mount/UTS/IPC namespaces owned by it (mounts locked).
void enter_user_namespace(Prepared& p);
// /dev built inside the user namespace (Prepared::userns_dev_plan): clone_dev_sources() clones the
// host's nodes as detached mounts (before pivot_root, in the host's user namespace);
// build_dev_in_userns() applies the plan (after enter_user_namespace(), as the namespace's root).
void clone_dev_sources(Prepared& p);
void build_dev_in_userns(Prepared& p);
void drop_bounding_set_to(uint64_t bounding);
// Personality, SELinux label, seccomp, groups, uids, capabilities, no_new_privs.
void drop_privileges(const SpawnSpec& spec, const Prepared& p);
// The OCI runtime's detached start (launcher.hpp's DetachedLaunch). outlive_parent(): no
// parent-death signal any more, since the runtime exits once create is done and the init is
// reparented to the engine's subreaper; before drop_privileges(), whose seccomp filter may refuse
// prctl. wait_at_exec_gate(): blocks in open() of the exec FIFO (by its fd, /proc/self/fd/N: the
// path is out of reach) until `start` opens it for reading, then writes one byte.
void outlive_parent();
void wait_at_exec_gate(int exec_gate);
// Closes every fd but `keep` (close-on-exec), changes to the working directory and checks it is
// inside the root (runc CVE-2024-21626).
void enter_working_directory(const SpawnSpec& spec, const Prepared& p, int keep);
// execve() of the payload with the plan's argv and environment; throws if that fails.
[[noreturn]] void exec_payload(const Prepared& p);

}  // namespace mk::core
