#include "core/spawn/oci_config.hpp"

#include <sched.h>
#include <sys/mount.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <set>
#include <utility>

#include "core/base/error.hpp"
#include "core/base/names.hpp"
#include "core/kernel/capabilities.hpp"
#include "core/spawn/oci_steps.hpp"
#include "core/spawn/oci_userns.hpp"
#include "core/spawn/option_values.hpp"

namespace mk::core {

bool OciMount::bind() const noexcept { return (flags & MS_BIND) != 0; }

bool OciHooks::empty() const noexcept {
    return prestart.empty() && create_runtime.empty() && create_container.empty() && start_container.empty() &&
           poststart.empty() && poststop.empty();
}

namespace {

using json = nlohmann::json;

[[noreturn]] void unsupported(const std::string& field) {
    throw UsageError("OCI config field '" + field + "' is not supported");
}
[[noreturn]] void invalid(const std::string& field, const std::string& why) {
    throw UsageError("OCI config field '" + field + "' is invalid: " + why);
}

std::string join(const std::string& where, std::string_view key) {
    return where.empty() ? std::string(key) : where + "." + std::string(key);
}

// Unknown keys are refused by name: a field we do not know is a field we would ignore.
void only_keys(const json& obj, const std::string& where, std::initializer_list<std::string_view> known) {
    if (!obj.is_object()) invalid(where, "expected an object");
    for (const auto& [k, v] : obj.items())
        if (std::find(known.begin(), known.end(), k) == known.end()) unsupported(join(where, k));
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

bool boolean(const json& v, const std::string& field) {
    if (!v.is_boolean()) invalid(field, "expected a boolean");
    return v.get<bool>();
}

int64_t i64(const json& v, const std::string& field, int64_t lo = INT64_MIN, int64_t hi = INT64_MAX) {
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)))
        invalid(field, "expected an integer");
    int64_t n = v.get<int64_t>();
    if (n < lo || n > hi) invalid(field, "out of range " + std::to_string(lo) + ".." + std::to_string(hi));
    return n;
}

uint64_t u64(const json& v, const std::string& field, uint64_t hi = UINT64_MAX) {
    if (!v.is_number_unsigned()) invalid(field, "expected a non-negative integer");
    uint64_t n = v.get<uint64_t>();
    if (n > hi) invalid(field, "out of range 0.." + std::to_string(hi));
    return n;
}

uint32_t u32(const json& v, const std::string& field) { return static_cast<uint32_t>(u64(v, field, UINT32_MAX)); }

template <typename F>
auto checked(const std::string& field, std::string_view value, F&& parse) {
    try {
        return parse(value);
    } catch (const UsageError& e) {
        invalid(field, e.what());
    }
}

std::string absolute(const json& v, const std::string& field) { return checked(field, str(v, field), parse_absolute_path); }

std::map<std::string, std::string> string_map(const json& v, const std::string& field) {
    if (!v.is_object()) invalid(field, "expected an object of strings");
    std::map<std::string, std::string> out;
    for (const auto& [k, e] : v.items()) out[k] = str(e, field + "." + k);
    return out;
}

uint64_t cap_mask(const json& list, const std::string& field) {
    uint64_t m = 0;
    for (const auto& name : strings(list, field)) {
        auto cap = capability_from_name(name);
        if (!cap) invalid(field, "unknown capability " + name);
        m |= cap_bit(*cap);
    }
    return m;
}

std::vector<OciIdMapping> id_mappings(const json& v, const std::string& field) {
    if (!v.is_array()) invalid(field, "expected an array");
    std::vector<OciIdMapping> out;
    for (const auto& m : v) {
        only_keys(m, field + "[]", {"containerID", "hostID", "size"});
        for (const char* k : {"containerID", "hostID", "size"})
            if (!m.contains(k)) invalid(field + "[]." + k, "missing");
        OciIdMapping r{u32(m["containerID"], field + "[].containerID"), u32(m["hostID"], field + "[].hostID"),
                       u32(m["size"], field + "[].size")};
        if (r.size == 0 || uint64_t(r.container_id) + r.size > (uint64_t(1) << 32) ||
            uint64_t(r.host_id) + r.size > (uint64_t(1) << 32))
            invalid(field + "[]", "empty or beyond the 32-bit id space");
        out.push_back(r);
    }
    if (out.size() > 340) invalid(field, "more than 340 ranges (the kernel's limit)");
    return out;
}

// ---- process ------------------------------------------------------------------------------------

void parse_user(const json& u, SpawnSpec& s) {
    only_keys(u, "process.user", {"uid", "gid", "umask", "additionalGids"});
    if (u.contains("uid")) s.oci.uid = u32(u["uid"], "process.user.uid");
    if (u.contains("gid")) s.oci.gid = u32(u["gid"], "process.user.gid");
    if (u.contains("umask")) s.oci.umask = static_cast<uint32_t>(u64(u["umask"], "process.user.umask", 0777));
    if (u.contains("additionalGids")) {
        if (!u["additionalGids"].is_array()) invalid("process.user.additionalGids", "expected an array");
        if (u["additionalGids"].size() > 65536) invalid("process.user.additionalGids", "more than 65536 groups");
        for (const auto& g : u["additionalGids"]) s.oci.additional_gids.push_back(u32(g, "process.user.additionalGids"));
    }
}

void parse_capabilities(const json& c, SpawnSpec& s) {
    only_keys(c, "process.capabilities", {"bounding", "effective", "permitted", "inheritable", "ambient"});
    const std::string f = "process.capabilities.";
    if (c.contains("bounding")) s.oci.cap_bounding = cap_mask(c["bounding"], f + "bounding");
    if (c.contains("effective")) s.oci.cap_effective = cap_mask(c["effective"], f + "effective");
    if (c.contains("permitted")) s.oci.cap_permitted = cap_mask(c["permitted"], f + "permitted");
    if (c.contains("inheritable")) s.oci.cap_inheritable = cap_mask(c["inheritable"], f + "inheritable");
    if (c.contains("ambient")) s.oci.cap_ambient = cap_mask(c["ambient"], f + "ambient");
    s.oci.capabilities_given = true;
    // spawn's own model: bounding = permitted = effective, plus ambient; oci_unapplied_field()
    // refuses configs that need the sets to differ.
    s.capabilities_add = s.oci.cap_bounding & ~kDefaultCapabilities;
    s.capabilities_drop = kDefaultCapabilities & ~s.oci.cap_bounding;
    s.capabilities_ambient = s.oci.cap_ambient;
}

void parse_rlimits(const json& v, SpawnSpec& s) {
    if (!v.is_array()) invalid("process.rlimits", "expected an array");
    for (const auto& r : v) {
        only_keys(r, "process.rlimits[]", {"type", "soft", "hard"});
        std::string type = str(r.value("type", json()), "process.rlimits[].type");
        auto res = rlimit_from_name(type);
        if (!res) invalid("process.rlimits[].type", "unknown resource " + type);
        if (!r.contains("soft") || !r.contains("hard")) invalid("process.rlimits[]", "needs soft and hard");
        ResourceLimit l{u64(r["soft"], "process.rlimits[].soft"), u64(r["hard"], "process.rlimits[].hard")};
        if (l.soft > l.hard) invalid("process.rlimits[]", "soft limit is above the hard limit");
        if (s.rlimits[static_cast<size_t>(*res)]) invalid("process.rlimits[]", type + " given twice");
        s.rlimits[static_cast<size_t>(*res)] = l;
    }
}

