// cgroups for a booted container when spawn places it itself (no machd): the host's layout, the
// machine's own groups in machine.slice, and what the guest sees at /sys/fs/cgroup.
//
// On a hybrid host (v1 controllers + cgroup2 at /sys/fs/cgroup/unified, like this one) a systemd
// guest needs a writable name=systemd hierarchy and a writable cgroup2 subtree of its own; the v1
// controllers are shown read-only. That is the layout systemd-nspawn 252 gives such guests.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "core/base/unique_fd.hpp"

namespace mk::core {

enum class CgroupMode { Unified, Hybrid, Legacy, None };

struct CgroupHierarchy {
    std::string name;     // the directory under /sys/fs/cgroup: "memory", "cpu,cpuacct", "systemd"
    std::string options;  // the controllers: "memory", "cpu,cpuacct", "name=systemd"
};

struct CgroupLayout {
    CgroupMode mode = CgroupMode::None;
    std::vector<CgroupHierarchy> v1;                             // v1 hierarchies mounted on the host
    std::vector<std::pair<std::string, std::string>> symlinks;   // /sys/fs/cgroup/cpu -> cpu,cpuacct
    std::string unified_dir;  // where cgroup2 is, below /sys/fs/cgroup: "" (unified) or "/unified" (hybrid)
};

// What the guest is given on this host: the host's own layout, or with unified_guest (nspawn's
// $SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1) a pure cgroup2 view even on a hybrid host. That skips the
// v1 name=systemd placement, whose cgroup.procs write waits for an RCU grace period (~8-16 ms here).
CgroupLayout guest_cgroup_layout(const CgroupLayout& host, bool unified_guest);

// Parses /proc/self/mountinfo contents (pure). Symlinks are not in mountinfo: the caller adds them.
CgroupLayout parse_cgroup_layout(std::string_view mountinfo);

// The host's layout, including the symlinks under /sys/fs/cgroup.
CgroupLayout detect_cgroup_layout();

// The machine's groups: `path` (e.g. "/machine.slice/machine-foo.scope") in the cgroup2 hierarchy
// and in name=systemd. Created by the constructor, removed (deepest first, including what the
// guest created inside) by the destructor. Not copyable.
class ContainerCgroup {
public:
    ContainerCgroup(const CgroupLayout& layout, std::string path, std::string root = "/sys/fs/cgroup");
    ContainerCgroup(const ContainerCgroup&) = delete;
    ContainerCgroup& operator=(const ContainerCgroup&) = delete;
    ~ContainerCgroup();

    // An O_DIRECTORY fd of the cgroup2 group, for clone3(CLONE_INTO_CGROUP); -1 without cgroup2.
    int unified_fd() const { return unified_fd_.get(); }
    // Moves `pid` into the groups where clone3 could not place it (the v1 name=systemd one).
    void attach(pid_t pid, bool unified_too) const;
    // Removes the groups now (also done by the destructor). Safe to call twice.
    void remove() noexcept;

    // Hands the groups to the container's root (a user namespace's UID/GID), so that its init can
    // manage the subtree: the directories and the files in them, as nspawn does for its payload.
    void delegate_to(uid_t uid, gid_t gid) const;

    // Forks a small reaper that removes the groups once this process is gone, however it goes
    // (SIGKILL included): nothing may outlive a killed spawn. The reaper ignores the terminal's
    // signals and exits when the groups are gone or this object is destroyed.
    void arm_reaper();

private:
    std::vector<std::string> dirs_;  // absolute group directories we created, for removal
    std::vector<std::string> slices_;  // parent slices we created, removed if empty
    std::string systemd_dir_;
    std::string unified_dir_;
    UniqueFd unified_fd_;
    UniqueFd reaper_pipe_;  // our end; EOF tells the reaper to clean up
    pid_t reaper_ = -1;
};

// chown()s a cgroup directory and the files directly in it.
void chown_cgroup_dir(const std::string& dir, uid_t uid, gid_t gid);

// Removes a cgroup directory and every group below it, deepest first. Ignores ENOENT.
void remove_cgroup_tree(const std::string& dir) noexcept;

}  // namespace mk::core
