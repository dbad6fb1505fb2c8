#include "core/spawn/pasta.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "core/base/error.hpp"
#include "core/base/io.hpp"

namespace mk::core {

std::vector<std::string> pasta_args(const std::string& pasta, const std::vector<PortForward>& ports, pid_t pid,
                                    const std::string& pid_file) {
    std::vector<std::string> a{pasta, "--config-net", "--foreground", "--quiet", "--pid", pid_file,
                               // Nothing from the container to the host's own ports; the gateway
                               // address still reaches the host's loopback (outbound traffic).
                               "--tcp-ns", "none", "--udp-ns", "none"};
    bool tcp = false, udp = false;
    for (const auto& p : ports) {
        // "ADDR/HOST:GUEST": bound on the host's loopback only.
        a.push_back(p.protocol == PortProtocol::Udp ? "--udp-ports" : "--tcp-ports");
        a.push_back("127.0.0.1/" + std::to_string(p.host_port) + ":" + std::to_string(p.container_port));
        (p.protocol == PortProtocol::Udp ? udp : tcp) = true;
    }
    // pasta's default is "auto" (every port bound in the namespace): only what -p names.
    if (!tcp) a.insert(a.end(), {"--tcp-ports", "none"});
    if (!udp) a.insert(a.end(), {"--udp-ports", "none"});
    a.push_back(std::to_string(pid));
    return a;
}

PastaNetwork::~PastaNetwork() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    (void)retry_eintr([&] { return waitpid(pid_, nullptr, 0); });
}

void PastaNetwork::start(const std::vector<PortForward>& ports, pid_t pid, const std::string& runtime_dir) {
    if (access(kPastaPath, X_OK) < 0)
        throw UsageError(std::string(kPastaPath) +
                         " is missing: install it (apt-get install passt) for --network-veth "
                         "and -p as an ordinary user, or use --private-network");
    if (access("/dev/net/tun", R_OK | W_OK) < 0)
        throw UsageError("/dev/net/tun is not usable by you (" + std::string(strerror(errno)) +
                         "): pasta needs it; ask the administrator to make it mode 0666 (as udev does), or use "
                         "--private-network");
    std::string dir = runtime_dir + "/machkit";
    if (mkdir(dir.c_str(), 0700) < 0 && errno != EEXIST) throw_last_error("cannot create " + dir);
    std::string fifo = dir + "/pasta-" + std::to_string(getpid()) + ".pid";
    unlink(fifo.c_str());  // a SIGKILLed spawn of the same PID left it
    if (mkfifo(fifo.c_str(), 0600) < 0) throw_last_error("cannot create " + fifo);
    struct Unlink {
        const std::string& f;
        ~Unlink() { unlink(f.c_str()); }
    } unlink_fifo{fifo};
    // Opened before pasta, without blocking: its open for writing then finds a reader.
    UniqueFd rd(open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (!rd) throw_last_error("cannot open " + fifo);

    std::vector<std::string> args = pasta_args(kPastaPath, ports, pid, fifo);
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    const pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0) throw_last_error("fork");
    if (child == 0) {
        // Dies with spawn, however spawn ends; the launcher's blocked signals are not pasta's.
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        if (getppid() != parent) _exit(1);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        // passt 2023-03 takes signal(SIGPIPE, SIG_IGN) returning anything but SIG_DFL (0) for a
        // failure ("Couldn't install signal handlers"): spawn ignores SIGPIPE, pasta must not inherit it.
        signal(SIGPIPE, SIG_DFL);
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null >= 0) dup2(null, STDIN_FILENO);
        execv(argv[0], argv.data());
        _exit(127);
    }
    pid_ = child;
    pidfd_.reset(static_cast<int>(syscall(SYS_pidfd_open, child, 0)));
    if (!pidfd_) throw_last_error("pidfd_open");
    std::string got;
    for (;;) {
        pollfd fds[2] = {{rd.get(), POLLIN, 0}, {pidfd_.get(), POLLIN, 0}};
        if (retry_eintr([&] { return poll(fds, 2, -1); }) < 0) throw_last_error("poll");
        if (fds[0].revents & POLLIN) {
            char buf[32];
            ssize_t n = read(rd.get(), buf, sizeof buf);
            if (n > 0) got.append(buf, static_cast<size_t>(n));
            if (got.find('\n') != std::string::npos || n == 0) break;
            continue;
        }
        if (fds[1].revents) {
            int status = 0;
            (void)retry_eintr([&] { return waitpid(child, &status, 0); });
            pid_ = -1;
            throw UsageError("pasta could not set up the container's network (see its message above)");
        }
        if (fds[0].revents & POLLHUP) break;
    }
    if (got.empty()) throw UsageError("pasta could not set up the container's network (see its message above)");
}

}  // namespace mk::core
