// The image pool: a directory of machine images (/var/lib/machines by default; the path is a
// parameter so tests use a temp dir). Directories, btrfs subvolumes (when the pool is on btrfs)
// and NAME.raw files. Everything here works on the pool's directory fd and never follows a
// symlink inside an image; removal never crosses into another file system (T-09) and is iterative
// (CVE-2021-3997: a 100 000-deep tree must not overflow the stack).
//
// Read-only follows machined 252's image_read_only(): subvolume -> BTRFS_SUBVOL_RDONLY, plain
// directory -> FS_IMMUTABLE_FL (chattr +i) on its top directory, raw file -> write bits cleared.
//
// Thread-compatible: an ImagePool is one open fd plus its path; concurrent changes to the same
// image from two threads are the caller's business (machd serialises them per image).
#pragma once

#include "core/base/rm_rf.hpp"

#include "core/base/tree_copy.hpp"  // copy_tree() for clones

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/unique_fd.hpp"

namespace mk::core {

// mstack: an OCI image as a layer stack (NAME.mstack, core/image/oci_store.hpp), as systemd 262.
enum class ImageType { directory, subvolume, raw, block, mstack };

// "directory", "subvolume", "raw", "block", "mstack": the strings machined's Image.Type property uses.
std::string_view to_string(ImageType t);
std::optional<ImageType> image_type_from_string(std::string_view s);

inline constexpr uint64_t kUnknownSize = UINT64_MAX;

// What machined's org.freedesktop.machine1.Image object exposes.
struct ImageInfo {
    std::string name;  // without ".raw" / ".mstack"
    std::string path;  // absolute
    ImageType type = ImageType::directory;
    bool read_only = false;
    uint64_t crtime_usec = 0;                 // CreationTimestamp (0 when the file system has no birth time)
    uint64_t mtime_usec = 0;                  // ModificationTimestamp
    uint64_t usage = kUnknownSize;            // Usage: bytes allocated (du), raw: blocks of the file
    uint64_t usage_exclusive = kUnknownSize;  // UsageExclusive (btrfs qgroups only)
    uint64_t limit = kUnknownSize;            // Limit (btrfs qgroups only)
    uint64_t limit_exclusive = kUnknownSize;  // LimitExclusive
};

class ImagePool {
public:
    // Opens (creating it 0700 if missing, as tmpfiles' "Q /var/lib/machines 0700") the pool, and
    // takes an existing one of ours back to 0700 (no other user may reach the trees, issue 19 B).
    explicit ImagePool(std::string path = "/var/lib/machines");

    const std::string& path() const { return path_; }
    int fd() const { return fd_.get(); }
    bool is_btrfs() const { return btrfs_; }

    // Every visible image (names starting with '.' are hidden, as machined). Sorted by name.
    // `with_usage` walks directory trees to sum their blocks (slow for big trees).
    std::vector<ImageInfo> list(bool with_usage = false) const;
    std::optional<ImageInfo> find(std::string_view name, bool with_usage = false) const;

    // Snapshot (btrfs subvolume), reflink-or-copy (raw) or fd-relative copy (directory, never
    // following symlinks, keeping owners, modes, times, xattrs and hard links). The copy is made
    // under a temporary name and renamed into place. A stack's copy links the same shared layers
    // and gets a copy of rw/, NAME.nspawn and NAME.oci-config.
    void clone(std::string_view from, std::string_view to, bool read_only = false);
    // EEXIST if `to` exists. A stack moves with its NAME.nspawn and NAME.oci-config.
    void rename(std::string_view from, std::string_view to);
    // A stack goes with its NAME.nspawn and NAME.oci-config, then the layers no other stack links
    // (remove_unused_oci_layers(false)).
    void remove(std::string_view name);
    // A stack: the immutable attribute on NAME.mstack; spawn then runs it without its rw/.
    void set_read_only(std::string_view name, bool ro);

