#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/kernel/cgroup.hpp"
#include "core/machine/shell.hpp"

using namespace mk::core;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// A temp dir shaped like this host's hybrid /sys/fs/cgroup.
struct FakeHybrid {
    fs::path root;
    FakeHybrid() {
        char tmpl[] = "/tmp/mk-cg-XXXXXX";
        root = mkdtemp(tmpl);
        fs::create_directories(root / "unified");
        std::ofstream(root / "unified/cgroup.controllers") << "hugetlb\n";
        for (const char* d : {"systemd", "memory", "pids", "cpu", "devices"}) fs::create_directories(root / d);
    }
    ~FakeHybrid() { fs::remove_all(root); }
};

}  // namespace

TEST(Slice, PathExpansion) {
    EXPECT_EQ(slice_to_path("machine.slice"), "/machine.slice");
    EXPECT_EQ(slice_to_path("a-b-c.slice"), "/a.slice/a-b.slice/a-b-c.slice");
    EXPECT_EQ(slice_to_path("-.slice"), "");
    EXPECT_FALSE(slice_to_path("foo"));
    EXPECT_FALSE(slice_to_path("a--b.slice"));
    EXPECT_FALSE(slice_to_path("-a.slice"));
    EXPECT_FALSE(slice_to_path("../x.slice"));
    EXPECT_FALSE(slice_to_path("a/b.slice"));
}

TEST(ProcCgroup, PrefersUnifiedThenNamedSystemd) {
    EXPECT_EQ(cgroup_path_from_proc("9:name=systemd:/\n1:cpu:/\n0::/x.slice/y.scope\n"), "/x.slice/y.scope");
    EXPECT_EQ(cgroup_path_from_proc("9:name=systemd:/a.scope\n0::/\n"), "/a.scope");
    EXPECT_EQ(cgroup_path_from_proc("0::/\n"), "/");
    EXPECT_FALSE(cgroup_path_from_proc("garbage"));
}

TEST(ProcCgroup, UnitFromPath) {
    EXPECT_EQ(unit_from_cgroup_path("/machine.slice/machine-a.scope/payload"), "machine-a.scope");
    EXPECT_EQ(unit_from_cgroup_path("/system.slice/systemd-nspawn@x.service"), "systemd-nspawn@x.service");
    EXPECT_FALSE(unit_from_cgroup_path("/"));
    // A per-user manager's units lie below the user's delegation point.
    EXPECT_EQ(
        user_unit_from_cgroup_path("/user.slice/user-1000.slice/user@1000.service/app.slice/machine-a.scope/init.scope"),
        "machine-a.scope");
    EXPECT_EQ(user_unit_from_cgroup_path("/ci-job/machine-a.scope/payload"), "machine-a.scope");
    EXPECT_FALSE(user_unit_from_cgroup_path("/user.slice/user-1000.slice/user@1000.service"));
    EXPECT_FALSE(user_unit_from_cgroup_path("/"));
    EXPECT_FALSE(unit_from_cgroup_path("/ci-job/machine-a.scope"));
    EXPECT_FALSE(unit_from_cgroup_path("/machine.slice"));
    EXPECT_FALSE(unit_from_cgroup_path("/process_api/abc"));
}

TEST(CgroupfsBackend, DetectsHybridLayout) {
    FakeHybrid h;
    CgroupfsBackend b(h.root.string());
    EXPECT_EQ(b.unified(), (h.root / "unified").string());
    EXPECT_EQ(b.named_systemd(), (h.root / "systemd").string());
    EXPECT_EQ(b.v1("memory"), (h.root / "memory").string());
    EXPECT_EQ(b.v1("blkio"), "");
}

