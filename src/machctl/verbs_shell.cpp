// shell and login: a command or login(1) in the machine, on a pty from its devpts or on machctl's
// own descriptors, through machd's ExecMachine (exit status) or machine1's OpenMachineShell/Login.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/base/io.hpp"
#include "core/base/unique_fd.hpp"
#include "machctl/terminal.hpp"
#include "machctl/verbs.hpp"

namespace mk::machctl {
namespace {

int exit_code(int status) {
    if (status < 0) return 255;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 255;
}

}  // namespace

int verb_shell(Context& c, const std::vector<std::string>& args) {
    // The pty's fd cannot cross ssh or a container's bus socket from there to here (as machinectl).
    if (!c.opts.bus_target.local()) throw Failure("Shell only supported on local machines.");
    std::string name = args.empty() ? ".host" : args[0];
    std::string user = c.opts.uid;
    if (auto at = name.find('@'); at != std::string::npos) {
        if (user.empty()) user = name.substr(0, at);
        name = name.substr(at + 1);
    }
    if (name.empty()) name = ".host";
    std::string path;
    std::vector<std::string> argv;
    if (args.size() > 1) {
        argv.assign(args.begin() + 1, args.end());
        if (argv[0].starts_with("/")) {
            path = argv[0];
        } else {
            // machined wants an absolute path; let the guest's shell find the command on its PATH.
            path = "/bin/sh";
            argv.insert(argv.begin(), {"sh", "-c", "exec \"$0\" \"$@\""});
        }
    }
    std::vector<std::string> env;
    const bool tty = ::isatty(STDIN_FILENO) && ::isatty(STDOUT_FILENO);
    if (const char* term = std::getenv("TERM"); term && tty) env.push_back(std::string("TERM=") + term);
    env.insert(env.end(), c.opts.setenv.begin(), c.opts.setenv.end());

    if (!tty) {
        // Pipes: the command runs on machctl's own descriptors; only the status comes back. A closed
        // one (`machctl shell m cmd <&-`) becomes /dev/null: D-Bus cannot carry a missing fd.
        core::UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
        int io[3];
        for (int i = 0; i < 3; i++) io[i] = ::fcntl(i, F_GETFD) < 0 ? null.get() : i;
        int fd = -1;
        try {
            fd = c.client().exec(name, user, path, argv, env, io[0], io[1], io[2], false);
        } catch (const ClientError& e) {
            if (e.name != bus::kUnknownMethod && e.name != bus::kUnknownInterface)
                return bus_call("Failed to run command", [&]() -> int { throw; });
            throw Failure(
                "Failed to run command: without a terminal machctl needs machd's ExecMachine "
                "(io.machkit.Manager1), which this machine manager does not offer");
        }
        core::UniqueFd status_fd(fd);
        int st = 0;
        ssize_t n = core::retry_eintr([&] { return ::read(status_fd.get(), &st, sizeof st); });
        return exit_code(n == static_cast<ssize_t>(sizeof st) ? st : -1);
    }

    // Terminal: a pty from the machine's devpts; the command gets its slave (TIOCGPTPEER), we relay.
    try {
        auto [master_fd, pty_path] = bus_call("Failed to get PTY", [&] { return c.client().open_pty(name); });
        core::UniqueFd master(master_fd);
        core::UniqueFd slave(::ioctl(master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
        if (!slave) throw Failure(std::string("Failed to open the PTY's terminal side: ") + std::strerror(errno));
        int fd = c.client().exec(name, user, path, argv, env, slave.get(), slave.get(), slave.get(), true);
        core::UniqueFd status_fd(fd);
        slave.reset();
        if (!c.opts.quiet)
            std::fprintf(stderr, "Connected to machine %s. Press ^] three times within 1s to leave.\n", name.c_str());
        int rc = exit_code(relay_pty(master.get(), status_fd.get()));
        if (!c.opts.quiet) std::fprintf(stderr, "\nConnection to machine %s terminated.\n", name.c_str());
        return rc;
    } catch (const ClientError& e) {
        if (e.name != bus::kUnknownMethod && e.name != bus::kUnknownInterface)
            return bus_call("Failed to get shell PTY", [&]() -> int { throw; });
    }
    // systemd-machined: OpenMachineShell, whose exit status nobody gets back.
    auto [master_fd, pty_path] =
        bus_call("Failed to get shell PTY", [&] { return c.client().open_shell(name, user, path, argv, env); });
    core::UniqueFd master(master_fd);
    relay_pty(master.get(), -1);
    return 0;
}

// machd: the guest's own login(1) on a pty of its devpts through ExecMachine, a login prompt in any
// guest (systemd or not, with or without D-Bus) whose session ends at logout. machd also serves
// OpenMachineLogin (systemd's machinectl uses it), but its getty needs the guest's bus and systemd,
// and the getty is restarted (vhangup) after every logout, so the relay would never see the end.
// Managers without ExecMachine (systemd-machined): OpenMachineLogin.
int verb_login(Context& c, const std::vector<std::string>& args) {
    if (!c.opts.bus_target.local()) throw Failure("Login only supported on local machines.");
    std::string name = args.empty() ? ".host" : args[0];
    if (!::isatty(STDIN_FILENO)) throw Failure("Failed to get login PTY: login needs a terminal on stdin");
    {
        auto [fd, pty_path] = bus_call("Failed to get login PTY", [&] { return c.client().open_pty(name); });
        core::UniqueFd master(fd);
        core::UniqueFd slave(::ioctl(master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
        if (!slave) throw Failure(std::string("Failed to open the PTY's terminal side: ") + std::strerror(errno));
        std::vector<std::string> env;
        if (const char* term = std::getenv("TERM")) env.push_back(std::string("TERM=") + term);
        int status = -1;
        try {
            status = c.client().exec(name, "", "/bin/login", {"login"}, env, slave.get(), slave.get(), slave.get(), true);
        } catch (const ClientError& e) {
            if (e.name != bus::kUnknownMethod && e.name != bus::kUnknownInterface)
                return bus_call("Failed to start login", [&]() -> int { throw; });
        }
        if (status >= 0) {
            core::UniqueFd status_fd(status);
            slave.reset();
            if (!c.opts.quiet)
                std::fprintf(stderr, "Connected to machine %s. Press ^] three times within 1s to exit session.\n",
                             name.c_str());
            relay_pty(master.get(), status_fd.get());
            if (!c.opts.quiet) std::fprintf(stderr, "\nConnection to machine %s terminated.\n", name.c_str());
            return 0;
        }
    }
    auto [master_fd, pty_path] = bus_call("Failed to get login PTY", [&] { return c.client().open_login(name); });
    core::UniqueFd master(master_fd);
    if (!c.opts.quiet)
        std::fprintf(stderr, "Connected to machine %s. Press ^] three times within 1s to exit session.\n", name.c_str());
    relay_pty(master.get(), -1, true);  // the getty hangs up and comes back: only ^] ends this
    if (!c.opts.quiet) std::fprintf(stderr, "\nConnection to machine %s terminated.\n", name.c_str());
    return 0;
}

}  // namespace mk::machctl
