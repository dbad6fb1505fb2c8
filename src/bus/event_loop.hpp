// machd's one loop (epoll): the sdbus-c++ 1.2 connection (via getEventLoopPollData and
// processPendingRequest), the pidfd of every machine leader, and a signalfd for SIGTERM/SIGINT,
// plus the terminate->SIGKILL deadlines. It is a MachineService::Listener so that leader pidfds are
// watched from the moment a machine exists (put it first in the listener chain). Thread-hostile;
// blocks SIGTERM/SIGINT process-wide (construct it before any thread exists).
#pragma once

#include <sdbus-c++/IConnection.h>

#include <functional>
#include <string>
#include <unordered_map>

#include "core/base/unique_fd.hpp"
#include "core/machine/service.hpp"

namespace mk::bus {

class EventLoop final : public core::MachineService::Listener {
public:
    EventLoop(sdbus::IConnection& connection, core::MachineService& service);

    // Runs until SIGTERM or SIGINT. Returns the signal number.
    int run();

    // One round: process pending bus messages, wait at most `max_wait_ms` (-1: no limit) for any
    // source, handle what is ready. Returns a terminating signal number, or 0.
    int run_once(int max_wait_ms);

    // Calls `on_exit` once, from the loop, when the process behind `pidfd` has exited. The caller
    // keeps the pidfd open until then.
    void watch_child(int pidfd, std::function<void()> on_exit);

    // Calls `on_readable` from the loop whenever `fd` is readable (or hung up) until unwatch_fd().
    // The caller keeps `fd` open until then; the callback may call unwatch_fd() on its own fd.
    void watch_fd(int fd, std::function<void()> on_readable);
    void unwatch_fd(int fd);
    // While `want`, also calls the watch_fd() callback when `fd` is writable (a Varlink peer's
    // socket with queued replies).
    void set_fd_writable(int fd, bool want);

    // Listener: start/stop watching the machine's leader pidfd.
    void machine_added(core::Machine& m) override;
    void machine_removed(const core::Machine& m) override;

private:
    sdbus::IConnection& connection_;
    core::MachineService& service_;
    core::UniqueFd epoll_fd_;
    core::UniqueFd signal_fd_;
    int bus_fd_ = -1;
    uint32_t bus_events_ = 0;
    std::unordered_map<int, std::string> watched_;             // leader pidfd -> machine name
    std::unordered_map<int, std::function<void()>> children_;  // helper pidfd -> completion
    std::unordered_map<int, std::function<void()>> readers_;   // fd -> on_readable (transfer progress pipes)
};

}  // namespace mk::bus
