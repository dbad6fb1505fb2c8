#include "core/spawn/outside_steps.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/nsfs.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <tuple>

#include "core/base/id128.hpp"
#include "core/base/error.hpp"
#include "core/base/rm_rf.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/names.hpp"
#include "core/base/strings.hpp"
#include "core/base/tree_copy.hpp"
#include "core/kernel/capabilities.hpp"
#include "core/kernel/seccomp_oci.hpp"
#include "core/kernel/dissect.hpp"
#include "core/kernel/mount.hpp"
#include "core/spawn/guest_systemd.hpp"
#include "core/spawn/journal_link.hpp"
#include "core/spawn/kept_userns.hpp"
#include "core/spawn/network.hpp"
#include "core/spawn/oci_config.hpp"
#include "core/spawn/oci_userns.hpp"
#include "core/spawn/option_values.hpp"
#include "core/spawn/rootless_plan.hpp"

namespace mk::core {

namespace {

// As nspawn's verify_arguments(): ambient capabilities go to a command, never to an init, and
// only those the container keeps anyway.
void check_ambient_capabilities(const SpawnSpec& s) {
    if (!s.capabilities_ambient) return;
    if (s.start_mode == StartMode::Boot)
        throw UsageError("--ambient-capability= is not useful with --boot: the init gets every capability anyway");
    uint64_t kept = (s.capabilities_all ? ~uint64_t{0} : kDefaultCapabilities | s.capabilities_add) & ~s.capabilities_drop;
    if (s.private_network && !s.oci.capabilities_given) kept |= cap_bit(CAP_NET_ADMIN);
    if ((s.capabilities_ambient & kept) != s.capabilities_ambient)
        throw UsageError(
            "--ambient-capability= is not covered by the container's capabilities; add them with --capability=");
}

bool selinux_enabled() { return access("/sys/fs/selinux/enforce", F_OK) == 0; }

void check_security_labels(const SpawnSpec& s) {
    if ((!s.selinux_context.empty() || !s.selinux_apifs_context.empty()) && !selinux_enabled())
        throw UsageError("-Z/-L (SELinux labels) need SELinux, which is not enabled on this host; drop them");
    if (!s.selinux_apifs_context.empty())
        throw UsageError("-L/--selinux-apifs-context= is not supported by spawn yet; remove it from the command line");
}

}  // namespace

// Settings files and front ends can describe more than the launcher does yet. Refuse those
// rather than start a container that silently lacks what was asked for.
void check_supported(const SpawnSpec& s) {
    auto refuse = [](const std::string& what) {
        throw UsageError(what + " is not supported by spawn yet; remove it from the command line or .nspawn file");
    };
    if (!s.image.empty() && (s.ephemeral || s.volatile_mode != VolatileMode::No || !s.template_dir.empty()))
        refuse("--image= together with --ephemeral, --volatile or --template");
    if (!s.image.empty() && s.userns_ownership == UserNamespaceOwnership::Chown)
        refuse("--image= together with --private-users-ownership=chown");
    if (!s.template_dir.empty() && s.ephemeral) refuse("--template= together with --ephemeral");
    if (s.ephemeral && s.volatile_mode != VolatileMode::No) refuse("--ephemeral together with --volatile=");
    if ((s.ephemeral || s.volatile_mode != VolatileMode::No) && s.read_only)
        refuse("--read-only together with --ephemeral or --volatile=");
    for (const auto& o : s.overlays) {
        if (!o.upper.empty() && o.upper[0] == '+') refuse("--overlay= with an upper directory inside the container ('+')");
        for (const auto& l : o.lower)
            if (!l.empty() && l[0] == '+') refuse("--overlay= with a lower directory inside the container ('+')");
        if (o.upper.empty() && !o.read_only) refuse("--overlay= with a temporary upper directory (empty UPPER)");
    }
    if (!s.bind_users.empty() && s.userns_mode == UserNamespaceMode::No)
        throw UsageError("--bind-user= needs a user namespace: add -U or --private-users=");
    if (s.userns_mode != UserNamespaceMode::No && (s.ephemeral || s.volatile_mode != VolatileMode::No))
        refuse("--private-users together with --ephemeral or --volatile");
    check_ambient_capabilities(s);
    check_security_labels(s);
    for (const auto& b : s.binds)
        if ((b.idmap || b.idmap_root) && b.idmap_uid_map.empty() && s.userns_mode == UserNamespaceMode::No &&
            !oci_user_namespace(s.oci))
            throw UsageError("--bind=" + b.source + ":…:idmap needs a user namespace: add -U or --private-users=");
}

// dm-verity needs the kernel's device-mapper; this project's CI kernels lack it (no
// CONFIG_BLK_DEV_DM), so the options are checked and then refused with the reason.
void check_verity(const SpawnSpec& s) {
    if (s.root_hash.empty() && s.root_hash_sig.empty() && s.verity_data.empty()) return;
    if (s.image.empty())
        throw UsageError("--root-hash=, --root-hash-sig= and --verity-data= protect disk images: add -i IMAGE");
    auto devices = read_host_file("/proc/devices").value_or("");
    if (devices.find(" device-mapper\n") == std::string::npos)
        throw UsageError(
            "--root-hash=: dm-verity needs device-mapper, which this kernel lacks (no device-mapper in /proc/devices)");
    throw UsageError("--root-hash=/--verity-data= (dm-verity) is not supported by spawn yet; run the image without them");
}

namespace {

// Under the idmapped mount a file container root makes is host root's on disk and keeps its
// setuid bit: a host user who can walk to the tree could run it as root (issue 19 B). Only trees
// whose writes reach the disk count; an explicit --private-users-ownership=map is the user's call.
void check_idmapped_tree_is_private(const SpawnSpec& spec, int root_fd) {
    const bool writes_persist =
        spec.image.empty() && !spec.read_only && !spec.ephemeral && spec.volatile_mode == VolatileMode::No;
    if (!writes_persist || !reachable_by_other_users(root_fd)) return;
    std::string dir = spec.directory;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    const size_t slash = dir.rfind('/');
    const std::string parent = slash == std::string::npos ? "." : slash == 0 ? "/" : dir.substr(0, slash);
    if (spec.userns_ownership == UserNamespaceOwnership::Map) {
        fprintf(stderr,
                "Warning: %s can be reached by users other than root, and files container root makes "
                "in it are host root's (--private-users-ownership=map).\n",
                dir.c_str());
        return;
    }
    // A shared directory such as /tmp must stay open to everyone: the tree moves instead.
    struct stat pst;
    const bool shared = stat(parent.c_str(), &pst) == 0 && (pst.st_mode & (S_ISVTX | S_IWOTH));
    throw UsageError(dir + " can be reached by users other than root, so a setuid file container root leaves in it " +
                     "would give them root: " +
                     (shared ? "move it into a directory only root can enter (such as /var/lib/machines)"
                             : "chmod 0700 " + parent) +
                     ", or use --private-users-ownership=chown");
}

// Whether the file system under `dir_fd` takes an idmapped mount: tried on a detached clone.
bool idmap_supported(int dir_fd, const IdRange& r) {
    UniqueFd clone(open_tree(dir_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH));
    if (!clone) return false;
    UniqueFd ns = make_user_namespace(r);
    mount_attr attr{};
    attr.attr_set = MOUNT_ATTR_IDMAP;
    attr.userns_fd = static_cast<uint64_t>(ns.get());
    return mount_setattr(clone.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) == 0;
}

// --template=: a root directory that does not exist yet is made as a copy of the template, into a
// hidden temporary name next to it, renamed into place only when complete.
void populate_from_template(const SpawnSpec& spec) {
    if (spec.template_dir.empty() || access(spec.directory.c_str(), F_OK) == 0) return;
    UniqueFd src(open(spec.template_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!src) throw UsageError("cannot open template " + spec.template_dir + ": " + strerror(errno));
    auto [parent, name] = split_path(spec.directory);
    UniqueFd dir(open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir) throw UsageError("cannot create " + spec.directory + ": " + parent + ": " + strerror(errno));
    std::string tmp = ".#" + name + ".template-" + std::to_string(getpid());
    if (mkdirat(dir.get(), tmp.c_str(), 0700) < 0) throw_last_error("cannot create " + parent + "/" + tmp);
    try {
        UniqueFd dst(openat(dir.get(), tmp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!dst) throw_last_error("cannot open " + tmp);
        copy_tree(src.get(), dst.get());
        if (renameat2(dir.get(), tmp.c_str(), dir.get(), name.c_str(), RENAME_NOREPLACE) < 0)
            throw_last_error("cannot move the copy of the template into place at " + spec.directory);
    } catch (...) {
        rm_rf_at_noexcept(dir.get(), tmp, kRemoveChmod);
        throw;
    }
}

// The booted guest's cgroup layout: the host's, the guest's systemd version (read from the tree)
// and nspawn's override variable decide it (plan_guest_cgroups).
void plan_cgroups(Prepared& p, const SpawnSpec& spec, int root) {
    std::optional<bool> override_ = spec.unified_cgroup_hierarchy;  // finalize() read it
    std::optional<unsigned> version = guest_systemd_version(root);
    for (const auto& [where, fd] : p.image_mounts)  // an image's own /usr partition holds systemd
        if (!version && where == "/usr") version = guest_systemd_version(fd.get());
    GuestCgroupPlan plan = plan_guest_cgroups(detect_cgroup_layout(), version, override_);
    if (plan.layout.mode == CgroupMode::None) return;
    if (plan.own_cgroup2) p.cgroup2_mount = mount_own_cgroup2();
    if (plan.v1_host && !spec.quiet) {
        std::string controllers;
        if (p.cgroup2_mount) controllers = read_file_in_root(p.cgroup2_mount.get(), "cgroup.controllers", 4096).value_or("");
        else
            controllers =
                read_host_file("/sys/fs/cgroup" + plan.layout.unified_dir + "/cgroup.controllers", 4096).value_or("");
        fprintf(stderr, "%s\n", no_controllers_notice(controllers).c_str());
    }
    p.cgroups = plan.layout;
    p.cgroup_plan = build_cgroup_mount_plan(plan.layout);
}

// --link-journal: decided from the machine ID (--uuid, else the tree's) and what the host has at
// /var/log/journal/ID; host mode adds a bind mount to the spec the mount plan is built from.
SpawnSpec with_journal_link(const SpawnSpec& spec, int root, const std::string& root_path) {
    SpawnSpec out = spec;
    if (spec.link_journal == LinkJournalMode::No) return out;
    std::optional<Uuid> id = spec.uuid;
    if (!id) id = id128_from_machine_id_file(read_file_in_root(root, "/etc/machine-id", 4096).value_or(""));
    auto host_id = id128_from_machine_id_file(read_host_file("/etc/machine-id", 4096).value_or(""));
    bool kept =
        spec.image.empty() && !is_mstack_path(spec.directory) && !spec.ephemeral && spec.volatile_mode == VolatileMode::No;
    HostJournalPath state = HostJournalPath::absent;
    if (id)
        state = inspect_host_journal_path("/var/log/journal/" + id128_to_string(*id),
                                          root_path + "/var/log/journal/" + id128_to_string(*id));
    auto plan = plan_journal_link(spec.link_journal, id, host_id, state, kept);
    if (auto bind = apply_journal_link(plan, root, root_path)) out.binds.push_back(*bind);
    return out;
}

}  // namespace

// An OCI layer stack (NAME.mstack, core/image/oci_store.hpp) as the root: its overlay, made here
// as a detached mount and attached by the child like an image's root (over /tmp of its mount
// namespace), so every front end (spawn -D, machd, machrun) runs stacks and the host never sees
// the mount. With a user namespace the layers are idmapped, and rw/ (ours alone) is chowned.
void mount_layer_stack(Prepared& p, const SpawnSpec& spec) {
    std::string dir = spec.directory;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    UniqueFd d(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!d) throw_last_error("cannot open the layer stack " + dir);
    // A read-only stack (machctl read-only: chattr +i on NAME.mstack) runs without its rw/.
    const MstackUpper upper = plan_mstack_upper(spec, get_immutable(d.get()));
    MstackRoot r = read_mstack_root(dir, upper != MstackUpper::Stack);
    const bool shifted = p.userns && p.userns->shift != 0;
    // rw/ as the upper: not idmapped (host root writes into it), its owners moved into the range
    // instead (the launcher holds the stack's image lock). As a lower layer of a read-only or
    // throw-away run it is left as it is: another run may be writing it.
    if (upper == MstackUpper::Stack) {
        UniqueFd rw(open(r.upper.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!rw) throw_last_error("cannot open " + r.upper);
        // Back to 0 for a run without a user namespace, on to the range for one with it.
        shift_tree_ownership(rw.get(), shifted ? *p.userns : IdRange{0, 0x10000});
    }
    UniqueFd ns;
    if (shifted) ns = make_user_namespace(*p.userns);
    UniqueFd mnt = make_mstack_mount(r, upper, shifted ? ns.get() : -1);
    p.root_dir.reset(fcntl(mnt.get(), F_DUPFD_CLOEXEC, 3));
    if (!p.root_dir) throw_last_error("dup");
    p.image_mounts.clear();
    p.image_mounts.emplace_back("/", std::move(mnt));
    p.root_path = "/tmp";
}

Prepared prepare(const SpawnSpec& spec, bool registering) {
    check_supported(spec);
    check_verity(spec);
    populate_from_template(spec);
    Prepared p;
    if (running_rootless()) p.rootless = prepare_rootless_user(spec);
    p.root_path = spec.directory;
    if (!spec.image.empty()) {
        // The image's file systems as detached mounts, made here (the loop devices detach themselves
        // when the last of these goes, however spawn ends) and attached by the child in its own
        // mount namespace, over /tmp there: nothing appears in the host's mount table.
        DissectedImage img = dissect_image(spec.image, spec.read_only);
        for (auto& fs : img.filesystems) {
            std::vector<std::pair<std::string, std::string>> o;
            if (img.read_only) o.emplace_back("ro", "");
            UniqueFd m = make_fs_mount(fs.fstype.c_str(), o, img.read_only ? MOUNT_ATTR_RDONLY : 0, fs.device.c_str());
            p.image_mounts.emplace_back(fs.mount_point, std::move(m));
        }
        p.root_dir.reset(fcntl(p.image_mounts.front().second.get(), F_DUPFD_CLOEXEC, 3));
        p.root_path = "/tmp";
    } else {
        p.root_dir.reset(open(spec.directory.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    }
    if (!p.root_dir) {
        if (errno == ENOENT) throw UsageError("directory " + spec.directory + " does not exist; pass an OS tree with -D");
        if (errno == ENOTDIR) throw UsageError(spec.directory + " is not a directory; pass an OS tree with -D");
        throw_last_error("cannot open " + spec.directory);
    }
    const bool stack = spec.image.empty() && is_mstack_path(spec.directory);
    if (stack && p.rootless)
        throw UsageError("an OCI layer stack runs as root only; flatten it (--flatten) to run it rootless");
    int root = p.root_dir.get();
    if (!spec.network_namespace_path.empty()) {
        p.netns.reset(open(spec.network_namespace_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
        if (!p.netns) throw_last_error("cannot open network namespace " + spec.network_namespace_path);
        if (ioctl(p.netns.get(), NS_GET_NSTYPE) != CLONE_NEWNET)
            throw UsageError(spec.network_namespace_path + " is not a network namespace");
    }
    OciNamespacePlan namespaces = plan_oci_namespaces(spec);
    p.ns_clone_flags = namespaces.clone_flags;
    p.set_hostname = namespaces.set_hostname;
    auto open_namespace = [](const std::string& path, int flag) {
        const char* kind = flag == CLONE_NEWUTS ? "a UTS" : flag == CLONE_NEWIPC ? "an IPC" : "a PID";
        UniqueFd ns(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
        if (!ns) throw_last_error("cannot open namespace " + path);
        if (ioctl(ns.get(), NS_GET_NSTYPE) != flag) throw UsageError(path + " is not " + std::string(kind) + " namespace");
        return ns;
    };
    for (const auto& [flag, path] : namespaces.join) p.joined_namespaces.emplace_back(flag, open_namespace(path, flag));
    if (!namespaces.pid_path.empty()) p.pidns = open_namespace(namespaces.pid_path, CLONE_NEWPID);
    if (namespaces.clone_flags != (CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID) &&
        (p.rootless || spec.userns_mode != UserNamespaceMode::No))
        throw UsageError("the host's or a joined UTS, IPC or PID namespace cannot be combined with a user namespace");

    if (p.rootless) {
        settle_rootless_tree_ownership(*p.rootless, spec, root);  // may switch to the range map
        const RootlessMap& m = p.rootless->map;
        p.userns = IdRange{0, std::min(m.uid_count(), m.gid_count())};
        p.plan = make_rootless_mount_plan(build_mount_plan(with_journal_link(spec, root, p.root_path), 0u),
                                          spec.private_network, m.gid_count());
        p.kept_userns = open_kept_user_namespace(*p.rootless);
    } else if (const OciNamespace* ns = oci_user_namespace(spec.oci)) {
        // config.json's: the engine chose the maps and owns the tree (podman chowns its storage for
        // --uidmap and --userns=auto), so no range lock and no ownership change, as runc.
        std::string where = "linux.uidMappings/gidMappings";
        if (!ns->path.empty()) {
            where = "user namespace " + ns->path;
            p.oci_userns_join.reset(open(ns->path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
            if (!p.oci_userns_join) throw_last_error("cannot open the user namespace " + ns->path);
            if (ioctl(p.oci_userns_join.get(), NS_GET_NSTYPE) != CLONE_NEWUSER)
                throw UsageError("OCI config linux.namespaces[].path: " + ns->path + " is not a user namespace");
            std::tie(p.oci_uid_map, p.oci_gid_map) = read_user_namespace_maps(p.oci_userns_join.get());
        } else {
            p.oci_uid_map = oci_id_map(spec.oci.uid_mappings);
            p.oci_gid_map = oci_id_map(spec.oci.gid_mappings);
        }
        p.userns = oci_userns_root_range(p.oci_uid_map, p.oci_gid_map, where);
    } else if (spec.userns_mode != UserNamespaceMode::No) {
        IdRange r;
        r.count = spec.uid_range;
        if (spec.userns_mode == UserNamespaceMode::Identity) {
            r.shift = 0;
        } else if (spec.userns_mode == UserNamespaceMode::Fixed) {
            r.shift = spec.uid_shift;
            if (r.shift == kUidInvalid) {
                // "yes": the range starts at the owner of the tree's root directory, as nspawn.
                struct stat st;
                if (fstat(root, &st) < 0) throw_last_error("stat " + spec.directory);
                r.shift = st.st_uid;
                if (r.shift & 0xFFFF)
                    throw UsageError("--private-users=yes: the owner of " + spec.directory + " (" + std::to_string(r.shift) +
                                     ") is not a multiple of 65536; pass a range with --private-users=UID[:COUNT]");
            }
            if (r.shift != 0) {
                p.uid_lock = lock_uid_range(r.shift);
                if (!p.uid_lock)
                    throw UsageError("UID range " + std::to_string(r.shift) + " is in use by another running machine");
            }
        } else {  // pick: deterministic per machine name, skipping ranges other machines hold
            for (unsigned attempt = 0; attempt < 256 && !p.uid_lock; attempt++) {
                r.shift = pick_uid_base(spec.machine_name, attempt);
                p.uid_lock = lock_uid_range(r.shift);
            }
            if (!p.uid_lock) throw UsageError("no free UID range for --private-users=pick");
        }
        p.userns = r;
        UserNamespaceOwnership own = stack ? UserNamespaceOwnership::Off : spec.userns_ownership;
        if (own == UserNamespaceOwnership::Auto) {
            // map where the tree's file system takes idmapped mounts, chown where it does not.
            own = r.shift == 0               ? UserNamespaceOwnership::Off
                  : idmap_supported(root, r) ? UserNamespaceOwnership::Map
                                             : UserNamespaceOwnership::Chown;
        }
        if (own == UserNamespaceOwnership::Chown) {
            // The tree's owners themselves move into the range (and back, or on, for another range).
            UniqueFd rw(open(spec.directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
            if (!rw) throw_last_error("cannot open " + spec.directory);
            shift_tree_ownership(rw.get(), r);
        }
        p.idmap = own == UserNamespaceOwnership::Map && r.shift != 0;
        if (p.idmap) check_idmapped_tree_is_private(spec, root);
    }
    if (stack) {
        mount_layer_stack(p, spec);  // the layers are mapped, not the overlay (p.idmap stays false)
        root = p.root_dir.get();
    }
    if (!p.rootless) {
        std::optional<uint32_t> shift;
        if (p.userns) shift = p.userns->shift;
        p.plan = build_mount_plan(with_journal_link(spec, root, p.root_path), shift);
        // spawn's own -U (config.json's user namespaces keep their order): /dev and the network
        // namespace are the user namespace's own, so criu can dump and restore them (docs/criu.md).
        const bool own_userns = p.userns && p.oci_uid_map.empty() && !p.oci_userns_join && !spec.oci.present;
        if (own_userns && dev_can_be_built_in_userns(spec)) p.userns_dev_plan = take_dev_steps_for_userns(p.plan);
        p.netns_in_userns = own_userns && spec.private_network && !p.netns;
    }
    // Idmapped binds with maps of their own (OCI mounts[].uidMappings): their namespaces are made
    // here, in the host's PID namespace, where /proc names the helper that unshares each.
    for (auto& step : p.plan) {
        if (step.kind != StepKind::Bind || !step.idmap || step.idmap_uid_map.empty()) continue;
        p.idmap_namespaces.push_back(make_user_namespace(step.idmap_uid_map, step.idmap_gid_map));
        step.idmap_userns_fd = p.idmap_namespaces.back().get();
    }
    for (const auto& o : spec.overlays) {
        if (o.upper.empty()) continue;
        std::string w = overlay_workdir(o.upper);
        if (mkdir(w.c_str(), 0700) < 0 && errno != EEXIST) throw_last_error("cannot create the overlay work directory " + w);
        p.overlay_workdirs.push_back(w);
    }

    if (!spec.pivot_root_new.empty()) {
        if (p.idmap)
            throw UsageError(
                "--pivot-root= cannot be combined with an idmapped tree; add --private-users-ownership=off or chown");
        p.pivot_dir = open_in_root(root, spec.pivot_root_new, O_PATH | O_DIRECTORY);
        if (!p.pivot_dir)
            throw UsageError("--pivot-root=" + spec.pivot_root_new + ": no such directory in the tree (" + strerror(errno) +
                             ")");
        root = p.pivot_dir.get();  // the guest's files (passwd, init, machine-id) are the new root's
    }
    // The user, from the tree's own passwd.
    auto passwd = read_file_in_root(root, "/etc/passwd").value_or("");
    std::string user = spec.user.empty() ? "root" : spec.user;
    auto rec = find_user(passwd, user);
    if (!rec) {
        if (spec.user.empty()) rec = find_user("", "0");
        else throw UsageError("user '" + spec.user + "' does not exist in the container's /etc/passwd");
    }
    p.user = *rec;
    if (!spec.bind_users.empty()) {
        std::vector<HostUser> host;
        std::string host_passwd = read_host_file("/etc/passwd").value_or("");
        std::string host_group = read_host_file("/etc/group").value_or("");
        for (const auto& n : spec.bind_users) host.push_back(lookup_host_user(n, host_passwd, host_group));
        p.bound_users = plan_bound_users(host, passwd, read_file_in_root(root, "/etc/group").value_or(""), *p.userns);
    }
    if (p.user.uid != 0 || !spec.user.empty()) {
        auto group = read_file_in_root(root, "/etc/group").value_or("");
        p.user.groups = find_supplementary_groups(group, p.user.name, p.user.gid);
    }
    // ---- OCI (config.json) ----
    // process.user is numeric and its groups are exactly additionalGids (runc); the tree's passwd
    // only lends the home directory and shell when it knows the uid.
    if (spec.oci.present) {
        p.user = *find_user(passwd, std::to_string(spec.oci.uid));
        p.user.gid = spec.oci.gid;
        p.user.groups.assign(spec.oci.additional_gids.begin(), spec.oci.additional_gids.end());
    }
    // ---- end OCI ----

    // What to run, and with what: the pure GuestPlan, from what the tree and the host say.
    GuestFacts facts;
    facts.user = p.user;
    if (spec.start_mode == StartMode::Boot) facts.init = find_init(root);
    if (spec.start_mode != StartMode::Boot && spec.argv.empty()) {
        if (is_executable_in_root(root, p.user.shell)) facts.shell = p.user.shell;
        else if (is_executable_in_root(root, "/bin/sh")) facts.shell = "/bin/sh";
    }
    p.host_os_release = read_host_file("/etc/os-release").value_or(read_host_file("/usr/lib/os-release").value_or(""));
    facts.host_os_release = p.host_os_release;
    if (!spec.uuid)
        facts.tree_machine_id = id128_from_machine_id_file(read_file_in_root(root, "/etc/machine-id", 4096).value_or(""));
    if (!spec.uuid && !facts.tree_machine_id) facts.random_uuid = id128_random_uuid();
    // Rootless: the child holds every capability in its own user namespace, none in ours.
    facts.permitted_caps = p.rootless ? ~uint64_t{0} : current_permitted_capabilities();
    p.guest = plan_guest(spec, facts);

    // Precompiled at build time for the default policy, so a start only loads it.
    SeccompPolicy policy;
    policy.retained_caps = p.guest.bounding;
    policy.allow_extra = spec.syscall_allow;
    policy.deny = spec.syscall_deny;
    p.seccomp = seccomp_programs_for(policy);
    // ---- OCI (config.json) ----
    // linux.seccomp replaces spawn's default filter, as in runc (compiled now, before anything
    // exists, so a bad profile leaves nothing behind; cached on disk for the next start).
    if (spec.oci.seccomp) {
        p.oci_seccomp = seccomp_oci_programs_for(*spec.oci.seccomp);
        p.seccomp.clear();
    }
    // ---- end OCI ----
    if (spec.suppress_sync) std::ranges::move(seccomp_suppress_sync_programs(), std::back_inserter(p.seccomp));

    if (p.rootless && (p.guest.boot || registering)) {
        // A booted guest gets a group (and its cgroup2 view); a command only when it registers with the
        // user's machd, which names the machine by that group (docs/rootless.md), and silently.
        auto guest_systemd = p.guest.boot ? guest_systemd_version(root) : std::nullopt;
        if (auto c = find_rootless_cgroups(*p.rootless, spec.machine_name, guest_systemd, spec.quiet || !p.guest.boot)) {
            p.cgroups = c->layout;
            if (p.guest.boot) p.cgroup_plan = build_cgroup_mount_plan(c->layout);
            p.rootless_cgroup = c->path;
        }
    } else if (p.guest.boot) {
        plan_cgroups(p, spec, root);
    } else if (std::ranges::any_of(spec.oci.mounts, [](const OciMount& m) {
                   return m.destination == "/sys/fs/cgroup" && (m.type == "cgroup" || m.type == "cgroup2");
               })) {
        // ---- OCI (config.json) ----
        // A "cgroup" mount (podman, containerd): the host's layout, every hierarchy read-only as
        // runc's, mounted from the container's cgroup namespace once it is placed in its groups
        // (enter_cgroup_namespace), so each hierarchy's root is the container's own group.
        p.cgroup_plan = build_cgroup_mount_plan(detect_cgroup_layout());
        for (auto& step : p.cgroup_plan)
            if (step.kind == StepKind::Fs && (step.fstype == "cgroup" || step.fstype == "cgroup2"))
                step.attrs |= MOUNT_ATTR_RDONLY;
        // ---- end OCI ----
    }
    // An OCI cgroup mount is made from a cgroup namespace entered after the parent placed us.
    p.wait_for_parent = registering || p.cgroups.has_value() || !p.cgroup_plan.empty();
    p.wait_for_network = ContainerNetwork::needed(spec);
    return p;
}

// Where spawn puts a booted guest itself: machine.slice/machine-NAME.scope as machined would, or,
// under a service manager (--keep-unit), a payload group below spawn's own unit, as nspawn does.
std::string own_cgroup_path(const SpawnSpec& spec) {
    if (!spec.keep_unit) {
        std::string slice = spec.slice.empty() ? "machine.slice" : spec.slice;
        return "/" + slice + "/" + machine_scope_name(spec.machine_name);
    }
    std::string self = read_host_file("/proc/self/cgroup").value_or("");
    size_t at = self.find("0::");
    std::string path = at == std::string::npos ? "" : self.substr(at + 3, self.find('\n', at) - at - 3);
    if (path == "/") path.clear();
    return path + "/payload";
}

std::string find_init(int root_fd) {
    for (std::string_view c : kSystemdInits)
        if (is_executable_in_root(root_fd, std::string(c))) return std::string(c);
    if (is_executable_in_root(root_fd, "/sbin/init")) return "/sbin/init";
    return {};
}

bool is_executable_in_root(int root_fd, const std::string& path) {
    UniqueFd fd = open_in_root(root_fd, path, O_PATH);
    if (!fd) return false;
    struct stat st;
    return fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111);
}

}  // namespace mk::core
