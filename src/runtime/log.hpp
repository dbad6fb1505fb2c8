// machrun's log: every error goes to stderr and, with --log, to that file as one line in logrus's
// text or JSON form ("level":"error"), which is what containerd's shim reads back and shows users
// (the last error line) and what conmon copies into podman's messages. Thread-hostile (one global).
#pragma once

#include <string>
#include <string_view>

#include "runtime/cli.hpp"

namespace mk::runtime {

// Opens the log (append, created 0600). Without --log, messages go to stderr only. A log that
// cannot be opened is reported on stderr and then ignored: the command itself still runs.
void open_log(const GlobalOptions& g);

void log_error(std::string_view msg);
void log_warning(std::string_view msg);
void log_debug(std::string_view msg);  // only with --debug

// One log line in the given format (pure, for the tests): `time` is RFC 3339.
std::string format_log_line(LogFormat f, std::string_view level, std::string_view msg, std::string_view time);

}  // namespace mk::runtime
