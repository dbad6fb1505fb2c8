#include "core/machine/copy.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/machine/inspect.hpp"
#include "core/machine/machine_error.hpp"

namespace mk::core {
namespace {

[[noreturn]] void invalid(const std::string& msg) { throw_machine_error(MachineErrc::invalid_argument, msg); }

uid_t shifted(uid_t id, int64_t delta) {
    int64_t v = static_cast<int64_t>(id) + delta;
    return static_cast<uid_t>(std::clamp<int64_t>(v, 0, 0xFFFFFFFE));
}

int copy_data(int in, int out) {
    for (;;) {
        ssize_t n = ::copy_file_range(in, nullptr, out, nullptr, 1 << 30, 0);
        if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP || errno == ENOSYS))
            n = ::sendfile(out, in, nullptr, 1 << 30);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (n == 0) return 0;
    }
}

int copy_entry(int src_dir, const char* src_name, int dst_dir, const char* dst_name, const CopyOptions& o, int depth);

int copy_dir_contents(int src_fd, int dst_fd, const CopyOptions& o, int depth) {
    int dup_fd = ::fcntl(src_fd, F_DUPFD_CLOEXEC, 3);
    if (dup_fd < 0) return errno;
    DIR* d = ::fdopendir(dup_fd);
    if (!d) {
        int e = errno;
        ::close(dup_fd);
        return e;
    }
    int r = 0;
    errno = 0;
    while (dirent* de = ::readdir(d)) {
        if (!std::strcmp(de->d_name, ".") || !std::strcmp(de->d_name, "..")) continue;
        if ((r = copy_entry(src_fd, de->d_name, dst_fd, de->d_name, o, depth + 1)) != 0) break;
    }
    ::closedir(d);
    return r;
}

