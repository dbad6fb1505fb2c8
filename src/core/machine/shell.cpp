#include "core/machine/shell.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/openat2.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <csignal>
#include <cstring>

#include "core/base/fd_passing.hpp"
#include "core/base/error.hpp"
#include "core/machine/machine_error.hpp"

namespace mk::core {
namespace {

constexpr size_t kArgsMax = 1024;
constexpr size_t kArgBytesMax = 128 * 1024;

[[noreturn]] void invalid(const std::string& msg) { throw_machine_error(MachineErrc::invalid_argument, msg); }

void require_container(const Machine& m) {
    if (m.klass != MachineClass::container)
        throw_machine_error(MachineErrc::not_supported, "Opening a terminal is only supported for containers");
    if (::syscall(SYS_pidfd_send_signal, m.leader_pidfd.get(), 0, nullptr, 0) < 0)
        throw_errno(ESRCH, "Leader of machine " + m.name + " has exited");
}

std::string read_machine_file(const Machine& m, const char* rel, size_t max) {
    std::string root = "/proc/" + std::to_string(m.leader) + "/root";
    UniqueFd root_fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root_fd) throw_last_error("open " + root);
    open_how how{};
    how.flags = O_PATH | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    UniqueFd path_fd(static_cast<int>(::syscall(SYS_openat2, root_fd.get(), rel, &how, sizeof how)));
    if (!path_fd) return "";
    struct stat st {};
    if (::fstat(path_fd.get(), &st) < 0 || !S_ISREG(st.st_mode)) return "";
    UniqueFd fd(::open(("/proc/self/fd/" + std::to_string(path_fd.get())).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return "";
    std::string s;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd.get(), buf, sizeof buf)) > 0 && s.size() < max) s.append(buf, static_cast<size_t>(n));
    return s;
}

// Namespaces to join: all of the leader's, the user namespace only if it differs (joining one's own
// user namespace is EINVAL).

}  // namespace

std::optional<PasswdEntry> find_passwd_entry(std::string_view passwd, std::string_view user) {
    while (!passwd.empty()) {
        auto nl = passwd.find('\n');
        std::string_view line = passwd.substr(0, nl);
        passwd.remove_prefix(nl == std::string_view::npos ? passwd.size() : nl + 1);
        std::vector<std::string_view> f;
        size_t pos = 0;
        for (;;) {
            auto c = line.find(':', pos);
            f.push_back(line.substr(pos, c == std::string_view::npos ? std::string_view::npos : c - pos));
            if (c == std::string_view::npos) break;
            pos = c + 1;
        }
        if (f.size() != 7 || f[0] != user) continue;
        PasswdEntry e;
        try {
            e.uid = static_cast<uint32_t>(std::stoul(std::string(f[2])));
            e.gid = static_cast<uint32_t>(std::stoul(std::string(f[3])));
        } catch (...) {
            return std::nullopt;
        }
        e.home = std::string(f[5]);
        e.shell = std::string(f[6]);
        return e;
    }
    return std::nullopt;
}

int machine_namespace_flags(pid_t leader) {
    // The mount namespace always (setns() on a pidfd needs at least one flag, and joining it sets
    // the root directory); the others only where they differ from ours: joining one's own is a no-op
    // for root, but needs CAP_SYS_ADMIN over it, which the user of `machd --user` lacks for the host's
    // network (or cgroup) namespace a rootless machine shares.
    static constexpr std::pair<int, const char*> kKinds[] = {
        {CLONE_NEWPID, "pid"}, {CLONE_NEWUTS, "uts"},       {CLONE_NEWIPC, "ipc"},
        {CLONE_NEWNET, "net"}, {CLONE_NEWCGROUP, "cgroup"}, {CLONE_NEWUSER, "user"},
    };
    const std::string theirs_dir = "/proc/" + std::to_string(leader) + "/ns/";
    int flags = CLONE_NEWNS;
    for (const auto& [flag, name] : kKinds) {
        struct stat ours {
        }, theirs{};
        bool same = ::stat((std::string("/proc/self/ns/") + name).c_str(), &ours) == 0 &&
                    ::stat((theirs_dir + name).c_str(), &theirs) == 0 && ours.st_ino == theirs.st_ino &&
                    ours.st_dev == theirs.st_dev;
        // Unknown (no such /proc entry): join, as before, except the user namespace.
        if (!same && (flag != CLONE_NEWUSER || theirs.st_ino != 0)) flags |= flag;
    }
    return flags;
}

int join_machine_namespaces(const Machine& m, int ns_flags) noexcept {
    if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) return -1;
    return ::setns(m.leader_pidfd.get(), ns_flags);
}

