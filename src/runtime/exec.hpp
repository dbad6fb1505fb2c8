// `machrun exec`: one more process in a running container, as runc's exec: it joins the init's
// namespaces and cgroup, takes the process description's credentials, capabilities and working
// directory, and is never more privileged than the init (its bounding set is the init's at most,
// and it gets the same default system call filter).
//
// The process is our child (CLONE_PARENT from the helper that entered the PID namespace), so a
// waiting exec reaps it, and with --detach it is reparented to the engine's subreaper when
// machrun exits, which is what conmon and containerd's shim expect of --pid-file.
// Side effects: forks. Not thread-safe.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/base/unique_fd.hpp"

namespace mk::runtime {

struct ExecRequest {
    std::vector<std::string> args;
    std::vector<std::string> env;
    std::string cwd = "/";
    uint32_t uid = 0, gid = 0;
    bool terminal = false;
    bool no_new_privileges = false;
    std::optional<uint64_t> bounding;                           // unset: the init's
    std::optional<std::pair<unsigned, unsigned>> console_size;  // (height, width) of the pty
    std::vector<uint32_t> additional_gids;                      // exactly these (none: none), as runc
    std::optional<uint32_t> umask;
};

// --process FILE: the runtime-spec "process" object, read by the config front end (the same
// parser and the same refusals as config.json's process). Throws UsageError.
ExecRequest parse_process_json(std::string_view text);

struct ExecTarget {
    pid_t pid = 0;                            // the container's init
    int pidfd = -1;                           // pins it
    std::string cgroup_dir;                   // its cgroup2 directory ("" = stay in ours)
    std::vector<std::string> v1_cgroup_dirs;  // its groups in the v1 hierarchies (v1 and hybrid hosts)
};

struct ExecStarted {
    pid_t pid = 0;          // in our PID namespace; our child
    core::UniqueFd master;  // the pty master when req.terminal
};

// Starts the process; returns once it exec'd (errors before exec are thrown with their step).
ExecStarted start_exec(const ExecTarget& target, const ExecRequest& req);

}  // namespace mk::runtime
