#include "core/criu/checkpoint.hpp"

#include <algorithm>
#include <dirent.h>
#include <fcntl.h>
#include <linux/rtnetlink.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/base/rm_rf.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/names.hpp"
#include "core/kernel/netlink.hpp"
#include "core/spawn/guest_systemd.hpp"
#include "core/spawn/network_plan.hpp"

namespace mk::core::criu {

Version checked_version(const CriuCommand& cmd, const Response& resp, bool run_check);

namespace {

constexpr const char* kDumpLog = "dump.log";
constexpr const char* kRestoreLog = "restore.log";
constexpr size_t kMaxMountinfo = 4 << 20;

bool version_less(const Version& a, const Version& b) {
    if (a.major != b.major) return a.major < b.major;
    if (a.minor != b.minor) return a.minor < b.minor;
    return a.sublevel < b.sublevel;
}

std::vector<MountInfo> mountinfo_of(const std::string& pid) {
    auto text = read_host_file("/proc/" + pid + "/mountinfo", kMaxMountinfo);
    if (!text) throw_errno(ESRCH, "read the mounts of process " + pid);
    return parse_mountinfo(*text);
}

ino_t ns_inode(const std::string& pid, const char* ns) {
    struct stat st;
    std::string path = "/proc/" + pid + "/ns/" + ns;
    check(stat(path.c_str(), &st), "stat " + path);
    return st.st_ino;
}

// criu's own words for a failure: the first "Error (...)" line of its log (the cause; later ones
// are the fallout, ending in "Dumping FAILED."), without the timestamp.
// Its rlimit complaint is logged as an error but is harmless (criu runs on), so it is skipped.
std::string last_log_error(int dir_fd, const char* log) {
    UniqueFd fd(openat(dir_fd, log, O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) return {};
    struct stat st;
    if (fstat(fd.get(), &st) < 0) return {};
    off_t start = st.st_size > (256 << 10) ? st.st_size - (256 << 10) : 0;
    std::string text(static_cast<size_t>(st.st_size - start), '\0');
    ssize_t n = pread(fd.get(), text.data(), text.size(), start);
    if (n <= 0) return {};
    text.resize(static_cast<size_t>(n));
    std::string found;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        pos = nl == std::string::npos ? text.size() : nl + 1;
        size_t e = line.find("Error (");
        if (e == std::string::npos || line.find("RLIMIT_NOFILE") != std::string::npos) continue;
        size_t close = line.find("): ", e);
        found = close == std::string::npos ? line.substr(e) : line.substr(close + 3);
        break;
    }
    return found;
}

uint64_t hash_file(int dir_fd, const std::string& name) {
    UniqueFd fd(openat(dir_fd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) throw_last_error("open " + name);
    uint64_t h = 0xcbf29ce484222325ULL;
    std::string buf(1 << 16, '\0');
    for (;;) {
        ssize_t n = retry_eintr([&] { return read(fd.get(), buf.data(), buf.size()); });
        if (n < 0) throw_last_error("read " + name);
        if (n == 0) break;
        h = fnv1a64(std::string_view(buf.data(), static_cast<size_t>(n)), h);
    }
    return h;
}

// criu's image files in the directory (not our record, not the logs), with sizes and hashes.
std::vector<CheckpointRecord::File> list_images(int dir_fd) {
    int dup_fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
    if (dup_fd < 0) throw_last_error("dup the image directory");
    DIR* d = fdopendir(dup_fd);
    if (!d) {
        close(dup_fd);
        throw_last_error("read the image directory");
    }
    std::vector<CheckpointRecord::File> out;
    while (struct dirent* e = readdir(d)) {
        std::string name = e->d_name;
        if (name == "." || name == ".." || name == kRecordFile || name.ends_with(".log")) continue;
        struct stat st;
        if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode)) continue;
        out.push_back({name, static_cast<uint64_t>(st.st_size), std::nullopt});
    }
    closedir(d);
    for (auto& f : out)
        if (image_file_is_hashed(f.name)) f.hash = hash_file(dir_fd, f.name);
    return out;
}

// What criu must be told about the leader's stdio (runc's descriptors.json): a pipe is named by
// its inode (criu makes a fresh one unless the restore supplies it); a file on a host mount the
// container cannot see ("file[MNT:INO]") and a terminal whose master is outside ("tty[RDEV:DEV]")
// must be declared external at dump, or criu refuses ("Can't lookup mount"). Empty: criu handles it.
std::vector<std::string> stdio_keys(const std::string& pid, const std::vector<MountInfo>& mounts) {
    std::vector<std::string> keys;
    for (int fd = 0; fd < 3; ++fd) {
        std::string link = "/proc/" + pid + "/fd/" + std::to_string(fd);
        char target[256];
        ssize_t n = readlink(link.c_str(), target, sizeof target - 1);
        std::string t = n > 0 ? std::string(target, static_cast<size_t>(n)) : std::string();
        struct stat st;
        if (t.empty() || stat(link.c_str(), &st) < 0) {
            keys.emplace_back();
            continue;
        }
        char buf[64];
        if (t.starts_with("pipe:[")) {
            keys.push_back(t);
        } else if (S_ISCHR(st.st_mode) && (major(st.st_rdev) == 4 || major(st.st_rdev) == 5 ||
                                           (major(st.st_rdev) >= 136 && major(st.st_rdev) <= 143))) {
            snprintf(buf, sizeof buf, "tty[%llx:%llx]", static_cast<unsigned long long>(st.st_rdev),
                     static_cast<unsigned long long>(st.st_dev));
            keys.emplace_back(buf);
        } else {
            auto info = read_host_file("/proc/" + pid + "/fdinfo/" + std::to_string(fd), 1 << 16);
            int mnt_id = -1;
            if (info) {
                size_t p = info->find("mnt_id:");
                if (p != std::string::npos) mnt_id = atoi(info->c_str() + p + 7);
            }
            bool inside = false;
            for (const auto& m : mounts) inside = inside || m.id == mnt_id;
            if (inside || mnt_id < 0) {
                keys.emplace_back();
                continue;
            }
            snprintf(buf, sizeof buf, "file[%x:%llx]", static_cast<unsigned>(mnt_id),
                     static_cast<unsigned long long>(st.st_ino));
            keys.emplace_back(buf);
        }
    }
    return keys;
}

bool directory_is_empty(const std::string& path) {
    DIR* d = opendir(path.c_str());
    if (!d) throw_last_error("open " + path);
    bool empty = true;
    while (struct dirent* e = readdir(d))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) empty = false;
    closedir(d);
    return empty;
}

