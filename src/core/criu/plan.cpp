#include "core/criu/plan.hpp"

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "core/base/error.hpp"

namespace mk::core::criu {

namespace {

// File systems criu mounts afresh by type when they are not binds (their root is "/").
constexpr std::array<std::string_view, 9> kVirtualFs = {"proc",   "sysfs",   "tmpfs",       "devpts", "mqueue",
                                                        "cgroup", "cgroup2", "binfmt_misc", "tracefs"};

std::string unescape(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && s.size() - i >= 4 && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' && s[i + 2] <= '7' &&
            s[i + 3] >= '0' && s[i + 3] <= '7') {
            out.push_back(static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
            i += 3;
        } else {
            out.push_back(s[i]);
        }
    }
    return out;
}

std::vector<std::string_view> fields_of(std::string_view line) {
    std::vector<std::string_view> f;
    size_t i = 0;
    while (i < line.size() && f.size() < 64) {
        while (i < line.size() && line[i] == ' ') ++i;
        size_t j = i;
        while (j < line.size() && line[j] != ' ') ++j;
        if (j > i) f.push_back(line.substr(i, j - i));
        i = j;
    }
    return f;
}

int parse_int(std::string_view s) {
    if (s.empty() || s.size() > 9) throw std::runtime_error("mountinfo: bad number");
    int v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') throw std::runtime_error("mountinfo: bad number");
        v = v * 10 + (c - '0');
    }
    return v;
}

// "/a" is under "/" and "/a"; "/ab" is not under "/a".
bool path_under(std::string_view path, std::string_view dir) {
    if (dir == "/") return true;
    if (!path.starts_with(dir)) return false;
    return path.size() == dir.size() || path[dir.size()] == '/';
}

bool is_virtual(std::string_view fstype) {
    for (auto v : kVirtualFs)
        if (v == fstype) return true;
    return false;
}

// An integer field in T's range. nlohmann's get<T>() converts a float or a number beyond T with a
// plain cast (undefined for a float out of T's range, found by fuzz_criu_rpc): refused instead.
template <typename T>
T whole_number(const nlohmann::json& v, const char* field) {
    constexpr auto max = static_cast<uint64_t>(std::numeric_limits<T>::max());
    if (v.is_number_unsigned()) {
        if (v.get<uint64_t>() <= max) return static_cast<T>(v.get<uint64_t>());
    } else if (v.is_number_integer()) {
        const int64_t i = v.get<int64_t>();
        if (i >= static_cast<int64_t>(std::numeric_limits<T>::min()) && (i < 0 || static_cast<uint64_t>(i) <= max))
            return static_cast<T>(i);
    }
    throw std::out_of_range(std::string(field) + " is not an integer in range");
}

}  // namespace

std::vector<MountInfo> parse_mountinfo(std::string_view text) {
    std::vector<MountInfo> out;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        pos = nl == std::string_view::npos ? text.size() : nl + 1;
        if (line.empty()) continue;
        if (out.size() >= kMaxMounts) throw std::runtime_error("mountinfo: more than 4096 mounts");
        auto f = fields_of(line);
        size_t sep = 6;
        while (sep < f.size() && f[sep] != "-") ++sep;
        if (f.size() < 8 || sep + 1 >= f.size()) throw std::runtime_error("mountinfo: malformed line");
        MountInfo m;
        m.id = parse_int(f[0]);
        m.parent = parse_int(f[1]);
        m.dev = std::string(f[2]);
        m.root = unescape(f[3]);
        m.mountpoint = unescape(f[4]);
        m.fstype = std::string(f[sep + 1]);
        m.source = sep + 2 < f.size() ? unescape(f[sep + 2]) : std::string();
        // A bind of a namespace file (ip netns, a runtime's pinned namespaces) has the nsfs
        // dentry's name as its root: "net:[4026532...]".
        bool ns_root = m.fstype == "nsfs" && !m.root.empty() && m.root.find(":[") != std::string::npos;
        if (m.root.empty() || (m.root[0] != '/' && !ns_root) || m.mountpoint.empty() || m.mountpoint[0] != '/')
            throw std::runtime_error("mountinfo: paths must be absolute");
        out.push_back(std::move(m));
    }
    return out;
}

