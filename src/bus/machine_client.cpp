#include "bus/machine_client.hpp"

#include <sdbus-c++/sdbus-c++.h>

#include <poll.h>
#include <time.h>

#include <algorithm>
#include <set>

#include "bus/client_calls.hpp"
#include "Manager-proxy.h"
#include "Manager1-proxy.h"
#include "bus/names.hpp"
#include "bus/systemd_scope.hpp"

namespace mk::bus {

void rethrow_as_client_error(const sdbus::Error& e) {
    const auto& n = e.getName();
    if (n == kServiceUnknown || n == kNameHasNoOwner) throw ClientError(ClientError::Kind::no_daemon, n, e.getMessage());
    throw ClientError(ClientError::Kind::remote, n, e.getMessage());
}

std::unique_ptr<sdbus::IConnection> open_system_bus(const BusTarget& target) {
    if (target.user) {
        if (!target.local())
            throw ClientError(ClientError::Kind::no_bus, "",
                              "--user works on the local host only: drop -H/-M, or drop --user for the system's machines");
        try {
            return sdbus::createSessionBusConnection();
        } catch (const sdbus::Error& e) {
            throw ClientError(ClientError::Kind::no_bus, e.getName(),
                              "Cannot connect to your session bus (is DBUS_SESSION_BUS_ADDRESS set?): " + e.getMessage());
        }
    }
    try {
        switch (target.kind) {
        case BusTarget::Kind::Local: return sdbus::createSystemBusConnection();
        case BusTarget::Kind::Remote: return sdbus::createRemoteSystemBusConnection(target.where);
        case BusTarget::Kind::Machine:
            // sd_bus_open_system_machine() as sdbus-c++ 1.2 can reach it: the same address, with
            // Hello (bus client), which this constructor sets up whatever its name says.
            return sdbus::createSessionBusConnectionWithAddress("x-machine-unix:machine=" + target.where);
        }
    } catch (const sdbus::Error& e) {
        std::string where = target.kind == BusTarget::Kind::Remote    ? " on host " + target.where
                            : target.kind == BusTarget::Kind::Machine ? " of container " + target.where
                                                                      : "";
        throw ClientError(ClientError::Kind::no_bus, e.getName(),
                          "Cannot connect to the system bus" + where + ": " + e.getMessage());
    }
    throw ClientError(ClientError::Kind::no_bus, "", "unknown bus transport");
}

namespace {

class ManagerProxy final
    : public sdbus::ProxyInterfaces<org::freedesktop::machine1::Manager_proxy, io::machkit::Manager1_proxy> {
public:
    explicit ManagerProxy(sdbus::IConnection& c) : ProxyInterfaces(c, kBusName, kManagerPath) { registerProxy(); }
    ~ManagerProxy() { unregisterProxy(); }

    // Names that MachineNew or MachineReady mentioned since the last take_news() (wait_ready).
    std::set<std::string> take_news() { return std::exchange(news_, {}); }

private:
    void onMachineNew(const std::string& name, const sdbus::ObjectPath&) override { news_.insert(name); }
    void onMachineRemoved(const std::string&, const sdbus::ObjectPath&) override {}
    void onMachineReady(const std::string& name, const sdbus::ObjectPath&) override { news_.insert(name); }

    std::set<std::string> news_;
};

// Introspection order of machined 252 (what `machinectl show` prints); unknown names follow.
const std::vector<std::string> kPropertyOrder = {
    // Manager
    "PoolPath",
    "PoolUsage",
    "PoolLimit",
    // Machine
    "Name",
    "Id",
    "Timestamp",
    "TimestampMonotonic",
    "Service",
    "Unit",
    "Leader",
    "Class",
    "RootDirectory",
    "NetworkInterfaces",
    "State",
    // Image
    "Path",
    "Type",
    "ReadOnly",
    "CreationTimestamp",
    "ModificationTimestamp",
    "Usage",
    "Limit",
    "UsageExclusive",
    "LimitExclusive",
};

template <typename T>
std::vector<int64_t> widen(const std::vector<T>& v) {
    return {v.begin(), v.end()};
}

Property convert(const std::string& name, const sdbus::Variant& v) {
    Property p{name, v.peekValueType(), std::string()};
    const std::string& s = p.signature;
    if (s == "s" || s == "o" || s == "g") p.value = v.get<std::string>();
    else if (s == "t") p.value = v.get<uint64_t>();
    else if (s == "u") p.value = static_cast<uint64_t>(v.get<uint32_t>());
    else if (s == "q") p.value = static_cast<uint64_t>(v.get<uint16_t>());
    else if (s == "y") p.value = static_cast<uint64_t>(v.get<uint8_t>());
    else if (s == "x") p.value = v.get<int64_t>();
    else if (s == "i") p.value = static_cast<int64_t>(v.get<int32_t>());
    else if (s == "n") p.value = static_cast<int64_t>(v.get<int16_t>());
    else if (s == "b") p.value = v.get<bool>();
    else if (s == "d") p.value = v.get<double>();
    else if (s == "ay") p.value = v.get<std::vector<uint8_t>>();
    else if (s == "ai") p.value = widen(v.get<std::vector<int32_t>>());
    else if (s == "ax") p.value = v.get<std::vector<int64_t>>();
    else if (s == "au") {
        auto u = v.get<std::vector<uint32_t>>();
        p.value = std::vector<uint64_t>(u.begin(), u.end());
    } else if (s == "at") p.value = v.get<std::vector<uint64_t>>();
    else if (s == "as" || s == "ao") p.value = v.get<std::vector<std::string>>();
    else p.value = std::string("[unprintable " + s + "]");
    return p;
}

}  // namespace

struct MachineClient::Impl {
    std::unique_ptr<sdbus::IConnection> conn;
    std::unique_ptr<ManagerProxy> manager;
};

MachineClient::MachineClient(const BusTarget& target) : impl_(std::make_unique<Impl>()) {
    impl_->conn = open_system_bus(target);
    impl_->manager = std::make_unique<ManagerProxy>(*impl_->conn);
}

MachineClient::~MachineClient() = default;

std::vector<MachineEntry> MachineClient::list_machines() {
    return guarded([&] {
        std::vector<MachineEntry> out;
        for (auto& r : impl_->manager->ListMachines()) out.push_back({r.get<0>(), r.get<1>(), r.get<2>(), r.get<3>()});
        return out;
    });
}

std::string MachineClient::machine_path(const std::string& name) {
    return guarded([&] { return std::string(impl_->manager->GetMachine(name)); });
}

std::vector<Property> MachineClient::properties(const std::string& path, const std::string& iface) {
    return guarded([&] {
        auto proxy = sdbus::createProxy(*impl_->conn, kBusName, path);
        std::map<std::string, sdbus::Variant> all;
        proxy->callMethod("GetAll").onInterface(kPropertiesInterface).withArguments(iface).storeResultsTo(all);
        std::vector<Property> out;
        for (const auto& n : kPropertyOrder)
            if (auto it = all.find(n); it != all.end()) {
                out.push_back(convert(n, it->second));
                all.erase(it);
            }
        for (const auto& [n, v] : all) out.push_back(convert(n, v));
        return out;
    });
}

std::vector<Address> MachineClient::addresses(const std::string& name) {
    return guarded([&] {
        std::vector<Address> out;
        for (auto& a : impl_->manager->GetMachineAddresses(name)) out.push_back({a.get<0>(), a.get<1>()});
        return out;
    });
}

std::map<std::string, std::string> MachineClient::os_release(const std::string& name) {
    return guarded([&] { return impl_->manager->GetMachineOSRelease(name); });
}

void MachineClient::terminate(const std::string& name) {
    guarded([&] { impl_->manager->TerminateMachine(name); });
}

void MachineClient::kill(const std::string& name, const std::string& who, int signal) {
    guarded([&] { impl_->manager->KillMachine(name, who, signal); });
}

namespace {
std::pair<int, std::string> take(std::tuple<sdbus::UnixFd, std::string> r) {
    return {std::get<0>(r).release(), std::get<1>(r)};
}
}  // namespace

std::pair<int, std::string> MachineClient::open_pty(const std::string& name) {
    return guarded([&] { return take(impl_->manager->OpenMachinePTY(name)); });
}

std::pair<int, std::string> MachineClient::open_login(const std::string& name) {
    return guarded([&] { return take(impl_->manager->OpenMachineLogin(name)); });
}

std::pair<int, std::string> MachineClient::open_shell(const std::string& name, const std::string& user,
                                                      const std::string& path, const std::vector<std::string>& args,
                                                      const std::vector<std::string>& env) {
    return guarded([&] { return take(impl_->manager->OpenMachineShell(name, user, path, args, env)); });
}

void MachineClient::bind_mount(const std::string& name, const std::string& source, const std::string& dest, bool read_only,
                               bool mkdir) {
    guarded([&] { impl_->manager->BindMountMachine(name, source, dest, read_only, mkdir); });
}

void MachineClient::copy(bool to_machine, const std::string& name, const std::string& source, const std::string& dest,
                         uint64_t flags) {
    guarded([&] {
        auto& m = *impl_->manager;
        if (flags == 0) {
            if (to_machine) m.CopyToMachine(name, source, dest);
            else m.CopyFromMachine(name, source, dest);
        } else {
            if (to_machine) m.CopyToMachineWithFlags(name, source, dest, flags);
            else m.CopyFromMachineWithFlags(name, source, dest, flags);
        }
    });
}

int MachineClient::exec(const std::string& name, const std::string& user, const std::string& path,
                        const std::vector<std::string>& args, const std::vector<std::string>& env, int in, int out, int err,
                        bool tty) {
    return guarded([&] {
        // UnixFd(int) dups: the caller keeps its own descriptors.
        auto fd = impl_->manager->ExecMachine(name, user, path, args, env, sdbus::UnixFd(in), sdbus::UnixFd(out),
                                              sdbus::UnixFd(err), tty ? 1 : 0);
        return fd.release();
    });
}

std::pair<uint32_t, std::string> MachineClient::start_machine(const std::string& name) {
    return guarded([&] {
        auto [pid, log] = impl_->manager->StartMachine(name);
        return std::pair<uint32_t, std::string>(pid, log);
    });
}

void MachineClient::checkpoint_machine(const std::string& name, const std::string& directory, uint64_t flags) {
    guarded([&] { impl_->manager->CheckpointMachine(name, directory, flags); });
}

std::pair<uint32_t, std::string> MachineClient::restore_machine(const std::string& directory, const std::string& name,
                                                                uint64_t flags) {
    return guarded([&] {
        auto [pid, log] = impl_->manager->RestoreMachine(directory, name, flags);
        return std::pair<uint32_t, std::string>(pid, log);
    });
}

void MachineClient::pause(const std::string& name) {
    guarded([&] { impl_->manager->PauseMachine(name); });
}

void MachineClient::resume(const std::string& name) {
    guarded([&] { impl_->manager->ResumeMachine(name); });
}

MachineClient::ReadyWait MachineClient::wait_ready(const std::string& name, uint64_t timeout_usec) {
    auto now = [] {
        timespec ts{};
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return static_cast<uint64_t>(ts.tv_sec) * 1'000'000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
    };
    const uint64_t deadline = timeout_usec ? now() + timeout_usec : 0;
    auto& conn = *impl_->conn;
    auto& manager = *impl_->manager;
    for (;;) {
        // Query (again): the signals seen so far can only have made the answer newer.
        manager.take_news();
        bool registered = true;
        try {
            if (manager.GetMachineReady(name)) return ReadyWait::ready;
        } catch (const sdbus::Error& e) {
            if (e.getName() != kNoSuchMachine) rethrow_as_client_error(e);
            registered = false;
        }
        // Sleep until a signal names the machine (it appeared, or became ready) or the deadline.
        for (;;) {
            bool news = false;
            try {
                while (conn.processPendingRequest()) {
                }
            } catch (const sdbus::Error& e) {
                rethrow_as_client_error(e);
            }
            if (manager.take_news().contains(name)) news = true;
            if (news) break;
            int wait_ms = -1;
            if (deadline) {
                uint64_t t = now();
                if (t >= deadline) return registered ? ReadyWait::not_ready : ReadyWait::not_registered;
                wait_ms = static_cast<int>((deadline - t + 999) / 1000);
            }
            auto pd = conn.getEventLoopPollData();
            int bus_ms = pd.getPollTimeout();
            if (bus_ms >= 0 && (wait_ms < 0 || bus_ms < wait_ms)) wait_ms = bus_ms;
            pollfd pfd{pd.fd, pd.events, 0};
            if (::poll(&pfd, 1, wait_ms) < 0 && errno != EINTR)
                throw ClientError(ClientError::Kind::no_bus, "", "poll on the bus failed");
        }
    }
}

std::vector<ImageEntry> MachineClient::list_images() {
    return guarded([&] {
        std::vector<ImageEntry> out;
        for (auto& r : impl_->manager->ListImages())
            out.push_back({r.get<0>(), r.get<1>(), r.get<2>(), r.get<3>(), r.get<4>(), r.get<5>(), r.get<6>()});
        return out;
    });
}

std::string MachineClient::image_path(const std::string& name) {
    return guarded([&] { return std::string(impl_->manager->GetImage(name)); });
}

std::map<std::string, std::string> MachineClient::image_os_release(const std::string& name) {
    return guarded([&] { return impl_->manager->GetImageOSRelease(name); });
}

std::string MachineClient::image_hostname(const std::string& name) {
    return guarded([&] { return impl_->manager->GetImageHostname(name); });
}

std::vector<uint8_t> MachineClient::image_machine_id(const std::string& name) {
    return guarded([&] { return impl_->manager->GetImageMachineID(name); });
}

void MachineClient::remove_image(const std::string& name) {
    guarded([&] { impl_->manager->RemoveImage(name); });
}

void MachineClient::rename_image(const std::string& name, const std::string& new_name) {
    guarded([&] { impl_->manager->RenameImage(name, new_name); });
}

void MachineClient::clone_image(const std::string& name, const std::string& new_name, bool read_only) {
    guarded([&] { impl_->manager->CloneImage(name, new_name, read_only); });
}

void MachineClient::mark_image_read_only(const std::string& name, bool read_only) {
    guarded([&] { impl_->manager->MarkImageReadOnly(name, read_only); });
}

void MachineClient::set_pool_limit(uint64_t bytes) {
    guarded([&] { impl_->manager->SetPoolLimit(bytes); });
}

void MachineClient::set_image_limit(const std::string& name, uint64_t bytes) {
    guarded([&] { impl_->manager->SetImageLimit(name, bytes); });
}

std::vector<std::pair<std::string, uint64_t>> MachineClient::clean_pool(const std::string& mode) {
    return guarded([&] {
        std::vector<std::pair<std::string, uint64_t>> out;
        for (auto& r : impl_->manager->CleanPool(mode)) out.emplace_back(r.get<0>(), r.get<1>());
        return out;
    });
}

bool MachineClient::systemd_present() { return SystemdScopeBackend::systemd_on_bus(*impl_->conn); }

void MachineClient::start_unit(const std::string& unit) {
    guarded([&] {
        auto proxy = sdbus::createProxy(*impl_->conn, kSystemdBusName, kSystemdPath);
        sdbus::ObjectPath job;
        proxy->callMethod("StartUnit")
            .onInterface(kSystemdManagerInterface)
            .withArguments(unit, std::string("replace"))
            .storeResultsTo(job);
    });
}

std::vector<MachineClient::UnitFileChange> MachineClient::enable_unit_files(const std::vector<std::string>& units,
                                                                            bool enable) {
    return guarded([&] {
        auto proxy = sdbus::createProxy(*impl_->conn, kSystemdBusName, kSystemdPath);
        std::vector<sdbus::Struct<std::string, std::string, std::string>> changes;
        if (enable) {
            bool carries_install_info = false;
            proxy->callMethod("EnableUnitFiles")
                .onInterface(kSystemdManagerInterface)
                .withArguments(units, false, false)
                .storeResultsTo(carries_install_info, changes);
        } else {
            proxy->callMethod("DisableUnitFiles")
                .onInterface(kSystemdManagerInterface)
                .withArguments(units, false)
                .storeResultsTo(changes);
        }
        std::vector<UnitFileChange> out;
        for (auto& c : changes) out.push_back({c.get<0>(), c.get<1>(), c.get<2>()});
        return out;
    });
}

void MachineClient::reload_systemd() {
    guarded([&] {
        auto proxy = sdbus::createProxy(*impl_->conn, kSystemdBusName, kSystemdPath);
        proxy->callMethod("Reload").onInterface(kSystemdManagerInterface);
    });
}

std::string MachineClient::unit_active_state(const std::string& unit) {
    try {
        auto manager = sdbus::createProxy(*impl_->conn, kSystemdBusName, kSystemdPath);
        sdbus::ObjectPath path;
        manager->callMethod("GetUnit").onInterface(kSystemdManagerInterface).withArguments(unit).storeResultsTo(path);
        auto u = sdbus::createProxy(*impl_->conn, kSystemdBusName, path);
        sdbus::Variant v;
        u->callMethod("Get")
            .onInterface(kPropertiesInterface)
            .withArguments(std::string("org.freedesktop.systemd1.Unit"), std::string("ActiveState"))
            .storeResultsTo(v);
        return v.get<std::string>();
    } catch (const sdbus::Error& e) {
        if (e.getName() == kSystemdNoSuchUnit) return "";
        rethrow_as_client_error(e);
    }
}

}  // namespace mk::bus