void empty_directory_noexcept(const std::string& path) noexcept {
    DIR* d = opendir(path.c_str());
    if (!d) return;
    std::vector<std::string> names;
    try {
        while (struct dirent* e = readdir(d))
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) names.emplace_back(e->d_name);
    } catch (...) {
    }
    for (const auto& n : names) rm_rf_at_noexcept(dirfd(d), n, kRemoveChmod);
    closedir(d);
}

// Whether the leader's stdin is a pty slave of a devpts mounted in the container (its own
// instance, as spawn's and machrun's consoles are), whose master is then outside the tree.
bool terminal_is_own_pty(const std::string& pid, const std::vector<MountInfo>& mounts) {
    struct stat st;
    if (stat(("/proc/" + pid + "/fd/0").c_str(), &st) < 0 || !S_ISCHR(st.st_mode)) return false;
    if (major(st.st_rdev) < 136 || major(st.st_rdev) > 143) return false;
    std::string dev = std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev));
    for (const auto& m : mounts)
        if (m.fstype == "devpts" && m.dev == dev) return true;
    return false;
}

// criu dumps nested mount and network namespaces only: a process of the container in a UTS, IPC,
// PID, user, cgroup or time namespace other than its init's fails the dump half-way ("Can't dump
// nested uts namespace"; a booted guest's services with ProtectHostname=, PrivateIPC=, ...).
// Refused before criu runs, naming the first such process.
void refuse_nested_namespaces(const std::string& machine, pid_t leader) {
    static constexpr const char* kNs[] = {"uts", "ipc", "pid", "user", "cgroup", "time"};
    static constexpr const char* kNames[] = {"UTS", "IPC", "PID", "user", "cgroup", "time"};
    const std::string lp = std::to_string(leader);
    ino_t mine[std::size(kNs)];
    for (size_t i = 0; i < std::size(kNs); ++i) mine[i] = ns_inode(lp, kNs[i]);
    for (pid_t p : descendants(leader)) {
        const std::string ps = std::to_string(p);
        for (size_t i = 0; i < std::size(kNs); ++i) {
            struct stat st;
            if (stat(("/proc/" + ps + "/ns/" + kNs[i]).c_str(), &st) < 0 || st.st_ino == mine[i]) continue;
            std::string comm = read_host_file("/proc/" + ps + "/comm", 64).value_or("?");
            while (!comm.empty() && comm.back() == '\n') comm.pop_back();
            throw UsageError("cannot checkpoint " + machine + ": its process " + ps + " (" + comm + ") runs in a " +
                             kNames[i] +
                             " namespace of its own (nested namespaces, e.g. systemd's ProtectHostname=), which criu "
                             "cannot dump; the machine runs on");
        }
    }
}

