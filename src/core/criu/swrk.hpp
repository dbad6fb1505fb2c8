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
    // `open_tmp`: when not empty (an existing empty directory), criu runs in a private mount
    // namespace of its own whose /tmp is an overlay of the host's with a writable top of mode 1777
    // (a tmpfs on `open_tmp`): criu's restore makes its mount namespace's root yard in /tmp as the
    // restored user namespace's root, which a host /tmp of mode 0700 keeps out (docs/criu.md).
    // `open_tmp_root`: the machine's root directory, bound on `open_tmp`/root before /tmp is
    // covered (the caller passes that path as criu's root: one below /tmp would be the overlay's).
    // `fresh_sysfs`: when not empty (an existing empty directory), criu runs in a private mount
    // namespace of its own with a fresh, read-only sysfs mounted there (a sysfs source without
    // child mounts, which a restore into a user namespace can bind; see docs/criu.md).
    Swrk(const CriuCommand& cmd, std::span<const int> inherit = {}, const std::string& fresh_sysfs = {},
         const std::string& open_tmp = {}, const std::string& open_tmp_root = {});
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
