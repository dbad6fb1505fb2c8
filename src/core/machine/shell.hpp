// Entering a running container without its cooperation (no systemd or D-Bus needed inside):
// a pseudo-terminal allocated in the container's devpts (OpenMachinePTY) and a shell started in all
// of the leader's namespaces and cgroup on such a pty (OpenMachineShell). And, for the one method
// that does need the guest's cooperation (OpenMachineLogin), a socket connected to the guest's own
// system bus. Side effects: forks short-lived helpers (reaped before returning); the shell itself
// is reparented to the container's init. Not thread-safe (fork).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/step_pipe.hpp"
#include "core/base/unique_fd.hpp"
#include "core/machine/machine.hpp"

namespace mk::core {

struct Pty {
    UniqueFd master;
    std::string path;  // the slave as seen inside the machine, "/dev/pts/N"
};

// A pty from the machine's /dev/ptmx (inside its mount namespace). Containers only.
Pty open_machine_pty(const Machine& m);

// A stream socket (non-blocking, close-on-exec) connected to the machine's system bus: the guest's
// /run/dbus/system_bus_socket, connected from a helper inside the leader's user, mount and PID
// namespaces, chrooted to the leader's root. The path is resolved there, so a guest symlink can
// only lead to guest files; the guest's bus daemon sees the helper as root of the container (uid 0
// in its user namespace) with a PID it can see, as with systemd's x-machine-unix: transport.
// Containers only. Throws ENOENT/ECONNREFUSED "Machine NAME has no system bus (...)" when nothing
// listens there (no dbus in the guest, or not started yet).
UniqueFd connect_machine_bus(const Machine& m);

struct ShellRequest {
    std::string user;                      // "" = root
    std::string path;                      // "" = the user's login shell with -l
    std::vector<std::string> args;         // argv; empty = {path}
    std::vector<std::string> environment;  // KEY=VALUE, added to a minimal login environment
};

// Validates `req` (absolute path, valid assignments, bounded sizes, user known in the machine's
// /etc/passwd), allocates a pty and starts the shell on it. Returns the pty master.
Pty open_machine_shell(const Machine& m, const ShellRequest& req, const std::vector<std::string>& cgroup_dirs);

// Parses one passwd(5) file for `user`: uid, gid, home, shell. Pure.
struct PasswdEntry {
    uint32_t uid = 0, gid = 0;
    std::string home, shell;
};
std::optional<PasswdEntry> find_passwd_entry(std::string_view passwd, std::string_view user);

// A shell or exec request checked (user name, absolute path, bounds on arguments and environment;
// InvalidArgs otherwise) and resolved against the machine's own /etc/passwd, read inside its root:
// what to execve, as whom, from where. Root without a passwd entry is uid 0 with /bin/sh.
struct ResolvedCommand {
    std::string path;
    std::vector<std::string> args, env;  // env: the login environment plus the request's
    uint32_t uid = 0, gid = 0;
    std::string home;  // "/" when the user has none
};
ResolvedCommand resolve_command(const Machine& m, const ShellRequest& req);

// The namespaces of `leader` a helper joins: its mount namespace, and the others where they differ
// from ours (setns into our own user namespace fails; into our own others needs privilege over
// them, which a per-user machd lacks).
int machine_namespace_flags(pid_t leader);

// Joins the namespaces `ns_flags` of the machine's leader, from a forked single-threaded helper,
// after making the helper non-dumpable (T-03): a helper inside the machine's PID namespace is
// visible to container root, who holds CAP_SYS_PTRACE there (also under -U: it is that user
// namespace's root). A non-dumpable process can be traced, or its /proc/PID/fd and mem read, only
// with CAP_SYS_PTRACE in the user namespace its memory belongs to, the host's: so machd's fds that
// the helper still holds stay out of the guest's reach. Used by the exec helper; the shell and
// login helpers still call setns() directly (see docs/security.md T-03). Async-signal-safe.
// 0, or -1 with errno.
int join_machine_namespaces(const Machine& m, int ns_flags) noexcept;

// The steps of the helpers that enter a machine to run a command (StepPipe::fail), as the error
// message names them: "Failed to STEP in machine NAME".
inline constexpr const char* kStepJoin = "join namespaces";
inline constexpr const char* kStepFork = "fork";
inline constexpr const char* kStepSetsid = "setsid";
inline constexpr const char* kStepOpenTerminal = "open terminal";
inline constexpr const char* kStepControllingTerminal = "set controlling terminal";
inline constexpr const char* kStepRedirect = "redirect stdio";
inline constexpr const char* kStepChangeUser = "change user";
inline constexpr const char* kStepExecute = "execute";  // the message adds the path
inline constexpr const char* kStepSeccomp = "install the system call filter";

// A shell or exec helper's failed step (one of the kStep* above) as the error callers see:
// "Failed to execute /bin/x in machine m: <errno text>".
[[noreturn]] void throw_entry_failure(const StepFailure& failure, const std::string& path, const Machine& m);

}  // namespace mk::core
