#include "runtime/console_socket.hpp"

#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>

#include "core/base/error.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::runtime {

void send_console_master(const std::string& socket_path, int master, const std::string& name) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (socket_path.empty() || socket_path.size() >= sizeof sa.sun_path)
        throw core::UsageError("--console-socket path is empty or longer than " + std::to_string(sizeof sa.sun_path - 1) + " bytes");
    std::memcpy(sa.sun_path, socket_path.c_str(), socket_path.size());
    core::UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s) core::throw_last_error("socket");
    if (connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0)
        core::throw_last_error("cannot connect to the console socket " + socket_path);
    std::string data = name.empty() ? std::string("/dev/ptmx") : name;
    iovec iov{data.data(), data.size()};
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))]{};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctrl;
    mh.msg_controllen = sizeof ctrl;
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &master, sizeof master);
    if (sendmsg(s.get(), &mh, MSG_NOSIGNAL) < 0) core::throw_last_error("cannot send the console to " + socket_path);
}

}  // namespace mk::runtime
