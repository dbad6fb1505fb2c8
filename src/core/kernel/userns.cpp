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
#include <cstdio>
#include <stdexcept>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <string>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/fs_at.hpp"
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
    return make_user_namespace(id_map_text(range, uid_extra), id_map_text(range, gid_extra));
}

UniqueFd make_user_namespace(const std::string& uid_map, const std::string& gid_map) {
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
    write_map(pid, "uid_map", uid_map);
    write_map(pid, "gid_map", gid_map);
    std::string ns = "/proc/" + std::to_string(pid) + "/ns/user";
    UniqueFd fd(open(ns.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_last_error("cannot open " + ns);
    return fd;
}

std::string id_map_problem(const std::vector<IdMapLine>& map) {
    if (map.empty()) return "no ranges";
    if (map.size() > 340) return "more than 340 ranges";
    for (size_t i = 0; i < map.size(); i++) {
        const IdMapLine& a = map[i];
        const std::string at =
            "range " + std::to_string(a.inside) + ":" + std::to_string(a.outside) + ":" + std::to_string(a.count);
        if (a.count == 0) return at + " is empty";
        if (uint64_t{a.inside} + a.count - 1 > UINT32_MAX - 1 || uint64_t{a.outside} + a.count - 1 > UINT32_MAX - 1)
            return at + " goes past the last ID (4294967294)";
        for (size_t j = 0; j < i; j++) {
            const IdMapLine& b = map[j];
            auto overlap = [](uint64_t x, uint64_t n, uint64_t y, uint64_t m) { return x < y + m && y < x + n; };
            if (overlap(a.inside, a.count, b.inside, b.count)) return at + " overlaps another inside the container";
            if (overlap(a.outside, a.count, b.outside, b.count)) return at + " overlaps another on the host";
        }
    }
    return "";
}

std::string id_map_text(const std::vector<IdMapLine>& map) {
    std::string text;
    for (const auto& l : map)
        text += std::to_string(l.inside) + " " + std::to_string(l.outside) + " " + std::to_string(l.count) + "\n";
    return text;
}

std::vector<IdMapLine> parse_id_map_text(std::string_view text) {
    std::vector<IdMapLine> out;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t end = text.find('\n', pos);
        if (end == std::string_view::npos) end = text.size();
        std::string line(text.substr(pos, end - pos));
        pos = end + 1;
        if (line.find_first_not_of(" \t") == std::string::npos) continue;
        unsigned long long v[3];
        char tail = 0;
        if (sscanf(line.c_str(), "%llu %llu %llu %c", &v[0], &v[1], &v[2], &tail) != 3 || v[0] > UINT32_MAX ||
            v[1] > UINT32_MAX || v[2] > UINT32_MAX || line.find('-') != std::string::npos)
            throw std::invalid_argument("malformed ID map line '" + line + "'");
        out.push_back({static_cast<uint32_t>(v[0]), static_cast<uint32_t>(v[1]), static_cast<uint32_t>(v[2])});
    }
    return out;
}

std::optional<uint32_t> map_id_to_host(const std::vector<IdMapLine>& map, uint32_t inside) {
    for (const auto& l : map)
        if (inside >= l.inside && inside - l.inside < l.count) return l.outside + (inside - l.inside);
    return std::nullopt;
}

std::pair<std::vector<IdMapLine>, std::vector<IdMapLine>> read_user_namespace_maps(int userns_fd) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) throw_last_error("pipe");
    UniqueFd rd(p[0]), wr(p[1]);
    pid_t pid = fork();
    if (pid < 0) throw_last_error("fork");
    if (pid == 0) {
        // Join, then send "uid_map\0gid_map" (or "\1errno" when joining fails).
        rd.reset();
        if (setns(userns_fd, CLONE_NEWUSER) < 0) {
            char e[1 + sizeof(int)] = {1};
            int err = errno;
            memcpy(e + 1, &err, sizeof err);
            (void)!write(wr.get(), e, sizeof e);
            _exit(1);
        }
        std::string out;
        for (const char* f : {"/proc/self/uid_map", "/proc/self/gid_map"}) {
            auto text = read_host_file(f, 65536);
            out += text.value_or("");
            out += '\0';
        }
        (void)!write(wr.get(), out.data(), out.size());
        _exit(0);
    }
    wr.reset();
    std::string got;
    char buf[4096];
    for (;;) {
        ssize_t n = retry_eintr([&] { return read(rd.get(), buf, sizeof buf); });
        if (n <= 0) break;
        got.append(buf, static_cast<size_t>(n));
    }
    retry_eintr([&] { return waitpid(pid, nullptr, 0); });
    if (!got.empty() && got[0] == 1 && got.size() == 1 + sizeof(int)) {
        int err;
        memcpy(&err, got.data() + 1, sizeof err);
        throw_errno(err, "cannot enter the user namespace to read its maps");
    }
    size_t z = got.find('\0');
    if (z == std::string::npos || got.size() < z + 2) throw_errno(EIO, "cannot read the user namespace's maps");
    try {
        return {parse_id_map_text(std::string_view(got).substr(0, z)),
                parse_id_map_text(std::string_view(got).substr(z + 1, got.size() - z - 2))};
    } catch (const std::invalid_argument& e) {
        throw_errno(EIO, e.what());
    }
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
