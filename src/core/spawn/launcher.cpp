#include "core/spawn/launcher.hpp"

#include <fcntl.h>
#include <linux/sched.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sched.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <grp.h>
#include <climits>
#include <unistd.h>

#include <linux/keyctl.h>
#include <linux/nsfs.h>
#include <linux/openat2.h>

#include <algorithm>
#include <iterator>
#include <array>
#include <cstring>
#include <optional>
#include <string_view>

#include "core/base/error.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/names.hpp"
#include "core/base/notify.hpp"
#include "core/base/passwd.hpp"
#include "core/base/run_lock.hpp"
#include "core/base/strings.hpp"
#include "core/base/tree_copy.hpp"
#include "core/kernel/capabilities.hpp"
#include "core/kernel/console.hpp"
#include "core/kernel/dissect.hpp"
#include "core/kernel/mount.hpp"
#include "core/kernel/seccomp.hpp"
#include "core/kernel/userns.hpp"
#include "core/spawn/bind_user.hpp"
#include "core/spawn/container_cgroup.hpp"
#include "core/spawn/credentials.hpp"
#include "core/spawn/guest_systemd.hpp"
#include "core/spawn/journal_link.hpp"
#include "core/spawn/mount_plan.hpp"
#include "core/spawn/network.hpp"
#include "core/spawn/option_values.hpp"

namespace mk::core {

// Where a guest's systemd lives, in the order -b looks (before /sbin/init, which may be any init).
constexpr std::array<std::string_view, 2> kSystemdInits = {"/usr/lib/systemd/systemd", "/lib/systemd/systemd"};
namespace {

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Messages from the child on the set-up channel.
enum class Msg : uint8_t { Error = 1, SetupDone = 2, Gated = 3 };  // Gated: machrun detached start

struct ErrorMsg {
    Msg type;
    int err;
    char text[480];
};

// ---- small helpers -------------------------------------------------------------------------

std::string uuid_to_string(const Uuid& u) {
    static const char* hex = "0123456789abcdef";
    std::string s;
    for (size_t i = 0; i < u.size(); i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
        s += hex[u[i] >> 4];
        s += hex[u[i] & 15];
    }
    return s;
}

std::optional<Uuid> parse_machine_id(std::string_view text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
    if (text.size() != 32) return std::nullopt;
    Uuid u{};
    bool zero = true;
    for (size_t i = 0; i < 16; i++) {
        auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; };
        int hi = hex(text[2 * i]), lo = hex(text[2 * i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        u[i] = static_cast<uint8_t>(hi << 4 | lo);
        zero = zero && u[i] == 0;
    }
    if (zero) return std::nullopt;
    return u;
}

Uuid random_uuid() {
    Uuid u{};
    if (getrandom(u.data(), u.size(), 0) != static_cast<ssize_t>(u.size())) throw_last_error("getrandom");
    u[6] = (u[6] & 0x0F) | 0x40;  // version 4
    u[8] = (u[8] & 0x3F) | 0x80;  // RFC 4122 variant
    return u;
}

// A TERM value passed into the container must not carry escape sequences (B-83).
std::string sanitize_term(const char* term) {
    if (!term || !*term || std::strlen(term) > 64) return "vt220";
    for (const char* p = term; *p; p++)
        if (!(isalnum(static_cast<unsigned char>(*p)) || *p == '-' || *p == '_' || *p == '.' || *p == '+'))
            return "vt220";
    return term;
}

// KEY=VALUE lines of an os-release file, with shell-style quotes removed.
std::vector<std::pair<std::string, std::string>> parse_os_release(const std::string& text) {
    std::vector<std::pair<std::string, std::string>> out;
    for (std::string_view line : lines(text)) {
        size_t eq = line.find('=');
        if (line.empty() || line[0] == '#' || eq == std::string_view::npos || eq == 0) continue;
        std::string key(line.substr(0, eq)), val(line.substr(eq + 1));
        bool ok = true;
        for (char c : key) ok = ok && (isalnum(static_cast<unsigned char>(c)) || c == '_');
        if (!ok) continue;
        if (val.size() >= 2 && (val[0] == '"' || val[0] == '\'') && val.back() == val[0]) val = val.substr(1, val.size() - 2);
        out.emplace_back(key, val);
    }
    return out;
}

bool is_executable_in_root(int root_fd, const std::string& path) {
    UniqueFd fd = open_in_root(root_fd, path, O_PATH);
    if (!fd) return false;
    struct stat st;
    return fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111);
}

void send_error(int chan, int err, const std::string& text) noexcept {
    ErrorMsg m{};
    m.type = Msg::Error;
    m.err = err;
    std::strncpy(m.text, text.c_str(), sizeof m.text - 1);
    (void)!send(chan, &m, sizeof m, MSG_NOSIGNAL);
}

// SetupDone carries the console pty master and the notify socket, when there are such.
void send_setup_done(int chan, int master, int notify) {
    char data[2] = {static_cast<char>(Msg::SetupDone), static_cast<char>((master >= 0 ? 1 : 0) | (notify >= 0 ? 2 : 0))};
    iovec iov{data, sizeof data};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    int fds[2];
    int n = 0;
    if (master >= 0) fds[n++] = master;
    if (notify >= 0) fds[n++] = notify;
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof fds)]{};
    if (n > 0) {
        mh.msg_control = ctrl;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * static_cast<size_t>(n));
        cmsghdr* c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * static_cast<size_t>(n));
        std::memcpy(CMSG_DATA(c), fds, sizeof(int) * static_cast<size_t>(n));
    }
    if (sendmsg(chan, &mh, MSG_NOSIGNAL) < 0) throw_last_error("cannot talk to the spawn process");
}

// The guest's notify socket, bound at /run/host/notify (nspawn's path, which systemd guests use).
UniqueFd bind_notify_socket(int root_fd) {
    UniqueFd host = open_in_root(root_fd, "/run/host", O_RDONLY | O_DIRECTORY, 0, RESOLVE_NO_SYMLINKS);
    if (!host) throw_last_error("cannot open /run/host");
    UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) throw_last_error("socket");
    int one = 1;
    if (setsockopt(fd.get(), SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) throw_last_error("SO_PASSCRED");
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::string path = "/proc/self/fd/" + std::to_string(host.get()) + "/notify";
    std::memcpy(sa.sun_path, path.c_str(), path.size());
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), static_cast<socklen_t>(sizeof sa)) < 0)
        throw_last_error("cannot bind /run/host/notify");
    return fd;
}

// ---- what the child needs, computed before clone ---------------------------------------------

struct Prepared {
    UniqueFd root_dir;  // O_PATH of the tree, in the host namespace
    std::string root_path;
    std::vector<MountStep> plan;
    std::vector<MountStep> cgroup_plan;  // /sys/fs/cgroup, mounted inside the guest's cgroup namespace
    UserRecord user;
    std::vector<std::string> argv;
    std::string exec_path;  // absolute path inside the container, or empty to search PATH
    std::vector<std::string> env;
    std::string hostname;
    std::string cwd;
    uint64_t bounding = kDefaultCapabilities;
    std::vector<BpfProgram> seccomp;
    bool use_pty = false;
    bool wait_for_parent = false;             // the child waits for placement/registration
    bool wait_for_network = false;            // the parent sets up links for us (ContainerNetwork)
    UniqueFd netns;                           // --network-namespace-path=, opened in the host
    bool boot = false;                        // the guest's init: cgroups of its own, notify socket
    bool init_notifies = false;               // the init will send READY=1 (systemd, or --notify-ready=yes)
    std::optional<CgroupLayout> cgroups;      // set when the guest gets its own cgroup namespace
    UniqueFd cgroup2_mount;                   // no cgroup2 on the host: spawn's own (plan_guest_cgroups)
    std::vector<std::string> overlay_workdirs;  // created for --overlay=, removed at exit
    std::vector<std::pair<std::string, UniqueFd>> image_mounts;  // -i: detached mounts, root first
    Uuid uuid{};
    std::optional<IdRange> userns;  // --private-users: the container's UID/GID range
    bool idmap = false;             // the root is an idmapped mount (ownership "map")
    RunLock uid_lock;               // holds the range while the machine runs
    UniqueFd userns_fd;             // the namespace, made anew for each run
    std::string host_os_release;
    std::string container_manager = "systemd-nspawn";
    UniqueFd pivot_dir;  // --pivot-root=: the new root inside the tree (O_PATH, host namespace)
    std::vector<BoundUser> bound_users;  // --bind-user=
    int exec_gate = -1;  // machrun detached start: DetachedLaunch::exec_gate
};

std::string resolve_in_path(const Prepared& p, const std::string& cmd) {
    if (cmd.find('/') != std::string::npos) return cmd;
    std::string path = kDefaultPath;
    for (const auto& e : p.env)
        if (e.starts_with("PATH=")) path = e.substr(5);
    for (std::string_view dir : split(path, ':')) {
        if (dir.empty()) continue;
        std::string cand = std::string(dir) + "/" + cmd;
        if (access(cand.c_str(), X_OK) == 0) return cand;
    }
    return {};
}

