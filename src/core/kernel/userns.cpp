#include "core/kernel/userns.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <string>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/io.hpp"

namespace mk::core {

uint32_t pick_uid_base(std::string_view name, unsigned attempt) {
    // FNV-1a over the name, then a stride through the pool for further attempts.
    uint64_t h = 1469598103934665603ull;
    for (char c : name) {
        h ^= static_cast<unsigned char>(c);
        h *= 1099511628211ull;
    }
    const uint64_t slots = (kPickLast - kPickFirst) / 0x10000;
    uint64_t slot = (h + uint64_t{attempt} * 0x9E3779B1ull) % slots;
    return static_cast<uint32_t>(kPickFirst + slot * 0x10000);
}

RunLock lock_uid_range(uint32_t shift) { return RunLock::try_take("uidrange/" + std::to_string(shift)); }

std::string id_map_text(const IdRange& r, const std::vector<IdMapping>& extra) {
    std::vector<IdMapping> cuts = extra;
    std::sort(cuts.begin(), cuts.end(), [](const IdMapping& a, const IdMapping& b) { return a.inside < b.inside; });
    std::string text;
    auto line = [&](uint32_t inside, uint32_t outside, uint32_t count) {
        if (count) text += std::to_string(inside) + " " + std::to_string(outside) + " " + std::to_string(count) + "\n";
    };
    uint32_t from = 0;
    for (const auto& c : cuts) {
        if (c.inside < from || c.inside >= r.count) continue;
        line(from, r.shift + from, c.inside - from);
        from = c.inside + 1;
    }
    line(from, r.shift + from, r.count - from);
    for (const auto& c : cuts) line(c.inside, c.outside, 1);
    return text;
}

static void write_map(pid_t pid, const char* file, const std::string& text) {
    std::string path = "/proc/" + std::to_string(pid) + "/" + file;
    UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) throw_last_error("cannot open " + path);
    if (write(fd.get(), text.data(), text.size()) < 0) throw_last_error("cannot write " + path);
}

UniqueFd make_user_namespace(const IdRange& range, const std::vector<IdMapping>& uid_extra,
                             const std::vector<IdMapping>& gid_extra) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) throw_last_error("pipe");
    UniqueFd rd(p[0]), wr(p[1]);
    int q[2];
    if (pipe2(q, O_CLOEXEC) < 0) throw_last_error("pipe");
    UniqueFd ready_rd(q[0]), ready_wr(q[1]);
    pid_t pid = fork();
    if (pid < 0) throw_last_error("fork");
    if (pid == 0) {
        // Unshare, say so, and wait to be killed: the parent only needs our /proc/PID/ns/user.
        char c = unshare(CLONE_NEWUSER) == 0 ? 1 : 0;
        (void)!write(ready_wr.get(), &c, 1);
        (void)!read(rd.get(), &c, 1);
        _exit(0);
    }
    ready_wr.reset();
    struct Reap {
        pid_t pid;
        UniqueFd& wr;
        ~Reap() {
            wr.reset();
            kill(pid, SIGKILL);
            retry_eintr([&] { return waitpid(pid, nullptr, 0); });
        }
    } reap{pid, wr};
    char ok = 0;
    if (read(ready_rd.get(), &ok, 1) != 1 || !ok) throw_errno(EPERM, "cannot create a user namespace");
    write_map(pid, "uid_map", id_map_text(range, uid_extra));
    write_map(pid, "gid_map", id_map_text(range, gid_extra));
    std::string ns = "/proc/" + std::to_string(pid) + "/ns/user";
    UniqueFd fd(open(ns.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_last_error("cannot open " + ns);
    return fd;
}

}  // namespace mk::core

