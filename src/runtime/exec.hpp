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

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/base/unique_fd.hpp"
#include "core/spawn/oci_spec.hpp"
#include "core/spawn/spawn_spec.hpp"

namespace mk::runtime {

// The five capability sets of a process object (bit n = CAP_* n).
struct ExecCapabilities {
    uint64_t bounding = 0, effective = 0, permitted = 0, inheritable = 0, ambient = 0;
};

// Every field of a runtime-spec process object that exec applies.
struct ExecRequest {
    std::vector<std::string> args;
    std::vector<std::string> env;
    std::string cwd = "/";
    uint32_t uid = 0, gid = 0;
    bool terminal = false;
    bool no_new_privileges = false;
    // Unset: the init's bounding set, all of it effective for uid 0, none for another uid. Set:
    // these sets, each cut down to the init's bounding set (an exec never has more than the
    // init could have: podman's `exec --privileged` gets the container's set, not the host's).
    std::optional<ExecCapabilities> capabilities;
    std::optional<std::pair<unsigned, unsigned>> console_size;  // (height, width) of the pty
    std::vector<uint32_t> additional_gids;                      // exactly these (none: none), as runc
    std::optional<uint32_t> umask;
    std::array<std::optional<core::ResourceLimit>, core::kRlimitCount> rlimits;  // unset: machrun's
    std::optional<int> oom_score_adj;
    std::optional<core::OciSpec::IoPriority> io_priority;
    std::optional<core::OciSpec::Scheduler> scheduler;
    std::vector<unsigned> cpu_affinity_initial;  // execCPUAffinity: while joining
    std::vector<unsigned> cpu_affinity_final;    // and from exec on
};

// --process FILE: the runtime-spec "process" object, read by the config front end (the same
// parser and the same refusals as config.json's process: apparmorProfile, selinuxLabel...). The
// capability sets are checked to be settable: effective within permitted, inheritable within
// bounding, ambient within permitted and bounding (ambient capabilities are made inheritable
// too, which the kernel needs to raise them; create does the same for the init). Throws UsageError naming the field.
ExecRequest parse_process_json(std::string_view text);

// runc's argv form of exec: the container's own process object from `config` (config.json as
// read at create) with runc's options applied on top, as runc's getProcess(): the args; --cwd;
// --env appended; --tty (terminal off unless given); --user UID[:GID] (the gid stays the
// config's when not given); --additional-gids appended; --cap added to the bounding, effective
// and permitted sets (and ambient when the config has inheritable ones); --no-new-privs;
// --apparmor, --process-label. Returns the process object as JSON, for parse_process_json().
// Pure. Throws UsageError for a malformed option.
struct ExecOptions {
    std::vector<std::string> args;
    std::string cwd;  // "" = the config's
    std::vector<std::string> env;
    bool tty = false;
    std::optional<bool> no_new_privs;
    std::string user;  // "" = the config's
    std::vector<std::string> additional_gids;
    std::vector<std::string> caps;
    std::string apparmor, process_label;
};
std::string exec_process_json(std::string_view config, const ExecOptions& o);

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
