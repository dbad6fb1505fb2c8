#include "core/base/tree_copy.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::core {
namespace {

// Copies xattrs fd -> fd; ignores what the target file system cannot hold.
void copy_xattrs(int from, int to) {
    char names[65536];
    ssize_t n = flistxattr(from, names, sizeof names);
    std::vector<char> val;
    for (ssize_t i = 0; i < n; i += static_cast<ssize_t>(strlen(names + i)) + 1) {
        ssize_t s = fgetxattr(from, names + i, nullptr, 0);
        if (s < 0) continue;
        val.resize(static_cast<size_t>(s) + 1);
        s = fgetxattr(from, names + i, val.data(), val.size());
        if (s >= 0) fsetxattr(to, names + i, val.data(), static_cast<size_t>(s), 0);
    }
}

void copy_meta(int from_fd, int to_fd, const struct stat& st) {
    if (fchown(to_fd, st.st_uid, st.st_gid) < 0 && geteuid() == 0) throw_last_error("cannot set owner");
    copy_xattrs(from_fd, to_fd);
    fchmod(to_fd, st.st_mode & 07777);
    timespec ts[2] = {st.st_atim, st.st_mtim};
    futimens(to_fd, ts);
}

}  // namespace

void copy_file_data(int from, int to, off_t size) {
    // Reflink first (btrfs, xfs): instant and shares blocks.
    if (ioctl(to, FICLONE, from) == 0) return;
    off_t left = size;
    while (left > 0) {
        ssize_t r = retry_eintr([&] {
            return copy_file_range(from, nullptr, to, nullptr, static_cast<size_t>(std::min<off_t>(left, 1 << 30)), 0);
        });
        if (r < 0) {
            if (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP) break;
            throw_last_error(errno == ENOSPC ? "disk full while copying" : "cannot copy file data");
        }
        if (r == 0) break;
        left -= r;
    }
    if (left > 0) {
        std::vector<char> buf(1 << 20);
        off_t off = size - left;
        while (left > 0) {
            ssize_t r = pread(from, buf.data(), buf.size(), off);
            if (r < 0) throw_last_error("cannot read while copying");
            if (r == 0) break;
            if (pwrite(to, buf.data(), static_cast<size_t>(r), off) != r) throw_last_error("cannot write while copying");
            off += r;
            left -= r;
        }
    }
}

namespace {

void copy_dir(int src, int dst, dev_t dev, std::map<std::pair<dev_t, ino_t>, std::string>& links, const std::string& rel,
              int dst_root, size_t depth) {
    if (depth > 4096) throw_errno(E2BIG, "tree too deep to copy");
    DIR* d = open_dir_stream(src);
    std::vector<std::string> names;
    while (dirent* de = readdir(d))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) names.emplace_back(de->d_name);
    closedir(d);
    for (const auto& name : names) {
        struct stat st;
        if (fstatat(src, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
        if (st.st_dev != dev) continue;
        std::string path = rel.empty() ? name : rel + "/" + name;
        if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
            auto key = std::make_pair(st.st_dev, st.st_ino);
            auto it = links.find(key);
            if (it != links.end()) {
                // The first copy lives at a path relative to the destination root; it was made by
                // us, so resolving it below dst_root without symlinks is safe.
                if (linkat(dst_root, it->second.c_str(), dst, name.c_str(), 0) < 0) throw_last_error("cannot link " + path);
                continue;
            }
            links.emplace(key, path);
        }
        if (S_ISDIR(st.st_mode)) {
            UniqueFd s(openat(src, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!s) throw_last_error("cannot open " + path);
            if (mkdirat(dst, name.c_str(), 0700) < 0) throw_last_error("cannot create " + path);
            UniqueFd t(openat(dst, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!t) throw_last_error("cannot open " + path);
            copy_dir(s.get(), t.get(), dev, links, path, dst_root, depth + 1);
            copy_meta(s.get(), t.get(), st);
        } else if (S_ISREG(st.st_mode)) {
            UniqueFd s(openat(src, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
            if (!s) throw_last_error("cannot open " + path);
            UniqueFd t(openat(dst, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
            if (!t) throw_last_error("cannot create " + path);
            copy_file_data(s.get(), t.get(), st.st_size);
            copy_meta(s.get(), t.get(), st);
        } else if (S_ISLNK(st.st_mode)) {
            std::vector<char> target(static_cast<size_t>(st.st_size) + 2);
            ssize_t n = readlinkat(src, name.c_str(), target.data(), target.size() - 1);
            if (n < 0) throw_last_error("cannot read " + path);
            target[static_cast<size_t>(n)] = 0;
            if (symlinkat(target.data(), dst, name.c_str()) < 0) throw_last_error("cannot create " + path);
            fchownat(dst, name.c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW);
            timespec ts[2] = {st.st_atim, st.st_mtim};
            utimensat(dst, name.c_str(), ts, AT_SYMLINK_NOFOLLOW);
        } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) {
            if (mknodat(dst, name.c_str(), st.st_mode, st.st_rdev) < 0) throw_last_error("cannot create " + path);
            fchownat(dst, name.c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW);
            timespec ts[2] = {st.st_atim, st.st_mtim};
            utimensat(dst, name.c_str(), ts, AT_SYMLINK_NOFOLLOW);
        }
    }
}

}  // namespace

DIR* open_dir_stream(int fd) {
    int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (dfd < 0) throw_last_error("dup");
    DIR* d = fdopendir(dfd);
    if (!d) {
        ::close(dfd);
        throw_last_error("fdopendir");
    }
    rewinddir(d);
    return d;
}

void copy_tree(int src_fd, int dst_fd) {
    struct stat st;
    if (fstat(src_fd, &st) < 0) throw_last_error("stat");
    std::map<std::pair<dev_t, ino_t>, std::string> links;
    copy_dir(src_fd, dst_fd, st.st_dev, links, "", dst_fd, 0);
    copy_meta(src_fd, dst_fd, st);
}

}  // namespace mk::core
