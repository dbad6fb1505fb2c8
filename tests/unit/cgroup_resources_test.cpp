// linux.resources -> cgroup file writes, per host layout (v1, cgroup2, hybrid), and one real apply
// on this host's hierarchies read back from the kernel.
#include "core/kernel/cgroup_resources.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "core/base/error.hpp"
#include "core/spawn/oci_config.hpp"

using namespace mk::core;

namespace mk::core {
void PrintTo(const CgroupWrite& w, std::ostream* os) {
    *os << "{" << w.controller << (w.v2 ? " v2 " : " v1 ") << w.file << "=" << w.value << "}";
}
}  // namespace mk::core

namespace {

const CgroupControllers kLegacy{
    {"memory", "cpu", "cpuacct", "cpuset", "pids", "blkio", "devices", "hugetlb", "net_cls", "net_prio", "rdma"}, {}};
const CgroupControllers kUnified{{}, {"memory", "cpu", "cpuset", "pids", "io", "hugetlb", "rdma"}};
// This VM: v1 controllers, hugetlb bound to cgroup2 at /sys/fs/cgroup/unified.
const CgroupControllers kHybrid{{"memory", "cpu", "cpuacct", "cpuset", "pids", "blkio", "devices", "freezer"}, {"hugetlb"}};

const char* kResources = R"({
    "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"},
                {"allow": true, "type": "c", "major": 136}],
    "memory": {"limit": 67108864, "reservation": 33554432, "swap": 100663296},
    "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
    "pids": {"limit": 64},
    "blockIO": {"weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]},
    "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]
})";

std::string error_of(const char* resources, const CgroupControllers& where) {
    try {
        plan_cgroup_resources(parse_oci_resources(resources), where);
    } catch (const UsageError& e) {
        return e.what();
    }
    return "";
}

std::string read_file(const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    std::string s = ss.str();
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
}

}  // namespace

TEST(CgroupResources, PlanForV1) {
    auto w = plan_cgroup_resources(parse_oci_resources(kResources), kLegacy);
    EXPECT_EQ(w, (std::vector<CgroupWrite>{
                     {"devices", false, "devices.deny", "a"},
                     {"devices", false, "devices.allow", "c 1:3 rw"},
                     {"devices", false, "devices.allow", "c 136:* rwm"},
                     {"memory", false, "memory.limit_in_bytes", "67108864"},
                     {"memory", false, "memory.memsw.limit_in_bytes", "100663296"},
                     {"memory", false, "memory.soft_limit_in_bytes", "33554432"},
                     {"cpu", false, "cpu.shares", "1024"},
                     {"cpu", false, "cpu.cfs_period_us", "100000"},
                     {"cpu", false, "cpu.cfs_quota_us", "50000"},
                     {"cpuset", false, "cpuset.cpus", "0"},
                     {"cpuset", false, "cpuset.mems", "0"},
                     {"pids", false, "pids.max", "64"},
                     {"blkio", false, "blkio.weight", "500"},
                     {"blkio", false, "blkio.throttle.read_bps_device", "8:0 1048576"},
                     {"hugetlb", false, "hugetlb.2MB.limit_in_bytes", "4194304"},
                 }));
    auto n = plan_cgroup_resources(
        parse_oci_resources(R"({"network": {"classID": 7, "priorities": [{"name": "eth0", "priority": 3}]},
        "memory": {"limit": -1, "swappiness": 0, "disableOOMKiller": true, "kernelTCP": 1048576}, "pids": {"limit": 0}})"),
        kLegacy);
    EXPECT_EQ(n, (std::vector<CgroupWrite>{
                     {"memory", false, "memory.limit_in_bytes", "-1"},
                     {"memory", false, "memory.kmem.tcp.limit_in_bytes", "1048576"},
                     {"memory", false, "memory.swappiness", "0"},
                     {"memory", false, "memory.oom_control", "1"},
                     {"pids", false, "pids.max", "max"},
                     {"net_cls", false, "net_cls.classid", "7"},
                     {"net_prio", false, "net_prio.ifpriomap", "eth0 3"},
                 }));
    EXPECT_NE(error_of(R"({"unified": {"memory.high": "1"}})", kLegacy).find("'linux.resources.unified.memory.high'"),
              std::string::npos);
}

