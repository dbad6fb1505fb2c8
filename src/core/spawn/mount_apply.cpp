// apply_mount_plan(): the kernel side of the mount plan. Runs in the container child, in its own
// mount namespace, before pivot_root.
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <optional>

#include "core/base/error.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/tree_copy.hpp"
#include "core/kernel/mount.hpp"
#include "core/spawn/mount_plan.hpp"

namespace mk::core {
namespace {

// Opens a target that must be a plain directory or file of the tree: any symlink on the way is
// refused, so /proc -> /bad-proc style trees cannot redirect API file systems (T-05).
UniqueFd open_api_target(int root_fd, const std::string& path, bool create_dir) {
    if (create_dir) {
        auto [parent, name] = split_path(path);
        UniqueFd pfd = open_in_root(root_fd, parent, O_PATH | O_DIRECTORY, 0, RESOLVE_NO_SYMLINKS);
        if (pfd) {
            UniqueFd dfd = open_in_root(pfd.get(), ".", O_RDONLY | O_DIRECTORY);
            if (dfd && mkdirat(dfd.get(), name.c_str(), 0755) < 0 && errno != EEXIST && errno != EROFS)
                throw_last_error("cannot create " + path + " in the container tree");
        }
    }
    UniqueFd fd = open_in_root(root_fd, path, O_PATH | O_NOFOLLOW, 0, RESOLVE_NO_SYMLINKS);
    struct stat st;
    if (fd && fstat(fd.get(), &st) < 0) throw_last_error("stat " + path);
    // O_PATH|O_NOFOLLOW hands back the symlink itself when the last component is one.
    if ((!fd && (errno == ELOOP || errno == EXDEV)) || (fd && S_ISLNK(st.st_mode)))
        throw_errno(ELOOP, "refusing to mount on " + path +
                               ": it is a symlink in the container tree, "
                               "it must be a plain directory");
    if (!fd) throw_last_error("cannot open " + path + " in the container tree");
    return fd;
}

UniqueFd open_own_parent(int root_fd, const std::string& path, std::string& name) {
    auto [parent, last] = split_path(path);
    name = last;
    UniqueFd fd = open_in_root(root_fd, parent, O_RDONLY | O_DIRECTORY, 0, RESOLVE_NO_SYMLINKS);
    if (!fd) throw_last_error("cannot open " + parent + " in the container");
    return fd;
}

void do_fs(int root_fd, const MountStep& s) {
    // The mode of the directory about to be covered, looked at before a missing one is made.
    std::optional<mode_t> covered_mode;
    if (s.mode_from_target) {
        UniqueFd existing = open_in_root(root_fd, s.target, O_PATH | O_DIRECTORY, 0, RESOLVE_NO_SYMLINKS);
        struct stat st;
        if (existing && fstat(existing.get(), &st) == 0) covered_mode = st.st_mode & 07777;
    }
    UniqueFd target =
        s.api_target ? open_api_target(root_fd, s.target, s.create_target) : mkdir_p_in_root(root_fd, s.target);
    auto options = s.options;
    if (covered_mode) {
        char mode[8];
        snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(*covered_mode));
        options.emplace_back("mode", mode);
    }
    // Copy-up reads the directory the new mount is about to cover: opened before it is covered.
    UniqueFd below;
    if (s.copy_up) {
        below.reset(openat(target.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!below) throw_last_error("cannot open " + s.target + " in the container tree to copy it up");
    }
    // A read-only file system cannot be filled: it turns read-only once filled.
    const bool late_ro = s.copy_up && (s.attrs & MOUNT_ATTR_RDONLY);
    UniqueFd mnt =
        make_fs_mount(s.fstype.c_str(), options, late_ro ? s.attrs & ~MOUNT_ATTR_RDONLY : s.attrs, s.fstype.c_str());
    if (s.copy_up) {
        UniqueFd top(openat(mnt.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!top) throw_last_error("cannot open the new " + s.fstype + " for " + s.target);
        copy_up_into(below.get(), top.get(), s.target);
        if (late_ro) set_mount_attrs(mnt.get(), MOUNT_ATTR_RDONLY, 0, false, s.target);
    }
    attach_mount(mnt.get(), target.get(), s.fstype + " on " + s.target);
}

// A bind whose source was cloned earlier (MountStep::source_mount_fd): attached as it is.
void attach_cloned_source(int root_fd, const MountStep& s) {
    struct stat st;
    if (fstat(s.source_mount_fd, &st) < 0) throw_last_error("stat " + s.source);
    UniqueFd target = S_ISDIR(st.st_mode) ? mkdir_p_in_root(root_fd, s.target) : touch_in_root(root_fd, s.target);
    if (!target) throw_last_error("cannot open bind destination " + s.target + " in the container");
    if (s.attrs || s.clear_attrs) set_mount_attrs(s.source_mount_fd, s.attrs, s.clear_attrs, s.recursive, s.target);
    attach_mount(s.source_mount_fd, target.get(), s.source + " on " + s.target);
}

void do_bind(int root_fd, const MountStep& s, int idmap_userns) {
    if (s.source_mount_fd >= 0) return attach_cloned_source(root_fd, s);
    UniqueFd src;
    if (s.source_in_root) {
        src = open_in_root(root_fd, s.source, O_PATH | O_NOFOLLOW, 0, RESOLVE_NO_SYMLINKS);
        if (!src) {
            if (s.optional && errno == ENOENT) return;
            throw_last_error("cannot open " + s.source + " in the container");
        }
    } else {
        // Host sources are the administrator's paths: they may be symlinks on the host.
        src.reset(::open(s.source.c_str(), O_PATH | O_CLOEXEC));
        if (!src) {
            if (s.optional && errno == ENOENT) return;
            throw_last_error("cannot bind " + s.source);
        }
    }
    struct stat st;
    if (fstat(src.get(), &st) < 0) throw_last_error("stat " + s.source);

    UniqueFd target;
    if (s.source_in_root && s.target == s.source) {
        target = open_in_root(root_fd, s.target, O_PATH | O_NOFOLLOW, 0, RESOLVE_NO_SYMLINKS);
    } else if (s.create_target) {
        target = S_ISDIR(st.st_mode) ? mkdir_p_in_root(root_fd, s.target) : touch_in_root(root_fd, s.target);
    } else {
        target = open_in_root(root_fd, s.target, O_PATH);
    }
    if (!target) throw_last_error("cannot open bind destination " + s.target + " in the container");

    UniqueFd mnt = clone_tree(src.get(), "", s.recursive);
    if (s.idmap) {
        if (!s.idmap_uid_map.empty()) idmap_userns = s.idmap_userns_fd;  // the mount's own maps (OCI mounts[].uidMappings)
        if (idmap_userns < 0) throw_errno(EINVAL, "--bind=" + s.source + ":…:idmap needs --private-users");
        mount_attr attr{};
        attr.attr_set = MOUNT_ATTR_IDMAP;
        attr.userns_fd = static_cast<uint64_t>(idmap_userns);
        if (mount_setattr(mnt.get(), "", AT_EMPTY_PATH | (s.idmap_recursive ? AT_RECURSIVE : 0u), &attr, sizeof attr) < 0)
            throw_last_error("cannot make an idmapped mount of " + s.source);
    }
    if (s.attrs || s.clear_attrs) set_mount_attrs(mnt.get(), s.attrs, s.clear_attrs, s.recursive, s.target);
    attach_mount(mnt.get(), target.get(), s.source + " on " + s.target);
}

void do_mask(int root_fd, const MountStep& s) {
    UniqueFd target = open_in_root(root_fd, s.target, O_PATH | O_NOFOLLOW);
    if (!target) {
        if (s.optional && errno == ENOENT) return;
        throw_last_error("cannot mask " + s.target);
    }
    std::string source = s.source;
    if (source.empty()) {
        struct stat st;
        if (fstat(target.get(), &st) < 0) throw_last_error("stat " + s.target);
        source = std::string(kInaccessibleDir) + (S_ISDIR(st.st_mode) ? "/dir" : "/reg");
    }
    UniqueFd src = open_in_root(root_fd, source, O_PATH | O_NOFOLLOW, 0, RESOLVE_NO_SYMLINKS);
    if (!src) throw_last_error("cannot open " + source);
    UniqueFd mnt = clone_tree(src.get(), "", false);
    set_mount_attrs(mnt.get(), s.attrs | MOUNT_ATTR_RDONLY, 0, false, s.target);
    attach_mount(mnt.get(), target.get(), "mask on " + s.target);
}

// The step's owner, when it names one, on what it just created in `dir` (never following a link).
void give_to_owner(int dir, const std::string& name, const MountStep& s) {
    if (s.owner && fchownat(dir, name.c_str(), *s.owner, *s.owner, AT_SYMLINK_NOFOLLOW) < 0)
        throw_last_error("cannot give " + s.target + " to the container's root");
}

}  // namespace

void copy_up_into(int from, int to, const std::string& target) {
    try {
        copy_tree(from, to);
    } catch (const std::system_error& e) {
        // e.what() ends with the code's text, which the new error appends again.
        std::string inner = e.what();
        const std::string tail = ": " + e.code().message();
        if (inner.ends_with(tail)) inner.resize(inner.size() - tail.size());
        throw std::system_error(e.code(),
                                "cannot copy " + target + " of the container tree up into its tmpfs (" + inner + ")");
    }
}

void precreate_mount_targets(int raw_root_fd, const std::vector<MountStep>& plan) {
    for (const MountStep& s : plan) {
        if (!s.create_target || s.api_target) continue;
        if (s.kind == StepKind::Bind && !s.source_in_root) {
            struct stat st;
            if (stat(s.source.c_str(), &st) < 0) continue;  // reported by the bind itself
            if (S_ISDIR(st.st_mode)) mkdir_p_in_root(raw_root_fd, s.target);
            else touch_in_root(raw_root_fd, s.target);
        } else if (s.kind == StepKind::Fs) {
            mkdir_p_in_root(raw_root_fd, s.target);
        }
    }
}

void apply_mount_plan(int root_fd, const std::vector<MountStep>& plan, int idmap_userns) {
    for (const MountStep& s : plan) {
        std::string name;
        switch (s.kind) {
        case StepKind::Fs: do_fs(root_fd, s); break;
        case StepKind::Bind: do_bind(root_fd, s, idmap_userns); break;
        case StepKind::Mask: do_mask(root_fd, s); break;
        case StepKind::Mkdir: {
            UniqueFd dir = open_own_parent(root_fd, s.target, name);
            if (mkdirat(dir.get(), name.c_str(), s.mode) < 0 && errno != EEXIST)
                throw_last_error("cannot create " + s.target);
            give_to_owner(dir.get(), name, s);
            break;
        }
        case StepKind::File: {
            UniqueFd dir = open_own_parent(root_fd, s.target, name);
            UniqueFd f(openat(dir.get(), name.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, s.mode));
            if (!f) throw_last_error("cannot create " + s.target);
            give_to_owner(dir.get(), name, s);
            break;
        }
        case StepKind::Node: {
            UniqueFd dir = open_own_parent(root_fd, s.target, name);
            if (mknodat(dir.get(), name.c_str(), S_IFCHR | s.mode, s.device) < 0 && errno != EEXIST)
                throw_last_error("cannot create device node " + s.target);
            break;
        }
        case StepKind::Remount: {
            UniqueFd fd = open_in_root(root_fd, s.target, O_PATH | O_DIRECTORY, 0, RESOLVE_NO_SYMLINKS);
            if (!fd) throw_last_error("cannot open " + s.target);
            set_mount_attrs(fd.get(), s.attrs, s.clear_attrs, false, s.target);
            break;
        }
        case StepKind::Symlink: {
            UniqueFd dir = open_own_parent(root_fd, s.target, name);
            if (symlinkat(s.source.c_str(), dir.get(), name.c_str()) < 0 && errno != EEXIST)
                throw_last_error("cannot create symlink " + s.target);
            give_to_owner(dir.get(), name, s);
            break;
        }
        }
    }
}

UniqueFd make_mstack_mount(const MstackRoot& r, MstackUpper upper, int idmap_userns) {
    // overlayfs looks its layers up by path when it is configured: /proc/self/fd/N reaches a
    // detached mount (an idmapped clone, the scratch tmpfs) that no path of the host shows.
    std::vector<UniqueFd> held;
    auto fd_path = [](int fd) { return "/proc/self/fd/" + std::to_string(fd); };
    MstackRoot m = r;
    if (idmap_userns >= 0) {
        for (size_t i = m.rw_lower ? 1 : 0; i < m.lowers.size(); i++) {
            std::string& l = m.lowers[i];
            UniqueFd dir(open(l.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (!dir) throw_last_error("cannot open the layer " + l);
            UniqueFd clone = clone_tree(dir.get(), "", false);
            mount_attr attr{};
            attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY;
            attr.userns_fd = static_cast<uint64_t>(idmap_userns);
            if (mount_setattr(clone.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
                throw_last_error("cannot make an idmapped mount of the layer " + l);
            l = fd_path(clone.get());
            held.push_back(std::move(clone));
        }
    }
    if (upper == MstackUpper::Scratch) {
        UniqueFd scratch = make_fs_mount("tmpfs", {{"mode", "0755"}}, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
        for (const char* d : {"upper", "work"})
            if (mkdirat(scratch.get(), d, 0755) < 0) throw_last_error(std::string("mkdir ") + d);
        m.upper = fd_path(scratch.get()) + "/upper";
        m.work = fd_path(scratch.get()) + "/work";
        held.push_back(std::move(scratch));
    } else if (upper == MstackUpper::None) {
        m.upper.clear();
        m.work.clear();
    }
    // Without an upper layer overlayfs itself is read-only; the mount says so too.
    return make_fs_mount("overlay", mstack_overlay_options(m), m.upper.empty() ? MOUNT_ATTR_RDONLY : 0, "overlay");
}

}  // namespace mk::core
