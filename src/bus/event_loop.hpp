// machd's one loop: the sdbus-c++ 1.2 connection (via getEventLoopPollData/processPendingRequest),
// the pidfds of all machine leaders, and a signalfd for SIGTERM/SIGINT. Thread-hostile; blocks the
// signals process-wide (so construct it before any thread exists).
#pragma once

#include <sdbus-c++/IConnection.h>

#include "core/base/unique_fd.hpp"
#include "core/machine/service.hpp"

namespace mk::bus {

class EventLoop {
public:
    EventLoop(sdbus::IConnection& connection, core::MachineService& service);

    // Runs until SIGTERM or SIGINT. Returns the signal number.
    int run();

    // One round: process pending bus messages, wait at most `max_wait_ms` for any fd, handle what
    // is ready. Returns a terminating signal number, or 0.
    int run_once(int max_wait_ms);

private:
    sdbus::IConnection& connection_;
    core::MachineService& service_;
    core::UniqueFd signal_fd_;
};

}  // namespace mk::bus
