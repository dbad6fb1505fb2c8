#include "runtime/hooks.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/sched.h>

#include <stdexcept>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::runtime {

using core::UniqueFd;

void run_hook(const Hook& h, const std::string& state_json, const std::string& stage) {
    const std::string name = stage + " hook " + h.path;
    // The state on stdin through a memfd, not a pipe: a hook that never reads cannot block us.
    UniqueFd in(memfd_create("oci-state", MFD_CLOEXEC));
    if (!in) core::throw_last_error("memfd_create");
    if (::write(in.get(), state_json.data(), state_json.size()) != static_cast<ssize_t>(state_json.size()))
        core::throw_last_error("cannot write the state for the " + name);
    lseek(in.get(), 0, SEEK_SET);

    std::vector<std::string> args = h.args.empty() ? std::vector<std::string>{h.path} : h.args;
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env = h.env;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);

    int pidfd_raw = -1;
    clone_args ca{};
    ca.flags = CLONE_PIDFD;
    ca.pidfd = reinterpret_cast<uint64_t>(&pidfd_raw);
    ca.exit_signal = SIGCHLD;
    pid_t pid = static_cast<pid_t>(syscall(SYS_clone3, &ca, sizeof ca));
    if (pid < 0) core::throw_last_error("cannot start the " + name);
    if (pid == 0) {
        if (dup2(in.get(), STDIN_FILENO) < 0) _exit(127);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        execve(h.path.c_str(), argv.data(), envp.data());
        _exit(127);
    }
    UniqueFd pidfd(pidfd_raw);
    pollfd pf{pidfd.get(), POLLIN, 0};
    int timeout_ms = h.timeout ? *h.timeout * 1000 : -1;
    int r;
    r = core::retry_eintr([&] { return poll(&pf, 1, timeout_ms); });
    bool timed_out = r == 0;
    if (timed_out) syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
    siginfo_t si{};
    (void)core::retry_eintr([&] { return waitid(P_PIDFD, static_cast<id_t>(pidfd.get()), &si, WEXITED); });
    if (timed_out) throw std::runtime_error(name + " timed out after " + std::to_string(*h.timeout) + " s");
    if (si.si_code == CLD_EXITED && si.si_status == 127) throw std::runtime_error(name + " could not be executed");
    if (si.si_code == CLD_EXITED && si.si_status != 0)
        throw std::runtime_error(name + " failed with exit status " + std::to_string(si.si_status));
    if (si.si_code != CLD_EXITED) throw std::runtime_error(name + " was killed by signal " + std::to_string(si.si_status));
}

}  // namespace mk::runtime
