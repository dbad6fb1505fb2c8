#include "bus/scope_properties.hpp"

#include <sdbus-c++/Error.h>

#include <set>

#include "bus/errors.hpp"

namespace mk::bus {
namespace {

template <typename T>
T get_as(const sdbus::Variant& v, const std::string& name, const char* sig) {
    if (v.peekValueType() != sig)
        throw bus_error(kInvalidArgs, "Property " + name + " expects type '" + sig + "', got '" + v.peekValueType() + "'");
    return v.get<T>();
}

}  // namespace

core::ScopeProperties parse_scope_properties(const ScopePropertyList& props) {
    // Accepted and meaningless without systemd (accounting is always on in cgroupfs, there is no
    // unit to collect or reference), or informational.
    static const std::set<std::string> accepted = {
        "Controller",   "CollectMode",       "AddRef",        "KillMode",         "SendSIGHUP",
        "SendSIGKILL",  "TimeoutStopUSec",   "CPUAccounting", "MemoryAccounting", "TasksAccounting",
        "IOAccounting", "BlockIOAccounting", "Delegate",      "Description",      "CoredumpReceive"};
    if (props.size() > 1024) throw sdbus::Error(kLimitsExceeded, "Too many scope properties");
    core::ScopeProperties out;
    for (const auto& p : props) {
        const std::string& name = p.get<0>();
        const sdbus::Variant& v = p.get<1>();
        if (name == "Slice") {
            out.slice = get_as<std::string>(v, name, "s");
            if (!core::slice_to_path(out.slice)) throw bus_error(kInvalidArgs, "Invalid slice name " + out.slice);
        } else if (name == "Description") {
            out.description = get_as<std::string>(v, name, "s");
        } else if (name == "MemoryMax" || name == "MemoryLimit") {
            out.memory_max = get_as<uint64_t>(v, name, "t");
        } else if (name == "TasksMax") {
            out.tasks_max = get_as<uint64_t>(v, name, "t");
        } else if (name == "CPUWeight") {
            auto w = get_as<uint64_t>(v, name, "t");
            if (w < 1 || w > 10000) throw sdbus::Error(kInvalidArgs, "CPUWeight= value out of range");
            out.cpu_weight = w;
        } else if (name == "CPUQuotaPerSecUSec") {
            auto q = get_as<uint64_t>(v, name, "t");
            if (q == 0) throw sdbus::Error(kInvalidArgs, "CPUQuotaPerSecUSec= value out of range");
            out.cpu_quota_per_sec_usec = q;
        } else if (name == "DevicePolicy") {
            auto s = get_as<std::string>(v, name, "s");
            if (s != "auto" && s != "closed" && s != "strict") throw bus_error(kInvalidArgs, "Invalid DevicePolicy " + s);
            out.device_policy = s;
        } else if (name == "DeviceAllow") {
            auto list = get_as<std::vector<sdbus::Struct<std::string, std::string>>>(v, name, "a(ss)");
            if (list.size() > 256) throw sdbus::Error(kLimitsExceeded, "Too many DeviceAllow= entries");
            for (const auto& d : list) {
                const std::string& path = d.get<0>();
                const std::string& perms = d.get<1>();
                if (!(path.starts_with("/dev/") || path.starts_with("char-") || path.starts_with("block-")) ||
                    perms.find_first_not_of("rwm") != std::string::npos)
                    throw bus_error(kInvalidArgs, "Invalid DeviceAllow= entry " + path + " " + perms);
                out.device_allow.push_back({path, perms});
            }
        } else if (name == "KillSignal") {
            auto sig = get_as<int32_t>(v, name, "i");
            if (sig <= 0 || sig >= _NSIG) throw sdbus::Error(kInvalidArgs, "Invalid KillSignal");
            out.kill_signal = sig;
        } else if (accepted.contains(name)) {
            // Type-checked by the caller's systemd in the original; nothing to apply here.
        } else {
            throw bus_error(kInvalidArgs, "Cannot set property " + name + ", or unknown property.");
        }
    }
    return out;
}

}  // namespace mk::bus
