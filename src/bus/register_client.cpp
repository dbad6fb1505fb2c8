#include "bus/register_client.hpp"

#include <sdbus-c++/sdbus-c++.h>

#include <cctype>

#include "Manager-proxy.h"
#include "bus/names.hpp"

namespace mk::bus {
namespace {

class ManagerProxy final : public sdbus::ProxyInterfaces<org::freedesktop::machine1::Manager_proxy> {
public:
    explicit ManagerProxy(sdbus::IConnection& c) : ProxyInterfaces(c, kBusName, kManagerPath) { registerProxy(); }
    ~ManagerProxy() { unregisterProxy(); }

    // io.machkit.Manager1 (machd only), without the rest of that interface's proxy.
    void set_machine_ready(const std::string& name) {
        getProxy().callMethod("SetMachineReady").onInterface(kExtensionInterface).withArguments(name);
    }

private:
    void onMachineNew(const std::string&, const sdbus::ObjectPath&) override {}
    void onMachineRemoved(const std::string&, const sdbus::ObjectPath&) override {}
};

template <typename F>
auto call(ManagerBus bus, F&& f) {
    std::unique_ptr<sdbus::IConnection> conn;
    const char* which = bus == ManagerBus::user ? "your session bus" : "the system bus";
    try {
        conn = bus == ManagerBus::user ? sdbus::createSessionBusConnection() : sdbus::createSystemBusConnection();
    } catch (const sdbus::Error& e) {
        throw RegisterError(RegisterError::Kind::no_bus, e.getName(),
                            std::string("Cannot connect to ") + which + ": " + e.getMessage());
    }
    ManagerProxy proxy(*conn);
    try {
        return f(proxy);
    } catch (const sdbus::Error& e) {
        const auto& n = e.getName();
        if (n == kServiceUnknown || n == kNameHasNoOwner)
            throw RegisterError(RegisterError::Kind::no_daemon, n,
                                std::string("No machine manager on ") + which + " (is machd" +
                                    (bus == ManagerBus::user ? " --user" : "") + " running?): " + e.getMessage());
        throw RegisterError(RegisterError::Kind::refused, n, e.getMessage());
    }
}

std::vector<uint8_t> id_bytes(const MachineRegistration& m) {
    for (auto b : m.id)
        if (b) return {m.id.begin(), m.id.end()};
    return {};
}

[[noreturn]] void bad(const std::string& msg) { throw RegisterError(RegisterError::Kind::bad_request, "", msg); }

uint64_t parse_bytes(const std::string& key, std::string v) {
    if (v == "infinity") return UINT64_MAX;
    uint64_t mult = 1;
    if (!v.empty()) {
        switch (std::toupper(static_cast<unsigned char>(v.back()))) {
        case 'K': mult = 1ull << 10; break;
        case 'M': mult = 1ull << 20; break;
        case 'G': mult = 1ull << 30; break;
        case 'T': mult = 1ull << 40; break;
        default: break;
        }
        if (mult != 1) v.pop_back();
    }
    if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos) bad("Invalid value for " + key + "=: " + v);
    return std::stoull(v) * mult;
}

using Props = std::vector<sdbus::Struct<std::string, sdbus::Variant>>;

void append_property(Props& props, const std::string& assignment) {
    auto eq = assignment.find('=');
    if (eq == std::string::npos || eq == 0) bad("Not an assignment: " + assignment);
    std::string key = assignment.substr(0, eq), value = assignment.substr(eq + 1);
    if (key == "MemoryMax" || key == "MemoryLimit") {
        props.emplace_back(key, sdbus::Variant(parse_bytes(key, value)));
    } else if (key == "TasksMax") {
        props.emplace_back(key, sdbus::Variant(value == "infinity" ? UINT64_MAX : parse_bytes(key, value)));
    } else if (key == "CPUWeight") {
        props.emplace_back(key, sdbus::Variant(parse_bytes(key, value)));
    } else if (key == "CPUQuota") {
        if (value.empty() || value.back() != '%') bad("CPUQuota= needs a percentage");
        uint64_t pct = parse_bytes(key, value.substr(0, value.size() - 1));
        props.emplace_back("CPUQuotaPerSecUSec", sdbus::Variant(pct * 10000));
    } else if (key == "DevicePolicy" || key == "Description") {
        props.emplace_back(key, sdbus::Variant(value));
    } else if (key == "Delegate") {
        props.emplace_back(key, sdbus::Variant(value == "yes" || value == "true" || value == "1"));
    } else if (key == "DeviceAllow") {
        auto sp = value.find(' ');
        std::string path = value.substr(0, sp), perms = sp == std::string::npos ? "rwm" : value.substr(sp + 1);
        props.emplace_back(key, sdbus::Variant(std::vector<sdbus::Struct<std::string, std::string>>{{path, perms}}));
    } else {
        bad("Unsupported scope property: " + key);
    }
}

}  // namespace

