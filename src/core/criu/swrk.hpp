// The client side of `criu swrk FD`: criu as a child process speaking its protobuf RPC (rpc.hpp)
// over a SOCK_SEQPACKET socketpair, one message per packet. This is how runc drives criu
// (go-criu); it needs no libcriu, so the criu binary is any command line, e.g. a newer criu run
// through another tree's loader (MK_CRIU, see criu_command()).
//
// Side effects: fork/exec of criu; the fds named in `inherit` are passed to it at the same
// numbers. With Options::rst_sibling a restore makes the restored root task a child of the
// calling process (criu forks it with CLONE_PARENT): the caller becomes its supervisor.
// Thread-hostile (fork); a Swrk object serves one request at a time.
#pragma once

#include <sys/types.h>

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/unique_fd.hpp"
#include "core/criu/rpc.hpp"

namespace mk::core::criu {

struct CriuCommand {
    std::vector<std::string> argv;  // program and leading arguments; "swrk N" is appended
};

// `configured` split at whitespace; empty: $MK_CRIU if set, else "criu" from PATH.
CriuCommand criu_command(std::string_view configured = {});
std::string to_string(const CriuCommand& cmd);

// Called for each notify message criu sends ("setup-namespaces", "network-lock", "post-restore",
// "orphan-pts-master" with the pty master in `fd`, ...). Throwing fails the operation: criu is
// told so and rolls back, and the call throws the handler's error.
using NotifyHandler = std::function<void(const std::string& script, int32_t pid, UniqueFd fd)>;

class Swrk {
public:
    Swrk(const CriuCommand& cmd, std::span<const int> inherit = {});
    ~Swrk();  // kills and reaps criu if it still runs
    Swrk(const Swrk&) = delete;
    Swrk& operator=(const Swrk&) = delete;

    // Sends `req` and answers notifications until the final reply. Throws std::system_error when
    // criu dies or the socket fails, std::runtime_error on a malformed reply. A reply with
    // success=false is returned as is (see require_success()).
    Response call(const Request& req, const NotifyHandler& notify = {});

    // Closes the socket and waits for criu; returns its wait status.
    int finish();

    [[nodiscard]] pid_t pid() const noexcept { return pid_; }

private:
    std::string receive(UniqueFd& fd);
    pid_t pid_ = -1;
    UniqueFd sock_;
};

// Throws std::runtime_error "criu WHAT failed: MESSAGE" when `resp` is not a success; `log_hint`
// (the log file's path) is appended when non-empty.
void require_success(const Response& resp, std::string_view what, std::string_view log_hint = {});

// One request on a fresh criu (no fds passed): VERSION, CHECK, FEATURE_CHECK.
Response call_once(const CriuCommand& cmd, const Request& req);

}  // namespace mk::core::criu