TEST(CgroupResources, PlanForCgroup2) {
    const char* r = R"({"memory": {"limit": 67108864, "reservation": 33554432, "swap": 100663296},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "burst": 10, "idle": 0, "cpus": "0"},
        "pids": {"limit": 64},
        "blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 10}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}]},
        "hugepageLimits": [{"pageSize": "1GB", "limit": 0}],
        "rdma": {"mlx4_0": {"hcaHandles": 3, "hcaObjects": 10000}},
        "unified": {"memory.high": "50000000"}})";
    auto w = plan_cgroup_resources(parse_oci_resources(r), kUnified);
    EXPECT_EQ(w, (std::vector<CgroupWrite>{
                     {"memory", true, "memory.max", "67108864"},
                     {"memory", true, "memory.low", "33554432"},
                     {"memory", true, "memory.swap.max", "33554432"},  // memory+swap minus memory
                     {"cpu", true, "cpu.weight", "39"},                // runc's shares -> weight
                     {"cpu", true, "cpu.max", "50000 100000"},
                     {"cpu", true, "cpu.max.burst", "10"},
                     {"cpu", true, "cpu.idle", "0"},
                     {"cpuset", true, "cpuset.cpus", "0"},
                     {"pids", true, "pids.max", "64"},
                     {"io", true, "io.weight", "default 4950"},
                     {"io", true, "io.weight", "8:0 1"},
                     {"io", true, "io.max", "8:0 rbps=1048576"},
                     {"io", true, "io.max", "8:0 wiops=100"},
                     {"hugetlb", true, "hugetlb.1GB.max", "0"},
                     {"rdma", true, "rdma.max", "mlx4_0 hca_handle=3 hca_object=10000"},
                     {"memory", true, "memory.high", "50000000"},
                 }));
    EXPECT_EQ(plan_cgroup_resources(parse_oci_resources(R"({"cpu": {"quota": -1}, "memory": {"limit": -1, "swap": -1}})"),
                                    kUnified),
              (std::vector<CgroupWrite>{{"memory", true, "memory.max", "max"},
                                        {"memory", true, "memory.swap.max", "max"},
                                        {"cpu", true, "cpu.max", "max 100000"}}));
    EXPECT_NE(error_of(R"({"memory": {"swappiness": 10}})", kUnified).find("memory.swappiness"), std::string::npos);
    EXPECT_NE(error_of(R"({"memory": {"kernelTCP": 10}})", kUnified).find("memory.kernelTCP"), std::string::npos);
    EXPECT_NE(error_of(R"({"memory": {"swap": 10}})", kUnified).find("needs a memory limit"), std::string::npos);
    EXPECT_NE(error_of(R"({"cpu": {"realtimeRuntime": 10}})", kUnified).find("realtime"), std::string::npos);
    // Device rules are no writes there: they become a device program (device_filter_test.cpp).
    EXPECT_TRUE(plan_cgroup_resources(parse_oci_resources(R"({"devices": [{"allow": false}]})"), kUnified).empty());
    EXPECT_NE(error_of(R"({"network": {"classID": 1}})", kUnified).find("net_cls"), std::string::npos);
    EXPECT_NE(error_of(R"({"unified": {"misc.max": "x 1"}})", kUnified).find("no misc controller"), std::string::npos);
}

TEST(CgroupResources, PlanForThisHybridLayout) {
    auto w = plan_cgroup_resources(parse_oci_resources(kResources), kHybrid);
    ASSERT_EQ(w.size(), 15u);
    EXPECT_EQ(w[3], (CgroupWrite{"memory", false, "memory.limit_in_bytes", "67108864"}));
    EXPECT_EQ(w.back(), (CgroupWrite{"hugetlb", true, "hugetlb.2MB.max", "4194304"}));
    EXPECT_NE(error_of(R"({"unified": {"memory.max": "1"}})", kHybrid).find("no memory controller on cgroup2"),
              std::string::npos);
    EXPECT_NE(error_of(R"({"rdma": {"x": {}}})", kHybrid).find("no rdma cgroup controller"), std::string::npos);
}

