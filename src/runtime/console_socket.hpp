// runc's console-socket protocol (docs/terminals.md in runc): the runtime connects to the
// AF_UNIX stream socket the engine (conmon, containerd's shim) listens on and sends the pty
// master as one SCM_RIGHTS message whose data is the terminal's name. The engine then owns the
// master; the runtime keeps no copy.
#pragma once

#include <string>

namespace mk::runtime {

// Throws std::system_error naming the socket.
void send_console_master(const std::string& socket_path, int master, const std::string& name);

}  // namespace mk::runtime
