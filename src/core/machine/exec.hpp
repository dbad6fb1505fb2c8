// Running a command in a running container on the caller's own file descriptors and reporting its
// exit status (machkit's ExecMachine; machinectl shell loses the status, systemd#4215), and the
// cgroup freezer for pause/resume. No systemd or D-Bus needed inside the container.
// Side effects: exec_in_machine forks a helper that joins the machine's namespaces and cgroups and
// stays there as the command's parent (reparented to the container's init) until the command ends.
// Not thread-safe (fork).
#pragma once

#include <array>
#include <string>

#include "core/base/unique_fd.hpp"
#include "core/machine/machine.hpp"
#include "core/machine/shell.hpp"

namespace mk::core {

struct ExecStdio {
    std::array<int, 3> fds{-1, -1, -1};  // borrowed: stdin, stdout, stderr for the command
    bool tty = false;                    // fds[0] is a terminal: make it the controlling one
};

// Validates `req` as open_machine_shell does and starts the command with `stdio`. Returns the read
// end of a pipe that yields the command's wait status (int, 4 bytes) once it ends; EOF without it
// means the helper died. Errors before exec (unknown user, missing binary) are thrown.
// `cgroup_root` is where the hierarchies are mounted (/sys/fs/cgroup).
UniqueFd exec_in_machine(const Machine& m, const ShellRequest& req, const ExecStdio& stdio, const std::string& cgroup_root);

// Freezes (true) or thaws the processes of the machine's unit: cgroup2 `cgroup.freeze` (unified or
// hybrid's `unified/` mount), else the v1 freezer if the unit has a group there. Returns once the
// kernel reports the new state (bounded wait).
void freeze_machine(const Machine& m, bool freeze, const std::string& cgroup_root);

// "frozen" or "running".
std::string machine_freezer_state(const Machine& m, const std::string& cgroup_root);

// The directory freeze_machine() would freeze (the unit's cgroup2 group with cgroup.freeze, else
// its v1 freezer group), as criu's freeze_cgroup wants it; empty when the machine has neither.
std::string machine_freezer_dir(const Machine& m, const std::string& cgroup_root);

}  // namespace mk::core
