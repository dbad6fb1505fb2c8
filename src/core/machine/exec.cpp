#include "core/machine/exec.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/kernel/seccomp.hpp"
#include "core/machine/machine_error.hpp"

namespace mk::core {
namespace {

[[noreturn]] void invalid(const std::string& msg) { throw_machine_error(MachineErrc::invalid_argument, msg); }

void require_running_container(const Machine& m) {
    if (m.klass != MachineClass::container)
        throw_machine_error(MachineErrc::not_supported, "Running commands is only supported for containers");
    if (::syscall(SYS_pidfd_send_signal, m.leader_pidfd.get(), 0, nullptr, 0) < 0)
        throw_errno(ESRCH, "Leader of machine " + m.name + " has exited");
}

bool is_cgroup2(const std::string& dir) {
    return ::access((dir + "/cgroup.freeze").c_str(), F_OK) == 0 || ::access((dir + "/cgroup.type").c_str(), F_OK) == 0;
}

// The leader's own group in every hierarchy (nspawn's "payload", say), as cgroup.procs paths on
// the host: the command lands where the container's own processes are.
std::vector<std::string> leader_procs_files(pid_t leader, const std::string& root) {
    std::vector<std::string> out;
    std::ifstream in("/proc/" + std::to_string(leader) + "/cgroup");
    std::string line;
    while (std::getline(in, line)) {
        auto a = line.find(':'), b = line.find(':', a + 1);
        if (a == std::string::npos || b == std::string::npos) continue;
        std::string ctrl = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
        std::string dir;
        if (ctrl.empty()) dir = is_cgroup2(root + "/unified") ? root + "/unified" : root;
        else if (ctrl.starts_with("name=")) dir = root + "/" + ctrl.substr(5);
        else dir = root + "/" + ctrl;
        out.push_back(dir + path + "/cgroup.procs");
    }
    return out;
}

std::vector<std::string> unit_dirs(const Machine& m, const std::string& root) {
    if (m.cgroup_path.empty() || m.cgroup_path == "/") return {};
    return {root + "/unified" + m.cgroup_path, root + m.cgroup_path};
}

}  // namespace

UniqueFd exec_in_machine(const Machine& m, const ShellRequest& req, const ExecStdio& stdio, const std::string& cgroup_root) {
    require_running_container(m);
    ResolvedCommand command = resolve_command(m, req);
    for (int fd : stdio.fds)
        if (fd < 0 || ::fcntl(fd, F_GETFD) < 0) invalid("Invalid file descriptor for the command's standard I/O");

    // Joining a frozen cgroup would freeze our helper and, waiting for it, machd.
    if (machine_freezer_state(m, cgroup_root) == "frozen")
        throw_machine_error(MachineErrc::invalid_argument, "Machine " + m.name + " is paused; resume it first");

    // Everything the children need, prepared before fork (no allocation after it).
    std::vector<char*> argv, envp;
    for (auto& a : command.args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : command.env) envp.push_back(e.data());
    envp.push_back(nullptr);
    const std::vector<std::string> procs = leader_procs_files(m.leader, cgroup_root);
    const int ns_flags = machine_namespace_flags(m.leader);
    // The command may run on the caller's terminal: it must not type into it (T-22, TIOCSTI).
    const std::vector<BpfProgram>& terminal_filter = seccomp_terminal_ioctl_filter();

    StepPipe steps;
    int p[2];
    if (::pipe2(p, O_CLOEXEC) < 0) throw_last_error("pipe2");
    UniqueFd status_rd(p[0]), status_wr(p[1]);

    pid_t mid = steps.fork();
    if (mid == 0) {
        // Intermediate: join the cgroups and namespaces, fork the waiter into the machine's PID
        // namespace and leave, so that the waiter is reparented to the container's init.
        status_rd.reset();
        for (const auto& f : procs) {
            int fd = ::open(f.c_str(), O_WRONLY | O_CLOEXEC);
            if (fd >= 0) {
                (void)!::write(fd, "0", 1);
                ::close(fd);
            }
        }
        if (join_machine_namespaces(m, ns_flags) < 0) steps.fail(kStepJoin);
        pid_t waiter = ::fork();
        if (waiter < 0) steps.fail(kStepFork);
        if (waiter > 0) _exit(0);

        // Waiter: parent of the command inside the machine; reports its status on the pipe.
        (void)::setsid();
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::signal(SIGHUP, SIG_IGN);
        ::signal(SIGINT, SIG_IGN);
        ::signal(SIGTERM, SIG_IGN);
        pid_t cmd = ::fork();
        if (cmd < 0) steps.fail(kStepFork);
        if (cmd == 0) {
            ::signal(SIGHUP, SIG_DFL);
            ::signal(SIGINT, SIG_DFL);
            ::signal(SIGTERM, SIG_DFL);
            status_wr.reset();
            if (::setsid() < 0) steps.fail(kStepSetsid);
            // Move the caller's fds out of 0..2 first: dup2(fd, fd) would keep O_CLOEXEC.
            int high[3];
            for (int i = 0; i < 3; i++)
                if ((high[i] = ::fcntl(stdio.fds[static_cast<size_t>(i)], F_DUPFD_CLOEXEC, 3)) < 0)
                    steps.fail(kStepRedirect);
            for (int i = 0; i < 3; i++)
                if (::dup2(high[i], i) < 0) steps.fail(kStepRedirect);
            if (stdio.tty && ::ioctl(0, TIOCSCTTY, 0) < 0) steps.fail(kStepControllingTerminal);
            // Before dropping to the user: installing it needs CAP_SYS_ADMIN (or no_new_privs).
            if (int e = seccomp_install(terminal_filter); e < 0) {
                errno = -e;
                steps.fail(kStepSeccomp);
            }
            // setns() into the machine's user namespace keeps machd's credentials (host root, which
            // is nobody inside): become the user there, root included.
            if (command.uid != 0 || command.gid != 0 || (ns_flags & CLONE_NEWUSER)) {
                if (::setgroups(0, nullptr) < 0 || ::setresgid(command.gid, command.gid, command.gid) < 0 ||
                    ::setresuid(command.uid, command.uid, command.uid) < 0)
                    steps.fail(kStepChangeUser);
            }
            if (::chdir(command.home.c_str()) < 0) (void)!::chdir("/");
            ::execve(command.path.c_str(), argv.data(), envp.data());
            steps.fail(kStepExecute);
        }
        // The waiter keeps none of the command's I/O (EOF must reach the caller when it ends) and
        // not the error pipe (EOF there tells machd the exec happened).
        steps.close_writer();
        for (int fd = 0; fd < 3; fd++) {
            int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
            if (devnull >= 0) {
                ::dup2(devnull, fd);
                ::close(devnull);
            }
        }
        // Nothing of machd's either (its bus socket held here would outlive a machd restart).
        const int keep = status_wr.get();
        if (keep > 3) ::syscall(SYS_close_range, 3u, static_cast<unsigned>(keep - 1), 0u);
        ::syscall(SYS_close_range, static_cast<unsigned>(keep + 1), ~0u, 0u);
        int status = 0;
        retry_eintr([&] { return ::waitpid(cmd, &status, 0); });
        (void)!::write(status_wr.get(), &status, sizeof status);
        _exit(0);
    }
    status_wr.reset();
    auto failed = steps.result();
    wait_exit_code(mid);
    if (failed) throw_entry_failure(*failed, command.path, m);
    return status_rd;
}

void freeze_machine(const Machine& m, bool freeze, const std::string& cgroup_root) {
    if (m.klass == MachineClass::host) throw_machine_error(MachineErrc::not_supported, "Freezing the host is not supported");
    for (const auto& dir : unit_dirs(m, cgroup_root)) {
        std::string file = dir + "/cgroup.freeze";
        if (::access(file.c_str(), F_OK) != 0) continue;
        {
            std::ofstream out(file);
            out << (freeze ? "1" : "0");
            out.flush();
            if (!out) throw_last_error("write " + file);
        }
        // cgroup.events "frozen 1" once every task stopped; bounded wait (a task in an
        // uninterruptible sleep delays it).
        for (int i = 0; i < 500; i++) {
            std::ifstream ev(dir + "/cgroup.events");
            std::string k, v;
            bool frozen = false;
            while (ev >> k >> v)
                if (k == "frozen") frozen = v == "1";
            if (frozen == freeze) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        throw_errno(ETIMEDOUT,
                    std::string("Timed out waiting for machine ") + m.name + " to " + (freeze ? "freeze" : "thaw"));
    }
    std::string v1 = cgroup_root + "/freezer" + m.cgroup_path + "/freezer.state";
    if (!m.cgroup_path.empty() && ::access(v1.c_str(), F_OK) == 0) {
        std::ofstream out(v1);
        out << (freeze ? "FROZEN" : "THAWED");
        out.flush();
        if (!out) throw_last_error("write " + v1);
        return;
    }
    throw_machine_error(MachineErrc::not_supported, "No cgroup freezer for machine " + m.name);
}

std::string machine_freezer_dir(const Machine& m, const std::string& cgroup_root) {
    for (const auto& dir : unit_dirs(m, cgroup_root))
        if (::access((dir + "/cgroup.freeze").c_str(), F_OK) == 0) return dir;
    std::string v1 = cgroup_root + "/freezer" + m.cgroup_path;
    if (!m.cgroup_path.empty() && m.cgroup_path != "/" && ::access((v1 + "/freezer.state").c_str(), F_OK) == 0) return v1;
    return {};
}

std::string machine_freezer_state(const Machine& m, const std::string& cgroup_root) {
    for (const auto& dir : unit_dirs(m, cgroup_root)) {
        std::ifstream ev(dir + "/cgroup.events");
        if (!ev) continue;
        std::string k, v;
        while (ev >> k >> v)
            if (k == "frozen") return v == "1" ? "frozen" : "running";
    }
    std::ifstream v1(cgroup_root + "/freezer" + m.cgroup_path + "/freezer.state");
    std::string s;
    if (!m.cgroup_path.empty() && v1 >> s) return s == "FROZEN" ? "frozen" : "running";
    return "running";
}

}  // namespace mk::core