namespace mk::core {
namespace {

constexpr const char* kShiftXattr = "trusted.machkit.uid_shift";

// Maps an id from the tree's current range (base `from`) to the new one (base `to`); ids outside
// the current range are left alone.
uint32_t remap(uint32_t id, uint32_t from, uint32_t to, uint32_t count) {
    if (id < from || id - from >= count) return id;
    return id - from + to;
}

void shift_dir(int fd, dev_t dev, uint32_t from, uint32_t to, uint32_t count, int depth) {
    if (depth > 4096) throw_errno(ELOOP, "tree too deep to change its owners");
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (dup_fd < 0) throw_last_error("dup");
    DIR* d = fdopendir(dup_fd);
    if (!d) {
        close(dup_fd);
        throw_last_error("fdopendir");
    }
    std::vector<std::string> names;
    while (dirent* e = readdir(d))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) names.emplace_back(e->d_name);
    closedir(d);
    for (const auto& n : names) {
        struct stat st;
        if (fstatat(fd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
        if (st.st_dev != dev) continue;  // a mount inside the tree is not the tree's
        uid_t u = remap(st.st_uid, from, to, count);
        gid_t g = remap(st.st_gid, from, to, count);
        if (S_ISDIR(st.st_mode)) {
            UniqueFd sub(openat(fd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!sub) throw_last_error("cannot open " + n);
            shift_dir(sub.get(), dev, from, to, count, depth + 1);
            if ((u != st.st_uid || g != st.st_gid) && fchown(sub.get(), u, g) < 0) throw_last_error("cannot chown " + n);
            if (st.st_mode & (S_ISUID | S_ISGID)) fchmod(sub.get(), st.st_mode & 07777);
        } else if (u != st.st_uid || g != st.st_gid) {
            if (fchownat(fd, n.c_str(), u, g, AT_SYMLINK_NOFOLLOW) < 0) throw_last_error("cannot chown " + n);
            // chown() clears setuid/setgid bits: put them back on regular files.
            if (S_ISREG(st.st_mode) && (st.st_mode & (S_ISUID | S_ISGID))) {
                UniqueFd f(openat(fd, n.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
                std::string p = "/proc/self/fd/" + std::to_string(f.get());
                if (f) chmod(p.c_str(), st.st_mode & 07777);
            }
        }
    }
}

}  // namespace

void shift_tree_ownership(int root_fd, const IdRange& range) {
    struct stat st;
    if (fstat(root_fd, &st) < 0) throw_last_error("stat");
    // The tree's current base: recorded by an earlier shift, else the owner of its root (0 for a
    // tree that was never shifted).
    uint32_t current = st.st_uid & 0xFFFF0000u;
    char buf[32] = {};
    ssize_t n = fgetxattr(root_fd, kShiftXattr, buf, sizeof buf - 1);
    if (n > 0) current = static_cast<uint32_t>(strtoul(buf, nullptr, 10));
    if (current == range.shift && st.st_uid == range.shift) return;
    shift_dir(root_fd, st.st_dev, current, range.shift, range.count, 0);
    uid_t u = remap(st.st_uid, current, range.shift, range.count);
    gid_t g = remap(st.st_gid, current, range.shift, range.count);
    if (fchown(root_fd, u, g) < 0) throw_last_error("cannot chown the tree's root");
    std::string v = std::to_string(range.shift);
    if (fsetxattr(root_fd, kShiftXattr, v.data(), v.size(), 0) < 0) throw_last_error("cannot record the tree's UID shift");
}

bool keeps_out_other_users(uid_t owner, gid_t group, mode_t mode) {
    if (owner != 0 || (mode & S_IXOTH)) return false;
    return !(mode & S_IXGRP) || group == 0;
}

bool reachable_by_other_users(int dir_fd) {
    char link[PATH_MAX + 1];
    std::string self = "/proc/self/fd/" + std::to_string(dir_fd);
    ssize_t n = readlink(self.c_str(), link, PATH_MAX);
    if (n < 0) throw_last_error("cannot find the path of " + self);
    std::string path(link, static_cast<size_t>(n));
    if (!path.starts_with('/')) return true;  // "(deleted)" and the like: nothing to judge by
    UniqueFd cur(open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!cur) throw_last_error("cannot open /");
    size_t pos = 1;
    for (;;) {
        struct stat st;
        if (fstat(cur.get(), &st) < 0) throw_last_error("cannot stat a directory above " + path);
        if (keeps_out_other_users(st.st_uid, st.st_gid, st.st_mode)) return false;
        size_t slash = path.find('/', pos);
        if (slash == std::string::npos) return true;  // `cur` is the parent; the tree itself is next
        std::string comp = path.substr(pos, slash - pos);
        pos = slash + 1;
        if (comp.empty()) continue;
        cur.reset(openat(cur.get(), comp.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!cur) throw_last_error("cannot open " + path.substr(0, slash));
    }
}

}  // namespace mk::core
