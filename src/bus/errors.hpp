// The one boundary where our errors become D-Bus error names (and back, for clients).
// mk::core::MachineErrc -> org.freedesktop.machine1.* / org.freedesktop.DBus.Error.*; errno values
// -> the names sd-bus uses for them (so messages look like machined's). Pure, thread-safe.
#pragma once

#include <exception>
#include <string>
#include <string_view>

#include <sdbus-c++/Error.h>

#include "bus/names.hpp"  // the error names

namespace mk::bus {

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
