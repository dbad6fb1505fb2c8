#include "core/spawn/bind_user.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "core/base/error.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/passwd.hpp"
#include "core/base/strings.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::core {
namespace {

// Field `index` (0-based) of each non-comment line of a passwd/group file.
std::vector<std::string_view> column(std::string_view file, size_t index) {
    std::vector<std::string_view> out;
    for (std::string_view line : lines(file)) {
        if (line.empty() || line[0] == '#') continue;
        size_t start = 0;
        for (size_t i = 0; i < index && start != std::string_view::npos; i++) {
            start = line.find(':', start);
            if (start != std::string_view::npos) start++;
        }
        if (start == std::string_view::npos) continue;
        out.push_back(line.substr(start, line.find(':', start) - start));
    }
    return out;
}

bool has(const std::vector<std::string_view>& v, std::string_view x) { return std::ranges::find(v, x) != v.end(); }

std::string json_string(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
            out += buf;
        } else {
            out += c;
        }
    }
    return out + "\"";
}

}  // namespace

HostUser lookup_host_user(const std::string& name, std::string_view host_passwd, std::string_view host_group) {
    // By name only: find_user() would take an all-digit spec as a UID.
    auto names = column(host_passwd, 0);
    if (name.empty() || !has(names, name)) throw UsageError("--bind-user=" + name + ": no such user on the host");
    auto rec = find_user(host_passwd, name);
    if (!rec) throw UsageError("--bind-user=" + name + ": no such user on the host");
    HostUser u;
    u.name = rec->name;
    u.uid = rec->uid;
    u.gid = rec->gid;
    u.home = rec->home;
    auto gnames = column(host_group, 0), gids = column(host_group, 2);
    for (size_t i = 0; i < gnames.size() && i < gids.size(); i++)
        if (gids[i] == std::to_string(u.gid)) u.group_name = std::string(gnames[i]);
    if (u.group_name.empty())
        throw UsageError("--bind-user=" + name + ": the user's group " + std::to_string(u.gid) + " is unknown on the host");
    if (u.home.empty() || u.home[0] != '/') throw UsageError("--bind-user=" + name + ": the user has no home directory");
    return u;
}

std::vector<BoundUser> plan_bound_users(const std::vector<HostUser>& users, std::string_view passwd, std::string_view group,
                                        const IdRange& range) {
    auto user_names = column(passwd, 0), user_ids = column(passwd, 2);
    auto group_names = column(group, 0), group_ids = column(group, 2);
    auto in_range = [&](uint32_t id) { return id >= range.shift && id - range.shift < range.count; };
    std::vector<BoundUser> out;
    uint32_t next = kBindUserIdMin;
    for (const auto& u : users) {
        if (u.uid == 0 || u.name == "root") throw UsageError("--bind-user=root: mapping the root user is not supported");
        if (u.uid == 65534 || u.name == "nobody")
            throw UsageError("--bind-user=" + u.name + ": mapping the nobody user is not supported");
        if (in_range(u.uid))
            throw UsageError("--bind-user=" + u.name + ": the user's UID is inside the container's UID range");
        if (in_range(u.gid))
            throw UsageError("--bind-user=" + u.name + ": the user's GID is inside the container's GID range");
        if (u.name != u.group_name)
            throw UsageError("--bind-user=" + u.name + ": users without a private group of the same name are not supported");
        for (const auto& b : out)
            if (b.host.name == u.name) throw UsageError("--bind-user=" + u.name + " given twice");
        for (;; next++) {
            if (next > kBindUserIdMax || next >= range.count)
                throw UsageError("--bind-user=" + u.name + ": no free UID in 60514..60577 in the container");
            std::string id = std::to_string(next);
            if (!has(user_ids, id) && !has(group_ids, id)) break;
        }
        if (has(user_names, u.name))
            throw UsageError("--bind-user=" + u.name + ": the user already exists in the container");
        if (has(group_names, u.group_name))
            throw UsageError("--bind-user=" + u.name + ": the group " + u.group_name + " already exists in the container");
        out.push_back({u, next++});
    }
    return out;
}

std::string bound_user_record(const BoundUser& u) {
    std::string id = std::to_string(u.id);
    return "{\"userName\":" + json_string(u.host.name) + ",\"uid\":" + id + ",\"gid\":" + id +
           ",\"homeDirectory\":" + json_string(u.home_inside()) + ",\"service\":\"io.systemd.NSpawn\"}\n";
}

std::string bound_group_record(const BoundUser& u) {
    return "{\"groupName\":" + json_string(u.host.group_name) + ",\"gid\":" + std::to_string(u.id) +
           ",\"service\":\"io.systemd.NSpawn\"}\n";
}

void write_bound_user_records(int run_host_fd, const std::vector<BoundUser>& users, uid_t owner) {
    if (users.empty()) return;
    auto dir = [&](int at, const std::string& name, const std::string& shown) {
        if (mkdirat(at, name.c_str(), 0755) < 0 && errno != EEXIST) throw_last_error("cannot create " + shown);
        UniqueFd fd(openat(at, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!fd) throw_last_error("cannot open " + shown);
        if (owner != 0 && fchown(fd.get(), owner, owner) < 0) throw_last_error("chown " + shown);
        return fd;
    };
    UniqueFd home = dir(run_host_fd, "home", "/run/host/home");
    UniqueFd userdb = dir(run_host_fd, "userdb", "/run/host/userdb");
    auto put = [&](const std::string& name, std::uint32_t id, const char* suffix, const std::string& data) {
        std::string file = name + suffix, link = std::to_string(id) + suffix;
        write_file_at(userdb.get(), file, data, 0644);
        if (symlinkat(file.c_str(), userdb.get(), link.c_str()) < 0)
            throw_last_error("cannot link /run/host/userdb/" + link);
        if (owner != 0 && (fchownat(userdb.get(), file.c_str(), owner, owner, AT_SYMLINK_NOFOLLOW) < 0 ||
                           fchownat(userdb.get(), link.c_str(), owner, owner, AT_SYMLINK_NOFOLLOW) < 0))
            throw_last_error("chown /run/host/userdb/" + file);
    };
    for (const auto& u : users) {
        put(u.host.group_name, u.id, ".group", bound_group_record(u));
        put(u.host.name, u.id, ".user", bound_user_record(u));
        dir(home.get(), u.host.name, u.home_inside());
    }
}

}  // namespace mk::core