// ---- the child --------------------------------------------------------------------------------

void bring_up_loopback() {
    UniqueFd s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s) throw_last_error("socket");
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (ioctl(s.get(), SIOCGIFFLAGS, &ifr) < 0) throw_last_error("cannot read flags of lo");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s.get(), SIOCSIFFLAGS, &ifr) < 0) throw_last_error("cannot bring up lo");
}

bool root_is_read_only(const SpawnSpec& spec) {
    return spec.read_only || spec.volatile_mode == VolatileMode::State;
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

// --resolv-conf: which host file goes into the container's /etc/resolv.conf, and how.
void setup_resolv_conf(int root_fd, const SpawnSpec& spec) {
    using M = ResolvConfMode;
    M m = spec.resolv_conf;
    const bool read_only = root_is_read_only(spec);
    // A private network without a way out gets none; with spawn's veth/zone and NAT the host's works.
    const bool routed = spec.network_veth || !spec.network_zone.empty() || !spec.network_bridge.empty();
    if (m == M::Auto) m = spec.private_network && !routed ? M::Off : (read_only ? M::BindHost : M::CopyHost);
    if (m == M::Off) return;
    enum { Copy, Replace, Bind, Delete } action;
    const char* source = "/etc/resolv.conf";
    switch (m) {
    case M::CopyHost: action = Copy; break;
    case M::CopyStatic: action = Copy, source = "/usr/lib/systemd/resolv.conf"; break;
    case M::CopyUplink: action = Copy, source = "/run/systemd/resolve/resolv.conf"; break;
    case M::CopyStub: action = Copy, source = "/run/systemd/resolve/stub-resolv.conf"; break;
    case M::ReplaceHost: action = Replace; break;
    case M::ReplaceStatic: action = Replace, source = "/usr/lib/systemd/resolv.conf"; break;
    case M::ReplaceUplink: action = Replace, source = "/run/systemd/resolve/resolv.conf"; break;
    case M::ReplaceStub: action = Replace, source = "/run/systemd/resolve/stub-resolv.conf"; break;
    case M::BindHost: action = Bind; break;
    case M::BindStatic: action = Bind, source = "/usr/lib/systemd/resolv.conf"; break;
    case M::BindUplink: action = Bind, source = "/run/systemd/resolve/resolv.conf"; break;
    case M::BindStub: action = Bind, source = "/run/systemd/resolve/stub-resolv.conf"; break;
    case M::Delete: action = Delete; break;
    default: return;
    }
    UniqueFd etc = open_in_root(root_fd, "/etc", O_RDONLY | O_DIRECTORY);
    if (!etc) return;  // a tree without /etc gets nothing
    struct stat st;
    bool exists = fstatat(etc.get(), "resolv.conf", &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (action == Delete) {
        if (exists && unlinkat(etc.get(), "resolv.conf", 0) < 0) throw_last_error("cannot delete /etc/resolv.conf");
        return;
    }
    if (action == Bind) {
        if (access(source, F_OK) < 0) throw_errno(ENOENT, std::string("--resolv-conf: the host has no ") + source);
        if (!exists && read_only) return;  // nowhere to bind onto
        if (auto target = dangling_etc_symlink(root_fd, etc.get(), "resolv.conf")) {
            // auto: a tree that links its resolv.conf elsewhere (resolved's stub, say) manages its
            // own, as copy-* modes respect; an explicit bind-* was asked for and cannot be done.
            if (spec.resolv_conf == M::Auto) return;
            throw_dangling("--resolv-conf=" + std::string(to_string(m)), "resolv.conf", *target);
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
    if (action == Copy && exists && !S_ISREG(st.st_mode)) return;
    auto data = read_host_file(source);
    if (!data) return;
    if (exists && !S_ISREG(st.st_mode)) unlinkat(etc.get(), "resolv.conf", 0);
    write_file_at(etc.get(), "resolv.conf", *data, 0644);
}

void write_integration_files(int root_fd, int etc_root_fd, const Prepared& p, const SpawnSpec& spec) {
    // /run/host: os-release of the host and who manages this container, as nspawn provides them.
    UniqueFd host = open_in_root(root_fd, "/run/host", O_RDONLY | O_DIRECTORY, 0, RESOLVE_NO_SYMLINKS);
    if (!host) throw_last_error("cannot open /run/host");
    if (!p.host_os_release.empty()) write_file_at(host.get(), "os-release", p.host_os_release, 0444);
    write_file_at(host.get(), "container-manager", p.container_manager + "\n", 0444);
    write_file_at(host.get(), "container-uuid", uuid_to_string(p.uuid) + "\n", 0444);
    if (mkdirat(host.get(), "incoming", 0755) < 0 && errno != EEXIST) throw_last_error("mkdir /run/host/incoming");

    setup_resolv_conf(etc_root_fd, spec);

    // /etc/localtime: the host's zone, as a symlink when the tree has the zone file, else a copy.
    TimezoneMode tz = spec.timezone;
    if (root_is_read_only(spec) && tz != TimezoneMode::Bind) tz = TimezoneMode::Off;  // nothing may be written
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
        if (auto t = dangling_etc_symlink(root_fd, etc.get(), "localtime")) throw_dangling("--timezone=bind", "localtime", *t);
        MountStep b;
        b.kind = StepKind::Bind;
        b.source = "/etc/localtime";
        b.target = "/etc/localtime";
        b.attrs = MOUNT_ATTR_RDONLY;
        b.create_target = true;
        apply_mount_plan(root_fd, {b});
    }
}

// Opens a pty on the container's own devpts, binds its peer over /dev/console, and returns
// {master, peer}. Runs after pivot_root.
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

[[noreturn]] void stub_init(pid_t payload) {
    // PID 1 for --as-pid2: reaps every child and forwards signals to the payload; exits with the
    // payload's status. Holds no capabilities and is not dumpable.
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    set_capabilities(0, 0);
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, nullptr);
    for (;;) {
        siginfo_t si{};
        int sig = sigwaitinfo(&all, &si);
        if (sig < 0) continue;
        if (sig == SIGCHLD) {
            int status;
            pid_t w;
            while ((w = waitpid(-1, &status, WNOHANG)) > 0) {
                if (w != payload) continue;
                if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
                _exit(128 + WTERMSIG(status));
            }
        } else {
            kill(payload, sig);
        }
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
    return make_fs_mount("overlay",
                         {{"lowerdir", path}, {"upperdir", base + "/upper"}, {"workdir", base + "/work"}},
                         0, "overlay");
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

void raise_ambient_capabilities(uint64_t caps) {
    for (int c = 0; c < 64; c++)
        if ((caps & cap_bit(c)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0)
            throw_last_error("cannot raise the ambient capability " + capability_to_name(c));
}

[[noreturn]] void child_main(const SpawnSpec& spec, Prepared& p, int chan) noexcept {
    bool past_gate = false;  // machrun detached start
    try {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) throw_last_error("prctl(PDEATHSIG)");
        // If spawn died before the line above, nobody will ever reap us: the channel tells.
        pollfd pf{chan, 0, 0};
        if (poll(&pf, 1, 0) > 0 && (pf.revents & POLLHUP)) _exit(1);
        umask(0);
        if (p.netns && setns(p.netns.get(), CLONE_NEWNET) < 0) throw_last_error("cannot join the network namespace");

        if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0)
            throw_last_error("cannot make the mount namespace private");
        // The tree, cloned and attached over itself: root_fd is the new mount's root from here on.
        // The fd from before clone belongs to the host's mount namespace, which open_tree() refuses
        // to clone from: open the tree again, in ours.
        UniqueFd raw;
        UniqueFd tree;
        if (!p.image_mounts.empty()) {
            tree.reset(fcntl(p.image_mounts.front().second.get(), F_DUPFD_CLOEXEC, 3));
            if (p.idmap) {
                mount_attr attr{};
                attr.attr_set = MOUNT_ATTR_IDMAP;
                attr.userns_fd = static_cast<uint64_t>(p.userns_fd.get());
                if (mount_setattr(tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
                    throw_last_error("cannot make an idmapped mount of the image; use --private-users-ownership=off");
            }
        } else {
            tree = make_root(spec, p.root_path, p.idmap ? p.userns_fd.get() : -1, raw);
        }
        if (move_mount(tree.get(), "", AT_FDCWD, p.root_path.c_str(), MOVE_MOUNT_F_EMPTY_PATH) < 0)
            throw_last_error("cannot mount the container tree");
        int root = tree.get();
        for (size_t i = 1; i < p.image_mounts.size(); i++) {  // the image's /usr, /home, /srv, /var
            UniqueFd target = mkdir_p_in_root(root, p.image_mounts[i].first);
            attach_mount(p.image_mounts[i].second.get(), target.get(), "the image's " + p.image_mounts[i].first);
        }
        UniqueFd pivoted;
        if (!spec.pivot_root_new.empty()) {
            pivoted = pivot_into_subtree(root, p.root_path, spec.pivot_root_new, spec.pivot_root_old);
            root = pivoted.get();
        }
        if (spec.volatile_mode == VolatileMode::State) {
            // The tree read-only, with a throw-away /var.
            remount_read_only(root, false, "the container root");
            MountStep var;
            var.kind = StepKind::Fs;
            var.target = "/var";
            var.fstype = "tmpfs";
            var.options = {{"mode", "0755"}};
            var.attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
            var.api_target = true;
            apply_mount_plan(root, {var});
        }

        if (p.idmap && raw) precreate_mount_targets(raw.get(), p.plan);
        apply_mount_plan(root, p.plan, p.userns ? p.userns_fd.get() : -1);
        if (p.wait_for_parent) {
            // The parent registers the machine and places it in its groups meanwhile (a v1
            // cgroup.procs write waits for an RCU grace period, so the mounts above overlap with it);
            // only once placed does a new cgroup namespace root the guest's view at its own group.
            char placed;
            if (recv(chan, &placed, 1, 0) != 1) _exit(1);
            if (unshare(CLONE_NEWCGROUP) < 0) throw_last_error("cannot create a cgroup namespace");
            if (p.cgroups) apply_mount_plan(root, p.cgroup_plan);
        }
        // Through an idmapped mount host root may not create files (its UID is outside the map):
        // /etc is written through the tree's own mount, where on-disk 0 is the container's root.
        write_integration_files(root, p.idmap ? raw.get() : root, p, spec);  // raw: invalid for idmapped images
        {
            UniqueFd run_host = open_in_root(root, "/run/host", O_PATH | O_DIRECTORY, 0, RESOLVE_NO_SYMLINKS);
            mount_credentials(run_host.get(), spec.credentials, p.userns ? p.userns->shift : 0);
            write_bound_user_records(run_host.get(), p.bound_users, p.userns ? p.userns->shift : 0);
        }
        UniqueFd notify;
        if (p.boot) notify = bind_notify_socket(root);
        // /run/host is the host's word to the guest: read-only.
        {
            UniqueFd host = open_in_root(root, "/run/host", O_PATH | O_DIRECTORY, 0, RESOLVE_NO_SYMLINKS);
            UniqueFd hm = clone_tree(host.get(), "", true);
            remount_read_only(hm.get(), true, "/run/host");
            attach_mount(hm.get(), host.get(), "/run/host");
        }
        bind_user_homes(root, p.bound_users);  // writable homes under the read-only /run/host
        if (spec.read_only) remount_read_only(root, false, "the container root");

        if (fchdir(root) < 0) throw_last_error("fchdir");
        if (syscall(SYS_pivot_root, ".", ".") < 0) throw_last_error("pivot_root");
        if (umount2(".", MNT_DETACH) < 0) throw_last_error("cannot detach the host's root");
        if (chdir("/") < 0) throw_last_error("chdir /");
        tree.reset();
        pivoted.reset();

        UniqueFd console_peer;
        if (p.use_pty) {
            auto [master, peer] = setup_console();
            send_setup_done(chan, master.get(), notify.get());
            console_peer = std::move(peer);
        } else {
            send_setup_done(chan, -1, notify.get());
        }
        notify.reset();

        if (p.userns && console_peer && fchown(console_peer.get(), p.userns->shift, p.userns->shift + 5) < 0)
            throw_last_error("cannot hand the console to the container's root");
        if (sethostname(p.hostname.data(), p.hostname.size()) < 0) throw_last_error("sethostname");
        // A fresh session keyring: the kernel keyring is not namespaced.
        // Inside another container the keyring calls are usually filtered: nothing to isolate there.
        if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, 0, 0, 0, 0) < 0 && errno != EPERM && errno != ENOSYS &&
            errno != EACCES)
            throw_last_error("cannot join a new session keyring");
        if (p.wait_for_network) {
            // The parent configures our links meanwhile; it says when they are there.
            char ready;
            if (recv(chan, &ready, 1, 0) != 1) _exit(1);
        }
        if (spec.private_network) bring_up_loopback();

        if (setsid() < 0) throw_last_error("setsid");
        if (console_peer) {
            if (ioctl(console_peer.get(), TIOCSCTTY, 0) < 0) throw_last_error("cannot make the console the controlling terminal");
            for (int i = 0; i < 3; i++)
                if (dup2(console_peer.get(), i) < 0) throw_last_error("dup2");
            console_peer.reset();
        }

        for (size_t i = 0; i < spec.rlimits.size(); i++) {
            if (!spec.rlimits[i]) continue;
            rlimit rl{spec.rlimits[i]->soft, spec.rlimits[i]->hard};
            if (setrlimit(static_cast<__rlimit_resource>(i), &rl) < 0)
                throw_last_error("cannot set resource limit " + std::to_string(i));
        }
        if (spec.oom_score_adjust) {
            UniqueFd f(open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC));
            std::string v = std::to_string(*spec.oom_score_adjust);
            if (!f || write(f.get(), v.data(), v.size()) < 0) throw_last_error("cannot set the OOM score adjustment");
        }
        if (!spec.cpu_affinity.empty()) {
            cpu_set_t set;
            CPU_ZERO(&set);
            for (unsigned c : spec.cpu_affinity)
                if (c < CPU_SETSIZE) CPU_SET(c, &set);
            if (sched_setaffinity(0, sizeof set, &set) < 0) throw_last_error("cannot set the CPU affinity");
        }

        if (p.userns) {
            // Into the container's user namespace, with fresh mount, UTS and IPC namespaces owned by
            // it: everything mounted so far is locked there (MNT_LOCKED), so root inside cannot
            // unmount the masks and read-only mounts, and it may still mount on top of them.
            if (setns(p.userns_fd.get(), CLONE_NEWUSER) < 0) throw_last_error("cannot enter the user namespace");
            if (unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC) < 0)
                throw_last_error("cannot create namespaces in the user namespace");
            p.userns_fd.reset();
        }

        int r = drop_bounding_set(p.bounding);
        if (r < 0) throw_errno(-r, "cannot drop capabilities from the bounding set");

        if (spec.start_mode == StartMode::Pid2) {
            pid_t pid = fork();
            if (pid < 0) throw_last_error("fork");
            if (pid > 0) {
                close(chan);
                stub_init(pid);
            }
            if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) throw_last_error("prctl(PDEATHSIG)");
        }

        bool root_user = p.user.uid == 0;
        if (!spec.personality.empty() && personality(personality_number(spec.personality)) < 0)
            throw_last_error("cannot set the personality " + spec.personality);
        if (!spec.selinux_context.empty()) set_exec_label(spec.selinux_context);
        // The filter goes in while we still hold CAP_SYS_ADMIN; the calls after it are all allowed.
        r = seccomp_install(p.seccomp);
        if (r < 0) throw_errno(-r, "cannot install the system call filter");
        // Ambient capabilities survive the switch to another user only through keep-caps.
        if (spec.capabilities_ambient && !root_user && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
            throw_last_error("prctl(PR_SET_KEEPCAPS)");
        if (setgroups(p.user.groups.size(), p.user.groups.data()) < 0) throw_last_error("setgroups");
        if (setresgid(p.user.gid, p.user.gid, p.user.gid) < 0) throw_last_error("setresgid");
        if (setresuid(p.user.uid, p.user.uid, p.user.uid) < 0) throw_last_error("setresuid");
        r = set_capabilities(root_user ? p.bounding : spec.capabilities_ambient, spec.capabilities_ambient);
        if (r < 0) throw_errno(-r, "cannot set capabilities");
        raise_ambient_capabilities(spec.capabilities_ambient);
        // A credential change clears the parent-death signal: set it again.
        if ((!root_user || p.userns) && prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) throw_last_error("prctl(PDEATHSIG)");
        if (spec.no_new_privileges && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) throw_last_error("no_new_privs");

        umask(022);
        // ---- machrun detached start: begin
        if (p.exec_gate >= 0) {
            // From here the init outlives the runtime (its pid is recorded: the parent did so before
            // it said "placed"): no parent-death signal. Then wait for `start`.
            if (prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0) < 0) throw_last_error("prctl(PDEATHSIG)");
            char gated = static_cast<char>(Msg::Gated);
            if (send(chan, &gated, 1, MSG_NOSIGNAL) != 1) _exit(1);
            std::string gate_path = "/proc/self/fd/" + std::to_string(p.exec_gate);
            int gate = open(gate_path.c_str(), O_WRONLY | O_CLOEXEC);
            if (gate < 0) throw_last_error("cannot open the exec FIFO");
            char zero = 0;
            if (write(gate, &zero, 1) != 1) throw_last_error("cannot write the exec FIFO");
            close(gate);
            // Nobody reads the set-up channel any more: later errors go to the container's stderr.
            close(chan);
            chan = open("/dev/null", O_WRONLY | O_CLOEXEC);
            past_gate = true;
        }
        // ---- machrun detached start: end
        // No host fd may reach the payload (runc CVE-2024-21626): close every one but the set-up
        // channel (close-on-exec) *before* chdir, so that --chdir=/proc/self/fd/N cannot land on
        // a host directory, and check the result is inside our root.
        if (chan > 3) syscall(SYS_close_range, 3, static_cast<unsigned>(chan - 1), 0);
        syscall(SYS_close_range, static_cast<unsigned>(chan + 1), ~0U, 0);
        if (chdir(p.cwd.c_str()) < 0) {
            if (!spec.chdir.empty()) throw_last_error("cannot change directory to " + p.cwd);
            if (chdir("/") < 0) throw_last_error("chdir /");
        }
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd) || cwd[0] != '/')
            throw_errno(EXDEV, "the working directory " + p.cwd + " is outside the container");

        std::vector<char*> argv, envp;
        for (auto& a : p.argv) argv.push_back(a.data());
        argv.push_back(nullptr);
        for (auto& e : p.env) envp.push_back(e.data());
        envp.push_back(nullptr);
        std::string path = p.exec_path.empty() ? resolve_in_path(p, p.argv[0]) : p.exec_path;
        if (path.empty()) throw_errno(ENOENT, "cannot find '" + p.argv[0] + "' in the container's PATH");

        // The set-up channel closes on exec, which tells the parent that exec happened.
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        execve(path.c_str(), argv.data(), envp.data());
        throw_last_error("cannot execute " + path);
    } catch (const std::system_error& e) {
        if (past_gate) dprintf(STDERR_FILENO, "machrun: %s\n", e.what());  // machrun: nobody reads chan
        send_error(chan, e.code().value(), e.what());
    } catch (const std::exception& e) {
        if (past_gate) dprintf(STDERR_FILENO, "machrun: %s\n", e.what());
        send_error(chan, 0, e.what());
    }
    _exit(1);
}

