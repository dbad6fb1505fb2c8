// machd's Varlink front ends: io.systemd.Machine and io.systemd.MachineImage as systemd 262 defines
// them (idl/*.varlink), over the same core as the D-Bus API: core::MachineService for machines,
// core::ImagePool for images, and the D-Bus side's CopyOperations and GuestUnitStarts (one bound on
// copies, one set of guest-bus calls for both APIs). Credentials come from SO_PEERCRED: anything
// that changes state or enters a machine is root only (org.varlink.service.PermissionDenied),
// List/MapFrom/MapTo are open to all, as the D-Bus policy has it. Thread-hostile (machd's loop).
#pragma once

#include <map>
#include <string>

#include "bus/guest_bus.hpp"
#include "bus/machine_ops.hpp"
#include "core/image/pool.hpp"
#include "core/machine/service.hpp"
#include "varlink/server.hpp"

namespace mk::varlink {

// Register calls waiting for an asynchronous scope backend (systemd) to start the machine's scope:
// answered when the start job ends, as the D-Bus CreateMachine is. Put it in the service's
// listener chain.
class PendingRegistrations final : public core::MachineService::Listener {
public:
    void add(const std::string& name, Request request) { pending_.insert_or_assign(name, std::move(request)); }
    void machine_added(core::Machine&) override {}
    void machine_removed(const core::Machine& m) override;
    void machine_start_finished(core::Machine& m, const std::string& error) override;

private:
    std::map<std::string, Request> pending_;
};

struct MachineContext {
    core::MachineService& machines;
    bus::CopyOperations& copies;
    bus::GuestUnitStarts& logins;
    PendingRegistrations& registrations;
};

Interface machine_interface(MachineContext& ctx);
Interface machine_image_interface(core::MachineService& machines, core::ImagePool& pool);

}  // namespace mk::varlink
