// User-mode networking for rootless containers (issue 16): pasta, from Debian's passt package,
// attached to the container's network namespace. It gives the container one interface with the
// host's addresses and routes, carries its traffic through ordinary sockets of the user, maps the
// gateway address to the host's loopback (so a server on the host's 127.0.0.1 is reachable), and
// forwards -p HOST:GUEST ports from the host's 127.0.0.1 only, never from other addresses.
//
// pasta runs in the foreground as spawn's child with a parent-death signal, so a SIGKILLed spawn
// takes it along (a daemonized pasta outlives the namespace it serves). It reports that the
// namespace is configured by writing its PID file, which is a FIFO here: spawn reads it, then
// removes it. Checked against passt 0.0~git20230309 (Debian 12): --config-net, -f, -q, -P, -t, -u,
// -T/-U none.
//
// Thread-compatible. Side effects: starts and kills a process; a FIFO in the runtime directory
// while pasta starts.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "core/base/unique_fd.hpp"
#include "core/spawn/spawn_spec.hpp"

namespace mk::core {

inline constexpr const char* kPastaPath = "/usr/bin/pasta";

// pasta's command line for the namespaces of `pid`: ports forwarded from 127.0.0.1 only, nothing
// forwarded from the container to the host's ports (-T/-U none), its PID written to `pid_file`.
// Pure.
std::vector<std::string> pasta_args(const std::string& pasta, const std::vector<PortForward>& ports, pid_t pid,
                                    const std::string& pid_file);

class PastaNetwork {
public:
    PastaNetwork() = default;
    PastaNetwork(const PastaNetwork&) = delete;
    PastaNetwork& operator=(const PastaNetwork&) = delete;
    // Kills pasta (the container's network goes with it) and reaps it.
    ~PastaNetwork();

    // Starts pasta for the network namespace of `pid` (joined through its user namespace) and
    // returns once that namespace is configured. `runtime_dir` holds the FIFO meanwhile. Throws
    // UsageError when pasta is missing or /dev/net/tun is not usable, std::system_error otherwise.
    void start(const std::vector<PortForward>& ports, pid_t pid, const std::string& runtime_dir);

private:
    pid_t pid_ = -1;
    UniqueFd pidfd_;
};

}  // namespace mk::core
