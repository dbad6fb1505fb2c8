#include <gtest/gtest.h>
#include <linux/mount.h>

#include <algorithm>

#include "core/spawn/mount_plan.hpp"

using namespace mk::core;

namespace {
const MountStep* find(const std::vector<MountStep>& p, const std::string& target, StepKind kind) {
    for (const auto& s : p)
        if (s.target == target && s.kind == kind) return &s;
    return nullptr;
}
size_t index_of(const std::vector<MountStep>& p, const std::string& target, StepKind kind) {
    for (size_t i = 0; i < p.size(); i++)
        if (p[i].target == target && p[i].kind == kind) return i;
    return SIZE_MAX;
}
}  // namespace

TEST(MountPlan, ApiFileSystemsLikeNspawn) {
    SpawnSpec spec;
    auto plan = build_mount_plan(spec);
    const MountStep* proc = find(plan, "/proc", StepKind::Fs);
    ASSERT_TRUE(proc);
    EXPECT_EQ(proc->fstype, "proc");
    EXPECT_TRUE(proc->api_target);
    const MountStep* sys = find(plan, "/sys", StepKind::Fs);
    ASSERT_TRUE(sys);
    EXPECT_TRUE(sys->attrs & MOUNT_ATTR_RDONLY);
    const MountStep* procsys = find(plan, "/proc/sys", StepKind::Bind);
    ASSERT_TRUE(procsys);
    EXPECT_TRUE(procsys->attrs & MOUNT_ATTR_RDONLY);
    EXPECT_FALSE(find(plan, "/proc/sys/net", StepKind::Bind)) << "net stays read-only without a private network";
    for (const char* f : kMaskedProcFiles) {
        const MountStep* m = find(plan, f, StepKind::Mask);
        ASSERT_TRUE(m) << f;
        EXPECT_TRUE(m->attrs & MOUNT_ATTR_RDONLY);
    }
    const MountStep* pts = find(plan, "/dev/pts", StepKind::Fs);
    ASSERT_TRUE(pts);
    EXPECT_NE(std::find(pts->options.begin(), pts->options.end(), std::pair<std::string, std::string>{"newinstance", ""}),
              pts->options.end());
    for (const char* n : {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/net/tun"})
        EXPECT_TRUE(find(plan, n, StepKind::Node)) << n;
    EXPECT_TRUE(find(plan, "/tmp", StepKind::Fs));
    EXPECT_TRUE(find(plan, "/run", StepKind::Fs));
    EXPECT_TRUE(find(plan, "/dev/shm", StepKind::Fs));
    EXPECT_TRUE(find(plan, "/dev/mqueue", StepKind::Fs));
}

TEST(MountPlan, OrderIsSound) {
    SpawnSpec spec;
    auto plan = build_mount_plan(spec);
    // The masks are bound from /run/host/inaccessible, so /run and the nodes come first.
    EXPECT_LT(index_of(plan, "/run", StepKind::Fs), index_of(plan, "/proc/kallsyms", StepKind::Mask));
    EXPECT_LT(index_of(plan, std::string(kInaccessibleDir) + "/reg", StepKind::File),
              index_of(plan, "/proc/kallsyms", StepKind::Mask));
    EXPECT_LT(index_of(plan, "/proc", StepKind::Fs), index_of(plan, "/proc/sys", StepKind::Bind));
    EXPECT_LT(index_of(plan, "/dev", StepKind::Fs), index_of(plan, "/dev/null", StepKind::Node));
    EXPECT_LT(index_of(plan, "/dev/pts", StepKind::Mkdir), index_of(plan, "/dev/pts", StepKind::Fs));
}

TEST(MountPlan, PrivateNetworkKeepsProcSysNetWritable) {
    SpawnSpec spec;
    spec.private_network = true;
    auto plan = build_mount_plan(spec);
    const MountStep* net = find(plan, "/proc/sys/net", StepKind::Bind);
    ASSERT_TRUE(net);
    EXPECT_FALSE(net->attrs & MOUNT_ATTR_RDONLY);
    EXPECT_TRUE(net->clear_attrs & MOUNT_ATTR_RDONLY);
    EXPECT_GT(index_of(plan, "/proc/sys/net", StepKind::Bind), index_of(plan, "/proc/sys", StepKind::Bind));
}

TEST(MountPlan, UserMountsComeLastAndCarryOptions) {
    SpawnSpec spec;
    spec.binds.push_back({"/srv/data", "/data", true, false, false});
    spec.tmpfs.push_back({"/scratch", "mode=0700,size=1M,ro"});
    spec.inaccessible.push_back("/etc/secret");
    auto plan = build_mount_plan(spec);
    size_t bind = index_of(plan, "/data", StepKind::Bind);
    ASSERT_NE(bind, SIZE_MAX);
    EXPECT_GT(bind, index_of(plan, "/tmp", StepKind::Fs));
    EXPECT_TRUE(plan[bind].attrs & MOUNT_ATTR_RDONLY);
    EXPECT_FALSE(plan[bind].recursive);
    const MountStep* t = find(plan, "/scratch", StepKind::Fs);
    ASSERT_TRUE(t);
    EXPECT_TRUE(t->attrs & MOUNT_ATTR_RDONLY);
    auto mode = std::find_if(t->options.begin(), t->options.end(), [](auto& kv) { return kv.first == "mode"; });
    ASSERT_NE(mode, t->options.end());
    EXPECT_EQ(mode->second, "0700");
    EXPECT_EQ(std::count_if(t->options.begin(), t->options.end(), [](auto& kv) { return kv.first == "mode"; }), 1);
    EXPECT_TRUE(find(plan, "/etc/secret", StepKind::Mask));
}

// tmpcopyup marks the tmpfs at that place, spawn's own /run and /tmp included, and nothing else.
TEST(MountPlan, CopyUpMarksTheTmpfsAtTheDestination) {
    SpawnSpec spec;
    spec.tmpfs.push_back({"/var/tmp", ""});
    spec.tmpfs.push_back({"/scratch", ""});
    for (const char* d : {"/run", "/tmp", "/var/tmp"}) {
        OciMount m;
        m.destination = d;
        m.type = "tmpfs";
        m.copy_up = true;
        spec.oci.mounts.push_back(m);
    }
    auto plan = build_mount_plan(spec);
    for (const auto& s : plan) {
        bool want = s.kind == StepKind::Fs && (s.target == "/run" || s.target == "/tmp" || s.target == "/var/tmp");
        EXPECT_EQ(s.copy_up, want) << s.target;
    }
    // The copy-up of /run happens before spawn's own directories go into it.
    EXPECT_LT(index_of(plan, "/run", StepKind::Fs), index_of(plan, "/run/host", StepKind::Mkdir));
    EXPECT_FALSE(build_mount_plan(SpawnSpec{})[0].copy_up);
}

// A config.json tmpfs without mode= keeps the mode of what it covers (runc's); --tmpfs= and a
// config.json tmpfs with mode= get the mode they name, 0755 by default (nspawn's).
TEST(MountPlan, OciTmpfsWithoutModeTakesTheCoveredDirectorysMode) {
    SpawnSpec spec;
    spec.tmpfs.push_back({"/cache", "size=1m"});
    spec.tmpfs.push_back({"/given", "mode=1777"});
    spec.tmpfs.push_back({"/nspawn", ""});
    for (const char* d : {"/cache", "/given"}) {
        OciMount m;
        m.destination = d;
        m.type = "tmpfs";
        spec.oci.mounts.push_back(m);
    }
    auto plan = build_mount_plan(spec);
    auto mode_of = [](const MountStep* s) {
        std::string mode;
        for (const auto& [k, v] : s->options)
            if (k == "mode") mode = v;
        return mode;
    };
    const MountStep* cache = find(plan, "/cache", StepKind::Fs);
    ASSERT_TRUE(cache);
    EXPECT_TRUE(cache->mode_from_target);
    EXPECT_EQ(mode_of(cache), "");
    EXPECT_EQ(cache->options.size(), 1u);  // size=1m
    const MountStep* given = find(plan, "/given", StepKind::Fs);
    ASSERT_TRUE(given);
    EXPECT_FALSE(given->mode_from_target);
    EXPECT_EQ(mode_of(given), "1777");
    const MountStep* nspawn = find(plan, "/nspawn", StepKind::Fs);
    ASSERT_TRUE(nspawn);
    EXPECT_FALSE(nspawn->mode_from_target);
    EXPECT_EQ(mode_of(nspawn), "0755");
}

// -U: /dev is built from inside the user namespace (take_dev_steps_for_userns), so criu can archive
// it; everything else stays in the plan applied from the host's user namespace (locked there).
TEST(MountPlan, DevStepsForTheUserNamespaceAreTheNamespacesOwn) {
    SpawnSpec spec;
    auto plan = build_mount_plan(spec, 100000u);
    auto dev = take_dev_steps_for_userns(plan);
    for (const auto& s : plan) EXPECT_FALSE(s.target.starts_with("/dev/")) << s.target;
    // The host plan only makes sure /dev exists; the masks and /proc, /sys, /run stay in it.
    const MountStep* dir = find(plan, "/dev", StepKind::Mkdir);
    ASSERT_TRUE(dir);
    EXPECT_FALSE(find(plan, "/dev", StepKind::Fs));
    EXPECT_TRUE(find(plan, "/proc/kallsyms", StepKind::Mask));
    EXPECT_TRUE(find(plan, "/proc/sys", StepKind::Bind));
    // /dev's tmpfs first, then the rest, in the order of the plan.
    ASSERT_FALSE(dev.empty());
    EXPECT_EQ(dev[0].target, "/dev");
    EXPECT_EQ(dev[0].kind, StepKind::Fs);
    for (const auto& s : dev) {
        EXPECT_NE(s.kind, StepKind::Node) << s.target << ": nothing in a user namespace may mknod";
        EXPECT_FALSE(s.owner) << s.target;
        for (const auto& [k, v] : s.options) {
            EXPECT_NE(k, "uid") << s.target << ": the namespace's root mounts it, its own IDs";
            if (k == "gid") {
                EXPECT_EQ(v, "5") << s.target;
            }
        }
    }
    for (const char* n :
         {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/net/tun"}) {
        const MountStep* b = find(dev, n, StepKind::Bind);
        ASSERT_TRUE(b) << n;
        EXPECT_EQ(b->source, n);
        EXPECT_FALSE(b->source_in_root);
        EXPECT_FALSE(b->recursive);
        EXPECT_TRUE(b->create_target && b->optional);
        EXPECT_TRUE(b->attrs & MOUNT_ATTR_NOSUID);
    }
    EXPECT_LT(index_of(dev, "/dev/net", StepKind::Mkdir), index_of(dev, "/dev/net/tun", StepKind::Bind));
    const MountStep* pts = find(dev, "/dev/pts", StepKind::Fs);
    ASSERT_TRUE(pts);
    EXPECT_EQ(std::count(pts->options.begin(), pts->options.end(), std::pair<std::string, std::string>{"gid", "5"}), 1);
    EXPECT_TRUE(find(dev, "/dev/mqueue", StepKind::Fs));
    EXPECT_TRUE(find(dev, "/dev/ptmx", StepKind::Symlink));
}

TEST(MountPlan, RunNodesBelongToTheContainersRootUnderUserNamespace) {
    auto plan = build_mount_plan(SpawnSpec{}, 100000u);
    const MountStep* reg = find(plan, std::string(kInaccessibleDir) + "/reg", StepKind::File);
    ASSERT_TRUE(reg);
    EXPECT_EQ(reg->owner, 100000u);
    EXPECT_EQ(find(plan, "/run/host", StepKind::Mkdir)->owner, 100000u);
    EXPECT_FALSE(find(build_mount_plan(SpawnSpec{}), "/run/host", StepKind::Mkdir)->owner);
}

TEST(MountPlan, DevIsBuiltInTheUserNamespaceOnlyWithoutUserMountsThere) {
    EXPECT_TRUE(dev_can_be_built_in_userns(SpawnSpec{}));
    SpawnSpec bind;
    bind.binds.push_back({"/dev/fuse", "/dev/fuse", false, false, false});
    EXPECT_FALSE(dev_can_be_built_in_userns(bind));
    SpawnSpec tmpfs;
    tmpfs.tmpfs.push_back({"/dev/shm", "size=1M"});
    EXPECT_FALSE(dev_can_be_built_in_userns(tmpfs));
    SpawnSpec mask;
    mask.inaccessible.push_back("/dev");
    EXPECT_FALSE(dev_can_be_built_in_userns(mask));
    SpawnSpec devices;  // "/devices" is not below /dev
    devices.binds.push_back({"/srv", "/devices", false, false, false});
    EXPECT_TRUE(dev_can_be_built_in_userns(devices));
    SpawnSpec oci;
    oci.oci.present = true;
    EXPECT_FALSE(dev_can_be_built_in_userns(oci));
}
