// The Manager's ListMachines and the org.freedesktop.machine1.Machine objects, /org/freedesktop/machine1/machine/<escaped name>
// and /org/freedesktop/machine1/machine/self (the caller's own machine), served by ONE sd-bus
// fallback vtable that looks the machine up per call, as machined does. A generated sdbus-c++
// adaptor per machine cost ~11 KiB and a vtable registration each, and cannot serve "self".
// The interface is checked against machined 252's introspection by tests/bus/test_introspection.py.
// Thread-hostile (machd's one loop).
#pragma once

#include <sdbus-c++/IObject.h>

#include "bus/machine_ops.hpp"

struct sd_bus;
struct sd_bus_slot;

namespace mk::bus {

// The sd_bus connection underneath `object` (sdbus-c++ 1.2 has no accessor for it).
sd_bus* underlying_bus(sdbus::IObject& object);

class MachineNodes {
public:
    MachineNodes(sd_bus* bus, core::MachineService& service, CopyOperations& copies, GuestUnitStarts& logins);
    ~MachineNodes();
    MachineNodes(const MachineNodes&) = delete;
    MachineNodes& operator=(const MachineNodes&) = delete;

    // What the vtable's handlers receive as userdata: valid for one dispatch.
    struct Target {
        MachineNodes* nodes;
        core::Machine* machine;
    };

    core::MachineService& service() { return service_; }
    CopyOperations& copies() { return copies_; }
    GuestUnitStarts& logins() { return logins_; }

    // The machine at `path` (an escaped name, or "self": the machine the sender runs in), or null.
    Target* resolve(sd_bus* bus, const char* path);

private:
    core::MachineService& service_;
    CopyOperations& copies_;
    GuestUnitStarts& logins_;
    Target current_{this, nullptr};
    sd_bus_slot* vtable_slot_ = nullptr;
    sd_bus_slot* enumerator_slot_ = nullptr;
    sd_bus_slot* manager_slot_ = nullptr;
};

}  // namespace mk::bus
