// /run/systemd/machines/NAME state files and their "unit:UNIT" -> NAME symlinks, byte-compatible with
// systemd-machined 252's machine_save() (read by sd_machine_get_class(), nss-mymachines,
// container_get_leader() behind `machinectl -M`). The directory is a parameter so tests use a temp dir.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/unique_fd.hpp"
#include "core/machine/machine.hpp"

namespace mk::core {

// systemd's cescape()/cunescape() subset used for SCOPE=, SERVICE=, ROOT=.
std::string cescape(std::string_view s);
std::string cunescape(std::string_view s);

// The file's text. Pure.
std::string format_state_file(const Machine& m);

// Parses a state file's text for machine `name`. Fields absent from the file keep their defaults;
// returns nullopt only if the text is not a state file at all (no NAME= or a different NAME=). Pure.
std::optional<Machine> parse_state_file(std::string_view name, std::string_view text);

// The state directory. Not thread-safe; each call is one filesystem side effect.
class StateDir {
public:
    // Creates `path` (mode 0755) if missing, as machined does at start: some programs test for its
    // existence to learn whether machined runs.
    explicit StateDir(std::string path);

    // Atomically (temp file + rename) writes NAME with mode 0644 and points unit:UNIT at it.
    void save(const Machine& m) const;
    // Removes NAME, its unit: link and its readiness mark; missing files are fine.
    void remove(const Machine& m) const;
    // Every valid state file, skipping unit: links, hidden files and invalid names; `ready` from the
    // readiness mark.
    [[nodiscard]] std::vector<Machine> load_all() const;
    // Records that the machine's guest reported ready, so that a restarted machd still knows: an
    // empty ".ready:NAME" next to the state file (hidden, so machined's readers and
    // sd_get_machine_names() never see it; the state file itself stays machined's format).
    void mark_ready(const Machine& m) const;

    [[nodiscard]] const std::string& path() const noexcept { return path_; }

private:
    std::string path_;
    UniqueFd dir_fd_;
};

}  // namespace mk::core
