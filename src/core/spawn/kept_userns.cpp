#include "core/spawn/kept_userns.hpp"

#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <optional>

#include "core/base/error.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/io.hpp"
#include "core/oci/state.hpp"
#include "core/spawn/rootless_plan.hpp"

namespace mk::core {

namespace {

// A small file below the open /proc/PID directory `dir`; nullopt if it cannot be read (the process
// is gone: its directory fd then refuses every file, even if the PID was reused since).
std::optional<std::string> read_proc_at(int dir, const char* name) {
    UniqueFd fd(openat(dir, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) return std::nullopt;
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = retry_eintr([&] { return read(fd.get(), buf, sizeof buf); });
        if (n < 0) return std::nullopt;
        if (n == 0) break;
        out.append(buf, static_cast<size_t>(n));
        if (out.size() > 65536) return std::nullopt;
    }
    return out;
}

std::optional<uint64_t> start_time_at(int dir) {
    auto stat = read_proc_at(dir, "stat");
    return stat ? stat_start_time(*stat) : std::nullopt;
}

}  // namespace

KeptUserNamespace::KeptUserNamespace(const RootlessUser& user) {
    if (!may_join_kept_userns(user.map))
        throw std::logic_error("KeptUserNamespace: only the podman map of a user with ranges is kept");
    const pid_t parent = getpid();
    int pidfd_raw = -1;
    pid_t pid = clone_into_new_user_namespace(&pidfd_raw, "cannot create the kept user namespace");
    if (pid == 0) {
        // The holder: nothing but the namespace, gone with its machd.
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        if (getppid() != parent) _exit(1);
        syscall(SYS_close_range, 3U, ~0U, 0U);
        for (;;) pause();
    }
    pid_ = static_cast<pid_t>(pid);
    UniqueFd pidfd(pidfd_raw);
    try {
        write_rootless_maps(pid_, user);
        UniqueFd dir(open(("/proc/" + std::to_string(pid_)).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!dir) throw_last_error("cannot open /proc/" + std::to_string(pid_));
        KeptUsernsRecord r;
        r.pid = pid_;
        auto start = start_time_at(dir.get());
        if (!start) throw std::runtime_error("cannot read the start time of the kept user namespace's holder");
        r.start_time = *start;
        struct stat st;
        UniqueFd ns(openat(dir.get(), "ns/user", O_RDONLY | O_CLOEXEC));
        if (!ns || fstat(ns.get(), &st) < 0) throw_last_error("cannot open the kept user namespace");
        r.ns_inode = st.st_ino;
        path_ = kept_userns_record_path(user.runtime_dir);
        text_ = kept_userns_record_text(r);
        const std::string dir_path = path_.substr(0, path_.rfind('/'));
        if (mkdir(dir_path.c_str(), 0700) < 0 && errno != EEXIST) throw_last_error("cannot create " + dir_path);
        UniqueFd parent_dir(open(dir_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!parent_dir) throw_last_error("cannot open " + dir_path);
        // Whole or not at all: written aside, then renamed over an older one.
        const std::string tmp = ".userns." + std::to_string(parent);
        write_file_at(parent_dir.get(), tmp, text_, 0600);
        if (renameat(parent_dir.get(), tmp.c_str(), parent_dir.get(), "userns") < 0) {
            int e = errno;
            unlinkat(parent_dir.get(), tmp.c_str(), 0);
            throw_errno(e, "cannot write " + path_);
        }
    } catch (...) {
        text_.clear();
        stop();
        throw;
    }
}

KeptUserNamespace::~KeptUserNamespace() { stop(); }

void KeptUserNamespace::stop() noexcept {
    if (!text_.empty() && read_host_file(path_, 256).value_or("") == text_) unlink(path_.c_str());
    text_.clear();
    if (pid_ > 0) {
        kill(pid_, SIGKILL);
        (void)retry_eintr([&] { return waitpid(pid_, nullptr, 0); });
        pid_ = -1;
    }
}

UniqueFd open_kept_user_namespace(const RootlessUser& user) {
    if (!may_join_kept_userns(user.map) || user.runtime_dir.empty()) return {};
    auto text = read_host_file(kept_userns_record_path(user.runtime_dir), 256);
    if (!text) return {};
    auto r = parse_kept_userns_record(*text);
    if (!r) return {};
    // Everything below through this directory fd: it stays the recorded process's even if that
    // one exits and its PID is reused (then nothing can be read through it).
    UniqueFd dir(open(("/proc/" + std::to_string(r->pid)).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir || start_time_at(dir.get()) != r->start_time) return {};
    UniqueFd ns(openat(dir.get(), "ns/user", O_RDONLY | O_CLOEXEC));  // ptrace access: our own process
    struct stat st;
    if (!ns || fstat(ns.get(), &st) < 0 || st.st_ino != r->ns_inode) return {};
    uid_t owner = static_cast<uid_t>(-1);
    if (ioctl(ns.get(), NS_GET_OWNER_UID, &owner) < 0 || owner != user.uid) return {};
    // A child of our own user namespace, not one nested deeper (whose maps read the same from here).
    UniqueFd parent(ioctl(ns.get(), NS_GET_PARENT));
    struct stat parent_st, own_st;
    if (!parent || fstat(parent.get(), &parent_st) < 0 || stat("/proc/self/ns/user", &own_st) < 0 ||
        parent_st.st_ino != own_st.st_ino || parent_st.st_dev != own_st.st_dev)
        return {};
    auto uid_map = read_proc_at(dir.get(), "uid_map");
    auto gid_map = read_proc_at(dir.get(), "gid_map");
    auto setgroups = read_proc_at(dir.get(), "setgroups");
    if (!uid_map || !gid_map || !setgroups || !id_map_text_is(*uid_map, user.map.uid_lines) ||
        !id_map_text_is(*gid_map, user.map.gid_lines) || *setgroups != "allow\n")
        return {};
    return ns;
}

long clone_in_user_namespace(int userns_fd, clone_args ca) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) return -1;
    UniqueFd rd(p[0]), wr(p[1]);
    const bool want_pidfd = ca.flags & CLONE_PIDFD;
    int* pidfd_out = reinterpret_cast<int*>(ca.pidfd);
    pid_t helper = fork();
    if (helper < 0) return -1;
    if (helper == 0) {
        rd.reset();
        int64_t result;
        if (setns(userns_fd, CLONE_NEWUSER) < 0) {
            result = -errno;
        } else {
            // A sibling, not our child: the caller's own (it reaps it and gets its SIGCHLD; the
            // signal is ours, taken from this helper's).
            ca.flags = (ca.flags & ~static_cast<uint64_t>(CLONE_PIDFD)) | CLONE_PARENT;
            ca.pidfd = 0;
            ca.exit_signal = 0;
            long pid = syscall(SYS_clone3, &ca, sizeof ca);
            if (pid == 0) {
                wr.reset();
                return 0;
            }
            result = pid < 0 ? -errno : pid;
        }
        _exit(write(wr.get(), &result, sizeof result) == sizeof result ? 0 : 1);
    }
    wr.reset();
    int64_t result = -EIO;
    ssize_t n = retry_eintr([&] { return read(rd.get(), &result, sizeof result); });
    (void)retry_eintr([&] { return waitpid(helper, nullptr, 0); });
    if (n != sizeof result) result = -EIO;
    if (result < 0) {
        errno = static_cast<int>(-result);
        return -1;
    }
    const pid_t pid = static_cast<pid_t>(result);
    if (want_pidfd) {
        // Our child now, so its PID cannot be reused before we reap it.
        int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
        if (fd < 0) {
            int e = errno;
            kill(pid, SIGKILL);
            (void)retry_eintr([&] { return waitpid(pid, nullptr, 0); });
            errno = e;
            return -1;
        }
        *pidfd_out = fd;
    }
    return pid;
}

}  // namespace mk::core