ResolvedCommand resolve_command(const Machine& m, const ShellRequest& req) {
    std::string user = req.user.empty() ? "root" : req.user;
    if (user.size() > 256 || user.find_first_of(":\n/") != std::string::npos) invalid("Invalid user name");
    if (!req.path.empty() && req.path[0] != '/') invalid("Specified path '" + req.path + "' is not absolute");
    if (req.args.size() > kArgsMax || req.environment.size() > kArgsMax) invalid("Too many arguments");
    size_t bytes = req.path.size();
    for (const auto& a : req.args) bytes += a.size();
    for (const auto& e : req.environment) {
        bytes += e.size();
        auto eq = e.find('=');
        if (eq == std::string::npos || eq == 0 || e.find('\n') != std::string::npos)
            invalid("Invalid environment assignment");
    }
    if (bytes > kArgBytesMax) invalid("Arguments too long");

    auto pw = find_passwd_entry(read_machine_file(m, "etc/passwd", 1 << 20), user);
    if (!pw && user == "root") pw = PasswdEntry{0, 0, "/root", "/bin/sh"};
    if (!pw) invalid("User '" + user + "' does not exist in machine " + m.name);

    ResolvedCommand c;
    c.path = req.path;
    c.args = req.args;
    if (c.path.empty()) {
        c.path = pw->shell.empty() ? "/bin/sh" : pw->shell;
        c.args = {c.path, "-l"};
    } else if (c.args.empty()) {
        c.args = {c.path};
    }
    c.env = {"HOME=" + pw->home, "USER=" + user, "LOGNAME=" + user, "SHELL=" + c.path,
             "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};
    c.env.insert(c.env.end(), req.environment.begin(), req.environment.end());
    c.uid = pw->uid;
    c.gid = pw->gid;
    c.home = pw->home.empty() ? "/" : pw->home;
    return c;
}

Pty open_machine_pty(const Machine& m) {
    require_container(m);
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) < 0) throw_last_error("socketpair");
    UniqueFd ours(sv[0]), theirs(sv[1]);
    int flags = CLONE_NEWNS | (machine_namespace_flags(m.leader) & CLONE_NEWUSER);
    pid_t child = ::fork();
    if (child < 0) throw_last_error("fork");
    if (child == 0) {
        // In the container's mount namespace /dev/ptmx is its devpts: the slave path is valid there.
        ours.reset();
        if (::setns(m.leader_pidfd.get(), flags) < 0) _exit(1);
        int master = ::open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (master < 0 || ::unlockpt(master) < 0) _exit(2);
        char name[64];
        if (::ptsname_r(master, name, sizeof name) != 0) _exit(3);
        _exit(send_fd(theirs.get(), master, name) ? 0 : 4);
    }
    theirs.reset();
    std::string name;
    UniqueFd master = recv_fd(ours.get(), &name, 127);
    int rc = wait_exit_code(child);
    if (rc != 0 || !master)
        throw_errno(EIO, "Failed to allocate a pty in machine " + m.name + " (helper status " + std::to_string(rc) + ")");
    return {std::move(master), std::move(name)};
}

namespace {
// connect_machine_bus()'s steps, as its message names them: "Failed to STEP machine NAME".
constexpr const char* kBusJoin = "join the namespaces of";
constexpr const char* kBusRoot = "become root in";
constexpr const char* kBusChroot = "enter the root of";
constexpr const char* kBusFork = "fork in";
constexpr const char* kBusConnect = "connect to the system bus of";
}  // namespace