// Freezes a cgroup2 group (cgroup.freeze) before criu runs and thaws it when done, if it was
// running. criu, given a group that is already frozen, seizes its tasks at once; given a running
// one it writes cgroup.freeze itself and then checks every 100 ms, so each dump waited ~0.1 s for a
// freeze the kernel finishes in well under a millisecond. Best effort: a group that does not report
// "frozen 1" soon is left to criu (which then waits for it as before). v1 freezer groups are left to
// criu too (a FREEZING v1 group is one criu would not wait for).
class FreezeFirst {
public:
    explicit FreezeFirst(const std::string& group) : group_(group) {
        if (group_.empty() || read_small(group_ + "/cgroup.freeze") != "0") return;
        if (!write_small(group_ + "/cgroup.freeze", "1")) return;
        froze_ = true;
        for (int i = 0; i < 400; ++i) {  // 2 s at most; normally the first look sees it frozen
            std::string ev = read_small(group_ + "/cgroup.events");
            if (ev.find("frozen 1") != std::string::npos) return;
            usleep(5000);
        }
    }
    ~FreezeFirst() {
        if (froze_) (void)write_small(group_ + "/cgroup.freeze", "0");
    }
    FreezeFirst(const FreezeFirst&) = delete;
    FreezeFirst& operator=(const FreezeFirst&) = delete;

private:
    static std::string read_small(const std::string& path) {
        auto text = read_host_file(path, 4096);
        if (!text) return {};
        std::string t = *text;
        while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
        return t;
    }
    static bool write_small(const std::string& path, const char* value) noexcept {
        UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
        return fd && write(fd.get(), value, strlen(value)) == static_cast<ssize_t>(strlen(value));
    }
    std::string group_;
    bool froze_ = false;
};

// The host ID that ID 0 of the process's user namespace maps to (from uid_map or gid_map);
// unset when the process is in the caller's user namespace or has no mapping for 0.
std::optional<uint32_t> root_outside(const std::string& pid, const char* map) {
    if (ns_inode(pid, "user") == ns_inode("self", "user")) return std::nullopt;
    auto text = read_host_file("/proc/" + pid + "/" + map, 1 << 16);
    if (!text) throw_errno(ESRCH, "read the user namespace map of process " + pid);
    unsigned long inside = 0, outside = 0, count = 0;
    size_t pos = 0;
    while (pos < text->size()) {
        size_t nl = text->find('\n', pos);
        std::string line = text->substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        pos = nl == std::string::npos ? text->size() : nl + 1;
        if (sscanf(line.c_str(), "%lu %lu %lu", &inside, &outside, &count) == 3 && inside == 0 && count > 0)
            return static_cast<uint32_t>(outside);
    }
    return std::nullopt;
}

// criu's restore opens some images (tty-info.img, ...) from inside the restored user namespace,
// where host root's 0700 directory is out of reach: for the restore's duration the directory and
// its files belong to the container's root, and to host root again afterwards, whatever happened.
// The directory keeps host root's group with search and read for it (0750): criu's first task
// opens timens-0.img before its user namespace has maps, as host root's UID and GID still.
class LendToContainerRoot {
public:
    LendToContainerRoot(int dir_fd, std::optional<uint32_t> uid, std::optional<uint32_t> gid) : dir_fd_(dir_fd) {
        if (!uid || !gid) return;
        struct stat st;
        check(fstat(dir_fd_, &st), "stat the image directory");
        mode_ = st.st_mode & 07777;
        lent_ = true;
        give(*uid, *gid, 0, 0750);
    }
    ~LendToContainerRoot() {
        if (!lent_) return;
        try {
            give(0, 0, 0, mode_);
        } catch (...) {
        }
    }
    LendToContainerRoot(const LendToContainerRoot&) = delete;
    LendToContainerRoot& operator=(const LendToContainerRoot&) = delete;

private:
    void give(uint32_t uid, uint32_t gid, uint32_t dir_gid, mode_t dir_mode) {
        int dup_fd = fcntl(dir_fd_, F_DUPFD_CLOEXEC, 3);
        if (dup_fd < 0) throw_last_error("dup the image directory");
        DIR* d = fdopendir(dup_fd);
        if (!d) {
            close(dup_fd);
            throw_last_error("read the image directory");
        }
        rewinddir(d);  // the duplicate shares dir_fd_'s offset, at the end after the first pass
        std::vector<std::string> names;
        while (struct dirent* e = readdir(d))
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) names.emplace_back(e->d_name);
        closedir(d);
        for (const auto& n : names) (void)fchownat(dir_fd_, n.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW);
        check(fchown(dir_fd_, uid, dir_gid), "give the image directory to the container's root");
        check(fchmod(dir_fd_, dir_mode), "set the image directory's mode");
    }
    int dir_fd_;
    mode_t mode_ = 0700;
    bool lent_ = false;
};