void parse_io_priority(const json& v, SpawnSpec& s) {
    only_keys(v, "process.ioPriority", {"class", "priority"});
    static const std::map<std::string, int> kClasses = {
        {"IOPRIO_CLASS_RT", 1}, {"IOPRIO_CLASS_BE", 2}, {"IOPRIO_CLASS_IDLE", 3}};
    std::string cls = str(v.value("class", json()), "process.ioPriority.class");
    auto it = kClasses.find(cls);
    if (it == kClasses.end()) invalid("process.ioPriority.class", "expected IOPRIO_CLASS_RT, _BE or _IDLE");
    OciSpec::IoPriority p{it->second, 0};
    if (v.contains("priority")) p.priority = static_cast<int>(i64(v["priority"], "process.ioPriority.priority", 0, 7));
    s.oci.io_priority = p;
}

void parse_scheduler(const json& v, SpawnSpec& s) {
    only_keys(v, "process.scheduler", {"policy", "nice", "priority", "flags", "runtime", "deadline", "period"});
    static const std::map<std::string, int> kPolicies = {
        {"SCHED_OTHER", SCHED_OTHER}, {"SCHED_FIFO", SCHED_FIFO}, {"SCHED_RR", SCHED_RR},
        {"SCHED_BATCH", SCHED_BATCH}, {"SCHED_ISO", 4},           {"SCHED_IDLE", SCHED_IDLE},
        {"SCHED_DEADLINE", 6}};
    // <linux/sched.h>'s SCHED_FLAG_* (spelled out: it clashes with <sched.h>).
    static const std::map<std::string, uint64_t> kFlags = {
        {"SCHED_FLAG_RESET_ON_FORK", 0x01}, {"SCHED_FLAG_RECLAIM", 0x02},     {"SCHED_FLAG_DL_OVERRUN", 0x04},
        {"SCHED_FLAG_KEEP_POLICY", 0x08},   {"SCHED_FLAG_KEEP_PARAMS", 0x10}, {"SCHED_FLAG_UTIL_CLAMP_MIN", 0x20},
        {"SCHED_FLAG_UTIL_CLAMP_MAX", 0x40}};
    std::string pol = str(v.value("policy", json()), "process.scheduler.policy");
    auto it = kPolicies.find(pol);
    if (it == kPolicies.end()) invalid("process.scheduler.policy", "unknown policy " + pol);
    if (pol == "SCHED_ISO") unsupported("process.scheduler.policy SCHED_ISO (not in Linux)");
    OciSpec::Scheduler sc;
    sc.policy = it->second;
    if (v.contains("nice")) sc.nice = static_cast<int>(i64(v["nice"], "process.scheduler.nice", -20, 19));
    if (v.contains("priority")) sc.priority = static_cast<int>(i64(v["priority"], "process.scheduler.priority", 0, 99));
    if (v.contains("flags"))
        for (const auto& f : strings(v["flags"], "process.scheduler.flags")) {
            auto fl = kFlags.find(f);
            if (fl == kFlags.end()) invalid("process.scheduler.flags", "unknown flag " + f);
            sc.flags |= fl->second;
        }
    if (v.contains("runtime")) sc.runtime = u64(v["runtime"], "process.scheduler.runtime");
    if (v.contains("deadline")) sc.deadline = u64(v["deadline"], "process.scheduler.deadline");
    if (v.contains("period")) sc.period = u64(v["period"], "process.scheduler.period");
    bool realtime = sc.policy == SCHED_FIFO || sc.policy == SCHED_RR;
    if (realtime && sc.priority == 0) invalid("process.scheduler.priority", "SCHED_FIFO and SCHED_RR need 1..99");
    if (!realtime && sc.priority != 0) invalid("process.scheduler.priority", "only SCHED_FIFO and SCHED_RR take one");
    if (sc.policy == 6 && (sc.runtime == 0 || sc.runtime > sc.deadline || (sc.period && sc.deadline > sc.period)))
        invalid("process.scheduler", "SCHED_DEADLINE needs 0 < runtime <= deadline <= period");
    s.oci.scheduler = sc;
}

std::vector<unsigned> cpu_list(const json& v, const std::string& field) {
    std::string text = str(v, field);
    if (text.empty()) return {};
    return checked(field, text, parse_cpu_set);
}

void parse_process_object(const json& p, SpawnSpec& s) {
    only_keys(
        p, "process",
        {"terminal", "consoleSize", "cwd", "env", "args", "commandLine", "user", "rlimits", "noNewPrivileges", "oomScoreAdj",
         "capabilities", "apparmorProfile", "selinuxLabel", "ioPriority", "scheduler", "execCPUAffinity"});
    if (p.contains("commandLine")) unsupported("process.commandLine (Windows only)");
    if (!p.contains("args") || !p["args"].is_array() || p["args"].empty())
        invalid("process.args", "expected a non-empty array");
    s.argv = strings(p["args"], "process.args");
    if (!p.contains("cwd")) invalid("process.cwd", "missing");
    s.chdir = absolute(p["cwd"], "process.cwd");
    if (p.contains("env"))
        for (const auto& e : strings(p["env"], "process.env"))
            s.setenv.push_back(checked("process.env", e, parse_env_assignment));
    if (p.contains("terminal"))
        s.console = boolean(p["terminal"], "process.terminal") ? ConsoleMode::Interactive : ConsoleMode::Pipe;
    if (p.contains("consoleSize")) {
        only_keys(p["consoleSize"], "process.consoleSize", {"height", "width"});
        const json& c = p["consoleSize"];
        s.oci.console_size = std::pair<unsigned, unsigned>(
            static_cast<unsigned>(u64(c.value("height", json(0)), "process.consoleSize.height", 65535)),
            static_cast<unsigned>(u64(c.value("width", json(0)), "process.consoleSize.width", 65535)));
    }
    if (p.contains("user")) parse_user(p["user"], s);
    if (p.contains("noNewPrivileges")) s.no_new_privileges = boolean(p["noNewPrivileges"], "process.noNewPrivileges");
    if (p.contains("oomScoreAdj"))
        s.oom_score_adjust = static_cast<int>(i64(p["oomScoreAdj"], "process.oomScoreAdj", -1000, 1000));
    if (p.contains("rlimits")) parse_rlimits(p["rlimits"], s);
    if (p.contains("capabilities")) parse_capabilities(p["capabilities"], s);
    // No AppArmor or SELinux support: an empty string asks for nothing, anything else is refused.
    for (const char* lsm : {"apparmorProfile", "selinuxLabel"})
        if (p.contains(lsm) && !str(p[lsm], std::string("process.") + lsm).empty())
            unsupported(std::string("process.") + lsm + " (no LSM support; leave it empty)");
    if (p.contains("ioPriority")) parse_io_priority(p["ioPriority"], s);
    if (p.contains("scheduler")) parse_scheduler(p["scheduler"], s);
    if (p.contains("execCPUAffinity")) {
        only_keys(p["execCPUAffinity"], "process.execCPUAffinity", {"initial", "final"});
        const json& a = p["execCPUAffinity"];
        if (a.contains("initial"))
            s.oci.exec_cpu_affinity_initial = cpu_list(a["initial"], "process.execCPUAffinity.initial");
        if (a.contains("final")) s.oci.exec_cpu_affinity_final = cpu_list(a["final"], "process.execCPUAffinity.final");
    }
}