int copy_entry(int src_dir, const char* src_name, int dst_dir, const char* dst_name, const CopyOptions& o, int depth) {
    if (depth > kCopyDepthMax) return ELOOP;
    struct stat st {};
    if (::fstatat(src_dir, src_name, &st, AT_SYMLINK_NOFOLLOW) < 0) return errno;
    const uid_t uid = shifted(st.st_uid, o.uid_delta);
    const gid_t gid = shifted(st.st_gid, o.uid_delta);
    const mode_t mode = st.st_mode & 07777;

    if (S_ISDIR(st.st_mode)) {
        // Directories merge into an existing directory (machined's COPY_MERGE).
        bool created = ::mkdirat(dst_dir, dst_name, 0700) == 0;
        if (!created && errno != EEXIST) return errno;
        int s = ::openat(src_dir, src_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (s < 0) return errno;
        int t = ::openat(dst_dir, dst_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (t < 0) {
            int e = errno;
            ::close(s);
            return e;
        }
        int r = copy_dir_contents(s, t, o, depth);
        if (r == 0 && created) {
            if (::fchown(t, uid, gid) < 0 || ::fchmod(t, mode) < 0) r = errno;
        }
        ::close(s);
        ::close(t);
        return r;
    }

    // Everything else: an existing target is an error unless replace.
    if (o.replace && ::unlinkat(dst_dir, dst_name, 0) < 0 && errno != ENOENT) return errno;
    if (S_ISREG(st.st_mode)) {
        int s = ::openat(src_dir, src_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
        if (s < 0) return errno;
        int t = ::openat(dst_dir, dst_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
        if (t < 0) {
            int e = errno;
            ::close(s);
            return e;
        }
        int r = copy_data(s, t);
        if (r == 0 && (::fchown(t, uid, gid) < 0 || ::fchmod(t, mode) < 0)) r = errno;
        ::close(s);
        ::close(t);
        return r;
    }
    if (S_ISLNK(st.st_mode)) {
        std::vector<char> target(static_cast<size_t>(std::max<off_t>(st.st_size, 0)) + 2);
        ssize_t n = ::readlinkat(src_dir, src_name, target.data(), target.size() - 1);
        if (n < 0) return errno;
        target[static_cast<size_t>(n)] = 0;
        if (::symlinkat(target.data(), dst_dir, dst_name) < 0) return errno;
    } else if (S_ISFIFO(st.st_mode)) {
        // A FIFO is recreated, never opened: opening it would block on the guest's whim.
        if (::mkfifoat(dst_dir, dst_name, mode) < 0) return errno;
    } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
        if (::mknodat(dst_dir, dst_name, st.st_mode & (S_IFMT | 07777), st.st_rdev) < 0) return errno;
    } else {
        return 0;  // sockets are not copied
    }
    if (::fchownat(dst_dir, dst_name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0) return errno;
    return 0;
}

// Splits an absolute path into its parent and last component ("/a/b" -> "/a", "b").
std::pair<std::string, std::string> split(const std::string& p) {
    auto slash = p.rfind('/');
    return {slash == 0 ? "/" : p.substr(0, slash), p.substr(slash + 1)};
}

UniqueFd open_in_root(int root_fd, const std::string& abs_path) {
    open_how how{};
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    std::string rel = abs_path == "/" ? "." : abs_path.substr(1);
    UniqueFd fd(static_cast<int>(::syscall(SYS_openat2, root_fd, rel.c_str(), &how, sizeof how)));
    if (!fd) throw_last_error("Failed to open directory " + abs_path + " in machine");
    return fd;
}

}  // namespace

int copy_tree_at(int src_dir, const char* src_name, int dst_dir, const char* dst_name, const CopyOptions& opts) {
    try {
        return copy_entry(src_dir, src_name, dst_dir, dst_name, opts, 0);
    } catch (...) {
        return ENOMEM;
    }
}

CopyOperation CopyOperation::start(const Machine& m, std::string source, std::string destination, bool to_machine,
                                   uint64_t flags) {
    if (flags & ~kCopyReplace) invalid("Unknown copy flags");
    if (m.klass != MachineClass::container)
        throw_machine_error(MachineErrc::not_supported, "Copying files is only supported on container machines.");
    if (destination.empty()) destination = source;
    for (std::string* p : {&source, &destination}) {
        if (p->empty() || (*p)[0] != '/' || p->size() > 4096) invalid("Path " + *p + " is not absolute.");
        while (p->size() > 1 && p->back() == '/') p->pop_back();
    }
    auto [src_parent, src_name] = split(source);
    auto [dst_parent, dst_name] = split(destination);
    for (const auto& n : {src_name, dst_name})
        if (n.empty() || n == "." || n == "..") invalid("Cannot copy from or to '" + n + "'");

    const int64_t shift = machine_uid_shift(m);  // not_supported for complex mappings
    std::string root = "/proc/" + std::to_string(m.leader) + "/root";
    UniqueFd root_fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root_fd) throw_last_error("open " + root);
    if (::syscall(SYS_pidfd_send_signal, m.leader_pidfd.get(), 0, nullptr, 0) < 0)
        throw_errno(ESRCH, "Leader of machine " + m.name + " has exited");

    UniqueFd src_dir, dst_dir;
    CopyOptions opts;
    opts.replace = flags & kCopyReplace;
    if (to_machine) {
        src_dir = UniqueFd(::open(src_parent.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!src_dir) throw_last_error("Failed to open " + src_parent);
        dst_dir = open_in_root(root_fd.get(), dst_parent);
        opts.uid_delta = shift;
    } else {
        src_dir = open_in_root(root_fd.get(), src_parent);
        dst_dir = UniqueFd(::open(dst_parent.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!dst_dir) throw_last_error("Failed to open " + dst_parent);
        opts.uid_delta = -shift;
    }

    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) < 0) throw_last_error("pipe2");
    UniqueFd rd(pipefd[0]), wr(pipefd[1]);
    CopyOperation op;
    op.what_ = "Failed to copy " + source + (to_machine ? " to machine " : " from machine ") + m.name;
    op.pid_ = ::fork();
    if (op.pid_ < 0) throw_last_error("fork");
    if (op.pid_ == 0) {
        rd.reset();
        ::umask(0);
        int r = copy_tree_at(src_dir.get(), src_name.c_str(), dst_dir.get(), dst_name.c_str(), opts);
        if (r) (void)!::write(wr.get(), &r, sizeof r);
        _exit(r ? 1 : 0);
    }
    op.result_ = std::move(rd);
    op.pidfd_ = UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, op.pid_, 0)));
    if (!op.pidfd_) {
        int e = errno;
        ::kill(op.pid_, SIGKILL);
        ::waitpid(op.pid_, nullptr, 0);
        throw_errno(e, "pidfd_open");
    }
    return op;
}

void CopyOperation::finish() {
    int err = 0;
    ssize_t n = ::read(result_.get(), &err, sizeof err);
    int status = 0;
    if (pid_ > 0) retry_eintr([&] { return ::waitpid(pid_, &status, 0); });
    pid_ = -1;
    if (n == static_cast<ssize_t>(sizeof err) && err) throw std::system_error(err, std::generic_category(), what_);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw_errno(EIO, what_);
}

}  // namespace mk::core
