#include "bus/event_loop.hpp"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>

#include <csignal>
#include <cstdio>
#include <vector>

#include "core/base/error.hpp"

namespace mk::bus {
namespace {

// Tags in epoll_event.data.u64 for the two fixed sources; leader pidfds use their fd number.
constexpr uint64_t kBusTag = 1ull << 40;
constexpr uint64_t kSignalTag = 2ull << 40;

uint32_t poll_to_epoll(short events) {
    uint32_t e = 0;
    if (events & POLLIN) e |= EPOLLIN;
    if (events & POLLOUT) e |= EPOLLOUT;
    if (events & POLLPRI) e |= EPOLLPRI;
    return e;
}

}  // namespace

EventLoop::EventLoop(sdbus::IConnection& connection, core::MachineService& service)
    : connection_(connection), service_(service) {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, nullptr) < 0) core::throw_last_error("sigprocmask");
    signal_fd_ = core::UniqueFd(signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!signal_fd_) core::throw_last_error("signalfd");
    epoll_fd_ = core::UniqueFd(epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_fd_) core::throw_last_error("epoll_create1");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kSignalTag;
    if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, signal_fd_.get(), &ev) < 0) core::throw_last_error("epoll_ctl signalfd");
}

void EventLoop::machine_added(core::Machine& m) {
    if (!m.leader_pidfd) return;  // .host
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = static_cast<uint64_t>(m.leader_pidfd.get());
    if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, m.leader_pidfd.get(), &ev) < 0)
        core::throw_last_error("epoll_ctl leader pidfd of " + m.name);
    watched_[m.leader_pidfd.get()] = m.name;
}

void EventLoop::machine_removed(const core::Machine& m) {
    if (!m.leader_pidfd) return;
    epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, m.leader_pidfd.get(), nullptr);
    watched_.erase(m.leader_pidfd.get());
}

void EventLoop::watch_child(int pidfd, std::function<void()> on_exit) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = static_cast<uint64_t>(pidfd);
    if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, pidfd, &ev) < 0) core::throw_last_error("epoll_ctl helper pidfd");
    children_[pidfd] = std::move(on_exit);
}

void EventLoop::watch_fd(int fd, std::function<void()> on_readable) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = static_cast<uint64_t>(fd);
    if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) < 0) core::throw_last_error("epoll_ctl watched fd");
    readers_[fd] = std::move(on_readable);
}

void EventLoop::set_fd_writable(int fd, bool want) {
    if (!readers_.contains(fd)) return;
    epoll_event ev{};
    ev.events = EPOLLIN | (want ? EPOLLOUT : 0u);
    ev.data.u64 = static_cast<uint64_t>(fd);
    if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, fd, &ev) < 0) core::throw_last_error("epoll_ctl watched fd");
}

void EventLoop::unwatch_fd(int fd) {
    if (readers_.erase(fd)) epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

int EventLoop::run() {
    for (;;)
        if (int sig = run_once(-1)) return sig;
}

int EventLoop::run_once(int max_wait_ms) {
    while (connection_.processPendingRequest()) {
    }

    // The bus fd and the events it wants can change between rounds (sd-bus may reconnect, or want
    // POLLOUT while its write queue is non-empty).
    auto poll_data = connection_.getEventLoopPollData();
    uint32_t want = poll_to_epoll(poll_data.events);
    if (poll_data.fd != bus_fd_ || want != bus_events_) {
        epoll_event ev{};
        ev.events = want;
        ev.data.u64 = kBusTag;
        if (bus_fd_ >= 0 && poll_data.fd != bus_fd_) epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, bus_fd_, nullptr);
        int op = poll_data.fd == bus_fd_ ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        if (epoll_ctl(epoll_fd_.get(), op, poll_data.fd, &ev) < 0) core::throw_last_error("epoll_ctl bus fd");
        bus_fd_ = poll_data.fd;
        bus_events_ = want;
    }

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

    epoll_event events[64];
    int n = epoll_wait(epoll_fd_.get(), events, 64, timeout_ms);
    if (n < 0) {
        if (errno == EINTR) return 0;
        core::throw_last_error("epoll_wait");
    }
    std::vector<std::string> exited;
    for (int i = 0; i < n; i++) {
        uint64_t tag = events[i].data.u64;
        if (tag == kSignalTag) {
            signalfd_siginfo si{};
            if (::read(signal_fd_.get(), &si, sizeof si) == sizeof si) return static_cast<int>(si.ssi_signo);
        } else if (tag != kBusTag) {
            if (auto it = watched_.find(static_cast<int>(tag)); it != watched_.end()) {
                exited.push_back(it->second);
            } else if (auto c = children_.find(static_cast<int>(tag)); c != children_.end()) {
                epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, c->first, nullptr);
                auto done = std::move(c->second);
                children_.erase(c);
                try {
                    done();
                } catch (const std::exception& e) {
                    std::fprintf(stderr, "machd: helper completion: %s\n", e.what());
                }
            } else if (auto r = readers_.find(static_cast<int>(tag)); r != readers_.end()) {
                auto cb = r->second;  // the callback may unwatch (erase) itself
                try {
                    cb();
                } catch (const std::exception& e) {
                    std::fprintf(stderr, "machd: fd reader: %s\n", e.what());
                }
            }
        }
    }
    for (const auto& name : exited) {
        core::Machine* m = service_.find(name);
        if (!m) continue;
        try {
            service_.leader_exited(*m);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "machd: cleaning up machine %s: %s\n", name.c_str(), e.what());
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