// ---- the parent -------------------------------------------------------------------------------

// As nspawn's verify_arguments(): ambient capabilities go to a command, never to an init, and
// only those the container keeps anyway.
void check_ambient_capabilities(const SpawnSpec& s) {
    if (!s.capabilities_ambient) return;
    if (s.start_mode == StartMode::Boot)
        throw UsageError("--ambient-capability= is not useful with --boot: the init gets every capability anyway");
    uint64_t kept = (s.capabilities_all ? ~uint64_t{0} : kDefaultCapabilities | s.capabilities_add) & ~s.capabilities_drop;
    if (s.private_network) kept |= cap_bit(CAP_NET_ADMIN);
    if ((s.capabilities_ambient & kept) != s.capabilities_ambient)
        throw UsageError("--ambient-capability= is not covered by the container's capabilities; add them with --capability=");
}

bool selinux_enabled() { return access("/sys/fs/selinux/enforce", F_OK) == 0; }

void check_security_labels(const SpawnSpec& s) {
    if ((!s.selinux_context.empty() || !s.selinux_apifs_context.empty()) && !selinux_enabled())
        throw UsageError("-Z/-L (SELinux labels) need SELinux, which is not enabled on this host; drop them");
    if (!s.selinux_apifs_context.empty())
        throw UsageError("-L/--selinux-apifs-context= is not supported by spawn yet; remove it from the command line");
}

