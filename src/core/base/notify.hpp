// The sd_notify() protocol, both ends, without libsystemd: spawn tells its own service manager
// (when $NOTIFY_SOCKET is set) and listens to its guest's init.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

namespace mk::core {

// Sends `state` ("READY=1\nSTATUS=...") to $NOTIFY_SOCKET. Returns false if unset or unreachable.
bool notify_manager(std::string_view state) noexcept;

// One datagram from a notify socket (with SO_PASSCRED set): the sender's pid as seen from here
// and the text. Returns false when nothing is queued.
bool receive_notification(int fd, pid_t& sender, std::string& text);

// The value of KEY= in a notification ("READY=1\nSTATUS=x" -> "x" for "STATUS"); empty if absent.
std::string notification_field(std::string_view text, std::string_view key);

}  // namespace mk::core