std::vector<ExternalMount> plan_external_mounts(const std::vector<MountInfo>& container,
                                                const std::vector<MountInfo>& host) {
    std::vector<ExternalMount> out;
    for (size_t i = 0; i < container.size(); ++i) {
        const MountInfo& m = container[i];
        if (m.mountpoint == "/") continue;  // the root: criu's `root` option
        if (m.root == "/" && is_virtual(m.fstype)) continue;
        // A file system instance of its own (anonymous device, e.g. the hugetlbfs or configfs a
        // booted guest's systemd mounts) that the host does not have: criu mounts it afresh.
        if (m.root == "/" && m.dev.starts_with("0:")) {
            bool on_host = false;
            for (const auto& h : host) on_host = on_host || h.dev == m.dev;
            if (!on_host) continue;
        }
        bool inside = false;
        for (size_t j = 0; j < container.size() && !inside; ++j)
            if (j != i && container[j].dev == m.dev && path_under(m.root, container[j].root) &&
                !(container[j].root == m.root && j > i))
                inside = true;
        if (inside) continue;
        const MountInfo* best = nullptr;
        for (const auto& h : host)
            if (h.dev == m.dev && path_under(m.root, h.root) && (!best || h.root.size() > best->root.size())) best = &h;
        if (!best)
            throw UsageError("cannot checkpoint: the mount at " + m.mountpoint + " (" + m.fstype +
                             ") comes from nowhere on the host that criu could restore it from");
        std::string rest = best->root == "/" ? m.root : m.root.substr(best->root.size());
        std::string source =
            best->mountpoint == "/" ? (rest.empty() ? "/" : rest) : best->mountpoint + (rest == "/" ? "" : rest);
        out.push_back({m.mountpoint, source});
    }
    return out;
}

uint64_t fnv1a64(std::string_view data, uint64_t h) {
    for (unsigned char c : data) {
        h ^= c;
        h *= 0x100000001b3ULL;
    }
    return h;
}

bool image_file_is_hashed(std::string_view name) { return !name.starts_with("pages-"); }

std::string encode_record(const CheckpointRecord& r) {
    nlohmann::json j;
    j["format"] = CheckpointRecord::kFormat;
    j["machine"] = r.machine;
    j["root"] = r.root;
    j["class"] = r.class_name;
    j["criu_version"] = r.criu_version;
    j["host_network"] = r.host_network;
    j["tcp_established"] = r.tcp_established;
    if (r.orphan_pty) j["orphan_pty"] = true;
    if (r.userns_uid && r.userns_gid) j["userns_root"] = {{"uid", *r.userns_uid}, {"gid", *r.userns_gid}};
    if (!r.veth_host.empty()) {
        nlohmann::json v;
        v["host"] = r.veth_host;
        v["container"] = r.veth_container;
        v["addresses"] = nlohmann::json::array();
        for (const auto& a : r.veth_addresses)
            v["addresses"].push_back(
                {{"family", a.family == AF_INET6 ? 6 : 4}, {"address", a.address}, {"prefixlen", a.prefixlen}});
        j["veth"] = v;
    }
    j["stdio"] = r.stdio;
    j["mounts"] = nlohmann::json::array();
    for (const auto& m : r.mounts) j["mounts"].push_back({{"key", m.key}, {"source", m.source}});
    j["files"] = nlohmann::json::array();
    for (const auto& f : r.files) {
        nlohmann::json e{{"name", f.name}, {"size", f.size}};
        if (f.hash) e["fnv1a64"] = *f.hash;
        j["files"].push_back(e);
    }
    return j.dump(1) + "\n";
}