void refuse_pidfd_guest(const std::string& machine, const std::string& root, const Version& v) {
    int sd = guest_systemd_version(root);
    if (sd >= 255 && version_less(v, Version{4, 1, 0, {}}))
        throw UsageError("cannot checkpoint " + machine + ": its systemd " + std::to_string(sd) +
                         " tracks processes with pidfds, which criu dumps only from 4.1 (this criu is " + to_string(v) +
                         ")");
}

}  // namespace

Version require_usable_criu(const CriuCommand& cmd, bool run_check) {
    Request req;
    req.type = ReqType::Version;
    return checked_version(cmd, call_once(cmd, req), run_check);
}

// VERSION on the session that will then dump or restore (keep_open): one criu process per
// operation instead of two (criu through another tree's loader takes tens of ms to start).
// A criu that does not take it there is asked again on its own, for the precise refusal.
Version session_version(Swrk& s, const CriuCommand& cmd) {
    Request req;
    req.type = ReqType::Version;
    req.keep_open = true;
    Response resp;
    try {
        resp = s.call(req);
    } catch (const std::exception&) {
        require_usable_criu(cmd, false);  // not criu, or too old: that refusal, in one line
        throw;
    }
    if (!resp.success || !resp.version) require_usable_criu(cmd, false);
    return checked_version(cmd, resp, false);
}

Version checked_version(const CriuCommand& cmd, const Response& resp, bool run_check) {
    if (!resp.success || !resp.version)
        throw UsageError("'" + to_string(cmd) +
                         "' does not answer criu's version request: it is not criu, or one older than 3.0");
    Version v = *resp.version;
    if (version_less(v, kMinimumCriu))
        throw UsageError("criu " + to_string(v) + " is older than " + to_string(kMinimumCriu) +
                         ", which checkpointing containers needs; point MK_CRIU (or --criu) at a newer criu");
    if (run_check) {
        Request check;
        check.type = ReqType::Check;
        Response c = call_once(cmd, check);
        if (!c.success) {
            struct utsname u;
            uname(&u);
            throw UsageError("criu " + to_string(v) + " cannot work with this kernel (" + u.release +
                             "): `criu check` fails; use a criu made for it (MK_CRIU or --criu, see docs/criu.md)");
        }
    }
    return v;
}

bool memory_tracking_available(const CriuCommand& cmd) {
    Request req;
    req.type = ReqType::FeatureCheck;
    req.features = Features{true, std::nullopt, std::nullopt};
    Response resp = call_once(cmd, req);
    return resp.success && resp.features && resp.features->mem_track.value_or(false);
}

int guest_systemd_version(const std::string& root) {
    UniqueFd root_fd(open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root_fd) return 0;
    return static_cast<int>(core::guest_systemd_version(root_fd.get()).value_or(0));
}

