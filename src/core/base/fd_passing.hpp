// One fd across a unix socket with SCM_RIGHTS, with a few bytes beside it (a stream socket needs at
// least one, and runc's console-socket protocol sends the pty's name there). Used by machd's pty
// helpers, machrun's console socket and its exec. Async-signal-safe on the sending side (no
// allocation), so a forked child may call it before exec.
#pragma once

#include <sys/socket.h>

#include <cstring>
#include <string>
#include <string_view>

#include "core/base/unique_fd.hpp"

namespace mk::core {

// A message of one buffer with room for one fd's control data.
inline msghdr one_fd_message(iovec& iov, char* ctrl, size_t ctrl_len) noexcept {
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctrl;
    mh.msg_controllen = ctrl_len;
    return mh;
}

// Sends `fd` with `bytes` (one NUL byte if empty). False with errno set on failure; never SIGPIPE.
inline bool send_fd(int sock, int fd, std::string_view bytes = {}) noexcept {
    char nul = 0;
    iovec iov{bytes.empty() ? &nul : const_cast<char*>(bytes.data()), bytes.empty() ? 1 : bytes.size()};
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))] = {};
    msghdr mh = one_fd_message(iov, ctrl, sizeof ctrl);
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
    return ::sendmsg(sock, &mh, MSG_NOSIGNAL) >= 0;
}

// Receives one fd (O_CLOEXEC) and up to `max_bytes` beside it into *bytes (if given). An empty fd
// if the peer closed, sent no fd, or recvmsg failed (errno tells).
inline UniqueFd recv_fd(int sock, std::string* bytes = nullptr, size_t max_bytes = 128) {
    std::string buf(max_bytes ? max_bytes : 1, '\0');
    iovec iov{buf.data(), buf.size()};
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))] = {};
    msghdr mh = one_fd_message(iov, ctrl, sizeof ctrl);
    ssize_t n = ::recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    if (n <= 0) return {};
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) return {};
    int fd;
    std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
    if (bytes) bytes->assign(buf.data(), static_cast<size_t>(n));
    return UniqueFd(fd);
}

}  // namespace mk::core