CheckpointRecord decode_record(std::string_view text) {
    auto bad = [](const std::string& why) {
        return UsageError("not a usable machkit checkpoint: " + why + "; make one with 'machctl checkpoint NAME DIR'");
    };
    if (text.size() > kMaxRecordSize) throw bad(std::string(kRecordFile) + " is larger than 1 MiB");
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw bad(std::string(kRecordFile) + " is not a JSON object");
    CheckpointRecord r;
    try {
        if (whole_number<int>(j.at("format"), "format") != CheckpointRecord::kFormat) throw bad("unknown record format");
        r.machine = j.at("machine").get<std::string>();
        r.root = j.at("root").get<std::string>();
        r.class_name = j.value("class", std::string("container"));
        r.criu_version = j.at("criu_version").get<std::string>();
        r.host_network = j.at("host_network").get<bool>();
        r.tcp_established = j.value("tcp_established", false);
        r.orphan_pty = j.value("orphan_pty", false);
        if (j.contains("userns_root")) {
            r.userns_uid = whole_number<uint32_t>(j.at("userns_root").at("uid"), "userns_root.uid");
            r.userns_gid = whole_number<uint32_t>(j.at("userns_root").at("gid"), "userns_root.gid");
        }
        if (j.contains("veth")) {
            const auto& v = j.at("veth");
            r.veth_host = v.at("host").get<std::string>();
            r.veth_container = v.at("container").get<std::string>();
            for (const auto& a : v.at("addresses")) {
                int fam = whole_number<int>(a.at("family"), "family");
                if (fam != 4 && fam != 6) throw bad("bad address family");
                r.veth_addresses.push_back({fam == 6 ? AF_INET6 : AF_INET, a.at("address").get<std::string>(),
                                            whole_number<uint8_t>(a.at("prefixlen"), "prefixlen")});
            }
        }
        if (j.contains("stdio")) r.stdio = j.at("stdio").get<std::vector<std::string>>();
        if (r.stdio.size() > 3) throw bad("more than three stdio entries");
        for (const auto& m : j.at("mounts"))
            r.mounts.push_back({m.at("key").get<std::string>(), m.at("source").get<std::string>()});
        for (const auto& f : j.at("files")) {
            if (r.files.size() >= kMaxImageFiles) throw bad("too many image files");
            CheckpointRecord::File file{f.at("name").get<std::string>(), whole_number<uint64_t>(f.at("size"), "size"),
                                        std::nullopt};
            if (f.contains("fnv1a64")) file.hash = whole_number<uint64_t>(f.at("fnv1a64"), "fnv1a64");
            if (file.name.empty() || file.name.find('/') != std::string::npos || file.name[0] == '.')
                throw bad("image file name '" + file.name + "' is not a plain file name");
            r.files.push_back(std::move(file));
        }
    } catch (const nlohmann::json::exception& e) {
        throw bad(std::string(kRecordFile) + ": " + e.what());
    } catch (const std::out_of_range& e) {
        throw bad(std::string(kRecordFile) + ": " + e.what());
    }
    if (r.root.empty() || r.root[0] != '/') throw bad("the root directory is not an absolute path");
    if (r.files.empty()) throw bad("it lists no image files");
    for (const auto& m : r.mounts)
        if (m.key.empty() || m.key[0] != '/' || m.source.empty() || (m.source[0] != '/' && m.source != kFreshSysfs))
            throw bad("a mount entry is not a pair of absolute paths");
    return r;
}

Options base_options(const CheckpointRecord& r, int images_dir_fd) {
    Options o;
    o.images_dir_fd = images_dir_fd;
    o.root = r.root;
    o.log_level = 4;
    // Our own cgroup placement (machd's scope) is made by the supervisor; criu leaving cgroups
    // alone is what makes a restore into another scope work ("No set 1 found" otherwise).
    o.manage_cgroups_mode = CgroupMode::Ignore;
    o.tcp_established = r.tcp_established;
    o.notify_scripts = true;
    return o;
}

}  // namespace mk::core::criu
