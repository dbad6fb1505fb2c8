#include "runtime/exec.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <linux/sched.h>

#include <cstring>
#include <fstream>

#include "core/base/fd_passing.hpp"
#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/kernel/capabilities.hpp"
#include "core/kernel/seccomp.hpp"
#include "core/spawn/oci_config.hpp"

namespace mk::runtime {
namespace {

using core::UniqueFd;

// Steps reported on the error pipe, by position.
constexpr const char* kSteps[] = {"",
                                  "join the container's cgroup",
                                  "join the container's namespaces",
                                  "fork into the container's PID namespace",
                                  "open a terminal in the container",
                                  "hand the terminal over",
                                  "make the terminal the controlling one",
                                  "set the groups",
                                  "set the group id",
                                  "set the user id",
                                  "drop capabilities",
                                  "set no_new_privs",
                                  "install the system call filter",
                                  "change to the working directory",
                                  "execute the command"};
enum Step { kCgroup = 1, kSetns, kFork, kPty, kSendPty, kCtty, kGroups, kGid, kUid, kCaps, kNnp, kSeccomp, kCwd, kExecve };

uint64_t bounding_of(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line))
        if (line.starts_with("CapBnd:")) return std::stoull(line.substr(7), nullptr, 16);
    core::throw_errno(ESRCH, "cannot read the container's capabilities");
}

bool same_ns(pid_t pid, const char* ns) {
    struct stat a, b;
    std::string p = "/proc/" + std::to_string(pid) + "/ns/" + ns;
    std::string s = std::string("/proc/self/ns/") + ns;
    return ::stat(p.c_str(), &a) == 0 && ::stat(s.c_str(), &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
}

[[noreturn]] void fail(int fd, int step) noexcept {
    int e[2] = {step, errno};
    (void)!::write(fd, e, sizeof e);
    _exit(127);
}

}  // namespace

ExecRequest parse_process_json(std::string_view text) {
    // The process object inside the smallest config the front end takes: one parser for both.
    std::string config = R"({"ociVersion":"1.0.0","root":{"path":"/"},"linux":{"namespaces":[{"type":"pid"},)"
                         R"({"type":"mount"},{"type":"ipc"},{"type":"uts"}]},"process":)" +
                         std::string(text) + "}";
    core::SpawnSpec s = core::parse_oci_config(config, "/");
    ExecRequest r;
    r.args = s.argv;
    r.env = s.setenv;
    r.cwd = s.chdir.empty() ? "/" : s.chdir;
    r.terminal = s.console == core::ConsoleMode::Interactive;
    r.no_new_privileges = s.no_new_privileges;
    r.uid = s.oci.uid;  // podman exec --user, crictl exec as a pod's user
    r.gid = s.oci.gid;
    r.console_size = s.oci.console_size;
    r.additional_gids = s.oci.additional_gids;
    r.umask = s.oci.umask;
    if (s.capabilities_add || s.capabilities_drop)
        r.bounding = (core::kDefaultCapabilities | s.capabilities_add) & ~s.capabilities_drop;
    return r;
}

