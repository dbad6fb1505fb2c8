// What the bus clients (machine_client, import_client) share: every sdbus-c++ call of theirs runs
// through guarded(), which turns sdbus::Error into ClientError (no_daemon when nothing owns the
// destination name, so machctl can say how to start machd). src/bus only.
#pragma once

#include <sdbus-c++/Error.h>
#include <sdbus-c++/IConnection.h>

#include <memory>

#include "bus/machine_client.hpp"

namespace mk::bus {

[[noreturn]] void rethrow_as_client_error(const sdbus::Error& e);

// A connection to the system bus `target` names; throws ClientError(no_bus) naming the transport.
std::unique_ptr<sdbus::IConnection> open_system_bus(const BusTarget& target);

template <typename F>
auto guarded(F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (const sdbus::Error& e) {
        rethrow_as_client_error(e);
    }
}

}  // namespace mk::bus
