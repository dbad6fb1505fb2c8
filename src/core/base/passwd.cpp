#include "core/base/passwd.hpp"

#include "core/base/strings.hpp"

#include <charconv>

namespace mk::core {
namespace {

template <typename F>
void for_each_line(std::string_view text, F&& f) {
    size_t i = 0;
    while (i < text.size()) {
        size_t j = text.find('\n', i);
        if (j == std::string_view::npos) j = text.size();
        std::string_view line = text.substr(i, j - i);
        i = j + 1;
        if (line.empty() || line[0] == '#') continue;
        if (!f(line)) return;
    }
}

}  // namespace

std::optional<uint32_t> parse_id(std::string_view s) {
    if (s.empty() || s.size() > 10) return std::nullopt;
    for (char c : s)
        if (c < '0' || c > '9') return std::nullopt;
    uint64_t v = 0;
    std::from_chars(s.data(), s.data() + s.size(), v);
    if (v >= 0xFFFFFFFFull) return std::nullopt;  // (uid_t)-1 is "no user"
    return static_cast<uint32_t>(v);
}

std::optional<UserRecord> find_user(std::string_view passwd, std::string_view spec) {
    auto numeric = parse_id(spec);
    std::optional<UserRecord> found;
    for_each_line(passwd, [&](std::string_view line) {
        auto f = split(line, ':');
        if (f.size() < 7) return true;
        auto uid = parse_id(f[2]);
        auto gid = parse_id(f[3]);
        if (!uid || !gid) return true;
        bool match = numeric ? *uid == *numeric : f[0] == spec;
        if (!match) return true;
        UserRecord r;
        r.name = std::string(f[0]);
        r.uid = *uid;
        r.gid = *gid;
        r.home = f[5].empty() ? "/" : std::string(f[5]);
        r.shell = f[6].empty() ? "/bin/sh" : std::string(f[6]);
        found = std::move(r);
        return false;
    });
    if (!found && numeric) {
        UserRecord r;
        r.name = std::string(spec);
        r.uid = *numeric;
        r.gid = *numeric;
        found = std::move(r);
    }
    return found;
}

std::vector<gid_t> find_supplementary_groups(std::string_view group, std::string_view user, gid_t primary) {
    std::vector<gid_t> out;
    for_each_line(group, [&](std::string_view line) {
        auto f = split(line, ':');
        if (f.size() < 4) return true;
        auto gid = parse_id(f[2]);
        if (!gid || *gid == primary) return true;
        for (auto m : split(f[3], ','))
            if (m == user) {
                out.push_back(*gid);
                break;
            }
        return out.size() < 1024;
    });
    return out;
}

}  // namespace mk::core
