// spawn --restore=DIR [-M NAME] [--criu=CMD] [--register=yes|no|auto] [-q]: restores a machine from a
// machctl checkpoint and supervises it (restore_main.cpp). --restore must come first.
#pragma once

#include <string>
#include <vector>

namespace mk::spawn {

bool is_restore(const std::vector<std::string>& args);
// Returns the exit status; throws core::UsageError / std::exception like spawn's main path.
int restore_main(const std::vector<std::string>& args);

}  // namespace mk::spawn
