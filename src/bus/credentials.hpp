// Who is calling: credentials come from the bus (the daemon's view of the peer), never from
// message arguments. machd checks them even though the bus policy already restricts callers.
#pragma once

#include <sys/types.h>

#include <string>

#include <sdbus-c++/IObject.h>

struct sd_bus_message;

namespace mk::bus {

struct Caller {
    uid_t uid;  // effective UID, as the bus daemon saw it when the peer connected
    pid_t pid;
    // The polkit action authorized for this very call (bus/polkit.hpp), empty if none. Not
    // cached with uid and pid: it belongs to one message.
    std::string granted;
};

// The sender of the message being processed on `object`. Throws AccessDenied if unknown.
Caller current_caller(const sdbus::IObject& object);
// The sender of `message` (objects served by plain sd-bus vtables). Throws AccessDenied if unknown.
Caller caller_of(sd_bus_message* message);

// Throws org.freedesktop.DBus.Error.AccessDenied unless the caller is root (or the user of a per-user
// machd: core/machine/owner.hpp). `what` names the action.
void require_root(const Caller& caller, const char* what);
inline void require_root(const sdbus::IObject& object, const char* what) { require_root(current_caller(object), what); }

// Throws AccessDenied unless the caller is root or polkit authorized `action` for this call (the
// PolkitGate held the call back until it did). `what` names the action for the error text.
void require_action(const Caller& caller, const char* action, const char* what);
inline void require_action(const sdbus::IObject& object, const char* action, const char* what) {
    require_action(current_caller(object), action, what);
}

}  // namespace mk::bus
