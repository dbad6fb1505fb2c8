// Machine: what machd knows about one registered container or VM, as plain data plus the pidfd
// pinning its leader. Owned by the Registry; thread-compatible. No side effects on construction.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/id128.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::core {

enum class MachineClass { container, vm, host, unknown };
enum class MachineState { opening, running, closing };

// One table each, matching machined's strings. `unknown` has no string (class "" on the bus).
std::string_view to_string(MachineClass c);
std::optional<MachineClass> machine_class_from_string(std::string_view s);  // "" -> unknown
std::string_view to_string(MachineState s);

using MachineId = Id128;

struct Machine {
    std::string name;
    MachineId id{};  // all zero = unset (machined's SD_ID128_NULL)
    std::string service;
    MachineClass klass = MachineClass::unknown;
    pid_t leader = 0;
    UniqueFd leader_pidfd;         // pins `leader` against PID reuse; readable once it exits
    uint64_t leader_pidfd_id = 0;  // its inode (systemd's pidfdId), 0 until first asked for
    std::string root_directory;
    std::vector<int> netif;
    std::string unit;         // the scope or service unit holding the machine
    std::string cgroup_path;  // the unit's cgroup relative to a hierarchy root, e.g. "/machine.slice/machine-x.scope"
    bool own_scope = false;   // machd created the scope (CreateMachine) and removes it at the end
    int kill_signal = 15;     // KillSignal= of the scope: what TerminateMachine sends (SIGTERM)
    std::string scope_job;    // pending start job of the scope (state `opening`), as SCOPE_JOB=
    uint64_t kill_deadline_usec = 0;  // CLOCK_MONOTONIC: SIGKILL the unit then if still alive (0 = none)
    // A signal for the leader held until the guest's init takes it (init_signals.hpp), and when it
    // goes anyway (CLOCK_MONOTONIC usec). 0 = none.
    int held_signal = 0;
    uint64_t held_signal_until_usec = 0;
    MachineState state = MachineState::opening;
    // The guest said it is up (io.machkit.Manager1.SetMachineReady, from the spawn that runs it):
    // what `machctl wait` waits for. Never set for machines whose manager does not report it
    // (systemd-nspawn), nor kept across a machd restart (machined's state file has no such key).
    bool ready = false;
    uint64_t realtime_usec = 0;
    uint64_t monotonic_usec = 0;
    // Given only through io.systemd.Machine.Register (systemd >= 256 clients) and listed by List;
    // not kept in the state file, so they are gone after a machd restart.
    pid_t supervisor = 0;             // the registering peer (SO_PEERCRED), as machined 262
    uint32_t vsock_cid = UINT32_MAX;  // VMADDR_CID_ANY: none
    std::string ssh_address;
    std::string ssh_private_key_path;
    std::string control_address;  // the machine's io.systemd.MachineInstance socket

    [[nodiscard]] bool has_id() const noexcept;
};

// "0102..0f10" (32 lowercase hex digits) and back; parse returns nullopt unless exactly 32 hex digits.

// Microseconds on CLOCK_REALTIME / CLOCK_MONOTONIC, as machined stamps a new machine.
uint64_t now_realtime_usec();
uint64_t now_monotonic_usec();

}  // namespace mk::core
