// The launcher: starts one container from a finalized SpawnSpec (finalize.hpp) and supervises it
// until it ends. launcher.cpp is only the choreography; the work is in named steps:
//
//   prepare()            outside_steps.hpp  checks, tree/image, user namespace range, mount plan,
//                                          GuestPlan (guest_plan.hpp: argv, env, caps, machine ID)
//   clone3()             launcher.cpp       new mount, PID, UTS, IPC (cgroup, network) namespaces;
//                                          config.json's left-out/joined ones: plan_oci_namespaces()
//   parent               launcher.cpp       register + place in cgroups, network links; go-ahead
//   child (PID 1)        inside_steps.hpp   mount_root_fs, populate_guest_files, seal_and_pivot,
//                                          console, identity, limits, userns, drop_privileges,
//                                          enter_working_directory, exec_payload
//   relay                relay.hpp          console, signals, notify socket, exit status
//
// Process model: spawn (the parent) clones one child, the container's PID 1. A failed step in the
// child travels to the parent over a SOCK_SEQPACKET pair as a ChildError (step name + errno +
// message, child_channel.hpp); exec closes the pair. The child carries PR_SET_PDEATHSIG(SIGKILL),
// so killing spawn (even with SIGKILL) kills the container, and with it every mount it made.
//
// Reusing the steps in another choreography: an OCI runtime's `create` (DetachedLaunch below) runs
// prepare(), clone3 and the inside steps up to drop_privileges(), then blocks at its exec gate
// (wait_at_exec_gate) until `start`; the runtime process exits after `create`, so the init drops
// its PDEATHSIG (outlive_parent) and the parent runs no Relay (the pidfd/state file replace it).
// CRIU restore reuses prepare() and the parent's placement steps around criu's own restore;
// rootless spawn reuses the inside steps behind a user namespace made first. The steps talk to no
// parent themselves: every wait is in the choreography (wait_go_ahead), so each caller picks its own.
//
// Thread-hostile: changes the signal mask and the terminal mode of the calling process.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "core/base/unique_fd.hpp"
#include "core/spawn/spawn_spec.hpp"

namespace mk::core {

// The OCI runtime's `create`: the container's init does every inside step, then waits at an exec
// gate before exec, and run() returns without supervising it (no PDEATHSIG: the runtime exits and
// the init is reparented to the engine's subreaper). The gate is a FIFO: the init opens
// /proc/self/fd/<exec_gate> for writing (blocking until `start` opens it for reading), writes one
// byte and execs.
struct DetachedLaunch {
    int exec_gate = -1;  // O_PATH fd of the FIFO (borrowed)
    // Right after clone, before the init can outlive the caller: record the pid. Throws to abort.
    std::function<void(pid_t pid)> cloned;
    // The init finished its set-up and waits at the gate; `console_master` is the pty master with
    // a terminal (the caller hands it on), else empty. Throws to abort (the init is killed).
    std::function<void(pid_t pid, UniqueFd console_master)> gated;
};

struct LaunchHooks {
    // Registers the machine with the machine manager right after clone, while the container's PID 1
    // (`leader`) waits before its cgroup namespace is made. Returns true if the manager took it and
    // placed it in its scope, false if there is no manager (spawn then places it itself). Throws to
    // abort the start.
    std::function<bool(pid_t leader, const Uuid& uuid)> register_machine;
    // Tells the manager that took the machine (register_machine returned true) that the guest is up:
    // when its init sends READY=1 if that init is expected to (a systemd init, or --notify-ready=yes),
    // else once the container has started. Called at most once per run; must not block. Returns a
    // pidfd of a helper process the launcher reaps, or an empty fd.
    std::function<UniqueFd()> report_ready;
    std::optional<DetachedLaunch> detached;  // machrun create (see DetachedLaunch)
};

class Launcher {
public:
    // `spec` must have been through finalize() (run() throws std::logic_error otherwise).
    explicit Launcher(SpawnSpec spec, LaunchHooks hooks = {});

    // Starts the container and waits for it. Returns spawn's exit status: the payload's exit code,
    // 128+N after death by signal N. Throws UsageError / std::system_error for set-up failures
    // (nothing is left behind then).
    int run();

private:
    SpawnSpec spec_;
    LaunchHooks hooks_;
    std::chrono::steady_clock::time_point created_ = std::chrono::steady_clock::now();
};

}  // namespace mk::core
