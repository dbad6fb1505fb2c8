// Client side of machine registration, for `spawn`: RegisterMachine / CreateMachine /
// TerminateMachine / UnregisterMachine (and machd's SetMachineReady) against org.freedesktop.machine1 on the system bus
// (DBUS_SYSTEM_BUS_ADDRESS honoured) — machd or systemd-machined alike. Each call opens its own
// connection; blocking; no state kept. Errors: RegisterError, whose kind separates "there is no bus"
// and "nobody owns machine1" from "machined refused" (then dbus_name carries its error name).
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace mk::bus {

// Which manager: the system's machd on the system bus, or the user's `machd --user` on the session
// bus ($DBUS_SESSION_BUS_ADDRESS), where a rootless spawn registers (docs/rootless.md).
enum class ManagerBus { system, user };

struct MachineRegistration {
    std::string name;
    std::array<uint8_t, 16> id{};           // all zero = send an empty id
    std::string service = "machkit-spawn";  // nspawn sends "systemd-nspawn"
    std::string klass = "container";
    pid_t leader = 0;            // host PID of the container's PID 1
    std::string root_directory;  // absolute, informational
    std::vector<int> netif;      // host-side ifindices; non-empty -> *WithNetwork
};

// Scope properties for CreateMachine, as systemd-nspawn sends them (anchor §1.9).
struct ScopeSettings {
    std::string slice;                     // Slice= if non-empty
    std::string device_policy = "closed";  // DevicePolicy=
    std::vector<std::pair<std::string, std::string>> device_allow = {{"/dev/net/tun", "rwm"}, {"char-pts", "rw"}};
    std::optional<int> kill_signal;  // KillSignal= (+ KillMode=mixed), e.g. SIGRTMIN+3 for -b
    // --property= assignments "Key=Value": MemoryMax=, TasksMax=, CPUWeight=, CPUQuota=, DeviceAllow=,
    // DevicePolicy=, Description=, Delegate=. Other keys are refused (UsageError-like RegisterError).
    std::vector<std::string> properties;
};

class RegisterError : public std::runtime_error {
public:
    enum class Kind {
        no_bus,       // the system bus cannot be reached
        no_daemon,    // the bus works but nothing owns (or activates) org.freedesktop.machine1
        refused,      // machined answered with an error (dbus_name says which)
        bad_request,  // a --property= we cannot express
    };
    RegisterError(Kind kind, std::string dbus_name, const std::string& message)
        : std::runtime_error(message), kind(kind), dbus_name(std::move(dbus_name)) {}
    Kind kind;
    std::string dbus_name;
};

// RegisterMachine[WithNetwork]: the caller already has its own unit (--keep-unit). Returns the
// machine's object path.
std::string register_machine(const MachineRegistration& m, ManagerBus bus = ManagerBus::system);

// CreateMachine[WithNetwork]: machined creates machine-NAME.scope and moves the leader there.
std::string create_machine(const MachineRegistration& m, const ScopeSettings& scope, ManagerBus bus = ManagerBus::system);

void terminate_machine(const std::string& name, ManagerBus bus = ManagerBus::system);

// As nspawn on exit; a machine that is already gone is not an error.
void unregister_machine(const std::string& name, ManagerBus bus = ManagerBus::system);

// io.machkit.Manager1.SetMachineReady: the guest of a machine we registered is up. Against a
// manager without machkit's extension (systemd-machined) this throws RegisterError(no_daemon).
void report_machine_ready(const std::string& name, ManagerBus bus = ManagerBus::system);

}  // namespace mk::bus