CheckpointRecord checkpoint_machine(const CheckpointRequest& req) {
    const std::string pid = std::to_string(req.leader);
    if (ns_inode(pid, "pid") == ns_inode("self", "pid"))
        throw UsageError("cannot checkpoint " + req.machine + ": it shares the host's PID namespace");
    refuse_nested_namespaces(req.machine, req.leader);

    CheckpointRecord rec;
    rec.machine = req.machine;
    rec.class_name = req.class_name;
    rec.root = req.root;
    rec.tcp_established = req.tcp_established;
    auto container_mounts = mountinfo_of(pid);
    rec.mounts = plan_external_mounts(container_mounts, mountinfo_of("self"));
    rec.stdio = stdio_keys(pid, container_mounts);
    rec.orphan_pty = req.own_terminal || terminal_is_own_pty(pid, container_mounts);
    rec.userns_uid = root_outside(pid, "uid_map");
    rec.userns_gid = root_outside(pid, "gid_map");
    // spawn -U builds /dev from inside the user namespace, its nodes binds of the host's; a /dev
    // built outside it (config.json's user namespaces) has mounts locked there and mknod'ed nodes,
    // which criu can neither archive cleanly nor make again (docs/criu.md, "-U").
    if (rec.userns_uid && std::none_of(container_mounts.begin(), container_mounts.end(),
                                       [](const MountInfo& m) { return m.mountpoint == "/dev/null"; }))
        throw UsageError("cannot checkpoint " + req.machine +
                         ": it runs in a user namespace of its own whose /dev was made outside it (locked mounts, "
                         "device nodes criu cannot remake there; docs/criu.md); the machine runs on");
    if (rec.orphan_pty) {
        // The terminal is the container's own pty (its devpts, bound on /dev/console), the
        // master the engine's: criu dumps the slave as a pty whose master is outside
        // (orphan_pts_master, as runc), not as an external file, and the restore makes a new
        // master and hands it over.
        for (auto& k : rec.stdio)
            if (k.starts_with("tty[")) k.clear();
    }
    ino_t net = ns_inode(pid, "net");
    rec.host_network = net == ns_inode("self", "net");
    if (rec.userns_uid && rec.host_network) {
        // Root in the container's user namespace may not mount a sysfs for the host's network
        // namespace: criu could not remake it at restore, so it is external (kFreshSysfs).
        for (const auto& m : container_mounts)
            if (m.fstype == "sysfs" && m.root == "/" && m.mountpoint != "/")
                rec.mounts.push_back({m.mountpoint, std::string(kFreshSysfs)});
    }
    if (!rec.host_network) {
        Netlink host;
        std::string ve = veth_host_name(req.machine, false);
        if (host.link_index(ve)) {
            rec.veth_host = ve;
            for (const auto& a : host.list_addresses())
                if (a.ifname == ve && a.scope == RT_SCOPE_UNIVERSE)
                    rec.veth_addresses.push_back({a.family, a.address, a.prefixlen});
            UniqueFd netns(open(("/proc/" + pid + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
            if (!netns) throw_last_error("open the network namespace of " + req.machine);
            for (const auto& l : list_addresses_in(netns.get()))
                if (rec.veth_container.empty() && l.ifname != "lo") rec.veth_container = l.ifname;
            if (rec.veth_container.empty()) rec.veth_container = "host0";
        }
    }
    if (rec.userns_uid && !rec.host_network) {
        // -U with a network of its own (docs/criu.md, "-U"): criu remakes a loopback inside, and
        // the veth through a pair machkit makes (restore_machine). Any other link (macvlan, ipvlan,
        // --network-veth-extra) is not measured, and a dump that stops the machine would leave
        // nothing to restore: refused before criu runs.
        UniqueFd netns(open(("/proc/" + pid + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
        if (!netns) throw_last_error("open the network namespace of " + req.machine);
        for (const auto& l : Netlink::in_namespace(netns.get()).list_links()) {
            if (l.name == "lo" || (!rec.veth_host.empty() && l.name == rec.veth_container)) continue;
            throw UsageError("cannot checkpoint " + req.machine + ": it runs in a user namespace of its own (-U) " +
                             "with a link " + l.name + " criu cannot remake there (only a loopback and " +
                             "--network-veth's; docs/criu.md); the machine runs on");
        }
    }

    bool made_dir = true;
    if (mkdir(req.image_dir.c_str(), 0700) < 0) {
        if (errno != EEXIST) throw_last_error("create " + req.image_dir);
        if (!req.image_dir_may_exist || !directory_is_empty(req.image_dir))
            throw UsageError(req.image_dir + " already exists; give a new directory for the checkpoint");
        made_dir = false;
    }
    struct RemoveOnFailure {
        const std::string& path;
        bool whole;
        bool armed = true;
        ~RemoveOnFailure() {
            if (!armed) return;
            if (whole) rm_rf_at_noexcept(AT_FDCWD, path, kRemoveChmod);
            else empty_directory_noexcept(path);  // the caller's directory stays, empty as it was
        }
    } cleanup{req.image_dir, made_dir};
    UniqueFd dir(open(req.image_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
    if (!dir) throw_last_error("open " + req.image_dir);
    UniqueFd work;
    if (!req.work_dir.empty()) {
        work.reset(open(req.work_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!work) throw_last_error("open the work directory " + req.work_dir);
    }
    int log_dir = work ? work.get() : dir.get();
    if (req.external_network) rec.host_network = true;

    Options o = base_options(rec, dir.get());
    o.pid = req.leader;
    o.leave_running = req.leave_running;
    o.log_file = kDumpLog;
    if (work) o.work_dir_fd = work.get();
    o.ext_unix_sk = req.ext_unix_sk;
    o.shell_job = req.shell_job;
    o.file_locks = req.file_locks;
    if (req.manage_cgroups_mode) o.manage_cgroups_mode = req.manage_cgroups_mode;
    for (const auto& m : rec.mounts) o.ext_mnt.emplace_back(m.key, m.key);
    if (rec.host_network) o.external.push_back("net[" + std::to_string(net) + "]:extRootNetNS");
    for (const auto& k : rec.stdio)
        if (k.starts_with("file[") || k.starts_with("tty[")) o.external.push_back(k);
    o.freeze_cgroup = req.freezer_cgroup;
    o.orphan_pts_master = rec.orphan_pty;
    Request r;
    r.type = ReqType::Dump;
    r.opts = o;
    std::vector<int> fds{dir.get()};
    if (work) fds.push_back(work.get());
    Swrk s(req.criu, fds);
    Version v = session_version(s, req.criu);
    refuse_pidfd_guest(req.machine, req.root, v);
    rec.criu_version = to_string(v);
    std::optional<FreezeFirst> frozen;
    frozen.emplace(req.freezer_cgroup);
    Response resp = s.call(r);
    frozen.reset();  // a machine left running (or that criu failed on) runs on at once
    s.finish();
    if (!resp.success) {
        // The directory goes (nothing half-made), so criu's reason must travel in the message.
        std::string why = last_log_error(log_dir, kDumpLog);
        require_usable_criu(req.criu, true);
        throw std::runtime_error("criu dump of " + req.machine + " failed" + (why.empty() ? "" : ": " + why) +
                                 "; the machine runs on");
    }
    rec.files = list_images(dir.get());
    write_file_at(dir.get(), std::string(kRecordFile), encode_record(rec), 0600);
    cleanup.armed = false;
    return rec;
}

CheckpointRecord read_checkpoint(int dir_fd, const std::string& dir_path) {
    UniqueFd fd(openat(dir_fd, std::string(kRecordFile).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) {
        if (errno == ENOENT)
            throw UsageError(dir_path + " is not a machkit checkpoint (no " + std::string(kRecordFile) +
                             "); make one with 'machctl checkpoint NAME DIR'");
        throw_last_error("open " + dir_path + "/" + std::string(kRecordFile));
    }
    std::string text(kMaxRecordSize + 1, '\0');
    size_t got = 0;
    for (;;) {
        ssize_t n = retry_eintr([&] { return read(fd.get(), text.data() + got, text.size() - got); });
        if (n < 0) throw_last_error("read " + std::string(kRecordFile));
        if (n == 0 || (got += static_cast<size_t>(n)) == text.size()) break;
    }
    text.resize(got);
    CheckpointRecord rec = decode_record(text);
    for (const auto& f : rec.files) {
        struct stat st;
        if (fstatat(dir_fd, f.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            throw UsageError(dir_path + " is incomplete: " + f.name + " is missing; checkpoint the machine again");
        if (static_cast<uint64_t>(st.st_size) != f.size || (f.hash && hash_file(dir_fd, f.name) != *f.hash))
            throw UsageError(dir_path + " is damaged: " + f.name +
                             " changed since the checkpoint; checkpoint the machine again");
    }
    return rec;
}

void check_unlocked_mounts_accepted(const CheckpointRecord& rec, bool accepted) {
    if (!rec.userns_uid || accepted) return;
    throw UsageError("cannot restore " + rec.machine +
                     " as it was: it ran in a user namespace of its own (-U), and criu remakes its mounts inside it, "
                     "where none is locked, so its root could unmount the /proc masks and read-only mounts "
                     "(docs/criu.md); restore with --unlocked-mounts to accept that");
}

Restored restore_machine(const RestoreRequest& req) {
    UniqueFd dir(open(req.image_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir) {
        if (errno == ENOENT || errno == ENOTDIR) throw UsageError(req.image_dir + " does not exist or is not a directory");
        throw_last_error("open " + req.image_dir);
    }
    Restored out;
    CheckpointRecord& rec = out.record;
    rec = read_checkpoint(dir.get(), req.image_dir);
    check_unlocked_mounts_accepted(rec, req.unlocked_mounts);
    if (!req.root.empty()) rec.root = req.root;
    std::string name = req.machine.empty() ? rec.machine : req.machine;
    if (!machine_name_is_valid(name)) throw UsageError("'" + name + "' is not a valid machine name");
    struct stat st;
    if (stat(rec.root.c_str(), &st) < 0 || !S_ISDIR(st.st_mode))
        throw UsageError("the checkpointed machine's root directory " + rec.root + " is gone");
    for (const auto& m : rec.mounts)
        if (m.source != kFreshSysfs && stat(m.source.c_str(), &st) < 0)
            throw UsageError("the source " + m.source + " of the checkpointed mount " + m.key + " is gone");
    Netlink host;
    if (!rec.veth_host.empty() && host.link_index(rec.veth_host))
        throw UsageError("the link " + rec.veth_host + " exists: is the checkpointed machine still running?");

    Options o = base_options(rec, dir.get());
    o.rst_sibling = true;
    o.log_file = kRestoreLog;
    o.ext_unix_sk = req.ext_unix_sk;
    o.shell_job = req.shell_job;
    o.file_locks = req.file_locks;
    o.orphan_pts_master = req.orphan_pts_master || rec.orphan_pty;
    if (req.manage_cgroups_mode) o.manage_cgroups_mode = req.manage_cgroups_mode;
    // A sysfs criu cannot mount inside the user namespace: a fresh one, in criu's own mount
    // namespace (Swrk), on an empty directory removed afterwards.
    struct TempDir {
        std::string path;
        ~TempDir() {
            if (!path.empty()) rmdir(path.c_str());
        }
    } fresh_sysfs, open_tmp;
    for (const auto& m : rec.mounts) {
        if (m.source != kFreshSysfs) {
            o.ext_mnt.emplace_back(m.key, m.source);
            continue;
        }
        if (fresh_sysfs.path.empty()) {
            char tmpl[] = "/run/machkit-criu-sysfs.XXXXXX";
            if (!mkdtemp(tmpl)) throw_last_error("create a directory for a fresh sysfs");
            fresh_sysfs.path = tmpl;
        }
        o.ext_mnt.emplace_back(m.key, fresh_sysfs.path);
    }
    std::vector<int> fds{dir.get()};
    UniqueFd work;
    if (!req.work_dir.empty()) {
        work.reset(open(req.work_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!work) throw_last_error("open the work directory " + req.work_dir);
        o.work_dir_fd = work.get();
        fds.push_back(work.get());
    }
    int log_dir = work ? work.get() : dir.get();
    std::string log_path = (req.work_dir.empty() ? req.image_dir : req.work_dir) + "/" + kRestoreLog;
    UniqueFd netns;
    if (rec.host_network) {
        int ns = req.network_ns_fd;
        if (ns < 0) {
            netns.reset(open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
            if (!netns) throw_last_error("open the host's network namespace");
            ns = netns.get();
        }
        o.inherit_fd.emplace_back("extRootNetNS", ns);
        fds.push_back(ns);
    }
    for (size_t fd = 0; fd < rec.stdio.size(); ++fd) {
        if (rec.stdio[fd].empty() || fcntl(static_cast<int>(fd), F_GETFD) < 0) continue;
        bool seen = false;  // 1 and 2 are often one pipe: criu takes each key once
        for (const auto& [k, v] : o.inherit_fd) seen = seen || k == rec.stdio[fd];
        if (!seen) o.inherit_fd.emplace_back(rec.stdio[fd], static_cast<int>(fd));
    }
    // Without -U criu makes the pair and puts its host end in the host's namespace (veth[]). With
    // -U criu would make it from inside the restored user namespace, where the host's network is
    // out of reach (docs/criu.md, "-U"): machkit makes the pair here and criu's usernsd moves the
    // container's end in, with its name, index and MAC (netdev[], criu >= 3.16).
    struct PairOnFailure {
        Netlink& host;
        std::string names[2];
        bool armed = false;
        ~PairOnFailure() {
            if (!armed) return;
            for (const auto& n : names) try {
                    if (int i = host.link_index(n)) host.delete_link(i);
                } catch (const std::exception&) {
                }
        }
    } pair{host, {rec.veth_host, "mkrst-" + std::to_string(getpid())}};
    if (!rec.veth_host.empty() && rec.userns_uid) {
        host.create_veth(rec.veth_host, pair.names[1], -1);
        pair.armed = true;
        o.external.push_back("netdev[" + rec.veth_container + "]:" + pair.names[1]);
    } else if (!rec.veth_host.empty()) {
        o.external.push_back("veth[" + rec.veth_container + "]:" + rec.veth_host);
    }
    Request r;
    r.type = ReqType::Restore;
    r.opts = o;
    auto notify = [&](const std::string& script, int32_t pid, UniqueFd fd) {
        if (req.on_notify) req.on_notify(script, pid, std::move(fd));
        // Before the tasks resume: the host side criu made is down and bare.
        if (script != "post-restore" || rec.veth_host.empty()) return;
        int index = host.link_index(rec.veth_host);
        if (!index) throw std::runtime_error("criu did not recreate " + rec.veth_host);
        for (const auto& a : rec.veth_addresses) host.add_address(index, a.family, a.address, a.prefixlen);
        host.set_up(index);
    };
    Version v = require_usable_criu(req.criu, false);
    LendToContainerRoot lend(dir.get(), rec.userns_uid, rec.userns_gid);
    // criu's restore makes its root yard in /tmp as the user namespace's root: a host /tmp that
    // others may not search is opened for criu alone (Swrk's open_tmp).
    struct stat tmp_st;
    if (rec.userns_uid && stat("/tmp", &tmp_st) == 0 && (tmp_st.st_mode & S_IXOTH) == 0) {
        char tmpl[] = "/run/machkit-criu-tmp.XXXXXX";
        if (!mkdtemp(tmpl)) throw_last_error("create a directory for criu's /tmp");
        open_tmp.path = tmpl;
        r.opts->root = open_tmp.path + "/root";
    }
    Swrk s(req.criu, fds, fresh_sysfs.path, open_tmp.path, rec.root);
    Response resp = s.call(r, notify);
    s.finish();
    if (!resp.success || !resp.restore_pid) {
        std::string why = last_log_error(log_dir, kRestoreLog);
        require_usable_criu(req.criu, true);
        throw std::runtime_error("criu restore from " + req.image_dir + " failed" + (why.empty() ? "" : ": " + why) +
                                 " (criu " + to_string(v) + "; its log: " + log_path + ")");
    }
    pair.armed = false;
    out.pid = *resp.restore_pid;
    return out;
}

}  // namespace mk::core::criu

namespace mk::core::criu {

std::vector<pid_t> descendants(pid_t leader) {
    std::vector<pid_t> out, queue{leader};
    while (!queue.empty() && out.size() < 65536) {
        pid_t p = queue.back();
        queue.pop_back();
        std::string tdir = "/proc/" + std::to_string(p) + "/task";
        DIR* d = opendir(tdir.c_str());
        if (!d) continue;
        while (struct dirent* e = readdir(d)) {
            if (e->d_name[0] == '.') continue;
            auto text = read_host_file(tdir + "/" + e->d_name + "/children", 1 << 20);
            if (!text) continue;
            size_t i = 0;
            while (i < text->size()) {
                size_t j = text->find(' ', i);
                if (j == std::string::npos) j = text->size();
                if (j > i) {
                    pid_t c = static_cast<pid_t>(std::stol(text->substr(i, j - i)));
                    out.push_back(c);
                    queue.push_back(c);
                }
                i = j + 1;
            }
        }
        closedir(d);
    }
    return out;
}

size_t adopt_into_leader_cgroups(pid_t leader, const std::string& cgroup_mount) {
    auto text = read_host_file("/proc/" + std::to_string(leader) + "/cgroup");
    if (!text) return 0;
    std::vector<std::string> dirs;
    size_t pos = 0;
    while (pos < text->size()) {
        size_t nl = text->find('\n', pos);
        std::string line = text->substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        pos = nl == std::string::npos ? text->size() : nl + 1;
        size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
        if (b == std::string::npos) continue;
        std::string ctrl = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
        if (path.find("..") != std::string::npos || path.empty() || path[0] != '/') continue;
        std::string mount;
        if (ctrl.empty()) {
            struct stat st;
            mount =
                stat((cgroup_mount + "/unified/cgroup.procs").c_str(), &st) == 0 ? cgroup_mount + "/unified" : cgroup_mount;
        } else {
            mount = cgroup_mount + "/" + (ctrl.starts_with("name=") ? ctrl.substr(5) : ctrl);
        }
        dirs.push_back(mount + path + "/cgroup.procs");
    }
    size_t moved = 0;
    for (pid_t p : descendants(leader)) {
        for (const auto& procs : dirs) {
            UniqueFd fd(open(procs.c_str(), O_WRONLY | O_CLOEXEC));
            if (!fd) continue;
            std::string s = std::to_string(p);
            (void)!write(fd.get(), s.data(), s.size());
        }
        ++moved;
    }
    return moved;
}

}  // namespace mk::core::criu
