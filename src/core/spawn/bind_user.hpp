// --bind-user= (nspawn 252's nspawn-bind-user.c): a host user appears in the container under a
// free UID of 60514..60577 with the same number as its own group, its home bound at
// /run/host/home/NAME, and JSON user/group records in /run/host/userdb/ (read by nss-systemd and
// userdbd inside). Needs a user namespace: that UID maps to the user's host UID, so the home keeps
// its owner on both sides.
//
// lookup_host_user(), plan_bound_users() and the record builders are pure;
// write_bound_user_records() writes inside the container's /run/host (the launcher's child).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/kernel/userns.hpp"

namespace mk::core {

inline constexpr uint32_t kBindUserIdMin = 60514;  // systemd's MAP_UID_MIN
inline constexpr uint32_t kBindUserIdMax = 60577;  // systemd's MAP_UID_MAX

struct HostUser {
    std::string name;
    uid_t uid = 0;
    gid_t gid = 0;
    std::string group_name;  // the name of the primary group
    std::string home;
};

struct BoundUser {
    HostUser host;
    uint32_t id = 0;  // UID and GID inside the container
    [[nodiscard]] std::string home_inside() const { return "/run/host/home/" + host.name; }
};

// The host's user `name` and its primary group, from the host's /etc/passwd and /etc/group
// contents (spawn is linked statically, where glibc's NSS does not work: users that only a
// service such as LDAP or systemd-homed knows are not found). Throws UsageError if either is unknown.
HostUser lookup_host_user(const std::string& name, std::string_view host_passwd, std::string_view host_group);

// nspawn's checks and allocation: refuses root and nobody, users or groups inside the container's
// range, users whose primary group is not their own private group, and names the tree's
// /etc/passwd or /etc/group (contents given) already has; picks the lowest free ids from
// kBindUserIdMin, skipping those the tree uses. Throws UsageError with nspawn's reasons.
std::vector<BoundUser> plan_bound_users(const std::vector<HostUser>& users, std::string_view passwd, std::string_view group,
                                        const IdRange& range);

// The records nspawn writes (compact JSON, one line): userName, uid, gid, homeDirectory, service;
// groupName, gid, service.
std::string bound_user_record(const BoundUser& u);
std::string bound_group_record(const BoundUser& u);

// Inside the container's /run/host (run_host_fd): the directories home/ and userdb/, NAME.user,
// NAME.group, and the ID.user/ID.group symlinks to them, owned by `owner` (the container's root);
// and an empty home/NAME as the mount point of each home.
void write_bound_user_records(int run_host_fd, const std::vector<BoundUser>& users, uid_t owner);

}  // namespace mk::core