// ---- mounts -------------------------------------------------------------------------------------

struct FlagOption {
    std::string_view name;
    bool clear;
    unsigned long flag;
};
// runc's table (libcontainer/specconv): mount(8) names of the MS_* flags.
constexpr FlagOption kFlagOptions[] = {
    {"async", true, MS_SYNCHRONOUS},
    {"atime", true, MS_NOATIME},
    {"bind", false, MS_BIND},
    {"defaults", false, 0},
    {"dev", true, MS_NODEV},
    {"diratime", true, MS_NODIRATIME},
    {"dirsync", false, MS_DIRSYNC},
    {"exec", true, MS_NOEXEC},
    {"iversion", false, MS_I_VERSION},
    {"lazytime", false, MS_LAZYTIME},
    {"loud", true, MS_SILENT},
    {"mand", false, MS_MANDLOCK},
    {"noatime", false, MS_NOATIME},
    {"nodev", false, MS_NODEV},
    {"nodiratime", false, MS_NODIRATIME},
    {"noexec", false, MS_NOEXEC},
    {"noiversion", true, MS_I_VERSION},
    {"nolazytime", true, MS_LAZYTIME},
    {"nomand", true, MS_MANDLOCK},
    {"norelatime", true, MS_RELATIME},
    {"nostrictatime", true, MS_STRICTATIME},
    {"nosuid", false, MS_NOSUID},
    {"nosymfollow", false, MS_NOSYMFOLLOW},
    {"rbind", false, MS_BIND | MS_REC},
    {"relatime", false, MS_RELATIME},
    {"remount", false, MS_REMOUNT},
    {"ro", false, MS_RDONLY},
    {"rw", true, MS_RDONLY},
    {"silent", false, MS_SILENT},
    {"strictatime", false, MS_STRICTATIME},
    {"suid", true, MS_NOSUID},
    {"symfollow", true, MS_NOSYMFOLLOW},
    {"sync", false, MS_SYNCHRONOUS},
};
constexpr std::pair<std::string_view, unsigned long> kPropagation[] = {
    {"private", MS_PRIVATE},       {"rprivate", MS_PRIVATE | MS_REC},
    {"shared", MS_SHARED},         {"rshared", MS_SHARED | MS_REC},
    {"slave", MS_SLAVE},           {"rslave", MS_SLAVE | MS_REC},
    {"unbindable", MS_UNBINDABLE}, {"runbindable", MS_UNBINDABLE | MS_REC},
};
struct AttrOption {
    std::string_view name;
    bool clear;
    uint64_t attr;
};
// The recursive forms (mount_setattr(2) with AT_RECURSIVE), runtime-spec 1.1.
constexpr AttrOption kAttrOptions[] = {
    {"rro", false, MOUNT_ATTR_RDONLY},
    {"rrw", true, MOUNT_ATTR_RDONLY},
    {"rnosuid", false, MOUNT_ATTR_NOSUID},
    {"rsuid", true, MOUNT_ATTR_NOSUID},
    {"rnodev", false, MOUNT_ATTR_NODEV},
    {"rdev", true, MOUNT_ATTR_NODEV},
    {"rnoexec", false, MOUNT_ATTR_NOEXEC},
    {"rexec", true, MOUNT_ATTR_NOEXEC},
    {"rnodiratime", false, MOUNT_ATTR_NODIRATIME},
    {"rdiratime", true, MOUNT_ATTR_NODIRATIME},
    {"rrelatime", false, MOUNT_ATTR_RELATIME},
    {"rnorelatime", true, MOUNT_ATTR_RELATIME},
    {"rnoatime", false, MOUNT_ATTR_NOATIME},
    {"ratime", true, MOUNT_ATTR_NOATIME},
    {"rstrictatime", false, MOUNT_ATTR_STRICTATIME},
    {"rnostrictatime", true, MOUNT_ATTR_STRICTATIME},
    {"rnosymfollow", false, MOUNT_ATTR_NOSYMFOLLOW},
    {"rsymfollow", true, MOUNT_ATTR_NOSYMFOLLOW},
};

void decode_mount_options(OciMount& m) {
    for (const auto& o : m.options) {
        const std::string where = "mounts[].options '" + o + "' at " + m.destination;
        if (auto f = std::ranges::find(kFlagOptions, o, &FlagOption::name); f != std::end(kFlagOptions)) {
            if (f->clear) m.flags &= ~f->flag, m.clear_flags |= f->flag;
            else m.flags |= f->flag, m.clear_flags &= ~f->flag;
        } else if (auto p = std::ranges::find(kPropagation, o, &std::pair<std::string_view, unsigned long>::first);
                   p != std::end(kPropagation)) {
            m.propagation = p->second;
        } else if (auto a = std::ranges::find(kAttrOptions, o, &AttrOption::name); a != std::end(kAttrOptions)) {
            if (a->clear) m.attr_clr |= a->attr, m.attr_set &= ~a->attr;
            else m.attr_set |= a->attr, m.attr_clr &= ~a->attr;
        } else if (o == "idmap" || o == "ridmap") {
            m.idmap = true;
            m.idmap_recursive = o == "ridmap";
        } else if (o == "tmpcopyup") {
            m.copy_up = true;  // crun's extension, podman's --read-only: the mount plan copies
        } else if (o == "copyup") {
            unsupported(where + " (crun's overlay copy-up; use tmpcopyup on a tmpfs)");
        } else if (o.empty() || o.find(',') != std::string::npos) {
            invalid("mounts[].options", "empty option or one holding a comma at " + m.destination);
        } else {
            // Anything else is the file system's own option, passed to mount(2) as data (as runc).
            m.data += (m.data.empty() ? "" : ",") + o;
        }
    }
}

}  // namespace

// What spawn mounts itself at these places (nspawn's API file systems): a config naming them is
// describing the same thing, and spawn's version (read-only /sys, masked /proc files) is kept.
bool oci_api_mount(const std::string& dst, const std::string& type) {
    static const std::set<std::pair<std::string, std::string>> kApi = {
        {"/proc", "proc"},         {"/dev", "tmpfs"}, {"/dev/pts", "devpts"},       {"/dev/shm", "tmpfs"},
        {"/dev/mqueue", "mqueue"}, {"/sys", "sysfs"}, {"/sys/fs/cgroup", "cgroup"}, {"/sys/fs/cgroup", "cgroup2"},
        {"/run", "tmpfs"},         {"/tmp", "tmpfs"},
    };
    return kApi.contains({dst, type});
}

