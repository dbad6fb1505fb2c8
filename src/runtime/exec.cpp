#include "runtime/exec.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <linux/sched.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "core/base/fd_passing.hpp"
#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/kernel/capabilities.hpp"
#include "core/kernel/seccomp.hpp"
#include "core/base/strings.hpp"
#include "core/spawn/inside_steps.hpp"
#include "core/spawn/oci_config.hpp"
#include "core/spawn/oci_steps.hpp"

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
                                  "execute the command",
                                  "set a resource limit (process.rlimits)",
                                  "set process.oomScoreAdj",
                                  "set process.ioPriority",
                                  "set process.scheduler",
                                  "set process.execCPUAffinity",
                                  "raise an ambient capability (process.capabilities.ambient)"};
enum Step {
    kCgroup = 1,
    kSetns,
    kFork,
    kPty,
    kSendPty,
    kCtty,
    kGroups,
    kGid,
    kUid,
    kCaps,
    kNnp,
    kSeccomp,
    kCwd,
    kExecve,
    kRlimit,
    kOom,
    kIoprio,
    kSched,
    kAffinity,
    kAmbient,
    kLastStep = kAmbient
};

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

// A 0 / -errno result of a noexcept step: fails with it.
void check_step(int fd, int step, int r) noexcept {
    if (r < 0) {
        errno = -r;
        fail(fd, step);
    }
}

std::string cap_names(uint64_t caps) {
    std::string out;
    for (int c = 0; c < 64; c++)
        if (caps & core::cap_bit(c)) out += (out.empty() ? "" : ", ") + core::capability_to_name(c);
    return out;
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
    r.rlimits = s.rlimits;
    r.oom_score_adj = s.oom_score_adjust;
    r.io_priority = s.oci.io_priority;
    r.scheduler = s.oci.scheduler;
    r.cpu_affinity_initial = s.oci.exec_cpu_affinity_initial;
    r.cpu_affinity_final = s.oci.exec_cpu_affinity_final;
    if (s.oci.capabilities_given) {
        const auto& o = s.oci;
        // What capset(2) and PR_CAP_AMBIENT_RAISE would refuse, refused here by name.
        auto refuse = [](const std::string& field, uint64_t extra, const char* why) {
            throw core::UsageError("exec: process.capabilities." + field + " has " + cap_names(extra) + ", not in " + why +
                                   "; add them there or leave them out");
        };
        if (o.cap_effective & ~o.cap_permitted) refuse("effective", o.cap_effective & ~o.cap_permitted, "permitted");
        if (o.cap_inheritable & ~o.cap_bounding) refuse("inheritable", o.cap_inheritable & ~o.cap_bounding, "bounding");
        const uint64_t may_be_ambient = o.cap_permitted & o.cap_bounding;
        if (o.cap_ambient & ~may_be_ambient)
            refuse("ambient", o.cap_ambient & ~may_be_ambient, "both permitted and bounding");
        // The kernel raises an ambient capability only when it is inheritable too: the ambient
        // set joins the inheritable one, as create does for the init (runc would only warn).
        r.capabilities = ExecCapabilities{o.cap_bounding, o.cap_effective, o.cap_permitted,
                                          o.cap_inheritable | o.cap_ambient, o.cap_ambient};
    }
    return r;
}

std::string exec_process_json(std::string_view config, const ExecOptions& o) {
    using json = nlohmann::json;
    json p = json::object();
    if (!config.empty()) {
        json c = json::parse(config, nullptr, false);
        if (c.is_object() && c.contains("process") && c["process"].is_object()) p = c["process"];
    }
    if (!p.contains("cwd")) p["cwd"] = "/";
    if (!p.contains("env")) p["env"] = json::array({"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"});
    if (o.args.empty()) throw core::UsageError("exec needs a command: machrun exec ID CMD [ARGS...] or --process FILE");
    p["args"] = o.args;
    if (!o.cwd.empty()) p["cwd"] = o.cwd;
    if (!o.apparmor.empty()) p["apparmorProfile"] = o.apparmor;
    if (!o.process_label.empty()) p["selinuxLabel"] = o.process_label;
    if (!o.caps.empty()) {
        if (!p.contains("capabilities") || !p["capabilities"].is_object()) p["capabilities"] = json::object();
        json& caps = p["capabilities"];
        const bool ambient_too = caps.contains("inheritable") && !caps["inheritable"].is_null();
        for (const auto& c : o.caps) {
            for (const char* set : {"bounding", "effective", "permitted"}) caps[set].push_back(c);
            if (ambient_too) caps["ambient"].push_back(c);
        }
    }
    if (!p["env"].is_array()) p["env"] = json::array();
    for (const auto& e : o.env) p["env"].push_back(e);
    p["terminal"] = o.tty;
    if (o.no_new_privs) p["noNewPrivileges"] = *o.no_new_privs;
    auto number = [](std::string_view v, const char* what) {
        if (v.empty() || v.size() > 10 || !std::ranges::all_of(v, [](char ch) { return ch >= '0' && ch <= '9'; }) ||
            std::stoull(std::string(v)) > UINT32_MAX)
            throw core::UsageError(std::string(what) + ": '" + std::string(v) + "' is not a number (0 to 4294967295)");
        return static_cast<uint32_t>(std::stoull(std::string(v)));
    };
    if (!p.contains("user") || !p["user"].is_object()) p["user"] = json::object({{"uid", 0}, {"gid", 0}});
    if (!o.user.empty()) {
        auto colon = o.user.find(':');
        p["user"]["uid"] = number(std::string_view(o.user).substr(0, colon), "--user must be UID[:GID]");
        if (colon != std::string::npos)
            p["user"]["gid"] = number(std::string_view(o.user).substr(colon + 1), "--user must be UID[:GID]");
    }
    for (const auto& g : o.additional_gids) p["user"]["additionalGids"].push_back(number(g, "--additional-gids"));
    return p.dump();
}

