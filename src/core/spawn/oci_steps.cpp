#include "core/spawn/oci_steps.hpp"

#include "core/spawn/oci_config.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>

#include "core/base/error.hpp"
#include "core/base/fs_at.hpp"
#include "core/kernel/mount.hpp"
#include "core/spawn/oci_userns.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::core {
namespace {

// <linux/sched/types.h>'s struct sched_attr (glibc 2.36 has no wrapper).
struct SchedAttr {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
};

constexpr int kIoprioWhoProcess = 1;
constexpr int kIoprioClassShift = 13;

}  // namespace

void apply_oci_sysctls(const OciSpec& oci) {
    for (const auto& [name, value] : oci.sysctl) {
        std::string path = "/proc/sys/" + name;
        std::replace(path.begin() + 10, path.end(), '.', '/');
        UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!fd) throw_last_error("cannot open sysctl " + name);
        ssize_t n = ::write(fd.get(), value.data(), value.size());
        if (n < 0) throw_last_error("cannot set sysctl " + name + " to '" + value + "'");
    }
}

void apply_oci_readonly_paths(const OciSpec& oci, int root_fd) {
    for (const auto& path : oci.readonly_paths) {
        UniqueFd target = open_in_root(root_fd, path, O_PATH | O_CLOEXEC);
        if (!target) {
            if (errno == ENOENT) continue;
            throw_last_error("readonlyPaths: cannot open " + path);
        }
        UniqueFd m = clone_tree(target.get(), "", true);
        set_mount_attrs(m.get(), MOUNT_ATTR_RDONLY, 0, true, "readonlyPaths " + path);
        attach_mount(m.get(), target.get(), "readonlyPaths " + path);
    }
}

uint64_t oci_mount_attrs_from_flags(unsigned long f) {
    uint64_t a = 0;
    if (f & MS_RDONLY) a |= MOUNT_ATTR_RDONLY;
    if (f & MS_NOSUID) a |= MOUNT_ATTR_NOSUID;
    if (f & MS_NODEV) a |= MOUNT_ATTR_NODEV;
    if (f & MS_NOEXEC) a |= MOUNT_ATTR_NOEXEC;
    if (f & MS_NODIRATIME) a |= MOUNT_ATTR_NODIRATIME;
    if (f & MS_NOSYMFOLLOW) a |= MOUNT_ATTR_NOSYMFOLLOW;
    if (f & MS_NOATIME) a |= MOUNT_ATTR_NOATIME;
    if (f & MS_STRICTATIME) a |= MOUNT_ATTR_STRICTATIME;
    return a;  // MS_RELATIME is MOUNT_ATTR_RELATIME (0): the cleared atime field
}

