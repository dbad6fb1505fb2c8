#include "bus/event_loop.hpp"

#include <poll.h>
#include <sys/signalfd.h>

#include <csignal>
#include <cstdio>
#include <vector>

#include "core/base/error.hpp"

namespace mk::bus {

EventLoop::EventLoop(sdbus::IConnection& connection, core::MachineService& service)
    : connection_(connection), service_(service) {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, nullptr) < 0) core::throw_last_error("sigprocmask");
    signal_fd_ = core::UniqueFd(signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!signal_fd_) core::throw_last_error("signalfd");
}

int EventLoop::run() {
    for (;;)
        if (int sig = run_once(-1)) return sig;
}

int EventLoop::run_once(int max_wait_ms) {
    while (connection_.processPendingRequest()) {
    }

    auto poll_data = connection_.getEventLoopPollData();
    int timeout_ms = max_wait_ms;
    const uint64_t now = core::now_monotonic_usec();
    auto limit = [&](uint64_t deadline_usec) {
        if (deadline_usec == 0 || deadline_usec == UINT64_MAX) return;
        uint64_t ms = deadline_usec <= now ? 0 : (deadline_usec - now + 999) / 1000;
        int ims = ms > 60'000 ? 60'000 : static_cast<int>(ms);
        if (timeout_ms < 0 || ims < timeout_ms) timeout_ms = ims;
    };
    limit(poll_data.timeout_usec);
    limit(service_.next_deadline());

    std::vector<pollfd> fds;
    std::vector<std::string> names;  // machine of fds[i + 2]
    fds.push_back({poll_data.fd, poll_data.events, 0});
    fds.push_back({signal_fd_.get(), POLLIN, 0});
    for (core::Machine* m : service_.registry().all()) {
        if (!m->leader_pidfd) continue;  // .host
        fds.push_back({m->leader_pidfd.get(), POLLIN, 0});
        names.push_back(m->name);
    }
    int r = ::poll(fds.data(), fds.size(), timeout_ms);
    if (r < 0) {
        if (errno == EINTR) return 0;
        core::throw_last_error("poll");
    }
    if (fds[1].revents & POLLIN) {
        signalfd_siginfo si{};
        if (::read(signal_fd_.get(), &si, sizeof si) == sizeof si) return static_cast<int>(si.ssi_signo);
    }
    for (size_t i = 2; i < fds.size(); i++) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        core::Machine* m = service_.find(names[i - 2]);
        if (!m) continue;
        try {
            service_.leader_exited(*m);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "machd: cleaning up machine %s: %s\n", names[i - 2].c_str(), e.what());
        }
    }
    try {
        service_.run_deadlines(core::now_monotonic_usec());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "machd: stop timeout: %s\n", e.what());
    }
    while (connection_.processPendingRequest()) {
    }
    return 0;
}

}  // namespace mk::bus