ExecStarted start_exec(const ExecTarget& target, const ExecRequest& req) {
    if (req.args.empty()) throw core::UsageError("exec needs a command");
    uint64_t bounding = bounding_of(target.pid);
    if (req.bounding) bounding &= *req.bounding;
    core::SeccompPolicy policy;
    policy.retained_caps = bounding;
    std::vector<core::BpfProgram> filter = core::seccomp_programs_for(policy);
    int ns = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET | CLONE_NEWCGROUP;
    if (!same_ns(target.pid, "user")) ns |= CLONE_NEWUSER;
    std::vector<std::string> procs_files;
    for (const auto& d : target.v1_cgroup_dirs) procs_files.push_back(d + "/cgroup.procs");
    if (!target.cgroup_dir.empty()) procs_files.push_back(target.cgroup_dir + "/cgroup.procs");

    std::vector<std::string> args = req.args, env = req.env;
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::string path_env = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (const auto& e : env)
        if (e.starts_with("PATH=")) path_env = e.substr(5);

    int p[2];
    if (::pipe2(p, O_CLOEXEC) < 0) core::throw_last_error("pipe2");
    UniqueFd err_rd(p[0]), err_wr(p[1]);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) core::throw_last_error("socketpair");
    UniqueFd sock(sv[0]), child_sock(sv[1]);

    pid_t mid = ::fork();
    if (mid < 0) core::throw_last_error("fork");
    if (mid == 0) {
        // The helper: into the cgroup (while still on the host's cgroup view), then the namespaces,
        // then the process itself, born as machrun's child in the container's PID namespace.
        err_rd.reset();
        sock.reset();
        // A host binary inside the container's PID namespace until exec: not dumpable, so no
        // process there can open /proc/PID/exe of it (runc CVE-2019-5736, T-01).
        if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) fail(err_wr.get(), kSetns);
        for (const auto& procs : procs_files) {
            int fd = ::open(procs.c_str(), O_WRONLY | O_CLOEXEC);
            if (fd < 0 || ::write(fd, "0", 1) != 1) fail(err_wr.get(), kCgroup);
            ::close(fd);
        }
        if (setns(target.pidfd, ns) < 0) fail(err_wr.get(), kSetns);
        clone_args ca{};
        ca.flags = CLONE_PARENT;
        long pid = syscall(SYS_clone3, &ca, sizeof ca);
        if (pid < 0) fail(err_wr.get(), kFork);
        if (pid > 0) {
            pid_t v = static_cast<pid_t>(pid);
            (void)!::write(child_sock.get(), &v, sizeof v);
            _exit(0);
        }
        // The process.
        UniqueFd master, peer;
        if (req.terminal) {
            master.reset(::open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC));
            if (!master || unlockpt(master.get()) < 0) fail(err_wr.get(), kPty);
            peer.reset(ioctl(master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
            if (!peer) fail(err_wr.get(), kPty);
            (void)core::send_fd(child_sock.get(), master.get());
            master.reset();
        }
        child_sock.reset();
        if (setsid() < 0) fail(err_wr.get(), kCtty);
        if (peer) {
            if (ioctl(peer.get(), TIOCSCTTY, 0) < 0) fail(err_wr.get(), kCtty);
            for (int i = 0; i < 3; i++)
                if (dup2(peer.get(), i) < 0) fail(err_wr.get(), kCtty);
            peer.reset();
        }
        std::vector<gid_t> groups(req.additional_gids.begin(), req.additional_gids.end());
        if (setgroups(groups.size(), groups.data()) < 0) fail(err_wr.get(), kGroups);
        if (setresgid(req.gid, req.gid, req.gid) < 0) fail(err_wr.get(), kGid);
        if (req.uid != 0 && prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0) fail(err_wr.get(), kUid);
        if (core::drop_bounding_set(bounding) < 0) fail(err_wr.get(), kCaps);
        // The filter goes in while we still may (CAP_SYS_ADMIN, or no_new_privs below).
        if (core::seccomp_install(filter) < 0) fail(err_wr.get(), kSeccomp);
        if (setresuid(req.uid, req.uid, req.uid) < 0) fail(err_wr.get(), kUid);
        if (req.uid == 0 && core::set_capabilities(bounding, 0) < 0) fail(err_wr.get(), kCaps);
        if (req.no_new_privileges && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail(err_wr.get(), kNnp);
        // No host fd may reach the command (runc CVE-2024-21626, T-02): all but stdio and the error
        // pipe (close-on-exec) are closed *before* chdir, so that cwd=/proc/self/fd/N finds no host
        // directory, and the result is checked to be inside the container.
        int keep = err_wr.get();
        if (keep > 3) syscall(SYS_close_range, 3, static_cast<unsigned>(keep - 1), 0);
        syscall(SYS_close_range, static_cast<unsigned>(keep + 1), ~0U, 0);
        if (chdir(req.cwd.c_str()) < 0) fail(keep, kCwd);
        char cwd[4096];
        if (!getcwd(cwd, sizeof cwd) || cwd[0] != '/') {
            errno = EXDEV;
            fail(keep, kCwd);
        }
        if (req.umask) ::umask(static_cast<mode_t>(*req.umask));
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        if (argv[0] && std::strchr(argv[0], '/')) {
            execve(argv[0], argv.data(), envp.data());
        } else {
            // PATH search by hand: execvpe would read our environment's PATH, not the process's.
            for (const char* dir = path_env.c_str(); *dir;) {
                const char* end = std::strchr(dir, ':');
                size_t len = end ? static_cast<size_t>(end - dir) : std::strlen(dir);
                char cand[4096];
                if (len > 0 && len + 1 + std::strlen(argv[0]) < sizeof cand) {
                    std::memcpy(cand, dir, len);
                    cand[len] = '/';
                    std::strcpy(cand + len + 1, argv[0]);
                    execve(cand, argv.data(), envp.data());
                }
                if (!end) break;
                dir = end + 1;
            }
            errno = ENOENT;
        }
        fail(keep, kExecve);
    }
    err_wr.reset();
    child_sock.reset();
    int status = 0;
    (void)core::retry_eintr([&] { return waitpid(mid, &status, 0); });
    ExecStarted out;
    pid_t pid = 0;
    if (::read(sock.get(), &pid, sizeof pid) == sizeof pid) out.pid = pid;
    if (req.terminal && out.pid > 0) out.master = core::recv_fd(sock.get());
    int e[2] = {0, 0};
    ssize_t n = core::retry_eintr([&] { return ::read(err_rd.get(), e, sizeof e); });
    if (n == static_cast<ssize_t>(sizeof e)) {
        if (out.pid > 0) {
            siginfo_t si{};
            waitid(P_PID, static_cast<id_t>(out.pid), &si, WEXITED);
        }
        int step = e[0] >= 1 && e[0] <= kExecve ? e[0] : 0;
        std::string what = std::string("exec: cannot ") + kSteps[step];
        if (step == kExecve) what += " " + req.args[0];
        if (step == kCwd) what += " " + req.cwd;
        core::throw_errno(e[1], what);
    }
    if (out.pid <= 0) throw std::runtime_error("exec: the helper that enters the container failed");
    return out;
}

}  // namespace mk::runtime