// Settings files and front ends can describe more than the launcher does yet. Refuse those
// rather than start a container that silently lacks what was asked for.
void check_supported(const SpawnSpec& s) {
    auto refuse = [](const std::string& what) {
        throw UsageError(what + " is not supported by spawn yet; remove it from the command line or .nspawn file");
    };
    if (!s.image.empty() && (s.ephemeral || s.volatile_mode != VolatileMode::No || !s.template_dir.empty()))
        refuse("--image= together with --ephemeral, --volatile or --template");
    if (!s.image.empty() && s.userns_ownership == UserNamespaceOwnership::Chown)
        refuse("--image= together with --private-users-ownership=chown");
    if (!s.template_dir.empty() && s.ephemeral) refuse("--template= together with --ephemeral");
    if (s.ephemeral && s.volatile_mode != VolatileMode::No) refuse("--ephemeral together with --volatile=");
    if ((s.ephemeral || s.volatile_mode != VolatileMode::No) && s.read_only) refuse("--read-only together with --ephemeral or --volatile=");
    for (const auto& o : s.overlays) {
        if (!o.upper.empty() && o.upper[0] == '+') refuse("--overlay= with an upper directory inside the container ('+')");
        for (const auto& l : o.lower)
            if (!l.empty() && l[0] == '+') refuse("--overlay= with a lower directory inside the container ('+')");
        if (o.upper.empty() && !o.read_only) refuse("--overlay= with a temporary upper directory (empty UPPER)");
    }
    if (!s.bind_users.empty() && s.userns_mode == UserNamespaceMode::No)
        throw UsageError("--bind-user= needs a user namespace: add -U or --private-users=");
    if (s.userns_mode != UserNamespaceMode::No && (s.ephemeral || s.volatile_mode != VolatileMode::No))
        refuse("--private-users together with --ephemeral or --volatile");
    check_ambient_capabilities(s);
    check_security_labels(s);
    for (const auto& b : s.binds)
        if ((b.idmap || b.idmap_root) && s.userns_mode == UserNamespaceMode::No)
            throw UsageError("--bind=" + b.source + ":…:idmap needs a user namespace: add -U or --private-users=");
}

// dm-verity needs the kernel's device-mapper; this project's CI kernels lack it (no
// CONFIG_BLK_DEV_DM), so the options are checked and then refused with the reason.
void check_verity(const SpawnSpec& s) {
    if (s.root_hash.empty() && s.root_hash_sig.empty() && s.verity_data.empty()) return;
    if (s.image.empty()) throw UsageError("--root-hash=, --root-hash-sig= and --verity-data= protect disk images: add -i IMAGE");
    auto devices = read_host_file("/proc/devices").value_or("");
    if (devices.find(" device-mapper\n") == std::string::npos)
        throw UsageError("--root-hash=: dm-verity needs device-mapper, which this kernel lacks (no device-mapper in /proc/devices)");
    throw UsageError("--root-hash=/--verity-data= (dm-verity) is not supported by spawn yet; run the image without them");
}

// Under the idmapped mount a file container root makes is host root's on disk and keeps its
// setuid bit: a host user who can walk to the tree could run it as root (issue 19 B). Only trees
// whose writes reach the disk count; an explicit --private-users-ownership=map is the user's call.
void check_idmapped_tree_is_private(const SpawnSpec& spec, int root_fd) {
    const bool writes_persist = spec.image.empty() && !spec.read_only && !spec.ephemeral &&
                                spec.volatile_mode == VolatileMode::No;
    if (!writes_persist || !reachable_by_other_users(root_fd)) return;
    std::string dir = spec.directory;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    const size_t slash = dir.rfind('/');
    const std::string parent = slash == std::string::npos ? "." : slash == 0 ? "/" : dir.substr(0, slash);
    if (spec.userns_ownership == UserNamespaceOwnership::Map) {
        fprintf(stderr, "Warning: %s can be reached by users other than root, and files container root makes "
                        "in it are host root's (--private-users-ownership=map).\n", dir.c_str());
        return;
    }
    throw UsageError(dir + " can be reached by users other than root, so a setuid file container root leaves in it "
                     "would give them root: chmod 0700 " + parent + ", or use --private-users-ownership=chown");
}

// Whether the file system under `dir_fd` takes an idmapped mount: tried on a detached clone.
bool idmap_supported(int dir_fd, const IdRange& r) {
    UniqueFd clone(open_tree(dir_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH));
    if (!clone) return false;
    UniqueFd ns = make_user_namespace(r);
    mount_attr attr{};
    attr.attr_set = MOUNT_ATTR_IDMAP;
    attr.userns_fd = static_cast<uint64_t>(ns.get());
    return mount_setattr(clone.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) == 0;
}

