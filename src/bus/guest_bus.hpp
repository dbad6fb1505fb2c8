// Talking to a machine's own system bus: machined's OpenMachineLogin starts the guest's
// container-getty@N.service through the guest's service manager. The socket comes from
// core::connect_machine_bus (namespaces entered there, in one place with the shell helpers); this
// is the D-Bus half, with raw sd-bus because sdbus-c++ 1.2 cannot make a bus client out of an
// already connected fd. Blocks the calling thread for at most `timeout` (the guest answers
// StartUnit once the job is queued, not when the getty runs). Thread-compatible.
#pragma once

#include <chrono>
#include <string>

#include "core/machine/machine.hpp"

namespace mk::bus {

// machined's bound on the guest call: sd-bus's default method-call timeout.
inline constexpr std::chrono::seconds kGuestCallTimeout{25};

// org.freedesktop.systemd1.Manager.StartUnit(unit, "replace") on the guest's system bus. Errors as
// sdbus::Error: the guest's own error name (e.g. org.freedesktop.systemd1.NoSuchUnit, or
// org.freedesktop.DBus.Error.ServiceUnknown when no systemd owns the name) with a message naming
// the machine; connect failures as their errno (FileNotFound: no system bus in the guest).
void start_unit_in_machine(const core::Machine& m, const std::string& unit,
                           std::chrono::microseconds timeout = kGuestCallTimeout);

// "container-getty@N.service" for the pty "/dev/pts/N"; throws InvalidArgs for anything else.
std::string container_getty_unit(const std::string& pty_path);

}  // namespace mk::bus
