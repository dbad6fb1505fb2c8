// The sd_bus_message underneath an sdbus-c++ 1.2 message (1.2 has no accessor; the raw message
// is what plain sd-bus calls — credentials, the connection — need). src/bus only.
#pragma once

#include <systemd/sd-bus.h>

#include <sdbus-c++/Message.h>

namespace mk::bus {

namespace detail {
// sdbus::Message keeps its sd_bus_message* protected; a pointer to that member, named through a
// derived class, reads it from any Message without copying or casting the object.
struct MessageAccess : sdbus::Message {
    static sd_bus_message* raw(const sdbus::Message& m) { return static_cast<sd_bus_message*>(m.*(&MessageAccess::msg_)); }
};
}  // namespace detail

inline sd_bus_message* raw_message(const sdbus::Message& m) { return detail::MessageAccess::raw(m); }

}  // namespace mk::bus
