#include "core/oci/state.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/strings.hpp"
#include "core/kernel/cgroup.hpp"
#include "core/machine/exec.hpp"

namespace mk::core {
namespace {

using json = nlohmann::json;

constexpr std::array<std::pair<ContainerStatus, std::string_view>, 5> kStatusNames = {{
    {ContainerStatus::Creating, "creating"},
    {ContainerStatus::Created, "created"},
    {ContainerStatus::Running, "running"},
    {ContainerStatus::Paused, "paused"},
    {ContainerStatus::Stopped, "stopped"},
}};

[[noreturn]] void bad_state(const std::string& why) { throw UsageError("container state file is damaged: " + why); }

std::string read_small(int dir_fd, const char* name, size_t max) {
    UniqueFd fd(openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) return {};
    std::string out;
    char buf[8192];
    ssize_t n;
    while ((n = read(fd.get(), buf, sizeof buf)) > 0) {
        out.append(buf, static_cast<size_t>(n));
        if (out.size() > max) bad_state(std::string(name) + " is larger than its limit");
    }
    return out;
}

// The rest of /proc/PID/stat after the comm field: "S 1 2 ...", so field N is word N-3.
std::optional<std::string_view> after_comm(std::string_view stat) {
    auto close = stat.rfind(')');
    if (close == std::string_view::npos || close + 2 > stat.size()) return std::nullopt;
    return stat.substr(close + 2);
}

}  // namespace

std::string_view to_string(ContainerStatus s) noexcept {
    for (const auto& [v, name] : kStatusNames)
        if (v == s) return name;
    return "unknown";
}

std::optional<ContainerStatus> container_status_from_string(std::string_view s) noexcept {
    for (const auto& [v, name] : kStatusNames)
        if (name == s) return v;
    return std::nullopt;
}

bool oci_id_is_valid(std::string_view id) noexcept {
    if (id.empty() || id.size() > kOciIdMax || id == "." || id == "..") return false;
    return std::ranges::all_of(id, [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '+' ||
               c == '-' || c == '.';
    });
}

std::string state_to_json(const ContainerState& s) {
    json j = {
        {"id", s.id},
        {"pid", s.pid},
        {"pidStart", s.pid_start},
        {"bundle", s.bundle},
        {"rootfs", s.rootfs},
        {"created", s.created},
        {"owner", s.owner},
        {"annotations", s.annotations},
        {"cgroup", s.cgroup},
        {"cgroupRoot", s.cgroup_root},
        {"ownCgroup", s.own_cgroup},
        {"v1Cgroups", s.v1_cgroups},
        {"config", s.config},
    };
    return j.dump();
}

ContainerState state_from_json(std::string_view text) {
    if (text.size() > kOciStateMax) bad_state("larger than 1 MiB");
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) bad_state("not a JSON object");
    ContainerState s;
    try {
        s.id = j.at("id").get<std::string>();
        s.pid = j.at("pid").get<pid_t>();
        s.pid_start = j.at("pidStart").get<uint64_t>();
        s.bundle = j.at("bundle").get<std::string>();
        s.rootfs = j.at("rootfs").get<std::string>();
        s.created = j.at("created").get<std::string>();
        s.owner = j.at("owner").get<std::string>();
        s.annotations = j.at("annotations").get<std::map<std::string, std::string>>();
        s.cgroup = j.at("cgroup").get<std::string>();
        s.cgroup_root = j.at("cgroupRoot").get<std::string>();
        s.own_cgroup = j.at("ownCgroup").get<bool>();
        s.v1_cgroups = j.at("v1Cgroups").get<std::vector<std::string>>();
        s.config = j.at("config").get<std::string>();
    } catch (const json::exception& e) {
        bad_state(e.what());
    }
    if (!oci_id_is_valid(s.id)) bad_state("invalid id");
    if (s.pid < 0) bad_state("negative pid");
    return s;
}

std::string oci_state_json(const ContainerState& s, ContainerStatus status, bool pretty) {
    // runc's field order; "creating" is not a status runc reports: the directory exists, but
    // create has not finished, which runc calls "stopped" too.
    json j = json::object();
    j["ociVersion"] = "1.0.2-dev";
    j["id"] = s.id;
    j["pid"] = status == ContainerStatus::Stopped ? 0 : s.pid;
    j["status"] = std::string(to_string(status));
    j["bundle"] = s.bundle;
    j["rootfs"] = s.rootfs;
    j["created"] = s.created;
    j["owner"] = s.owner;
    if (!s.annotations.empty()) j["annotations"] = s.annotations;
    return pretty ? j.dump(2) : j.dump();
}

