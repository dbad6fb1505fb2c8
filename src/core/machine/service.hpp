// MachineService: the machine lifecycle behind org.freedesktop.machine1, free of D-Bus. Validates
// requests, pins leaders with pidfds, creates (CreateMachine) or discovers (RegisterMachine) the unit,
// writes state files, tells a Listener about new and removed machines, and re-adopts machines from
// state files after a restart. Owns the Registry; does not own the StateDir, backend or listener.
// Thread-hostile (machd's single event loop drives it). Errors: std::system_error, with MachineErrc
// codes for what the caller did wrong and errno codes for what the system did.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/kernel/cgroup.hpp"
#include "core/machine/registry.hpp"
#include "core/machine/shell.hpp"
#include "core/machine/state_file.hpp"

namespace mk::core {

struct RegisterRequest {
    std::string name;
    std::vector<uint8_t> id;  // 0 or 16 bytes
    std::string service;
    std::string klass;  // "container", "vm" or ""
    pid_t leader = 0;   // already resolved: 0 is not allowed here (the bus layer maps 0 to the sender)
    std::string root_directory;
    std::vector<int> netif;
    bool create_scope = false;  // CreateMachine: machd makes machine-NAME.scope and moves the leader
    ScopeProperties scope;
};

class MachineService {
public:
    struct Listener {
        virtual ~Listener() = default;
        virtual void machine_added(Machine& m) = 0;
        virtual void machine_removed(const Machine& m) = 0;  // called before the Machine is destroyed
        // Asynchronous backends: the scope's start job finished. `error` empty = the machine runs.
        // On error machine_removed() follows.
        virtual void machine_start_finished(Machine& /*m*/, const std::string& /*error*/) {}
    };

    // `stop_timeout_usec`: how long terminate() waits after KillSignal before SIGKILL (systemd's
    // TimeoutStopSec=, shorter by default because nothing else escalates here).
    MachineService(StateDir& state, ScopeBackend& backend, Listener& listener, size_t max_machines = kMachinesMax,
                   uint64_t stop_timeout_usec = 10'000'000);

    // Adds ".host" (class host, leader 1, unit "-.slice", root "/", id from /etc/machine-id) as machined
    // does. It is listed but never saved, never in the leader index.
    void add_host_machine();

    // Validates everything first (no side effect on error), then creates/discovers the unit, saves
    // the state file and notifies. The new machine is `running`, or `opening` while an asynchronous
    // backend's start job is pending (then scope_job_done() finishes it).
    Machine& register_machine(RegisterRequest req);

    // An asynchronous backend reports the end of a start job ("done" = success, else systemd's
    // result string). Unknown units/jobs are ignored.
    void scope_job_done(const std::string& unit, const std::string& job, const std::string& result);

    // machined's machine_stop(): own scope -> KillSignal (SIGTERM) to every process in it, registered
    // unit -> the same to the unit's cgroup; the machine is `closing` until its leader exits.
    void terminate(Machine& m);
    // who: "leader" or "all" ("" = all). Signal must be 1.._NSIG-1. A signal for a leader that is
    // its PID namespace's init and does not take it yet (before its exec, or before it set up its
    // signals: it would drop it) is held and sent once it does, at most kHoldSignalUsec later.
    void kill(Machine& m, std::string_view who, int signal);
    static constexpr uint64_t kHoldSignalUsec = 5'000'000;
    static constexpr uint64_t kHeldSignalPollUsec = 20'000;
    // Forget the machine now (nspawn calls this when its container exits). An own scope is removed,
    // killing what is left in it: nothing else would clean it up on a host without systemd.
    void unregister(Machine& m);
    // The leader's pidfd became readable: the machine ends.
    void leader_exited(Machine& m);

    // The supervisor of the machine reports that the guest is ready (the moment spawn's docs define:
    // the guest init's READY=1, or the start for inits that do not send one). Only the process that
    // runs the container may say so: `caller` must be the leader's parent (spawn) or a child of it
    // (the helper spawn runs for the bus call); anyone else gets EPERM, as does the host machine.
    // Returns true on the first report, false when the machine was ready already.
    bool report_ready(Machine& m, pid_t caller);

    // The earliest pending SIGKILL escalation or check of a held signal (CLOCK_MONOTONIC usec), 0 if none.
    [[nodiscard]] uint64_t next_deadline() const;
    // SIGKILLs the units of terminated machines whose deadline is <= now_usec; sends held signals
    // their leaders now take, or whose time is up.
    void run_deadlines(uint64_t now_usec);

    // Reads the state dir: machines whose leader lives (and still sits in the recorded unit) come back,
    // the rest are cleaned up (state file removed, own scope removed). Returns the adopted ones.
    std::vector<Machine*> readopt();

    // A shell in the machine (its namespaces and cgroup) on a fresh pty; see core/machine/shell.hpp.
    Pty open_shell(Machine& m, const ShellRequest& req);

    // Leader first, then the unit of the process's cgroup (machined's manager_get_machine_by_pid()).
    [[nodiscard]] Machine* find_by_pid(pid_t pid) const;
    [[nodiscard]] Machine* find(std::string_view name) const { return registry_.find(name); }
    [[nodiscard]] const Registry& registry() const noexcept { return registry_; }

private:
    void finalize(Machine& m, bool remove_cgroup);

    StateDir& state_;
    ScopeBackend& backend_;
    Listener& listener_;
    Registry registry_;
    uint64_t stop_timeout_usec_;
    std::set<std::string, std::less<>> terminating_;  // machines with a kill deadline: the loop asks every round
    std::set<std::string, std::less<>> holding_;      // machines with a held signal for the leader
    void send_held_signals(uint64_t now_usec);
};

// Validation helpers shared with the bus layer.
// Throws invalid_argument unless `pid` may lead a machine: > 1, alive, not a kernel thread, not us.
UniqueFd pin_leader(pid_t pid);
// A registered machine runs from the image at `image_path` (its root directory is the image or
// inside it): the image must not be removed, renamed or made read-only (security.md R-13).
bool image_in_use(const MachineService& service, const std::string& image_path);
// Parses a KillMachine "who" ("" -> all).
bool kill_who_is_valid(std::string_view who);

}  // namespace mk::core
