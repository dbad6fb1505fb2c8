// The machine's last journal entries for `machctl status` (-n), read with sd-journal from the
// machine's own journal directory: the host's /var/log/journal/ID (spawn --link-journal=host, or
// the symlink of guest mode) or, failing that, ROOT/var/log/journal/ID in the machine's tree.
// Formatted as journalctl's short output. Reads files only; no bus.
#pragma once

#include <string>
#include <vector>

namespace mk::machctl {

// The directory holding the machine's journal, "" when there is none.
std::string machine_journal_dir(const std::string& machine_id_hex, const std::string& root_directory);

// The last `lines` entries of the journal in `dir`, oldest first, as "Dec 07 09:00:01 host ident[pid]: msg".
std::vector<std::string> last_journal_lines(const std::string& dir, unsigned lines);

}  // namespace mk::machctl
