// machd's log lines: to the journal when journald listens (its socket
// /run/systemd/journal/socket exists), with SYSLOG_IDENTIFIER=machd, the priority and, for lines
// about one machine, MACHINE=NAME, so that `journalctl MACHINE=foo` finds them; to stderr as
// "machd: TEXT" otherwise. Lines about a machine's start and end also carry machined's
// MESSAGE_IDs and NAME=/LEADER= fields. Thread-safe (sd_journal_send and stdio are).
#pragma once

#include <sys/syslog.h>
#include <sys/types.h>

#include <string>

namespace mk::bus {

void log_line(int priority, const std::string& text, const std::string& machine = "");

// "New machine NAME." / "Machine NAME terminated.", as systemd-machined logs them.
void log_machine_started(const std::string& name, pid_t leader);
void log_machine_stopped(const std::string& name, pid_t leader);

// Whether log_line() goes to the journal (decided once, at the first line).
bool logging_to_journal();

}  // namespace mk::bus
