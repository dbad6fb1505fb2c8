#include "core/image/archive.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <grp.h>
#include <pwd.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::core {

namespace {

constexpr size_t kIoBuf = 1 << 20;

struct ArchiveReadDeleter {
    void operator()(archive* a) const { archive_read_free(a); }
};
struct ArchiveWriteDeleter {
    void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryDeleter {
    void operator()(archive_entry* e) const { archive_entry_free(e); }
};
using ReadArchive = std::unique_ptr<archive, ArchiveReadDeleter>;
using WriteArchive = std::unique_ptr<archive, ArchiveWriteDeleter>;
using Entry = std::unique_ptr<archive_entry, EntryDeleter>;

// Names in messages are cut short: a hostile archive must not flood the log with a 4 KiB name.
std::string shorten(const std::string& s) { return s.size() <= 120 ? s : s.substr(0, 60) + "..." + s.substr(s.size() - 40); }

[[noreturn]] void bad_entry(const std::string& path, const std::string& why, int err = EINVAL) {
    throw_errno(err, "refusing archive entry '" + shorten(path) + "': " + why);
}

// The whole path below the root; every component must be a real directory (no symlinks, no
// magic links, no other file system).
UniqueFd open_beneath(int root_fd, const std::string& rel, int flags) {
    open_how how{};
    how.flags = static_cast<uint64_t>(flags | O_CLOEXEC | O_NOFOLLOW);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
    long fd = syscall(SYS_openat2, root_fd, rel.empty() ? "." : rel.c_str(), &how, sizeof how);
    return UniqueFd(static_cast<int>(fd));
}

// ---- reading side ----

struct ReadCtx {
    ByteSource* in = nullptr;
    std::vector<char> buf = std::vector<char>(kIoBuf);
    std::exception_ptr err;
    std::string tail;  // last 1024 bytes of the stream: the tar end marker must be there
    uint64_t total = 0;
    bool eof = false;
};

la_ssize_t read_cb(archive* a, void* client, const void** out) {
    auto* c = static_cast<ReadCtx*>(client);
    try {
        size_t r = c->in->read(c->buf.data(), c->buf.size());
        *out = c->buf.data();
        c->total += r;
        if (r == 0) c->eof = true;
        if (r >= 1024) {
            c->tail.assign(c->buf.data() + r - 1024, 1024);
        } else if (r > 0) {
            c->tail.append(c->buf.data(), r);
            if (c->tail.size() > 1024) c->tail.erase(0, c->tail.size() - 1024);
        }
        return static_cast<la_ssize_t>(r);
    } catch (...) {
        c->err = std::current_exception();
        archive_set_error(a, EIO, "input error");
        return -1;
    }
}

class Extractor {
public:
    Extractor(int root, const ExtractOptions& o) : root_(root), o_(o) { euid0_ = geteuid() == 0; }

    ExtractStats run(ByteSource& in) {
        ReadArchive a(archive_read_new());
        if (!a) throw_errno(ENOMEM, "libarchive");
        archive_read_support_format_tar(a.get());
        archive_read_support_filter_none(a.get());
        ReadCtx ctx;
        ctx.in = &in;
        if (archive_read_open(a.get(), &ctx, nullptr, read_cb, nullptr) != ARCHIVE_OK) fail(a.get(), ctx, "open");

        for (;;) {
            archive_entry* e = nullptr;
            int r = archive_read_next_header(a.get(), &e);
            if (r == ARCHIVE_EOF) break;
            if (r == ARCHIVE_WARN) warn(std::string("archive: ") + archive_error_string(a.get()));
            else if (r != ARCHIVE_OK) fail(a.get(), ctx, "reading entry header");
            if (++stats_.entries > o_.max_entries) throw_errno(E2BIG, "archive has too many entries");
            entry(a.get(), ctx, e);
            if (o_.on_entry) o_.on_entry(stats_.entries);
        }
        if (ctx.err) std::rethrow_exception(ctx.err);
        // Read the input to its end: decoders check their trailers (xz/zstd/gzip checksums) only there.
        std::vector<char> sink(kIoBuf);
        for (;;) {
            size_t r = in.read(sink.data(), sink.size());
            if (r == 0) break;
            ctx.total += r;
            if (r >= 1024) ctx.tail.assign(sink.data() + r - 1024, 1024);
            else {
                ctx.tail.append(sink.data(), r);
                if (ctx.tail.size() > 1024) ctx.tail.erase(0, ctx.tail.size() - 1024);
            }
        }
        // libarchive treats a clean EOF at an entry boundary as the end; a real archive ends in
        // two zero blocks, so their absence means it was cut short.
        if (stats_.entries == 0 && ctx.total == 0) throw_errno(EBADMSG, "archive is empty");
        if (ctx.tail.size() < 1024 || std::any_of(ctx.tail.begin(), ctx.tail.end(), [](char ch) { return ch != 0; }))
            throw_errno(EBADMSG, "archive is truncated: no end-of-archive marker");
        finish_dirs();
        return stats_;
    }

private:
    [[noreturn]] void fail(archive* a, ReadCtx& ctx, const std::string& what) {
        if (ctx.err) std::rethrow_exception(ctx.err);
        const char* msg = archive_error_string(a);
        std::string m = msg ? msg : "unknown error";
        int err = archive_errno(a);
        // libarchive reports truncation as "Truncated tar archive" / "Damaged tar archive".
        throw_errno(err == ENOMEM ? ENOMEM : EBADMSG, "corrupt or truncated archive (" + what + "): " + m);
    }

