#include "bus/errors.hpp"

#include <cstring>
#include <system_error>

#include "core/base/strings.hpp"
#include "core/machine/machine_error.hpp"

namespace mk::bus {

std::string errno_to_bus_name(int err) {
    // sd-bus's bus_error_name_from_errno table (bus-error.c).
    switch (err) {
    case ENOMEM: return "org.freedesktop.DBus.Error.NoMemory";
    case EPERM:
    case EACCES: return kAccessDenied;
    case EINVAL: return kInvalidArgs;
    case ESRCH: return "org.freedesktop.DBus.Error.UnixProcessIdUnknown";
    case ENOENT: return "org.freedesktop.DBus.Error.FileNotFound";
    case EEXIST: return "org.freedesktop.DBus.Error.FileExists";
    case ETIMEDOUT: return "org.freedesktop.DBus.Error.Timeout";
    case EIO: return "org.freedesktop.DBus.Error.IOError";
    case EOPNOTSUPP: return kNotSupported;
    case ENOBUFS: return kLimitsExceeded;
    default: break;
    }
    if (const char* n = strerrorname_np(err)) return std::string("System.Error.") + n;
    return kFailed;
}

sdbus::Error bus_error(const std::string& name, std::string_view message) {
    return sdbus::Error(name, core::escape_control_chars(message));
}

sdbus::Error to_bus_error(const std::exception& e) {
    if (auto* b = dynamic_cast<const sdbus::Error*>(&e)) return bus_error(b->getName(), b->getMessage());
    if (auto* s = dynamic_cast<const std::system_error*>(&e)) {
        const auto& code = s->code();
        if (code.category() == core::machine_category()) {
            // what() is "<message>: <category text>"; the message alone is what clients should see.
            std::string msg = s->what();
            std::string suffix = ": " + code.message();
            if (msg.ends_with(suffix)) msg.resize(msg.size() - suffix.size());
            using core::MachineErrc;
            switch (static_cast<MachineErrc>(code.value())) {
            case MachineErrc::no_such_machine: return bus_error(kNoSuchMachine, msg);
            case MachineErrc::machine_exists: return bus_error(kMachineExists, msg);
            case MachineErrc::no_machine_for_pid: return bus_error(kNoMachineForPID, msg);
            case MachineErrc::too_many_machines: return bus_error(kLimitsExceeded, msg);
            case MachineErrc::invalid_argument: return bus_error(kInvalidArgs, msg);
            case MachineErrc::not_supported: return bus_error(kNotSupported, msg);
            case MachineErrc::no_private_networking: return bus_error(kNoPrivateNetworking, msg);
            case MachineErrc::no_such_user_mapping: return bus_error(kNoSuchUserMapping, msg);
            case MachineErrc::no_such_group_mapping: return bus_error(kNoSuchGroupMapping, msg);
            }
            return bus_error(kFailed, msg);
        }
        if (code.category() == std::generic_category() || code.category() == std::system_category())
            return bus_error(errno_to_bus_name(code.value()), s->what());
    }
    return bus_error(kFailed, e.what());
}

sdbus::Error current_exception_to_bus_error() {
    try {
        throw;
    } catch (const std::exception& e) {
        return to_bus_error(e);
    } catch (...) {
        return sdbus::Error(kFailed, std::string("unknown error"));
    }
}

void throw_not_implemented(const char* method) {
    throw sdbus::Error(kNotSupported, std::string(method) + " is not implemented by machd");
}

}  // namespace mk::bus
