// io.machkit.Manager1 at /org/freedesktop/machine1: machkit's additions to machine1 (ExecMachine
// with the command's exit status, Pause/ResumeMachine, StartMachine, machine readiness), on their own interface so that
// org.freedesktop.machine1.Manager stays exactly machined 252's. See docs/dbus-api.md.
// Does not own the service or the connection. Thread-hostile (machd's one loop).
#pragma once

#include <functional>
#include <string>

#include <sdbus-c++/sdbus-c++.h>

#include "core/machine/launch.hpp"
#include "core/machine/service.hpp"
#include "Manager1-adaptor.h"

namespace mk::bus {

class ExtensionObject final : public sdbus::AdaptorInterfaces<io::machkit::Manager1_adaptor> {
public:
    ExtensionObject(sdbus::IConnection& connection, core::MachineService& service, std::string cgroup_root,
                    core::LaunchConfig launch);
    ~ExtensionObject();

    // Where systemd runs, StartMachine starts spawn@NAME.service through `start_unit` instead of
    // forking spawn: the machine then runs outside machd.service's sandbox, as a unit of its own.
    void use_units(std::function<void(const std::string& unit)> start_unit) { start_unit_ = std::move(start_unit); }

private:
    core::Machine& lookup(const std::string& name);

    sdbus::UnixFd ExecMachine(const std::string& name, const std::string& user, const std::string& path,
                              const std::vector<std::string>& args, const std::vector<std::string>& environment,
                              const sdbus::UnixFd& stdin_fd, const sdbus::UnixFd& stdout_fd, const sdbus::UnixFd& stderr_fd,
                              const uint64_t& flags) override;
    void PauseMachine(const std::string& name) override;
    void ResumeMachine(const std::string& name) override;
    std::string GetMachineFreezerState(const std::string& name) override;
    std::tuple<uint32_t, std::string> StartMachine(const std::string& name) override;
    bool GetMachineReady(const std::string& name) override;
    void CheckpointMachine(const std::string& name, const std::string& directory, const uint64_t& flags) override;
    std::tuple<uint32_t, std::string> RestoreMachine(const std::string& directory, const std::string& name,
                                                     const uint64_t& flags) override;
    void SetMachineReady(const std::string& name) override;

    core::MachineService& service_;
    std::string cgroup_root_;
    core::LaunchConfig launch_;
    std::function<void(const std::string& unit)> start_unit_;
};

}  // namespace mk::bus