std::string register_machine(const MachineRegistration& m, ManagerBus bus) {
    return call(bus, [&](ManagerProxy& p) -> std::string {
        if (m.netif.empty())
            return p.RegisterMachine(m.name, id_bytes(m), m.service, m.klass, static_cast<uint32_t>(m.leader),
                                     m.root_directory);
        return p.RegisterMachineWithNetwork(m.name, id_bytes(m), m.service, m.klass, static_cast<uint32_t>(m.leader),
                                            m.root_directory, {m.netif.begin(), m.netif.end()});
    });
}

std::string create_machine(const MachineRegistration& m, const ScopeSettings& scope, ManagerBus bus) {
    // nspawn's order: Slice, Controller (not ours: we have no bus name worth stopping), DevicePolicy,
    // DeviceAllow, KillSignal/KillMode, then --property= so that the user's values win.
    Props props;
    if (!scope.slice.empty()) props.emplace_back("Slice", sdbus::Variant(scope.slice));
    if (!scope.device_policy.empty()) props.emplace_back("DevicePolicy", sdbus::Variant(scope.device_policy));
    if (!scope.device_allow.empty()) {
        std::vector<sdbus::Struct<std::string, std::string>> allow;
        for (const auto& [path, perms] : scope.device_allow) allow.emplace_back(path, perms);
        props.emplace_back("DeviceAllow", sdbus::Variant(allow));
    }
    if (scope.kill_signal) {
        props.emplace_back("KillSignal", sdbus::Variant(static_cast<int32_t>(*scope.kill_signal)));
        props.emplace_back("KillMode", sdbus::Variant(std::string("mixed")));
    }
    for (const auto& a : scope.properties) append_property(props, a);
    return call(bus, [&](ManagerProxy& p) -> std::string {
        if (m.netif.empty())
            return p.CreateMachine(m.name, id_bytes(m), m.service, m.klass, static_cast<uint32_t>(m.leader),
                                   m.root_directory, props);
        return p.CreateMachineWithNetwork(m.name, id_bytes(m), m.service, m.klass, static_cast<uint32_t>(m.leader),
                                          m.root_directory, {m.netif.begin(), m.netif.end()}, props);
    });
}

void terminate_machine(const std::string& name, ManagerBus bus) {
    call(bus, [&](ManagerProxy& p) { p.TerminateMachine(name); });
}

void unregister_machine(const std::string& name, ManagerBus bus) {
    try {
        call(bus, [&](ManagerProxy& p) { p.UnregisterMachine(name); });
    } catch (const RegisterError& e) {
        if (e.dbus_name != kNoSuchMachine) throw;
    }
}

void report_machine_ready(const std::string& name, ManagerBus bus) {
    try {
        call(bus, [&](ManagerProxy& p) { p.set_machine_ready(name); });
    } catch (const RegisterError& e) {
        // systemd-machined: nobody there to tell, as when there is no manager at all.
        if (e.dbus_name == kUnknownMethod || e.dbus_name == kUnknownInterface || e.dbus_name == kUnknownObject)
            throw RegisterError(RegisterError::Kind::no_daemon, e.dbus_name, e.what());
        throw;
    }
}

}  // namespace mk::bus
