#include "core/spawn/mount_plan.hpp"

#include "core/base/error.hpp"
#include "core/base/names.hpp"
#include "core/base/strings.hpp"
#include "core/base/unique_fd.hpp"
#include "core/kernel/mount.hpp"

#include <dirent.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <memory>

#include <linux/mount.h>
#include <sys/sysmacros.h>

namespace mk::core {
namespace {

constexpr uint64_t kNoSuidDevExec = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;

MountStep fs(std::string target, std::string fstype, std::vector<std::pair<std::string, std::string>> opts, uint64_t attrs) {
    MountStep s;
    s.kind = StepKind::Fs;
    s.target = std::move(target);
    s.fstype = std::move(fstype);
    s.options = std::move(opts);
    s.attrs = attrs;
    return s;
}

MountStep api_fs(std::string target, std::string fstype, std::vector<std::pair<std::string, std::string>> opts,
                 uint64_t attrs) {
    MountStep s = fs(std::move(target), std::move(fstype), std::move(opts), attrs);
    s.api_target = true;
    s.create_target = true;
    return s;
}

MountStep rebind_ro(std::string path, bool optional) {
    MountStep s;
    s.kind = StepKind::Bind;
    s.source = path;
    s.source_in_root = true;
    s.target = std::move(path);
    s.attrs = MOUNT_ATTR_RDONLY | kNoSuidDevExec;
    s.optional = optional;
    s.api_target = true;
    return s;
}

MountStep node(std::string target, unsigned major, unsigned minor, mode_t mode = 0666) {
    MountStep s;
    s.kind = StepKind::Node;
    s.target = std::move(target);
    s.device = makedev(major, minor);
    s.mode = mode;
    return s;
}

MountStep mkdir_step(std::string target, mode_t mode) {
    MountStep s;
    s.kind = StepKind::Mkdir;
    s.target = std::move(target);
    s.mode = mode;
    return s;
}

MountStep symlink_step(std::string target, std::string dest) {
    MountStep s;
    s.kind = StepKind::Symlink;
    s.target = std::move(target);
    s.source = std::move(dest);
    return s;
}

MountStep mask(std::string target, bool dir) {
    MountStep s;
    s.kind = StepKind::Mask;
    s.target = std::move(target);
    s.source = std::string(kInaccessibleDir) + (dir ? "/dir" : "/reg");
    s.source_in_root = true;
    s.attrs = MOUNT_ATTR_RDONLY | kNoSuidDevExec;
    s.recursive = false;
    return s;
}

// "mode=0755,size=10M,nr_inodes=1k" -> key/value pairs for fsconfig.
std::vector<std::pair<std::string, std::string>> split_options(const std::string& s) {
    std::vector<std::pair<std::string, std::string>> out;
    for (std::string_view item : split(s, ',')) {
        if (item.empty()) continue;
        size_t eq = item.find('=');
        if (eq == std::string_view::npos) out.emplace_back(item, "");
        else out.emplace_back(item.substr(0, eq), item.substr(eq + 1));
    }
    return out;
}

// /sys/fs/cgroup as nspawn gives it to a guest on each kind of host. Mounted from inside the
// guest's cgroup namespace, so each hierarchy's root is the guest's own group.
void add_cgroup_mounts(std::vector<MountStep>& p, const CgroupLayout& l) {
    if (l.mode == CgroupMode::Unified) {
        p.push_back(fs("/sys/fs/cgroup", "cgroup2", {{"nsdelegate", ""}}, kNoSuidDevExec));
        return;
    }
    if (l.mode == CgroupMode::None) return;
    p.push_back(fs("/sys/fs/cgroup", "tmpfs", {{"mode", "0755"}, {"size", "4m"}}, kNoSuidDevExec));
    for (const auto& h : l.v1) {
        std::string dir = "/sys/fs/cgroup/" + h.name;
        p.push_back(mkdir_step(dir, 0755));
        std::vector<std::pair<std::string, std::string>> opts;
        bool named = false;
        for (std::string_view o : split(h.options, ',')) {
            if (o.empty()) continue;
            if (o.starts_with("name=")) {
                opts.emplace_back("name", o.substr(5));
                named = true;
            } else {
                opts.emplace_back(o, "");
            }
        }
        if (named && opts.size() == 1) opts.emplace_back("none", "");
        // Only the guest's own process-tracking hierarchy is writable; controllers are the host's.
        bool writable = h.options == "name=systemd";
        p.push_back(fs(dir, "cgroup", opts, kNoSuidDevExec | (writable ? 0 : MOUNT_ATTR_RDONLY)));
    }
    for (const auto& [name, target] : l.symlinks) p.push_back(symlink_step("/sys/fs/cgroup/" + name, target));
    if (l.mode == CgroupMode::Hybrid) {
        p.push_back(mkdir_step("/sys/fs/cgroup/unified", 0755));
        p.push_back(fs("/sys/fs/cgroup/unified", "cgroup2", {}, kNoSuidDevExec));
    }
    MountStep ro;
    ro.kind = StepKind::Remount;
    ro.target = "/sys/fs/cgroup";
    ro.attrs = MOUNT_ATTR_RDONLY;
    p.push_back(ro);
}

}  // namespace

std::vector<MountStep> build_cgroup_mount_plan(const CgroupLayout& cgroups) {
    std::vector<MountStep> p;
    add_cgroup_mounts(p, cgroups);
    return p;
}

std::string overlay_workdir(const std::string& upper) {
    auto slash = upper.rfind('/');
    return upper.substr(0, slash + 1) + ".#machkit-work." + upper.substr(slash + 1);
}

bool is_mstack_path(std::string_view path) {
    while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
    return path.ends_with(".mstack") && path.size() > 7 && path[path.size() - 8] != '/';
}

std::optional<FoundImage> find_machine_image(std::string_view name, const std::vector<std::string>& dirs) {
    if (!machine_name_is_valid(name) || name.starts_with("."))
        throw UsageError("'" + std::string(name) + "' is not a valid machine name");
    for (const auto& d : dirs) {
        const std::string base = d + "/" + std::string(name);
        struct stat st {};
        if (stat(base.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return FoundImage{base, false};
        if (stat((base + ".raw").c_str(), &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)))
            return FoundImage{base + ".raw", true};
        if (stat((base + ".mstack").c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return FoundImage{base + ".mstack", false};
    }
    return std::nullopt;
}

MstackRoot plan_mstack_root(const std::string& mstack_path, const std::vector<std::pair<std::string, std::string>>& entries,
                            bool ephemeral) {
    std::string dir = mstack_path;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    if (dir.empty() || dir[0] != '/') throw UsageError("layer stack path must be absolute: " + mstack_path);
    std::string pool = dir.substr(0, dir.rfind('/'));
    std::map<size_t, std::string> layers;
    for (const auto& [name, target] : entries) {
        if (!name.starts_with("layer@")) continue;
        std::string_view num = std::string_view(name).substr(6);
        if (num.empty() || num.size() > 4 ||
            !std::all_of(num.begin(), num.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
            (num.size() > 1 && num[0] == '0'))
            throw UsageError(dir + ": invalid layer entry '" + name + "'");
        std::string_view t = target;
        bool ok =
            t.starts_with("../.oci-sha256-") && t.size() == 15 + 64 &&
            std::all_of(t.begin() + 15, t.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
        if (!ok) throw UsageError(dir + ": " + name + " must point to a layer of the pool (../.oci-sha256-<hex>)");
        layers[std::stoul(std::string(num))] = pool + "/" + std::string(t.substr(3));
    }
    if (layers.empty()) throw UsageError(dir + ": the layer stack has no layers");
    if (layers.size() > kMstackMaxLayers)
        throw UsageError(dir + ": " + std::to_string(layers.size()) + " layers, overlayfs stacks at most 500");
    if (layers.rbegin()->first != layers.size() - 1) throw UsageError(dir + ": layer@0…layer@N are not contiguous");
    MstackRoot r;
    // Not writing to rw/ (--ephemeral, --read-only): what was written there before is still the
    // image's top, so rw/ is the top-most lower layer (its whiteouts and opaque markers are in the
    // same userxattr flavour).
    const bool has_rw = std::any_of(entries.begin(), entries.end(), [](const auto& e) { return e.first == "rw"; });
    if (ephemeral && has_rw) {
        r.lowers.push_back(dir + "/rw");
        r.rw_lower = true;
    }
    for (auto it = layers.rbegin(); it != layers.rend(); ++it) r.lowers.push_back(it->second);
    if (!ephemeral) {
        r.upper = dir + "/rw";
        r.work = overlay_workdir(r.upper);
    }
    return r;
}

std::vector<std::pair<std::string, std::string>> mstack_overlay_options(const MstackRoot& r) {
    std::vector<std::pair<std::string, std::string>> o;
    for (const auto& l : r.lowers) o.emplace_back("lowerdir+", l);
    if (!r.upper.empty()) {
        o.emplace_back("upperdir", r.upper);
        o.emplace_back("workdir", r.work);
    }
    o.emplace_back("userxattr", "");
    return o;
}

MstackRoot read_mstack_root(const std::string& path, bool ephemeral) {
    UniqueFd d(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!d) throw_last_error("cannot open the layer stack " + path);
    std::vector<std::pair<std::string, std::string>> entries;
    std::unique_ptr<DIR, int (*)(DIR*)> ds(fdopendir(fcntl(d.get(), F_DUPFD_CLOEXEC, 3)), closedir);
    if (!ds) throw_last_error("cannot read the layer stack " + path);
    while (dirent* e = readdir(ds.get())) {
        std::string n = e->d_name;
        if (n == "rw" && e->d_type == DT_DIR) entries.emplace_back(n, "");
        if (!n.starts_with("layer@")) continue;
        if (entries.size() > kMstackMaxLayers) throw UsageError(path + ": too many layers");
        char buf[256];
        ssize_t len = readlinkat(d.get(), n.c_str(), buf, sizeof buf - 1);
        if (len < 0) throw_last_error(path + ": " + n + " is not a symlink to a layer");
        entries.emplace_back(n, std::string(buf, static_cast<size_t>(len)));
    }
    MstackRoot r = plan_mstack_root(path, entries, ephemeral);
    if (!r.upper.empty()) {
        struct stat st;
        if (fstatat(d.get(), "rw", &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
            throw UsageError(path + ": the writable layer rw/ is missing");
        std::string work = r.work.substr(r.work.rfind('/') + 1);
        if (mkdirat(d.get(), work.c_str(), 0700) < 0 && errno != EEXIST) throw_last_error("cannot create " + r.work);
    }
    return r;
}

MstackUpper plan_mstack_upper(const SpawnSpec& spec, bool stack_read_only) {
    if (spec.volatile_mode == VolatileMode::Yes)
        throw UsageError("--volatile=yes cannot run a layer stack (it has no /usr directory to bind); use --ephemeral");
    if (spec.ephemeral || spec.volatile_mode == VolatileMode::Overlay) return MstackUpper::Scratch;
    if (spec.read_only || spec.volatile_mode == VolatileMode::State || stack_read_only) return MstackUpper::None;
    return MstackUpper::Stack;
}

std::vector<MountStep> build_mount_plan(const SpawnSpec& spec, std::optional<uint32_t> uid_shift) {
    std::vector<MountStep> p;

    // /run first: it holds the inaccessible nodes that the /proc masks are bound from.
    p.push_back(api_fs("/run", "tmpfs", {{"mode", "0755"}, {"size", "20%"}, {"nr_inodes", "800k"}},
                       MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV));
    p.push_back(mkdir_step("/run/host", 0755));
    p.push_back(mkdir_step(kInaccessibleDir, 0755));
    p.push_back(mkdir_step(std::string(kInaccessibleDir) + "/dir", 0000));
    {
        MountStep reg = mkdir_step(std::string(kInaccessibleDir) + "/reg", 0000);
        reg.kind = StepKind::File;
        p.push_back(reg);
    }

    // /proc, with /proc/sys read-only (writable net/ only with a network namespace of our own)
    // and the kernel-revealing files masked.
    p.push_back(api_fs("/proc", "proc", {}, kNoSuidDevExec));
    p.push_back(rebind_ro("/proc/sys", false));
    if (spec.private_network) {
        MountStep net = rebind_ro("/proc/sys/net", true);
        net.attrs = kNoSuidDevExec;  // writable again: the namespace is the container's own
        net.clear_attrs = MOUNT_ATTR_RDONLY;
        p.push_back(net);
    }
    for (const char* f : kMaskedProcFiles) {
        MountStep m = mask(f, false);
        m.optional = true;  // e.g. /proc/kcore does not exist on every kernel config
        p.push_back(m);
    }
    for (const char* d : kReadOnlyProcDirs) p.push_back(rebind_ro(d, true));

    // /sys read-only.
    p.push_back(api_fs("/sys", "sysfs", {}, MOUNT_ATTR_RDONLY | kNoSuidDevExec));

    // /dev: a tmpfs with the nodes a container may have, a private devpts, shm and mqueue.
    p.push_back(api_fs("/dev", "tmpfs", {{"mode", "0755"}, {"size", "4m"}, {"nr_inodes", "64k"}},
                       MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC));
    p.push_back(node("/dev/null", 1, 3));
    p.push_back(node("/dev/zero", 1, 5));
    p.push_back(node("/dev/full", 1, 7));
    p.push_back(node("/dev/random", 1, 8));
    p.push_back(node("/dev/urandom", 1, 9));
    p.push_back(node("/dev/tty", 5, 0));
    p.push_back(mkdir_step("/dev/net", 0755));
    p.push_back(node("/dev/net/tun", 10, 200));
    p.push_back(mkdir_step("/dev/char", 0755));
    p.push_back(symlink_step("/dev/char/1:3", "../null"));
    p.push_back(symlink_step("/dev/char/1:5", "../zero"));
    p.push_back(symlink_step("/dev/char/1:7", "../full"));
    p.push_back(symlink_step("/dev/char/1:8", "../random"));
    p.push_back(symlink_step("/dev/char/1:9", "../urandom"));
    p.push_back(symlink_step("/dev/char/5:0", "../tty"));
    p.push_back(symlink_step("/dev/char/10:200", "../net/tun"));
    p.push_back(symlink_step("/dev/fd", "/proc/self/fd"));
    p.push_back(symlink_step("/dev/stdin", "/proc/self/fd/0"));
    p.push_back(symlink_step("/dev/stdout", "/proc/self/fd/1"));
    p.push_back(symlink_step("/dev/stderr", "/proc/self/fd/2"));
    p.push_back(symlink_step("/dev/ptmx", "pts/ptmx"));
    p.push_back(mkdir_step("/dev/pts", 0755));
    p.push_back(fs("/dev/pts", "devpts", {{"newinstance", ""}, {"ptmxmode", "0666"}, {"mode", "0620"}, {"gid", "5"}},
                   MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC));
    p.push_back(mkdir_step("/dev/shm", 01777));
    p.push_back(fs("/dev/shm", "tmpfs", {{"mode", "1777"}, {"size", "50%"}}, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV));
    p.push_back(mkdir_step("/dev/mqueue", 0755));
    p.push_back(fs("/dev/mqueue", "mqueue", {}, kNoSuidDevExec));

    // /tmp.
    p.push_back(api_fs("/tmp", "tmpfs", {{"mode", "1777"}, {"size", "50%"}}, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV));

    // The user's mounts come last, so that they may cover any of the above.
    for (const auto& b : spec.binds) {
        MountStep s;
        s.kind = StepKind::Bind;
        s.source = b.source;
        s.target = b.destination;
        s.recursive = b.recursive;
        s.idmap = b.idmap || b.idmap_root;
        s.idmap_recursive = b.idmap_recursive;
        s.idmap_uid_map = b.idmap_uid_map;
        s.idmap_gid_map = b.idmap_gid_map;
        s.attrs = b.read_only ? MOUNT_ATTR_RDONLY : 0;
        s.create_target = true;
        p.push_back(s);
    }
    for (const auto& t : spec.tmpfs) {
        MountStep s = fs(t.destination, "tmpfs", {{"mode", "0755"}}, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
        auto options = split_options(t.options);
        // --tmpfs= defaults to 0755 (nspawn's); a config.json tmpfs without mode= keeps what it covers (runc's).
        const bool from_oci = std::ranges::any_of(
            spec.oci.mounts, [&](const auto& m) { return m.type == "tmpfs" && m.destination == t.destination; });
        if (from_oci && std::ranges::none_of(options, [](const auto& kv) { return kv.first == "mode"; })) {
            s.options.clear();
            s.mode_from_target = true;
        }
        for (auto& kv : options) {
            if (kv.first == "ro") {
                s.attrs |= MOUNT_ATTR_RDONLY;
                continue;
            }
            bool replaced = false;
            for (auto& existing : s.options)
                if (existing.first == kv.first) existing.second = kv.second, replaced = true;
            if (!replaced) s.options.push_back(kv);
        }
        s.create_target = true;
        p.push_back(s);
    }
    for (const auto& o : spec.overlays) {
        std::string lower;
        for (const auto& l : o.lower) lower += (lower.empty() ? "" : ":") + l;
        std::vector<std::pair<std::string, std::string>> opts = {{"lowerdir", lower}};
        if (!o.upper.empty()) {
            opts.emplace_back("upperdir", o.upper);
            opts.emplace_back("workdir", overlay_workdir(o.upper));
        }
        MountStep s = fs(o.destination, "overlay", opts, o.read_only ? MOUNT_ATTR_RDONLY : 0);
        s.create_target = true;
        p.push_back(s);
    }
    for (const auto& path : spec.inaccessible) {
        MountStep m = mask(path, false);
        m.source.clear();  // chosen at apply time from the target's type (file or directory)
        // OCI maskedPaths that do not exist are skipped, as runc (podman lists /proc/kcore,
        // which not every kernel has); nspawn's --inaccessible= insists.
        m.optional = std::ranges::find(spec.oci.masked_paths, path) != spec.oci.masked_paths.end();
        p.push_back(m);
    }
    // tmpcopyup (config.json): on the tmpfs at that place, spawn's own /run or /tmp included.
    for (const auto& m : spec.oci.mounts) {
        if (!m.copy_up || m.type != "tmpfs") continue;
        auto it = std::find_if(p.rbegin(), p.rend(), [&](const MountStep& s) {
            return s.kind == StepKind::Fs && s.fstype == "tmpfs" && s.target == m.destination;
        });
        if (it != p.rend()) it->copy_up = true;
    }
    if (uid_shift) {
        for (auto& s : p) {
            // What spawn creates on its /run (/run/host, the inaccessible sources of the masks)
            // belongs to the container's root, as nspawn's: owned by a host UID outside the map,
            // root inside could not read the mode-0 sources, nor could criu, which archives a
            // tmpfs's contents from inside the user namespace (docs/criu.md, "-U").
            if (s.target.starts_with("/run/") &&
                (s.kind == StepKind::Mkdir || s.kind == StepKind::File || s.kind == StepKind::Symlink))
                s.owner = *uid_shift;
            if (s.kind != StepKind::Fs) continue;
            if (s.fstype == "tmpfs") {
                s.options.emplace_back("uid", std::to_string(*uid_shift));
                s.options.emplace_back("gid", std::to_string(*uid_shift));
            } else if (s.fstype == "devpts") {
                for (auto& [k, v] : s.options)
                    if (k == "gid") v = std::to_string(*uid_shift + 5);
            }
        }
    }
    return p;
}

bool dev_can_be_built_in_userns(const SpawnSpec& spec) {
    if (spec.oci.present) return false;
    auto under_dev = [](std::string_view path) { return path == "/dev" || path.starts_with("/dev/"); };
    for (const auto& b : spec.binds)
        if (under_dev(b.destination)) return false;
    for (const auto& t : spec.tmpfs)
        if (under_dev(t.destination)) return false;
    for (const auto& o : spec.overlays)
        if (under_dev(o.destination)) return false;
    for (const auto& path : spec.inaccessible)
        if (under_dev(path)) return false;
    return true;
}

std::vector<MountStep> take_dev_steps_for_userns(std::vector<MountStep>& plan) {
    std::vector<MountStep> dev, rest;
    for (auto& s : plan) {
        if (s.target != "/dev" && !s.target.starts_with("/dev/")) {
            rest.push_back(std::move(s));
            continue;
        }
        if (s.target == "/dev" && s.kind == StepKind::Fs) rest.push_back(mkdir_step("/dev", 0755));
        if (s.kind == StepKind::Fs) {
            // Mounted by the namespace's root: its IDs are the namespace's own.
            std::erase_if(s.options, [](const auto& kv) { return kv.first == "uid" || kv.first == "gid"; });
            if (s.fstype == "devpts") s.options.emplace_back("gid", "5");
        } else if (s.kind == StepKind::Node) {
            MountStep bind;
            bind.kind = StepKind::Bind;
            bind.source = s.target;  // the host's node of the same path
            bind.target = s.target;
            bind.recursive = false;
            bind.create_target = true;
            bind.optional = true;  // a node the host lacks is left out
            bind.attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC;
            s = std::move(bind);
        }
        s.owner.reset();
        dev.push_back(std::move(s));
    }
    plan = std::move(rest);
    return dev;
}

}  // namespace mk::core
