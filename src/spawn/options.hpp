// spawn's command line -> SpawnSpec. Option names and meanings follow systemd-nspawn's.
#pragma once

#include <string>
#include <vector>

#include "core/spawn/settings.hpp"
#include "core/spawn/spawn_spec.hpp"

namespace mk::spawn {

enum class Action { Run, Help, Version };

struct ParsedOptions {
    Action action = Action::Run;
    core::SpawnSpec spec;
    bool console_set = false;
    std::string settings_name;               // the machine name before an --ephemeral suffix: names the .nspawn file
    core::SettingsMask set_on_command_line;  // what .nspawn files may not override (unless --settings=override)
};

// Parses argv (argv[0] is the program name). Throws core::UsageError with a one-line message for
// anything invalid. `stdin_tty`/`stdout_tty` choose the default console mode as nspawn does.
ParsedOptions parse_options(const std::vector<std::string>& args, bool stdin_tty, bool stdout_tty);

const char* help_text();

}  // namespace mk::spawn