namespace {

void set_attrs(int fd, uint64_t set, uint64_t clr, uint64_t propagation, bool recursive, const std::string& what) {
    constexpr uint64_t kAtime = MOUNT_ATTR_NOATIME | MOUNT_ATTR_STRICTATIME;
    if ((set | clr) & kAtime) clr |= MOUNT_ATTR__ATIME;  // the atime modes are one field
    mount_attr attr{};
    attr.attr_set = set;
    attr.attr_clr = clr;
    attr.propagation = propagation;
    if (mount_setattr(fd, "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0u), &attr, sizeof attr) < 0)
        throw_last_error("cannot set the mount options of " + what);
}

}  // namespace

void apply_oci_mount_attributes(const OciSpec& oci, int root_fd) {
    for (const auto& m : oci.mounts) {
        // Binds, and the tmpfs mounts that are config.json's own (not spawn's API file systems).
        if (!m.bind() && (m.type != "tmpfs" || oci_api_mount(m.destination, m.type))) continue;
        uint64_t set = oci_mount_attrs_from_flags(m.flags & kOciBindMountFlags);
        uint64_t clr = oci_mount_attrs_from_flags(m.clear_flags & kOciBindMountFlags);
        if ((m.flags & MS_RELATIME) || (m.clear_flags & (MS_NOATIME | MS_STRICTATIME))) clr |= MOUNT_ATTR__ATIME;
        if (!set && !clr && !m.attr_set && !m.attr_clr && !m.propagation) continue;
        UniqueFd target = open_in_root_or_throw(root_fd, m.destination, O_PATH | O_CLOEXEC);
        if (set || clr) set_attrs(target.get(), set, clr, 0, false, m.destination);
        if (m.attr_set || m.attr_clr) set_attrs(target.get(), m.attr_set, m.attr_clr, 0, true, m.destination);
        if (m.propagation)
            set_attrs(target.get(), 0, 0, m.propagation & ~static_cast<unsigned long>(MS_REC), (m.propagation & MS_REC) != 0,
                      m.destination);
    }
}

void apply_oci_rootfs_propagation(const OciSpec& oci) {
    if (oci.rootfs_propagation && mount(nullptr, "/", nullptr, oci.rootfs_propagation, nullptr) < 0)
        throw_last_error("cannot set the root's propagation");
}

void apply_oci_devices(const OciSpec& oci, int root_fd, const std::vector<IdMapLine>& uid_map,
                       const std::vector<IdMapLine>& gid_map) {
    for (const auto& d : oci.devices) {
        auto [dir, name] = split_path(d.path);
        UniqueFd parent = mkdir_p_in_root(root_fd, dir);
        UniqueFd pfd(::openat(parent.get(), ".", O_DIRECTORY | O_CLOEXEC));
        if (!pfd) throw_last_error("devices: cannot open " + dir);
        const mode_t type = d.type == 'b' ? S_IFBLK : d.type == 'p' ? S_IFIFO : S_IFCHR;
        const mode_t perm = d.file_mode.value_or(0666) & 07777;
        if (::unlinkat(pfd.get(), name.c_str(), 0) < 0 && errno != ENOENT)
            throw_last_error("devices: cannot replace " + d.path);
        check(::mknodat(pfd.get(), name.c_str(), type | perm, makedev(d.major, d.minor)), "devices: mknod " + d.path);
        // mknod applies the umask; the spec's mode is meant exactly.
        check(::fchmodat(pfd.get(), name.c_str(), perm, 0), "devices: chmod " + d.path);
        const uint32_t uid = oci_host_id(uid_map, d.uid.value_or(0), "linux.devices[].uid of " + d.path);
        const uint32_t gid = oci_host_id(gid_map, d.gid.value_or(0), "linux.devices[].gid of " + d.path);
        check(::fchownat(pfd.get(), name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW), "devices: chown " + d.path);
    }
}

void apply_oci_domainname(const OciSpec& oci) {
    if (oci.domainname.empty()) return;
    check(setdomainname(oci.domainname.data(), oci.domainname.size()), "setdomainname " + oci.domainname);
}

void apply_oci_umask(const OciSpec& oci) {
    if (oci.umask) umask(static_cast<mode_t>(*oci.umask));
}

void apply_oci_process_attributes(const OciSpec& oci) {
    apply_oci_scheduling(oci);
    apply_oci_umask(oci);
}

int set_oci_io_priority(const OciSpec::IoPriority& p) noexcept {
    if (syscall(SYS_ioprio_set, kIoprioWhoProcess, 0, (p.io_class << kIoprioClassShift) | p.priority) < 0) return -errno;
    return 0;
}

int set_oci_scheduler(const OciSpec::Scheduler& s) noexcept {
    SchedAttr a{};
    a.size = sizeof a;
    a.sched_policy = static_cast<uint32_t>(s.policy);
    a.sched_flags = s.flags;
    a.sched_nice = s.nice;
    a.sched_priority = static_cast<uint32_t>(s.priority);
    a.sched_runtime = s.runtime;
    a.sched_deadline = s.deadline;
    a.sched_period = s.period;
    if (syscall(SYS_sched_setattr, 0, &a, 0) < 0) return -errno;
    return 0;
}

void apply_oci_scheduling(const OciSpec& oci) {
    if (oci.io_priority)
        if (int r = set_oci_io_priority(*oci.io_priority); r < 0) throw_errno(-r, "ioprio_set");
    if (oci.scheduler)
        if (int r = set_oci_scheduler(*oci.scheduler); r < 0) throw_errno(-r, "sched_setattr");
}

}  // namespace mk::core
