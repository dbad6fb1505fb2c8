#include "core/kernel/subid.hpp"

#include <algorithm>
#include <optional>

#include "core/base/error.hpp"

namespace mk::core {

namespace {

// A whole line, split on ':' into exactly three fields.
bool split3(std::string_view line, std::string_view out[3]) {
    for (int i = 0; i < 2; i++) {
        size_t c = line.find(':');
        if (c == std::string_view::npos) return false;
        out[i] = line.substr(0, c);
        line.remove_prefix(c + 1);
    }
    if (line.find(':') != std::string_view::npos) return false;
    out[2] = line;
    return true;
}

// parse_id() refuses 2^32-1 (the kernel's "no ID"); a count or start may be up to it here, the
// end check below bounds their sum.
std::optional<uint32_t> parse_u32(std::string_view s) {
    if (s.empty() || s.size() > 10) return std::nullopt;
    uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + static_cast<uint64_t>(c - '0');
    }
    if (v > UINT32_MAX) return std::nullopt;
    return static_cast<uint32_t>(v);
}

std::string range_text(const SubidRange& r) {
    return std::to_string(r.start) + "-" + std::to_string(static_cast<uint64_t>(r.start) + r.count - 1);
}

// Inside 0 is the user's own ID (when `own` is set), then the ranges in order, cut at `max_ids` and
// `max_lines` in all.
std::vector<MapLine> lines_for(std::optional<uint32_t> own, const std::vector<SubidRange>& ranges,
                               uint32_t max_ids = kRootlessMaxIds, size_t max_lines = kMaxMapLines) {
    std::vector<MapLine> lines;
    if (own) lines.push_back({0, *own, 1});
    const size_t first_range = lines.size();
    uint32_t next = own ? 1 : 0;
    for (const auto& r : ranges) {
        if (next >= max_ids || lines.size() >= max_lines) break;
        // The kernel refuses a map whose host sides overlap: a range listed twice is used once.
        bool overlaps =
            std::any_of(lines.begin() + static_cast<std::ptrdiff_t>(first_range), lines.end(), [&](const MapLine& l) {
                return static_cast<uint64_t>(r.start) < static_cast<uint64_t>(l.outside) + l.count &&
                       static_cast<uint64_t>(l.outside) < static_cast<uint64_t>(r.start) + r.count;
            });
        if (overlaps) continue;
        uint32_t n = std::min(r.count, max_ids - next);
        lines.push_back({next, r.start, n});
        next += n;
    }
    return lines;
}

void refuse_overlap(const char* file, const char* what, std::string_view name, uint32_t own,
                    const std::vector<SubidRange>& ranges) {
    for (const auto& r : ranges) {
        if (own >= r.start && static_cast<uint64_t>(own) < static_cast<uint64_t>(r.start) + r.count)
            throw UsageError(std::string(file) + " gives " + std::string(name) + " the range " + range_text(r) +
                             ", which holds its own " + what + " " + std::to_string(own) +
                             ": ask the administrator for a range that does not (usermod --del-sub" +
                             (what[0] == 'u' ? "uids" : "gids") + " / --add-sub" + (what[0] == 'u' ? "uids" : "gids") + ")");
    }
}

uint32_t total(const std::vector<MapLine>& lines) {
    uint64_t n = 0;
    for (const auto& l : lines) n += l.count;
    return static_cast<uint32_t>(std::min<uint64_t>(n, UINT32_MAX));
}

}  // namespace

std::vector<SubidEntry> parse_subid_file(std::string_view text) {
    if (text.size() > kSubidMaxFileSize) text = text.substr(0, kSubidMaxFileSize);
    std::vector<SubidEntry> out;
    while (!text.empty() && out.size() < kSubidMaxEntries) {
        size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        if (line.empty() || line.front() == '#') continue;
        std::string_view f[3];
        if (!split3(line, f) || f[0].empty()) continue;
        auto start = parse_u32(f[1]);
        auto count = parse_u32(f[2]);
        if (!start || !count || *count == 0) continue;
        // The last ID of the range must exist and must not be 2^32-1, the kernel's invalid ID.
        if (static_cast<uint64_t>(*start) + *count > UINT32_MAX) continue;
        out.push_back({std::string(f[0]), *start, *count});
    }
    return out;
}