std::optional<uint64_t> stat_start_time(std::string_view stat) {
    auto rest = after_comm(stat);
    if (!rest) return std::nullopt;
    // starttime is field 22: word 19 of the rest (field 3 is word 0).
    size_t pos = 0;
    for (int word = 0; word < 19; word++) {
        pos = rest->find(' ', pos);
        if (pos == std::string_view::npos) return std::nullopt;
        pos++;
    }
    uint64_t v = 0;
    size_t digits = 0;
    for (; pos < rest->size() && (*rest)[pos] >= '0' && (*rest)[pos] <= '9'; pos++, digits++) {
        if (v > (UINT64_MAX - 9) / 10) return std::nullopt;
        v = v * 10 + static_cast<uint64_t>((*rest)[pos] - '0');
    }
    if (digits == 0) return std::nullopt;
    return v;
}

char stat_state(std::string_view stat) {
    auto rest = after_comm(stat);
    return rest && !rest->empty() ? (*rest)[0] : 0;
}

ContainerStatus decide_status(const ProcessFacts& f) noexcept {
    if (!f.alive || f.zombie) return ContainerStatus::Stopped;
    if (f.gate_present) return ContainerStatus::Created;
    if (f.frozen) return ContainerStatus::Paused;
    return ContainerStatus::Running;
}

std::string oci_cgroup_path(std::string_view cgroups_path, bool systemd, std::string_view id) {
    auto no_dotdot = [](std::string_view p) {
        for (auto part : split(p, '/'))
            if (part == "..") throw UsageError("linux.cgroupsPath must not contain '..'");
    };
    if (systemd) {
        std::string slice = "system.slice", prefix = "machrun", name(id);
        if (!cgroups_path.empty()) {
            auto parts = split(cgroups_path, ':');
            if (parts.size() != 3) throw UsageError("linux.cgroupsPath must be 'slice:prefix:name' with --systemd-cgroup");
            if (!parts[0].empty()) slice = parts[0];
            prefix = parts[1];
            if (!parts[2].empty()) name = parts[2];
        }
        auto slice_path = slice_to_path(slice);
        if (!slice_path) throw UsageError("linux.cgroupsPath names an invalid slice '" + slice + "'");
        std::string unit = prefix.empty() ? name : prefix + "-" + name;
        if (name.ends_with(".slice")) unit = name;  // runc: a slice as the name is the container's group itself
        else unit += ".scope";
        if (unit.find('/') != std::string::npos) throw UsageError("linux.cgroupsPath's name must not contain '/'");
        return *slice_path + "/" + unit;
    }
    if (cgroups_path.empty()) return "/machrun/" + std::string(id);
    if (cgroups_path[0] != '/')
        throw UsageError("linux.cgroupsPath must be absolute (or use --systemd-cgroup for slice:prefix:name)");
    no_dotdot(cgroups_path);
    std::string p(cgroups_path);
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    if (p == "/") throw UsageError("linux.cgroupsPath must not be the root cgroup");
    return p;
}

std::string rfc3339_now() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    tm t{};
    gmtime_r(&ts.tv_sec, &t);
    char buf[64];
    size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &t);
    snprintf(buf + n, sizeof buf - n, ".%09ldZ", ts.tv_nsec);
    return buf;
}

