#include "core/spawn/child_channel.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/io.hpp"

namespace mk::core {

namespace {
struct Record {
    ChannelMsg type;
    uint8_t fds;       // SetupDone: 1 = console master attached, 2 = notify socket attached
    ChildError error;  // Error only
};
}  // namespace

void send_error(int chan, const char* step, int err, const std::string& text) noexcept {
    Record m{};
    m.type = ChannelMsg::Error;
    m.error = ChildError::make(step, err, text.c_str());
    (void)!send(chan, &m, sizeof m, MSG_NOSIGNAL);
}

void send_setup_done(int chan, int master, int notify) {
    char data[2] = {static_cast<char>(ChannelMsg::SetupDone),
                    static_cast<char>((master >= 0 ? 1 : 0) | (notify >= 0 ? 2 : 0))};
    iovec iov{data, sizeof data};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    int fds[2];
    int n = 0;
    if (master >= 0) fds[n++] = master;
    if (notify >= 0) fds[n++] = notify;
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof fds)]{};
    if (n > 0) {
        mh.msg_control = ctrl;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * static_cast<size_t>(n));
        cmsghdr* c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * static_cast<size_t>(n));
        std::memcpy(CMSG_DATA(c), fds, sizeof(int) * static_cast<size_t>(n));
    }
    if (sendmsg(chan, &mh, MSG_NOSIGNAL) < 0) throw_last_error("cannot talk to the spawn process");
}

void send_gated(int chan) {
    char data[2] = {static_cast<char>(ChannelMsg::Gated), 0};
    if (send(chan, data, sizeof data, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof data))
        throw_last_error("cannot talk to the spawn process");
}

bool wait_go_ahead(int chan) {
    char go;
    return recv(chan, &go, 1, 0) == 1;
}

void send_go_ahead(int chan) noexcept {
    char go = 1;
    (void)!send(chan, &go, 1, MSG_NOSIGNAL);
}

bool receive(int chan, ChannelMsg& type, UniqueFd& master, UniqueFd& notify) {
    Record m{};
    iovec iov{&m, sizeof m};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    alignas(cmsghdr) char ctrl[CMSG_SPACE(2 * sizeof(int))]{};
    mh.msg_control = ctrl;
    mh.msg_controllen = sizeof ctrl;
    ssize_t n = retry_eintr([&] { return recvmsg(chan, &mh, MSG_CMSG_CLOEXEC); });
    if (n <= 0) return false;
    std::vector<int> fds;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int f;
                std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
                fds.push_back(f);
            }
        }
    type = m.type;
    if (type == ChannelMsg::Error) {
        for (int f : fds) close(f);
        m.error.step[sizeof m.error.step - 1] = 0;
        m.error.message[sizeof m.error.message - 1] = 0;
        throw std::runtime_error(m.error.what());
    }
    size_t i = 0;
    if ((m.fds & 1) && i < fds.size()) master.reset(fds[i++]);
    if ((m.fds & 2) && i < fds.size()) notify.reset(fds[i++]);
    for (; i < fds.size(); i++) close(fds[i]);
    return true;
}

}  // namespace mk::core