TEST(CgroupResources, DefaultDeviceRulesFollowTheSpecsOwn) {
    // podman sends only "deny all"; the runtime's defaults come after it, as runc's.
    OciResources r = parse_oci_resources(R"({"devices": [{"allow": false, "access": "rwm"}]})");
    auto defaults = oci_default_device_rules();
    r.devices.insert(r.devices.end(), defaults.begin(), defaults.end());
    auto w = plan_cgroup_resources(r, kHybrid);
    ASSERT_EQ(w.size(), 13u);
    EXPECT_EQ(w[0], (CgroupWrite{"devices", false, "devices.deny", "a"}));
    EXPECT_EQ(w[1], (CgroupWrite{"devices", false, "devices.allow", "c *:* m"}));
    EXPECT_EQ(w[2], (CgroupWrite{"devices", false, "devices.allow", "b *:* m"}));
    EXPECT_EQ(w[3], (CgroupWrite{"devices", false, "devices.allow", "c 1:3 rwm"}));
    EXPECT_EQ(w[10], (CgroupWrite{"devices", false, "devices.allow", "c 136:* rwm"}));
    EXPECT_EQ(w[12], (CgroupWrite{"devices", false, "devices.allow", "c 10:200 rwm"}));
    for (const auto& d : defaults) EXPECT_TRUE(d.allow);
}

TEST(CgroupResources, V1GroupsOnePerHierarchy) {
    CgroupMounts m;
    m.controllers = kHybrid;
    m.v2_root = "/sys/fs/cgroup/unified";
    m.v1_dirs = {{"cpu", "/r/cpu,cpuacct"}, {"cpuacct", "/r/cpu,cpuacct"}, {"pids", "/r/pids"}, {"devices", "/r/devices"}};
    std::vector<CgroupWrite> w = {
        {"devices", false, "devices.deny", "a"},   {"devices", false, "devices.allow", "c 1:3 rwm"},
        {"cpu", false, "cpu.shares", "512"},       {"cpuacct", false, "cpuacct.x", "1"},
        {"hugetlb", true, "hugetlb.2MB.max", "1"}, {"pids", false, "pids.max", "7"}};
    EXPECT_EQ(cgroup_v1_groups(w, m, "/p/c"),
              (std::vector<std::string>{"/r/devices/p/c", "/r/cpu,cpuacct/p/c", "/r/pids/p/c"}));
    EXPECT_TRUE(cgroup_v1_groups({{"hugetlb", true, "hugetlb.2MB.max", "1"}}, m, "/p/c").empty());
    EXPECT_THROW(cgroup_v1_groups({{"memory", false, "memory.limit_in_bytes", "1"}}, m, "/p/c"), std::system_error);
}

TEST(CgroupResources, DetectsAndAppliesOnThisHost) {
    CgroupMounts m = detect_cgroup_mounts();
    if (m.v1_dir("memory").empty() || m.v1_dir("pids").empty()) GTEST_SKIP() << "no v1 memory and pids controllers here";
    const std::string rel = "/mk-unit-resources-" + std::to_string(getpid());
    std::vector<std::string> made;
    for (const char* c : {"memory", "pids"}) {
        std::string dir = m.v1_dir(c) + rel;
        ASSERT_EQ(mkdir(dir.c_str(), 0755), 0) << dir;
        made.push_back(dir);
    }
    std::string err;
    try {
        auto w = plan_cgroup_resources(parse_oci_resources(R"({"memory": {"limit": 33554432}, "pids": {"limit": 17}})"),
                                       m.controllers);
        apply_cgroup_writes(w, m, rel);
    } catch (const std::exception& e) {
        err = e.what();
    }
    std::string limit = read_file(m.v1_dir("memory") + rel + "/memory.limit_in_bytes");
    std::string pids = read_file(m.v1_dir("pids") + rel + "/pids.max");
    bool bad_write = false;
    try {
        apply_cgroup_writes({{"pids", false, "pids.max", "not-a-number"}}, m, rel);
    } catch (const std::system_error& e) {
        bad_write = std::string(e.what()).find("not-a-number") != std::string::npos;
    }
    for (const auto& d : made) rmdir(d.c_str());
    EXPECT_EQ(err, "");
    EXPECT_EQ(limit, "33554432");
    EXPECT_EQ(pids, "17");
    EXPECT_TRUE(bad_write);
}

