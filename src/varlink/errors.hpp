// The one boundary where our errors become Varlink error names (the twin of bus/errors.hpp).
// core::MachineErrc -> io.systemd.Machine.* (or io.systemd.MachineImage.*), errno values ->
// io.systemd.System {errno, errnoName} as sd-varlink's sd_varlink_error_errno() sends them, and the
// org.varlink.service protocol errors. Pure, thread-safe.
#pragma once

#include <exception>
#include <stdexcept>
#include <string>

#include "varlink/protocol.hpp"

namespace mk::varlink {

inline constexpr const char* kInterfaceNotFound = "org.varlink.service.InterfaceNotFound";
inline constexpr const char* kMethodNotFound = "org.varlink.service.MethodNotFound";
inline constexpr const char* kMethodNotImplemented = "org.varlink.service.MethodNotImplemented";
inline constexpr const char* kInvalidParameter = "org.varlink.service.InvalidParameter";
inline constexpr const char* kPermissionDenied = "org.varlink.service.PermissionDenied";
inline constexpr const char* kExpectedMore = "org.varlink.service.ExpectedMore";
inline constexpr const char* kSystemError = "io.systemd.System";

// A named Varlink error a handler throws on purpose.
struct Error : std::runtime_error {
    Error(std::string name, Json parameters = Json::object(), const std::string& message = {})
        : std::runtime_error(message.empty() ? name : message), name(std::move(name)), parameters(std::move(parameters)) {}
    std::string name;
    Json parameters;
};

[[noreturn]] void throw_invalid_parameter(const std::string& parameter);
[[noreturn]] void throw_permission_denied();

// Which interface's names the machine error codes take.
enum class Domain { machine, image };

struct Mapped {
    std::string name;
    Json parameters;
};

// Any exception as a Varlink error: Error passes through; MachineErrc maps by code (invalid
// arguments become InvalidParameter naming `parameter_hint` when the code says which one is bad);
// errno codes become io.systemd.System; anything else io.systemd.System with EIO.
Mapped to_varlink_error(const std::exception& e, Domain domain);
Mapped current_exception_to_varlink_error(Domain domain);

}  // namespace mk::varlink
