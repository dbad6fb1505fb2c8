#include "core/kernel/userns.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "core/base/error.hpp"

namespace mk::core {

uint32_t pick_uid_base(std::string_view name, unsigned attempt) {
    // FNV-1a over the name, then a stride through the pool for further attempts.
    uint64_t h = 1469598103934665603ull;
    for (char c : name) {
        h ^= static_cast<unsigned char>(c);
        h *= 1099511628211ull;
    }
    const uint64_t slots = (kPickLast - kPickFirst) / 0x10000;
    uint64_t slot = (h + uint64_t{attempt} * 0x9E3779B1ull) % slots;
    return static_cast<uint32_t>(kPickFirst + slot * 0x10000);
}

UniqueFd lock_uid_range(uint32_t shift) {
    UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) throw_last_error("socket");
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::string key = "machkit/uidrange/" + std::to_string(shift);
    std::memcpy(sa.sun_path + 1, key.data(), key.size());
    socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + key.size());
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), len) < 0) {
        if (errno == EADDRINUSE) return UniqueFd();
        throw_last_error("cannot lock UID range " + std::to_string(shift));
    }
    return fd;
}

static void write_map(pid_t pid, const char* file, const IdRange& r) {
    std::string path = "/proc/" + std::to_string(pid) + "/" + file;
    UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) throw_last_error("cannot open " + path);
    std::string line = "0 " + std::to_string(r.shift) + " " + std::to_string(r.count) + "\n";
    if (write(fd.get(), line.data(), line.size()) < 0) throw_last_error("cannot write " + path);
}

UniqueFd make_user_namespace(const IdRange& range) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) throw_last_error("pipe");
    UniqueFd rd(p[0]), wr(p[1]);
    int q[2];
    if (pipe2(q, O_CLOEXEC) < 0) throw_last_error("pipe");
    UniqueFd ready_rd(q[0]), ready_wr(q[1]);
    pid_t pid = fork();
    if (pid < 0) throw_last_error("fork");
    if (pid == 0) {
        // Unshare, say so, and wait to be killed: the parent only needs our /proc/PID/ns/user.
        char c = unshare(CLONE_NEWUSER) == 0 ? 1 : 0;
        (void)!write(ready_wr.get(), &c, 1);
        (void)!read(rd.get(), &c, 1);
        _exit(0);
    }
    ready_wr.reset();
    struct Reap {
        pid_t pid;
        UniqueFd& wr;
        ~Reap() {
            wr.reset();
            kill(pid, SIGKILL);
            while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {}
        }
    } reap{pid, wr};
    char ok = 0;
    if (read(ready_rd.get(), &ok, 1) != 1 || !ok) throw_errno(EPERM, "cannot create a user namespace");
    write_map(pid, "uid_map", range);
    write_map(pid, "gid_map", range);
    std::string ns = "/proc/" + std::to_string(pid) + "/ns/user";
    UniqueFd fd(open(ns.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_last_error("cannot open " + ns);
    return fd;
}

}  // namespace mk::core
