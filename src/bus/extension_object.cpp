#include "bus/extension_object.hpp"

#include <fcntl.h>

#include "bus/credentials.hpp"
#include "bus/errors.hpp"
#include "bus/machine_objects.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/names.hpp"
#include "core/base/run_lock.hpp"
#include "core/criu/checkpoint.hpp"
#include "core/machine/exec.hpp"

namespace mk::bus {

namespace {
constexpr uint64_t kExecTty = 1;
constexpr uint64_t kCheckpointLeaveRunning = 1;
constexpr uint64_t kCheckpointTcpEstablished = 2;
constexpr uint64_t kCheckpointPreDump = 4;
}  // namespace

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
                                           const std::vector<std::string>& args, const std::vector<std::string>& environment,
                                           const sdbus::UnixFd& stdin_fd, const sdbus::UnixFd& stdout_fd,
                                           const sdbus::UnixFd& stderr_fd, const uint64_t& flags) {
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

namespace mk::bus {

// Synchronous: machd's loop waits for criu (the dump of a small container takes ~0.3 s here).
void ExtensionObject::CheckpointMachine(const std::string& name, const std::string& directory, const uint64_t& flags) {
    require_root(getObject(), "checkpoint machines");
    auto& m = lookup(name);
    if (flags & ~(kCheckpointLeaveRunning | kCheckpointTcpEstablished | kCheckpointPreDump))
        throw sdbus::Error(kInvalidArgs, "Unknown flags");
    if (flags & kCheckpointPreDump) {
        // Iterative migration needs the kernel to track dirtied pages between passes.
        if (!translate([] { return core::criu::memory_tracking_available(core::criu::criu_command()); }))
            throw bus_error(kNotSupported,
                            "Pre-dump (iterative checkpoints) is impossible on this kernel: it lacks "
                            "soft-dirty page tracking (CONFIG_MEM_SOFT_DIRTY)");
        throw bus_error(kNotSupported, "Pre-dump (iterative checkpoints) is not implemented by machkit yet");
    }
    if (!core::path_is_normalized_absolute(directory))
        throw bus_error(kInvalidArgs, "The checkpoint directory must be an absolute, normalized path");
    if (m.klass != core::MachineClass::container) throw bus_error(kNotSupported, "Only containers can be checkpointed");
    translate([&] {
        core::criu::CheckpointRequest req;
        req.machine = m.name;
        req.leader = m.leader;
        req.root = m.root_directory;
        req.image_dir = directory;
        req.leave_running = flags & kCheckpointLeaveRunning;
        req.tcp_established = flags & kCheckpointTcpEstablished;
        req.criu = core::criu::criu_command();
        // criu freezes the machine's group as a whole (runc's freeze_cgroup) instead of seizing
        // the tree task by task, so a task forking meanwhile cannot slip out of the dump.
        req.freezer_cgroup = core::machine_freezer_dir(m, cgroup_root_);
        if (req.root.empty()) throw core::UsageError("machine " + name + " has no root directory machd knows of");
        core::criu::checkpoint_machine(req);
    });
}

std::tuple<uint32_t, std::string> ExtensionObject::RestoreMachine(const std::string& directory, const std::string& name,
                                                                  const uint64_t& flags) {
    require_root(getObject(), "restore machines");
    constexpr uint64_t kUnlockedMounts = 1;
    if (flags & ~kUnlockedMounts) throw sdbus::Error(kInvalidArgs, "Unknown flags");
    if (!core::path_is_normalized_absolute(directory))
        throw bus_error(kInvalidArgs, "The checkpoint directory must be an absolute, normalized path");
    return translate([&] {
        core::UniqueFd dir(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!dir) throw core::UsageError(directory + " does not exist or is not a directory");
        auto rec = core::criu::read_checkpoint(dir.get(), directory);
        std::string target = name.empty() ? rec.machine : name;
        core::criu::check_unlocked_mounts_accepted(rec, flags & kUnlockedMounts);
        if (!core::machine_name_is_valid(target)) throw bus_error(kInvalidArgs, "Invalid machine name '" + target + "'");
        if (service_.find(target)) throw bus_error(kMachineExists, "Machine '" + target + "' already exists");
        if (core::run_lock_held("machine/" + target))
            throw bus_error(kMachineExists, "Machine name '" + target + "' is in use by a running container");
        std::vector<std::string> args = {launch_.spawn_path, "--restore=" + directory, "-M", target, "--register=yes"};
        if (flags & kUnlockedMounts) args.emplace_back("--unlocked-mounts");
        auto l = core::launch_detached(launch_, target, std::move(args));
        return std::tuple<uint32_t, std::string>(static_cast<uint32_t>(l.pid), l.log_path);
    });
}

}  // namespace mk::bus
