// machrun update and events, the pure parts: runc's update flags, Go durations, and the stats
// event built from the text of cgroup files (v1, cgroup2), compared field by field.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <limits>
#include <map>

#include "core/base/error.hpp"
#include "runtime/cli.hpp"
#include "runtime/update_events.hpp"

using namespace mk::core;
using namespace mk::runtime;
using json = nlohmann::json;

namespace {

Invocation update(std::vector<std::string> args) {
    args.insert(args.begin(), "update");
    args.push_back("c1");
    return parse_command_line(args);
}

// A reader over fixed file contents: "v1/<controller>/<file>" or "v2/<file>".
CgroupFileReader files(std::map<std::string, std::string> m) {
    return [m](const std::string& c, bool v2, const std::string& f) -> std::optional<std::string> {
        auto it = m.find(v2 ? "v2/" + f : "v1/" + c + "/" + f);
        if (it == m.end()) return std::nullopt;
        return it->second;
    };
}

}  // namespace

TEST(MachrunUpdate, MemorySizesAsRuncTakesThem) {
    EXPECT_EQ(parse_memory_size("1048576", "--memory"), 1048576);
    EXPECT_EQ(parse_memory_size("64m", "--memory"), 64 << 20);
    EXPECT_EQ(parse_memory_size("64M", "--memory"), 64 << 20);
    EXPECT_EQ(parse_memory_size("1g", "--memory"), int64_t(1) << 30);
    EXPECT_EQ(parse_memory_size("512KiB", "--memory"), 512 << 10);
    EXPECT_EQ(parse_memory_size("2mb", "--memory"), 2 << 20);
    EXPECT_EQ(parse_memory_size("1.5k", "--memory"), 1536);
    EXPECT_EQ(parse_memory_size("10b", "--memory"), 10);
    EXPECT_EQ(parse_memory_size("-1", "--memory"), -1);
    for (const char* bad : {"", "m", "-2", "1x", "1mm", "1.m", ".5m", "1 2", "99999999999999999999999999g"})
        EXPECT_THROW(parse_memory_size(bad, "--memory"), UsageError) << bad;
}

TEST(MachrunUpdate, FlagsOverTheResourcesJson) {
    OciResources r = update_resources(update({"--memory", "64m", "--pids-limit=20", "--cpu-quota", "-1", "--cpu-period",
                                              "100000", "--cpuset-cpus", "0", "--blkio-weight", "500"}),
                                      R"({"memory": {"limit": 1, "reservation": 2}, "pids": {"limit": 5}})");
    EXPECT_EQ(r.memory.limit, 64 << 20);
    EXPECT_EQ(r.memory.reservation, 2);  // from the JSON
    EXPECT_EQ(r.pids_limit, 20);
    EXPECT_EQ(r.cpu.quota, -1);
    EXPECT_EQ(r.cpu.period, 100000u);
    EXPECT_EQ(r.cpu.cpus, "0");
    EXPECT_EQ(r.block_io.weight, 500);
    // Nothing given: nothing to change.
    OciResources none = update_resources(update({}), std::nullopt);
    EXPECT_FALSE(none.memory.limit || none.pids_limit || none.cpu.quota);
}

TEST(MachrunUpdate, RefusesWhatCannotBeAppliedNamingIt) {
    auto message = [](std::vector<std::string> args, std::optional<std::string> j = std::nullopt) {
        try {
            update_resources(update(std::move(args)), j);
        } catch (const UsageError& e) {
            return std::string(e.what());
        }
        return std::string("accepted");
    };
    EXPECT_NE(message({"--kernel-memory", "1m"}).find("--kernel-memory"), std::string::npos);
    EXPECT_NE(message({"--l3-cache-schema", "L3:0=f"}).find("--l3-cache-schema"), std::string::npos);
    EXPECT_NE(message({"--mem-bw-schema", "MB:0=70"}).find("--mem-bw-schema"), std::string::npos);
    EXPECT_NE(message({"--pids-limit", "many"}).find("--pids-limit"), std::string::npos);
    EXPECT_NE(message({"--blkio-weight", "5"}).find("--blkio-weight"), std::string::npos);
    EXPECT_NE(message({}, R"({"memory": {"kernel": 1}})").find("kernel"), std::string::npos);
    EXPECT_NE(message({}, R"({"bogus": 1})").find("bogus"), std::string::npos);
    EXPECT_THROW(parse_command_line({"update", "--no-such", "c1"}), UsageError);
}

