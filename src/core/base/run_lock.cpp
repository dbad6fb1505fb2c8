#include "core/base/run_lock.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <exception>

#include "core/base/error.hpp"
#include "core/base/io.hpp"

namespace mk::core {
namespace {

// "machine/web" -> "machine.web": one flat directory, no path syntax from the key.
std::string file_name(std::string_view key) {
    if (key.empty() || key.size() > 200 || key.front() == '.' || key.front() == '/' ||
        key.find('\0') != std::string_view::npos || key.find("/.") != std::string_view::npos)
        throw_errno(EINVAL, "invalid lock name '" + std::string(key) + "'");
    std::string name(key);
    for (char& c : name)
        if (c == '/') c = '.';
    return name;
}

// The lock directory, created root-only; nullopt-like invalid fd only when !create and it is missing.
UniqueFd open_lock_dir(const std::string& dir, bool create) {
    if (create) {
        if (auto slash = dir.rfind('/'); slash != std::string::npos && slash > 0)
            if (mkdir(dir.substr(0, slash).c_str(), 0755) < 0 && errno != EEXIST)
                throw_last_error("cannot create " + dir.substr(0, slash));
        if (mkdir(dir.c_str(), 0700) < 0 && errno != EEXIST) throw_last_error("cannot create " + dir);
    }
    UniqueFd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
        if (!create && errno == ENOENT) return fd;
        throw_last_error("cannot open " + dir);
    }
    struct stat st;
    if (fstat(fd.get(), &st) < 0) throw_last_error("cannot stat " + dir);
    // Someone else's directory could hand out or withhold our locks at will.
    if (st.st_uid != geteuid()) throw_errno(EPERM, dir + " is not owned by us; remove it");
    if ((st.st_mode & 077) && fchmod(fd.get(), 0700) < 0) throw_last_error("cannot make " + dir + " private");
    return fd;
}

bool same_file_still_named(int dir_fd, const std::string& name, int fd) {
    struct stat a, b;
    if (fstat(fd, &a) < 0) return false;
    if (fstatat(dir_fd, name.c_str(), &b, AT_SYMLINK_NOFOLLOW) < 0) return false;
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// F_OFD_SETLK without waiting: 1 taken, 0 held by someone else, -errno on failure.
int try_lock(int fd) {
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (retry_eintr([&] { return fcntl(fd, F_OFD_SETLK, &fl); }) < 0) return errno == EAGAIN || errno == EACCES ? 0 : -errno;
    return 1;
}

}  // namespace

RunLock& RunLock::operator=(RunLock&& other) noexcept {
    if (this != &other) {
        release();
        dir_ = std::move(other.dir_);
        fd_ = std::move(other.fd_);
        file_ = std::move(other.file_);
    }
    return *this;
}

void RunLock::release() noexcept {
    if (!fd_) return;
    // Unlink while still holding it: whoever opened this inode meanwhile finds it no longer named
    // after locking, and retries on a fresh file.
    (void)unlinkat(dir_.get(), file_.c_str(), 0);
    fd_.reset();
    dir_.reset();
}

RunLock RunLock::try_take(std::string_view key, const std::string& dir) {
    const std::string name = file_name(key);
    UniqueFd dfd = open_lock_dir(dir, true);
    // Each retry means a holder released (and unlinked) between our open and our lock.
    for (int attempt = 0; attempt < 64; attempt++) {
        UniqueFd fd(openat(dfd.get(), name.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600));
        if (!fd) throw_last_error("cannot open lock " + dir + "/" + name);
        int r = try_lock(fd.get());
        if (r < 0) throw_errno(-r, "cannot lock " + dir + "/" + name);
        if (r == 0) return RunLock();
        if (!same_file_still_named(dfd.get(), name, fd.get())) continue;
        RunLock lock;
        lock.dir_ = std::move(dfd);
        lock.fd_ = std::move(fd);
        lock.file_ = name;
        return lock;
    }
    throw_errno(EAGAIN, "cannot lock " + dir + "/" + name + ": it keeps being replaced");
}

bool run_lock_held(std::string_view key, const std::string& dir) {
    const std::string name = file_name(key);
    UniqueFd dfd = open_lock_dir(dir, false);
    if (!dfd) return false;
    UniqueFd fd(openat(dfd.get(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOENT) return false;
        throw_last_error("cannot open lock " + dir + "/" + name);
    }
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fcntl(fd.get(), F_OFD_GETLK, &fl) < 0) throw_last_error("cannot query lock " + dir + "/" + name);
    return fl.l_type != F_UNLCK;
}

void sweep_stale_run_locks(const std::string& dir) noexcept {
    UniqueFd dfd;
    try {
        dfd = open_lock_dir(dir, false);
    } catch (const std::exception&) {
        return;
    }
    if (!dfd) return;
    UniqueFd list(openat(dfd.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    DIR* d = list ? fdopendir(list.release()) : nullptr;
    if (!d) return;
    while (dirent* de = readdir(d)) {
        if (de->d_name[0] == '.') continue;
        UniqueFd fd(openat(dfd.get(), de->d_name, O_RDWR | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC | O_NONBLOCK));
        if (!fd || try_lock(fd.get()) != 1) continue;
        // The same protocol as a holder's release: unlink only the inode we hold locked.
        if (same_file_still_named(dfd.get(), de->d_name, fd.get())) (void)unlinkat(dfd.get(), de->d_name, 0);
    }
    closedir(d);
}

}  // namespace mk::core
