// Whether a signal reaches the init of a PID namespace. That init drops a signal it neither blocks
// nor catches (SIG_DFL, SIGNAL_UNKILLABLE), so a halt request sent before a guest's init set up its
// signals is lost: spawn's relay and machd's Kill hold such a request until the init takes it.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string_view>

namespace mk::core {

// Whether a process with this /proc/PID/status text takes `sig`: it blocks or catches it (SigBlk,
// SigCgt), or, unless `exact`, has set up its signal handling otherwise (some signal blocked or
// caught: what it does with `sig` is then its own choice; busybox init shows only SIGTSTP). A
// systemd catches its crash signals before it blocks the rest: `exact` for it. False for a process
// that has set up nothing yet, or text without either line. Pure.
bool process_takes_signal(std::string_view proc_status, int sig, bool exact = false);

// Whether `sig` sent now would reach `pid`: true for a process that is not its PID namespace's init
// (it takes every signal) or whose status cannot be read (send it, as before); std::nullopt while
// it still runs its parent's executable (spawn's code before the exec, which unblocks its signals
// right before it); otherwise process_takes_signal(), exact if `exact` says so or, without it, if
// the process is a systemd.
std::optional<bool> init_takes_signal(pid_t pid, int sig, std::optional<bool> exact = std::nullopt);

}  // namespace mk::core
