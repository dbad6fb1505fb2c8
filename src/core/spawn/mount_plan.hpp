// The mount plan: what to mount where inside the container, as data. build_mount_plan() is pure
// (unit-tested); apply_mount_plan() carries a plan out inside the child's mount namespace.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/spawn/container_cgroup.hpp"
#include "core/spawn/spawn_spec.hpp"

namespace mk::core {

enum class StepKind {
    Fs,       // a new filesystem instance (proc, sysfs, tmpfs, devpts, mqueue, cgroup2, overlay)
    Bind,     // bind mount of `source` (host path, or a path inside the container when source_in_root)
    Mask,     // bind the inaccessible file or directory over `target`: read-only, empty
    Mkdir,    // directory inside a tmpfs we own
    File,     // empty regular file inside a tmpfs we own
    Node,     // character device node (mknod), in our /dev tmpfs
    Symlink,  // symlink `source` at `target`, in a tmpfs we own
    Remount,  // set `attrs` on the mount already at `target` (not recursively)
};

struct MountStep {
    StepKind kind = StepKind::Fs;
    std::string target;  // absolute path inside the container
    std::string fstype;
    std::vector<std::pair<std::string, std::string>> options;
    uint64_t attrs = 0;        // MOUNT_ATTR_* to set on the new mount
    uint64_t clear_attrs = 0;  // MOUNT_ATTR_* to clear (a bind inherits its source's flags)
    std::string source;
    bool source_in_root = false;
    bool recursive = true;
    bool idmap = false;            // Bind: map the source's owners into the container's range (--bind=…:idmap)
    bool idmap_recursive = false;  // ... and its submounts' (OCI "ridmap")
    std::string idmap_uid_map{}, idmap_gid_map{};  // ... through a namespace of these maps (OCI mounts[].uidMappings)
    int idmap_userns_fd = -1;                      // that namespace, made by prepare() (borrowed from Prepared)
    bool optional = false;                         // a missing target (or source) is skipped, not an error
    bool api_target = false;        // target must be a plain directory or file of the tree: no symlinks at all
    bool create_target = false;     // create a missing target (a directory, or a file if the source is one)
    bool copy_up = false;           // Fs: the new file system starts with a copy of what the tree has at
                                    // `target` (crun's tmpcopyup, for podman's --read-only)
    bool mode_from_target = false;  // Fs: no mode= given, so the tmpfs takes the mode of the directory it
                                    // covers, or tmpfs's own 1777 where there was none (runc's, for OCI mounts)
    mode_t mode = 0755;             // Mkdir/File/Node
    dev_t device = 0;               // Node
    // Mkdir/File/Symlink: the owner (UID and GID) given after creating it; unset: the creator.
    std::optional<uint32_t> owner;
    // Bind: a detached mount of `source` made earlier (the /dev plan built inside the user
    // namespace, where the host's path is out of reach): attached instead of cloning `source`.
    int source_mount_fd = -1;
};

// Paths under /proc bound over with an inaccessible, read-only, empty file (nspawn's list).
inline constexpr const char* kMaskedProcFiles[] = {
    "/proc/kallsyms", "/proc/kcore", "/proc/keys", "/proc/sysrq-trigger", "/proc/timer_list",
};
// Directories under /proc made read-only.
inline constexpr const char* kReadOnlyProcDirs[] = {
    "/proc/acpi", "/proc/apm", "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/scsi",
};

// Where spawn keeps the inaccessible nodes inside the container (as nspawn does).
inline constexpr const char* kInaccessibleDir = "/run/host/inaccessible";

// `uid_shift`: with a user namespace, the host UID of the container's root. Its tmpfs mounts are
// then owned by that UID and devpts uses the container's tty group, so root inside can use them.
std::vector<MountStep> build_mount_plan(const SpawnSpec& spec, std::optional<uint32_t> uid_shift = std::nullopt);

// -U without config.json: /dev is built from inside the container's user namespace (after
// pivot_root), so its mounts are the container's own and not locked there (MNT_LOCKED), as runc's
// in a user namespace: criu can then bind /dev alone to archive it (docs/criu.md, "-U"). Only when
// the user mounts nothing at or below /dev (their sources are host paths). Pure.
bool dev_can_be_built_in_userns(const SpawnSpec& spec);

// Moves the /dev steps out of `plan` (one made with a uid_shift) and returns them as they are
// applied from inside the user namespace: the tmpfs and devpts options in the namespace's own IDs
// (uid/gid 0, tty group 5), each device node a bind of the host's node of the same path (nothing
// in a user namespace can mknod; a file system mounted there would not honour nodes anyway), and
// the plan keeps a step that makes sure the /dev directory exists. Pure.
std::vector<MountStep> take_dev_steps_for_userns(std::vector<MountStep>& plan);

// /sys/fs/cgroup for a guest with a cgroup namespace of its own (booted guests), per the host's
// layout; applied after the mount plan, from inside that namespace.
std::vector<MountStep> build_cgroup_mount_plan(const CgroupLayout& cgroups);

// overlayfs needs a work directory on the upper directory's file system: this one, next to it.
// The launcher creates it before the container starts and removes it after.
std::string overlay_workdir(const std::string& upper);

// ---- OCI layer stacks as the container root (NAME.mstack, core/image/oci_store.hpp) ----

// overlayfs takes at most 500 lower layers.
inline constexpr size_t kMstackMaxLayers = 500;

bool is_mstack_path(std::string_view path);  // "…/NAME.mstack"

// The machine search path of systemd-nspawn -M NAME without -D/-i (systemd's image_find()).
inline constexpr std::string_view kMachineSearchPath[] = {"/etc/machines", "/run/machines", "/var/lib/machines",
                                                          "/usr/local/lib/machines", "/usr/lib/machines"};
// The image of machine NAME: in the first directory of `dirs` that has one, NAME (a directory),
// NAME.raw (a file or block device: is_raw) or NAME.mstack (an OCI layer stack, a directory), in
// that order. nullopt when none has it; UsageError for a NAME that is no machine name.
struct FoundImage {
    std::string path;
    bool is_raw = false;
};
std::optional<FoundImage> find_machine_image(std::string_view name, const std::vector<std::string>& dirs);

// The overlay for a stack: its layers top-most first, and the writable upper layer with the work
// directory next to it (both empty for an ephemeral container, whose upper lives on a tmpfs).
struct MstackRoot {
    std::vector<std::string> lowers;
    std::string upper, work;
    bool rw_lower = false;  // lowers[0] is the stack's rw/ (not a shared layer)
};

// Pure. `entries`: the stack directory's "layer@N" names with their symlink targets. Each must be
// "../.oci-sha256-<64 hex>" (a layer of the same pool: a stack cannot point anywhere else), N
// contiguous from 0 (the bottom). Throws UsageError naming the problem. `ephemeral` (rw/ is not
// the upper layer): an entry "rw" makes rw/ the top-most lower layer instead.
MstackRoot plan_mstack_root(const std::string& mstack_path, const std::vector<std::pair<std::string, std::string>>& entries,
                            bool ephemeral);
// overlayfs options: one "lowerdir+" per layer (no escaping of ':' or ',' in paths needed),
// upperdir/workdir, and userxattr: the layers mark opaque directories with user.overlay.opaque.
std::vector<std::pair<std::string, std::string>> mstack_overlay_options(const MstackRoot& r);

// Reads the stack at `path` (never following its links) and plans it.
MstackRoot read_mstack_root(const std::string& path, bool ephemeral);

// Where a stack's writes go: its own rw/ (a plain run), a tmpfs that vanishes with the container
// (--ephemeral, --volatile=overlay), or nowhere (--read-only, --volatile=state, a read-only stack:
// the overlay then has no upper layer and is read-only by construction). Pure; throws UsageError
// for --volatile=yes, which needs a /usr of the tree to bind and a stack has no such directory.
enum class MstackUpper { Stack, Scratch, None };
MstackUpper plan_mstack_upper(const SpawnSpec& spec, bool stack_read_only);

// The stack's overlay as a detached mount (spawn's launcher attaches it as the container root in
// the child's mount namespace: the host never sees it). `idmap_userns` >= 0: each layer enters
// the overlay as an idmapped clone, so the shared layers keep their on-disk owners (0 is root) and
// the container's root owns them inside; the layers themselves are never chowned (kernel >= 5.19
// takes idmapped lower layers). The upper rw/ is not idmapped: host root writes into it too
// (resolv.conf, localtime), which an idmapped upper would refuse (EOVERFLOW); the launcher moves
// rw/'s owners into the range instead, as --private-users-ownership=chown does for a tree.
UniqueFd make_mstack_mount(const MstackRoot& r, MstackUpper upper, int idmap_userns);

// A tmpfs step's copy-up (MountStep::copy_up): copies the directory `from` (the tree's own, never
// left: entries are opened one name at a time without following symlinks, and other file systems
// mounted below it are not entered) into `to`, the new file system's root, before it is attached:
// files, directories, symlinks, device nodes and FIFOs, hard links, owners, modes, times and the
// xattrs the tmpfs can hold. Throws std::system_error naming `target`.
void copy_up_into(int from, int to, const std::string& target);

// Carries out `plan` relative to the container root `root_fd` (an O_PATH fd of the root mount).
// Throws std::system_error naming the step on the first failure: a mask or read-only mount that
// cannot be made is fatal, never silently skipped.
// Creates, through `raw_root_fd` (the tree's own mount, not an idmapped one), the targets that
// `plan` would create: host root cannot create files through an idmapped mount.
void precreate_mount_targets(int raw_root_fd, const std::vector<MountStep>& plan);

// `idmap_userns`: the container's user namespace, for binds marked idmap (-1: none).
void apply_mount_plan(int root_fd, const std::vector<MountStep>& plan, int idmap_userns = -1);

}  // namespace mk::core
