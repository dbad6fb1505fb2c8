// cgroups for a booted container when spawn places it itself (no machd): the host's layout, the
// machine's own groups in machine.slice, and what the guest sees at /sys/fs/cgroup.
//
// On a hybrid host (v1 controllers + cgroup2 at /sys/fs/cgroup/unified, like this one) a systemd
// guest needs a writable name=systemd hierarchy and a writable cgroup2 subtree of its own; the v1
// controllers are shown read-only. That is the layout systemd-nspawn 252 gives such guests.
#pragma once

#include <sys/types.h>

#include <optional>
#include <functional>
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
    std::vector<CgroupHierarchy> v1;                            // v1 hierarchies mounted on the host
    std::vector<std::pair<std::string, std::string>> symlinks;  // /sys/fs/cgroup/cpu -> cpu,cpuacct
    std::string unified_dir;  // where cgroup2 is, below /sys/fs/cgroup: "" (unified) or "/unified" (hybrid)
};

// The first systemd versions that run on a cgroup2 view (230), on the hybrid layout (233), and
// the first that refuse every v1 layout, hybrid included (258).
inline constexpr unsigned kSystemdUnifiedSince = 230;
inline constexpr unsigned kSystemdHybridSince = 233;
inline constexpr unsigned kSystemdUnifiedOnlySince = 258;

// What a booted guest gets, decided before anything is created.
struct GuestCgroupPlan {
    CgroupLayout layout;       // the guest's view of /sys/fs/cgroup; mode None: no cgroups of its own
    bool own_cgroup2 = false;  // the host has no cgroup2 mounted: spawn mounts one for the machine's group
    bool v1_host = false;      // the view is cgroup2 but the host's controllers are on v1 (say so once)
};

// The guest's layout from the host's, the guest's systemd major version (nullopt: not a systemd
// we recognise) and nspawn's $SYSTEMD_NSPAWN_UNIFIED_HIERARCHY (nullopt: unset). Pure.
//  - systemd >= 258 (no v1 support): always a pure cgroup2 view: the host's cgroup2 hierarchy
//    (its root on a unified host, /sys/fs/cgroup/unified on a hybrid one), or a cgroup2 mount of
//    spawn's own on a host that has none mounted.
//  - systemd 233..257 on a hybrid host: the hybrid layout, as nspawn 252 gives it (measured against
//    a cgroup2 view; docs/architecture.md says why it stays).
//  - systemd < 233 on a hybrid host: the v1 hierarchies only, as nspawn (no hybrid support yet).
//  - otherwise (v1 host, unknown init, unified host) the host's own layout.
//  - override true: a cgroup2 view on every host; false: the host's v1/hybrid layout, refused with a
//    UsageError for a guest that cannot boot on it. Neither changes anything on a unified host.
GuestCgroupPlan plan_guest_cgroups(const CgroupLayout& host, std::optional<unsigned> guest_systemd,
                                   std::optional<bool> unified_override);

// $SYSTEMD_NSPAWN_UNIFIED_HIERARCHY (or its old name $UNIFIED_CGROUP_HIERARCHY) as nspawn reads it:
// unset or empty -> nullopt, a boolean otherwise; anything else is a UsageError. Pure.
std::optional<bool> parse_unified_override(const char* value, std::string_view var);

// The one line spawn prints when the guest's cgroup2 view has no controllers to speak of because
// the host keeps them on cgroup v1. `cgroup2_controllers` is the cgroup2 root's cgroup.controllers.
std::string no_controllers_notice(std::string_view cgroup2_controllers);

// Parses /proc/self/mountinfo contents (pure). Symlinks are not in mountinfo: the caller adds them.
CgroupLayout parse_cgroup_layout(std::string_view mountinfo);

// The host's layout, including the symlinks under /sys/fs/cgroup.
CgroupLayout detect_cgroup_layout();

// The machine's groups: `path` (e.g. "/machine.slice/machine-foo.scope") in the cgroup2 hierarchy
// and in name=systemd. Created by the constructor, removed (deepest first, including what the
// guest created inside) by the destructor. Not copyable.
class ContainerCgroup {
public:
    // `own_unified`: a cgroup2 mount of spawn's own (mount_own_cgroup2()), taken over, where the
    // cgroup2 group is made instead of root + layout.unified_dir (a host with no cgroup2 mounted).
    ContainerCgroup(const CgroupLayout& layout, std::string path, std::string root = "/sys/fs/cgroup",
                    UniqueFd own_unified = {});
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

    // What removes a group the caller could not remove itself (remove() and the reaper try
    // remove_cgroup_tree() first): a rootless machine whose root is not the user hands its groups to
    // that root, whose subgroups the user can remove only through a user namespace of the range.
    void set_remover(std::function<void(const std::string& dir)> remover) { remover_ = std::move(remover); }

    // Forks a small reaper that removes the groups once this process is gone, however it goes
    // (SIGKILL included): nothing may outlive a killed spawn. The reaper ignores the terminal's
    // signals and exits when the groups are gone or this object is destroyed.
    void arm_reaper();

private:
    void remove_tree(const std::string& dir) const noexcept;

    std::function<void(const std::string&)> remover_;
    UniqueFd own_unified_;             // kept open while the groups exist: their paths go through /proc/self/fd
    std::vector<std::string> dirs_;    // absolute group directories we created, for removal
    std::vector<std::string> slices_;  // parent slices we created, removed if empty
    std::string systemd_dir_;
    std::string unified_dir_;
    UniqueFd unified_fd_;
    UniqueFd reaper_pipe_;  // our end; EOF tells the reaper to clean up
    pid_t reaper_ = -1;
};

// A detached cgroup2 mount (fsopen/fsmount, attached nowhere, so the host's mount table does not
// change): how spawn reaches the cgroup2 hierarchy on a host that mounts only cgroup v1.
UniqueFd mount_own_cgroup2();

// chown()s a cgroup directory and the files directly in it.
void chown_cgroup_dir(const std::string& dir, uid_t uid, gid_t gid);

// Removes a cgroup directory and every group below it, deepest first. Ignores ENOENT.
void remove_cgroup_tree(const std::string& dir) noexcept;

}  // namespace mk::core