// --template=: a root directory that does not exist yet is made as a copy of the template, into a
// hidden temporary name next to it, renamed into place only when complete.
void populate_from_template(const SpawnSpec& spec) {
    if (spec.template_dir.empty() || access(spec.directory.c_str(), F_OK) == 0) return;
    UniqueFd src(open(spec.template_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!src) throw UsageError("cannot open template " + spec.template_dir + ": " + strerror(errno));
    auto [parent, name] = split_path(spec.directory);
    UniqueFd dir(open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir) throw UsageError("cannot create " + spec.directory + ": " + parent + ": " + strerror(errno));
    std::string tmp = ".#" + name + ".template-" + std::to_string(getpid());
    if (mkdirat(dir.get(), tmp.c_str(), 0700) < 0) throw_last_error("cannot create " + parent + "/" + tmp);
    try {
        UniqueFd dst(openat(dir.get(), tmp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!dst) throw_last_error("cannot open " + tmp);
        copy_tree(src.get(), dst.get());
        if (renameat2(dir.get(), tmp.c_str(), dir.get(), name.c_str(), RENAME_NOREPLACE) < 0)
            throw_last_error("cannot move the copy of the template into place at " + spec.directory);
    } catch (...) {
        remove_tree_nofollow_at(dir.get(), tmp);
        throw;
    }
}

// The booted guest's cgroup layout: the host's, the guest's systemd version (read from the tree)
// and nspawn's override variable decide it (plan_guest_cgroups).
void plan_cgroups(Prepared& p, const SpawnSpec& spec, int root) {
    const char* var = "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY";
    const char* value = getenv(var);
    if (!value || !*value) {
        var = "UNIFIED_CGROUP_HIERARCHY";  // nspawn's old name for it
        value = getenv(var);
    }
    std::optional<bool> override_ = parse_unified_override(value, var);
    std::optional<unsigned> version = guest_systemd_version(root);
    for (const auto& [where, fd] : p.image_mounts)  // an image's own /usr partition holds systemd
        if (!version && where == "/usr") version = guest_systemd_version(fd.get());
    GuestCgroupPlan plan = plan_guest_cgroups(detect_cgroup_layout(), version, override_);
    if (plan.layout.mode == CgroupMode::None) return;
    if (plan.own_cgroup2) p.cgroup2_mount = mount_own_cgroup2();
    if (plan.v1_host && !spec.quiet) {
        std::string controllers;
        if (p.cgroup2_mount)
            controllers = read_file_in_root(p.cgroup2_mount.get(), "cgroup.controllers", 4096).value_or("");
        else
            controllers = read_host_file("/sys/fs/cgroup" + plan.layout.unified_dir + "/cgroup.controllers", 4096).value_or("");
        fprintf(stderr, "%s\n", no_controllers_notice(controllers).c_str());
    }
    p.cgroups = plan.layout;
    p.cgroup_plan = build_cgroup_mount_plan(plan.layout);
}

// --link-journal: decided from the machine ID (--uuid, else the tree's) and what the host has at
// /var/log/journal/ID; host mode adds a bind mount to the spec the mount plan is built from.
SpawnSpec with_journal_link(const SpawnSpec& spec, int root, const std::string& root_path) {
    SpawnSpec out = spec;
    if (spec.link_journal == LinkJournalMode::No) return out;
    std::optional<Uuid> id = spec.uuid;
    if (!id) id = parse_machine_id(read_file_in_root(root, "/etc/machine-id", 4096).value_or(""));
    auto host_id = parse_machine_id(read_host_file("/etc/machine-id", 4096).value_or(""));
    bool kept = spec.image.empty() && !spec.ephemeral && spec.volatile_mode == VolatileMode::No;
    HostJournalPath state = HostJournalPath::absent;
    if (id) state = inspect_host_journal_path("/var/log/journal/" + machine_id_hex(*id), root_path + "/var/log/journal/" + machine_id_hex(*id));
    auto plan = plan_journal_link(spec.link_journal, id, host_id, state, kept);
    if (auto bind = apply_journal_link(plan, root, root_path)) out.binds.push_back(*bind);
    return out;
}

Prepared prepare(const SpawnSpec& spec, bool registering) {
    check_supported(spec);
    check_verity(spec);
    populate_from_template(spec);
    Prepared p;
    p.root_path = spec.directory;
    if (!spec.image.empty()) {
        // The image's file systems as detached mounts, made here (the loop devices detach themselves
        // when the last of these goes, however spawn ends) and attached by the child in its own
        // mount namespace, over /tmp there: nothing appears in the host's mount table.
        DissectedImage img = dissect_image(spec.image, spec.read_only);
        for (auto& fs : img.filesystems) {
            std::vector<std::pair<std::string, std::string>> o;
            if (img.read_only) o.emplace_back("ro", "");
            UniqueFd m = make_fs_mount(fs.fstype.c_str(), o, img.read_only ? MOUNT_ATTR_RDONLY : 0, fs.device.c_str());
            p.image_mounts.emplace_back(fs.mount_point, std::move(m));
        }
        p.root_dir.reset(fcntl(p.image_mounts.front().second.get(), F_DUPFD_CLOEXEC, 3));
        p.root_path = "/tmp";
    } else {
        p.root_dir.reset(open(spec.directory.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    }
    if (!p.root_dir) {
        if (errno == ENOENT) throw UsageError("directory " + spec.directory + " does not exist; pass an OS tree with -D");
        if (errno == ENOTDIR) throw UsageError(spec.directory + " is not a directory; pass an OS tree with -D");
        throw_last_error("cannot open " + spec.directory);
    }
    int root = p.root_dir.get();
    if (!spec.network_namespace_path.empty()) {
        p.netns.reset(open(spec.network_namespace_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
        if (!p.netns) throw_last_error("cannot open network namespace " + spec.network_namespace_path);
        if (ioctl(p.netns.get(), NS_GET_NSTYPE) != CLONE_NEWNET)
            throw UsageError(spec.network_namespace_path + " is not a network namespace");
    }

    if (spec.userns_mode != UserNamespaceMode::No) {
        IdRange r;
        r.count = spec.uid_range;
        if (spec.userns_mode == UserNamespaceMode::Identity) {
            r.shift = 0;
        } else if (spec.userns_mode == UserNamespaceMode::Fixed) {
            r.shift = spec.uid_shift;
            if (r.shift == kUidInvalid) {
                // "yes": the range starts at the owner of the tree's root directory, as nspawn.
                struct stat st;
                if (fstat(root, &st) < 0) throw_last_error("stat " + spec.directory);
                r.shift = st.st_uid;
                if (r.shift & 0xFFFF)
                    throw UsageError("--private-users=yes: the owner of " + spec.directory + " (" + std::to_string(r.shift) +
                                     ") is not a multiple of 65536; pass a range with --private-users=UID[:COUNT]");
            }
            if (r.shift != 0) {
                p.uid_lock = lock_uid_range(r.shift);
                if (!p.uid_lock)
                    throw UsageError("UID range " + std::to_string(r.shift) + " is in use by another running machine");
            }
        } else {  // pick: deterministic per machine name, skipping ranges other machines hold
            for (unsigned attempt = 0; attempt < 256 && !p.uid_lock; attempt++) {
                r.shift = pick_uid_base(spec.machine_name, attempt);
                p.uid_lock = lock_uid_range(r.shift);
            }
            if (!p.uid_lock) throw UsageError("no free UID range for --private-users=pick");
        }
        p.userns = r;
        UserNamespaceOwnership own = spec.userns_ownership;
        if (own == UserNamespaceOwnership::Auto) {
            // map where the tree's file system takes idmapped mounts, chown where it does not.
            own = r.shift == 0                          ? UserNamespaceOwnership::Off
                  : idmap_supported(root, r)            ? UserNamespaceOwnership::Map
                                                        : UserNamespaceOwnership::Chown;
        }
        if (own == UserNamespaceOwnership::Chown) {
            // The tree's owners themselves move into the range (and back, or on, for another range).
            UniqueFd rw(open(spec.directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
            if (!rw) throw_last_error("cannot open " + spec.directory);
            shift_tree_ownership(rw.get(), r);
        }
        p.idmap = own == UserNamespaceOwnership::Map && r.shift != 0;
        if (p.idmap) check_idmapped_tree_is_private(spec, root);
        p.plan = build_mount_plan(with_journal_link(spec, root, p.root_path), r.shift);
    } else {
        p.plan = build_mount_plan(with_journal_link(spec, root, p.root_path));
    }
    for (const auto& o : spec.overlays) {
        if (o.upper.empty()) continue;
        std::string w = overlay_workdir(o.upper);
        if (mkdir(w.c_str(), 0700) < 0 && errno != EEXIST) throw_last_error("cannot create the overlay work directory " + w);
        p.overlay_workdirs.push_back(w);
    }

    if (!spec.pivot_root_new.empty()) {
        if (p.idmap) throw UsageError("--pivot-root= cannot be combined with an idmapped tree; add --private-users-ownership=off or chown");
        p.pivot_dir = open_in_root(root, spec.pivot_root_new, O_PATH | O_DIRECTORY);
        if (!p.pivot_dir)
            throw UsageError("--pivot-root=" + spec.pivot_root_new + ": no such directory in the tree (" + strerror(errno) + ")");
        root = p.pivot_dir.get();  // the guest's files (passwd, init, machine-id) are the new root's
    }
    // The user, from the tree's own passwd.
    auto passwd = read_file_in_root(root, "/etc/passwd").value_or("");
    std::string user = spec.user.empty() ? "root" : spec.user;
    auto rec = find_user(passwd, user);
    if (!rec) {
        if (spec.user.empty()) rec = find_user("", "0");
        else throw UsageError("user '" + spec.user + "' does not exist in the container's /etc/passwd");
    }
    p.user = *rec;
    if (!spec.bind_users.empty()) {
        std::vector<HostUser> host;
        std::string host_passwd = read_host_file("/etc/passwd").value_or("");
        std::string host_group = read_host_file("/etc/group").value_or("");
        for (const auto& n : spec.bind_users) host.push_back(lookup_host_user(n, host_passwd, host_group));
        p.bound_users = plan_bound_users(host, passwd, read_file_in_root(root, "/etc/group").value_or(""), *p.userns);
    }
    if (p.user.uid != 0 || !spec.user.empty()) {
        auto group = read_file_in_root(root, "/etc/group").value_or("");
        p.user.groups = find_supplementary_groups(group, p.user.name, p.user.gid);
    }

    // What to run.
    if (spec.start_mode == StartMode::Boot) {
        std::string init = find_init(root);
        if (init.empty())
            throw UsageError("no init found in " + spec.directory +
                             " (looked for /usr/lib/systemd/systemd, /lib/systemd/systemd, /sbin/init); drop -b to run a command");
        p.exec_path = init;
        // systemd always answers $NOTIFY_SOCKET; other inits (busybox, sysvinit) never do, so for
        // them "ready" is the start, as nspawn's --notify-ready=no has it.
        p.init_notifies = spec.notify_ready || std::ranges::find(kSystemdInits, init) != kSystemdInits.end();
        p.argv.push_back(init);
        for (const auto& a : spec.argv) p.argv.push_back(a);
    } else if (spec.argv.empty()) {
        std::string shell = p.user.shell;
        if (!is_executable_in_root(root, shell)) shell = "/bin/sh";
        if (!is_executable_in_root(root, shell))
            throw UsageError("no usable shell in " + spec.directory + ": neither " + p.user.shell +
                             " nor /bin/sh exists there; give a command to run");
        p.exec_path = shell;
        std::string base = shell.substr(shell.rfind('/') + 1);
        p.argv.push_back("-" + base);  // a login shell, as nspawn runs it
    } else {
        p.argv = spec.argv;
        if (spec.argv[0].find('/') != std::string::npos) p.exec_path = spec.argv[0];
    }

    p.hostname = spec.hostname.empty() ? spec.machine_name : spec.hostname;
    p.cwd = !spec.chdir.empty() ? spec.chdir : (spec.start_mode == StartMode::Boot ? "/" : p.user.home);

    p.bounding = spec.capabilities_all ? ~uint64_t{0} : kDefaultCapabilities;
    if (spec.private_network) p.bounding |= cap_bit(CAP_NET_ADMIN);
    p.bounding |= spec.capabilities_add;
    p.bounding &= ~spec.capabilities_drop;
    // A manager that lacks a capability itself (CAP_SYS_RESOURCE on some hosts) cannot grant it.
    p.bounding &= current_permitted_capabilities();

    // Precompiled at build time for the default policy, so a start only loads it.
    SeccompPolicy policy;
    policy.retained_caps = p.bounding;
    policy.allow_extra = spec.syscall_allow;
    policy.deny = spec.syscall_deny;
    p.seccomp = seccomp_programs_for(policy);
    if (spec.suppress_sync) std::ranges::move(seccomp_suppress_sync_programs(), std::back_inserter(p.seccomp));

    switch (spec.console) {
    case ConsoleMode::Interactive:
    case ConsoleMode::ReadOnly:
    case ConsoleMode::Passive:
        p.use_pty = true;
        break;
    default:
        p.use_pty = false;
    }

    if (const char* cm = getenv("SYSTEMD_NSPAWN_CONTAINER_SERVICE"); cm && *cm && getuid() == 0)
        p.container_manager = cm;
    p.host_os_release = read_host_file("/etc/os-release").value_or(read_host_file("/usr/lib/os-release").value_or(""));

    // The environment: nspawn's set, so that guests recognise their container.
    // The machine's UUID: --uuid, else the tree's own machine ID (so that both agree), else random.
    Uuid uuid{};
    if (spec.uuid) {
        uuid = *spec.uuid;
    } else if (auto id = parse_machine_id(read_file_in_root(root, "/etc/machine-id", 4096).value_or(""))) {
        uuid = *id;
    } else {
        uuid = random_uuid();
    }
    p.uuid = uuid;
    p.boot = spec.start_mode == StartMode::Boot;
    if (p.boot) {
        plan_cgroups(p, spec, root);
    }
    p.env.push_back(std::string("PATH=") + kDefaultPath);
    p.env.push_back("container=" + p.container_manager);
    p.env.push_back("container_uuid=" + uuid_to_string(uuid));
    p.env.push_back("HOME=" + p.user.home);
    p.env.push_back("USER=" + p.user.name);
    p.env.push_back("LOGNAME=" + p.user.name);
    p.env.push_back("TERM=" + (spec.console == ConsoleMode::Pipe ? std::string("dumb") : sanitize_term(getenv("TERM"))));
    if (spec.start_mode != StartMode::Boot) p.env.push_back("LANG=C.UTF-8");
    if (spec.start_mode == StartMode::Boot) p.env.push_back("NOTIFY_SOCKET=/run/host/notify");
    if (!spec.credentials.empty()) p.env.push_back(std::string("CREDENTIALS_DIRECTORY=") + kCredentialsDirectory);
    for (auto& [k, v] : parse_os_release(p.host_os_release)) p.env.push_back("container_host_" + [&] {
        std::string lk = k;
        for (char& c : lk) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
        return lk;
    }() + "=" + v);
    for (const auto& e : spec.setenv) {
        std::string name = e.substr(0, e.find('='));
        std::erase_if(p.env, [&](const std::string& x) { return x.compare(0, name.size() + 1, name + "=") == 0; });
        p.env.push_back(e);
    }
    p.wait_for_parent = registering || p.cgroups.has_value();
    p.wait_for_network = ContainerNetwork::needed(spec);
    return p;
}


// Receives one message from the child: returns false on EOF (the child exec'd or died).
// Throws the child's error as std::runtime_error (its text already names the errno).
bool receive(int chan, Msg& type, UniqueFd& master, UniqueFd& notify) {
    ErrorMsg m{};
    iovec iov{&m, sizeof m};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    alignas(cmsghdr) char ctrl[CMSG_SPACE(2 * sizeof(int))]{};
    mh.msg_control = ctrl;
    mh.msg_controllen = sizeof ctrl;
    ssize_t n;
    do n = recvmsg(chan, &mh, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0) return false;
    std::vector<int> fds;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int f;
                std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
                fds.push_back(f);
            }
        }
    type = m.type;
    if (type == Msg::Error) {
        for (int f : fds) close(f);
        m.text[sizeof m.text - 1] = 0;
        throw std::runtime_error(m.text);
    }
    auto flags = static_cast<uint8_t>(reinterpret_cast<const char*>(&m)[1]);
    size_t i = 0;
    if ((flags & 1) && i < fds.size()) master.reset(fds[i++]);
    if ((flags & 2) && i < fds.size()) notify.reset(fds[i++]);
    for (; i < fds.size(); i++) close(fds[i]);
    return true;
}

struct Outcome {
    int exit_code = 0;
    bool reboot = false;
};

// How the container's PID 1 ended. A booted guest that calls reboot(2) in its PID namespace is
// killed by SIGHUP (restart) or SIGINT (power-off, halt): that is how the kernel reports them.
Outcome interpret_exit(const siginfo_t& si, bool boot) {
    if (si.si_code == CLD_EXITED) return {si.si_status, false};
    if (boot && si.si_status == SIGINT) return {0, false};
    if (boot && si.si_status == SIGHUP) return {0, true};
    return {128 + si.si_status, false};
}

// With MK_SPAWN_TIMING set, spawn reports how long its own work took until the payload (or the
// guest's init) was exec'd: the figure the boot benchmark quotes.
void report_exec_timing(std::chrono::steady_clock::time_point since) {
    static const bool enabled = getenv("MK_SPAWN_TIMING") != nullptr;
    if (!enabled) return;
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - since).count();
    fprintf(stderr, "spawn: payload exec'd %.3f ms after spawn started\n", static_cast<double>(us) / 1000.0);
}

// Where spawn puts a booted guest itself: machine.slice/machine-NAME.scope as machined would, or,
// under a service manager (--keep-unit), a payload group below spawn's own unit, as nspawn does.
std::string own_cgroup_path(const SpawnSpec& spec) {
    if (!spec.keep_unit) {
        std::string slice = spec.slice.empty() ? "machine.slice" : spec.slice;
        return "/" + slice + "/" + machine_scope_name(spec.machine_name);
    }
    std::string self = read_host_file("/proc/self/cgroup").value_or("");
    size_t at = self.find("0::");
    std::string path = at == std::string::npos ? "" : self.substr(at + 3, self.find('\n', at) - at - 3);
    if (path == "/") path.clear();
    return path + "/payload";
}

Outcome run_once(const SpawnSpec& spec, Prepared& p, const LaunchHooks& hooks,
                 std::chrono::steady_clock::time_point started) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) throw_last_error("socketpair");
    UniqueFd chan(sv[0]), child_chan(sv[1]);

    if (p.userns) {
        std::vector<IdMapping> uids, gids;
        for (const auto& u : p.bound_users) {
            uids.push_back({u.id, static_cast<uint32_t>(u.host.uid)});
            gids.push_back({u.id, static_cast<uint32_t>(u.host.gid)});
        }
        p.userns_fd = make_user_namespace(*p.userns, uids, gids);
    }

    // A booted guest gets groups of its own: machd's scope when it registers us, else ours, made
    // before clone so the child can be born into the cgroup2 one.
    const bool registering = static_cast<bool>(hooks.register_machine);
    std::optional<ContainerCgroup> cgroup;
    auto make_groups = [&](const CgroupLayout& layout) {
        UniqueFd own;
        if (p.cgroup2_mount) {
            own.reset(fcntl(p.cgroup2_mount.get(), F_DUPFD_CLOEXEC, 3));
            if (!own) throw_last_error("cannot duplicate the cgroup2 mount");
        }
        cgroup.emplace(layout, own_cgroup_path(spec), "/sys/fs/cgroup", std::move(own));
        cgroup->arm_reaper();
    };
    if (p.cgroups && !registering) make_groups(*p.cgroups);

    // Signals are handled through a signalfd; the child restores the mask before exec.
    sigset_t mask, old_mask;
    sigemptyset(&mask);
    for (int sig : {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGWINCH, SIGQUIT}) sigaddset(&mask, sig);
    sigprocmask(SIG_BLOCK, &mask, &old_mask);
    UniqueFd sfd(signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sfd) throw_last_error("signalfd");

    clone_args ca{};
    ca.flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_PIDFD;
    if (!p.wait_for_parent) ca.flags |= CLONE_NEWCGROUP;  // else the child unshares it once placed
    if (spec.private_network && !p.netns) ca.flags |= CLONE_NEWNET;
    int pidfd_raw = -1;
    ca.pidfd = reinterpret_cast<uint64_t>(&pidfd_raw);
    ca.exit_signal = SIGCHLD;
    bool into_cgroup = cgroup && cgroup->unified_fd() >= 0;
    if (into_cgroup) {
        // Straight into the cgroup2 group: no cgroup.procs write, no RCU grace period to wait for.
        ca.flags |= CLONE_INTO_CGROUP;
        ca.cgroup = static_cast<uint64_t>(cgroup->unified_fd());
    }
    long pid = syscall(SYS_clone3, &ca, sizeof ca);
    if (pid < 0 && into_cgroup) {
        ca.flags &= ~static_cast<uint64_t>(CLONE_INTO_CGROUP);
        into_cgroup = false;
        pid = syscall(SYS_clone3, &ca, sizeof ca);
    }
    if (pid < 0) throw_last_error("cannot create the container's namespaces");
    if (pid == 0) {
        chan.reset();
        sfd.reset();
        signal(SIGPIPE, SIG_DFL);
        child_main(spec, p, child_chan.get());
    }
    UniqueFd pidfd(pidfd_raw);
    child_chan.reset();
    auto kill_child = [&](int sig) { syscall(SYS_pidfd_send_signal, pidfd.get(), sig, nullptr, 0); };
    // A set-up step in the parent failed: the child must not run on half set up.
    auto abandon_child = [&] {
        kill_child(SIGKILL);
        siginfo_t si{};
        waitid(P_PIDFD, static_cast<id_t>(pidfd.get()), &si, WEXITED);
        sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    };

    bool registered = false;
    if (p.wait_for_parent) {
        try {
            if (hooks.detached && hooks.detached->cloned) hooks.detached->cloned(static_cast<pid_t>(pid));  // machrun
            registered = registering && hooks.register_machine(static_cast<pid_t>(pid), p.uuid);
            // machd's scope is the guest's group when machd made one (CreateMachine). Under a
            // service manager (--keep-unit, RegisterMachine) the unit is spawn's own, and the guest
            // gets a payload group below it, as under nspawn: with -U that is the group its root owns.
            const bool machd_scope = registered && !spec.keep_unit;
            if (p.cgroups && !cgroup && !machd_scope) {
                make_groups(*p.cgroups);
            } else if (p.cgroups && !cgroup && p.cgroup2_mount) {
                // machd's scope lives in the host's hierarchies; a host with no cgroup2 mounted
                // gets the guest's cgroup2 group from spawn's own mount.
                CgroupLayout cgroup2_only;
                cgroup2_only.mode = CgroupMode::Unified;
                make_groups(cgroup2_only);
            }
            if (cgroup) cgroup->attach(static_cast<pid_t>(pid), !into_cgroup);
            if (p.userns && p.cgroups) {
                if (cgroup) cgroup->delegate_to(p.userns->shift, p.userns->shift);
                if (machd_scope) {
                    // machd made the scope: hand over the groups it made where we know them.
                    for (const char* h : {"/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup"}) {
                        std::string dir = std::string(h) + own_cgroup_path(spec);
                        if (access((dir + "/cgroup.procs").c_str(), F_OK) == 0)
                            chown_cgroup_dir(dir, p.userns->shift, p.userns->shift);
                    }
                }
            }
        } catch (...) {
            abandon_child();
            throw;
        }
        char placed = 1;
        (void)!send(chan.get(), &placed, 1, MSG_NOSIGNAL);
    }

    ContainerNetwork network;  // torn down when run_once returns, after the child is reaped
    if (p.wait_for_network) {
        try {
            network.setup(spec, static_cast<pid_t>(pid));
        } catch (...) {
            abandon_child();
            throw;
        }
        char ready = 1;
        (void)!send(chan.get(), &ready, 1, MSG_NOSIGNAL);
    }

    UniqueFd master, notify, peer_hold;
    std::optional<RawTerminal> raw;
    bool interactive = spec.console == ConsoleMode::Interactive;
    bool relay_out = spec.console == ConsoleMode::Interactive || spec.console == ConsoleMode::ReadOnly;
    bool stdin_open = interactive;
    bool chan_open = true;
    bool master_open = false;
    int term_count = 0;
    EscapeDetector escape;
    std::optional<Outcome> outcome;
    std::string setup_error;

    auto told_ready = [&](const std::string& status) {
        notify_manager("READY=1\nSTATUS=" + status + "\nX_NSPAWN_LEADER_PID=" + std::to_string(pid));
    };
    // The machine manager's view of readiness (machctl wait) is the guest's, independent of when
    // spawn tells its own service manager (that follows --notify-ready, as nspawn's does).
    UniqueFd reporter;  // pidfd of the helper telling the manager
    bool reported = false;
    auto report_ready = [&] {
        if (reported || !registered || !hooks.report_ready) return;
        reported = true;
        reporter = hooks.report_ready();
    };
    auto reap_reporter = [&] {
        siginfo_t si{};
        waitid(P_PIDFD, static_cast<id_t>(reporter.get()), &si, WEXITED);
        reporter.reset();
    };

    while (!outcome) {
        pollfd fds[7];
        int n = 0;
        fds[n++] = {pidfd.get(), POLLIN, 0};
        fds[n++] = {sfd.get(), POLLIN, 0};
        int chan_i = -1, master_i = -1, stdin_i = -1, notify_i = -1, reporter_i = -1;
        if (chan_open) chan_i = n, fds[n++] = {chan.get(), POLLIN, 0};
        if (master_open) master_i = n, fds[n++] = {master.get(), POLLIN, 0};
        if (stdin_open && master) stdin_i = n, fds[n++] = {STDIN_FILENO, POLLIN, 0};
        if (notify) notify_i = n, fds[n++] = {notify.get(), POLLIN, 0};
        if (reporter) reporter_i = n, fds[n++] = {reporter.get(), POLLIN, 0};
        if (poll(fds, static_cast<nfds_t>(n), -1) < 0) {
            if (errno == EINTR) continue;
            throw_last_error("poll");
        }

        if (chan_i >= 0 && fds[chan_i].revents) {
            try {
                Msg type{};
                if (!receive(chan.get(), type, master, notify)) {
                    chan_open = false;
                    report_exec_timing(started);
                } else if (type == Msg::Gated && hooks.detached) {  // ---- machrun detached start: begin
                    try {
                        hooks.detached->gated(static_cast<pid_t>(pid), std::move(master));
                    } catch (...) {
                        abandon_child();
                        throw;
                    }
                    sigprocmask(SIG_SETMASK, &old_mask, nullptr);
                    return Outcome{};  // the init lives on, waiting at the gate; its groups stay
                } else if (type == Msg::SetupDone && hooks.detached) {
                    // The master goes to the engine at Gated.  ---- machrun detached start: end
                } else if (type == Msg::SetupDone) {
                    if (master) {
                        fcntl(master.get(), F_SETFL, O_NONBLOCK);
                        // Hold the peer open ourselves: a guest init closes and reopens its console
                        // while it boots, and a master whose peer nobody holds reads EIO.
                        peer_hold.reset(ioctl(master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
                        master_open = true;
                        if (interactive) {
                            raw.emplace(STDIN_FILENO);
                            copy_window_size(STDIN_FILENO, master.get());
                        }
                    }
                    if (!spec.notify_ready) told_ready("Container running.");
                    if (!p.init_notifies) report_ready();
                }
            } catch (const std::runtime_error& e) {
                setup_error = e.what();
                chan_open = false;
            }
        }

        if (notify_i >= 0 && fds[notify_i].revents) {
            pid_t sender;
            std::string text;
            while (receive_notification(notify.get(), sender, text)) {
                if (sender != pid) continue;  // only the guest's PID 1 speaks for the container
                if (notification_field(text, "READY") == "1") {
                    if (spec.notify_ready) told_ready("Container running.");
                    report_ready();
                }
                if (std::string st = notification_field(text, "STATUS"); !st.empty())
                    notify_manager("STATUS=Container running: " + st);
            }
        }

        if (reporter_i >= 0 && fds[reporter_i].revents) reap_reporter();

        if (master_i >= 0 && (fds[master_i].revents & (POLLIN | POLLHUP | POLLERR))) {
            char buf[16384];
            ssize_t r = read(master.get(), buf, sizeof buf);
            if (r > 0) {
                if (relay_out) write_all(STDOUT_FILENO, buf, static_cast<size_t>(r));
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                // EIO: every holder of the peer has closed it; stop polling, or poll would spin.
                master_open = false;
            }
        }

        if (stdin_i >= 0 && fds[stdin_i].revents) {
            char buf[4096];
            ssize_t r = read(STDIN_FILENO, buf, sizeof buf);
            if (r > 0) {
                if (escape.feed(buf, static_cast<size_t>(r), std::chrono::steady_clock::now())) {
                    raw.reset();
                    if (!spec.quiet) fprintf(stderr, "\nContainer %s terminated by ^]^]^].\n", spec.machine_name.c_str());
                    kill_child(SIGKILL);
                } else {
                    write_all(master.get(), buf, static_cast<size_t>(r));
                }
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                stdin_open = false;
            }
        }

        if (fds[1].revents & POLLIN) {
            signalfd_siginfo si;
            while (read(sfd.get(), &si, sizeof si) == sizeof si) {
                int sig = static_cast<int>(si.ssi_signo);
                if (sig == SIGWINCH) {
                    if (master && interactive) copy_window_size(STDIN_FILENO, master.get());
                } else if (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT) {
                    if (++term_count > 1) {
                        kill_child(SIGKILL);
                    } else {
                        int fwd = spec.kill_signal > 0 ? spec.kill_signal : sig;
                        if (p.boot && !spec.quiet)
                            fprintf(stderr, "Trying to halt container. Send SIGTERM again to trigger immediate termination.\n");
                        kill_child(fwd);
                    }
                } else if (sig == SIGHUP) {
                    kill_child(SIGHUP);
                }
            }
        }

        if (fds[0].revents & POLLIN) {
            siginfo_t si{};
            if (waitid(P_PIDFD, static_cast<id_t>(pidfd.get()), &si, WEXITED) == 0) {
                // Drain what the container printed last.
                if (master && relay_out) {
                    char buf[16384];
                    ssize_t r;
                    while ((r = read(master.get(), buf, sizeof buf)) > 0) write_all(STDOUT_FILENO, buf, static_cast<size_t>(r));
                }
                // A set-up error may still be queued on the channel.
                if (chan_open && setup_error.empty()) {
                    try {
                        Msg type{};
                        UniqueFd m2, n2;
                        while (receive(chan.get(), type, m2, n2)) {}
                    } catch (const std::runtime_error& e) {
                        setup_error = e.what();
                    }
                }
                outcome = interpret_exit(si, p.boot);
            }
        }
    }

    raw.reset();
    if (reporter) reap_reporter();  // bounded by the helper's bus timeout
    sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    if (cgroup) cgroup->remove();
    if (!setup_error.empty()) throw std::runtime_error(setup_error);
    return *outcome;
}

}  // namespace

std::string find_init(int root_fd) {
    for (std::string_view c : kSystemdInits)
        if (is_executable_in_root(root_fd, std::string(c))) return std::string(c);
    if (is_executable_in_root(root_fd, "/sbin/init")) return "/sbin/init";
    return {};
}

Launcher::Launcher(SpawnSpec spec, LaunchHooks hooks) : spec_(std::move(spec)), hooks_(std::move(hooks)) {
    // A systemd init takes SIGTERM as "re-execute", not "stop": ask it to power off instead.
    if (spec_.start_mode == StartMode::Boot && spec_.kill_signal == 0) spec_.kill_signal = SIGRTMIN + 3;
    if (ContainerNetwork::needed(spec_)) spec_.private_network = true;  // as nspawn: links need a netns
}

int Launcher::run() {
    if (geteuid() != 0) throw UsageError("spawn must be run as root (it creates namespaces and mounts)");
    // As nspawn's notice: on a terminal, pipe mode hands the payload the user's terminal itself.
    if (spec_.console == ConsoleMode::Pipe && !spec_.quiet && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO))
        fprintf(stderr, "Console mode 'pipe' selected, but standard input and output are a terminal: the container "
                        "gets no terminal of its own and no job control (--console=interactive gives both). "
                        "Proceeding anyway.\n");
    Prepared p = prepare(spec_, static_cast<bool>(hooks_.register_machine));
    if (hooks_.detached) {  // machrun: the init waits until its pid is recorded
        p.wait_for_parent = true;
        p.exec_gate = hooks_.detached->exec_gate;
    }
    cap_last_cap();  // cache before clone
    signal(SIGPIPE, SIG_IGN);

    // In a root-only directory of the host (run_lock.hpp): no container can take a name first.
    RunLock name_lock = RunLock::try_take("machine/" + spec_.machine_name);
    if (!name_lock)
        throw UsageError("machine name '" + spec_.machine_name + "' is already in use by a running container; pick another with -M");
    sweep_stale_run_locks();  // files of spawns that were SIGKILLed before they could remove them
    // Two containers writing one tree would corrupt it: a writable tree is taken exclusively (by
    // device and inode, so every path to it counts); --read-only and throw-away runs share it.
    RunLock image_lock;
    if (!spec_.read_only && !spec_.ephemeral && spec_.volatile_mode == VolatileMode::No) {
        struct stat st;
        if (!spec_.image.empty() ? stat(spec_.image.c_str(), &st) < 0 : fstat(p.root_dir.get(), &st) < 0)
            throw_last_error("stat " + (spec_.image.empty() ? spec_.directory : spec_.image));
        image_lock = RunLock::try_take("image/" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino));
        if (!image_lock)
            throw UsageError((spec_.image.empty() ? spec_.directory : spec_.image) +
                             " is in use by another running container; use --ephemeral or --read-only to share it");
    }

    struct WorkdirCleanup {
        const std::vector<std::string>& dirs;
        ~WorkdirCleanup() {
            for (const auto& w : dirs) remove_tree_nofollow_at(AT_FDCWD, w);
        }
    } cleanup{p.overlay_workdirs};

    for (;;) {
        Outcome o = run_once(spec_, p, hooks_, created_);
        if (hooks_.detached) return 0;  // machrun: the container lives on, detached
        created_ = std::chrono::steady_clock::now();
        if (!o.reboot) {
            if (p.boot && !spec_.quiet) fprintf(stderr, "Container %s has been shut down.\n", spec_.machine_name.c_str());
            // Under a service manager 133 means "restart me" (spawn@.service): a payload's own 133
            // must not be taken for that, as nspawn rewrites it too.
            if (spec_.keep_unit && o.exit_code == 133) return 1;
            return o.exit_code;
        }
        // Under a service manager (--keep-unit), let it restart the whole unit, as nspawn does.
        if (spec_.keep_unit) return 133;
        if (!spec_.quiet) fprintf(stderr, "Container %s is being rebooted.\n", spec_.machine_name.c_str());
    }
}

}  // namespace mk::core