// ---- the container's own groups, and update ---------------------------------------------------

TEST(ContainerControllers, OnlyGroupsOfExactlyTheContainersPathCount) {
    // A hybrid host: memory and pids groups made for the container, cpu still at the root, the
    // cgroup2 group with hugetlb enabled; named hierarchies are ignored.
    const char* self =
        "12:pids:/machrun/c1\n"
        "11:memory:/machrun/c1\n"
        "4:cpu,cpuacct:/\n"
        "3:blkio:/machrun/c1/sub\n"
        "1:name=systemd:/machrun/c1\n"
        "0::/machrun/c1\n";
    CgroupControllers c = container_controllers(self, kHybrid, {"hugetlb"}, "/machrun/c1");
    EXPECT_EQ(c.v1, (std::set<std::string>{"memory", "pids"}));
    EXPECT_EQ(c.v2, (std::set<std::string>{"hugetlb"}));
    // A controller the group lists but the host does not have on cgroup2 is not taken.
    EXPECT_TRUE(container_controllers("0::/machrun/c1\n", kHybrid, {"memory"}, "/machrun/c1").v2.empty());
    // Another container's path, or a prefix of it, is not ours.
    EXPECT_TRUE(
        container_controllers("11:memory:/machrun/c10\n0::/machrun\n", kHybrid, {"hugetlb"}, "/machrun/c1").v1.empty());
    EXPECT_TRUE(
        container_controllers("11:memory:/machrun/c10\n0::/machrun\n", kHybrid, {"hugetlb"}, "/machrun/c1").v2.empty());
    // Garbage lines are skipped.
    EXPECT_TRUE(container_controllers("junk\n::\n", kHybrid, {}, "/machrun/c1").v1.empty());
}

TEST(CgroupUpdate, PlansLikeCreateAndRefusesV1DeviceRules) {
    OciResources r = parse_oci_resources(R"({"memory": {"limit": 67108864}, "pids": {"limit": 32}})");
    CgroupControllers own{{"memory", "pids"}, {}};
    EXPECT_EQ(plan_cgroup_update(r, own), plan_cgroup_resources(r, own));
    OciResources d = parse_oci_resources(R"({"devices": [{"allow": false, "access": "rwm"}]})");
    try {
        plan_cgroup_update(d, kLegacy);
        FAIL() << "device rules were planned";
    } catch (const UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("linux.resources.devices"), std::string::npos) << e.what();
    }
    // A field whose controller the container's groups lack is refused naming it.
    EXPECT_THROW(plan_cgroup_update(r, CgroupControllers{{"memory"}, {}}), UsageError);
}

TEST(CgroupUpdate, RaisingTheV1LimitAboveMemswWritesMemswFirst) {
    CgroupControllers own{{"memory"}, {}};
    OciResources r = parse_oci_resources(R"({"memory": {"limit": 268435456, "swap": 536870912}})");
    // Current memsw 128 MiB: the new limit (256 MiB) would exceed it, so memsw goes first.
    auto up = plan_cgroup_update(r, own, 134217728);
    ASSERT_EQ(up.size(), 2u);
    EXPECT_EQ(up[0].file, "memory.memsw.limit_in_bytes");
    EXPECT_EQ(up[1].file, "memory.limit_in_bytes");
    // Current memsw 1 GiB: lowering both, the limit goes first (memsw may never fall below it).
    auto down = plan_cgroup_update(r, own, 1073741824);
    EXPECT_EQ(down[0].file, "memory.limit_in_bytes");
    EXPECT_EQ(down[1].file, "memory.memsw.limit_in_bytes");
    // Unknown current value: the create order.
    EXPECT_EQ(plan_cgroup_update(r, own)[0].file, "memory.limit_in_bytes");
}
