// Machine-registry errors as std::error_code values of their own category, so that the bus layer can
// map them to machine1's error names without parsing messages. Everything else in core is plain errno.
#pragma once

#include <string>
#include <system_error>

namespace mk::core {

enum class MachineErrc {
    no_such_machine = 1,
    machine_exists,
    no_machine_for_pid,
    too_many_machines,
    invalid_argument,  // bad caller input: becomes org.freedesktop.DBus.Error.InvalidArgs
    not_supported,     // a method or a case we do not implement: ...Error.NotSupported
    no_private_networking,
    no_such_user_mapping,
    no_such_group_mapping,
};

const std::error_category& machine_category() noexcept;

inline std::error_code make_error_code(MachineErrc e) noexcept { return {static_cast<int>(e), machine_category()}; }

[[noreturn]] void throw_machine_error(MachineErrc e, const std::string& message);

}  // namespace mk::core

template <>
struct std::is_error_code_enum<mk::core::MachineErrc> : std::true_type {};
