#include "core/kernel/mount.hpp"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/base/error.hpp"

namespace mk::core {

UniqueFd make_fs_mount(const char* fstype, const std::vector<std::pair<std::string, std::string>>& opts, uint64_t attrs,
                       const char* source) {
    UniqueFd fs(fsopen(fstype, FSOPEN_CLOEXEC));
    if (!fs) throw_last_error(std::string("fsopen(") + fstype + ")");
    if (source && fsconfig(fs.get(), FSCONFIG_SET_STRING, "source", source, 0) < 0)
        throw_last_error(std::string("fsconfig(") + fstype + ", source)");
    for (const auto& [k, v] : opts) {
        int r = v.empty() ? fsconfig(fs.get(), FSCONFIG_SET_FLAG, k.c_str(), nullptr, 0)
                          : fsconfig(fs.get(), FSCONFIG_SET_STRING, k.c_str(), v.c_str(), 0);
        if (r < 0) throw_last_error(std::string("invalid ") + fstype + " option '" + k + (v.empty() ? "" : "=" + v) + "'");
    }
    if (fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) < 0)
        throw_last_error(std::string("cannot create ") + fstype + " instance");
    UniqueFd mnt(fsmount(fs.get(), FSMOUNT_CLOEXEC, static_cast<unsigned>(attrs)));
    if (!mnt) throw_last_error(std::string("fsmount(") + fstype + ")");
    return mnt;
}

UniqueFd clone_tree(int dir_fd, const std::string& path, bool recursive) {
    unsigned flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (path.empty() ? AT_EMPTY_PATH : 0u);
    if (recursive) flags |= AT_RECURSIVE;
    UniqueFd fd(open_tree(dir_fd, path.c_str(), flags));
    if (!fd) throw_last_error("cannot clone mount " + (path.empty() ? std::string("tree") : path));
    return fd;
}

void set_mount_attrs(int mount_fd, uint64_t set, uint64_t clear, bool recursive, const std::string& what) {
    mount_attr attr{};
    attr.attr_set = set;
    attr.attr_clr = clear;
    unsigned flags = AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0u);
    if (mount_setattr(mount_fd, "", flags, &attr, sizeof attr) < 0)
        throw_last_error("cannot set mount attributes on " + what);
}

void attach_mount(int mount_fd, int target_fd, const std::string& what) {
    if (move_mount(mount_fd, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        throw_last_error("cannot mount " + what);
}

void remount_read_only(int fd, bool recursive, const std::string& what) {
    set_mount_attrs(fd, MOUNT_ATTR_RDONLY, 0, recursive, what);
}

}  // namespace mk::core
