// The OCI runtime's per-container state (machrun): one directory per container under the runtime
// root (--root, default /run/machrun), holding
//   state.json  what `create` decided (pid + its start time, bundle, rootfs, cgroup, annotations),
//               replaced atomically (write to a temporary name, rename), so readers need no lock;
//   exec.fifo   the gate the container's init waits on between `create` and `start` (runc's
//               design): it exists exactly while the container is "created";
//   lock        an open-file-description lock (F_OFD_SETLKW) taken by every command that changes
//               the container, so `kill`, `delete` and `start` never interleave. The kernel drops
//               it with the last fd, so a crashed runtime leaves no stale lock, and `delete --force`
//               can always clean up what it left.
//
// The status is never stored: it is read from the kernel each time (is the pid the same process,
// still alive, not a zombie; does exec.fifo exist; is the cgroup frozen), as runc does, so a
// container that died while no runtime ran is reported "stopped" without anyone updating a file.
//
// Pure parts (JSON, id rules, /proc/PID/stat parsing, the status decision) take strings and are
// unit-tested; OciStateDir does the I/O. Thread-compatible.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/unique_fd.hpp"

namespace mk::core {

inline constexpr const char* kOciRuntimeRoot = "/run/machrun";
inline constexpr size_t kOciStateMax = 1024 * 1024;  // state.json: annotations are user data, bounded
inline constexpr size_t kOciIdMax = 1024;

enum class ContainerStatus { Creating, Created, Running, Paused, Stopped };
std::string_view to_string(ContainerStatus s) noexcept;
std::optional<ContainerStatus> container_status_from_string(std::string_view s) noexcept;

struct ContainerState {
    std::string id;
    pid_t pid = 0;           // the container's init, in the runtime's PID namespace
    uint64_t pid_start = 0;  // its start time (/proc/PID/stat field 22): guards against PID reuse
    std::string bundle;      // absolute
    std::string rootfs;      // absolute
    std::string created;     // RFC 3339 with nanoseconds, UTC (runc's format)
    std::string owner;       // "" as runc's for root
    std::map<std::string, std::string> annotations;
    std::string cgroup;       // the container's cgroup relative to the hierarchy roots ("" = none made)
    std::string cgroup_root;  // where the hierarchies are mounted (/sys/fs/cgroup)
    bool own_cgroup = false;  // machrun made the cgroup and removes it at delete
    // The v1 groups (absolute, one per hierarchy) machrun made for linux.resources on a v1 or
    // hybrid host: the container and its execs join them; delete removes them. Like the cgroup2
    // group's, missing parents machrun had to make stay (they may be shared).
    std::vector<std::string> v1_cgroups;
    std::string config;  // config.json as read at create (hooks, process for exec), verbatim
};

// runc's id rule (^[\w+-\.]+$, not "." or ".."), bounded: the id names a directory under the root.
bool oci_id_is_valid(std::string_view id) noexcept;

// Our state.json and back. The parser throws UsageError for anything but what the writer makes.
std::string state_to_json(const ContainerState& s);
ContainerState state_from_json(std::string_view text);

// The runtime-spec state (`machrun state ID`, and what hooks read on stdin): ociVersion, id,
// status, pid, bundle, rootfs, created, owner, annotations as runc 1.1 prints them. `pid` is 0
// once stopped, as runc.
std::string oci_state_json(const ContainerState& s, ContainerStatus status, bool pretty);

// Field 22 (starttime) of /proc/PID/stat text; nullopt if malformed. The comm field may hold
// spaces and parentheses: parsing starts after the last ')'.
std::optional<uint64_t> stat_start_time(std::string_view proc_pid_stat);
// Field 3 (state letter) of the same text; 0 if malformed.
char stat_state(std::string_view proc_pid_stat);

struct ProcessFacts {
    bool alive = false;         // /proc/PID/stat exists and carries the recorded start time
    bool zombie = false;        // state 'Z' or 'X'
    bool gate_present = false;  // exec.fifo still exists: `start` has not released the init
    bool frozen = false;        // the container's cgroup is frozen
};
// Pure: what the facts mean (runc's rules).
ContainerStatus decide_status(const ProcessFacts& f) noexcept;

// The container's cgroup, relative to the hierarchy roots, from linux.cgroupsPath as runc reads it:
// with --systemd-cgroup "slice:prefix:name" becomes /SLICE-PATH/PREFIX-NAME.scope (empty: the
// runtime's defaults, system.slice and "machrun"); without it an absolute path is taken as is, and
// an empty one is /machrun/ID. Throws UsageError for paths with "..", relative paths or a malformed
// systemd triple. Pure.
std::string oci_cgroup_path(std::string_view cgroups_path, bool systemd, std::string_view id);

// RFC 3339 UTC timestamp with nanoseconds of CLOCK_REALTIME now ("2026-12-07T11:00:00.123456789Z").
std::string rfc3339_now();

// An OFD lock on one container's "lock" file, released on destruction.
class ContainerLock {
public:
    ContainerLock() noexcept = default;
    explicit ContainerLock(UniqueFd fd) noexcept : fd_(std::move(fd)) {}
    ContainerLock(ContainerLock&&) noexcept = default;
    ContainerLock& operator=(ContainerLock&&) noexcept = default;
    // Unlocks explicitly: a container init cloned while we held the lock shares its open file
    // description (the fd is closed only at its exec), and closing our fd would not release it.
    ~ContainerLock();
    explicit operator bool() const noexcept { return fd_.valid(); }

private:
    UniqueFd fd_;
};

// The runtime root and the containers in it. Side effects: creates the root (0700) on first use.
class OciStateDir {
public:
    explicit OciStateDir(std::string root);

    [[nodiscard]] const std::string& root() const noexcept { return root_; }
    [[nodiscard]] std::string dir(const std::string& id) const { return root_ + "/" + id; }
    [[nodiscard]] std::string fifo_path(const std::string& id) const { return dir(id) + "/exec.fifo"; }

    // Makes the container's directory (0711) and takes its lock; throws UsageError if it exists.
    ContainerLock create(const std::string& id) const;
    // Takes the lock of an existing container, waiting for other commands; throws UsageError if
    // there is no such container.
    ContainerLock lock(const std::string& id) const;
    void write(const ContainerState& s) const;
    // Throws UsageError if there is no such container (or it is still being created: no state.json).
    ContainerState read(const std::string& id) const;
    bool exists(const std::string& id) const;
    std::vector<std::string> ids() const;  // sorted
    // Removes the container's directory (its files are ours: state.json, exec.fifo, lock).
    void remove(const std::string& id) const;

    // The status from the kernel's view of `s` (see the file comment).
    ContainerStatus status(const ContainerState& s) const;

private:
    std::string root_;
    UniqueFd root_fd_;
};

}  // namespace mk::core
