// What stands between the host and the guest's init: the notify socket a booted guest reports
// READY=1 on, and the stub PID 1 of --as-pid2.
#pragma once

#include <sys/types.h>

#include "core/base/unique_fd.hpp"

namespace mk::core {

// The guest's notify socket, bound at /run/host/notify of the tree at `root_fd` (nspawn's path,
// which systemd guests use). Non-blocking, SO_PASSCRED: the relay reads it (relay.hpp).
UniqueFd bind_notify_socket(int root_fd);

// PID 1 for --as-pid2: reaps every child and forwards signals to `payload`; exits with the
// payload's status. Holds no capabilities and is not dumpable.
[[noreturn]] void stub_init(pid_t payload);

}  // namespace mk::core
