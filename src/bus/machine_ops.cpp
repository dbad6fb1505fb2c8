#include "bus/machine_ops.hpp"

#include "bus/errors.hpp"
#include "bus/guest_bus.hpp"
#include "bus/polkit.hpp"
#include "core/base/names.hpp"
#include "core/machine/bind.hpp"
#include "core/machine/inspect.hpp"

namespace mk::bus {

using core::Machine;

namespace {
// machined asks for the host-* twin of shell, login and open-pty when the target is the host.
const char* host_or(const Machine& m, const char* host_action, const char* action) {
    return m.klass == core::MachineClass::host ? host_action : action;
}
}  // namespace

std::string machine_object_path(std::string_view name) {
    return std::string(kMachinePathPrefix) + "/" + core::bus_label_escape(name);
}

void MachineOps::terminate(const Caller& caller, core::MachineService& svc, Machine& m) {
    require_action(caller, kPolkitManageMachines, "terminating machines");
    translate([&] { svc.terminate(m); });
}

void MachineOps::kill(const Caller& caller, core::MachineService& svc, Machine& m, const std::string& who, int32_t sig) {
    require_action(caller, kPolkitManageMachines, "killing machines");
    translate([&] { svc.kill(m, who, sig); });
}

std::vector<sdbus::Struct<int32_t, std::vector<uint8_t>>> MachineOps::addresses(Machine& m) {
    return translate([&] {
        std::vector<sdbus::Struct<int32_t, std::vector<uint8_t>>> out;
        for (auto& a : core::machine_addresses(m)) out.emplace_back(a.family, std::move(a.bytes));
        return out;
    });
}

std::map<std::string, std::string> MachineOps::os_release(Machine& m) {
    return translate([&] { return core::machine_os_release(m); });
}

uint32_t MachineOps::uid_shift(Machine& m) {
    return translate([&] { return core::machine_uid_shift(m); });
}

std::tuple<sdbus::UnixFd, std::string> MachineOps::open_pty(const Caller& caller, Machine& m) {
    require_action(caller, host_or(m, kPolkitHostOpenPty, kPolkitOpenPty), "opening terminals in machines");
    return translate([&] {
        auto pty = core::open_machine_pty(m);
        return std::tuple<sdbus::UnixFd, std::string>(sdbus::UnixFd(pty.master.release(), sdbus::adopt_fd), pty.path);
    });
}

void MachineOps::open_login(const Caller& caller, Machine& m, GuestUnitStarts& starts, LoginDone done) {
    try {
        require_action(caller, host_or(m, kPolkitHostLogin, kPolkitLogin), "logging into machines");
        // As machined: the pty first (its number names the getty), then the guest's systemd starts
        // the getty on it.
        auto pty = translate([&] { return core::open_machine_pty(m); });
        std::string unit = container_getty_unit(pty.path);
        auto master = std::make_shared<core::UniqueFd>(std::move(pty.master));
        starts.start(m, unit, [done, master, path = pty.path](const sdbus::Error* e) {
            if (e) return done(e, sdbus::UnixFd(), path);  // the master closes with the last copy
            done(nullptr, sdbus::UnixFd(master->release(), sdbus::adopt_fd), path);
        });
    } catch (...) {
        auto e = current_exception_to_bus_error();
        done(&e, sdbus::UnixFd(), std::string());
    }
}

std::tuple<sdbus::UnixFd, std::string> MachineOps::open_shell(const Caller& caller, core::MachineService& svc, Machine& m,
                                                              const std::string& user, const std::string& path,
                                                              const std::vector<std::string>& args,
                                                              const std::vector<std::string>& environment) {
    require_action(caller, host_or(m, kPolkitHostShell, kPolkitShell), "opening shells in machines");
    return translate([&] {
        auto pty = svc.open_shell(m, core::ShellRequest{user, path, args, environment});
        return std::tuple<sdbus::UnixFd, std::string>(sdbus::UnixFd(pty.master.release(), sdbus::adopt_fd), pty.path);
    });
}

void MachineOps::bind_mount(const Caller& caller, Machine& m, const std::string& source, const std::string& destination,
                            bool read_only, bool mkdir) {
    require_action(caller, kPolkitManageMachines, "bind mounting into machines");
    translate([&] { core::bind_mount_into_machine(m, source, destination, read_only, mkdir); });
}

sdbus::UnixFd MachineOps::open_root(const Caller& caller, Machine& m) {
    require_action(caller, kPolkitManageMachines, "opening machine root directories");
    return translate([&] { return sdbus::UnixFd(core::open_machine_root(m).release(), sdbus::adopt_fd); });
}

void CopyOperations::start(const Caller& caller, Machine& m, const std::string& source, const std::string& destination,
                           bool to_machine, uint64_t flags, Done done) {
    try {
        require_action(caller, kPolkitManageMachines, "copying files to or from machines");
    } catch (const sdbus::Error& e) {
        return done(&e);
    }
    start_checked(m, source, destination, to_machine, flags, [done = std::move(done)](std::exception_ptr error) {
        if (!error) return done(nullptr);
        try {
            std::rethrow_exception(error);
        } catch (...) {
            auto e = current_exception_to_bus_error();
            done(&e);
        }
    });
}

void CopyOperations::start_checked(Machine& m, const std::string& source, const std::string& destination, bool to_machine,
                                   uint64_t flags, Finished finished) {
    try {
        if (running_.size() >= kMax) throw sdbus::Error(kLimitsExceeded, "Too many ongoing copies.");
        auto op = core::CopyOperation::start(m, source, destination, to_machine, flags);
        if (!loop_) {
            op.finish();
            return finished(nullptr);
        }
        int key = op.pidfd();
        running_.emplace(key, std::make_pair(std::move(op), std::move(finished)));
        loop_->watch_child(key, [this, key] {
            auto node = running_.extract(key);
            if (node.empty()) return;
            auto& [operation, reply] = node.mapped();
            try {
                operation.finish();
            } catch (...) {
                return reply(std::current_exception());
            }
            reply(nullptr);
        });
    } catch (...) {
        finished(std::current_exception());
    }
}

}  // namespace mk::bus
