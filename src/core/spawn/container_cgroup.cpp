#include "core/base/rm_rf.hpp"
#include "core/spawn/container_cgroup.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/mount.h>

#include <cerrno>

#include "core/base/error.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/io.hpp"
#include "core/base/strings.hpp"
#include "core/kernel/mount.hpp"
#include "core/spawn/option_values.hpp"

namespace mk::core {
namespace {

void mkdir_p(const std::string& path, std::vector<std::string>* created) {
    size_t i = 1;
    while (i <= path.size()) {
        size_t j = path.find('/', i);
        if (j == std::string::npos) j = path.size();
        std::string sub = path.substr(0, j);
        if (mkdir(sub.c_str(), 0755) == 0) {
            if (created) created->push_back(sub);
        } else if (errno != EEXIST) {
            throw_last_error("cannot create cgroup " + sub);
        }
        i = j + 1;
    }
}

void write_pid(const std::string& dir, pid_t pid) {
    UniqueFd fd(open((dir + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) throw_last_error("cannot open " + dir + "/cgroup.procs");
    std::string s = std::to_string(pid);
    if (write(fd.get(), s.data(), s.size()) < 0) throw_last_error("cannot move the container into " + dir);
}

}  // namespace

CgroupLayout parse_cgroup_layout(std::string_view mountinfo) {
    CgroupLayout l;
    bool top_is_cgroup2 = false, top_is_tmpfs = false, has_unified = false;
    for (auto line : split(mountinfo, '\n')) {
        // "36 25 0:31 / /sys/fs/cgroup/memory rw,... shared:15 - cgroup cgroup rw,memory"
        size_t dash = line.find(" - ");
        if (dash == std::string_view::npos) continue;
        auto left = split(line.substr(0, dash), ' ');
        auto right = split(line.substr(dash + 3), ' ');
        if (left.size() < 5 || right.size() < 3) continue;
        std::string_view mp = left[4], fstype = right[0], opts = right[2];
        if (mp == "/sys/fs/cgroup") {
            top_is_cgroup2 = fstype == "cgroup2";
            top_is_tmpfs = fstype == "tmpfs";
            continue;
        }
        if (!mp.starts_with("/sys/fs/cgroup/")) continue;
        std::string_view name = mp.substr(15);
        if (name.find('/') != std::string_view::npos) continue;
        if (fstype == "cgroup2" && name == "unified") {
            has_unified = true;
        } else if (fstype == "cgroup") {
            std::string controllers;
            for (auto o : split(opts, ',')) {
                if (o == "rw" || o == "ro" || o.starts_with("release_agent=") || o == "clone_children" || o == "noprefix" ||
                    o == "xattr" || o == "nsroot" || o == "cpuset_v2_mode" || o.starts_with("nsroot="))
                    continue;
                if (!controllers.empty()) controllers += ',';
                controllers += o;
            }
            l.v1.push_back({std::string(name), controllers});
        }
    }
    if (top_is_cgroup2) l.mode = CgroupMode::Unified;
    else if (top_is_tmpfs && has_unified) l.mode = CgroupMode::Hybrid, l.unified_dir = "/unified";
    else if (top_is_tmpfs && !l.v1.empty()) l.mode = CgroupMode::Legacy;
    return l;
}

CgroupLayout detect_cgroup_layout() {
    CgroupLayout l = parse_cgroup_layout(read_host_file("/proc/self/mountinfo", 4 << 20).value_or(""));
    if (l.mode == CgroupMode::Hybrid || l.mode == CgroupMode::Legacy) {
        if (DIR* d = opendir("/sys/fs/cgroup")) {
            while (dirent* e = readdir(d)) {
                if (e->d_type != DT_LNK) continue;
                char target[256];
                ssize_t n = readlinkat(dirfd(d), e->d_name, target, sizeof target - 1);
                if (n <= 0) continue;
                l.symlinks.emplace_back(e->d_name, std::string(target, static_cast<size_t>(n)));
            }
            closedir(d);
        }
    }
    return l;
}

GuestCgroupPlan plan_guest_cgroups(const CgroupLayout& host, std::optional<unsigned> guest_systemd,
                                   std::optional<bool> unified_override) {
    GuestCgroupPlan plan;
    if (host.mode == CgroupMode::Unified) {
        // Nothing else to give: a v1 layout would need the controllers the host keeps on cgroup2.
        plan.layout = host;
        return plan;
    }
    const bool needs_cgroup2 = guest_systemd && *guest_systemd >= kSystemdUnifiedOnlySince;
    if (unified_override == false && needs_cgroup2)
        throw UsageError("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=0 asks for cgroup v1, but the guest's systemd " +
                         std::to_string(*guest_systemd) + " boots only on cgroup2 (v1 support ended in systemd " +
                         std::to_string(kSystemdUnifiedOnlySince) + "); unset it");
    bool cgroup2_view;
    if (unified_override) cgroup2_view = *unified_override;
    else if (needs_cgroup2) cgroup2_view = true;
    else cgroup2_view = false;  // v1-capable systemd keeps the host's layout: docs/architecture.md says why

    if (!cgroup2_view) {
        plan.layout = host;
        if (host.mode == CgroupMode::Hybrid && guest_systemd && *guest_systemd < kSystemdHybridSince) {
            // nspawn's legacy view: such a systemd does not know /sys/fs/cgroup/unified.
            plan.layout.mode = CgroupMode::Legacy;
            plan.layout.unified_dir.clear();
        }
        return plan;
    }
    plan.layout.mode = CgroupMode::Unified;
    plan.v1_host = true;
    if (host.mode == CgroupMode::Hybrid) plan.layout.unified_dir = host.unified_dir;
    else plan.own_cgroup2 = true;  // Legacy, or no cgroups mounted at all: spawn mounts cgroup2 itself
    return plan;
}

std::optional<bool> parse_unified_override(const char* value, std::string_view var) {
    if (!value || !*value) return std::nullopt;
    try {
        return parse_boolean(value);
    } catch (const std::exception&) {
        throw UsageError("$" + std::string(var) + "=" + value + " is not a boolean; use 1 (cgroup2) or 0 (cgroup v1)");
    }
}

std::string no_controllers_notice(std::string_view cgroup2_controllers) {
    std::string have;
    for (auto c : split(cgroup2_controllers, ' ')) {
        while (!c.empty() && (c.back() == '\n' || c.back() == ' ')) c.remove_suffix(1);
        if (c.empty()) continue;
        if (!have.empty()) have += ' ';
        have += c;
    }
    return "spawn: the guest gets a cgroup2 tree; this host keeps its resource controllers on cgroup v1, so it has " +
           (have.empty() ? std::string("none") : "only " + have) + " to delegate";
}

UniqueFd mount_own_cgroup2() {
    return make_fs_mount("cgroup2", {}, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
}

ContainerCgroup::ContainerCgroup(const CgroupLayout& layout, std::string path, std::string root, UniqueFd own_unified)
    : own_unified_(std::move(own_unified)) {
    try {
        auto create = [&](const std::string& hier) {
            std::string dir = hier + path;
            // Record the slice separately: other machines may share it, so it is removed only if empty.
            std::vector<std::string> made;
            mkdir_p(dir, &made);
            for (auto& m : made)
                if (m != dir) slices_.push_back(m);
            // The leaf is the machine's own even if a previous run left it behind: the caller holds
            // the machine name, so nobody else may be using it.
            dirs_.push_back(dir);
            return dir;
        };
        if (own_unified_) unified_dir_ = create("/proc/self/fd/" + std::to_string(own_unified_.get()));
        else if (layout.mode == CgroupMode::Unified || layout.mode == CgroupMode::Hybrid)
            unified_dir_ = create(root + layout.unified_dir);
        if (layout.mode == CgroupMode::Hybrid || layout.mode == CgroupMode::Legacy)
            for (const auto& h : layout.v1)
                if (h.options == "name=systemd") systemd_dir_ = create(root + "/" + h.name);
        if (!unified_dir_.empty()) {
            unified_fd_.reset(open(unified_dir_.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC));
            if (!unified_fd_) throw_last_error("cannot open " + unified_dir_);
        }
    } catch (...) {
        remove();
        throw;
    }
}

ContainerCgroup::~ContainerCgroup() {
    remove();
    reaper_pipe_.reset();
    if (reaper_ > 0) retry_eintr([&] { return waitpid(reaper_, nullptr, 0); });
}

void ContainerCgroup::arm_reaper() {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) throw_last_error("pipe");
    UniqueFd rd(p[0]);
    reaper_pipe_.reset(p[1]);
    pid_t pid = fork();
    if (pid < 0) throw_last_error("fork");
    if (pid == 0) {
        prctl(PR_SET_NAME, "spawn-reaper", 0, 0, 0);
        for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU, SIGPIPE}) signal(sig, SIG_IGN);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        int keep = rd.get();
        reaper_pipe_.reset();
        for (int fd = 3; fd < 1024; fd++)
            if (fd != keep && fd != own_unified_.get()) close(fd);
        char c;
        while (retry_eintr([&] { return read(keep, &c, 1); }) > 0) {
        }
        // The container's processes die with spawn (parent-death signal); give them a moment.
        for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it)
            for (int i = 0; i < 10 && access(it->c_str(), F_OK) == 0; i++) {
                remove_tree(*it);
                usleep(50000);
            }
        for (auto it = slices_.rbegin(); it != slices_.rend(); ++it) rmdir(it->c_str());
        _exit(0);
    }
    reaper_ = pid;
}

