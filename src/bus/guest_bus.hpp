// Talking to a machine's own system bus: machined's OpenMachineLogin starts the guest's
// container-getty@N.service through the guest's service manager. The socket comes from
// core::connect_machine_bus (namespaces entered there, in one place with the shell helpers); this
// is the D-Bus half, with raw sd-bus because sdbus-c++ 1.2 cannot make a bus client out of an
// already connected fd. The guest answers StartUnit once the job is queued, not when the getty
// runs. Thread-compatible (GuestUnitStarts: thread-hostile, machd's loop).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include <sdbus-c++/Error.h>
#include <systemd/sd-bus.h>

#include "core/machine/machine.hpp"

namespace mk::bus {

class EventLoop;

// machined's bound on the guest call: sd-bus's default method-call timeout.
inline constexpr std::chrono::seconds kGuestCallTimeout{25};

// org.freedesktop.systemd1.Manager.StartUnit(unit, "replace") on the guest's system bus. Errors as
// sdbus::Error: the guest's own error name (e.g. org.freedesktop.systemd1.NoSuchUnit, or
// org.freedesktop.DBus.Error.ServiceUnknown when no systemd owns the name) with a message naming
// the machine; connect failures as their errno (FileNotFound: no system bus in the guest).
void start_unit_in_machine(const core::Machine& m, const std::string& unit,
                           std::chrono::microseconds timeout = kGuestCallTimeout);

// The same, answered from machd's loop: a guest whose bus never answers holds one pending call
// until `timeout`, not the daemon (machined blocks on it). Without a loop (set_loop not called) a
// call completes synchronously. `done` gets nullptr or the error, exactly once.
class GuestUnitStarts {
public:
    using Done = std::function<void(const sdbus::Error*)>;
    GuestUnitStarts();
    GuestUnitStarts(const GuestUnitStarts&) = delete;
    GuestUnitStarts& operator=(const GuestUnitStarts&) = delete;
    ~GuestUnitStarts();

    void set_loop(EventLoop* loop) { loop_ = loop; }
    void start(const core::Machine& m, const std::string& unit, Done done,
               std::chrono::microseconds timeout = kGuestCallTimeout);
    [[nodiscard]] size_t pending() const noexcept { return calls_.size(); }

    struct Call;  // one connection to one guest's bus

private:
    void pump(Call* c);
    void finish(Call* c, const sdbus::Error* error);
    static int on_reply(sd_bus_message* reply, void* userdata, sd_bus_error* ret_error);

    EventLoop* loop_ = nullptr;
    std::map<Call*, std::unique_ptr<Call>> calls_;
};

// "container-getty@N.service" for the pty "/dev/pts/N"; throws InvalidArgs for anything else.
std::string container_getty_unit(const std::string& pty_path);

}  // namespace mk::bus