    void warn(const std::string& m) {
        if (o_.warn) o_.warn(m);
    }

    // Returns the parent directory fd for `parent` (normalised, "" = root), creating missing
    // directories one component at a time with mkdirat on the fd of the one above.
    int parent_fd(const std::string& parent, const std::string& full) {
        if (parent.empty()) return root_;
        if (cached_fd_ && cached_path_ == parent) return cached_fd_.get();
        UniqueFd fd = open_beneath(root_, parent, O_RDONLY | O_DIRECTORY);
        if (!fd && errno == ENOENT) fd = create_parents(parent, full);
        if (!fd) {
            if (errno == ELOOP || errno == EXDEV) bad_entry(full, "a parent directory is a symlink", ELOOP);
            // O_DIRECTORY|O_NOFOLLOW on a symlink reports ENOTDIR.
            if (errno == ENOTDIR) bad_entry(full, "a parent is a symlink or not a directory", ELOOP);
            throw_last_error("cannot open directory '" + parent + "' for '" + full + "'");
        }
        cached_path_ = parent;
        cached_fd_ = std::move(fd);
        return cached_fd_.get();
    }

    UniqueFd create_parents(const std::string& parent, const std::string& full) {
        UniqueFd cur = open_beneath(root_, "", O_RDONLY | O_DIRECTORY);
        size_t start = 0;
        while (start < parent.size()) {
            size_t end = parent.find('/', start);
            if (end == std::string::npos) end = parent.size();
            std::string comp = parent.substr(start, end - start);
            if (mkdirat(cur.get(), comp.c_str(), 0755) < 0 && errno != EEXIST)
                throw_last_error("cannot create directory for '" + full + "'");
            UniqueFd next(openat(cur.get(), comp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!next) {
                if (errno == ELOOP || errno == ENOTDIR)
                    bad_entry(full, "a parent directory is a symlink or not a directory", ELOOP);
                throw_last_error("cannot open directory for '" + full + "'");
            }
            cur = std::move(next);
            start = end + 1;
        }
        return cur;
    }

    // Removes whatever is at dir/name so the entry can take its place (tar semantics: later wins).
    void make_room(int dir, const std::string& name, const std::string& full) {
        if (unlinkat(dir, name.c_str(), 0) == 0 || errno == ENOENT) {
            cached_fd_.reset();
            cached_path_.clear();
            return;
        }
        if (errno == EISDIR) {
            if (unlinkat(dir, name.c_str(), AT_REMOVEDIR) == 0) {
                cached_fd_.reset();
                cached_path_.clear();
                return;
            }
            bad_entry(full, "would replace a non-empty directory", errno == ENOTEMPTY ? ENOTEMPTY : errno);
        }
        throw_last_error("cannot replace '" + full + "'");
    }

    void apply_owner(int fd, archive_entry* e, const std::string& path) {
        if (fchown(fd, static_cast<uid_t>(archive_entry_uid(e)), static_cast<gid_t>(archive_entry_gid(e))) < 0) {
            if (errno == EPERM && !euid0_) return;  // unprivileged extraction keeps our own uid
            throw_last_error("cannot set the owner of '" + path + "'");
        }
    }

    // GNU tar writes "user:NAME:r--" without the id (unless --numeric-owner was given when the
    // ACL was read); like tar, resolve the name on this host. UINT32_MAX when unknown.
    static uint32_t acl_qualifier(int qual, const char* name, bool user) {
        if (qual >= 0) return static_cast<uint32_t>(qual);
        if (!name || !*name) return UINT32_MAX;
        char* end = nullptr;
        errno = 0;
        unsigned long v = strtoul(name, &end, 10);
        if (!errno && end && *end == 0 && v < UINT32_MAX) return static_cast<uint32_t>(v);
        std::vector<char> buf(16384);
        if (user) {
            struct passwd pw, *res = nullptr;
            if (getpwnam_r(name, &pw, buf.data(), buf.size(), &res) == 0 && res) return res->pw_uid;
        } else {
            struct group gr, *res = nullptr;
            if (getgrnam_r(name, &gr, buf.data(), buf.size(), &res) == 0 && res) return res->gr_gid;
        }
        return UINT32_MAX;
    }

    // ACLs that libarchive parsed from text (GNU tar --acls: SCHILY.acl.access/default), turned
    // into the kernel's system.posix_acl_* xattr format and set on the fd like any xattr.
    void apply_acl(int fd, archive_entry* e, int type, const char* xattr, const std::string& path) {
        if (archive_entry_acl_count(e, type) <= 0) return;
        struct AclEnt {
            uint16_t tag, perm;
            uint32_t id;
        };
        std::vector<AclEnt> ents;
        archive_entry_acl_reset(e, type);
        int t, perm, tag, qual;
        const char* name;
        while (archive_entry_acl_next(e, type, &t, &perm, &tag, &qual, &name) == ARCHIVE_OK) {
            uint16_t kt;
            uint32_t id = UINT32_MAX;
            switch (tag) {
            case ARCHIVE_ENTRY_ACL_USER_OBJ: kt = 0x01; break;
            case ARCHIVE_ENTRY_ACL_USER: kt = 0x02, id = acl_qualifier(qual, name, true); break;
            case ARCHIVE_ENTRY_ACL_GROUP_OBJ: kt = 0x04; break;
            case ARCHIVE_ENTRY_ACL_GROUP: kt = 0x08, id = acl_qualifier(qual, name, false); break;
            case ARCHIVE_ENTRY_ACL_MASK: kt = 0x10; break;
            case ARCHIVE_ENTRY_ACL_OTHER: kt = 0x20; break;
            default: continue;  // NFSv4 "everyone@" and the like have no POSIX equivalent
            }
            if ((kt == 0x02 || kt == 0x08) && id == UINT32_MAX) {
                warn("dropping ACL entry for unknown " + std::string(kt == 0x02 ? "user '" : "group '") +
                     (name ? name : "?") + "' on '" + shorten(path) + "'");
                continue;
            }
            ents.push_back({kt, static_cast<uint16_t>(perm & 7), id});
        }
        // The kernel wants entries sorted by tag, then id.
        std::sort(ents.begin(), ents.end(),
                  [](const AclEnt& a, const AclEnt& b) { return a.tag != b.tag ? a.tag < b.tag : a.id < b.id; });
        std::string buf;
        uint32_t version = 2;
        buf.append(reinterpret_cast<const char*>(&version), 4);
        for (const auto& x : ents) {
            buf.append(reinterpret_cast<const char*>(&x.tag), 2);
            buf.append(reinterpret_cast<const char*>(&x.perm), 2);
            buf.append(reinterpret_cast<const char*>(&x.id), 4);
        }
        if (fsetxattr(fd, xattr, buf.data(), buf.size(), 0) < 0 && errno != ENOTSUP && errno != EOPNOTSUPP)
            warn("cannot set ACL " + std::string(xattr) + " on '" + shorten(path) + "': " + strerror(errno));
    }

    void apply_xattrs(int fd, archive_entry* e, const std::string& path) {
        const char* name;
        const void* value;
        size_t size;
        bool acl_access = false, acl_default = false;
        if (archive_entry_xattr_reset(e) > 0) {
            while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
                if (strcmp(name, "system.posix_acl_access") == 0) acl_access = true;
                if (strcmp(name, "system.posix_acl_default") == 0) acl_default = true;
            }
        }
        if (!acl_access) apply_acl(fd, e, ARCHIVE_ENTRY_ACL_TYPE_ACCESS, "system.posix_acl_access", path);
        if (!acl_default && archive_entry_filetype(e) == AE_IFDIR)
            apply_acl(fd, e, ARCHIVE_ENTRY_ACL_TYPE_DEFAULT, "system.posix_acl_default", path);
        if (archive_entry_xattr_reset(e) == 0) return;
        while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
            if (!archive_xattr_is_restored(name)) {
                if (dropped_xattrs_.insert(name).second)
                    warn("not restoring xattr " + std::string(name) + " (first on '" + path + "')");
                continue;
            }
            if (fsetxattr(fd, name, value, size, 0) < 0) {
                if (errno == ENOSPC || errno == EDQUOT) throw_last_error("disk full while setting xattrs of '" + path + "'");
                if (errno == ENOTSUP || errno == EOPNOTSUPP) {
                    if (dropped_xattrs_.insert(std::string("!") + name).second)
                        warn("file system does not support xattr " + std::string(name));
                    continue;
                }
                throw_last_error("cannot set xattr " + std::string(name) + " on '" + path + "'");
            }
        }
    }