ExecStarted start_exec(const ExecTarget& target, const ExecRequest& req) {
    if (req.args.empty()) throw core::UsageError("exec needs a command");
    uint64_t bounding = bounding_of(target.pid);
    // An exec has at most what the init may have: every set is cut down to its bounding set.
    std::optional<ExecCapabilities> caps = req.capabilities;
    if (caps) {
        bounding &= caps->bounding;
        for (uint64_t* set : {&caps->effective, &caps->permitted, &caps->inheritable, &caps->ambient}) *set &= bounding;
    }
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
        // execCPUAffinity.initial: while joining (runc), before the container's cpuset applies.
        if (!req.cpu_affinity_initial.empty())
            check_step(err_wr.get(), kAffinity, core::set_cpu_affinity(req.cpu_affinity_initial));
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
        // What needs privileges (raising a hard limit, lowering the OOM score, a realtime
        // policy) is done while we still hold them.
        check_step(err_wr.get(), kRlimit, core::set_rlimits(req.rlimits));
        if (req.oom_score_adj) check_step(err_wr.get(), kOom, core::set_oom_score_adjust(*req.oom_score_adj));
        if (req.io_priority) check_step(err_wr.get(), kIoprio, core::set_oci_io_priority(*req.io_priority));
        if (req.scheduler) check_step(err_wr.get(), kSched, core::set_oci_scheduler(*req.scheduler));
        std::vector<gid_t> groups(req.additional_gids.begin(), req.additional_gids.end());
        if (setgroups(groups.size(), groups.data()) < 0) fail(err_wr.get(), kGroups);
        if (setresgid(req.gid, req.gid, req.gid) < 0) fail(err_wr.get(), kGid);
        // The permitted set survives the switch to another user only through keep-caps (runc's
        // order); without sets given, a non-root exec keeps none.
        if (req.uid != 0 && prctl(PR_SET_KEEPCAPS, caps ? 1 : 0, 0, 0, 0) < 0) fail(err_wr.get(), kUid);
        if (core::drop_bounding_set(bounding) < 0) fail(err_wr.get(), kCaps);
        // The filter goes in while we still may (CAP_SYS_ADMIN, or no_new_privs below).
        if (core::seccomp_install(filter) < 0) fail(err_wr.get(), kSeccomp);
        if (setresuid(req.uid, req.uid, req.uid) < 0) fail(err_wr.get(), kUid);
        if (caps) {
            check_step(err_wr.get(), kCaps, core::set_capability_sets(caps->effective, caps->permitted, caps->inheritable));
            check_step(err_wr.get(), kAmbient, core::raise_ambient_capabilities(caps->ambient));
        } else if (req.uid == 0 && core::set_capabilities(bounding, 0) < 0) {
            fail(err_wr.get(), kCaps);
        }
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
        if (!req.cpu_affinity_final.empty()) check_step(keep, kAffinity, core::set_cpu_affinity(req.cpu_affinity_final));
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
        int step = e[0] >= 1 && e[0] <= kLastStep ? e[0] : 0;
        std::string what = std::string("exec: cannot ") + kSteps[step];
        if (step == kExecve) what += " " + req.args[0];
        if (step == kCwd) what += " " + req.cwd;
        core::throw_errno(e[1], what);
    }
    if (out.pid <= 0) throw std::runtime_error("exec: the helper that enters the container failed");
    return out;
}

}  // namespace mk::runtime
