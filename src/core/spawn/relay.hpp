// The relay: what spawn does while the container runs (as crun's channel_fd_pair loop). One poll
// loop over the container's pidfd, spawn's signals (a signalfd), the set-up channel, the console's
// pty master and the user's terminal, the guest's notify socket and the readiness reporter. It
// copies the console both ways, forwards SIGTERM/SIGINT/SIGHUP (twice: SIGKILL), tells spawn's
// service manager and the machine manager when the guest is ready, and reports how PID 1 ended.
// Thread-hostile: puts the calling process's terminal in raw mode while it runs (interactive).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/base/unique_fd.hpp"
#include "core/spawn/spawn_spec.hpp"

namespace mk::core {

struct Outcome {
    int exit_code = 0;
    bool reboot = false;
};

// How the container's PID 1 ended. A booted guest that calls reboot(2) in its PID namespace is
// killed by SIGHUP (restart) or SIGINT (power-off, halt): that is how the kernel reports them.
Outcome interpret_exit(const siginfo_t& si, bool boot);

struct RelayEnds {
    pid_t pid = -1;  // the container's PID 1, as the host sees it
    int pidfd = -1;
    int signal_fd = -1;  // SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGWINCH, SIGQUIT
    int chan = -1;       // the parent's end of the set-up channel (child_channel.hpp)
};

class Relay {
public:
    // `boot`, `init_notifies`: from the GuestPlan. `report_ready`: tells the machine manager the
    // guest is up (LaunchHooks::report_ready), empty when no manager took the machine; called at
    // most once. `started`: when this start began, for --report_exec_timing.
    Relay(const SpawnSpec& spec, bool boot, bool init_notifies, RelayEnds ends, std::function<UniqueFd()> report_ready,
          std::chrono::steady_clock::time_point started);
    ~Relay();

    // Runs until PID 1 has been reaped. The set-up error the child reported, if any, is in
    // setup_error() afterwards (the caller throws it once it cleaned up).
    Outcome run();
    const std::string& setup_error() const { return setup_error_; }

private:
    void on_channel();
    void on_notify();
    void on_master();
    void on_stdin();
    void on_signals();
    void on_exit();
    void told_ready(const std::string& status);
    void report_ready();
    void reap_reporter();
    void kill_child(int sig);
    // Sends the halt signal to a booted guest's init once it takes it (process_takes_signal, once it
    // is no longer spawn's own executable: before exec the child unblocks its signals), checking
    // again on a timer (20 ms) until then, and sending it anyway 5 s after the exec.
    void halt_guest(int sig);
    void on_halt_timer();
    // nullopt while the init is still spawn's own executable (not exec'd yet).
    std::optional<bool> init_takes(int sig) const;

    const SpawnSpec& spec_;
    const bool boot_, init_notifies_;
    RelayEnds ends_;
    std::function<UniqueFd()> report_ready_hook_;
    std::chrono::steady_clock::time_point started_;

    UniqueFd master_, notify_, peer_hold_;
    struct TerminalState;
    std::unique_ptr<TerminalState> term_;
    const bool interactive_, relay_out_;
    bool stdin_open_, chan_open_ = true, master_open_ = false;
    int term_count_ = 0;
    int pending_halt_ = 0;  // a halt signal the init would not have taken yet
    uint64_t halt_ticks_ = 0;
    UniqueFd halt_timer_;  // timerfd re-checking it
    UniqueFd reporter_;    // pidfd of the helper telling the manager
    bool reported_ = false;
    std::optional<Outcome> outcome_;
    std::string setup_error_;
};

}  // namespace mk::core
