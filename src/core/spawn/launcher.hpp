// The launcher: starts one container from a SpawnSpec and supervises it until it ends.
//
// Process model: spawn (the parent) clones one child with new mount, PID, UTS, IPC and cgroup
// namespaces (and network with --private-network). The child is the container's PID 1: it mounts
// per the mount plan, pivots into the tree, drops privileges and execs the payload. Errors in the
// child travel to the parent over a SOCK_SEQPACKET pair (errno + message); exec closes the pair.
// The child carries PR_SET_PDEATHSIG(SIGKILL), so killing spawn (even with SIGKILL) kills the
// container, and with it every mount it made: nothing stays on the host.
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

// ---- machrun (OCI runtime) detached start: begin --------------------------------------------
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
// ---- machrun detached start: end ------------------------------------------------------------

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

// The container's init for --boot: the first of /usr/lib/systemd/systemd, /lib/systemd/systemd,
// /sbin/init that exists in the tree (resolved inside it). Empty if none does.
std::string find_init(int root_fd);

}  // namespace mk::core
