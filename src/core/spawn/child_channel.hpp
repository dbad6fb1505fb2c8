// The launcher's set-up channel: a SOCK_SEQPACKET pair between spawn and the container's PID 1
// (as crun's sync socket). The child sends SetupDone once, with the console's pty master and the
// notify socket when it has them, then either execs (its end closes on exec: EOF) or reports the
// step that failed as an Error record (core/base/child_error.hpp). The parent answers a wait with
// one byte (go_ahead): the machine is placed in its groups, the network links are there.
#pragma once

#include <cstdint>
#include <string>

#include "core/base/child_error.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::core {

// Gated: the OCI runtime's detached start (launcher.hpp's DetachedLaunch): set-up is done and the
// init now waits at the exec gate; the parent stops listening.
enum class ChannelMsg : uint8_t { Error = 1, SetupDone = 2, Gated = 3 };

// In the child. send_error() is noexcept: the child _exits right after.
void send_error(int chan, const char* step, int err, const std::string& text) noexcept;
void send_setup_done(int chan, int master, int notify);
void send_gated(int chan);
// The child blocks until the parent says go; false if the parent went away.
bool wait_go_ahead(int chan);

// In the parent.
void send_go_ahead(int chan) noexcept;
// Receives one message: false at EOF (the child exec'd or died). Throws the child's error as
// std::runtime_error (its text names the step and the errno).
bool receive(int chan, ChannelMsg& type, UniqueFd& master, UniqueFd& notify);

}  // namespace mk::core
