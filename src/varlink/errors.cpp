#include "varlink/errors.hpp"

#include <cstring>
#include <system_error>

#include "core/machine/machine_error.hpp"

namespace mk::varlink {
namespace {

Mapped errno_error(int err) {
    Json p = Json::object();
    p["errno"] = err;
    if (const char* n = strerrorname_np(err)) p["errnoName"] = n;
    return {kSystemError, p};
}

}  // namespace

void throw_invalid_parameter(const std::string& parameter) {
    throw Error(kInvalidParameter, Json{{"parameter", parameter}}, "invalid parameter '" + parameter + "'");
}

void throw_permission_denied() { throw Error(kPermissionDenied); }

Mapped to_varlink_error(const std::exception& e, Domain domain) {
    if (auto* v = dynamic_cast<const Error*>(&e)) return {v->name, v->parameters};
    if (auto* s = dynamic_cast<const std::system_error*>(&e)) {
        const auto& code = s->code();
        if (code.category() == core::machine_category()) {
            const std::string iface = domain == Domain::image ? "io.systemd.MachineImage." : "io.systemd.Machine.";
            using core::MachineErrc;
            switch (static_cast<MachineErrc>(code.value())) {
            case MachineErrc::no_such_machine:
            case MachineErrc::no_machine_for_pid: return {"io.systemd.Machine.NoSuchMachine", Json::object()};
            case MachineErrc::machine_exists: return {"io.systemd.Machine.MachineExists", Json::object()};
            case MachineErrc::too_many_machines: return errno_error(EUSERS);
            case MachineErrc::invalid_argument: return errno_error(EINVAL);
            case MachineErrc::not_supported: return {iface + "NotSupported", Json::object()};
            case MachineErrc::no_private_networking: return {"io.systemd.Machine.NoPrivateNetworking", Json::object()};
            case MachineErrc::no_such_user_mapping: return {"io.systemd.Machine.NoSuchUser", Json::object()};
            case MachineErrc::no_such_group_mapping: return {"io.systemd.Machine.NoSuchGroup", Json::object()};
            }
            return errno_error(EIO);
        }
        if (code.category() == std::generic_category() || code.category() == std::system_category()) {
            if (code.value() == EPERM || code.value() == EACCES) return {kPermissionDenied, Json::object()};
            return errno_error(code.value());
        }
    }
    if (dynamic_cast<const std::bad_alloc*>(&e)) return errno_error(ENOMEM);
    return errno_error(EIO);
}

Mapped current_exception_to_varlink_error(Domain domain) {
    try {
        throw;
    } catch (const std::exception& e) {
        return to_varlink_error(e, domain);
    } catch (...) {
        return errno_error(EIO);
    }
}

}  // namespace mk::varlink
