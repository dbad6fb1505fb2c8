#include "core/spawn/guest_init.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/openat2.h>

#include <cstring>
#include <string>

#include "core/base/error.hpp"
#include "core/base/fs_at.hpp"
#include "core/kernel/capabilities.hpp"

namespace mk::core {

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

}  // namespace mk::core
