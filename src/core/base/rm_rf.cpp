#include "core/base/rm_rf.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <utility>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/tree_copy.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::core {
namespace {

// Directory fds held at once: the frames deeper than this give theirs up and re-open the parent.
constexpr size_t kOpenFrames = 32;

struct Frame {
    UniqueFd fd;
    DIR* d = nullptr;  // owns a dup of fd
    dev_t dev = 0;
    ino_t ino = 0;
    std::string name;  // in the parent
    bool removed_any = false;
    Frame() = default;
    Frame(Frame&& o) noexcept
        : fd(std::move(o.fd)),
          d(std::exchange(o.d, nullptr)),
          dev(o.dev),
          ino(o.ino),
          name(std::move(o.name)),
          removed_any(o.removed_any) {}
    Frame& operator=(Frame&&) = delete;
    ~Frame() {
        if (d) closedir(d);
    }
};

bool is_cgroupfs(int fd) {
    struct statfs sfs;
    if (fstatfs(fd, &sfs) < 0) return false;
    auto t = static_cast<unsigned long>(sfs.f_type);
    return t == CGROUP_SUPER_MAGIC || t == CGROUP2_SUPER_MAGIC;
}

// rmdir, retrying a busy cgroup for about a second: a group whose last task just exited stays
// busy until the kernel has unlinked it.
int remove_dir(int parent_fd, const char* name, bool cgroup) {
    for (int i = 0;; i++) {
        if (unlinkat(parent_fd, name, AT_REMOVEDIR) == 0 || errno == ENOENT) return 0;
        if (!cgroup || errno != EBUSY || i >= 500) return -1;
        usleep(2000);
    }
}

void remove_tree(int dir_fd, const std::string& name, unsigned flags) {
    struct stat st;
    if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT) return;
        throw_last_error("cannot stat " + name);
    }
    if (!S_ISDIR(st.st_mode)) {
        if ((flags & kRemoveImmutable) && S_ISREG(st.st_mode)) {
            UniqueFd f(openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
            if (f && get_immutable(f.get())) set_immutable(f.get(), false);
        }
        if (unlinkat(dir_fd, name.c_str(), 0) < 0 && errno != ENOENT) throw_last_error("cannot remove " + name);
        return;
    }
    if (flags & kRemoveChmod) (void)fchmodat(dir_fd, name.c_str(), 0700, 0);
    UniqueFd top(openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!top) {
        if (errno == ENOENT) return;
        throw_last_error("cannot open " + name);
    }
    if ((flags & kRemoveImmutable) && get_immutable(top.get())) set_immutable(top.get(), false);
    if ((flags & kRemoveSubvolumes) && is_btrfs_subvolume(top.get())) {
        // A read-only subvolume's contents cannot be unlinked: lift the flag first (owner or
        // CAP_FOWNER suffices). Then try the one-ioctl deletion, which needs CAP_SYS_ADMIN or the
        // user_subvol_rm_allowed mount option; without either (machd-transfer drops
        // CAP_SYS_ADMIN) empty it below and rmdir() it, which kernels >= 4.18 allow.
        uint64_t fl = 0;
        if (ioctl(top.get(), BTRFS_IOC_SUBVOL_GETFLAGS, &fl) == 0 && (fl & BTRFS_SUBVOL_RDONLY)) {
            fl &= ~uint64_t{BTRFS_SUBVOL_RDONLY};
            if (ioctl(top.get(), BTRFS_IOC_SUBVOL_SETFLAGS, &fl) < 0)
                throw_last_error("cannot make read-only subvolume " + name + " writable for removal");
        }
        btrfs_ioctl_vol_args args{};
        strncpy(args.name, name.c_str(), BTRFS_PATH_NAME_MAX);
        if (ioctl(dir_fd, BTRFS_IOC_SNAP_DESTROY, &args) == 0) return;
    }
    const bool cgroup = flags & kRemoveCgroup;
    const bool dirs_only = cgroup && is_cgroupfs(top.get());
    const dev_t dev = st.st_dev;
    std::vector<Frame> stack;
    {
        Frame f;
        f.fd = std::move(top);
        f.dev = st.st_dev;
        f.ino = st.st_ino;
        f.name = name;
        stack.push_back(std::move(f));
    }
    while (!stack.empty()) {
        Frame& cur = stack.back();
        if (!cur.fd) throw_errno(EIO, "internal error in tree removal");
        if (!cur.d) cur.d = open_dir_stream(cur.fd.get());
        errno = 0;
        if (dirent* de = readdir(cur.d)) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            if (dirs_only && de->d_type != DT_DIR && de->d_type != DT_UNKNOWN) continue;
            struct stat cst;
            if (fstatat(cur.fd.get(), de->d_name, &cst, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT) continue;
                throw_last_error("cannot stat " + std::string(de->d_name));
            }
            if (cst.st_dev != dev)
                throw_errno(EXDEV, "refusing to remove '" + std::string(de->d_name) +
                                       "': it is on another file system (a mount point?)");
            if (S_ISDIR(cst.st_mode)) {
                if (flags & kRemoveChmod) (void)fchmodat(cur.fd.get(), de->d_name, 0700, 0);
                UniqueFd c(openat(cur.fd.get(), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
                if (!c) throw_last_error("cannot open " + std::string(de->d_name));
                Frame f;
                f.fd = std::move(c);
                f.dev = cst.st_dev;
                f.ino = cst.st_ino;
                f.name = de->d_name;
                stack.push_back(std::move(f));
                if (stack.size() > kOpenFrames) {
                    Frame& old = stack[stack.size() - 1 - kOpenFrames];
                    if (old.d) closedir(old.d);
                    old.d = nullptr;
                    old.fd.reset();
                }
            } else if (!dirs_only) {
                if ((flags & kRemoveImmutable) && S_ISREG(cst.st_mode)) {
                    UniqueFd f(openat(cur.fd.get(), de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
                    if (f && get_immutable(f.get())) set_immutable(f.get(), false);
                }
                if (unlinkat(cur.fd.get(), de->d_name, 0) < 0 && errno != ENOENT)
                    throw_last_error("cannot remove " + std::string(de->d_name));
                cur.removed_any = true;
            }
            continue;
        }
        if (errno) throw_last_error("cannot list a directory being removed");
        if (cur.removed_any) {
            // Entries can be skipped by readdir while the directory shrinks; go round again.
            cur.removed_any = false;
            rewinddir(cur.d);
            continue;
        }
        Frame done = std::move(stack.back());
        stack.pop_back();
        if (stack.empty()) {
            if (remove_dir(dir_fd, done.name.c_str(), cgroup) < 0) throw_last_error("cannot remove " + done.name);
            break;
        }
        Frame& parent = stack.back();
        if (!parent.fd) {
            UniqueFd p(openat(done.fd.get(), "..", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            struct stat pst;
            if (!p || fstat(p.get(), &pst) < 0) throw_last_error("cannot reopen a parent directory");
            if (pst.st_dev != parent.dev || pst.st_ino != parent.ino) throw_errno(ESTALE, "directory moved during removal");
            parent.fd = std::move(p);
        }
        if (remove_dir(parent.fd.get(), done.name.c_str(), cgroup) < 0)
            throw_last_error("cannot remove directory " + done.name);
        // In dirs_only mode nothing else is removed from the parent, so no rescan is needed.
        if (!dirs_only) parent.removed_any = true;
    }
}

}  // namespace

void rm_rf_at(int dir_fd, const std::string& name, unsigned flags) { remove_tree(dir_fd, name, flags); }

int rm_rf_at_noexcept(int dir_fd, const std::string& name, unsigned flags) noexcept {
    try {
        remove_tree(dir_fd, name, flags);
        return 0;
    } catch (const std::system_error& e) {
        return -(e.code().value() ? e.code().value() : EIO);
    } catch (...) {
        return -ENOMEM;
    }
}

bool is_btrfs_subvolume(int fd) {
    struct statfs sfs;
    struct stat st;
    if (fstatfs(fd, &sfs) < 0 || fstat(fd, &st) < 0) return false;
    // On btrfs a subvolume's root directory always has inode number 256.
    return static_cast<unsigned long>(sfs.f_type) == BTRFS_SUPER_MAGIC && st.st_ino == 256 && S_ISDIR(st.st_mode);
}

void set_immutable(int fd, bool on) {
    int flags = 0;
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0) throw_last_error("cannot read the file attributes (chattr) of the image");
    int nf = on ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
    if (nf != flags && ioctl(fd, FS_IOC_SETFLAGS, &nf) < 0)
        throw_last_error("cannot set the immutable attribute of the image");
}

bool get_immutable(int fd) {
    int flags = 0;
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0) return false;
    return flags & FS_IMMUTABLE_FL;
}

}  // namespace mk::core