std::vector<SubidRange> subid_ranges_for(const std::vector<SubidEntry>& entries, std::string_view name, uint32_t id) {
    const std::string id_text = std::to_string(id);
    std::vector<SubidRange> out;
    for (const auto& e : entries)
        if ((!name.empty() && e.owner == name) || e.owner == id_text) out.push_back({e.start, e.count});
    return out;
}

uint32_t RootlessMap::uid_count() const { return total(uid_lines); }
uint32_t RootlessMap::gid_count() const { return total(gid_lines); }

RootlessMap plan_rootless_map(std::string_view name, uid_t uid, gid_t gid, const std::vector<SubidRange>& uid_ranges,
                              const std::vector<SubidRange>& gid_ranges) {
    refuse_overlap("/etc/subuid", "uid", name, uid, uid_ranges);
    refuse_overlap("/etc/subgid", "gid", name, gid, gid_ranges);
    RootlessMap m;
    m.uid_lines = lines_for(uid, uid_ranges);
    m.gid_lines = lines_for(gid, gid_ranges);
    m.own_ids_mapped = true;
    m.needs_helpers = !uid_ranges.empty() || !gid_ranges.empty();
    if (uid_ranges.empty())
        m.limitation = "no subordinate uids for " + std::string(name) +
                       " in /etc/subuid: only root is mapped (to your uid), so every file in the guest is owned "
                       "by one uid and services that change user fail; add a range with usermod --add-subuids";
    return m;
}

std::vector<std::string> id_map_helper_args(const std::string& helper, pid_t pid, const std::vector<MapLine>& lines) {
    std::vector<std::string> args{helper, std::to_string(pid)};
    for (const auto& l : lines) {
        args.push_back(std::to_string(l.inside));
        args.push_back(std::to_string(l.outside));
        args.push_back(std::to_string(l.count));
    }
    return args;
}

std::string map_lines_text(const std::vector<MapLine>& lines) {
    std::string s;
    for (const auto& l : lines)
        s += std::to_string(l.inside) + " " + std::to_string(l.outside) + " " + std::to_string(l.count) + "\n";
    return s;
}

}  // namespace mk::core

namespace mk::core {

RootlessMap plan_rootless_range_map(std::string_view name, uid_t uid, gid_t gid, const std::vector<SubidRange>& uid_ranges,
                                    const std::vector<SubidRange>& gid_ranges) {
    refuse_overlap("/etc/subuid", "uid", name, uid, uid_ranges);
    refuse_overlap("/etc/subgid", "gid", name, gid, gid_ranges);
    if (uid_ranges.empty() || gid_ranges.empty())
        throw UsageError("--private-users-ownership=chown moves the tree into your subordinate range, and " +
                         std::string(name) + " has none in " + (uid_ranges.empty() ? "/etc/subuid" : "/etc/subgid") +
                         ": ask the administrator for one (usermod --add-subuids/--add-subgids), or drop the option");
    RootlessMap m;
    // One line fewer than the kernel's limit: the shift's map (plan_rootless_shift_map) adds the
    // user's own ID in front of these lines.
    m.uid_lines = lines_for(std::nullopt, uid_ranges, kRootlessMaxIds, kMaxMapLines - 1);
    m.gid_lines = lines_for(std::nullopt, gid_ranges, kRootlessMaxIds, kMaxMapLines - 1);
    m.needs_helpers = true;
    m.own_ids_mapped = false;
    return m;
}

RootlessMap plan_rootless_shift_map(const RootlessMap& range_map, uid_t uid, gid_t gid) {
    auto with_own = [](const std::vector<MapLine>& lines, uint32_t own) {
        std::vector<MapLine> out{{0, own, 1}};
        for (auto l : lines) {
            l.inside += 1;
            out.push_back(l);
        }
        return out;
    };
    RootlessMap m;
    m.uid_lines = with_own(range_map.uid_lines, uid);
    m.gid_lines = with_own(range_map.gid_lines, gid);
    m.needs_helpers = true;
    m.own_ids_mapped = true;
    return m;
}

}  // namespace mk::core
