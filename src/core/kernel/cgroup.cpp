#include "core/base/rm_rf.hpp"
#include "core/kernel/cgroup.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/base/error.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::core {
namespace {

bool is_dir(const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool file_exists(const std::string& p) { return ::access(p.c_str(), F_OK) == 0; }

std::string read_file(const std::string& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// Writes `value` to a cgroup attribute file; O_TRUNC|O_CREAT so a temp dir stands in for cgroupfs.
void write_attr(const std::string& path, std::string_view value) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_CREAT | O_TRUNC, 0644));
    if (!fd) throw_last_error("open " + path);
    if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size()))
        throw_last_error("write '" + std::string(value) + "' to " + path);
}

bool has_word(std::string_view text, std::string_view word) {
    size_t pos = 0;
    while ((pos = text.find(word, pos)) != std::string_view::npos) {
        bool start = pos == 0 || text[pos - 1] == ' ' || text[pos - 1] == '\n';
        size_t end = pos + word.size();
        bool stop = end == text.size() || text[end] == ' ' || text[end] == '\n';
        if (start && stop) return true;
        pos = end;
    }
    return false;
}

std::vector<pid_t> read_procs(const std::string& dir) {
    std::vector<pid_t> v;
    std::ifstream f(dir + "/cgroup.procs");
    pid_t p;
    while (f >> p) v.push_back(p);
    return v;
}

void collect_procs(const std::string& dir, std::vector<pid_t>& out, int depth = 0) {
    if (depth > 64) return;  // bounded: a delegated subtree is the guest's, do not let it make us recurse forever
    for (pid_t p : read_procs(dir)) out.push_back(p);
    DIR* d = ::opendir(dir.c_str());
    if (!d) return;
    while (dirent* de = ::readdir(d)) {
        if (de->d_type != DT_DIR || de->d_name[0] == '.') continue;
        collect_procs(dir + "/" + de->d_name, out, depth + 1);
    }
    ::closedir(d);
}

// rmdir children first (the one remover's cgroup mode); returns false if something stayed.
bool remove_tree(const std::string& dir) { return rm_rf_at_noexcept(AT_FDCWD, dir, kRemoveCgroup) == 0; }

// The device-cgroup rule for one DeviceAllow entry, or "" if the node does not exist.
std::string device_rule(const DeviceAllow& d) {
    std::string perms = d.perms.empty() ? "rwm" : d.perms;
    auto from_proc_devices = [&](char type, std::string_view name) -> std::string {
        std::ifstream f("/proc/devices");
        std::string line;
        bool in_section = false;
        while (std::getline(f, line)) {
            if (line == "Character devices:") {
                in_section = type == 'c';
                continue;
            }
            if (line == "Block devices:") {
                in_section = type == 'b';
                continue;
            }
            if (!in_section) continue;
            std::istringstream ls(line);
            unsigned major;
            std::string n;
            if (ls >> major >> n && n == name) return std::string(1, type) + " " + std::to_string(major) + ":* " + perms;
        }
        return "";
    };
    if (d.path.starts_with("char-")) return from_proc_devices('c', std::string_view(d.path).substr(5));
    if (d.path.starts_with("block-")) return from_proc_devices('b', std::string_view(d.path).substr(6));
    struct stat st {};
    if (::stat(d.path.c_str(), &st) < 0) return "";
    char type = S_ISCHR(st.st_mode) ? 'c' : S_ISBLK(st.st_mode) ? 'b' : 0;
    if (!type) return "";
    return std::string(1, type) + " " + std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev)) + " " +
           perms;
}

}  // namespace

std::optional<std::string> slice_to_path(std::string_view slice) {
    if (slice == "-.slice") return std::string();
    if (!slice.ends_with(".slice") || slice.size() <= 6) return std::nullopt;
    std::string_view prefix = slice.substr(0, slice.size() - 6);
    if (prefix.front() == '-' || prefix.back() == '-' || prefix.find("--") != std::string_view::npos) return std::nullopt;
    for (char c : prefix)
        if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':' || c == '\\'))
            return std::nullopt;
    std::string path;
    size_t pos = 0;
    for (;;) {
        size_t dash = prefix.find('-', pos);
        path += "/" + std::string(prefix.substr(0, dash)) + ".slice";
        if (dash == std::string_view::npos) break;
        pos = dash + 1;
    }
    return path;
}

