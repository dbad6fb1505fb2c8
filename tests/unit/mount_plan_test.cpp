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