namespace {

bool api_mount(const std::string& dst, const std::string& type) { return oci_api_mount(dst, type); }

void parse_mounts(const json& mounts, SpawnSpec& s) {
    if (!mounts.is_array()) invalid("mounts", "expected an array");
    if (mounts.size() > 4096) invalid("mounts", "more than 4096 entries");
    for (const auto& j : mounts) {
        only_keys(j, "mounts[]", {"destination", "type", "source", "options", "uidMappings", "gidMappings"});
        OciMount m;
        m.destination = absolute(j.value("destination", json()), "mounts[].destination");
        if (m.destination == "/") invalid("mounts[].destination", "cannot mount over the container root");
        if (j.contains("type")) m.type = str(j["type"], "mounts[].type");
        if (j.contains("source")) m.source = str(j["source"], "mounts[].source");
        if (j.contains("options")) m.options = strings(j["options"], "mounts[].options");
        decode_mount_options(m);
        if (m.type == "bind") m.flags |= MS_BIND;
        if (j.contains("uidMappings")) m.uid_mappings = id_mappings(j["uidMappings"], "mounts[].uidMappings");
        if (j.contains("gidMappings")) m.gid_mappings = id_mappings(j["gidMappings"], "mounts[].gidMappings");
        if ((m.uid_mappings.empty() != m.gid_mappings.empty()) || (!m.uid_mappings.empty() && !m.idmap))
            invalid("mounts[] at " + m.destination, "uidMappings and gidMappings go together, with the idmap option");
        if (m.bind()) {
            m.source = checked("mounts[].source", m.source, parse_absolute_path);
            BindMount b;
            b.source = m.source;
            b.destination = m.destination;
            b.recursive = (m.flags & MS_REC) != 0;
            b.read_only = (m.flags & MS_RDONLY) != 0;
            b.idmap = m.idmap;
            b.idmap_recursive = m.idmap_recursive;
            if (!m.uid_mappings.empty()) {
                for (auto [maps, name] :
                     {std::pair{&m.uid_mappings, "uidMappings"}, std::pair{&m.gid_mappings, "gidMappings"}}) {
                    std::string problem = id_map_problem(oci_id_map(*maps));
                    if (!problem.empty()) invalid(std::string("mounts[].") + name + " at " + m.destination, problem);
                }
                b.idmap_uid_map = id_map_text(oci_id_map(m.uid_mappings));
                b.idmap_gid_map = id_map_text(oci_id_map(m.gid_mappings));
            }
            s.binds.push_back(b);
        } else if (m.type.empty()) {
            invalid("mounts[].type at " + m.destination, "missing (only binds may leave it out)");
        } else if (m.type == "tmpfs" && !api_mount(m.destination, m.type)) {
            // The file system's own options (size=, mode=) go to the tmpfs; the per-mount flags
            // (nosuid, nodev, noexec, ro, atime, propagation) are set on it afterwards, as on binds,
            // by apply_oci_mount_attributes().
            s.tmpfs.push_back(
                checked("mounts[].options", m.destination + (m.data.empty() ? "" : ":" + m.data), parse_tmpfs));
        }
        s.oci.mounts.push_back(std::move(m));
    }
}

// ---- hooks --------------------------------------------------------------------------------------

void parse_hooks(const json& h, SpawnSpec& s) {
    only_keys(h, "hooks", {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"});
    std::pair<const char*, std::vector<OciHook>*> lists[] = {{"prestart", &s.oci.hooks.prestart},
                                                             {"createRuntime", &s.oci.hooks.create_runtime},
                                                             {"createContainer", &s.oci.hooks.create_container},
                                                             {"startContainer", &s.oci.hooks.start_container},
                                                             {"poststart", &s.oci.hooks.poststart},
                                                             {"poststop", &s.oci.hooks.poststop}};
    for (auto [name, out] : lists) {
        if (!h.contains(name)) continue;
        const std::string f = std::string("hooks.") + name;
        if (!h[name].is_array()) invalid(f, "expected an array");
        if (h[name].size() > 256) invalid(f, "more than 256 hooks");
        for (const auto& e : h[name]) {
            only_keys(e, f + "[]", {"path", "args", "env", "timeout"});
            OciHook hook;
            hook.path = absolute(e.value("path", json()), f + "[].path");
            if (e.contains("args")) hook.args = strings(e["args"], f + "[].args");
            if (e.contains("env"))
                for (const auto& v : strings(e["env"], f + "[].env"))
                    hook.env.push_back(checked(f + "[].env", v, parse_env_assignment));
            if (e.contains("timeout"))
                hook.timeout = static_cast<int>(i64(e["timeout"], f + "[].timeout", 1, kOciHookTimeoutMax));
            out->push_back(std::move(hook));
        }
    }
}

// ---- linux --------------------------------------------------------------------------------------

void parse_namespaces(const json& v, SpawnSpec& s) {
    if (!v.is_array()) invalid("linux.namespaces", "expected an array");
    static const std::set<std::string> kTypes = {"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"};
    std::set<std::string> seen;
    for (const auto& n : v) {
        only_keys(n, "linux.namespaces[]", {"type", "path"});
        OciNamespace ns;
        ns.type = str(n.value("type", json()), "linux.namespaces[].type");
        if (!kTypes.contains(ns.type)) invalid("linux.namespaces[].type", "unknown namespace type '" + ns.type + "'");
        if (!seen.insert(ns.type).second) invalid("linux.namespaces", "'" + ns.type + "' given twice");
        if (n.contains("path")) ns.path = absolute(n["path"], "linux.namespaces[].path");
        if (ns.type == "network") {
            if (ns.path.empty()) s.private_network = true;
            else s.network_namespace_path = ns.path;
        }
        s.oci.namespaces.push_back(std::move(ns));
    }
}

void parse_devices(const json& v, SpawnSpec& s) {
    if (!v.is_array()) invalid("linux.devices", "expected an array");
    for (const auto& d : v) {
        only_keys(d, "linux.devices[]", {"type", "path", "major", "minor", "fileMode", "uid", "gid"});
        OciDevice dev;
        dev.path = absolute(d.value("path", json()), "linux.devices[].path");
        std::string type = str(d.value("type", json()), "linux.devices[].type");
        if (type != "c" && type != "b" && type != "u" && type != "p")
            invalid("linux.devices[].type", "expected c, b, u or p");
        dev.type = type[0] == 'u' ? 'c' : type[0];
        if (dev.type != 'p') {
            if (!d.contains("major") || !d.contains("minor"))
                invalid("linux.devices[] " + dev.path, "needs major and minor");
            dev.major = i64(d["major"], "linux.devices[].major", 0, 4095);
            dev.minor = i64(d["minor"], "linux.devices[].minor", 0, 1048575);
        }
        if (d.contains("fileMode"))
            dev.file_mode = static_cast<uint32_t>(u64(d["fileMode"], "linux.devices[].fileMode", 07777));
        if (d.contains("uid")) dev.uid = u32(d["uid"], "linux.devices[].uid");
        if (d.contains("gid")) dev.gid = u32(d["gid"], "linux.devices[].gid");
        s.oci.devices.push_back(std::move(dev));
    }
}

std::vector<OciBlockDeviceValue> block_values(const json& v, const std::string& field, const char* key, uint64_t lo,
                                              uint64_t hi) {
    if (!v.is_array()) invalid(field, "expected an array");
    std::vector<OciBlockDeviceValue> out;
    for (const auto& e : v) {
        if (std::string_view(key) == "weight") only_keys(e, field + "[]", {"major", "minor", "weight", "leafWeight"});
        else only_keys(e, field + "[]", {"major", "minor", "rate"});
        if (e.contains("leafWeight")) unsupported(field + "[].leafWeight (gone from the kernel)");
        if (!e.contains("major") || !e.contains("minor") || !e.contains(key))
            invalid(field + "[]", std::string("needs major, minor and ") + key);
        OciBlockDeviceValue b{i64(e["major"], field + "[].major", 0, 4095), i64(e["minor"], field + "[].minor", 0, 1048575),
                              u64(e[key], field + "[]." + key)};
        if (b.value < lo || b.value > hi)
            invalid(field + "[]." + key, "out of range " + std::to_string(lo) + ".." + std::to_string(hi));
        out.push_back(b);
    }
    return out;
}

// Kernel cgroup file names: "controller.file", no path separators.
bool cgroup_file_name_ok(const std::string& k) {
    if (k.empty() || k.size() > 64 || k.find('.') == std::string::npos || k.front() == '.') return false;
    return std::all_of(k.begin(), k.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
    });
}

OciResources parse_resources(const json& r) {
    const std::string f = "linux.resources";
    only_keys(r, f, {"devices", "memory", "cpu", "pids", "blockIO", "hugepageLimits", "network", "rdma", "unified"});
    OciResources out;
    out.present = true;
    if (r.contains("devices")) {
        if (!r["devices"].is_array()) invalid(f + ".devices", "expected an array");
        for (const auto& d : r["devices"]) {
            only_keys(d, f + ".devices[]", {"allow", "type", "major", "minor", "access"});
            OciDeviceRule rule;
            if (!d.contains("allow")) invalid(f + ".devices[].allow", "missing");
            rule.allow = boolean(d["allow"], f + ".devices[].allow");
            std::string type = d.contains("type") ? str(d["type"], f + ".devices[].type") : "a";
            if (type != "a" && type != "c" && type != "b") invalid(f + ".devices[].type", "expected a, c or b");
            rule.type = type[0];
            if (d.contains("major") && !d["major"].is_null()) rule.major = i64(d["major"], f + ".devices[].major", -1, 4095);
            if (d.contains("minor") && !d["minor"].is_null())
                rule.minor = i64(d["minor"], f + ".devices[].minor", -1, 1048575);
            if (rule.major == -1) rule.major.reset();
            if (rule.minor == -1) rule.minor.reset();
            rule.access = d.contains("access") ? str(d["access"], f + ".devices[].access") : "";
            if (rule.access.find_first_not_of("rwm") != std::string::npos)
                invalid(f + ".devices[].access", "expected letters of rwm");
            out.devices.push_back(rule);
        }
    }
    if (r.contains("memory")) {
        const json& m = r["memory"];
        const std::string g = f + ".memory";
        only_keys(m, g,
                  {"limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness", "disableOOMKiller", "useHierarchy",
                   "checkBeforeUpdate"});
        if (m.contains("kernel")) unsupported(g + ".kernel (kernel memory limits are gone from Linux)");
        auto limit = [&](const char* k) -> std::optional<int64_t> {
            if (!m.contains(k)) return std::nullopt;
            int64_t v = i64(m[k], g + "." + k, -1);
            if (v == 0) invalid(g + "." + k, "0 (use -1 for unlimited)");
            return v;
        };
        out.memory.limit = limit("limit");
        out.memory.reservation = limit("reservation");
        out.memory.swap = limit("swap");
        out.memory.kernel_tcp = limit("kernelTCP");
        if (m.contains("swappiness")) out.memory.swappiness = u64(m["swappiness"], g + ".swappiness", 100);
        if (m.contains("disableOOMKiller"))
            out.memory.disable_oom_killer = boolean(m["disableOOMKiller"], g + ".disableOOMKiller");
        if (m.contains("useHierarchy")) out.memory.use_hierarchy = boolean(m["useHierarchy"], g + ".useHierarchy");
        if (m.contains("checkBeforeUpdate"))
            out.memory.check_before_update = boolean(m["checkBeforeUpdate"], g + ".checkBeforeUpdate");
        if (out.memory.swap && out.memory.limit && *out.memory.swap != -1 && *out.memory.limit != -1 &&
            *out.memory.swap < *out.memory.limit)
            invalid(g + ".swap", "below memory.limit (swap counts memory plus swap)");
    }
    if (r.contains("cpu")) {
        const json& c = r["cpu"];
        const std::string g = f + ".cpu";
        only_keys(c, g, {"shares", "quota", "burst", "period", "realtimeRuntime", "realtimePeriod", "cpus", "mems", "idle"});
        if (c.contains("shares")) out.cpu.shares = u64(c["shares"], g + ".shares", 262144);
        if (out.cpu.shares && *out.cpu.shares < 2) invalid(g + ".shares", "out of range 2..262144");
        if (c.contains("quota")) out.cpu.quota = i64(c["quota"], g + ".quota", -1);
        if (out.cpu.quota == 0) invalid(g + ".quota", "0 (use -1 for unlimited)");
        if (c.contains("burst")) out.cpu.burst = u64(c["burst"], g + ".burst");
        if (c.contains("period")) out.cpu.period = u64(c["period"], g + ".period", 1000000);
        if (out.cpu.period && *out.cpu.period < 1000) invalid(g + ".period", "out of range 1000..1000000");
        if (c.contains("realtimeRuntime")) out.cpu.realtime_runtime = i64(c["realtimeRuntime"], g + ".realtimeRuntime", -1);
        if (c.contains("realtimePeriod")) out.cpu.realtime_period = u64(c["realtimePeriod"], g + ".realtimePeriod");
        for (auto [k, dst] : {std::pair{"cpus", &out.cpu.cpus}, std::pair{"mems", &out.cpu.mems}})
            if (c.contains(k)) {
                *dst = str(c[k], g + "." + k);
                if (!dst->empty()) checked(g + "." + k, *dst, parse_cpu_set);  // the same list syntax
            }
        if (c.contains("idle")) out.cpu.idle = i64(c["idle"], g + ".idle", 0, 1);
    }
    if (r.contains("pids")) {
        only_keys(r["pids"], f + ".pids", {"limit"});
        if (!r["pids"].contains("limit")) invalid(f + ".pids.limit", "missing");
        out.pids_limit = i64(r["pids"]["limit"], f + ".pids.limit");
    }
    if (r.contains("blockIO")) {
        const json& b = r["blockIO"];
        const std::string g = f + ".blockIO";
        only_keys(b, g,
                  {"weight", "leafWeight", "weightDevice", "throttleReadBpsDevice", "throttleWriteBpsDevice",
                   "throttleReadIOPSDevice", "throttleWriteIOPSDevice"});
        if (b.contains("leafWeight")) unsupported(g + ".leafWeight (gone from the kernel)");
        if (b.contains("weight")) out.block_io.weight = static_cast<uint16_t>(i64(b["weight"], g + ".weight", 10, 1000));
        if (b.contains("weightDevice"))
            out.block_io.weight_device = block_values(b["weightDevice"], g + ".weightDevice", "weight", 10, 1000);
        std::pair<const char*, std::vector<OciBlockDeviceValue>*> th[] = {
            {"throttleReadBpsDevice", &out.block_io.throttle_read_bps},
            {"throttleWriteBpsDevice", &out.block_io.throttle_write_bps},
            {"throttleReadIOPSDevice", &out.block_io.throttle_read_iops},
            {"throttleWriteIOPSDevice", &out.block_io.throttle_write_iops}};
        for (auto [k, dst] : th)
            if (b.contains(k)) *dst = block_values(b[k], g + "." + k, "rate", 0, UINT64_MAX);
    }
    if (r.contains("hugepageLimits")) {
        if (!r["hugepageLimits"].is_array()) invalid(f + ".hugepageLimits", "expected an array");
        for (const auto& h : r["hugepageLimits"]) {
            only_keys(h, f + ".hugepageLimits[]", {"pageSize", "limit"});
            std::string size = str(h.value("pageSize", json()), f + ".hugepageLimits[].pageSize");
            // "2MB", "1GB", "64KB": the hugetlb.<size>.* file names.
            size_t digits = size.find_first_not_of("0123456789");
            if (digits == 0 || digits == std::string::npos || digits > 6 ||
                (size.substr(digits) != "KB" && size.substr(digits) != "MB" && size.substr(digits) != "GB"))
                invalid(f + ".hugepageLimits[].pageSize", "expected a size like 2MB or 1GB");
            if (!h.contains("limit")) invalid(f + ".hugepageLimits[].limit", "missing");
            out.hugepage_limits.emplace_back(size, u64(h["limit"], f + ".hugepageLimits[].limit"));
        }
    }
    if (r.contains("network")) {
        const json& n = r["network"];
        only_keys(n, f + ".network", {"classID", "priorities"});
        if (n.contains("classID")) out.network.class_id = u32(n["classID"], f + ".network.classID");
        if (n.contains("priorities")) {
            if (!n["priorities"].is_array()) invalid(f + ".network.priorities", "expected an array");
            for (const auto& p : n["priorities"]) {
                only_keys(p, f + ".network.priorities[]", {"name", "priority"});
                std::string name = str(p.value("name", json()), f + ".network.priorities[].name");
                if (name.empty() || name.size() > 15 || name.find_first_of(" \n/") != std::string::npos)
                    invalid(f + ".network.priorities[].name", "not an interface name");
                out.network.priorities.emplace_back(name,
                                                    u32(p.value("priority", json(0)), f + ".network.priorities[].priority"));
            }
        }
    }
    if (r.contains("rdma")) {
        if (!r["rdma"].is_object()) invalid(f + ".rdma", "expected an object");
        for (const auto& [dev, lim] : r["rdma"].items()) {
            only_keys(lim, f + ".rdma." + dev, {"hcaHandles", "hcaObjects"});
            if (dev.empty() || dev.size() > 64 || dev.find_first_of(" \n=") != std::string::npos)
                invalid(f + ".rdma", "not a device name: " + dev);
            auto& e = out.rdma[dev];
            if (lim.contains("hcaHandles")) e.first = u32(lim["hcaHandles"], f + ".rdma." + dev + ".hcaHandles");
            if (lim.contains("hcaObjects")) e.second = u32(lim["hcaObjects"], f + ".rdma." + dev + ".hcaObjects");
        }
    }
    if (r.contains("unified")) {
        out.unified = string_map(r["unified"], f + ".unified");
        for (const auto& [k, v] : out.unified) {
            if (!cgroup_file_name_ok(k)) invalid(f + ".unified", "not a cgroup file name: " + k);
            if (k.starts_with("cgroup.")) unsupported(f + ".unified." + k + " (the runtime owns the cgroup.* files)");
            if (v.size() > 4096 || v.find('\0') != std::string::npos)
                invalid(f + ".unified." + k, "value too long or holding NUL");
        }
    }
    return out;
}

OciSeccomp parse_seccomp(const json& j) {
    const std::string f = "linux.seccomp";
    only_keys(
        j, f,
        {"defaultAction", "defaultErrnoRet", "architectures", "flags", "listenerPath", "listenerMetadata", "syscalls"});
    for (const char* k : {"listenerPath", "listenerMetadata"})
        if (j.contains(k) && !str(j[k], f + "." + k).empty()) unsupported(f + "." + k + " (no seccomp notify agents)");
    OciSeccomp s;
    s.default_action = str(j.value("defaultAction", json()), f + ".defaultAction");
    if (j.contains("defaultErrnoRet")) s.default_errno_ret = u32(j["defaultErrnoRet"], f + ".defaultErrnoRet");
    if (j.contains("architectures")) s.architectures = strings(j["architectures"], f + ".architectures");
    if (j.contains("flags")) s.flags = strings(j["flags"], f + ".flags");
    if (j.contains("syscalls")) {
        if (!j["syscalls"].is_array()) invalid(f + ".syscalls", "expected an array");
        for (const auto& e : j["syscalls"]) {
            only_keys(e, f + ".syscalls[]", {"names", "action", "errnoRet", "args"});
            OciSeccompRule rule;
            rule.names = strings(e.value("names", json()), f + ".syscalls[].names");
            if (rule.names.empty()) invalid(f + ".syscalls[].names", "empty");
            rule.action = str(e.value("action", json()), f + ".syscalls[].action");
            if (e.contains("errnoRet")) rule.errno_ret = u32(e["errnoRet"], f + ".syscalls[].errnoRet");
            if (e.contains("args")) {
                if (!e["args"].is_array() || e["args"].size() > 6)
                    invalid(f + ".syscalls[].args", "expected an array of at most 6");
                for (const auto& a : e["args"]) {
                    only_keys(a, f + ".syscalls[].args[]", {"index", "value", "valueTwo", "op"});
                    OciSeccompArg arg;
                    arg.index = static_cast<uint32_t>(u64(a.value("index", json()), f + ".syscalls[].args[].index", 5));
                    if (a.contains("value")) arg.value = u64(a["value"], f + ".syscalls[].args[].value");
                    if (a.contains("valueTwo")) arg.value_two = u64(a["valueTwo"], f + ".syscalls[].args[].valueTwo");
                    arg.op = str(a.value("op", json()), f + ".syscalls[].args[].op");
                    rule.args.push_back(arg);
                }
            }
            s.syscalls.push_back(std::move(rule));
        }
    }
    return s;
}

OciTimeOffset time_offset(const json& v, const std::string& field) {
    only_keys(v, field, {"secs", "nanosecs"});
    OciTimeOffset t;
    if (v.contains("secs")) t.secs = i64(v["secs"], field + ".secs");
    if (v.contains("nanosecs")) t.nanosecs = static_cast<uint32_t>(u64(v["nanosecs"], field + ".nanosecs", 999999999));
    return t;
}

void parse_linux(const json& l, SpawnSpec& s) {
    only_keys(l, "linux",
              {"namespaces", "uidMappings", "gidMappings", "timeOffsets", "devices", "cgroupsPath", "resources", "intelRdt",
               "sysctl", "seccomp", "rootfsPropagation", "maskedPaths", "readonlyPaths", "mountLabel", "personality"});
    if (l.contains("intelRdt")) unsupported("linux.intelRdt (no resctrl support)");
    if (l.contains("mountLabel") && !str(l["mountLabel"], "linux.mountLabel").empty())
        unsupported("linux.mountLabel (no SELinux support; leave it empty)");
    if (l.contains("namespaces")) parse_namespaces(l["namespaces"], s);
    if (l.contains("uidMappings")) s.oci.uid_mappings = id_mappings(l["uidMappings"], "linux.uidMappings");
    if (l.contains("gidMappings")) s.oci.gid_mappings = id_mappings(l["gidMappings"], "linux.gidMappings");
    if (l.contains("timeOffsets")) {
        only_keys(l["timeOffsets"], "linux.timeOffsets", {"monotonic", "boottime"});
        if (l["timeOffsets"].contains("monotonic"))
            s.oci.time_monotonic = time_offset(l["timeOffsets"]["monotonic"], "linux.timeOffsets.monotonic");
        if (l["timeOffsets"].contains("boottime"))
            s.oci.time_boottime = time_offset(l["timeOffsets"]["boottime"], "linux.timeOffsets.boottime");
    }
    if (l.contains("devices")) parse_devices(l["devices"], s);
    if (l.contains("cgroupsPath")) {
        s.oci.cgroups_path = str(l["cgroupsPath"], "linux.cgroupsPath");
        // Either a path ("/a/b", "a/b") or systemd's "slice:prefix:name": never climbing out.
        if (s.oci.cgroups_path.size() > 4096 || s.oci.cgroups_path.find('\0') != std::string::npos)
            invalid("linux.cgroupsPath", "too long");
        for (size_t at = 0; at <= s.oci.cgroups_path.size();) {
            size_t end = s.oci.cgroups_path.find_first_of("/:", at);
            if (end == std::string::npos) end = s.oci.cgroups_path.size();
            std::string_view part(s.oci.cgroups_path.data() + at, end - at);
            if (part == "." || part == "..") invalid("linux.cgroupsPath", "'.' and '..' are not allowed");
            at = end + 1;
        }
    }
    if (l.contains("resources")) s.oci.resources = parse_resources(l["resources"]);
    if (l.contains("sysctl")) {
        s.oci.sysctl = string_map(l["sysctl"], "linux.sysctl");
        for (const auto& [k, v] : s.oci.sysctl)
            if (k.empty() || k.size() > 256 || k.find("..") != std::string::npos || k.front() == '.' || k.front() == '/' ||
                k.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/") !=
                    std::string::npos)
                invalid("linux.sysctl", "not a sysctl name: " + k);
    }
    if (l.contains("seccomp")) s.oci.seccomp = parse_seccomp(l["seccomp"]);
    if (l.contains("rootfsPropagation")) {
        std::string p = str(l["rootfsPropagation"], "linux.rootfsPropagation");
        auto it = std::ranges::find(kPropagation, p, &std::pair<std::string_view, unsigned long>::first);
        if (it == std::end(kPropagation))
            invalid("linux.rootfsPropagation", "expected (r)private, (r)shared, (r)slave or (r)unbindable");
        s.oci.rootfs_propagation = it->second;
    }
    if (l.contains("maskedPaths"))
        for (const auto& p : strings(l["maskedPaths"], "linux.maskedPaths")) {
            s.oci.masked_paths.push_back(checked("linux.maskedPaths", p, parse_absolute_path));
            s.inaccessible.push_back(s.oci.masked_paths.back());
        }
    if (l.contains("readonlyPaths"))
        for (const auto& p : strings(l["readonlyPaths"], "linux.readonlyPaths"))
            s.oci.readonly_paths.push_back(checked("linux.readonlyPaths", p, parse_absolute_path));
    if (l.contains("personality")) {
        only_keys(l["personality"], "linux.personality", {"domain", "flags"});
        std::string domain = str(l["personality"].value("domain", json()), "linux.personality.domain");
        if (domain == "LINUX32") s.personality = checked("linux.personality.domain", "x86", parse_personality);
        else if (domain != "LINUX") invalid("linux.personality.domain", "expected LINUX or LINUX32");
        if (l["personality"].contains("flags") && !strings(l["personality"]["flags"], "linux.personality.flags").empty())
            unsupported("linux.personality.flags");
    }
}

bool version_supported(const json& v) {
    // 1.0.0 .. 1.2.x, with pre-release tails ("1.0.2-dev", podman's): the fields are a superset.
    if (!v.is_string()) return false;
    const std::string s = v.get<std::string>();
    if (s.size() < 5 || s[0] != '1' || s[1] != '.' || (s[2] < '0' || s[2] > '2') || s[3] != '.') return false;
    size_t end = s.find_first_not_of("0123456789", 4);
    return end != 4 && (end == std::string::npos || s[end] == '-' || s[end] == '+');
}

json parse_json(std::string_view text, const char* what) {
    if (text.size() > kOciConfigMax) throw UsageError(std::string("OCI ") + what + " is larger than 1 MiB");
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) throw UsageError(std::string("OCI ") + what + " is not valid JSON");
    return j;
}

}  // namespace

