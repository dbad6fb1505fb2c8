// Users and groups of a container, parsed from its own /etc/passwd and /etc/group contents.
// Never the host's NSS: a user name means what the guest's files say (T-18). Pure functions.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mk::core {

struct UserRecord {
    std::string name;
    uid_t uid = 0;
    gid_t gid = 0;
    std::string home = "/";
    std::string shell = "/bin/sh";
    std::vector<gid_t> groups;  // supplementary
};

// Looks up `spec` in passwd contents. An all-digit spec is a UID, never a name (so a user named
// "0" cannot become root by accident); it resolves even without a passwd entry. nullopt: no such user.
std::optional<UserRecord> find_user(std::string_view passwd, std::string_view spec);

// The supplementary groups of `user` from group-file contents.
std::vector<gid_t> find_supplementary_groups(std::string_view group, std::string_view user, gid_t primary);

// Parses a decimal id (no sign, no leading spaces, < 2^32-1); nullopt if not one.
std::optional<uint32_t> parse_id(std::string_view s);

}  // namespace mk::core
