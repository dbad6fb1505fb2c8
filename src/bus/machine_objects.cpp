#include "bus/machine_objects.hpp"

#include <climits>

#include "bus/credentials.hpp"
#include "bus/errors.hpp"
#include "bus/names.hpp"
#include "bus/polkit.hpp"
#include "bus/scope_properties.hpp"
#include "core/base/names.hpp"
#include "core/machine/bind.hpp"
#include "core/machine/inspect.hpp"
#include "core/machine/machine_error.hpp"

namespace mk::bus {

using core::Machine;

// -------------------------------------------------------------------------------------- manager

ManagerObject::ManagerObject(sdbus::IConnection& connection, core::MachineService& service, bool forward_scope_properties)
    : AdaptorInterfaces(connection, kManagerPath),
      connection_(connection),
      service_(service),
      forward_scope_properties_(forward_scope_properties),
      nodes_(underlying_bus(getObject()), service_, copies_, logins_) {
    registerAdaptor();
}

ManagerObject::~ManagerObject() { unregisterAdaptor(); }

void ManagerObject::machine_added(Machine& m) { emitMachineNew(m.name, machine_object_path(m.name)); }

void ManagerObject::machine_removed(const Machine& m) {
    if (auto it = pending_.find(m.name); it != pending_.end()) {
        it->second.returnError(bus_error(kSystemdJobFailed, "Machine " + m.name + " went away before its scope started"));
        pending_.erase(it);
    }
    emitMachineRemoved(m.name, machine_object_path(m.name));
}

void ManagerObject::machine_start_finished(Machine& m, const std::string& error) {
    auto it = pending_.find(m.name);
    if (it == pending_.end()) return;
    if (error.empty()) it->second.returnResults(machine_object_path(m.name));
    else it->second.returnError(bus_error(kSystemdJobFailed, error));
    pending_.erase(it);
}

void ManagerObject::create_async(sdbus::Result<sdbus::ObjectPath>&& result, const std::string& name,
                                 const std::function<sdbus::ObjectPath()>& create) {
    try {
        auto path = create();
        Machine* m = service_.find(name);
        if (m && m->state == core::MachineState::opening)
            pending_.insert_or_assign(name, std::move(result));  // answered by machine_start_finished()
        else result.returnResults(path);
    } catch (...) {
        result.returnError(current_exception_to_bus_error());
    }
}

Machine& ManagerObject::lookup(const std::string& name) {
    Machine* m = service_.find(name);
    if (!m) throw bus_error(kNoSuchMachine, "No machine '" + name + "' known");
    return *m;
}

sdbus::ObjectPath ManagerObject::GetMachine(const std::string& name) { return machine_object_path(lookup(name).name); }

ImageService& ManagerObject::images() {
    if (!images_) throw_not_implemented("the image API");
    return *images_;
}

sdbus::ObjectPath ManagerObject::GetImage(const std::string& name) {
    images().get(name);
    return images().object_for(name);
}

sdbus::ObjectPath ManagerObject::GetMachineByPID(const uint32_t& pid) {
    pid_t p = static_cast<pid_t>(pid);
    if (pid == 0) p = current_caller(getObject()).pid;
    if (pid > INT_MAX) throw sdbus::Error(kInvalidArgs, "Invalid PID");
    Machine* m = service_.find_by_pid(p);
    if (!m) throw bus_error(kNoMachineForPID, "PID " + std::to_string(p) + " does not belong to any known machine");
    return machine_object_path(m->name);
}

std::vector<sdbus::Struct<std::string, std::string, bool, uint64_t, uint64_t, uint64_t, sdbus::ObjectPath>>
ManagerObject::ListImages() {
    std::vector<sdbus::Struct<std::string, std::string, bool, uint64_t, uint64_t, uint64_t, sdbus::ObjectPath>> out;
    for (const auto& i : images().list())
        out.emplace_back(i.name, std::string(core::to_string(i.type)), i.read_only, i.crtime_usec, i.mtime_usec, i.usage,
                         image_object_path(i.name));
    return out;
}

sdbus::ObjectPath ManagerObject::create_or_register(const std::string& name, const std::vector<uint8_t>& id,
                                                    const std::string& service, const std::string& klass, uint32_t leader,
                                                    const std::string& root_directory, const std::vector<int32_t>& ifindices,
                                                    bool create,
                                                    const std::vector<sdbus::Struct<std::string, sdbus::Variant>>* props) {
    require_root(getObject(), create ? "create machines" : "register machines");
    core::RegisterRequest req;
    req.name = name;
    req.id = id;
    req.service = service;
    req.klass = klass;
    if (leader > INT_MAX) throw sdbus::Error(kInvalidArgs, "Invalid leader PID");
    // Leader 0 means the caller itself, as in machined.
    req.leader = leader == 0 ? current_caller(getObject()).pid : static_cast<pid_t>(leader);
    req.root_directory = root_directory;
    req.netif.assign(ifindices.begin(), ifindices.end());
    req.create_scope = create;
    if (props && forward_scope_properties_) {
        // systemd validates and applies them; we only need the slice to know the cgroup path.
        for (const auto& p : *props)
            if (p.get<0>() == "Slice" && p.get<1>().peekValueType() == "s") req.scope.slice = p.get<1>().get<std::string>();
        req.scope.passthrough = std::make_shared<const ScopePropertyList>(*props);
    } else if (props) {
        req.scope = parse_scope_properties(*props);
    }
    return translate([&] { return sdbus::ObjectPath(machine_object_path(service_.register_machine(std::move(req)).name)); });
}

void ManagerObject::CreateMachine(sdbus::Result<sdbus::ObjectPath>&& result, std::string name, std::vector<uint8_t> id,
                                  std::string service, std::string class_, uint32_t leader, std::string root_directory,
                                  std::vector<sdbus::Struct<std::string, sdbus::Variant>> scope_properties) {
    // The cgroupfs backend finishes at once; with systemd the reply waits for the scope's JobRemoved.
    create_async(std::move(result), name, [&] {
        return create_or_register(name, id, service, class_, leader, root_directory, {}, true, &scope_properties);
    });
}

void ManagerObject::CreateMachineWithNetwork(sdbus::Result<sdbus::ObjectPath>&& result, std::string name,
                                             std::vector<uint8_t> id, std::string service, std::string class_,
                                             uint32_t leader, std::string root_directory, std::vector<int32_t> ifindices,
                                             std::vector<sdbus::Struct<std::string, sdbus::Variant>> scope_properties) {
    create_async(std::move(result), name, [&] {
        return create_or_register(name, id, service, class_, leader, root_directory, ifindices, true, &scope_properties);
    });
}

sdbus::ObjectPath ManagerObject::RegisterMachine(const std::string& name, const std::vector<uint8_t>& id,
                                                 const std::string& service, const std::string& class_,
                                                 const uint32_t& leader, const std::string& root_directory) {
    return create_or_register(name, id, service, class_, leader, root_directory, {}, false, nullptr);
}

sdbus::ObjectPath ManagerObject::RegisterMachineWithNetwork(const std::string& name, const std::vector<uint8_t>& id,
                                                            const std::string& service, const std::string& class_,
                                                            const uint32_t& leader, const std::string& root_directory,
                                                            const std::vector<int32_t>& ifindices) {
    return create_or_register(name, id, service, class_, leader, root_directory, ifindices, false, nullptr);
}

void ManagerObject::UnregisterMachine(const std::string& name) {
    Machine& m = lookup(name);
    require_action(getObject(), kPolkitManageMachines, "unregistering machines");
    translate([&] { service_.unregister(m); });
}

void ManagerObject::TerminateMachine(const std::string& name) {
    MachineOps::terminate(current_caller(getObject()), service_, lookup(name));
}

void ManagerObject::KillMachine(const std::string& name, const std::string& who, const int32_t& signal) {
    MachineOps::kill(current_caller(getObject()), service_, lookup(name), who, signal);
}

std::vector<sdbus::Struct<int32_t, std::vector<uint8_t>>> ManagerObject::GetMachineAddresses(const std::string& name) {
    return MachineOps::addresses(lookup(name));
}

std::map<std::string, std::string> ManagerObject::GetMachineOSRelease(const std::string& name) {
    return MachineOps::os_release(lookup(name));
}

std::tuple<sdbus::UnixFd, std::string> ManagerObject::OpenMachinePTY(const std::string& name) {
    return MachineOps::open_pty(current_caller(getObject()), lookup(name));
}
void ManagerObject::OpenMachineLogin(sdbus::Result<sdbus::UnixFd, std::string>&& result, std::string name) {
    auto reply = std::make_shared<sdbus::Result<sdbus::UnixFd, std::string>>(std::move(result));
    auto done = [reply](const sdbus::Error* e, sdbus::UnixFd master, const std::string& path) {
        e ? reply->returnError(*e) : reply->returnResults(master, path);
    };
    try {
        MachineOps::open_login(current_caller(getObject()), lookup(name), logins_, done);
    } catch (const sdbus::Error& e) {
        done(&e, sdbus::UnixFd(), std::string());
    }
}
std::tuple<sdbus::UnixFd, std::string> ManagerObject::OpenMachineShell(const std::string& name, const std::string& user,
                                                                       const std::string& path,
                                                                       const std::vector<std::string>& args,
                                                                       const std::vector<std::string>& environment) {
    return MachineOps::open_shell(current_caller(getObject()), service_, lookup(name), user, path, args, environment);
}
void ManagerObject::BindMountMachine(const std::string& name, const std::string& source, const std::string& destination,
                                     const bool& read_only, const bool& mkdir) {
    MachineOps::bind_mount(current_caller(getObject()), lookup(name), source, destination, read_only, mkdir);
}
void ManagerObject::copy(sdbus::Result<>&& result, const std::string& name, const std::string& source,
                         const std::string& destination, bool to_machine, uint64_t flags) {
    Machine* m = service_.find(name);
    if (!m) return result.returnError(bus_error(kNoSuchMachine, "No machine '" + name + "' known"));
    auto reply = std::make_shared<sdbus::Result<>>(std::move(result));
    auto done = [reply](const sdbus::Error* e) { e ? reply->returnError(*e) : reply->returnResults(); };
    try {
        copies_.start(current_caller(getObject()), *m, source, destination, to_machine, flags, done);
    } catch (const sdbus::Error& e) {
        done(&e);
    }
}
void ManagerObject::CopyFromMachine(sdbus::Result<>&& result, std::string name, std::string source,
                                    std::string destination) {
    copy(std::move(result), name, source, destination, false, 0);
}
void ManagerObject::CopyToMachine(sdbus::Result<>&& result, std::string name, std::string source, std::string destination) {
    copy(std::move(result), name, source, destination, true, 0);
}
void ManagerObject::CopyFromMachineWithFlags(sdbus::Result<>&& result, std::string name, std::string source,
                                             std::string destination, uint64_t flags) {
    copy(std::move(result), name, source, destination, false, flags);
}
void ManagerObject::CopyToMachineWithFlags(sdbus::Result<>&& result, std::string name, std::string source,
                                           std::string destination, uint64_t flags) {
    copy(std::move(result), name, source, destination, true, flags);
}
sdbus::UnixFd ManagerObject::OpenMachineRootDirectory(const std::string& name) {
    return MachineOps::open_root(current_caller(getObject()), lookup(name));
}
uint32_t ManagerObject::GetMachineUIDShift(const std::string& name) { return MachineOps::uid_shift(lookup(name)); }
void ManagerObject::RemoveImage(const std::string& name) { images().remove(getObject(), name); }
void ManagerObject::RenameImage(const std::string& name, const std::string& new_name) {
    images().rename(getObject(), name, new_name);
}
void ManagerObject::CloneImage(const std::string& name, const std::string& new_name, const bool& read_only) {
    images().clone(getObject(), name, new_name, read_only);
}
void ManagerObject::MarkImageReadOnly(const std::string& name, const bool& read_only) {
    images().mark_read_only(getObject(), name, read_only);
}
std::string ManagerObject::GetImageHostname(const std::string& name) { return images().hostname(name); }
std::vector<uint8_t> ManagerObject::GetImageMachineID(const std::string& name) { return images().machine_id(name); }
std::map<std::string, std::string> ManagerObject::GetImageMachineInfo(const std::string& name) {
    return images().machine_info(name);
}
std::map<std::string, std::string> ManagerObject::GetImageOSRelease(const std::string& name) {
    return images().os_release(name);
}
void ManagerObject::SetPoolLimit(const uint64_t& size) { images().set_pool_limit(getObject(), size); }
void ManagerObject::SetImageLimit(const std::string& name, const uint64_t& size) {
    images().set_limit(getObject(), name, size);
}
std::vector<sdbus::Struct<std::string, uint64_t>> ManagerObject::CleanPool(const std::string& mode) {
    require_action(getObject(), kPolkitManageMachines, "cleaning the image pool");
    if (mode != "all" && mode != "hidden") throw bus_error(kInvalidArgs, "Unknown mode '" + mode + "'.");
    std::vector<sdbus::Struct<std::string, uint64_t>> out;
    // Hidden entries of ours: OCI layers no stack links any more (a transfer that runs keeps them).
    for (auto& [layer, bytes] : translate([&] { return images().pool().remove_unused_oci_layers(false); }))
        out.emplace_back(layer, bytes);
    if (mode == "hidden") return out;  // hidden (".") images are never listed; nothing read-only to drop
    for (const auto& i : images().list()) {
        if (i.read_only) continue;  // machined keeps read-only images
        // As machined's CleanPool: an image a running machine uses is kept, the rest still go.
        if (images().busy(i)) continue;
        images().remove(getObject(), i.name);
        out.emplace_back(i.name, i.usage);
    }
    return out;
}
uint32_t ManagerObject::MapFromMachineUser(const std::string& name, const uint32_t& uid_inner) {
    Machine& m = lookup(name);
    return translate([&] { return core::map_from_machine(m, uid_inner, false); });
}
uint32_t ManagerObject::MapFromMachineGroup(const std::string& name, const uint32_t& gid_inner) {
    Machine& m = lookup(name);
    return translate([&] { return core::map_from_machine(m, gid_inner, true); });
}

std::tuple<std::string, sdbus::ObjectPath, uint32_t> ManagerObject::map_to(uint32_t outer, bool group) {
    const char* what = group ? "Group" : "User";
    // IDs below 0x10000 belong to the host: machined refuses to map them (anchor §6.11).
    if (outer < 0x10000)
        throw bus_error(kInvalidArgs, std::string(what) + " " + std::to_string(outer) + " belongs to host " +
                                          (group ? "GID" : "UID") + " range");
    return translate([&]() -> std::tuple<std::string, sdbus::ObjectPath, uint32_t> {
        for (Machine* m : service_.registry().all())
            if (auto inner = core::map_to_machine(*m, outer, group))
                return std::tuple<std::string, sdbus::ObjectPath, uint32_t>(m->name, machine_object_path(m->name), *inner);
        core::throw_machine_error(group ? core::MachineErrc::no_such_group_mapping : core::MachineErrc::no_such_user_mapping,
                                  std::string(what) + " " + std::to_string(outer) + " is not mapped to any machine.");
    });
}
std::tuple<std::string, sdbus::ObjectPath, uint32_t> ManagerObject::MapToMachineUser(const uint32_t& uid_outer) {
    return map_to(uid_outer, false);
}
std::tuple<std::string, sdbus::ObjectPath, uint32_t> ManagerObject::MapToMachineGroup(const uint32_t& gid_outer) {
    return map_to(gid_outer, true);
}

// Pool: machined's constant path; usage/limit are btrfs quota values, unknown here (as machined on
// a non-btrfs host: UINT64_MAX).
std::string ManagerObject::PoolPath() { return images_ ? images_->pool().path() : "/var/lib/machines"; }
uint64_t ManagerObject::PoolUsage() { return UINT64_MAX; }
uint64_t ManagerObject::PoolLimit() { return UINT64_MAX; }

}  // namespace mk::bus