std::optional<std::string> cgroup_path_from_proc(std::string_view text) {
    std::optional<std::string> unified, named;
    while (!text.empty()) {
        auto nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        auto c1 = line.find(':');
        if (c1 == std::string_view::npos) continue;
        auto c2 = line.find(':', c1 + 1);
        if (c2 == std::string_view::npos) continue;
        std::string_view id = line.substr(0, c1), ctrl = line.substr(c1 + 1, c2 - c1 - 1), path = line.substr(c2 + 1);
        if (id == "0" && ctrl.empty()) unified = std::string(path);
        else if (ctrl == "name=systemd") named = std::string(path);
    }
    if (unified && *unified != "/") return unified;
    if (named) return named;
    return unified;
}

namespace {

// The first .scope or .service component of `path`, passing over slices and what `pass` accepts.
// Any other component ends the search when `strict`, else it is passed over too.
template <typename Pass>
std::optional<std::string> first_unit_component(std::string_view path, Pass pass, bool strict) {
    while (!path.empty()) {
        while (path.starts_with('/')) path.remove_prefix(1);
        auto slash = path.find('/');
        std::string_view comp = path.substr(0, slash);
        path.remove_prefix(slash == std::string_view::npos ? path.size() : slash);
        if (comp.empty()) break;
        if (comp.ends_with(".slice") || pass(comp)) continue;
        if ((comp.ends_with(".scope") || comp.ends_with(".service")) && comp.size() > 6) return std::string(comp);
        if (strict) return std::nullopt;
    }
    return std::nullopt;
}

}  // namespace

std::optional<std::string> unit_from_cgroup_path(std::string_view path) {
    return first_unit_component(
        path, [](std::string_view) { return false; }, true);
}

std::optional<std::string> user_unit_from_cgroup_path(std::string_view path) {
    return first_unit_component(
        path, [](std::string_view c) { return c.starts_with("user@") && c.ends_with(".service"); }, false);
}

std::optional<std::string> pid_cgroup_path(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/cgroup");
    if (!f) return std::nullopt;
    std::stringstream ss;
    ss << f.rdbuf();
    return cgroup_path_from_proc(ss.str());
}

CgroupfsBackend::CgroupfsBackend(std::string root) : root_(std::move(root)) {
    while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
    if (file_exists(root_ + "/cgroup.controllers")) {
        unified_ = root_;
    } else {
        if (file_exists(root_ + "/unified/cgroup.controllers")) unified_ = root_ + "/unified";
        if (is_dir(root_ + "/systemd")) named_ = root_ + "/systemd";
    }
    if (unified_.empty() && named_.empty()) throw_errno(ENOMEDIUM, "no cgroup2 or name=systemd hierarchy under " + root_);
}

std::string CgroupfsBackend::v1(std::string_view controller) const {
    if (unified_ == root_) return "";
    std::string p = root_ + "/" + std::string(controller);
    if (is_dir(p)) return p;
    if (controller == "cpu" && is_dir(root_ + "/cpu,cpuacct")) return root_ + "/cpu,cpuacct";
    return "";
}

std::vector<std::string> CgroupfsBackend::hierarchies() const {
    std::vector<std::string> v;
    if (!unified_.empty()) v.push_back(unified_);
    if (!named_.empty()) v.push_back(named_);
    for (const char* c : {"memory", "pids", "cpu", "devices"})
        if (auto p = v1(c); !p.empty()) v.push_back(p);
    return v;
}