TEST(MachrunEvents, GoDurations) {
    EXPECT_EQ(parse_go_duration("5s").count(), 5000);
    EXPECT_EQ(parse_go_duration("100ms").count(), 100);
    EXPECT_EQ(parse_go_duration("1m30s").count(), 90000);
    EXPECT_EQ(parse_go_duration("1.5s").count(), 1500);
    EXPECT_EQ(parse_go_duration("1h").count(), 3600000);
    EXPECT_EQ(parse_go_duration("2000us").count(), 2);
    for (const char* bad : {"", "5", "s", "5x", "-1s", "0s", "10ns", "25h", "1.s5"})
        EXPECT_THROW(parse_go_duration(bad), UsageError) << bad;
}

TEST(MachrunEvents, HugepageSizeNames) {
    EXPECT_EQ(hugepage_size_name("hugepages-2048kB"), "2MB");
    EXPECT_EQ(hugepage_size_name("hugepages-1048576kB"), "1GB");
    EXPECT_EQ(hugepage_size_name("hugepages-64kB"), "64KB");
    EXPECT_EQ(hugepage_size_name("."), "");
    EXPECT_EQ(hugepage_size_name("hugepages-kB"), "");
}

TEST(MachrunEvents, StatsFromV1Files) {
    CgroupControllers where{{"cpu", "cpuacct", "memory", "pids", "blkio", "hugetlb"}, {}};
    json d = stats_json(
        where, false, {"2MB"},
        files({{"v1/cpuacct/cpuacct.usage", "123456789\n"},
               {"v1/cpuacct/cpuacct.usage_percpu", "100 200 \n"},
               {"v1/cpuacct/cpuacct.stat", "user 3\nsystem 4\n"},
               {"v1/cpu/cpu.stat", "nr_periods 10\nnr_throttled 2\nthrottled_time 5000\n"},
               {"v1/memory/memory.usage_in_bytes", "4096\n"},
               {"v1/memory/memory.max_usage_in_bytes", "8192\n"},
               {"v1/memory/memory.limit_in_bytes", "67108864\n"},
               {"v1/memory/memory.failcnt", "7\n"},
               {"v1/memory/memory.stat", "cache 12288\nrss 4096\n"},
               {"v1/pids/pids.current", "3\n"},
               {"v1/pids/pids.max", "max\n"},
               {"v1/blkio/blkio.throttle.io_service_bytes_recursive", "8:0 Read 512\n8:0 Write 1024\nTotal 1536\n"},
               {"v1/blkio/blkio.throttle.io_serviced_recursive", "8:0 Read 1\n8:0 Write 2\nTotal 3\n"},
               {"v1/hugetlb/hugetlb.2MB.usage_in_bytes", "0\n"},
               {"v1/hugetlb/hugetlb.2MB.max_usage_in_bytes", "2097152\n"},
               {"v1/hugetlb/hugetlb.2MB.failcnt", "1\n"}}));
    EXPECT_EQ(d["cpu"]["usage"]["total"], 123456789u);
    EXPECT_EQ(d["cpu"]["usage"]["percpu"], json({100, 200}));
    EXPECT_EQ(d["cpu"]["usage"]["user"], 30000000u);
    EXPECT_EQ(d["cpu"]["usage"]["kernel"], 40000000u);
    EXPECT_EQ(d["cpu"]["throttling"], json({{"periods", 10}, {"throttledPeriods", 2}, {"throttledTime", 5000}}));
    EXPECT_EQ(d["memory"]["usage"], json({{"usage", 4096}, {"max", 8192}, {"limit", 67108864}, {"failcnt", 7}}));
    EXPECT_EQ(d["memory"]["cache"], 12288u);
    EXPECT_EQ(d["memory"]["raw"]["rss"], 4096u);
    EXPECT_EQ(d["memory"]["swap"], json::object());  // no memsw files: no swap accounting
    EXPECT_EQ(d["pids"], json({{"current", 3}, {"limit", 0}}));
    EXPECT_EQ(d["blkio"]["ioServiceBytesRecursive"], json({{{"major", 8}, {"minor", 0}, {"op", "Read"}, {"value", 512}},
                                                           {{"major", 8}, {"minor", 0}, {"op", "Write"}, {"value", 1024}}}));
    EXPECT_EQ(d["blkio"]["ioServicedRecursive"].size(), 2u);
    EXPECT_EQ(d["hugetlb"]["2MB"], json({{"usage", 0}, {"max", 2097152}, {"failcnt", 1}}));
}

