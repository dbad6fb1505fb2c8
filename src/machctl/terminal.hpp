// Relaying a pseudo-terminal master to machctl's own terminal (raw mode, window size, SIGWINCH),
// for shell and login. Side effects: changes the terminal mode of fd 0 while running (restored
// on every exit path, RAII) and installs a SIGWINCH handler. Thread-hostile.
#pragma once

namespace mk::machctl {

// Relays stdin -> master and master -> stdout until the master reports EOF/EIO or, if
// `status_fd` >= 0, until a wait status arrives there (the remaining output is drained).
// ^] pressed three times within a second ends the relay early. Returns the wait status read
// from `status_fd`, or -1 when there was none (or the user left with ^]).
// `survive_hangup`: EIO from the master only means no terminal side is open right now (a getty
// from OpenMachineLogin hangs its tty up and is restarted after each logout): keep relaying until ^].
int relay_pty(int master, int status_fd, bool survive_hangup = false);

}  // namespace mk::machctl
