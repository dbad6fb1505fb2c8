#include "bus/systemd_scope.hpp"

#include "bus/errors.hpp"
#include "bus/names.hpp"
#include "bus/scope_properties.hpp"
#include "core/base/error.hpp"

namespace mk::bus {
namespace {}  // namespace

SystemdScopeBackend::SystemdScopeBackend(sdbus::IConnection& connection, std::string cgroup_root, JobDone on_job_done)
    : proxy_(sdbus::createProxy(connection, kSystemdBusName, kSystemdPath)),
      reader_(std::move(cgroup_root)),
      on_job_done_(std::move(on_job_done)) {
    proxy_->uponSignal("JobRemoved")
        .onInterface(kSystemdManagerInterface)
        .call([this](uint32_t, const sdbus::ObjectPath& job, const std::string& unit, const std::string& result) {
            on_job_done_(unit, job, result);
        });
    proxy_->finishRegistration();
    // PID 1 only sends job signals while someone is subscribed.
    try {
        proxy_->callMethod("Subscribe").onInterface(kSystemdManagerInterface);
    } catch (const sdbus::Error&) {
        // Already subscribed, or an old systemd: JobRemoved still reaches us via the match.
    }
}

bool SystemdScopeBackend::systemd_on_bus(sdbus::IConnection& connection) {
    try {
        auto dbus = sdbus::createProxy(connection, kDBusBusName, kDBusPath);
        bool has = false;
        dbus->callMethod("NameHasOwner")
            .onInterface(kDBusInterface)
            .withArguments(std::string(kSystemdBusName))
            .storeResultsTo(has);
        return has;
    } catch (const sdbus::Error&) {
        return false;
    }
}

core::ScopeStart SystemdScopeBackend::start_scope(const std::string& unit, pid_t leader,
                                                  const core::ScopeProperties& props) {
    // machined 252's machine_start_scope() set, in its order; the caller's properties follow, so
    // theirs win (systemd applies assignments in order).
    ScopePropertyList list;
    list.emplace_back("Slice", sdbus::Variant(std::string("machine.slice")));
    list.emplace_back("Description", sdbus::Variant(props.description));
    list.emplace_back("PIDs", sdbus::Variant(std::vector<uint32_t>{static_cast<uint32_t>(leader)}));
    list.emplace_back("Delegate", sdbus::Variant(true));
    list.emplace_back("CollectMode", sdbus::Variant(std::string("inactive-or-failed")));
    list.emplace_back("AddRef", sdbus::Variant(true));
    list.emplace_back("TasksMax", sdbus::Variant(uint64_t{16384}));
    if (auto caller = std::static_pointer_cast<const ScopePropertyList>(props.passthrough))
        list.insert(list.end(), caller->begin(), caller->end());
    std::string job = start_transient(unit, list);
    auto slice = core::slice_to_path(props.slice);
    return {(slice ? *slice : std::string("/machine.slice")) + "/" + unit, job};
}

std::string SystemdScopeBackend::start_transient(const std::string& unit, const ScopePropertyList& properties) {
    std::vector<sdbus::Struct<std::string, std::vector<sdbus::Struct<std::string, sdbus::Variant>>>> aux;
    sdbus::ObjectPath job;
    proxy_->callMethod("StartTransientUnit")
        .onInterface(kSystemdManagerInterface)
        .withArguments(unit, std::string("fail"), properties, aux)
        .storeResultsTo(job);
    return job;
}

std::string SystemdScopeBackend::start_unit(const std::string& unit) {
    sdbus::ObjectPath job;
    proxy_->callMethod("StartUnit")
        .onInterface(kSystemdManagerInterface)
        .withArguments(unit, std::string("replace"))
        .storeResultsTo(job);
    return job;
}

void SystemdScopeBackend::start_service(const std::string& unit, const std::vector<std::string>& argv, int stdin_fd,
                                        int stdout_fd, int stderr_fd, const ScopePropertyList& properties) {
    ScopePropertyList list;
    list.emplace_back(
        "ExecStart",
        sdbus::Variant(std::vector<sdbus::Struct<std::string, std::vector<std::string>, bool>>{{argv.at(0), argv, false}}));
    list.emplace_back("CollectMode", sdbus::Variant(std::string("inactive-or-failed")));
    const std::pair<const char*, int> stdio[] = {{"StandardInputFileDescriptor", stdin_fd},
                                                 {"StandardOutputFileDescriptor", stdout_fd},
                                                 {"StandardErrorFileDescriptor", stderr_fd}};
    for (const auto& [name, fd] : stdio)
        if (fd >= 0) list.emplace_back(name, sdbus::Variant(sdbus::UnixFd(fd)));
    list.insert(list.end(), properties.begin(), properties.end());
    start_transient(unit, list);
}

void SystemdScopeBackend::stop_unit(const std::string& unit) {
    try {
        proxy_->callMethod("StopUnit").onInterface(kSystemdManagerInterface).withArguments(unit, std::string("replace"));
    } catch (const sdbus::Error&) {
        // NoSuchUnit: it ended and was collected meanwhile.
    }
}

void SystemdScopeBackend::remove_scope(const std::string& cgroup_path) {
    std::string unit = cgroup_path.substr(cgroup_path.rfind('/') + 1);
    for (const char* method : {"StopUnit", "UnrefUnit"}) {
        try {
            auto call = proxy_->createMethodCall(kSystemdManagerInterface, method);
            call << unit;
            if (std::string_view(method) == "StopUnit") call << std::string("fail");
            proxy_->callMethod(call);
        } catch (const sdbus::Error&) {
            // NoSuchUnit: systemd already collected the empty scope.
        }
    }
}

}  // namespace mk::bus
