// Who is calling: credentials come from the bus (the daemon's view of the peer), never from
// message arguments. machd checks them even though the bus policy already restricts callers.
#pragma once

#include <sys/types.h>

#include <sdbus-c++/IObject.h>

struct sd_bus_message;

namespace mk::bus {

struct Caller {
    uid_t uid;  // effective UID, as the bus daemon saw it when the peer connected
    pid_t pid;
};

// The sender of the message being processed on `object`. Throws AccessDenied if unknown.
Caller current_caller(const sdbus::IObject& object);
// The sender of `message` (objects served by plain sd-bus vtables). Throws AccessDenied if unknown.
Caller caller_of(sd_bus_message* message);

// Throws org.freedesktop.DBus.Error.AccessDenied unless the caller is root. `what` names the action.
void require_root(const Caller& caller, const char* what);
inline void require_root(const sdbus::IObject& object, const char* what) { require_root(current_caller(object), what); }

}  // namespace mk::bus