SpawnSpec parse_oci_config(std::string_view text, const std::string& bundle) {
    json j = parse_json(text, "config.json");
    only_keys(j, "", {"ociVersion", "root", "process", "hostname", "domainname", "mounts", "hooks", "linux", "annotations"});
    if (!j.contains("ociVersion") || !version_supported(j["ociVersion"]))
        throw UsageError("OCI config.json: ociVersion must be 1.0.0 to 1.2.x");
    SpawnSpec s;
    s.oci.present = true;
    s.oci.oci_version = j["ociVersion"].get<std::string>();
    if (!j.contains("root")) invalid("root", "missing");
    only_keys(j["root"], "root", {"path", "readonly"});
    std::string root = str(j["root"].value("path", json()), "root.path");
    if (root.empty()) invalid("root.path", "empty");
    s.directory = checked("root.path", root[0] == '/' ? root : bundle + "/" + root, parse_absolute_path);
    if (j["root"].contains("readonly")) s.read_only = boolean(j["root"]["readonly"], "root.readonly");
    if (!j.contains("process")) invalid("process", "missing (the runtime needs process.args)");
    parse_process_object(j["process"], s);
    if (j.contains("hostname")) {
        s.hostname = str(j["hostname"], "hostname");
        if (!s.hostname.empty() && !machine_name_is_valid(s.hostname)) invalid("hostname", "not a valid host name");
    }
    if (j.contains("domainname")) {
        s.oci.domainname = str(j["domainname"], "domainname");
        if (s.oci.domainname.size() > 64 || s.oci.domainname.find_first_of("/\n ") != std::string::npos)
            invalid("domainname", "not a valid domain name");
    }
    if (j.contains("mounts")) parse_mounts(j["mounts"], s);
    if (j.contains("hooks")) parse_hooks(j["hooks"], s);
    if (j.contains("annotations")) s.oci.annotations = string_map(j["annotations"], "annotations");
    if (!j.contains("linux")) invalid("linux", "missing (a Linux container needs linux.namespaces)");
    parse_linux(j["linux"], s);
    const auto has_ns = [&](std::string_view t) {
        return std::ranges::any_of(s.oci.namespaces, [&](const OciNamespace& n) { return n.type == t; });
    };
    if (has_ns("user") && (s.oci.uid_mappings.empty() || s.oci.gid_mappings.empty()) &&
        std::ranges::none_of(s.oci.namespaces, [](const OciNamespace& n) { return n.type == "user" && !n.path.empty(); }))
        invalid("linux.uidMappings", "a new user namespace needs uidMappings and gidMappings");
    if (!has_ns("user") && (!s.oci.uid_mappings.empty() || !s.oci.gid_mappings.empty()))
        invalid("linux.uidMappings", "given without a user namespace");
    if (const OciNamespace* user = oci_user_namespace(s.oci);
        user && !user->path.empty() && (!s.oci.uid_mappings.empty() || !s.oci.gid_mappings.empty()))
        invalid("linux.uidMappings", "given with a user namespace joined by path (its maps are that namespace's)");
    for (const auto& m : s.oci.mounts)
        if (m.idmap && m.uid_mappings.empty() && !has_ns("user"))
            invalid("mounts[].options '" + std::string(m.idmap_recursive ? "ridmap" : "idmap") + "' at " + m.destination,
                    "needs a user namespace or the mount's own uidMappings and gidMappings");
    if ((s.oci.time_monotonic || s.oci.time_boottime) && !has_ns("time"))
        invalid("linux.timeOffsets", "given without a time namespace");
    if (!s.hostname.empty() && !has_ns("uts")) invalid("hostname", "set without a uts namespace");
    if (!s.oci.domainname.empty() && !has_ns("uts")) invalid("domainname", "set without a uts namespace");
    for (const auto& [name, value] : s.oci.sysctl)
        if (!oci_sysctl_allowed(name, has_ns("ipc"), has_ns("network"), has_ns("uts")))
            invalid("linux.sysctl", name + " is not in a namespace of the container's own (runc's rule)");
    return s;
}

