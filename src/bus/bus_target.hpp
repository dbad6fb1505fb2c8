// Which system bus a client talks to (machctl's -H/-M, as machinectl's bus transports):
// - Local: the system bus ($DBUS_SYSTEM_BUS_ADDRESS honoured);
// - Remote: [USER@]HOST[:CONTAINER] through `ssh -xT HOST systemd-stdio-bridge` (sd-bus's unixexec
//   transport; ssh is looked up in $PATH);
// - Machine: the system bus inside a local container, reached by joining its leader's namespaces
//   (sd-bus's x-machine-unix transport, which finds the leader in /run/systemd/machines/NAME).
// With `user` set (machctl --user): the calling user's session bus ($DBUS_SESSION_BUS_ADDRESS), where
// a per-user `machd --user` serves (docs/rootless.md); local only.
// Plain data: no sdbus-c++ here, so machctl's option parser can carry it.
#pragma once

#include <string>

namespace mk::bus {

struct BusTarget {
    enum class Kind { Local, Remote, Machine };
    Kind kind = Kind::Local;
    std::string where;  // HOST spec (Remote) or container name (Machine)
    bool user = false;  // the user's session bus instead of the system bus

    [[nodiscard]] bool local() const { return kind == Kind::Local; }
};

}  // namespace mk::bus
