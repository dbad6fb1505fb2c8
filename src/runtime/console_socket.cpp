#include "runtime/console_socket.hpp"

#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>

#include "core/base/fd_passing.hpp"
#include "core/base/error.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::runtime {

void send_console_master(const std::string& socket_path, int master, const std::string& name) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (socket_path.empty() || socket_path.size() >= sizeof sa.sun_path)
        throw core::UsageError("--console-socket path is empty or longer than " + std::to_string(sizeof sa.sun_path - 1) +
                               " bytes");
    std::memcpy(sa.sun_path, socket_path.c_str(), socket_path.size());
    core::UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s) core::throw_last_error("socket");
    if (connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0)
        core::throw_last_error("cannot connect to the console socket " + socket_path);
    std::string data = name.empty() ? std::string("/dev/ptmx") : name;
    if (!core::send_fd(s.get(), master, data)) core::throw_last_error("cannot send the console to " + socket_path);
}

}  // namespace mk::runtime