OciStateDir::OciStateDir(std::string root) : root_(std::move(root)) {
    if (root_.empty() || root_[0] != '/') throw UsageError("--root must be an absolute path");
    while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
    // The state names host pids and config.json, which may carry secrets in its environment.
    // Missing parents are made too, as runc's MkdirAll (containerd's shim passes
    // /run/containerd/runc/NAMESPACE before anything made /run/containerd/runc).
    for (size_t slash = root_.find('/', 1); slash != std::string::npos; slash = root_.find('/', slash + 1))
        if (mkdir(root_.substr(0, slash).c_str(), 0700) < 0 && errno != EEXIST)
            throw_last_error("cannot create the runtime root " + root_);
    if (mkdir(root_.c_str(), 0700) < 0 && errno != EEXIST) throw_last_error("cannot create the runtime root " + root_);
    root_fd_.reset(open(root_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root_fd_) throw_last_error("cannot open the runtime root " + root_);
}

ContainerLock::~ContainerLock() {
    if (!fd_) return;
    struct flock fl {};
    fl.l_type = F_UNLCK;
    fl.l_whence = SEEK_SET;
    fcntl(fd_.get(), F_OFD_SETLK, &fl);
}

ContainerLock OciStateDir::create(const std::string& id) const {
    if (!oci_id_is_valid(id))
        throw UsageError("invalid container id '" + id + "': use letters, digits, '_', '+', '-' and '.'");
    if (mkdirat(root_fd_.get(), id.c_str(), 0711) < 0) {
        if (errno == EEXIST) throw UsageError("container '" + id + "' already exists; delete it first or pick another id");
        throw_last_error("cannot create the state directory of " + id);
    }
    return lock(id);
}

ContainerLock OciStateDir::lock(const std::string& id) const {
    if (!oci_id_is_valid(id)) throw UsageError("invalid container id '" + id + "'");
    UniqueFd dir(openat(root_fd_.get(), id.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir) {
        if (errno == ENOENT) throw UsageError("container '" + id + "' does not exist");
        throw_last_error("cannot open the state of " + id);
    }
    UniqueFd fd(openat(dir.get(), "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) throw_last_error("cannot open the lock of " + id);
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (retry_eintr([&] { return fcntl(fd.get(), F_OFD_SETLKW, &fl); }) < 0) throw_last_error("cannot lock container " + id);
    // A `delete` that held the lock before us removed the directory: our file is unlinked.
    struct stat st;
    if (fstat(fd.get(), &st) < 0) throw_last_error("fstat");
    if (st.st_nlink == 0) throw UsageError("container '" + id + "' does not exist");
    return ContainerLock(std::move(fd));
}

void OciStateDir::write(const ContainerState& s) const {
    std::string text = state_to_json(s);
    UniqueFd dir(openat(root_fd_.get(), s.id.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir) throw_last_error("cannot open the state of " + s.id);
    UniqueFd fd(openat(dir.get(), "state.json.new", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) throw_last_error("cannot write the state of " + s.id);
    write_all_or_throw(fd.get(), text, "cannot write the state of " + s.id);
    if (renameat(dir.get(), "state.json.new", dir.get(), "state.json") < 0)
        throw_last_error("cannot write the state of " + s.id);
}

ContainerState OciStateDir::read(const std::string& id) const {
    if (!oci_id_is_valid(id)) throw UsageError("invalid container id '" + id + "'");
    UniqueFd dir(openat(root_fd_.get(), id.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir) {
        if (errno == ENOENT) throw UsageError("container '" + id + "' does not exist");
        throw_last_error("cannot open the state of " + id);
    }
    std::string text = read_small(dir.get(), "state.json", kOciStateMax);
    if (text.empty())
        throw UsageError("container '" + id + "' does not exist (its creation did not finish; delete --force cleans up)");
    ContainerState s = state_from_json(text);
    if (s.id != id) bad_state("it names another container");
    return s;
}

bool OciStateDir::exists(const std::string& id) const {
    struct stat st;
    return oci_id_is_valid(id) && fstatat(root_fd_.get(), id.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> OciStateDir::ids() const {
    std::vector<std::string> out;
    int fd = openat(root_fd_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) throw_last_error("cannot list " + root_);
    DIR* d = fdopendir(fd);
    if (!d) {
        close(fd);
        throw_last_error("cannot list " + root_);
    }
    while (dirent* e = readdir(d))
        if (e->d_type == DT_DIR && oci_id_is_valid(e->d_name)) out.emplace_back(e->d_name);
    closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

void OciStateDir::remove(const std::string& id) const {
    if (!oci_id_is_valid(id)) throw UsageError("invalid container id '" + id + "'");
    UniqueFd dir(openat(root_fd_.get(), id.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir) return;
    for (const char* f : {"state.json", "state.json.new", "exec.fifo", "lock"})
        if (unlinkat(dir.get(), f, 0) < 0 && errno != ENOENT)
            throw_last_error(std::string("cannot remove ") + f + " of " + id);
    if (unlinkat(root_fd_.get(), id.c_str(), AT_REMOVEDIR) < 0 && errno != ENOENT)
        throw_last_error("cannot remove the state directory of " + id);
}

ContainerStatus OciStateDir::status(const ContainerState& s) const {
    ProcessFacts f;
    if (s.pid > 0) {
        UniqueFd fd(open(("/proc/" + std::to_string(s.pid) + "/stat").c_str(), O_RDONLY | O_CLOEXEC));
        char buf[1024];
        ssize_t n = fd ? ::read(fd.get(), buf, sizeof buf - 1) : -1;
        if (n > 0) {
            std::string_view text(buf, static_cast<size_t>(n));
            f.alive = stat_start_time(text) == s.pid_start;
            char st = stat_state(text);
            f.zombie = st == 'Z' || st == 'X';
        }
    }
    struct stat st;
    f.gate_present = fstatat(root_fd_.get(), (s.id + "/exec.fifo").c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (!s.cgroup.empty() && f.alive) {
        Machine m;
        m.name = s.id;
        m.cgroup_path = s.cgroup;
        f.frozen = machine_freezer_state(m, s.cgroup_root) == "frozen";
    }
    return decide_status(f);
}

}  // namespace mk::core
