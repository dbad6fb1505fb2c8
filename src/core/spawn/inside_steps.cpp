#include "core/spawn/inside_steps.hpp"

#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/keyctl.h>
#include <linux/openat2.h>

#include <climits>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/id128.hpp"
#include "core/base/strings.hpp"
#include "core/kernel/capabilities.hpp"
#include "core/kernel/mount.hpp"
#include "core/kernel/seccomp.hpp"
#include "core/spawn/credentials.hpp"
#include "core/spawn/guest_init.hpp"
#include "core/spawn/option_values.hpp"
#include "core/spawn/outside_steps.hpp"

namespace mk::core {

namespace {

void bring_up_loopback() {
    UniqueFd s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s) throw_last_error("socket");
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (ioctl(s.get(), SIOCGIFFLAGS, &ifr) < 0) throw_last_error("cannot read flags of lo");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s.get(), SIOCSIFFLAGS, &ifr) < 0) throw_last_error("cannot bring up lo");
}

// The target of the tree's /etc/NAME when it is a symlink that leads nowhere inside the tree (a
// bind mount cannot land on it), else nullopt.
std::optional<std::string> dangling_etc_symlink(int root_fd, int etc_fd, const char* name) {
    struct stat st;
    if (fstatat(etc_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISLNK(st.st_mode)) return std::nullopt;
    if (open_in_root(root_fd, std::string("/etc/") + name, O_PATH).valid() || errno != ENOENT) return std::nullopt;
    char target[PATH_MAX];
    ssize_t n = readlinkat(etc_fd, name, target, sizeof target - 1);
    return n > 0 ? std::string(target, static_cast<size_t>(n)) : std::string("?");
}

[[noreturn]] void throw_dangling(const std::string& option, const char* name, const std::string& target) {
    throw UsageError(option + ": the tree's /etc/" + name + " is a dangling symlink (to " + quote_value(target) +
                     "), so nothing can be bound onto it; remove it or point it at a file, or pick another mode");
}

// --resolv-conf, as plan_resolv_conf() decided it.
void setup_resolv_conf(int root_fd, const SpawnSpec& spec, const ResolvConfPlan& plan) {
    using A = ResolvConfPlan;
    if (plan.action == A::None) return;
    const bool read_only = root_is_read_only(spec);
    const auto action = plan.action;
    const char* source = plan.source.c_str();
    UniqueFd etc = open_in_root(root_fd, "/etc", O_RDONLY | O_DIRECTORY);
    if (!etc) return;  // a tree without /etc gets nothing
    struct stat st;
    bool exists = fstatat(etc.get(), "resolv.conf", &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (action == A::Delete) {
        if (exists && unlinkat(etc.get(), "resolv.conf", 0) < 0) throw_last_error("cannot delete /etc/resolv.conf");
        return;
    }
    if (action == A::Bind) {
        if (access(source, F_OK) < 0) throw_errno(ENOENT, std::string("--resolv-conf: the host has no ") + source);
        if (!exists && read_only) return;  // nowhere to bind onto
        if (auto target = dangling_etc_symlink(root_fd, etc.get(), "resolv.conf")) {
            // auto: a tree that links its resolv.conf elsewhere (resolved's stub, say) manages its
            // own, as copy-* modes respect; an explicit bind-* was asked for and cannot be done.
            if (spec.resolv_conf == ResolvConfMode::Auto) return;
            throw_dangling("--resolv-conf=" + std::string(to_string(spec.resolv_conf)), "resolv.conf", *target);
        }
        MountStep b;
        b.kind = StepKind::Bind;
        b.source = source;
        b.target = "/etc/resolv.conf";
        b.attrs = MOUNT_ATTR_RDONLY;
        b.create_target = true;
        apply_mount_plan(root_fd, {b});
        return;
    }
    if (read_only) return;
    // copy-*: leave a tree that manages its own resolv.conf (a symlink) alone; replace-*: don't.
    if (action == A::Copy && exists && !S_ISREG(st.st_mode)) return;
    auto data = read_host_file(source);
    if (!data) return;
    if (exists && !S_ISREG(st.st_mode)) unlinkat(etc.get(), "resolv.conf", 0);
    write_file_at(etc.get(), "resolv.conf", *data, 0644);
}

void write_integration_files(int root_fd, int etc_root_fd, const Prepared& p, const SpawnSpec& spec) {
    const GuestPlan& g = p.guest;
    // /run/host: os-release of the host and who manages this container, as nspawn provides them.
    UniqueFd host = open_in_root(root_fd, "/run/host", O_RDONLY | O_DIRECTORY, 0, RESOLVE_NO_SYMLINKS);
    if (!host) throw_last_error("cannot open /run/host");
    if (!p.host_os_release.empty()) write_file_at(host.get(), "os-release", p.host_os_release, 0444);
    write_file_at(host.get(), "container-manager", g.container_manager + "\n", 0444);
    write_file_at(host.get(), "container-uuid", id128_to_string(g.uuid, Id128Format::Uuid) + "\n", 0444);
    if (mkdirat(host.get(), "incoming", 0755) < 0 && errno != EEXIST) throw_last_error("mkdir /run/host/incoming");

    setup_resolv_conf(etc_root_fd, spec, g.resolv_conf);

    // /etc/localtime: the host's zone, as a symlink when the tree has the zone file, else a copy.
    const TimezoneMode tz = g.timezone;
    if (tz == TimezoneMode::Off) return;
    char target[PATH_MAX];
    ssize_t n = readlink("/etc/localtime", target, sizeof target - 1);
    UniqueFd etc = open_in_root(etc_root_fd, "/etc", O_RDONLY | O_DIRECTORY);
    if (!etc) return;
    if (tz == TimezoneMode::Delete) {
        unlinkat(etc.get(), "localtime", 0);
        return;
    }
    if (n > 0) target[n] = 0;
    std::string zone = n > 0 ? std::string(target) : std::string();
    size_t zi = zone.find("zoneinfo/");
    bool tree_has_zone = zi != std::string::npos && is_executable_in_root(root_fd, "/") &&
                         open_in_root(root_fd, "/usr/share/" + zone.substr(zi), O_PATH).valid();
    if ((tz == TimezoneMode::Auto || tz == TimezoneMode::Symlink) && tree_has_zone) {
        std::string link = "../usr/share/" + zone.substr(zi);
        char cur[PATH_MAX];
        ssize_t cn = readlinkat(etc.get(), "localtime", cur, sizeof cur - 1);
        if (cn > 0 && std::string(cur, static_cast<size_t>(cn)) == link) return;
        unlinkat(etc.get(), "localtime", 0);
        if (symlinkat(link.c_str(), etc.get(), "localtime") < 0) throw_last_error("cannot link /etc/localtime");
    } else if (tz == TimezoneMode::Copy || tz == TimezoneMode::Auto) {
        auto data = read_host_file("/etc/localtime");
        if (!data) return;
        unlinkat(etc.get(), "localtime", 0);
        write_file_at(etc.get(), "localtime", *data, 0644);
    } else if (tz == TimezoneMode::Bind) {
        if (auto t = dangling_etc_symlink(root_fd, etc.get(), "localtime"))
            throw_dangling("--timezone=bind", "localtime", *t);
        MountStep b;
        b.kind = StepKind::Bind;
        b.source = "/etc/localtime";
        b.target = "/etc/localtime";
        b.attrs = MOUNT_ATTR_RDONLY;
        b.create_target = true;
        apply_mount_plan(root_fd, {b});
    }
}

// The container's root as a detached mount: the tree itself, or a throw-away variant of it.
// --ephemeral and --volatile=overlay: an overlay whose upper layer lives on a tmpfs that vanishes
// with the container's mount namespace, so the tree is never written. --volatile=yes: an empty
// tmpfs with the tree's /usr bound read-only. Runs in the child's mount namespace.
UniqueFd make_root(const SpawnSpec& spec, const std::string& path, int idmap_userns, UniqueFd& raw) {
    // The fd from before clone belongs to the host's mount namespace, which open_tree() refuses
    // to clone from: open the tree again, in ours.
    UniqueFd dir(open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir) throw_last_error("cannot open " + path);
    bool overlay = spec.ephemeral || spec.volatile_mode == VolatileMode::Overlay;
    if (!overlay && spec.volatile_mode != VolatileMode::Yes) {
        UniqueFd tree = clone_tree(dir.get(), "", true);
        if (idmap_userns >= 0) {
            // --private-users-ownership=map: the tree keeps its on-disk owners (0 is root) and the
            // mount shows them shifted into the container's range.
            mount_attr attr{};
            attr.attr_set = MOUNT_ATTR_IDMAP;
            attr.userns_fd = static_cast<uint64_t>(idmap_userns);
            if (mount_setattr(tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
                throw_last_error("cannot make an idmapped mount of " + path +
                                 " (does its file system support them?); use --private-users-ownership=off");
        }
        raw = std::move(dir);
        return tree;
    }

    UniqueFd scratch = make_fs_mount("tmpfs", {{"mode", "0755"}}, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    if (spec.volatile_mode == VolatileMode::Yes) {
        if (mkdirat(scratch.get(), "usr", 0755) < 0) throw_last_error("mkdir /usr");
        UniqueFd usr = open_in_root(dir.get(), "/usr", O_PATH | O_DIRECTORY, 0, RESOLVE_NO_SYMLINKS);
        if (!usr) throw_last_error("--volatile=yes needs a /usr directory in " + path);
        UniqueFd usr_mnt = clone_tree(usr.get(), "", true);
        set_mount_attrs(usr_mnt.get(), MOUNT_ATTR_RDONLY, 0, true, "/usr");
        UniqueFd target(openat(scratch.get(), "usr", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        attach_mount(usr_mnt.get(), target.get(), "/usr");
        // A merged-/usr tree keeps /bin, /sbin, /lib... as symlinks into /usr: carry them over.
        for (const char* link : {"bin", "sbin", "lib", "lib32", "lib64", "libx32"}) {
            char buf[256];
            ssize_t n = readlinkat(dir.get(), link, buf, sizeof buf - 1);
            if (n <= 0) continue;
            buf[n] = 0;
            if (strncmp(buf, "usr/", 4) == 0 && symlinkat(buf, scratch.get(), link) < 0)
                throw_last_error(std::string("symlink /") + link);
        }
        return scratch;
    }
    for (const char* d : {"upper", "work"})
        if (mkdirat(scratch.get(), d, 0755) < 0) throw_last_error(std::string("mkdir ") + d);
    std::string base = "/proc/self/fd/" + std::to_string(scratch.get());
    return make_fs_mount("overlay", {{"lowerdir", path}, {"upperdir", base + "/upper"}, {"workdir", base + "/work"}}, 0,
                         "overlay");
}

// --pivot-root=NEW[:OLD] (nspawn's setup_pivot_root()): NEW of the tree, with its submounts, is
// stacked over the tree at root_path and becomes the container's root; the whole tree stays
// reachable at NEW/OLD when OLD is given, else it vanishes with the host's root at pivot_root().
UniqueFd pivot_into_subtree(int tree_fd, const std::string& root_path, const std::string& new_root,
                            const std::string& old_root) {
    UniqueFd dir = open_in_root(tree_fd, new_root, O_PATH | O_DIRECTORY);
    if (!dir) throw_last_error("--pivot-root: cannot open " + new_root + " in the tree");
    UniqueFd new_tree = clone_tree(dir.get(), "", true);
    UniqueFd old_tree;
    if (!old_root.empty()) old_tree = clone_tree(tree_fd, "", true);
    UniqueFd at(open(root_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!at) throw_last_error("cannot open " + root_path);
    attach_mount(new_tree.get(), at.get(), "--pivot-root " + new_root);
    UniqueFd top(open(root_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!top) throw_last_error("cannot open " + root_path);
    if (old_tree) {
        UniqueFd target = mkdir_p_in_root(top.get(), old_root);
        attach_mount(old_tree.get(), target.get(), "--pivot-root old root at " + old_root);
    }
    return top;
}

// --bind-user=: each user's host home at /run/host/home/NAME (made by write_bound_user_records()).
void bind_user_homes(int root_fd, const std::vector<BoundUser>& users) {
    for (const auto& u : users) {
        MountStep b;
        b.kind = StepKind::Bind;
        b.source = u.host.home;
        b.target = u.home_inside();
        b.attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        apply_mount_plan(root_fd, {b});
    }
}

// -Z: the label the payload runs with, set for the next execve() as libselinux's setexeccon().
void set_exec_label(const std::string& label) {
    UniqueFd f(open("/proc/thread-self/attr/exec", O_WRONLY | O_CLOEXEC));
    if (!f || write(f.get(), label.data(), label.size()) < 0) throw_last_error("cannot set the SELinux label " + label);
}

}  // namespace

std::pair<UniqueFd, UniqueFd> setup_console() {
    UniqueFd master(open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!master) throw_last_error("cannot open /dev/pts/ptmx");
    int unlock = 0;
    if (ioctl(master.get(), TIOCSPTLCK, &unlock) < 0) throw_last_error("cannot unlock the console pty");
    // TIOCGPTPEER opens the peer through the master, never by a path the guest could swap (T-07).
    UniqueFd peer(ioctl(master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!peer) throw_last_error("cannot open the console pty peer");
    UniqueFd console(open("/dev/console", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!console) throw_last_error("cannot create /dev/console");
    UniqueFd clone = clone_tree(peer.get(), "", false);
    attach_mount(clone.get(), console.get(), "the console pty on /dev/console");
    return {std::move(master), std::move(peer)};
}

void become_container_init(const Prepared& p, int chan) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) throw_last_error("prctl(PDEATHSIG)");
    // If spawn died before the line above, nobody will ever reap us: the channel tells.
    pollfd pf{chan, 0, 0};
    if (poll(&pf, 1, 0) > 0 && (pf.revents & POLLHUP)) _exit(1);
    umask(0);
    if (p.netns && setns(p.netns.get(), CLONE_NEWNET) < 0) throw_last_error("cannot join the network namespace");
    if (p.userns_netns && setns(p.userns_netns.get(), CLONE_NEWNET) < 0)
        throw_last_error("cannot join the network namespace made in the user namespace");
    for (const auto& [flag, ns] : p.joined_namespaces)
        if (setns(ns.get(), flag) < 0)
            throw_last_error(flag == CLONE_NEWUTS ? "cannot join the UTS namespace" : "cannot join the IPC namespace");
}

RootFs mount_root_fs(const SpawnSpec& spec, Prepared& p) {
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0)
        throw_last_error("cannot make the mount namespace private");
    // The tree, cloned and attached over itself: root is the new mount's root from here on.
    RootFs fs;
    if (!p.image_mounts.empty()) {
        fs.tree.reset(fcntl(p.image_mounts.front().second.get(), F_DUPFD_CLOEXEC, 3));
        if (p.idmap) {
            mount_attr attr{};
            attr.attr_set = MOUNT_ATTR_IDMAP;
            attr.userns_fd = static_cast<uint64_t>(p.userns_fd.get());
            if (mount_setattr(fs.tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
                throw_last_error("cannot make an idmapped mount of the image; use --private-users-ownership=off");
        }
    } else {
        fs.tree = make_root(spec, p.root_path, p.idmap ? p.userns_fd.get() : -1, fs.raw);
    }
    if (move_mount(fs.tree.get(), "", AT_FDCWD, p.root_path.c_str(), MOVE_MOUNT_F_EMPTY_PATH) < 0)
        throw_last_error("cannot mount the container tree");
    fs.root = fs.tree.get();
    for (size_t i = 1; i < p.image_mounts.size(); i++) {  // the image's /usr, /home, /srv, /var
        UniqueFd target = mkdir_p_in_root(fs.root, p.image_mounts[i].first);
        attach_mount(p.image_mounts[i].second.get(), target.get(), "the image's " + p.image_mounts[i].first);
    }
    if (!spec.pivot_root_new.empty()) {
        fs.pivoted = pivot_into_subtree(fs.root, p.root_path, spec.pivot_root_new, spec.pivot_root_old);
        fs.root = fs.pivoted.get();
    }
    if (spec.volatile_mode == VolatileMode::State) {
        // The tree read-only, with a throw-away /var.
        remount_read_only(fs.root, false, "the container root");
        MountStep var;
        var.kind = StepKind::Fs;
        var.target = "/var";
        var.fstype = "tmpfs";
        var.options = {{"mode", "0755"}};
        var.attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        var.api_target = true;
        apply_mount_plan(fs.root, {var});
    }

    if (p.idmap && fs.raw) precreate_mount_targets(fs.raw.get(), p.plan);
    apply_mount_plan(fs.root, p.plan, p.userns ? p.userns_fd.get() : -1);
    return fs;
}

void enter_cgroup_namespace(const Prepared& p, int root) {
    if (unshare(CLONE_NEWCGROUP) < 0) throw_last_error("cannot create a cgroup namespace");
    if (p.cgroups || !p.cgroup_plan.empty()) apply_mount_plan(root, p.cgroup_plan);  // a booted guest's, or OCI's
}

UniqueFd populate_guest_files(const SpawnSpec& spec, const Prepared& p, const RootFs& fs) {
    // Through an idmapped mount host root may not create files (its UID is outside the map):
    // /etc is written through the tree's own mount, where on-disk 0 is the container's root.
    write_integration_files(fs.root, p.idmap ? fs.raw.get() : fs.root, p, spec);  // raw: invalid for idmapped images
    {
        UniqueFd run_host = open_in_root(fs.root, "/run/host", O_PATH | O_DIRECTORY, 0, RESOLVE_NO_SYMLINKS);
        mount_credentials(run_host.get(), spec.credentials, p.userns ? p.userns->shift : 0);
        write_bound_user_records(run_host.get(), p.bound_users, p.userns ? p.userns->shift : 0);
    }
    UniqueFd notify;
    if (p.guest.boot) notify = bind_notify_socket(fs.root);
    return notify;
}

void seal_and_pivot(const SpawnSpec& spec, const Prepared& p, RootFs& fs) {
    // /run/host is the host's word to the guest: read-only.
    {
        UniqueFd host = open_in_root(fs.root, "/run/host", O_PATH | O_DIRECTORY, 0, RESOLVE_NO_SYMLINKS);
        UniqueFd hm = clone_tree(host.get(), "", true);
        remount_read_only(hm.get(), true, "/run/host");
        attach_mount(hm.get(), host.get(), "/run/host");
    }
    bind_user_homes(fs.root, p.bound_users);  // writable homes under the read-only /run/host
    if (spec.read_only) remount_read_only(fs.root, false, "the container root");

    if (fchdir(fs.root) < 0) throw_last_error("fchdir");
    if (syscall(SYS_pivot_root, ".", ".") < 0) throw_last_error("pivot_root");
    if (umount2(".", MNT_DETACH) < 0) throw_last_error("cannot detach the host's root");
    if (chdir("/") < 0) throw_last_error("chdir /");
    fs.tree.reset();
    fs.pivoted.reset();
}

void set_identity(const Prepared& p, int console_peer) {
    // A console made inside the user namespace (/dev built there) is its root's already.
    if (p.userns && !p.rootless && p.userns_dev_plan.empty() && console_peer >= 0 &&
        fchown(console_peer, p.userns->shift, p.userns->shift + 5) < 0)
        throw_last_error("cannot hand the console to the container's root");
    if (p.set_hostname && sethostname(p.guest.hostname.data(), p.guest.hostname.size()) < 0) throw_last_error("sethostname");
    // A fresh session keyring: the kernel keyring is not namespaced.
    // Inside another container the keyring calls are usually filtered: nothing to isolate there.
    if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, 0, 0, 0, 0) < 0 && errno != EPERM && errno != ENOSYS &&
        errno != EACCES)
        throw_last_error("cannot join a new session keyring");
}

void take_session(const SpawnSpec& spec, UniqueFd console_peer) {
    if (spec.private_network) bring_up_loopback();
    if (setsid() < 0) throw_last_error("setsid");
    if (console_peer) {
        if (ioctl(console_peer.get(), TIOCSCTTY, 0) < 0)
            throw_last_error("cannot make the console the controlling terminal");
        for (int i = 0; i < 3; i++)
            if (dup2(console_peer.get(), i) < 0) throw_last_error("dup2");
    }
}

int set_rlimits(const std::array<std::optional<ResourceLimit>, kRlimitCount>& limits, int* failed) noexcept {
    for (size_t i = 0; i < limits.size(); i++) {
        if (!limits[i]) continue;
        rlimit rl{limits[i]->soft, limits[i]->hard};
        if (setrlimit(static_cast<__rlimit_resource>(i), &rl) < 0) {
            if (failed) *failed = static_cast<int>(i);
            return -errno;
        }
    }
    return 0;
}

int set_oom_score_adjust(int value) noexcept {
    char v[16];
    int n = snprintf(v, sizeof v, "%d", value);
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int r = write(fd, v, static_cast<size_t>(n)) == n ? 0 : -errno;
    close(fd);
    return r;
}

int set_cpu_affinity(const std::vector<unsigned>& cpus) noexcept {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (unsigned c : cpus)
        if (c < CPU_SETSIZE) CPU_SET(c, &set);
    return sched_setaffinity(0, sizeof set, &set) == 0 ? 0 : -errno;
}

void apply_resource_limits(const SpawnSpec& spec) {
    int failed = 0;
    if (int r = set_rlimits(spec.rlimits, &failed); r < 0)
        throw_errno(-r, "cannot set resource limit " + std::to_string(failed));
    if (spec.oom_score_adjust)
        if (int r = set_oom_score_adjust(*spec.oom_score_adjust); r < 0)
            throw_errno(-r, "cannot set the OOM score adjustment");
    if (!spec.cpu_affinity.empty())
        if (int r = set_cpu_affinity(spec.cpu_affinity); r < 0) throw_errno(-r, "cannot set the CPU affinity");
}

void make_nested_user_namespace(Prepared& p) {
    if (p.rootless) p.nested_userns = make_identity_user_namespace(p.rootless->map);
}

void enter_user_namespace(Prepared& p) {
    if (!p.userns) return;
    if (p.rootless) {
        reap_identity_maker(p.nested_userns);
        p.userns_fd = std::move(p.nested_userns.fd);
    }
    // Into the container's user namespace, with fresh mount, UTS and IPC namespaces owned by
    // it: everything mounted so far is locked there (MNT_LOCKED), so root inside cannot
    // unmount the masks and read-only mounts, and it may still mount on top of them.
    // config.json's container keeps its IPC namespace: its linux.sysctl IPC values and its
    // /dev/mqueue belong to that one (a new IPC namespace would start from the defaults).
    if (setns(p.userns_fd.get(), CLONE_NEWUSER) < 0) throw_last_error("cannot enter the user namespace");
    if (!p.userns_dev_plan.empty()) {
        // /dev is made next, by the namespace's root: host root's IDs are unmapped here (files it
        // made would fail with EOVERFLOW). drop_privileges() sets the payload's IDs later.
        int pdeath = 0;
        if (prctl(PR_GET_PDEATHSIG, &pdeath, 0, 0, 0) < 0) throw_last_error("prctl(PR_GET_PDEATHSIG)");
        if (setgroups(0, nullptr) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
            throw_last_error("cannot become root of the user namespace");
        // A credential change clears the parent-death signal: set it again.
        if (pdeath && prctl(PR_SET_PDEATHSIG, pdeath, 0, 0, 0) < 0) throw_last_error("prctl(PDEATHSIG)");
    }
    const bool oci = !p.oci_uid_map.empty();
    if (unshare(CLONE_NEWNS | CLONE_NEWUTS | (oci ? 0 : CLONE_NEWIPC)) < 0)
        throw_last_error("cannot create namespaces in the user namespace");
    p.userns_fd.reset();
}

void clone_dev_sources(Prepared& p) {
    std::vector<MountStep> kept;
    for (auto& s : p.userns_dev_plan) {
        if (s.kind == StepKind::Bind && !s.source_in_root) {
            // The host's node, as a detached mount: attached once inside the user namespace.
            UniqueFd src(open(s.source.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
            if (!src) {
                if (s.optional && errno == ENOENT) continue;
                throw_last_error("cannot open the host's " + s.source);
            }
            struct stat st;
            if (fstat(src.get(), &st) < 0) throw_last_error("stat " + s.source);
            if (!S_ISCHR(st.st_mode)) throw_errno(ENODEV, "the host's " + s.source + " is not a character device");
            p.dev_sources.push_back(clone_tree(src.get(), "", false));
            s.source_mount_fd = p.dev_sources.back().get();
        }
        kept.push_back(std::move(s));
    }
    p.userns_dev_plan = std::move(kept);
}

void build_dev_in_userns(Prepared& p) {
    UniqueFd root(open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) throw_last_error("open /");
    apply_mount_plan(root.get(), p.userns_dev_plan);
    p.dev_sources.clear();  // attached: the fds are spent
}

void drop_bounding_set_to(uint64_t bounding) {
    int r = drop_bounding_set(bounding);
    if (r < 0) throw_errno(-r, "cannot drop capabilities from the bounding set");
}

void drop_privileges(const SpawnSpec& spec, const Prepared& p) {
    bool root_user = p.user.uid == 0;
    // A detached init (machrun's create) has cleared its parent-death signal already
    // (outlive_parent()): it must not come back with the credential change below.
    int pdeath = 0;
    if (prctl(PR_GET_PDEATHSIG, &pdeath, 0, 0, 0) < 0) throw_last_error("prctl(PR_GET_PDEATHSIG)");
    if (!spec.personality.empty() && personality(personality_number(spec.personality)) < 0)
        throw_last_error("cannot set the personality " + spec.personality);
    if (!spec.selinux_context.empty()) set_exec_label(spec.selinux_context);
    // The filter goes in while we still hold CAP_SYS_ADMIN; the calls after it are all allowed.
    int r = p.oci_seccomp ? seccomp_oci_install(*p.oci_seccomp) : seccomp_install(p.seccomp);
    if (r < 0) throw_errno(-r, "cannot install the system call filter");
    // Ambient capabilities survive the switch to another user only through keep-caps.
    if (spec.capabilities_ambient && !root_user && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        throw_last_error("prctl(PR_SET_KEEPCAPS)");
    // A rootless map without subordinate ranges denies setgroups(2) (user_namespaces(7)).
    const bool may_setgroups = !p.rootless || p.rootless->map.needs_helpers;
    if ((may_setgroups || !p.user.groups.empty()) && setgroups(p.user.groups.size(), p.user.groups.data()) < 0)
        throw_last_error("setgroups");
    if (setresgid(p.user.gid, p.user.gid, p.user.gid) < 0) throw_last_error("setresgid");
    if (setresuid(p.user.uid, p.user.uid, p.user.uid) < 0) throw_last_error("setresuid");
    r = set_capabilities(root_user ? p.guest.bounding : spec.capabilities_ambient, spec.capabilities_ambient);
    if (r < 0) throw_errno(-r, "cannot set capabilities");
    int refused = 0;
    if (int r = raise_ambient_capabilities(spec.capabilities_ambient, &refused); r < 0)
        throw_errno(-r, "cannot raise the ambient capability " + capability_to_name(refused));
    // A credential change clears the parent-death signal: set it again, if it was set.
    if (pdeath && (!root_user || p.userns) && prctl(PR_SET_PDEATHSIG, pdeath, 0, 0, 0) < 0)
        throw_last_error("prctl(PDEATHSIG)");
    if (spec.no_new_privileges && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) throw_last_error("no_new_privs");
}

void outlive_parent() {
    if (prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0) < 0) throw_last_error("prctl(PDEATHSIG)");
}

void wait_at_exec_gate(int exec_gate) {
    std::string path = "/proc/self/fd/" + std::to_string(exec_gate);
    UniqueFd gate(open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!gate) throw_last_error("cannot open the exec FIFO");
    char zero = 0;
    if (write(gate.get(), &zero, 1) != 1) throw_last_error("cannot write the exec FIFO");
}

void enter_working_directory(const SpawnSpec& spec, const Prepared& p, int keep) {
    umask(022);
    // No host fd may reach the payload (runc CVE-2024-21626): close every one but `keep` (the
    // set-up channel, close-on-exec) *before* chdir, so that --chdir=/proc/self/fd/N cannot land
    // on a host directory, and check the result is inside our root.
    if (keep > 3) syscall(SYS_close_range, 3, static_cast<unsigned>(keep - 1), 0);
    syscall(SYS_close_range, static_cast<unsigned>(keep + 1), ~0U, 0);
    const std::string& cwd_path = p.guest.cwd;
    if (chdir(cwd_path.c_str()) < 0) {
        if (!spec.chdir.empty()) throw_last_error("cannot change directory to " + cwd_path);
        if (chdir("/") < 0) throw_last_error("chdir /");
    }
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd) || cwd[0] != '/')
        throw_errno(EXDEV, "the working directory " + cwd_path + " is outside the container");
}

[[noreturn]] void exec_payload(const Prepared& p) {
    std::vector<std::string> args = p.guest.argv, env = p.guest.env;
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::string path = p.guest.exec_path.empty() ? resolve_in_path(env, args[0]) : p.guest.exec_path;
    if (path.empty()) throw_errno(ENOENT, "cannot find '" + args[0] + "' in the container's PATH");

    // The payload starts with every signal at its default action and none blocked, as nspawn's
    // does: a signal ignored by whoever started spawn (nohup's SIGHUP, a background job's SIGINT)
    // would otherwise be inherited, and a shell cannot even trap a signal ignored on entry.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);  // glibc's own: EINVAL
    // The set-up channel closes on exec, which tells the parent that exec happened.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(path.c_str(), argv.data(), envp.data());
    throw_last_error("cannot execute " + path);
}

}  // namespace mk::core
