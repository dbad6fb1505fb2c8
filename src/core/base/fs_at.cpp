#include "core/base/fs_at.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/io.hpp"

namespace mk::core {

UniqueFd open_in_root(int root_fd, std::string_view path, int flags, mode_t mode, uint64_t extra_resolve) {
    open_how how{};
    how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
    how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | extra_resolve;
    std::string p(path.empty() ? "." : path);
    long fd = syscall(SYS_openat2, root_fd, p.c_str(), &how, sizeof how);
    return UniqueFd(static_cast<int>(fd));
}

UniqueFd open_in_root_or_throw(int root_fd, std::string_view path, int flags, mode_t mode, uint64_t extra_resolve) {
    UniqueFd fd = open_in_root(root_fd, path, flags, mode, extra_resolve);
    if (!fd) throw_last_error("cannot open " + std::string(path) + " in the container tree");
    return fd;
}

UniqueFd mkdir_p_in_root(int root_fd, std::string_view path, mode_t mode) {
    UniqueFd cur(fcntl(root_fd, F_DUPFD_CLOEXEC, 3));
    if (!cur) throw_last_error("dup");
    size_t i = 0;
    while (i < path.size()) {
        while (i < path.size() && path[i] == '/') i++;
        size_t j = path.find('/', i);
        if (j == std::string_view::npos) j = path.size();
        std::string comp(path.substr(i, j - i));
        i = j;
        if (comp.empty() || comp == ".") continue;
        if (comp == "..") throw_errno(EINVAL, "refusing '..' in " + std::string(path));
        if (mkdirat(cur.get(), comp.c_str(), mode) < 0 && errno != EEXIST)
            throw_last_error("cannot create " + std::string(path.substr(0, j)) + " in the container tree");
        // Open the component without following anything: if the guest put a symlink there, resolve it
        // confined to the tree rather than refusing, as a bind destination through a symlink is legal.
        UniqueFd next = open_in_root(cur.get(), comp, O_PATH | O_DIRECTORY | O_NOFOLLOW);
        if (!next) {
            if (errno == ENOTDIR || errno == ELOOP) {
                // A symlink: resolve it relative to the tree root, never outside.
                std::string sofar(path.substr(0, j));
                next = open_in_root(root_fd, sofar, O_PATH | O_DIRECTORY);
            }
            if (!next) throw_last_error("cannot open " + std::string(path.substr(0, j)) + " in the container tree");
        }
        cur = std::move(next);
    }
    return cur;
}

UniqueFd touch_in_root(int root_fd, std::string_view path, mode_t mode) {
    auto [parent, name] = split_path(path);
    UniqueFd dir = mkdir_p_in_root(root_fd, parent);
    UniqueFd d2 = open_in_root(dir.get(), ".", O_RDONLY | O_DIRECTORY);
    if (!d2) throw_last_error("cannot open " + parent);
    int fd = openat(d2.get(), name.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, mode);
    if (fd >= 0) {
        ::close(fd);
    } else if (errno != EEXIST && errno != EISDIR && errno != ELOOP && errno != ENXIO && errno != EACCES && errno != EROFS &&
               errno != ETXTBSY) {
        throw_last_error("cannot create " + std::string(path) + " in the container tree");
    }
    return open_in_root_or_throw(root_fd, path, O_PATH);
}

std::optional<std::string> read_file_in_root(int root_fd, std::string_view path, size_t max) {
    UniqueFd fd = open_in_root(root_fd, path, O_RDONLY | O_NOCTTY | O_NONBLOCK);
    if (!fd) {
        if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
        throw_last_error("cannot open " + std::string(path) + " in the container tree");
    }
    struct stat st;
    if (fstat(fd.get(), &st) < 0) throw_last_error("stat");
    if (!S_ISREG(st.st_mode)) throw_errno(EINVAL, std::string(path) + " in the container tree is not a regular file");
    return read_all(fd.get(), max, std::string(path));
}

std::optional<std::string> read_host_file(const std::string& path, size_t max) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!fd) {
        if (errno == ENOENT) return std::nullopt;
        throw_last_error("cannot open " + path);
    }
    return read_all(fd.get(), max, path);
}

void write_file_at(int dir_fd, const std::string& name, std::string_view data, mode_t mode) {
    UniqueFd fd(openat(dir_fd, name.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, mode));
    if (!fd) throw_last_error("cannot write " + name);
    write_all_or_throw(fd.get(), data, "cannot write " + name);
}

namespace {}  // namespace

std::pair<std::string, std::string> split_path(std::string_view path) {
    while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
    size_t slash = path.rfind('/');
    if (slash == std::string_view::npos) return {".", std::string(path)};
    std::string parent(path.substr(0, slash));
    if (parent.empty()) parent = "/";
    return {parent, std::string(path.substr(slash + 1))};
}

bool path_is_normalized_absolute(std::string_view path) {
    if (path.empty() || path[0] != '/') return false;
    if (path == "/") return true;
    if (path.back() == '/') return false;
    size_t i = 1;
    while (i <= path.size()) {
        size_t j = path.find('/', i);
        if (j == std::string_view::npos) j = path.size();
        std::string_view comp = path.substr(i, j - i);
        if (comp.empty() || comp == "." || comp == "..") return false;
        i = j + 1;
    }
    return true;
}

}  // namespace mk::core