UniqueFd connect_machine_bus(const Machine& m) {
    require_container(m);
    std::string root = "/proc/" + std::to_string(m.leader) + "/root";
    UniqueFd root_fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root_fd) throw_last_error("open " + root);
    // Opened by PID: only trust it if the pidfd says the leader is still that process.
    if (::syscall(SYS_pidfd_send_signal, m.leader_pidfd.get(), 0, nullptr, 0) < 0)
        throw_errno(ESRCH, "Leader of machine " + m.name + " has exited");

    // Created here, connected in the helper: SO_PEERCRED records the connecting process, so the
    // guest's bus daemon sees a process of its own container (as sd-bus's x-machine-unix: does).
    UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!sock) throw_last_error("socket");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    static constexpr char kPath[] = "/run/dbus/system_bus_socket";
    static_assert(sizeof kPath <= sizeof addr.sun_path);
    std::memcpy(addr.sun_path, kPath, sizeof kPath);
    const int ns_flags = CLONE_NEWNS | CLONE_NEWPID | (machine_namespace_flags(m.leader) & CLONE_NEWUSER);

    StepPipe steps;
    pid_t mid = steps.fork();
    if (mid == 0) {
        // No allocation or exceptions from here on: report {step, errno} and _exit.
        if (::setns(m.leader_pidfd.get(), ns_flags) < 0) steps.fail(kBusJoin);
        if (ns_flags & CLONE_NEWUSER) {
            // Credentials are not changed by setns: become the container's root, which is what we
            // claim in the bus's EXTERNAL authentication (our euid, 0). setgroups may be denied in
            // the container's user namespace; machd runs without supplementary groups anyway.
            (void)::setgroups(0, nullptr);
            if (::setresgid(0, 0, 0) < 0 || ::setresuid(0, 0, 0) < 0) steps.fail(kBusRoot);
        }
        // The leader's root, not just the mount namespace's: a chrooted payload has its own /run.
        if (::fchdir(root_fd.get()) < 0 || ::chroot(".") < 0) steps.fail(kBusChroot);
        // setns(CLONE_NEWPID) applies to children: connect from one, so the peer PID is the guest's.
        pid_t connector = ::fork();
        if (connector < 0) steps.fail(kBusFork);
        if (connector == 0) {
            if (::connect(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) < 0) steps.fail(kBusConnect);
            _exit(0);
        }
        _exit(wait_exit_code(connector));
    }
    auto failed = steps.result();
    int rc = wait_exit_code(mid);
    if (failed) {
        const int err = failed->err;
        const std::string step = failed->step_name();
        if (step == kBusConnect && (err == ENOENT || err == ECONNREFUSED || err == ENOTDIR))
            throw std::system_error(err == ENOTDIR ? ENOENT : err, std::generic_category(),
                                    "Machine " + m.name + " has no system bus (is dbus installed and running in it?)");
        throw std::system_error(err, std::generic_category(),
                                "Failed to " + (step.empty() ? std::string("start") : step) + " machine " + m.name);
    }
    if (rc != 0)
        throw_errno(
            EIO, "Failed to connect to the system bus of machine " + m.name + " (helper status " + std::to_string(rc) + ")");
    return sock;
}

Pty open_machine_shell(const Machine& m, const ShellRequest& req, const std::vector<std::string>& cgroup_dirs) {
    require_container(m);
    ResolvedCommand cmd = resolve_command(m, req);

    Pty pty = open_machine_pty(m);
    // Everything the children need, prepared before fork (no allocation after it).
    std::vector<char*> argv, envp;
    for (auto& a : cmd.args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : cmd.env) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::vector<std::string> procs;
    for (const auto& d : cgroup_dirs) procs.push_back(d + "/cgroup.procs");
    const int ns_flags = machine_namespace_flags(m.leader);

    StepPipe steps;
    pid_t mid = steps.fork();
    if (mid == 0) {
        // Intermediate: join the machine's cgroup and namespaces, fork into its PID namespace, leave
        // (the shell is then reparented to the container's init, not to machd).
        for (const auto& p : procs) {
            int fd = ::open(p.c_str(), O_WRONLY | O_CLOEXEC);
            if (fd >= 0) {
                (void)!::write(fd, "0", 1);
                ::close(fd);
            }
        }
        if (::setns(m.leader_pidfd.get(), ns_flags) < 0) steps.fail(kStepJoin);
        pid_t shell = ::fork();
        if (shell < 0) steps.fail(kStepFork);
        if (shell > 0) _exit(0);
        if (::setsid() < 0) steps.fail(kStepSetsid);
        int tty = ::open(pty.path.c_str(), O_RDWR | O_CLOEXEC);
        if (tty < 0) steps.fail(kStepOpenTerminal);
        if (::ioctl(tty, TIOCSCTTY, 0) < 0) steps.fail(kStepControllingTerminal);
        if (::dup2(tty, 0) < 0 || ::dup2(tty, 1) < 0 || ::dup2(tty, 2) < 0) steps.fail(kStepRedirect);
        if (cmd.uid != 0 || cmd.gid != 0) {
            if (::setgroups(0, nullptr) < 0 || ::setgid(cmd.gid) < 0 || ::setuid(cmd.uid) < 0) steps.fail(kStepChangeUser);
        }
        if (::chdir(cmd.home.c_str()) < 0) (void)!::chdir("/");
        // machd blocks SIGTERM/SIGINT for its signalfd; the mask survives exec, the shell must not inherit it.
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::execve(cmd.path.c_str(), argv.data(), envp.data());
        steps.fail(kStepExecute);
    }
    auto failed = steps.result();
    wait_exit_code(mid);
    if (failed) throw_entry_failure(*failed, cmd.path, m);
    return pty;
}

void throw_entry_failure(const StepFailure& failure, const std::string& path, const Machine& m) {
    std::string step = failure.step_name();
    std::string what = step == kStepExecute ? "execute " + path : step.empty() ? "start" : step;
    throw std::system_error(failure.err, std::generic_category(), "Failed to " + what + " in machine " + m.name);
}

}  // namespace mk::core