void ContainerCgroup::attach(pid_t pid, bool unified_too) const {
    if (!systemd_dir_.empty()) write_pid(systemd_dir_, pid);
    if (unified_too && !unified_dir_.empty()) write_pid(unified_dir_, pid);
}

void chown_cgroup_dir(const std::string& dir, uid_t uid, gid_t gid) {
    UniqueFd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) throw_last_error("cannot open " + dir);
    if (fchown(fd.get(), uid, gid) < 0) throw_last_error("cannot delegate " + dir);
    DIR* d = fdopendir(dup(fd.get()));
    if (!d) throw_last_error("cannot list " + dir);
    while (dirent* e = readdir(d))
        if (e->d_type == DT_REG) fchownat(dirfd(d), e->d_name, uid, gid, AT_SYMLINK_NOFOLLOW);
    closedir(d);
}

void ContainerCgroup::delegate_to(uid_t uid, gid_t gid) const {
    for (const auto& dir : dirs_) chown_cgroup_dir(dir, uid, gid);
}

void ContainerCgroup::remove() noexcept {
    unified_fd_.reset();
    for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) remove_tree(*it);
    for (auto it = slices_.rbegin(); it != slices_.rend(); ++it) rmdir(it->c_str());  // EBUSY: still in use
    dirs_.clear();
    slices_.clear();
}

void ContainerCgroup::remove_tree(const std::string& dir) const noexcept {
    remove_cgroup_tree(dir);
    if (!remover_ || access(dir.c_str(), F_OK) != 0) return;
    try {
        remover_(dir);
    } catch (...) {
    }
}

void remove_cgroup_tree(const std::string& dir) noexcept { (void)rm_rf_at_noexcept(AT_FDCWD, dir, kRemoveCgroup); }

}  // namespace mk::core
