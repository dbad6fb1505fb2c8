#include "core/spawn/oci_config.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <set>

#include "core/base/error.hpp"
#include "core/base/names.hpp"
#include "core/kernel/capabilities.hpp"
#include "core/spawn/option_values.hpp"

namespace mk::core {
namespace {

using json = nlohmann::json;

[[noreturn]] void unsupported(const std::string& field) {
    throw UsageError("OCI config field '" + field + "' is not supported by spawn");
}
[[noreturn]] void invalid(const std::string& field, const std::string& why) {
    throw UsageError("OCI config field '" + field + "' is invalid: " + why);
}

void only_keys(const json& obj, const std::string& where, std::initializer_list<std::string_view> known) {
    if (!obj.is_object()) invalid(where, "expected an object");
    for (const auto& [k, v] : obj.items())
        if (std::find(known.begin(), known.end(), k) == known.end()) unsupported(where.empty() ? k : where + "." + k);
}

std::string str(const json& v, const std::string& field) {
    if (!v.is_string()) invalid(field, "expected a string");
    return v.get<std::string>();
}

std::vector<std::string> strings(const json& v, const std::string& field) {
    if (!v.is_array()) invalid(field, "expected an array of strings");
    std::vector<std::string> out;
    for (const auto& e : v) out.push_back(str(e, field));
    return out;
}

template <typename F>
auto checked(const std::string& field, std::string_view value, F&& parse) {
    try {
        return parse(value);
    } catch (const UsageError& e) {
        invalid(field, e.what());
    }
}

void parse_process(const json& p, SpawnSpec& s) {
    only_keys(p, "process", {"terminal", "cwd", "env", "args", "user", "rlimits", "noNewPrivileges", "oomScoreAdj",
                             "capabilities"});
    if (!p.contains("args") || !p["args"].is_array() || p["args"].empty()) invalid("process.args", "expected a non-empty array");
    s.argv = strings(p["args"], "process.args");
    if (p.contains("cwd")) s.chdir = checked("process.cwd", str(p["cwd"], "process.cwd"), parse_absolute_path);
    if (p.contains("env"))
        for (const auto& e : strings(p["env"], "process.env")) s.setenv.push_back(checked("process.env", e, parse_env_assignment));
    if (p.contains("terminal")) {
        if (!p["terminal"].is_boolean()) invalid("process.terminal", "expected a boolean");
        s.console = p["terminal"].get<bool>() ? ConsoleMode::Interactive : ConsoleMode::Pipe;
    }
    if (p.contains("user")) {
        const json& u = p["user"];
        only_keys(u, "process.user", {"uid", "gid"});
        // SpawnSpec names a user of the tree; a bare uid/gid pair other than root has no such name.
        if (u.value("uid", json(0)) != json(0) || u.value("gid", json(0)) != json(0))
            unsupported("process.user (other than uid 0, gid 0)");
    }
    if (p.contains("noNewPrivileges")) {
        if (!p["noNewPrivileges"].is_boolean()) invalid("process.noNewPrivileges", "expected a boolean");
        s.no_new_privileges = p["noNewPrivileges"].get<bool>();
    }
    if (p.contains("oomScoreAdj")) {
        const json& o = p["oomScoreAdj"];
        if (!o.is_number_integer() || o.get<int64_t>() < -1000 || o.get<int64_t>() > 1000)
            invalid("process.oomScoreAdj", "expected an integer -1000..1000");
        s.oom_score_adjust = static_cast<int>(o.get<int64_t>());
    }
    if (p.contains("rlimits")) {
        if (!p["rlimits"].is_array()) invalid("process.rlimits", "expected an array");
        for (const auto& r : p["rlimits"]) {
            only_keys(r, "process.rlimits[]", {"type", "soft", "hard"});
            auto res = rlimit_from_name(str(r.value("type", json()), "process.rlimits[].type"));
            if (!res) invalid("process.rlimits[].type", "unknown resource " + r["type"].get<std::string>());
            if (!r.contains("soft") || !r.contains("hard") || !r["soft"].is_number_unsigned() || !r["hard"].is_number_unsigned())
                invalid("process.rlimits[]", "soft and hard must be unsigned integers");
            ResourceLimit l{r["soft"].get<uint64_t>(), r["hard"].get<uint64_t>()};
            if (l.soft > l.hard) invalid("process.rlimits[]", "soft limit is above the hard limit");
            s.rlimits[static_cast<size_t>(*res)] = l;
        }
    }
    if (p.contains("capabilities")) {
        const json& c = p["capabilities"];
        only_keys(c, "process.capabilities", {"bounding", "effective", "permitted", "inheritable", "ambient"});
        if (!c.contains("bounding")) invalid("process.capabilities", "needs a bounding set");
        auto mask_of = [](const json& list, const std::string& field) {
            uint64_t m = 0;
            for (const auto& name : strings(list, field)) {
                auto cap = capability_from_name(name);
                if (!cap) invalid(field, "unknown capability " + name);
                m |= cap_bit(*cap);
            }
            return m;
        };
        uint64_t bounding = mask_of(c["bounding"], "process.capabilities.bounding");
        // spawn's payload holds one set (bounding = permitted = effective for root).
        for (const char* other : {"effective", "permitted"})
            if (c.contains(other) && mask_of(c[other], std::string("process.capabilities.") + other) != bounding)
                unsupported(std::string("process.capabilities.") + other + " (different from bounding)");
        for (const char* other : {"inheritable", "ambient"})
            if (c.contains(other) && mask_of(c[other], std::string("process.capabilities.") + other) != 0)
                unsupported(std::string("process.capabilities.") + other);
        s.capabilities_add = bounding & ~kDefaultCapabilities;
        s.capabilities_drop = kDefaultCapabilities & ~bounding;
    }
}

// What spawn mounts itself at these places (nspawn's API file systems): a config naming them is
// describing the same thing, and spawn's version (read-only /sys, masked /proc files) is kept.
bool api_mount(const std::string& dst, const std::string& type) {
    static const std::set<std::pair<std::string, std::string>> kApi = {
        {"/proc", "proc"}, {"/dev", "tmpfs"}, {"/dev/pts", "devpts"}, {"/dev/shm", "tmpfs"},
        {"/dev/mqueue", "mqueue"}, {"/sys", "sysfs"}, {"/sys/fs/cgroup", "cgroup"}, {"/sys/fs/cgroup", "cgroup2"},
        {"/run", "tmpfs"}, {"/tmp", "tmpfs"},
    };
    return kApi.contains({dst, type});
}

void parse_mounts(const json& mounts, SpawnSpec& s) {
    if (!mounts.is_array()) invalid("mounts", "expected an array");
    for (const auto& m : mounts) {
        only_keys(m, "mounts[]", {"destination", "type", "source", "options"});
        std::string dst = checked("mounts[].destination", str(m.value("destination", json()), "mounts[].destination"),
                                  parse_absolute_path);
        std::string type = m.contains("type") ? str(m["type"], "mounts[].type") : "";
        std::vector<std::string> opts = m.contains("options") ? strings(m["options"], "mounts[].options") : std::vector<std::string>{};
        bool bind = type == "bind" || std::ranges::count(opts, "bind") || std::ranges::count(opts, "rbind");
        if (dst == "/") invalid("mounts[].destination", "cannot mount over the container root");
        if (bind) {
            BindMount b;
            b.source = checked("mounts[].source", str(m.value("source", json()), "mounts[].source"), parse_absolute_path);
            b.destination = dst;
            b.recursive = !std::ranges::count(opts, "bind") || std::ranges::count(opts, "rbind");
            for (const auto& o : opts) {
                if (o == "ro") b.read_only = true;
                else if (o != "rw" && o != "bind" && o != "rbind" && o != "nosuid" && o != "nodev" && o != "rprivate" && o != "private")
                    unsupported("mounts[].options '" + o + "' of a bind mount");
            }
            s.binds.push_back(b);
        } else if (api_mount(dst, type)) {
            continue;
        } else if (type == "tmpfs") {
            std::string joined;
            for (const auto& o : opts) joined += (joined.empty() ? "" : ",") + o;
            s.tmpfs.push_back(checked("mounts[].options", dst + (joined.empty() ? "" : ":" + joined), parse_tmpfs));
        } else {
            unsupported("mounts[] of type '" + type + "' at " + dst);
        }
    }
}

void parse_linux(const json& l, SpawnSpec& s) {
    only_keys(l, "linux", {"namespaces", "maskedPaths", "readonlyPaths"});
    if (l.contains("namespaces")) {
        if (!l["namespaces"].is_array()) invalid("linux.namespaces", "expected an array");
        std::set<std::string> seen;
        for (const auto& n : l["namespaces"]) {
            only_keys(n, "linux.namespaces[]", {"type", "path"});
            const std::string type = str(n.value("type", json()), "linux.namespaces[].type");
            seen.insert(type);
            bool has_path = n.contains("path");
            if (type == "network") {
                if (has_path) s.network_namespace_path = checked("linux.namespaces[].path", str(n["path"], "linux.namespaces[].path"), parse_absolute_path);
                else s.private_network = true;
            } else if (type == "pid" || type == "mount" || type == "ipc" || type == "uts" || type == "cgroup") {
                if (has_path) unsupported("linux.namespaces[].path for '" + type + "'");
            } else {
                unsupported("linux.namespaces[] of type '" + type + "'");
            }
        }
        for (const char* always : {"pid", "mount", "ipc", "uts"})
            if (!seen.contains(always))
                unsupported(std::string("linux.namespaces without '") + always + "' (spawn always creates it)");
    }
    if (l.contains("maskedPaths"))
        for (const auto& p : strings(l["maskedPaths"], "linux.maskedPaths"))
            s.inaccessible.push_back(checked("linux.maskedPaths", p, parse_absolute_path));
    if (l.contains("readonlyPaths")) {
        // Read-only already in every spawn container (nspawn's /proc layout); anything else is not.
        static const std::set<std::string> kReadOnly = {"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus",
                                                        "/proc/fs", "/proc/asound", "/proc/acpi", "/proc/apm", "/proc/scsi"};
        for (const auto& p : strings(l["readonlyPaths"], "linux.readonlyPaths"))
            if (!kReadOnly.contains(p)) unsupported("linux.readonlyPaths entry " + p);
    }
}

}  // namespace

SpawnSpec parse_oci_config(std::string_view text, const std::string& bundle) {
    if (text.size() > kOciConfigMax) throw UsageError("OCI config.json is larger than 1 MiB");
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) throw UsageError("OCI config.json is not valid JSON");
    only_keys(j, "", {"ociVersion", "root", "process", "hostname", "mounts", "linux", "annotations"});
    if (!j.contains("ociVersion") || j["ociVersion"] != "1.0.0")
        throw UsageError("OCI config.json: only ociVersion \"1.0.0\" is supported (as systemd-nspawn)");
    SpawnSpec s;
    if (!j.contains("root")) invalid("root", "missing");
    only_keys(j["root"], "root", {"path", "readonly"});
    std::string root = str(j["root"].value("path", json()), "root.path");
    if (root.empty()) invalid("root.path", "empty");
    s.directory = checked("root.path", root[0] == '/' ? root : bundle + "/" + root, parse_absolute_path);
    if (j["root"].contains("readonly")) {
        if (!j["root"]["readonly"].is_boolean()) invalid("root.readonly", "expected a boolean");
        s.read_only = j["root"]["readonly"].get<bool>();
    }
    if (!j.contains("process")) invalid("process", "missing (spawn needs process.args)");
    parse_process(j["process"], s);
    if (j.contains("hostname")) {
        s.hostname = str(j["hostname"], "hostname");
        if (!machine_name_is_valid(s.hostname)) invalid("hostname", "not a valid host name");
    }
    if (j.contains("mounts")) parse_mounts(j["mounts"], s);
    if (j.contains("linux")) parse_linux(j["linux"], s);
    else unsupported("a config without 'linux' (spawn needs linux.namespaces)");
    return s;
}

}  // namespace mk::core