TEST(CgroupfsBackend, StartScopeWritesLeaderAndV1Limits) {
    FakeHybrid h;
    CgroupfsBackend b(h.root.string());
    ScopeProperties p;
    p.memory_max = 1 << 20;
    p.tasks_max = 77;
    p.cpu_weight = 200;
    p.cpu_quota_per_sec_usec = 500000;
    p.device_policy = "strict";
    p.device_allow = {{"/dev/null", "rw"}};
    auto rel = b.start_scope("machine-a.scope", 4242, p).cgroup_path;
    EXPECT_EQ(rel, "/machine.slice/machine-a.scope");
    for (const char* hier : {"unified", "systemd", "memory", "pids", "cpu", "devices"})
        EXPECT_EQ(slurp(h.root / hier / "machine.slice/machine-a.scope/cgroup.procs"), "4242") << hier;
    EXPECT_EQ(slurp(h.root / "memory/machine.slice/machine-a.scope/memory.limit_in_bytes"), "1048576");
    EXPECT_EQ(slurp(h.root / "pids/machine.slice/machine-a.scope/pids.max"), "77");
    EXPECT_EQ(slurp(h.root / "cpu/machine.slice/machine-a.scope/cpu.shares"), "2048");
    EXPECT_EQ(slurp(h.root / "cpu/machine.slice/machine-a.scope/cpu.cfs_quota_us"), "50000");
    EXPECT_EQ(slurp(h.root / "devices/machine.slice/machine-a.scope/devices.deny"), "a");
    EXPECT_EQ(slurp(h.root / "devices/machine.slice/machine-a.scope/devices.allow"), "c 1:3 rw");  // the last rule
    // No cgroup2 memory controller offered here: nothing written there.
    EXPECT_FALSE(fs::exists(h.root / "unified/machine.slice/machine-a.scope/memory.max"));
    EXPECT_TRUE(b.exists(rel));
}

TEST(CgroupfsBackend, NoLimitsMeansOnlyMainHierarchies) {
    FakeHybrid h;
    CgroupfsBackend b(h.root.string());
    auto rel = b.start_scope("machine-b.scope", 1, {}).cgroup_path;
    EXPECT_TRUE(fs::exists(h.root / "unified" / rel.substr(1)));
    EXPECT_TRUE(fs::exists(h.root / "systemd" / rel.substr(1)));
    EXPECT_FALSE(fs::exists(h.root / "memory/machine.slice"));
}

TEST(CgroupfsBackend, DuplicateScopeFailsAndRejectsBadNames) {
    FakeHybrid h;
    CgroupfsBackend b(h.root.string());
    b.start_scope("machine-c.scope", 1, {});
    EXPECT_THROW(b.start_scope("machine-c.scope", 1, {}), std::system_error);
    EXPECT_THROW(b.start_scope("../x.scope", 1, {}), std::system_error);
    EXPECT_THROW(b.start_scope("x.service", 1, {}), std::system_error);
    ScopeProperties p;
    p.slice = "bad";
    EXPECT_THROW(b.start_scope("machine-d.scope", 1, p), std::system_error);
}

TEST(CgroupfsBackend, PureCgroup2Layout) {
    char tmpl[] = "/tmp/mk-cg2-XXXXXX";
    fs::path root = mkdtemp(tmpl);
    std::ofstream(root / "cgroup.controllers") << "cpu memory pids\n";
    {
        CgroupfsBackend b(root.string());
        EXPECT_EQ(b.unified(), root.string());
        EXPECT_EQ(b.named_systemd(), "");
        ScopeProperties p;
        p.memory_max = 4096;
        auto rel = b.start_scope("machine-e.scope", 7, p).cgroup_path;
        EXPECT_EQ(slurp(root / "machine.slice/machine-e.scope/memory.max"), "4096");
    }
    fs::remove_all(root);
}

TEST(CgroupfsBackend, DirsPicksDeepestExistingPerHierarchy) {
    FakeHybrid h;
    CgroupfsBackend b(h.root.string());
    ScopeProperties p;
    p.tasks_max = 10;
    auto rel = b.start_scope("machine-s.scope", 1, p).cgroup_path;
    fs::create_directories(h.root / "unified" / rel.substr(1) / "payload");
    auto d = b.dirs(rel + "/payload", rel);
    EXPECT_EQ(d, (std::vector<std::string>{(h.root / "unified" / rel.substr(1) / "payload").string(),
                                           (h.root / "systemd" / rel.substr(1)).string(),
                                           (h.root / "pids" / rel.substr(1)).string()}));
    EXPECT_TRUE(b.dirs("/elsewhere", rel).empty());
}

TEST(Passwd, FindsEntries) {
    const char* pw =
        "root:x:0:0:root:/root:/bin/bash\nbad line\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        "short:x:1:1\nnum:x:abc:1::/h:/bin/sh\n";
    auto r = find_passwd_entry(pw, "nobody");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->uid, 65534u);
    EXPECT_EQ(r->gid, 65534u);
    EXPECT_EQ(r->home, "/nonexistent");
    EXPECT_EQ(r->shell, "/usr/sbin/nologin");
    EXPECT_EQ(find_passwd_entry(pw, "root")->shell, "/bin/bash");
    EXPECT_FALSE(find_passwd_entry(pw, "short"));
    EXPECT_FALSE(find_passwd_entry(pw, "num"));
    EXPECT_FALSE(find_passwd_entry(pw, "roo"));
}
