#include "core/base/notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/base/error.hpp"
#include "core/base/strings.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::core {

bool notify_manager(std::string_view state) noexcept {
    const char* path = getenv("NOTIFY_SOCKET");
    if (!path || !*path) return false;
    size_t len = strlen(path);
    sockaddr_un sa{};
    if (len >= sizeof sa.sun_path || (path[0] != '/' && path[0] != '@')) return false;
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@') sa.sun_path[0] = 0;  // abstract namespace
    UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd) return false;
    socklen_t salen = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len + (path[0] == '@' ? 0 : 1));
    return sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&sa), salen) >= 0;
}

bool receive_notification(int fd, pid_t& sender, std::string& text) {
    char buf[4096];
    iovec iov{buf, sizeof buf - 1};
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * 8)]{};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctrl;
    mh.msg_controllen = sizeof ctrl;
    ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return false;
        throw_last_error("cannot read the notify socket");
    }
    sender = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET) continue;
        if (c->cmsg_type == SCM_CREDENTIALS) {
            ucred cr;
            memcpy(&cr, CMSG_DATA(c), sizeof cr);
            sender = cr.pid;
        } else if (c->cmsg_type == SCM_RIGHTS) {
            // Nobody may hand us fds this way: close whatever came.
            size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < nfd; i++) {
                int f;
                memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
                close(f);
            }
        }
    }
    size_t len = static_cast<size_t>(n) < sizeof buf - 1 ? static_cast<size_t>(n) : sizeof buf - 1;
    text.assign(buf, len);
    return true;
}

std::string notification_field(std::string_view text, std::string_view key) {
    for (std::string_view line : lines(text))
        if (line.size() > key.size() && line.starts_with(key) && line[key.size()] == '=')
            return std::string(line.substr(key.size() + 1));
    return {};
}

}  // namespace mk::core