OciNamespacePlan plan_oci_namespaces(const SpawnSpec& spec) {
    OciNamespacePlan plan;
    if (!spec.oci.present) {
        plan.clone_flags = CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID;
        return plan;
    }
    for (const auto& kind :
         {std::pair<std::string_view, int>{"uts", CLONE_NEWUTS}, {"ipc", CLONE_NEWIPC}, {"pid", CLONE_NEWPID}}) {
        const int flag = kind.second;
        auto it = std::ranges::find(spec.oci.namespaces, kind.first, &OciNamespace::type);
        if (it == spec.oci.namespaces.end()) {
            if (flag == CLONE_NEWUTS) plan.set_hostname = false;
        } else if (it->path.empty()) {
            plan.clone_flags |= static_cast<unsigned long>(flag);
        } else if (flag == CLONE_NEWPID) {
            plan.pid_path = it->path;
        } else {
            plan.join.emplace_back(flag, it->path);
            if (flag == CLONE_NEWUTS) plan.set_hostname = !spec.hostname.empty();
        }
    }
    return plan;
}

bool oci_sysctl_allowed(std::string_view name, bool own_ipc, bool own_network, bool own_uts) {
    std::string n(name);
    std::replace(n.begin(), n.end(), '/', '.');
    static const std::set<std::string, std::less<>> kIpc = {"kernel.msgmax", "kernel.msgmnb",         "kernel.msgmni",
                                                            "kernel.sem",    "kernel.shmall",         "kernel.shmmax",
                                                            "kernel.shmmni", "kernel.shm_rmid_forced"};
    if (kIpc.contains(n) || n.starts_with("fs.mqueue.")) return own_ipc;
    if (n.starts_with("net.")) return own_network;
    if (n == "kernel.hostname" || n == "kernel.domainname") return own_uts;
    return false;
}