    void apply_mode(int fd, archive_entry* e, const std::string& path) {
        if (fchmod(fd, archive_entry_perm(e) & 07777) < 0) throw_last_error("cannot set the mode of '" + path + "'");
    }

    static timespec mtime_of(archive_entry* e) {
        if (!archive_entry_mtime_is_set(e)) return timespec{0, UTIME_OMIT};
        return timespec{archive_entry_mtime(e), archive_entry_mtime_nsec(e)};
    }

    void entry(archive* a, ReadCtx& ctx, archive_entry* e) {
        const char* raw = archive_entry_pathname(e);
        std::string shown = raw ? raw : "";
        std::string why;
        auto norm = normalize_archive_path(shown, o_.limits, &why);
        if (!norm) bad_entry(shown, why);
        const std::string& path = *norm;

        const char* hl = archive_entry_hardlink(e);
        mode_t type = archive_entry_filetype(e);
        if (path.empty()) {
            if (hl || type != AE_IFDIR) bad_entry(shown, "the archive's root is not a directory");
            apply_dir_meta(root_, e, ".");
            return;
        }
        size_t slash = path.rfind('/');
        std::string parent = slash == std::string::npos ? "" : path.substr(0, slash);
        std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
        int dir = parent_fd(parent, shown);

        if (hl) {
            auto target = normalize_archive_path(hl, o_.limits, &why);
            if (!target) bad_entry(shown, "hard link target '" + shorten(hl) + "': " + why);
            if (target->empty() || *target == path) bad_entry(shown, "hard link to itself or to the root");
            size_t ts = target->rfind('/');
            std::string tparent = ts == std::string::npos ? "" : target->substr(0, ts);
            std::string tname = ts == std::string::npos ? *target : target->substr(ts + 1);
            UniqueFd tdir = open_beneath(root_, tparent, O_RDONLY | O_DIRECTORY);
            if (!tdir) {
                if (errno == ELOOP || errno == EXDEV || errno == ENOTDIR)
                    bad_entry(shown, "hard link target goes through a symlink or non-directory", ELOOP);
                bad_entry(shown, "hard link target '" + shorten(hl) + "' does not exist", errno);
            }
            make_room(dir = parent_fd(parent, shown), name, shown);
            dir = parent_fd(parent, shown);
            // linkat without AT_SYMLINK_FOLLOW links a symlink itself, never what it points to;
            // the kernel refuses directories (EPERM).
            if (linkat(tdir.get(), tname.c_str(), dir, name.c_str(), 0) < 0) {
                if (errno == ENOENT) bad_entry(shown, "hard link target '" + shorten(hl) + "' does not exist", ENOENT);
                if (errno == EPERM) bad_entry(shown, "hard link target '" + shorten(hl) + "' is a directory", EPERM);
                if (errno == ENOSPC || errno == EDQUOT) throw_last_error("disk full");
                throw_last_error("cannot create hard link '" + shown + "'");
            }
            return;
        }

        switch (type) {
        case AE_IFDIR: {
            UniqueFd fd = open_beneath(dir, name, O_RDONLY | O_DIRECTORY);
            if (!fd) {
                if (errno != ENOENT) make_room(dir, name, shown), dir = parent_fd(parent, shown);
                if (mkdirat(dir, name.c_str(), 0700) < 0) {
                    if (errno == ENOSPC || errno == EDQUOT) throw_last_error("disk full while creating '" + shown + "'");
                    throw_last_error("cannot create directory '" + shown + "'");
                }
                fd = open_beneath(dir, name, O_RDONLY | O_DIRECTORY);
                if (!fd) throw_last_error("cannot open new directory '" + shown + "'");
            }
            apply_dir_meta(fd.get(), e, path);
            break;
        }
        case AE_IFREG: {
            UniqueFd fd(openat(dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
            if (!fd && errno == EEXIST) {
                make_room(dir, name, shown);
                dir = parent_fd(parent, shown);
                fd.reset(openat(dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
            }
            if (!fd) {
                if (errno == ENOSPC || errno == EDQUOT) throw_last_error("disk full while creating '" + shown + "'");
                throw_last_error("cannot create '" + shown + "'");
            }
            write_data(a, ctx, e, fd.get(), shown);
            apply_owner(fd.get(), e, shown);
            apply_xattrs(fd.get(), e, shown);
            apply_mode(fd.get(), e, shown);
            timespec ts[2] = {timespec{0, UTIME_OMIT}, mtime_of(e)};
            ts[0] = ts[1];
            futimens(fd.get(), ts);
            break;
        }
        case AE_IFLNK: {
            const char* target = archive_entry_symlink(e);
            if (!target || !*target) bad_entry(shown, "symlink without a target");
            if (strlen(target) > o_.limits.max_path) bad_entry(shown, "symlink target too long", ENAMETOOLONG);
            if (symlinkat(target, dir, name.c_str()) < 0) {
                if (errno != EEXIST)
                    throw_last_error(errno == ENOSPC ? "disk full" : "cannot create symlink '" + shown + "'");
                make_room(dir, name, shown);
                dir = parent_fd(parent, shown);
                if (symlinkat(target, dir, name.c_str()) < 0) throw_last_error("cannot create symlink '" + shown + "'");
            }
            if (fchownat(dir, name.c_str(), static_cast<uid_t>(archive_entry_uid(e)),
                         static_cast<gid_t>(archive_entry_gid(e)), AT_SYMLINK_NOFOLLOW) < 0 &&
                euid0_)
                throw_last_error("cannot set the owner of '" + shown + "'");
            timespec ts[2] = {mtime_of(e), mtime_of(e)};
            utimensat(dir, name.c_str(), ts, AT_SYMLINK_NOFOLLOW);
            break;
        }
        case AE_IFIFO: {
            if (mkfifoat(dir, name.c_str(), 0600) < 0) {
                if (errno != EEXIST) throw_last_error("cannot create FIFO '" + shown + "'");
                make_room(dir, name, shown);
                dir = parent_fd(parent, shown);
                if (mkfifoat(dir, name.c_str(), 0600) < 0) throw_last_error("cannot create FIFO '" + shown + "'");
            }
            // O_PATH: opening a FIFO for reading would block; fchownat/fchmodat on the fd
            // through AT_EMPTY_PATH keep us on the inode we just made.
            UniqueFd fd(openat(dir, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
            if (!fd) throw_last_error("cannot open FIFO '" + shown + "'");
            if (fchownat(fd.get(), "", static_cast<uid_t>(archive_entry_uid(e)), static_cast<gid_t>(archive_entry_gid(e)),
                         AT_EMPTY_PATH) < 0 &&
                euid0_)
                throw_last_error("cannot set the owner of '" + shown + "'");
            std::string proc = "/proc/self/fd/" + std::to_string(fd.get());
            chmod(proc.c_str(), archive_entry_perm(e) & 07777);
            timespec ts[2] = {mtime_of(e), mtime_of(e)};
            utimensat(dir, name.c_str(), ts, AT_SYMLINK_NOFOLLOW);
            break;
        }
        case AE_IFCHR:
        case AE_IFBLK:
            // Counted, not warned one by one: a distribution tarball's /dev has dozens (the
            // caller prints one summary line).
            if (stats_.devices_skipped++ == 0)
                stats_.first_device_skipped = "'" + shown + "' (" + (type == AE_IFCHR ? "char " : "block ") +
                                              std::to_string(archive_entry_rdevmajor(e)) + ":" +
                                              std::to_string(archive_entry_rdevminor(e)) + ")";
            break;
        case AE_IFSOCK: warn("not creating socket '" + shown + "'"); break;
        default: bad_entry(shown, "unknown entry type");
        }
    }

    void apply_dir_meta(int fd, archive_entry* e, const std::string& path) {
        apply_owner(fd, e, path);
        apply_xattrs(fd, e, path);
        apply_mode(fd, e, path);
        // Directory times change as entries are added below; set them at the end.
        dir_times_[path] = mtime_of(e);
    }

    void write_data(archive* a, ReadCtx& ctx, archive_entry* e, int fd, const std::string& path) {
        const void* buf;
        size_t size;
        la_int64_t offset;
        la_int64_t pos = 0;
        for (;;) {
            int r = archive_read_data_block(a, &buf, &size, &offset);
            if (r == ARCHIVE_EOF) break;
            if (r != ARCHIVE_OK && r != ARCHIVE_WARN) fail(a, ctx, "reading data of '" + path + "'");
            if (int e = pwrite_all(fd, {static_cast<const char*>(buf), size}, offset); e < 0) {
                if (e == -ENOSPC || e == -EDQUOT) throw_errno(-e, "disk full while writing '" + path + "'");
                throw_errno(-e, "cannot write '" + path + "'");
            }
            pos = offset + static_cast<la_int64_t>(size);
            stats_.file_bytes += size;
        }
        la_int64_t want = archive_entry_size_is_set(e) ? archive_entry_size(e) : pos;
        if (want > pos && ftruncate(fd, want) < 0) throw_last_error("cannot size '" + path + "'");
    }

    void finish_dirs() {
        // Deepest first, so setting a child's time does not disturb its parent's afterwards.
        for (auto it = dir_times_.rbegin(); it != dir_times_.rend(); ++it) {
            UniqueFd fd = it->first == "." ? open_beneath(root_, "", O_RDONLY | O_DIRECTORY)
                                           : open_beneath(root_, it->first, O_RDONLY | O_DIRECTORY);
            if (!fd) continue;  // replaced later in the archive
            timespec ts[2] = {it->second, it->second};
            futimens(fd.get(), ts);
        }
        // The root sorts first ("." < letters) in the map; make sure it is set last.
        auto root = dir_times_.find(".");
        if (root != dir_times_.end()) {
            timespec ts[2] = {root->second, root->second};
            futimens(root_, ts);
        }
    }

    int root_;
    const ExtractOptions& o_;
    bool euid0_;
    ExtractStats stats_;
    std::string cached_path_;
    UniqueFd cached_fd_;
    std::map<std::string, timespec> dir_times_;
    std::set<std::string> dropped_xattrs_;
};

// ---- writing side ----

struct WriteCtx {
    ByteSink* out = nullptr;
    std::exception_ptr err;
};

la_ssize_t write_cb(archive* a, void* client, const void* buf, size_t n) {
    auto* c = static_cast<WriteCtx*>(client);
    try {
        c->out->write(buf, n);
        return static_cast<la_ssize_t>(n);
    } catch (...) {
        c->err = std::current_exception();
        archive_set_error(a, EIO, "output error");
        return -1;
    }
}

class Exporter {
public:
    Exporter(archive* a, WriteCtx& ctx, const ExportOptions& o) : a_(a), ctx_(ctx), o_(o), buf_(kIoBuf) {}

    void run(int root_fd) {
        struct stat st;
        if (fstat(root_fd, &st) < 0) throw_last_error("cannot stat the tree");
        if (!S_ISDIR(st.st_mode)) throw_errno(ENOTDIR, "export source is not a directory");
        dev_ = st.st_dev;
        UniqueFd root(fcntl(root_fd, F_DUPFD_CLOEXEC, 3));
        if (!root) throw_last_error("dup");
        emit(root.get(), "./", st, nullptr);
        walk(root.get(), "./", 1);
    }

private:
    void check(int r, const std::string& what) {
        if (r == ARCHIVE_OK) return;
        if (ctx_.err) std::rethrow_exception(ctx_.err);
        if (r == ARCHIVE_WARN) {
            if (o_.warn) o_.warn(what + ": " + archive_error_string(a_));
            return;
        }
        throw_errno(archive_errno(a_) > 0 ? archive_errno(a_) : EIO,
                    what + ": " + (archive_error_string(a_) ? archive_error_string(a_) : "libarchive error"));
    }

    void add_xattrs(archive_entry* e, int fd, bool root) {
        char names[65536];
        ssize_t n = flistxattr(fd, names, sizeof names);
        if (n <= 0) return;
        std::vector<char> val;
        for (ssize_t i = 0; i < n; i += static_cast<ssize_t>(strlen(names + i)) + 1) {
            const char* name = names + i;
            if (root && std::find(o_.root_skip_xattrs.begin(), o_.root_skip_xattrs.end(), name) != o_.root_skip_xattrs.end())
                continue;
            ssize_t s = fgetxattr(fd, name, nullptr, 0);
            if (s < 0) continue;
            val.resize(static_cast<size_t>(s) + 1);
            s = fgetxattr(fd, name, val.data(), val.size());
            if (s < 0) continue;
            archive_entry_xattr_add_entry(e, name, val.data(), static_cast<size_t>(s));
        }
    }

    void emit(int fd, const std::string& path, const struct stat& st, const char* symlink_target,
              const std::string* hardlink = nullptr) {
        Entry e(archive_entry_new());
        archive_entry_set_pathname(e.get(), path.c_str());
        archive_entry_copy_stat(e.get(), &st);
        // Numeric owners only, as systemd-export's tar --numeric-owner: names mean nothing in the guest.
        archive_entry_set_uname(e.get(), nullptr);
        archive_entry_set_gname(e.get(), nullptr);
        if (hardlink) {
            archive_entry_set_hardlink(e.get(), hardlink->c_str());
            archive_entry_set_size(e.get(), 0);
        }
        if (symlink_target) archive_entry_set_symlink(e.get(), symlink_target);
        if (fd >= 0 && !hardlink) add_xattrs(e.get(), fd, path == "./");
        check(archive_write_header(a_, e.get()), "writing header of " + path);
        if (fd >= 0 && S_ISREG(st.st_mode) && !hardlink) copy_data(fd, path, st.st_size);
        check(archive_write_finish_entry(a_), "finishing " + path);
    }

    void copy_data(int fd, const std::string& path, off_t size) {
        off_t done = 0;
        while (done < size) {
            ssize_t r = retry_eintr(
                [&] { return ::read(fd, buf_.data(), std::min<off_t>(static_cast<off_t>(buf_.size()), size - done)); });
            if (r < 0) throw_last_error("cannot read " + path);
            if (r == 0) {
                // The file shrank while we read it: pad, as tar does, and say so.
                if (o_.warn) o_.warn(path + ": file shrank while being exported; padded with zeros");
                std::fill(buf_.begin(), buf_.end(), 0);
                while (done < size) {
                    size_t k = static_cast<size_t>(std::min<off_t>(static_cast<off_t>(buf_.size()), size - done));
                    write_data(buf_.data(), k, path);
                    done += static_cast<off_t>(k);
                }
                break;
            }
            write_data(buf_.data(), static_cast<size_t>(r), path);
            done += r;
        }
    }

    void write_data(const char* p, size_t n, const std::string& path) {
        la_ssize_t w = archive_write_data(a_, p, n);
        if (w < 0 || static_cast<size_t>(w) != n) check(ARCHIVE_FATAL, "writing data of " + path);
        bytes_ += n;
        if (o_.on_bytes) o_.on_bytes(bytes_);
    }

    void walk(int dir_fd, const std::string& prefix, size_t depth) {
        if (depth > 4096) throw_errno(E2BIG, "tree too deep to export at " + prefix);
        std::vector<std::string> names;
        {
            int dfd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
            if (dfd < 0) throw_last_error("dup");
            DIR* d = fdopendir(dfd);
            if (!d) {
                ::close(dfd);
                throw_last_error("cannot list " + prefix);
            }
            rewinddir(d);
            errno = 0;
            while (dirent* de = readdir(d)) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
                names.emplace_back(de->d_name);
            }
            int err = errno;
            closedir(d);
            if (err) throw_errno(err, "cannot list " + prefix);
        }
        std::sort(names.begin(), names.end());
        for (const auto& name : names) {
            std::string path = prefix + name;
            struct stat st;
            if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT) continue;  // vanished meanwhile
                throw_last_error("cannot stat " + path);
            }
            if (st.st_dev != dev_) {
                if (o_.warn) o_.warn("not crossing into another file system at " + path);
                continue;
            }
            if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
                auto key = std::make_pair(st.st_dev, st.st_ino);
                auto it = links_.find(key);
                if (it != links_.end()) {
                    emit(-1, path, st, nullptr, &it->second);
                    continue;
                }
                links_.emplace(key, path);
            }
            if (S_ISREG(st.st_mode)) {
                UniqueFd fd(openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME));
                if (!fd && errno == EPERM) fd.reset(openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
                if (!fd) throw_last_error("cannot open " + path);
                struct stat st2;
                if (fstat(fd.get(), &st2) < 0 || st2.st_ino != st.st_ino)
                    throw_errno(EAGAIN, path + " changed during export");
                emit(fd.get(), path, st2, nullptr);
            } else if (S_ISDIR(st.st_mode)) {
                UniqueFd fd(openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
                if (!fd) throw_last_error("cannot open " + path);
                emit(fd.get(), path + "/", st, nullptr);
                walk(fd.get(), path + "/", depth + 1);
            } else if (S_ISLNK(st.st_mode)) {
                std::vector<char> target(static_cast<size_t>(std::max<off_t>(st.st_size, 255)) + 2);
                ssize_t n = readlinkat(dir_fd, name.c_str(), target.data(), target.size() - 1);
                if (n < 0) throw_last_error("cannot read symlink " + path);
                target[static_cast<size_t>(n)] = 0;
                emit(-1, path, st, target.data());
            } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) || S_ISFIFO(st.st_mode)) {
                emit(-1, path, st, nullptr);
            } else {
                if (o_.warn) o_.warn("skipping socket " + path);
            }
        }
    }

    archive* a_;
    WriteCtx& ctx_;
    const ExportOptions& o_;
    std::vector<char> buf_;
    dev_t dev_ = 0;
    uint64_t bytes_ = 0;
    std::map<std::pair<dev_t, ino_t>, std::string> links_;
};

uint64_t walk_bytes(int dir_fd, dev_t dev, size_t depth) {
    if (depth > 4096) return 0;
    int dfd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 3);
    if (dfd < 0) return 0;
    DIR* d = fdopendir(dfd);
    if (!d) {
        ::close(dfd);
        return 0;
    }
    uint64_t total = 0;
    while (dirent* de = readdir(d)) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        struct stat st;
        if (fstatat(dir_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_dev != dev) continue;
        if (S_ISREG(st.st_mode)) total += static_cast<uint64_t>(st.st_size);
        else if (S_ISDIR(st.st_mode)) {
            UniqueFd fd(openat(dir_fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (fd) total += walk_bytes(fd.get(), dev, depth + 1);
        }
    }
    closedir(d);
    return total;
}

}  // namespace

std::optional<std::string> normalize_archive_path(std::string_view name, const ArchivePathLimits& limits, std::string* why) {
    auto no = [&](const char* reason) -> std::optional<std::string> {
        if (why) *why = reason;
        return std::nullopt;
    };
    if (name.empty()) return no("empty name");
    if (name.find('\0') != std::string_view::npos) return no("name contains a NUL byte");
    if (name.front() == '/') return no("absolute path");
    if (name.size() > limits.max_path) return no("path too long");
    std::string out;
    out.reserve(name.size());
    size_t depth = 0;
    size_t start = 0;
    while (start <= name.size()) {
        size_t end = name.find('/', start);
        if (end == std::string_view::npos) end = name.size();
        std::string_view comp = name.substr(start, end - start);
        start = end + 1;
        if (comp.empty() || comp == ".") continue;
        if (comp == "..") return no("path contains '..'");
        if (comp.size() > limits.max_name) return no("file name too long");
        if (++depth > limits.max_depth) return no("path too deep");
        if (!out.empty()) out += '/';
        out += comp;
    }
    return out;
}

bool archive_xattr_is_restored(std::string_view name) {
    return name.starts_with("user.") || name == "security.capability" || name == "system.posix_acl_access" ||
           name == "system.posix_acl_default";
}

ExtractStats extract_tar(ByteSource& in, int dest_fd, const ExtractOptions& opts) {
    Extractor x(dest_fd, opts);
    return x.run(in);
}

void write_tar(int src_dir_fd, ByteSink& out, const ExportOptions& opts) {
    WriteArchive a(archive_write_new());
    if (!a) throw_errno(ENOMEM, "libarchive");
    // pax: no limits on names, sizes, ids; xattrs as SCHILY.xattr.* (what GNU tar --xattrs reads,
    // so systemd-import 252 can take our exports).
    archive_write_set_format_pax_restricted(a.get());
    // Only SCHILY.xattr.* records (raw values): GNU tar reads them and warns about libarchive's
    // own base64 LIBARCHIVE.xattr.* duplicates, which would also double the header size.
    archive_write_set_format_option(a.get(), "pax", "xattrheader", "SCHILY");
    archive_write_add_filter_none(a.get());
    archive_write_set_bytes_per_block(a.get(), 10240);
    WriteCtx ctx;
    ctx.out = &out;
    if (archive_write_open(a.get(), &ctx, nullptr, write_cb, nullptr) != ARCHIVE_OK)
        throw_errno(EIO, std::string("cannot start the archive: ") + archive_error_string(a.get()));
    Exporter x(a.get(), ctx, opts);
    x.run(src_dir_fd);
    if (archive_write_close(a.get()) != ARCHIVE_OK) {
        if (ctx.err) std::rethrow_exception(ctx.err);
        throw_errno(EIO, std::string("cannot finish the archive: ") + archive_error_string(a.get()));
    }
    out.finish();
}

uint64_t tree_file_bytes(int dir_fd) {
    struct stat st;
    if (fstat(dir_fd, &st) < 0) return 0;
    return walk_bytes(dir_fd, st.st_dev, 0);
}

}  // namespace mk::core
