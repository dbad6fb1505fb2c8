#include "bus/extension_object.hpp"

#include "bus/credentials.hpp"
#include "bus/errors.hpp"
#include "bus/machine_objects.hpp"
#include "core/machine/exec.hpp"

namespace mk::bus {

namespace {
constexpr uint64_t kExecTty = 1;
}

ExtensionObject::ExtensionObject(sdbus::IConnection& connection, core::MachineService& service, std::string cgroup_root,
                                 core::LaunchConfig launch)
    : AdaptorInterfaces(connection, kManagerPath),
      service_(service),
      cgroup_root_(std::move(cgroup_root)),
      launch_(std::move(launch)) {
    registerAdaptor();
}

ExtensionObject::~ExtensionObject() { unregisterAdaptor(); }

core::Machine& ExtensionObject::lookup(const std::string& name) {
    core::Machine* m = service_.find(name);
    if (!m) throw bus_error(kNoSuchMachine, "No machine '" + name + "' known");
    return *m;
}

sdbus::UnixFd ExtensionObject::ExecMachine(const std::string& name, const std::string& user, const std::string& path,
                                           const std::vector<std::string>& args,
                                           const std::vector<std::string>& environment, const sdbus::UnixFd& stdin_fd,
                                           const sdbus::UnixFd& stdout_fd, const sdbus::UnixFd& stderr_fd,
                                           const uint64_t& flags) {
    require_root(getObject(), "run commands in machines");
    auto& m = lookup(name);
    if (flags & ~kExecTty) throw sdbus::Error(kInvalidArgs, "Unknown flags");
    return translate([&] {
        core::ExecStdio stdio;
        stdio.fds = {stdin_fd.get(), stdout_fd.get(), stderr_fd.get()};
        stdio.tty = flags & kExecTty;
        auto fd = core::exec_in_machine(m, core::ShellRequest{user, path, args, environment}, stdio, cgroup_root_);
        return sdbus::UnixFd(fd.release(), sdbus::adopt_fd);
    });
}

void ExtensionObject::PauseMachine(const std::string& name) {
    require_root(getObject(), "pause machines");
    auto& m = lookup(name);
    translate([&] { core::freeze_machine(m, true, cgroup_root_); });
}

void ExtensionObject::ResumeMachine(const std::string& name) {
    require_root(getObject(), "resume machines");
    auto& m = lookup(name);
    translate([&] { core::freeze_machine(m, false, cgroup_root_); });
}

std::string ExtensionObject::GetMachineFreezerState(const std::string& name) {
    auto& m = lookup(name);
    return translate([&] { return core::machine_freezer_state(m, cgroup_root_); });
}

std::tuple<uint32_t, std::string> ExtensionObject::StartMachine(const std::string& name) {
    require_root(getObject(), "start machines");
    if (service_.find(name)) throw bus_error(kMachineExists, "Machine '" + name + "' already exists");
    return translate([&] {
        if (start_unit_) {
            core::launchable_image_dir(launch_, name);
            std::string unit = core::launch_unit_name(name);
            start_unit_(unit);
            return std::tuple<uint32_t, std::string>(0, unit);
        }
        auto l = core::launch_machine(launch_, name);
        return std::tuple<uint32_t, std::string>(static_cast<uint32_t>(l.pid), l.log_path);
    });
}

bool ExtensionObject::GetMachineReady(const std::string& name) { return lookup(name).ready; }

void ExtensionObject::SetMachineReady(const std::string& name) {
    require_root(getObject(), "report machines ready");
    auto& m = lookup(name);
    pid_t caller = current_caller(getObject()).pid;
    if (translate([&] { return service_.report_ready(m, caller); }))
        emitMachineReady(m.name, sdbus::ObjectPath(machine_object_path(m.name)));
}

}  // namespace mk::bus
