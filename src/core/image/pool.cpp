#include "core/image/pool.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <random>
#include <set>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/base/names.hpp"
#include "core/base/rm_rf.hpp"
#include "core/base/string_table.hpp"
#include "core/base/tree_copy.hpp"

namespace mk::core {

namespace {

uint64_t ts_usec(const statx_timestamp& t) { return static_cast<uint64_t>(t.tv_sec) * 1000000u + t.tv_nsec / 1000u; }

void check_name(std::string_view name) {
    if (!image_name_is_valid(name)) throw UsageError("invalid image name '" + std::string(name) + "'");
}

bool ends_with(std::string_view s, std::string_view suf) {
    return s.size() >= suf.size() && s.substr(s.size() - suf.size()) == suf;
}

std::string random_suffix() {
    static thread_local std::mt19937_64 rng(std::random_device{}());
    static const char al[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    std::string s;
    for (int i = 0; i < 8; i++) s += al[rng() % (sizeof al - 1)];
    return s;
}

uint64_t usage_walk(int fd, dev_t dev, std::set<std::pair<dev_t, ino_t>>& seen) {
    // Iterative enough for our use: depth is bounded by what the kernel lets a tree have and
    // each level holds one fd; trees deeper than 4096 are counted up to there.
    uint64_t total = 0;
    struct W {
        UniqueFd fd;
    };
    std::vector<UniqueFd> stack;
    stack.emplace_back(fcntl(fd, F_DUPFD_CLOEXEC, 3));
    while (!stack.empty()) {
        UniqueFd cur = std::move(stack.back());
        stack.pop_back();
        DIR* d = open_dir_stream(cur.get());
        while (dirent* de = readdir(d)) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            struct stat st;
            if (fstatat(cur.get(), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_dev != dev) continue;
            if (st.st_nlink > 1 && !S_ISDIR(st.st_mode) && !seen.insert({st.st_dev, st.st_ino}).second) continue;
            total += static_cast<uint64_t>(st.st_blocks) * 512;
            if (S_ISDIR(st.st_mode) && stack.size() < 4096) {
                UniqueFd c(openat(cur.get(), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
                if (c) stack.push_back(std::move(c));
            }
        }
        closedir(d);
    }
    return total;
}

constexpr std::array<EnumName<ImageType>, 5> kImageTypeNames{{{ImageType::directory, "directory"},
                                                              {ImageType::subvolume, "subvolume"},
                                                              {ImageType::raw, "raw"},
                                                              {ImageType::block, "block"},
                                                              {ImageType::mstack, "mstack"}}};

constexpr std::string_view kMstackSuffix = ".mstack";
constexpr std::string_view kLayerPrefix = ".oci-sha256-";

// The layers a stack directory links (layer@N -> ../.oci-sha256-<hex>): their entry names.
void add_linked_layers(int pool_fd, const std::string& entry, std::set<std::string>& out) {
    UniqueFd d(openat(pool_fd, entry.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!d) return;
    DIR* ds = open_dir_stream(d.get());
    while (dirent* de = readdir(ds)) {
        if (strncmp(de->d_name, "layer@", 6) != 0) continue;
        char buf[256];
        ssize_t n = readlinkat(d.get(), de->d_name, buf, sizeof buf - 1);
        if (n <= 3) continue;
        std::string_view t(buf, static_cast<size_t>(n));
        if (t.starts_with("../")) out.emplace(t.substr(3));
    }
    closedir(ds);
}

// The files an OCI image keeps next to its stack (core/image/oci_store.hpp).
constexpr std::array<std::string_view, 2> kStackCompanions = {".nspawn", ".oci-config"};

}  // namespace

std::string_view to_string(ImageType t) { return enum_to_string(kImageTypeNames, t, "?"); }

std::optional<ImageType> image_type_from_string(std::string_view s) { return enum_from_string(kImageTypeNames, s); }

uint64_t disk_usage_at(int dir_fd, const std::string& name) {
    struct stat st;
    if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) throw_last_error("cannot stat " + name);
    if (!S_ISDIR(st.st_mode)) return static_cast<uint64_t>(st.st_blocks) * 512;
    UniqueFd fd(openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) throw_last_error("cannot open " + name);
    std::set<std::pair<dev_t, ino_t>> seen;
    return static_cast<uint64_t>(st.st_blocks) * 512 + usage_walk(fd.get(), st.st_dev, seen);
}

uint64_t store_layer_usage(int layer_fd) {
    struct stat st;
    if (fstat(layer_fd, &st) < 0) throw_last_error("cannot stat a layer");
    std::set<std::pair<dev_t, ino_t>> seen;
    uint64_t usage = static_cast<uint64_t>(st.st_blocks) * 512 + usage_walk(layer_fd, st.st_dev, seen);
    std::string v = std::to_string(usage);
    (void)fsetxattr(layer_fd, kLayerUsageXattr, v.data(), v.size(), 0);
    return usage;
}

uint64_t layer_usage_at(int pool_fd, const std::string& layer) {
    UniqueFd fd(openat(pool_fd, layer.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) throw_last_error("cannot open " + layer);
    char buf[24];
    ssize_t n = fgetxattr(fd.get(), kLayerUsageXattr, buf, sizeof buf - 1);
    if (n > 0 && n < 21) {
        std::string_view v(buf, static_cast<size_t>(n));
        uint64_t usage = 0;
        bool digits = std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; });
        if (digits) {
            for (char c : v) usage = usage * 10 + static_cast<uint64_t>(c - '0');
            return usage;
        }
    }
    return store_layer_usage(fd.get());
}

ImagePool::ImagePool(std::string path) : path_(std::move(path)) {
    while (path_.size() > 1 && path_.back() == '/') path_.pop_back();
    if (mkdir(path_.c_str(), 0700) < 0 && errno != EEXIST) throw_last_error("cannot create image pool " + path_);
    fd_.reset(open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd_) throw_last_error("cannot open image pool " + path_);
    // Other users must not reach the trees: under -U with an idmapped tree a setuid file container
    // root leaves is host root's (issue 19 B), and spawn refuses such trees. tmpfiles' "Q ... 0700"
    // puts the mode back the same way; best effort (a pool that is not ours stays as it is).
    struct stat st;
    if (fstat(fd_.get(), &st) == 0 && st.st_uid == geteuid() && (st.st_mode & 077)) (void)fchmod(fd_.get(), 0700);
    struct statfs sfs;
    btrfs_ = fstatfs(fd_.get(), &sfs) == 0 && static_cast<unsigned long>(sfs.f_type) == BTRFS_SUPER_MAGIC;
}

std::optional<ImageInfo> ImagePool::inspect(const std::string& entry, bool with_usage) const {
    struct statx stx;
    if (statx(fd_.get(), entry.c_str(), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_BTIME, &stx) < 0) return std::nullopt;
    ImageInfo info;
    info.path = path_ + "/" + entry;
    info.mtime_usec = ts_usec(stx.stx_mtime);
    info.crtime_usec = (stx.stx_mask & STATX_BTIME) ? ts_usec(stx.stx_btime) : 0;
    if (S_ISDIR(stx.stx_mode) && ends_with(entry, kMstackSuffix)) {
        // As systemd 262: read-only when marked so, or when it has no writable layer.
        info.name = entry.substr(0, entry.size() - kMstackSuffix.size());
        info.type = ImageType::mstack;
        UniqueFd fd(openat(fd_.get(), entry.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!fd) return std::nullopt;
        struct stat rw;
        info.read_only =
            get_immutable(fd.get()) || fstatat(fd.get(), "rw", &rw, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(rw.st_mode);
    } else if (S_ISDIR(stx.stx_mode)) {
        info.name = entry;
        UniqueFd fd(openat(fd_.get(), entry.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!fd) return std::nullopt;
        if (btrfs_ && is_btrfs_subvolume(fd.get())) {
            info.type = ImageType::subvolume;
            uint64_t fl = 0;
            if (ioctl(fd.get(), BTRFS_IOC_SUBVOL_GETFLAGS, &fl) == 0) info.read_only = fl & BTRFS_SUBVOL_RDONLY;
        } else {
            info.type = ImageType::directory;
            info.read_only = get_immutable(fd.get());
        }
    } else if (S_ISREG(stx.stx_mode) && ends_with(entry, ".raw")) {
        info.name = entry.substr(0, entry.size() - 4);
        info.type = ImageType::raw;
        info.read_only = (stx.stx_mode & 0222) == 0;
        info.usage = stx.stx_blocks * 512;
        info.usage_exclusive = info.usage;
    } else if (S_ISBLK(stx.stx_mode)) {
        info.name = entry;
        info.type = ImageType::block;
    } else {
        return std::nullopt;
    }
    if (!image_name_is_valid(info.name)) return std::nullopt;
    if (with_usage && info.type != ImageType::raw && info.type != ImageType::block) {
        try {
            info.usage = disk_usage_at(fd_.get(), entry);
            if (info.type == ImageType::mstack) {
                // What the image takes: its own writes plus every layer it links (shared or not).
                std::set<std::string> layers;
                add_linked_layers(fd_.get(), entry, layers);
                for (const auto& l : layers) info.usage += layer_usage_at(fd_.get(), l);
            }
        } catch (const std::system_error&) {
        }
    }
    return info;
}

std::vector<ImageInfo> ImagePool::list(bool with_usage) const {
    std::vector<ImageInfo> out;
    DIR* d = open_dir_stream(fd_.get());
    std::vector<std::string> names;
    while (dirent* de = readdir(d))
        if (de->d_name[0] != '.') names.emplace_back(de->d_name);
    closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& n : names)
        if (auto i = inspect(n, with_usage)) out.push_back(std::move(*i));
    return out;
}

std::string ImagePool::resolve_entry(std::string_view name) const {
    check_name(name);
    std::string n(name);
    struct stat st;
    if (fstatat(fd_.get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && (S_ISDIR(st.st_mode) || S_ISBLK(st.st_mode)))
        return n;
    if (fstatat(fd_.get(), (n + ".raw").c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) return n + ".raw";
    if (fstatat(fd_.get(), (n + ".mstack").c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
        return n + ".mstack";
    throw_errno(ENOENT, "no image '" + n + "' in " + path_);
}

std::optional<ImageInfo> ImagePool::find(std::string_view name, bool with_usage) const {
    if (!image_name_is_valid(name)) return std::nullopt;
    try {
        return inspect(resolve_entry(name), with_usage);
    } catch (const std::system_error&) {
        return std::nullopt;
    }
}

size_t ImagePool::remove_stale_temporaries() {
    DIR* d = open_dir_stream(fd_.get());
    std::vector<std::string> stale;
    while (dirent* de = readdir(d)) {
        std::string_view n = de->d_name;
        if (n.starts_with(".#import-") || n.starts_with(".#pull-") || n.starts_with(".#clone-")) stale.emplace_back(n);
    }
    closedir(d);
    for (const auto& n : stale) remove_tree_at(fd_.get(), n);
    return stale.size();
}

void ImagePool::check_free(std::string_view name) const {
    check_name(name);
    std::string n(name);
    struct stat st;
    if (fstatat(fd_.get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 ||
        fstatat(fd_.get(), (n + ".raw").c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 ||
        fstatat(fd_.get(), (n + ".mstack").c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0)
        throw_errno(EEXIST, "image '" + n + "' already exists");
}

void ImagePool::rename(std::string_view from, std::string_view to) {
    std::string src = resolve_entry(from);
    if (auto i = inspect(src, false); i && i->read_only)
        throw_errno(EROFS, "image '" + std::string(from) + "' is read-only");
    check_free(to);
    const bool stack = ends_with(src, kMstackSuffix);
    std::string dst = std::string(to) + (ends_with(src, ".raw") ? ".raw" : stack ? ".mstack" : "");
    if (renameat2(fd_.get(), src.c_str(), fd_.get(), dst.c_str(), RENAME_NOREPLACE) < 0)
        throw_last_error("cannot rename image '" + std::string(from) + "'");
    if (!stack) return;
    // Its settings and config follow: settings are found by the image's name.
    for (auto suf : kStackCompanions) {
        std::string a = std::string(from) + std::string(suf), b = std::string(to) + std::string(suf);
        if (renameat2(fd_.get(), a.c_str(), fd_.get(), b.c_str(), RENAME_NOREPLACE) < 0 && errno != ENOENT)
            throw_last_error("cannot rename " + a);
    }
}

void ImagePool::remove(std::string_view name) {
    std::string e = resolve_entry(name);
    remove_tree_at(fd_.get(), e);
    if (!ends_with(e, kMstackSuffix)) return;
    for (auto suf : kStackCompanions)
        if (unlinkat(fd_.get(), (std::string(name) + std::string(suf)).c_str(), 0) < 0 && errno != ENOENT)
            throw_last_error("cannot remove " + std::string(name) + std::string(suf));
    remove_unused_oci_layers(false);
}

UniqueFd ImagePool::lock_oci_layers(bool exclusive, bool wait) const {
    // flock(2) on the pool directory itself, through an open file description of our own: no
    // lock file to leave behind, and the lock goes with the fd however the holder ends.
    UniqueFd fd(openat(fd_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) throw_last_error("cannot open " + path_);
    int op = (exclusive ? LOCK_EX : LOCK_SH) | (wait ? 0 : LOCK_NB);
    if (retry_eintr([&] { return flock(fd.get(), op); }) < 0) {
        if (errno == EWOULDBLOCK && !wait) return UniqueFd();
        throw_last_error("cannot lock the OCI layers of " + path_);
    }
    return fd;
}

std::vector<std::pair<std::string, uint64_t>> ImagePool::remove_unused_oci_layers(bool wait,
                                                                                  const std::vector<std::string>* only) {
    std::vector<std::pair<std::string, uint64_t>> removed;
    UniqueFd lock = lock_oci_layers(true, wait);
    if (!lock) return removed;
    std::vector<std::string> layers, stacks;
    DIR* d = open_dir_stream(fd_.get());
    while (dirent* de = readdir(d)) {
        std::string_view n = de->d_name;
        if (n.starts_with(kLayerPrefix)) {
            if (!only || std::find(only->begin(), only->end(), n) != only->end()) layers.emplace_back(n);
        }
        // Installed stacks, and hidden ones: a clone or transfer in the making (they hold the lock
        // shared, so none is running now; a killed one's links keep its layers until swept).
        else if (ends_with(n, kMstackSuffix) || n.starts_with(".#"))
            stacks.emplace_back(n);
    }
    closedir(d);
    std::set<std::string> used;
    for (const auto& st : stacks) add_linked_layers(fd_.get(), st, used);
    for (const auto& l : layers) {
        if (used.contains(l)) continue;
        uint64_t bytes = 0;
        try {
            bytes = layer_usage_at(fd_.get(), l);
        } catch (const std::system_error&) {
        }
        remove_tree_at(fd_.get(), l);
        removed.emplace_back(l, bytes);
    }
    return removed;
}

void ImagePool::set_read_only(std::string_view name, bool ro) {
    std::string e = resolve_entry(name);
    auto info = inspect(e, false);
    if (!info) throw_errno(ENOENT, "no image '" + std::string(name) + "'");
    switch (info->type) {
    case ImageType::raw: {
        struct stat st;
        if (fstatat(fd_.get(), e.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) throw_last_error("stat");
        mode_t m = ro ? (st.st_mode & ~mode_t{0222}) : (st.st_mode | 0200);
        if (fchmodat(fd_.get(), e.c_str(), m & 07777, 0) < 0) throw_last_error("cannot change the mode of the image");
        break;
    }
    case ImageType::subvolume: {
        UniqueFd fd(openat(fd_.get(), e.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        uint64_t fl = 0;
        if (!fd || ioctl(fd.get(), BTRFS_IOC_SUBVOL_GETFLAGS, &fl) < 0) throw_last_error("cannot read subvolume flags");
        fl = ro ? (fl | BTRFS_SUBVOL_RDONLY) : (fl & ~uint64_t{BTRFS_SUBVOL_RDONLY});
        if (ioctl(fd.get(), BTRFS_IOC_SUBVOL_SETFLAGS, &fl) < 0) throw_last_error("cannot set subvolume flags");
        break;
    }
    case ImageType::directory:
    case ImageType::mstack: {
        UniqueFd fd(openat(fd_.get(), e.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!fd) throw_last_error("cannot open image");
        set_immutable(fd.get(), ro);
        break;
    }
    case ImageType::block: throw_errno(ENOTSUP, "read-only switching of block device images is not supported");
    }
}

void ImagePool::set_limit(std::string_view name, uint64_t) {
    resolve_entry(name);
    if (!btrfs_) throw_errno(ENOTSUP, "Quota is only supported on btrfs.");
    throw_errno(ENOTSUP, "btrfs quota groups are not implemented yet");
}

void ImagePool::set_pool_limit(uint64_t) {
    if (!btrfs_) throw_errno(ENOTSUP, "Quota is only supported on btrfs.");
    throw_errno(ENOTSUP, "btrfs quota groups are not implemented yet");
}

std::pair<uint64_t, uint64_t> ImagePool::pool_usage() const {
    struct statvfs sv;
    if (fstatvfs(fd_.get(), &sv) < 0) throw_last_error("statvfs");
    uint64_t size = uint64_t{sv.f_blocks} * sv.f_frsize;
    return {size - uint64_t{sv.f_bfree} * sv.f_frsize, size};
}

ImagePool::Temp ImagePool::make_temp(std::string_view prefix, bool dir, std::string_view suffix) {
    for (int attempt = 0; attempt < 100; attempt++) {
        std::string name = ".#" + std::string(prefix) + random_suffix() + std::string(suffix);
        Temp t(*this, name, dir);
        if (dir) {
            int r;
            if (btrfs_) {
                btrfs_ioctl_vol_args args{};
                strncpy(args.name, name.c_str(), BTRFS_PATH_NAME_MAX);
                r = ioctl(fd_.get(), BTRFS_IOC_SUBVOL_CREATE, &args);
                if (r < 0 && errno != EEXIST) r = mkdirat(fd_.get(), name.c_str(), 0700);  // not allowed: plain dir
            } else {
                r = mkdirat(fd_.get(), name.c_str(), 0700);
            }
            if (r < 0) {
                if (errno == EEXIST) {
                    t.pool_ = nullptr;
                    continue;
                }
                t.pool_ = nullptr;
                throw_last_error("cannot create a temporary directory in " + path_);
            }
            t.fd_.reset(openat(fd_.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        } else {
            t.fd_.reset(openat(fd_.get(), name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
            if (!t.fd_ && errno == EEXIST) {
                t.pool_ = nullptr;
                continue;
            }
        }
        if (!t.fd_) {
            int e = errno;
            throw_errno(e, "cannot create a temporary entry in " + path_);
        }
        return t;
    }
    throw_errno(EEXIST, "cannot find a free temporary name in " + path_);
}

ImagePool::Temp::~Temp() {
    if (!pool_) return;
    fd_.reset();
    try {
        remove_tree_at(pool_->fd(), name_);
    } catch (...) {
        // Destructors must not throw; a leftover ".#" entry is hidden and cleaned by the next run.
    }
}

void ImagePool::Temp::install(const std::string& final_name, bool force, bool read_only) {
    if (!pool_) throw_errno(EINVAL, "temporary image already installed");
    std::string base = ends_with(final_name, ".raw") ? final_name.substr(0, final_name.size() - 4) : final_name;
    check_name(base);
    int pfd = pool_->fd();
    // The other kind (dir vs .raw) of the same name also blocks, as machined's names are shared.
    std::string other = dir_ ? base + ".raw" : base;
    struct stat st;
    bool other_exists = fstatat(pfd, other.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (other_exists && !force) throw_errno(EEXIST, "image '" + base + "' already exists");
    if (renameat2(pfd, name_.c_str(), pfd, final_name.c_str(), RENAME_NOREPLACE) == 0) {
        pool_ = nullptr;
        if (other_exists) remove_tree_at(pfd, other);
        // After the rename: an immutable directory could not be renamed any more.
        if (read_only) make_read_only();
        fd_.reset();
        return;
    }
    if (errno != EEXIST) throw_last_error("cannot move the image into place");
    if (!force) throw_errno(EEXIST, "image '" + base + "' already exists (use --force to replace it)");
    // Swap atomically, then remove the old image, which now has our temporary name. An immutable
    // (read-only) old directory cannot be renamed, so lift that first.
    {
        UniqueFd old(openat(pfd, final_name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
        if (old && get_immutable(old.get())) set_immutable(old.get(), false);
    }
    if (renameat2(pfd, name_.c_str(), pfd, final_name.c_str(), RENAME_EXCHANGE) < 0)
        throw_last_error("cannot replace the existing image");
    if (other_exists) remove_tree_at(pfd, other);
    if (read_only) make_read_only();
    fd_.reset();
    // The destructor removes name_ (now the old image).
}

void ImagePool::Temp::make_read_only() {
    if (dir_) {
        if (is_btrfs_subvolume(fd_.get())) {
            uint64_t fl = BTRFS_SUBVOL_RDONLY;
            if (ioctl(fd_.get(), BTRFS_IOC_SUBVOL_SETFLAGS, &fl) < 0) throw_last_error("cannot make the image read-only");
        } else {
            set_immutable(fd_.get(), true);
        }
    } else if (fchmod(fd_.get(), 0444) < 0) {
        throw_last_error("cannot make the image read-only");
    }
}

void ImagePool::clone(std::string_view from, std::string_view to, bool read_only) {
    std::string src = resolve_entry(from);
    check_free(to);
    bool raw = ends_with(src, ".raw");
    if (raw) {
        UniqueFd s(openat(fd_.get(), src.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        if (!s) throw_last_error("cannot open image");
        struct stat st;
        if (fstat(s.get(), &st) < 0) throw_last_error("stat");
        Temp t = make_temp("clone-", false, ".raw");
        copy_file_data(s.get(), t.fd(), st.st_size);
        if (ftruncate(t.fd(), st.st_size) < 0) throw_last_error("cannot size the clone");
        t.install(std::string(to) + ".raw", false, read_only);
        return;
    }
    UniqueFd s(openat(fd_.get(), src.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!s) throw_last_error("cannot open image");
    if (ends_with(src, kMstackSuffix)) {
        // The copy links the same layers: they must not go away before it is in place.
        UniqueFd layers = lock_oci_layers(false, true);
        Temp t = make_temp("clone-", true);
        if (fchmod(t.fd(), 0755) < 0) throw_last_error("cannot set the mode of the clone");
        copy_tree(s.get(), t.fd());
        // overlayfs's work directory belongs to the source's mount, not to the copy.
        remove_tree_at(t.fd(), ".#machkit-work.rw");
        for (auto suf : kStackCompanions) {
            std::string a = std::string(from) + std::string(suf), b = std::string(to) + std::string(suf);
            UniqueFd in(openat(fd_.get(), a.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
            if (!in) {
                if (errno == ENOENT) continue;
                throw_last_error("cannot open " + a);
            }
            struct stat st;
            if (fstat(in.get(), &st) < 0) throw_last_error("stat " + a);
            Temp f = make_temp("clone-", false);
            copy_file_data(in.get(), f.fd(), st.st_size);
            if (fchmod(f.fd(), st.st_mode & 0777) < 0) throw_last_error("cannot set the mode of " + b);
            if (renameat2(fd_.get(), f.name().c_str(), fd_.get(), b.c_str(), RENAME_NOREPLACE) < 0)
                throw_last_error("cannot create " + b);
            f.pool_ = nullptr;
        }
        t.install(std::string(to) + ".mstack", false, read_only);
        return;
    }
    if (btrfs_ && is_btrfs_subvolume(s.get())) {
        std::string tmp = ".#clone-" + random_suffix();
        btrfs_ioctl_vol_args_v2 args{};
        args.fd = s.get();
        strncpy(args.name, tmp.c_str(), BTRFS_SUBVOL_NAME_MAX);
        if (ioctl(fd_.get(), BTRFS_IOC_SNAP_CREATE_V2, &args) == 0) {
            Temp t(*this, tmp, true);
            t.fd_.reset(openat(fd_.get(), tmp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            t.install(std::string(to), false, read_only);
            return;
        }
    }
    Temp t = make_temp("clone-", true);
    copy_tree(s.get(), t.fd());
    // A read-only source's immutable flag is not copied (copy_meta leaves flags alone).
    t.install(std::string(to), false, read_only);
}

}  // namespace mk::core