    // OCI layers (.oci-sha256-<hex>) are shared by the stacks that link them. A transfer or a
    // clone holds the layer lock shared (wait: blocks) from before it decides to reuse a layer
    // until the stack linking it is in place; removing unused layers holds it exclusively, so a
    // layer is never removed under a transfer about to link it. An invalid fd: busy (!wait only).
    UniqueFd lock_oci_layers(bool exclusive, bool wait) const;
    // Removes every layer that no stack (installed, or a hidden one being made) links, and returns
    // the names with the bytes freed. `wait`: wait for running transfers; else, while one runs,
    // removes nothing (the layers stay for the next cleanup: CleanPool, remove, a failed pull).
    // `only`: consider just these layer names (a failed transfer's own).
    std::vector<std::pair<std::string, uint64_t>> remove_unused_oci_layers(bool wait,
                                                                           const std::vector<std::string>* only = nullptr);
    // Throws ENOTSUP "Quota is only supported on btrfs." unless the pool is btrfs.
    void set_limit(std::string_view name, uint64_t bytes);
    void set_pool_limit(uint64_t bytes);

    // Disk usage of the pool's file system: (used, size) of the statvfs; limit unsupported off btrfs.
    std::pair<uint64_t, uint64_t> pool_usage() const;

    // A hidden temporary entry (".#<prefix>XXXXXX") inside the pool, removed by the destructor
    // unless install()ed. Directory (a subvolume on btrfs) or regular file.
    class Temp {
    public:
        Temp(ImagePool& pool, std::string name, bool dir) : pool_(&pool), name_(std::move(name)), dir_(dir) {}
        Temp(Temp&& o) noexcept : pool_(o.pool_), name_(std::move(o.name_)), dir_(o.dir_), fd_(std::move(o.fd_)) {
            o.pool_ = nullptr;
        }
        Temp(const Temp&) = delete;
        Temp& operator=(const Temp&) = delete;
        Temp& operator=(Temp&&) = delete;
        ~Temp();
        const std::string& name() const { return name_; }
        int fd() const { return fd_.get(); }  // directory fd (dir) or O_RDWR fd (file)
        // Renames into place as `final_name` (NAME or NAME.raw). With `force` an existing image of
        // that name is replaced (atomically exchanged, then the old one removed); otherwise EEXIST.
        void install(const std::string& final_name, bool force, bool read_only);

    private:
        friend class ImagePool;
        void make_read_only();
        ImagePool* pool_;
        std::string name_;
        bool dir_;
        UniqueFd fd_;
    };
    Temp make_temp(std::string_view prefix, bool dir, std::string_view suffix = "");

    // Removes ".#import-*", ".#pull-*" and ".#clone-*" entries left by transfers that were killed
    // (SIGKILL skips the Temp destructor). Call when no transfer runs (machd start). Returns how many.
    size_t remove_stale_temporaries();

    // Throws EEXIST naming the image if an image `name` (dir/subvolume or name.raw) exists.
    void check_free(std::string_view name) const;

private:
    std::optional<ImageInfo> inspect(const std::string& entry, bool with_usage) const;
    std::string resolve_entry(std::string_view name) const;  // "name" or "name.raw", ENOENT if none

    std::string path_;
    UniqueFd fd_;
    bool btrfs_ = false;
};

// Removes an image's tree: the one remover (core/base/rm_rf.hpp) with the pool's flags, lifting
// the immutable attribute and deleting btrfs subvolumes. Throws; ENOENT is not an error.
inline void remove_tree_at(int dir_fd, const std::string& name) {
    rm_rf_at(dir_fd, name, kRemoveImmutable | kRemoveSubvolumes);
}

// Bytes allocated under dir_fd/name (hard-linked inodes counted once); raw files: their blocks.
uint64_t disk_usage_at(int dir_fd, const std::string& name);

// An OCI layer's usage, computed once. A layer never changes after it is unpacked, so its usage is
// stored on its directory (the xattr below, written after extraction, so a layer's tar cannot
// bring its own) and listing a stack reads it instead of walking every layer every time.
inline constexpr char kLayerUsageXattr[] = "user.machkit.usage";
// Walks the unpacked layer `layer_fd` and stores its usage on it; best effort (a file system
// without user xattrs keeps walking). Returns the usage.
uint64_t store_layer_usage(int layer_fd);
// The stored usage of pool_fd/layer; a layer without one (unpacked before it was stored) is walked
// once and the value stored for the next call.
uint64_t layer_usage_at(int pool_fd, const std::string& layer);

}  // namespace mk::core