OciResources parse_oci_resources(std::string_view text) { return parse_resources(parse_json(text, "resources")); }

void parse_oci_process(std::string_view text, SpawnSpec& spec) {
    parse_process_object(parse_json(text, "process"), spec);
    spec.oci.present = true;
}

std::optional<std::string> oci_unapplied_field(const SpawnSpec& s, OciFrontEndHandles handles) {
    const OciSpec& o = s.oci;
    if (!o.present) return std::nullopt;
    // process (user, additionalGids, umask, ioPriority, scheduler: applied)
    if (o.capabilities_given && o.uid == 0) {
        if (o.cap_effective != o.cap_bounding || o.cap_permitted != o.cap_bounding)
            return "process.capabilities.effective/permitted (different from bounding)";
        if (o.cap_inheritable) return "process.capabilities.inheritable";
    } else if (o.capabilities_given) {
        // spawn gives a non-root payload its ambient set, within bounding, as its effective,
        // permitted and inheritable sets (the kernel keeps an ambient capability only inside
        // permitted and inheritable). podman's `--user 1000` sends all four empty.
        if (o.cap_effective != o.cap_ambient || o.cap_permitted != o.cap_ambient)
            return "process.capabilities.effective/permitted (different from ambient, for a non-root user)";
        if (o.cap_inheritable & ~o.cap_ambient) return "process.capabilities.inheritable (beyond ambient)";
        if (o.cap_ambient & ~o.cap_bounding) return "process.capabilities.ambient (beyond bounding)";
    }
    if (o.console_size) return "process.consoleSize";
    if (!o.exec_cpu_affinity_initial.empty() || !o.exec_cpu_affinity_final.empty()) return "process.execCPUAffinity";
    // mounts: binds (ro, rbind, private propagation) and tmpfs; spawn's own API file systems
    for (const auto& m : o.mounts) {
        const std::string at = " at " + m.destination;
        if (m.bind()) {
            // Per-mount flags, recursive attributes and propagation: apply_oci_mount_attributes().
            if ((m.flags & ~kOciBindMountFlags) || (m.clear_flags & ~kOciBindMountFlags))
                return "mounts[].options (superblock flags such as sync, dirsync, mand, lazytime on a bind)" + at;
            if (!m.data.empty()) return "mounts[].options '" + m.data + "'" + at;
            if (m.copy_up) return "mounts[].options 'tmpcopyup' (on a bind; only a tmpfs takes it)" + at;
        } else if (m.type == "tmpfs" && !api_mount(m.destination, m.type)) {
            // Per-mount flags, recursive attributes and propagation: apply_oci_mount_attributes().
            if ((m.flags & ~kOciBindMountFlags) || (m.clear_flags & ~kOciBindMountFlags))
                return "mounts[].options (superblock flags such as sync, dirsync, mand, lazytime on a tmpfs)" + at;
            if (m.idmap) return "mounts[].options 'idmap' (on a tmpfs)" + at;
        } else if (!api_mount(m.destination, m.type)) {
            return "mounts[] of type '" + m.type + "'" + at;
        } else if (m.copy_up && m.type != "tmpfs") {
            return "mounts[].options 'tmpcopyup' (on a " + m.type + "; only a tmpfs takes it)" + at;
        }
    }
    if (!o.hooks.empty() && !handles.hooks) return "hooks";
    // linux
    std::set<std::string> types;
    for (const auto& n : o.namespaces) {
        types.insert(n.type);
        // network, user, uts, ipc and pid are joined by path (plan_oci_namespaces for the last three).
        if (!n.path.empty() && n.type != "network" && n.type != "user" && n.type != "uts" && n.type != "ipc" &&
            n.type != "pid")
            return "linux.namespaces[].path for '" + n.type + "'";
        if (n.type == "time") return "linux.namespaces[] of type '" + n.type + "'";
    }
    // Left out, uts, ipc and pid stay the runtime's (plan_oci_namespaces); mount is always new.
    for (const char* always : {"mount"})
        if (!types.contains(always))
            return std::string("linux.namespaces without '") + always + "' (spawn always creates it)";
    if (!o.cgroups_path.empty() && !handles.cgroups) return "linux.cgroupsPath";
    if (o.resources.present && !handles.cgroups) return "linux.resources";
    return std::nullopt;
}

}  // namespace mk::core
