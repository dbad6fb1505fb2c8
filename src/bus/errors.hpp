// The one boundary where our errors become D-Bus error names (and back, for clients).
// mk::core::MachineErrc -> org.freedesktop.machine1.* / org.freedesktop.DBus.Error.*; errno values
// -> the names sd-bus uses for them (so messages look like machined's). Pure, thread-safe.
#pragma once

#include <exception>
#include <string>
#include <string_view>

#include <sdbus-c++/Error.h>

namespace mk::bus {

inline constexpr const char* kNoSuchMachine = "org.freedesktop.machine1.NoSuchMachine";
inline constexpr const char* kNoSuchImage = "org.freedesktop.machine1.NoSuchImage";
inline constexpr const char* kMachineExists = "org.freedesktop.machine1.MachineExists";
inline constexpr const char* kNoMachineForPID = "org.freedesktop.machine1.NoMachineForPID";
inline constexpr const char* kNoPrivateNetworking = "org.freedesktop.machine1.NoPrivateNetworking";
inline constexpr const char* kInvalidArgs = "org.freedesktop.DBus.Error.InvalidArgs";
inline constexpr const char* kAccessDenied = "org.freedesktop.DBus.Error.AccessDenied";
inline constexpr const char* kNotSupported = "org.freedesktop.DBus.Error.NotSupported";
inline constexpr const char* kLimitsExceeded = "org.freedesktop.DBus.Error.LimitsExceeded";
inline constexpr const char* kFailed = "org.freedesktop.DBus.Error.Failed";

// The D-Bus name sd-bus gives an errno ("org.freedesktop.DBus.Error.InvalidArgs" for EINVAL,
// "System.Error.ENXIO" for the rest).
std::string errno_to_bus_name(int err);

// The error with its message's control characters escaped (core::escape_control_chars): a name or
// URL from the caller echoed back must not break the caller's line or drive its terminal. Every
// error text that can carry outside input is made by this (directly, or through to_bus_error()).
sdbus::Error bus_error(const std::string& name, std::string_view message);

// Any exception as an sdbus::Error (through bus_error()): sdbus::Error keeps its name,
// std::system_error maps by code, everything else is org.freedesktop.DBus.Error.Failed.
sdbus::Error to_bus_error(const std::exception& e);
sdbus::Error current_exception_to_bus_error();

// Runs `f`, turning every exception into an sdbus::Error (anything else reaches clients as the
// meaningless org.sdbuscpp.Error).
template <typename F>
auto translate(F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (...) {
        throw current_exception_to_bus_error();
    }
}

// "OpenMachinePTY is not implemented by machd" as NotSupported.
[[noreturn]] void throw_not_implemented(const char* method);

}  // namespace mk::bus
