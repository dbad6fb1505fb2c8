#include "core/spawn/relay.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <stdexcept>

#include "core/base/error.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/io.hpp"
#include "core/base/notify.hpp"
#include "core/kernel/console.hpp"
#include "core/kernel/init_signals.hpp"
#include "core/spawn/child_channel.hpp"

namespace mk::core {

namespace {

// With MK_SPAWN_TIMING set (SpawnSpec::report_exec_timing), spawn reports how long its own work
// took until the payload (or the guest's init) was exec'd: the figure the boot benchmark quotes.
void report_exec_timing(std::chrono::steady_clock::time_point since) {
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - since).count();
    fprintf(stderr, "spawn: payload exec'd %.3f ms after spawn started\n", static_cast<double>(us) / 1000.0);
}

}  // namespace

Outcome interpret_exit(const siginfo_t& si, bool boot) {
    if (si.si_code == CLD_EXITED) return {si.si_status, false};
    if (boot && si.si_status == SIGINT) return {0, false};
    if (boot && si.si_status == SIGHUP) return {0, true};
    return {128 + si.si_status, false};
}

struct Relay::TerminalState {
    std::optional<RawTerminal> raw;
    EscapeDetector escape;
};

Relay::Relay(const SpawnSpec& spec, bool boot, bool init_notifies, RelayEnds ends, std::function<UniqueFd()> report_ready,
             std::chrono::steady_clock::time_point started)
    : spec_(spec),
      boot_(boot),
      init_notifies_(init_notifies),
      ends_(ends),
      report_ready_hook_(std::move(report_ready)),
      started_(started),
      term_(std::make_unique<TerminalState>()),
      interactive_(spec.console == ConsoleMode::Interactive),
      relay_out_(spec.console == ConsoleMode::Interactive || spec.console == ConsoleMode::ReadOnly),
      stdin_open_(interactive_) {}

Relay::~Relay() {
    term_->raw.reset();
    if (reporter_) reap_reporter();  // bounded by the helper's bus timeout
}

void Relay::kill_child(int sig) { syscall(SYS_pidfd_send_signal, ends_.pidfd, sig, nullptr, 0); }

std::optional<bool> Relay::init_takes(int sig) const {
    // A systemd (one that notifies) catches its crash signals before it blocks the rest: only the
    // signal itself counts there.
    return init_takes_signal(ends_.pid, sig, init_notifies_);
}

