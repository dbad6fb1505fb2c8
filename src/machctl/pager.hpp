// The pager convention of systemd's tools, for machctl's listing verbs: on a terminal (and unless
// --no-pager) stdout goes through $SYSTEMD_PAGER, else $PAGER, else less (then more), with
// LESS=$SYSTEMD_LESS or systemd's "FRSXMK" (less quits when the output fits one screen); an empty
// pager or "cat" means none. Side effects: forks the pager, redirects fd 1 (and fd 2 when it is
// the same terminal); pager_close() flushes, closes and waits. Thread-hostile.
#pragma once

namespace mk::machctl {

void pager_open(bool no_pager);
void pager_close();

// Columns of the terminal on stdout ($COLUMNS overrides; 0 when stdout is not a terminal).
unsigned terminal_columns();

}  // namespace mk::machctl
