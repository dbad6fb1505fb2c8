// Scopes for machines: one interface (ScopeBackend), here the cgroupfs implementation that creates
// machine.slice/machine-NAME.scope itself when no systemd manages the cgroup tree.
//
// CgroupfsBackend takes the cgroup mount root as a parameter (a temp dir stands in for tests). It
// understands the three layouts: pure cgroup2 at the root; hybrid (name=systemd v1 at ROOT/systemd,
// cgroup2 at ROOT/unified, v1 controllers at ROOT/<ctrl>); legacy v1 (name=systemd, controllers).
// Side effects: mkdir/rmdir under the root, writes to cgroup.procs and limit files, kill(2) of the
// processes inside a scope on removal. Thread-hostile.
#pragma once

#include <sys/types.h>

#include <csignal>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mk::core {

struct DeviceAllow {
    std::string path;   // "/dev/net/tun", "char-pts", "block-loop", ...
    std::string perms;  // subset of "rwm"
};

// The scope properties machd understands (systemd's names in the comments).
struct ScopeProperties {
    std::string slice = "machine.slice";             // Slice=
    std::string description;                         // Description=
    std::optional<uint64_t> memory_max;              // MemoryMax= / MemoryLimit= (bytes)
    std::optional<uint64_t> tasks_max;               // TasksMax=
    std::optional<uint64_t> cpu_weight;              // CPUWeight= (1..10000)
    std::optional<uint64_t> cpu_quota_per_sec_usec;  // CPUQuotaPerSecUSec=
    std::string device_policy;                       // DevicePolicy= auto|closed|strict ("" = auto)
    std::vector<DeviceAllow> device_allow;           // DeviceAllow=
    int kill_signal = SIGTERM;                       // KillSignal=
    // Backend-specific raw properties: the systemd backend forwards the caller's a(sv) verbatim (as
    // machined does), so it must not be limited to the fields above. Opaque to core.
    std::shared_ptr<const void> passthrough;
};

// What start_scope() did. A non-empty `job` means the unit is still starting (systemd's job path);
// the backend's owner learns the outcome later (see MachineService::scope_job_done()).
struct ScopeStart {
    std::string cgroup_path;
    std::string job;
};

// systemd's slice path expansion: "a-b.slice" -> "/a.slice/a-b.slice"; "-.slice" -> "". nullopt if
// the name is not a valid slice name.
std::optional<std::string> slice_to_path(std::string_view slice);

// The cgroup path of a process from /proc/PID/cgroup text: the cgroup2 ("0::") line if present and not
// "/", else the name=systemd line. Pure.
std::optional<std::string> cgroup_path_from_proc(std::string_view proc_pid_cgroup);

// systemd's cg_path_get_unit(): the first path component that is not a slice, if it is a unit name
// (".scope" or ".service"). "/machine.slice/machine-a.scope/payload" -> "machine-a.scope". Pure.
std::optional<std::string> unit_from_cgroup_path(std::string_view path);
// The same for a per-user manager (machd --user): the units are the user's own, below its
// delegation point, which is either a user manager's user@UID.service or a group that names no
// unit (a test harness's, a CI job's). Both are skipped, as are slices: ".../user@1000.service/
// app.slice/machine-a.scope/init.scope" and "/ci-job/machine-a.scope" give "machine-a.scope".
std::optional<std::string> user_unit_from_cgroup_path(std::string_view path);

// The cgroup path of a live process; nullopt if it has exited or the file is unreadable.
std::optional<std::string> pid_cgroup_path(pid_t pid);

class ScopeBackend {
public:
    virtual ~ScopeBackend() = default;
    // Creates `unit` in props.slice with the limits applied, then moves `leader` into it. Returns the
    // unit's cgroup path ("/machine.slice/UNIT") and, for asynchronous backends, the pending job.
    // On failure nothing stays behind.
    virtual ScopeStart start_scope(const std::string& unit, pid_t leader, const ScopeProperties& props) = 0;
    // Sends `sig` to every process in the cgroup subtree `cgroup_path`. Returns how many were signalled.
    virtual size_t kill(const std::string& cgroup_path, int sig) = 0;
    // SIGKILLs what is left and removes the scope's cgroups in every hierarchy, then empty parent
    // slices. Missing groups are fine. Throws if processes refuse to leave (after ~2 s).
    virtual void remove_scope(const std::string& cgroup_path) = 0;
    // Whether the cgroup exists in the main hierarchy.
    virtual bool exists(const std::string& cgroup_path) = 0;
    // The processes directly and indirectly in the cgroup.
    virtual std::vector<pid_t> pids(const std::string& cgroup_path) = 0;
    // For every hierarchy, the deepest existing directory of `cgroup_path` that is not above
    // `unit_path` (a guest may have made sub-groups in some hierarchies only): where to move a process
    // so that it shares the machine's limits everywhere.
    virtual std::vector<std::string> dirs(const std::string& cgroup_path, const std::string& unit_path) = 0;
};

class CgroupfsBackend final : public ScopeBackend {
public:
    // Inspects `root` (e.g. "/sys/fs/cgroup") to find the hierarchies. Does not write anything.
    explicit CgroupfsBackend(std::string root);

    ScopeStart start_scope(const std::string& unit, pid_t leader, const ScopeProperties& props) override;
    size_t kill(const std::string& cgroup_path, int sig) override;
    void remove_scope(const std::string& cgroup_path) override;
    bool exists(const std::string& cgroup_path) override;
    std::vector<pid_t> pids(const std::string& cgroup_path) override;
    std::vector<std::string> dirs(const std::string& cgroup_path, const std::string& unit_path) override;

    // The hierarchy roots found, for diagnostics and tests ("" = absent).
    [[nodiscard]] const std::string& unified() const noexcept { return unified_; }
    [[nodiscard]] const std::string& named_systemd() const noexcept { return named_; }
    [[nodiscard]] std::string v1(std::string_view controller) const;  // "" if not mounted

private:
    // Every hierarchy root a scope may live in (the main one first).
    [[nodiscard]] std::vector<std::string> hierarchies() const;
    [[nodiscard]] const std::string& main() const noexcept { return unified_.empty() ? named_ : unified_; }

    std::string root_;
    std::string unified_;  // cgroup2 mount
    std::string named_;    // name=systemd v1 mount (hybrid/legacy)
};

}  // namespace mk::core
