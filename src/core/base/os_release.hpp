// The one os-release(5) parser: GetMachineOSRelease, GetImageOSRelease and the container_host_*
// variables must agree about one file. Its input comes from guests and pulled images: pure, no
// allocation beyond the input's size, and fuzzed (tests/fuzz/fuzz_os_release.cpp).
#pragma once

#include <map>
#include <string>
#include <string_view>

namespace mk::core {

// KEY=value lines with shell-like quoting (machkit's GetMachineOSRelease rules since the start; close
// to, not identical with, systemd's parse_env_file()):
// - leading blanks are skipped; lines starting with '#', without '=' or with an empty key are ignored;
// - '...' is literal; inside "..." a backslash takes the next character literally; outside quotes
//   a backslash escapes the next character and " #" starts a comment;
// - unquoted trailing blanks are dropped; a later assignment of a key wins.
// Keys are not validated (machined returns them as found); callers building environment
// variables from them must check the names themselves.
std::map<std::string, std::string> parse_os_release(std::string_view text);

}  // namespace mk::core