TEST(MachrunEvents, StatsFromCgroup2Files) {
    CgroupControllers where{{}, {"memory", "pids", "io", "hugetlb"}};
    constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
    json d = stats_json(where, true, {"2MB"},
                        files({{"v2/cpu.stat",
                                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\n"
                                "nr_throttled 1\nthrottled_usec 20\n"},
                               {"v2/memory.current", "8192\n"},
                               {"v2/memory.max", "max\n"},
                               {"v2/memory.peak", "16384\n"},
                               {"v2/memory.events", "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n"},
                               {"v2/memory.stat", "anon 4096\nfile 4096\n"},
                               {"v2/memory.swap.current", "0\n"},
                               {"v2/memory.swap.max", "max\n"},
                               {"v2/pids.current", "2\n"},
                               {"v2/pids.max", "64\n"},
                               {"v2/io.stat", "8:16 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n"},
                               {"v2/hugetlb.2MB.current", "2097152\n"},
                               {"v2/hugetlb.2MB.events", "max 3\n"}}));
    EXPECT_EQ(d["cpu"]["usage"]["total"], 1500000u);
    EXPECT_EQ(d["cpu"]["usage"]["user"], 1000000u);
    EXPECT_EQ(d["cpu"]["usage"]["kernel"], 500000u);
    EXPECT_EQ(d["cpu"]["throttling"], json({{"periods", 4}, {"throttledPeriods", 1}, {"throttledTime", 20000}}));
    EXPECT_EQ(d["memory"]["usage"], json({{"usage", 8192}, {"max", 16384}, {"limit", kMax}, {"failcnt", 5}}));
    EXPECT_EQ(d["memory"]["cache"], 4096u);
    EXPECT_EQ(d["memory"]["swap"]["usage"], 8192u);
    EXPECT_EQ(d["memory"]["swap"]["limit"], kMax);
    EXPECT_EQ(d["pids"], json({{"current", 2}, {"limit", 64}}));
    EXPECT_EQ(d["blkio"]["ioServiceBytesRecursive"], json({{{"major", 8}, {"minor", 16}, {"op", "Read"}, {"value", 10}},
                                                           {{"major", 8}, {"minor", 16}, {"op", "Write"}, {"value", 20}}}));
    EXPECT_EQ(d["hugetlb"]["2MB"]["usage"], 2097152u);
    EXPECT_EQ(d["hugetlb"]["2MB"]["failcnt"], 3u);
    EXPECT_EQ(cgroup_key("low 0\noom_kill 4\n", "oom_kill"), 4u);
    EXPECT_EQ(cgroup_key("low 0\n", "oom_kill"), std::nullopt);
}

TEST(MachrunEvents, StatsWithoutGroupsHaveOnlyZeroCpu) {
    json d = stats_json({}, false, {"2MB"}, files({}));
    EXPECT_EQ(d["cpu"]["usage"]["total"], 0u);
    EXPECT_FALSE(d.contains("memory") || d.contains("pids") || d.contains("hugetlb"));
    EXPECT_EQ(json::parse(event_line("stats", "c1", d))["type"], "stats");
    EXPECT_EQ(event_line("oom", "c1"), R"({"id":"c1","type":"oom"})");
}