ScopeStart CgroupfsBackend::start_scope(const std::string& unit, pid_t leader, const ScopeProperties& props) {
    if (unit.empty() || unit.find('/') != std::string::npos || unit.starts_with(".") || !unit.ends_with(".scope"))
        throw_errno(EINVAL, "invalid scope name '" + unit + "'");
    auto slice_path = slice_to_path(props.slice);
    if (!slice_path) throw_errno(EINVAL, "invalid slice name '" + props.slice + "'");
    const std::string rel = *slice_path + "/" + unit;

    struct Group {
        std::string root;
        std::vector<std::pair<std::string, std::string>> attrs;  // written before the leader moves in
    };
    std::vector<Group> groups;
    Group v2{unified_, {}};
    const bool closed = props.device_policy == "closed" || props.device_policy == "strict" ||
                        (!props.device_allow.empty() && props.device_policy != "auto");
    std::vector<std::string> device_rules;
    if (closed || (props.device_policy == "auto" && !props.device_allow.empty())) {
        if (props.device_policy != "strict")
            for (const char* p :
                 {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx"})
                if (auto r = device_rule({p, "rwm"}); !r.empty()) device_rules.push_back(r);
        for (const auto& d : props.device_allow)
            if (auto r = device_rule(d); !r.empty()) device_rules.push_back(r);
    }

    if (!unified_.empty()) {
        // cgroup2 limits only where the parent offers the controller (none on this hybrid host).
        std::string parent = unified_ + *slice_path;
        std::string offered = read_file((is_dir(parent) ? parent : unified_) + "/cgroup.controllers");
        if (props.memory_max && has_word(offered, "memory"))
            v2.attrs.emplace_back("memory.max", std::to_string(*props.memory_max));
        if (props.tasks_max && has_word(offered, "pids"))
            v2.attrs.emplace_back("pids.max", std::to_string(*props.tasks_max));
        if (props.cpu_weight && has_word(offered, "cpu"))
            v2.attrs.emplace_back("cpu.weight", std::to_string(*props.cpu_weight));
        if (props.cpu_quota_per_sec_usec && has_word(offered, "cpu"))
            v2.attrs.emplace_back("cpu.max", std::to_string(*props.cpu_quota_per_sec_usec / 10) + " 100000");
        groups.push_back(std::move(v2));
    }
    if (!named_.empty()) groups.push_back({named_, {}});
    if (unified_ != root_) {
        if (auto p = v1("memory"); !p.empty() && props.memory_max)
            groups.push_back({p, {{"memory.limit_in_bytes", std::to_string(*props.memory_max)}}});
        if (auto p = v1("pids"); !p.empty() && props.tasks_max)
            groups.push_back({p, {{"pids.max", std::to_string(*props.tasks_max)}}});
        if (auto p = v1("cpu"); !p.empty() && (props.cpu_weight || props.cpu_quota_per_sec_usec)) {
            Group g{p, {}};
            if (props.cpu_weight) {
                // systemd's cgroup_cpu_weight_to_shares(): weight 100 = 1024 shares, clamped to [2, 262144].
                uint64_t shares = std::clamp<uint64_t>(*props.cpu_weight * 1024 / 100, 2, 262144);
                g.attrs.emplace_back("cpu.shares", std::to_string(shares));
            }
            if (props.cpu_quota_per_sec_usec) {
                g.attrs.emplace_back("cpu.cfs_period_us", "100000");
                g.attrs.emplace_back("cpu.cfs_quota_us",
                                     std::to_string(std::max<uint64_t>(*props.cpu_quota_per_sec_usec / 10, 1000)));
            }
            groups.push_back(std::move(g));
        }
        if (auto p = v1("devices"); !p.empty() && !device_rules.empty()) {
            Group g{p, {{"devices.deny", "a"}}};
            for (const auto& r : device_rules) g.attrs.emplace_back("devices.allow", r);
            groups.push_back(std::move(g));
        }
    }

    std::vector<std::string> created;  // scope dirs made so far, for the rollback
    try {
        for (const auto& g : groups) {
            // Slices: mkdir each level (EEXIST is fine, they are shared).
            std::string dir = g.root;
            size_t pos = 1;
            while (pos <= slice_path->size()) {
                size_t next = slice_path->find('/', pos);
                dir = g.root + slice_path->substr(0, next);
                if (::mkdir(dir.c_str(), 0755) < 0 && errno != EEXIST) throw_last_error("mkdir " + dir);
                if (next == std::string::npos) break;
                pos = next + 1;
            }
            std::string scope = g.root + rel;
            if (::mkdir(scope.c_str(), 0755) < 0) {
                if (errno == EEXIST) throw_errno(EEXIST, "cgroup " + scope + " already exists");
                throw_last_error("mkdir " + scope);
            }
            created.push_back(scope);
            for (const auto& [file, value] : g.attrs) write_attr(scope + "/" + file, value);
        }
        for (const auto& scope : created) write_attr(scope + "/cgroup.procs", std::to_string(leader));
    } catch (...) {
        for (const auto& scope : created) {
            // Move the leader back out before rmdir, or the group stays busy.
            std::string root = scope.substr(0, scope.size() - rel.size());
            try {
                write_attr(root + "/cgroup.procs", std::to_string(leader));
            } catch (...) {
            }
            remove_tree(scope);
        }
        throw;
    }
    return {rel, ""};
}

size_t CgroupfsBackend::kill(const std::string& cgroup_path, int sig) {
    size_t n = 0;
    for (pid_t p : pids(cgroup_path))
        if (p > 1 && ::kill(p, sig) == 0) n++;
    return n;
}

std::vector<pid_t> CgroupfsBackend::pids(const std::string& cgroup_path) {
    std::vector<pid_t> v;
    if (cgroup_path.empty() || cgroup_path == "/") return v;  // never the whole tree
    collect_procs(main() + cgroup_path, v);
    return v;
}

std::vector<std::string> CgroupfsBackend::dirs(const std::string& cgroup_path, const std::string& unit_path) {
    std::vector<std::string> v;
    if (unit_path.empty() || unit_path == "/" || !cgroup_path.starts_with(unit_path)) return v;
    for (const auto& h : hierarchies()) {
        std::string p = cgroup_path;
        while (p.size() > unit_path.size() && !is_dir(h + p)) p = p.substr(0, p.rfind('/'));
        if (is_dir(h + p)) v.push_back(h + p);
    }
    return v;
}

bool CgroupfsBackend::exists(const std::string& cgroup_path) { return is_dir(main() + cgroup_path); }

void CgroupfsBackend::remove_scope(const std::string& cgroup_path) {
    if (cgroup_path.empty() || cgroup_path == "/" || cgroup_path.find("..") != std::string::npos)
        throw_errno(EINVAL, "refusing to remove cgroup '" + cgroup_path + "'");
    using namespace std::chrono;
    const auto deadline = steady_clock::now() + seconds(2);
    for (;;) {
        std::vector<pid_t> left;
        for (const auto& h : hierarchies()) collect_procs(h + cgroup_path, left);
        if (left.empty()) break;
        for (pid_t p : left)
            if (p > 1) ::kill(p, SIGKILL);
        if (steady_clock::now() > deadline) throw_errno(EBUSY, "processes stay in cgroup " + cgroup_path);
        std::this_thread::sleep_for(milliseconds(5));
    }
    bool ok = true;
    for (const auto& h : hierarchies()) {
        std::string dir = h + cgroup_path;
        // rmdir may see EBUSY briefly while exiting tasks are still being unlinked from the group.
        for (int i = 0; i < 200 && !remove_tree(dir); i++) std::this_thread::sleep_for(milliseconds(5));
        if (is_dir(dir)) ok = false;
        // Empty parent slices go too: we made them and nothing else on this host manages them.
        std::string parent = dir.substr(0, dir.rfind('/'));
        while (parent.size() > h.size() && parent.ends_with(".slice") && ::rmdir(parent.c_str()) == 0)
            parent = parent.substr(0, parent.rfind('/'));
    }
    if (!ok) throw_errno(EBUSY, "could not remove cgroup " + cgroup_path);
}

}  // namespace mk::core