void Relay::halt_guest(int sig) {
    if (!boot_ || init_takes(sig).value_or(false)) {
        kill_child(sig);
        return;
    }
    pending_halt_ = sig;
    if (!halt_timer_) {
        halt_timer_.reset(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
        if (!halt_timer_) {
            kill_child(sig);  // no timer: the old behaviour
            pending_halt_ = 0;
            return;
        }
        itimerspec every{{0, 20'000'000}, {0, 20'000'000}};
        timerfd_settime(halt_timer_.get(), 0, &every, nullptr);
    }
}

void Relay::on_halt_timer() {
    uint64_t ticks = 0;
    (void)!read(halt_timer_.get(), &ticks, sizeof ticks);
    // An init that never blocks nor catches it: 5 s after its exec it gets the signal anyway, as before.
    std::optional<bool> takes = pending_halt_ ? init_takes(pending_halt_) : std::optional<bool>(false);
    if (takes) halt_ticks_ += ticks;
    if (pending_halt_ && ((takes && *takes) || halt_ticks_ >= 250)) {
        kill_child(pending_halt_);
        pending_halt_ = 0;
    }
    if (!pending_halt_) halt_timer_.reset();
}

void Relay::told_ready(const std::string& status) {
    notify_manager("READY=1\nSTATUS=" + status + "\nX_NSPAWN_LEADER_PID=" + std::to_string(ends_.pid));
}

// The machine manager's view of readiness (machctl wait) is the guest's, independent of when
// spawn tells its own service manager (that follows --notify-ready, as nspawn's does).
void Relay::report_ready() {
    if (reported_ || !report_ready_hook_) return;
    reported_ = true;
    reporter_ = report_ready_hook_();
}

void Relay::reap_reporter() {
    siginfo_t si{};
    waitid(P_PIDFD, static_cast<id_t>(reporter_.get()), &si, WEXITED);
    reporter_.reset();
}

Outcome Relay::run() {
    while (!outcome_) {
        pollfd fds[8];
        int n = 0;
        fds[n++] = {ends_.pidfd, POLLIN, 0};
        fds[n++] = {ends_.signal_fd, POLLIN, 0};
        int chan_i = -1, master_i = -1, stdin_i = -1, notify_i = -1, reporter_i = -1, halt_i = -1;
        if (chan_open_) chan_i = n, fds[n++] = {ends_.chan, POLLIN, 0};
        if (master_open_) master_i = n, fds[n++] = {master_.get(), POLLIN, 0};
        if (stdin_open_ && master_) stdin_i = n, fds[n++] = {STDIN_FILENO, POLLIN, 0};
        if (notify_) notify_i = n, fds[n++] = {notify_.get(), POLLIN, 0};
        if (reporter_) reporter_i = n, fds[n++] = {reporter_.get(), POLLIN, 0};
        if (halt_timer_) halt_i = n, fds[n++] = {halt_timer_.get(), POLLIN, 0};
        if (retry_eintr([&] { return poll(fds, static_cast<nfds_t>(n), -1); }) < 0) throw_last_error("poll");
        if (chan_i >= 0 && fds[chan_i].revents) on_channel();
        if (notify_i >= 0 && fds[notify_i].revents) on_notify();
        if (reporter_i >= 0 && fds[reporter_i].revents) reap_reporter();
        if (halt_i >= 0 && fds[halt_i].revents) on_halt_timer();
        if (master_i >= 0 && (fds[master_i].revents & (POLLIN | POLLHUP | POLLERR))) on_master();
        if (stdin_i >= 0 && fds[stdin_i].revents) on_stdin();
        if (fds[1].revents & POLLIN) on_signals();
        if (fds[0].revents & POLLIN) on_exit();
    }
    term_->raw.reset();
    if (reporter_) reap_reporter();  // bounded by the helper's bus timeout
    return *outcome_;
}

void Relay::on_channel() {
    try {
        ChannelMsg type{};
        if (!receive(ends_.chan, type, master_, notify_)) {
            chan_open_ = false;
            if (spec_.report_exec_timing) report_exec_timing(started_);
        } else if (type == ChannelMsg::SetupDone) {
            if (master_) {
                fcntl(master_.get(), F_SETFL, O_NONBLOCK);
                // Hold the peer open ourselves: a guest init closes and reopens its console
                // while it boots, and a master whose peer nobody holds reads EIO.
                peer_hold_.reset(ioctl(master_.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
                master_open_ = true;
                if (interactive_) {
                    term_->raw.emplace(STDIN_FILENO);
                    copy_window_size(STDIN_FILENO, master_.get());
                }
            }
            if (!spec_.notify_ready) told_ready("Container running.");
            if (!init_notifies_) report_ready();
        }
    } catch (const std::runtime_error& e) {
        setup_error_ = e.what();
        chan_open_ = false;
    }
}

void Relay::on_notify() {
    pid_t sender;
    std::string text;
    while (receive_notification(notify_.get(), sender, text)) {
        if (sender != ends_.pid) continue;  // only the guest's PID 1 speaks for the container
        if (notification_field(text, "READY") == "1") {
            if (spec_.notify_ready) told_ready("Container running.");
            report_ready();
        }
        if (std::string st = notification_field(text, "STATUS"); !st.empty())
            notify_manager("STATUS=Container running: " + st);
    }
}

void Relay::on_master() {
    char buf[16384];
    ssize_t r = read(master_.get(), buf, sizeof buf);
    if (r > 0) {
        if (relay_out_) (void)write_all(STDOUT_FILENO, {buf, static_cast<size_t>(r)});
    } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        // EIO: every holder of the peer has closed it; stop polling, or poll would spin.
        master_open_ = false;
    }
}

void Relay::on_stdin() {
    char buf[4096];
    ssize_t r = read(STDIN_FILENO, buf, sizeof buf);
    if (r > 0) {
        if (term_->escape.feed(buf, static_cast<size_t>(r), std::chrono::steady_clock::now())) {
            term_->raw.reset();
            if (!spec_.quiet) fprintf(stderr, "\nContainer %s terminated by ^]^]^].\n", spec_.machine_name.c_str());
            kill_child(SIGKILL);
        } else {
            (void)write_all(master_.get(), {buf, static_cast<size_t>(r)});
        }
    } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        stdin_open_ = false;
    }
}

void Relay::on_signals() {
    signalfd_siginfo si;
    while (read(ends_.signal_fd, &si, sizeof si) == sizeof si) {
        int sig = static_cast<int>(si.ssi_signo);
        if (sig == SIGWINCH) {
            if (master_ && interactive_) copy_window_size(STDIN_FILENO, master_.get());
        } else if (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT) {
            if (++term_count_ > 1) {
                kill_child(SIGKILL);
            } else {
                int fwd = spec_.kill_signal > 0 ? spec_.kill_signal : sig;
                if (boot_ && !spec_.quiet)
                    fprintf(stderr, "Trying to halt container. Send SIGTERM again to trigger immediate termination.\n");
                halt_guest(fwd);
            }
        } else if (sig == SIGHUP) {
            kill_child(SIGHUP);
        }
    }
}

void Relay::on_exit() {
    siginfo_t si{};
    if (waitid(P_PIDFD, static_cast<id_t>(ends_.pidfd), &si, WEXITED) != 0) return;
    // Drain what the container printed last.
    if (master_ && relay_out_) {
        char buf[16384];
        ssize_t r;
        while ((r = read(master_.get(), buf, sizeof buf)) > 0) (void)write_all(STDOUT_FILENO, {buf, static_cast<size_t>(r)});
    }
    // A set-up error may still be queued on the channel.
    if (chan_open_ && setup_error_.empty()) {
        try {
            ChannelMsg type{};
            UniqueFd m2, n2;
            while (receive(ends_.chan, type, m2, n2)) {
            }
        } catch (const std::runtime_error& e) {
            setup_error_ = e.what();
        }
    }
    outcome_ = interpret_exit(si, boot_);
}

}  // namespace mk::core
