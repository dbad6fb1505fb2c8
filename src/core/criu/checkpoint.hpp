// Checkpoint and restore of one running container with criu (named steps over plan.hpp and
// swrk.hpp). The image directory holds criu's images plus machkit-checkpoint.json (plan.hpp).
//
// Error contract: UsageError for what the user can fix (bad or tampered directory, criu too old
// for this kernel, unsupported guest), std::runtime_error / std::system_error otherwise. A failed
// checkpoint removes the directory it created and leaves the machine running (criu resumes it);
// a failed restore leaves nothing running and the directory as it was (criu's log aside).
//
// Side effects: runs criu (fork/exec), netlink in the host's network namespace (the veth's host
// side). Thread-hostile.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "core/criu/plan.hpp"
#include "core/criu/swrk.hpp"

namespace mk::core::criu {

struct CheckpointRequest {
    std::string machine;
    std::string class_name = "container";
    pid_t leader = 0;
    std::string root;       // the container's root directory on the host
    std::string image_dir;  // created (0700); must not exist yet
    bool leave_running = false;
    bool tcp_established = false;
    std::string freezer_cgroup;  // the machine's cgroup (v1 freezer or cgroup2 path); empty: ptrace freeze
    CriuCommand criu;
    // The OCI runtime's flags (runc's), passed to criu as they are.
    bool ext_unix_sk = false;
    bool shell_job = false;
    bool file_locks = false;
    std::optional<CgroupMode> manage_cgroups_mode;  // unset: ignore (the supervisor places the tree)
    std::string work_dir;                           // criu's log goes here; empty: the image directory
    bool image_dir_may_exist = false;               // an existing empty directory is taken (runc's --image-path)
    // The container joined a network namespace by path (not made for it): declared external as
    // extRootNetNS, as the host's is; the restore supplies it again (RestoreRequest::network_ns_fd).
    bool external_network = false;
    // The leader's stdio is a pty of the container's own devpts, bound on /dev/console, whose
    // master the engine holds (OCI process.terminal). Restore it with orphan_pts_master.
    bool own_terminal = false;
};

// Returns the record written next to the images.
CheckpointRecord checkpoint_machine(const CheckpointRequest& req);

struct RestoreRequest {
    std::string image_dir;
    std::string machine;  // empty: the checkpointed machine's name
    CriuCommand criu;
    bool ext_unix_sk = false;
    bool shell_job = false;
    bool file_locks = false;
    std::optional<CgroupMode> manage_cgroups_mode;
    std::string work_dir;
    std::string root;                // empty: the checkpointed root; else this one (a bundle's rootfs)
    int network_ns_fd = -1;          // the external network namespace; -1: the caller's own
    bool orphan_pts_master = false;  // a pty whose master was outside: criu sends a new master
    // A -U machine's mounts come back unlocked (check_unlocked_mounts_accepted): accepted.
    bool unlocked_mounts = false;
    NotifyHandler on_notify;  // every notify criu sends ("orphan-pts-master" with its fd, ...)
};

struct Restored {
    pid_t pid = 0;  // the restored root task: a child of the caller (rst_sibling)
    CheckpointRecord record;
};

// Reads and verifies the image directory (every listed file present with its size and hash).
CheckpointRecord read_checkpoint(int dir_fd, const std::string& dir_path);

// A machine that ran in a user namespace of its own (-U) comes back with its mounts unlocked in it:
// criu 4.2 remakes every mount from inside that namespace, so none is MNT_LOCKED there and its root
// (which keeps CAP_SYS_ADMIN in it, as nspawn's) could unmount the /proc masks and the read-only
// /proc/sys and /sys, or mount an unmasked procfs (docs/criu.md, "-U"). Throws a UsageError saying
// so unless `accepted` (machctl restore --unlocked-mounts). Other machines: nothing to accept.
void check_unlocked_mounts_accepted(const CheckpointRecord& rec, bool accepted);

// Restores the machine; the caller becomes the restored root task's parent and must reap it.
Restored restore_machine(const RestoreRequest& req);

// VERSION over RPC, then (only when asked or when an operation failed) CHECK: throws UsageError with
// one line when criu is older than kMinimumCriu or cannot work with the running kernel.
inline constexpr Version kMinimumCriu{3, 15, 0, {}};  // external pid namespaces (runc's minimum for them)
Version require_usable_criu(const CriuCommand& cmd, bool run_check);

// FEATURE_CHECK mem_track: false when the kernel lacks soft-dirty tracking (CONFIG_MEM_SOFT_DIRTY),
// without which pre-dump and iterative migration cannot work.
bool memory_tracking_available(const CriuCommand& cmd);

// systemd >= 255 in a booted guest holds pidfds, which criu dumps only from 4.1: the guest's
// systemd version (from its libsystemd-shared-NNN.so), 0 when it has none.
int guest_systemd_version(const std::string& root);

}  // namespace mk::core::criu

namespace mk::core::criu {

// After the machine manager placed the restored `leader` in its scope: moves the rest of the
// restored tree (criu created it in the supervisor's cgroups) into the leader's cgroup in every
// hierarchy under `cgroup_mount` (/sys/fs/cgroup: cgroup2, hybrid or v1). Returns how many moved.
size_t adopt_into_leader_cgroups(pid_t leader, const std::string& cgroup_mount = "/sys/fs/cgroup");

// The restored tree's pids below `leader` (from /proc/PID/task/TID/children), at most 65536.
std::vector<pid_t> descendants(pid_t leader);

}  // namespace mk::core::criu
