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
#include <endian.h>
#include <optional>
#include <set>
#include <utility>
#include <functional>
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

namespace {

// Forks a child that runs `enter` (unshare, setns), says whether it worked and waits to be killed;
// `use(pid)` runs while it lives (writes its maps, opens its /proc/PID/ns file). The child is killed
// and reaped when this returns or throws; `failure` is the error when `enter` did not work.
UniqueFd with_namespace_child(bool (*enter)(int), int arg, const char* failure, const std::function<UniqueFd(pid_t)>& use) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) throw_last_error("pipe");
    UniqueFd rd(p[0]), wr(p[1]);
    int q[2];
    if (pipe2(q, O_CLOEXEC) < 0) throw_last_error("pipe");
    UniqueFd ready_rd(q[0]), ready_wr(q[1]);
    pid_t pid = fork();
    if (pid < 0) throw_last_error("fork");
    if (pid == 0) {
        char c = enter(arg) ? 1 : 0;
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
    if (read(ready_rd.get(), &ok, 1) != 1 || !ok) throw_errno(EPERM, failure);
    return use(pid);
}

UniqueFd open_namespace_of(pid_t pid, const char* type) {
    std::string ns = "/proc/" + std::to_string(pid) + "/ns/" + type;
    UniqueFd fd(open(ns.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_last_error("cannot open " + ns);
    return fd;
}

}  // namespace

UniqueFd make_user_namespace(const std::string& uid_map, const std::string& gid_map) {
    return with_namespace_child([](int) { return unshare(CLONE_NEWUSER) == 0; }, 0, "cannot create a user namespace",
                                [&](pid_t pid) {
                                    write_map(pid, "uid_map", uid_map);
                                    write_map(pid, "gid_map", gid_map);
                                    return open_namespace_of(pid, "user");
                                });
}

UniqueFd make_network_namespace_in(int userns_fd) {
    return with_namespace_child([](int userns) { return setns(userns, CLONE_NEWUSER) == 0 && unshare(CLONE_NEWNET) == 0; },
                                userns_fd, "cannot create a network namespace in the container's user namespace",
                                [](pid_t pid) { return open_namespace_of(pid, "net"); });
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

struct ShiftWalk {
    dev_t dev;
    uint32_t from, to, count;
    // Files with more than one link already moved: with overlapping ranges (rootless: k -> k+1) a
    // second visit would move them again.
    std::set<std::pair<dev_t, ino_t>> linked;
};

// The xattr `name` of the file at `path` (a /proc/self/fd link or a name), empty if it has none.
std::string read_xattr(const std::string& path, const char* name) {
    char buf[4096];
    ssize_t n = getxattr(path.c_str(), name, buf, sizeof buf);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// The ids in the file's POSIX ACLs and its capabilities' root id (both read and written through the
// caller's user namespace) follow its owners. chown() drops security.capability: it is put back,
// with its root id moved as well.
struct IdXattrs {
    std::string acl_access, acl_default, caps;
};

IdXattrs read_id_xattrs(const std::string& path, bool dir, bool reg) {
    IdXattrs x;
    x.acl_access = read_xattr(path, "system.posix_acl_access");
    if (dir) x.acl_default = read_xattr(path, "system.posix_acl_default");
    if (reg) x.caps = read_xattr(path, "security.capability");
    return x;
}

void write_id_xattrs(const std::string& path, const std::string& name, const IdXattrs& x, const ShiftWalk& w, bool chowned) {
    auto put = [&](const char* attr, const std::optional<std::string>& v) {
        if (v && setxattr(path.c_str(), attr, v->data(), v->size(), 0) < 0)
            throw_last_error("cannot move the ids in " + std::string(attr) + " of " + name);
    };
    if (!x.acl_access.empty()) put("system.posix_acl_access", remap_acl_xattr(x.acl_access, w.from, w.to, w.count));
    if (!x.acl_default.empty()) put("system.posix_acl_default", remap_acl_xattr(x.acl_default, w.from, w.to, w.count));
    if (!x.caps.empty()) {
        // After a chown the xattr is gone: always back; else only when its root id moved.
        auto caps = remap_file_caps(x.caps, w.from, w.to, w.count);
        if (caps && (chowned || *caps != x.caps)) put("security.capability", caps);
    }
}

void shift_dir(int fd, ShiftWalk& w, int depth) {
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
        if (st.st_dev != w.dev) continue;  // a mount inside the tree is not the tree's
        if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && !w.linked.emplace(st.st_dev, st.st_ino).second) continue;
        uid_t u = remap(st.st_uid, w.from, w.to, w.count);
        gid_t g = remap(st.st_gid, w.from, w.to, w.count);
        if (S_ISDIR(st.st_mode)) {
            UniqueFd sub(openat(fd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!sub) throw_last_error("cannot open " + n);
            shift_dir(sub.get(), w, depth + 1);
            const std::string self = "/proc/self/fd/" + std::to_string(sub.get());
            IdXattrs x = read_id_xattrs(self, true, false);
            if ((u != st.st_uid || g != st.st_gid) && fchown(sub.get(), u, g) < 0) throw_last_error("cannot chown " + n);
            if (st.st_mode & (S_ISUID | S_ISGID)) fchmod(sub.get(), st.st_mode & 07777);
            write_id_xattrs(self, n, x, w, false);
        } else if (S_ISREG(st.st_mode)) {
            // Through an O_PATH fd: the name could be swapped for a symlink between the calls.
            UniqueFd f(openat(fd, n.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
            if (!f) throw_last_error("cannot open " + n);
            const std::string self = "/proc/self/fd/" + std::to_string(f.get());
            IdXattrs x = read_id_xattrs(self, false, true);
            const bool chowned = u != st.st_uid || g != st.st_gid;
            if (chowned) {
                if (fchownat(f.get(), "", u, g, AT_EMPTY_PATH) < 0) throw_last_error("cannot chown " + n);
                // chown() clears setuid/setgid bits: put them back.
                if (st.st_mode & (S_ISUID | S_ISGID)) chmod(self.c_str(), st.st_mode & 07777);
            }
            write_id_xattrs(self, n, x, w, chowned);
        } else if (u != st.st_uid || g != st.st_gid) {
            if (fchownat(fd, n.c_str(), u, g, AT_SYMLINK_NOFOLLOW) < 0) throw_last_error("cannot chown " + n);
        }
    }
}

void shift_root(int root_fd, const struct stat& st, uint32_t from, uint32_t to, uint32_t count) {
    ShiftWalk w{st.st_dev, from, to, count, {}};
    shift_dir(root_fd, w, 0);
    const std::string self = "/proc/self/fd/" + std::to_string(root_fd);
    IdXattrs x = read_id_xattrs(self, true, false);
    uid_t u = remap(st.st_uid, from, to, count);
    gid_t g = remap(st.st_gid, from, to, count);
    if (fchown(root_fd, u, g) < 0) throw_last_error("cannot chown the tree's root");
    write_id_xattrs(self, "the tree's root", x, w, false);
}

uint32_t le32(const char* p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return le32toh(v);
}
void put_le32(char* p, uint32_t v) {
    v = htole32(v);
    memcpy(p, &v, 4);
}

}  // namespace

std::optional<std::string> remap_acl_xattr(std::string_view acl, uint32_t from, uint32_t to, uint32_t count) {
    // struct posix_acl_xattr_header { le32 version = 2; } then entries { le16 tag; le16 perm; le32 id; }
    constexpr size_t kHeader = 4, kEntry = 8;
    constexpr uint16_t kAclUser = 0x02, kAclGroup = 0x08;
    if (acl.size() < kHeader || (acl.size() - kHeader) % kEntry != 0 || le32(acl.data()) != 2) return std::nullopt;
    std::string out(acl);
    bool changed = false;
    for (size_t at = kHeader; at < out.size(); at += kEntry) {
        uint16_t tag;
        memcpy(&tag, out.data() + at, 2);
        tag = le16toh(tag);
        if (tag != kAclUser && tag != kAclGroup) continue;
        uint32_t id = le32(out.data() + at + 4);
        uint32_t moved = remap(id, from, to, count);
        if (moved == id) continue;
        put_le32(out.data() + at + 4, moved);
        changed = true;
    }
    if (!changed) return std::nullopt;
    return out;
}

std::optional<std::string> remap_file_caps(std::string_view caps, uint32_t from, uint32_t to, uint32_t count) {
    // struct vfs_ns_cap_data { le32 magic_etc; { le32 permitted, inheritable; } data[2]; le32 rootid; }
    // (VFS_CAP_REVISION_3, 24 bytes); revision 2 (20 bytes) has no rootid: its root is 0.
    constexpr uint32_t kRevisionMask = 0xFF000000, kRevision2 = 0x02000000, kRevision3 = 0x03000000;
    constexpr size_t kSize2 = 20, kSize3 = 24;
    if (caps.size() < 4) return std::nullopt;
    const uint32_t magic = le32(caps.data());
    uint32_t root;
    if ((magic & kRevisionMask) == kRevision2 && caps.size() == kSize2) root = 0;
    else if ((magic & kRevisionMask) == kRevision3 && caps.size() == kSize3) root = le32(caps.data() + 20);
    else return std::nullopt;
    std::string out(caps.substr(0, kSize2));
    out.resize(kSize3);
    put_le32(out.data(), (magic & ~kRevisionMask) | kRevision3);
    put_le32(out.data() + 20, remap(root, from, to, count));
    return out;
}

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
    shift_root(root_fd, st, current, range.shift, range.count);
    std::string v = std::to_string(range.shift);
    if (fsetxattr(root_fd, kShiftXattr, v.data(), v.size(), 0) < 0) throw_last_error("cannot record the tree's UID shift");
}

void shift_tree_owners_up_one(int root_fd, uint32_t count) {
    struct stat st;
    if (fstat(root_fd, &st) < 0) throw_last_error("stat");
    shift_root(root_fd, st, 0, 1, count);
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
