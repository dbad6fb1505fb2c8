#include "runtime/update_events.hpp"

#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>

#include "core/base/error.hpp"
#include "core/base/strings.hpp"
#include "core/spawn/oci_config.hpp"

namespace mk::runtime {
namespace {

using core::UsageError;
using json = nlohmann::json;

std::optional<uint64_t> digits(std::string_view v) {
    if (v.empty() || v.size() > 19) return std::nullopt;
    uint64_t n = 0;
    for (char c : v) {
        if (c < '0' || c > '9') return std::nullopt;
        n = n * 10 + static_cast<uint64_t>(c - '0');
    }
    return n;
}

uint64_t flag_u64(const Invocation& inv, const std::string& name) {
    auto n = digits(inv.value(name));
    if (!n) throw UsageError("--" + name + " must be a non-negative integer, not '" + inv.value(name) + "'");
    return *n;
}

int64_t flag_i64(const Invocation& inv, const std::string& name) {
    std::string v = inv.value(name);
    bool neg = v.starts_with('-');
    auto n = digits(neg ? std::string_view(v).substr(1) : std::string_view(v));
    if (!n || *n > uint64_t(std::numeric_limits<int64_t>::max()))
        throw UsageError("--" + name + " must be an integer, not '" + v + "'");
    return neg ? -static_cast<int64_t>(*n) : static_cast<int64_t>(*n);
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
}

// A cgroup number; "max" (cgroup2's unlimited) as runc reports it: the largest uint64.
uint64_t number(std::string_view text) {
    text = trim(text);
    if (text == "max") return std::numeric_limits<uint64_t>::max();
    return digits(text).value_or(0);
}

// "key value" lines (memory.stat, cpu.stat, memory.events, cpuacct.stat).
std::map<std::string, uint64_t> keyed(std::string_view text) {
    std::map<std::string, uint64_t> out;
    for (auto line : core::lines(text)) {
        auto sp = line.find(' ');
        if (sp == std::string_view::npos) continue;
        out[std::string(line.substr(0, sp))] = number(line.substr(sp + 1));
    }
    return out;
}

std::vector<uint64_t> numbers(std::string_view text) {
    std::vector<uint64_t> out;
    for (auto w : core::split(trim(text), ' '))
        if (!w.empty()) out.push_back(number(w));
    return out;
}

json blkio_entry(std::string_view dev, const std::string& op, uint64_t value) {
    auto colon = dev.find(':');
    return {{"major", number(dev.substr(0, colon))}, {"minor", number(dev.substr(colon + 1))}, {"op", op}, {"value", value}};
}

// v1 blkio.throttle.*_recursive: "8:0 Read 4096" lines and a "Total N" line.
json blkio_v1(std::string_view text) {
    json out = json::array();
    for (auto line : core::lines(text)) {
        auto f = core::split(line, ' ');
        if (f.size() == 3 && f[0].find(':') != std::string_view::npos)
            out.push_back(blkio_entry(f[0], std::string(f[1]), number(f[2])));
    }
    return out;
}

}  // namespace

int64_t parse_memory_size(std::string_view text, const std::string& option) {
    auto bad = [&] {
        return UsageError(option + " must be a size such as 64m, 1g or 1048576 (or -1 for unlimited), not '" +
                          std::string(text) + "'");
    };
    if (text == "-1") return -1;
    size_t i = 0;
    while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) i++;
    std::string_view num = text.substr(0, i), unit = text.substr(i);
    if (num.empty() || num.front() == '.' || num.back() == '.' || num.size() > 30) throw bad();
    if (unit.starts_with(' ')) unit.remove_prefix(1);
    uint64_t mult = 1;
    if (!unit.empty()) {
        static const std::string kUnits = "bkmgtp";
        size_t pos = kUnits.find(static_cast<char>(std::tolower(static_cast<unsigned char>(unit[0]))));
        if (pos == std::string::npos) throw bad();
        for (size_t k = 0; k < pos; k++) mult *= 1024;
        unit.remove_prefix(1);
        if (pos > 0 && !unit.empty() && (unit[0] == 'i' || unit[0] == 'I')) unit.remove_prefix(1);
        if (pos > 0 && !unit.empty() && (unit[0] == 'b' || unit[0] == 'B')) unit.remove_prefix(1);
        if (!unit.empty()) throw bad();
    }
    double v = std::strtod(std::string(num).c_str(), nullptr) * static_cast<double>(mult);
    if (!(v >= 0) || v >= 9.2e18) throw bad();
    return static_cast<int64_t>(v);
}

core::OciResources update_resources(const Invocation& inv, const std::optional<std::string>& resources_json) {
    core::OciResources r = resources_json ? core::parse_oci_resources(*resources_json) : core::OciResources{};
    for (const char* gone : {"kernel-memory"})
        if (inv.flag(gone))
            throw UsageError(std::string("--") + gone + " is not supported: Linux no longer has a kernel memory limit");
    for (const char* rdt : {"l3-cache-schema", "mem-bw-schema"})
        if (inv.flag(rdt)) throw UsageError(std::string("--") + rdt + " is not supported: machrun has no Intel RDT support");
    auto mem = [&](const char* name, std::optional<int64_t>& field) {
        if (inv.flag(name)) field = parse_memory_size(inv.value(name), std::string("--") + name);
    };
    mem("memory", r.memory.limit);
    mem("memory-reservation", r.memory.reservation);
    mem("memory-swap", r.memory.swap);
    mem("kernel-memory-tcp", r.memory.kernel_tcp);
    if (inv.flag("cpu-share")) r.cpu.shares = flag_u64(inv, "cpu-share");
    if (inv.flag("cpu-period")) r.cpu.period = flag_u64(inv, "cpu-period");
    if (inv.flag("cpu-quota")) r.cpu.quota = flag_i64(inv, "cpu-quota");
    if (inv.flag("cpu-burst")) r.cpu.burst = flag_u64(inv, "cpu-burst");
    if (inv.flag("cpu-rt-period")) r.cpu.realtime_period = flag_u64(inv, "cpu-rt-period");
    if (inv.flag("cpu-rt-runtime")) r.cpu.realtime_runtime = flag_i64(inv, "cpu-rt-runtime");
    if (inv.flag("cpuset-cpus")) r.cpu.cpus = inv.value("cpuset-cpus");
    if (inv.flag("cpuset-mems")) r.cpu.mems = inv.value("cpuset-mems");
    if (inv.flag("pids-limit")) r.pids_limit = flag_i64(inv, "pids-limit");
    if (inv.flag("blkio-weight")) {
        uint64_t w = flag_u64(inv, "blkio-weight");
        if (w < 10 || w > 1000) throw UsageError("--blkio-weight must be between 10 and 1000");
        r.block_io.weight = static_cast<uint16_t>(w);
    }
    return r;
}

std::chrono::milliseconds parse_go_duration(std::string_view text) {
    auto bad = [&] {
        return UsageError("--interval must be a duration such as 5s, 500ms or 1m30s, not '" + std::string(text) + "'");
    };
    static const std::pair<std::string_view, double> kUnits[] = {{"ns", 1e-6}, {"us", 1e-3}, {"µs", 1e-3}, {"ms", 1},
                                                                 {"s", 1e3},   {"m", 6e4},   {"h", 3.6e6}};
    std::string_view s = text;
    double total = 0;
    if (s.empty()) throw bad();
    while (!s.empty()) {
        size_t i = 0;
        while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) i++;
        if (i == 0 || i > 20) throw bad();
        double v = std::strtod(std::string(s.substr(0, i)).c_str(), nullptr);
        s.remove_prefix(i);
        const std::pair<std::string_view, double>* unit = nullptr;
        for (const auto& u : kUnits)  // the longest unit that matches ("ms" before "m")
            if (s.starts_with(u.first) && (!unit || u.first.size() > unit->first.size())) unit = &u;
        if (!unit) throw bad();
        s.remove_prefix(unit->first.size());
        total += v * unit->second;
    }
    if (total < 1 || total > 8.64e7) throw UsageError("--interval must be between 1ms and 24h");
    return std::chrono::milliseconds(static_cast<int64_t>(total));
}

std::string hugepage_size_name(std::string_view dir_name) {
    std::string_view v = dir_name;
    if (!v.starts_with("hugepages-") || !v.ends_with("kB")) return {};
    auto kb = digits(v.substr(10, v.size() - 12));
    if (!kb || *kb == 0) return {};
    if (*kb % (1024 * 1024) == 0) return std::to_string(*kb / (1024 * 1024)) + "GB";
    if (*kb % 1024 == 0) return std::to_string(*kb / 1024) + "MB";
    return std::to_string(*kb) + "KB";
}

json stats_json(const core::CgroupControllers& where, bool v2_group, const std::vector<std::string>& hugepage_sizes,
                const CgroupFileReader& read) {
    json data = json::object();
    auto get = [&](const std::string& c, bool v2, const std::string& file) { return read(c, v2, file).value_or(""); };
    auto has = [&](const std::string& c, bool v2, const std::string& file) { return read(c, v2, file).has_value(); };

    // cpu: v1's cpuacct and cpu (throttling), else cgroup2's cpu.stat (present in every group).
    json cpu = {{"usage", {{"total", 0}, {"kernel", 0}, {"user", 0}}},
                {"throttling", {{"periods", 0}, {"throttledPeriods", 0}, {"throttledTime", 0}}}};
    if (where.v1.contains("cpuacct")) {
        cpu["usage"]["total"] = number(get("cpuacct", false, "cpuacct.usage"));
        cpu["usage"]["percpu"] = numbers(get("cpuacct", false, "cpuacct.usage_percpu"));
        auto st = keyed(get("cpuacct", false, "cpuacct.stat"));  // USER_HZ ticks (100 a second)
        cpu["usage"]["kernel"] = st["system"] * 10000000;
        cpu["usage"]["user"] = st["user"] * 10000000;
    } else if (v2_group) {
        auto st = keyed(get("cpu", true, "cpu.stat"));
        cpu["usage"]["total"] = st["usage_usec"] * 1000;
        cpu["usage"]["kernel"] = st["system_usec"] * 1000;
        cpu["usage"]["user"] = st["user_usec"] * 1000;
        cpu["throttling"] = {{"periods", st["nr_periods"]},
                             {"throttledPeriods", st["nr_throttled"]},
                             {"throttledTime", st["throttled_usec"] * 1000}};
    }
    if (where.v1.contains("cpu")) {
        auto st = keyed(get("cpu", false, "cpu.stat"));
        cpu["throttling"] = {{"periods", st["nr_periods"]},
                             {"throttledPeriods", st["nr_throttled"]},
                             {"throttledTime", st["throttled_time"]}};
    }
    data["cpu"] = cpu;

    // memory: v1's usage/max/limit/failcnt per counter; cgroup2's current/max/peak, swap as v1's
    // memsw (memory + swap), which is what OCI's swap means.
    if (where.v1.contains("memory")) {
        auto entry = [&](const std::string& prefix) {
            return json{{"usage", number(get("memory", false, prefix + "usage_in_bytes"))},
                        {"max", number(get("memory", false, prefix + "max_usage_in_bytes"))},
                        {"limit", number(get("memory", false, prefix + "limit_in_bytes"))},
                        {"failcnt", number(get("memory", false, prefix + "failcnt"))}};
        };
        auto raw = keyed(get("memory", false, "memory.stat"));
        data["memory"] = {
            {"cache", raw["cache"]},
            {"usage", entry("memory.")},
            {"swap", has("memory", false, "memory.memsw.usage_in_bytes") ? entry("memory.memsw.") : json::object()},
            {"kernel", entry("memory.kmem.")},
            {"kernelTCP", entry("memory.kmem.tcp.")},
            {"raw", raw}};
    } else if (where.v2.contains("memory")) {
        auto raw = keyed(get("memory", true, "memory.stat"));
        auto events = keyed(get("memory", true, "memory.events"));
        uint64_t current = number(get("memory", true, "memory.current"));
        uint64_t max = number(get("memory", true, "memory.max"));
        json swap = json::object();
        if (has("memory", true, "memory.swap.current")) {
            uint64_t smax = number(get("memory", true, "memory.swap.max"));
            constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
            swap = {{"usage", current + number(get("memory", true, "memory.swap.current"))},
                    {"limit", max == kMax || smax == kMax ? kMax : max + smax},
                    {"max", 0},
                    {"failcnt", 0}};
        }
        data["memory"] = {{"cache", raw["file"]},
                          {"usage",
                           {{"usage", current},
                            {"max", number(get("memory", true, "memory.peak"))},
                            {"limit", max},
                            {"failcnt", events["max"]}}},
                          {"swap", swap},
                          {"raw", raw}};
    }

    for (bool v2 : {false, true}) {
        if (!(v2 ? where.v2 : where.v1).contains("pids")) continue;
        uint64_t limit = number(get("pids", v2, "pids.max"));
        data["pids"] = {{"current", number(get("pids", v2, "pids.current"))},
                        {"limit", limit == std::numeric_limits<uint64_t>::max() ? 0 : limit}};
    }

    if (where.v1.contains("blkio")) {
        data["blkio"] = {
            {"ioServiceBytesRecursive", blkio_v1(get("blkio", false, "blkio.throttle.io_service_bytes_recursive"))},
            {"ioServicedRecursive", blkio_v1(get("blkio", false, "blkio.throttle.io_serviced_recursive"))}};
    } else if (where.v2.contains("io")) {
        json bytes = json::array(), ios = json::array();
        std::string io_stat = get("io", true, "io.stat");
        for (auto line : core::lines(io_stat)) {
            auto f = core::split(line, ' ');
            if (f.empty() || f[0].find(':') == std::string_view::npos) continue;
            std::map<std::string, uint64_t> kv;
            for (size_t i = 1; i < f.size(); i++)
                if (auto eq = f[i].find('='); eq != std::string_view::npos)
                    kv[std::string(f[i].substr(0, eq))] = number(f[i].substr(eq + 1));
            bytes.push_back(blkio_entry(f[0], "Read", kv["rbytes"]));
            bytes.push_back(blkio_entry(f[0], "Write", kv["wbytes"]));
            ios.push_back(blkio_entry(f[0], "Read", kv["rios"]));
            ios.push_back(blkio_entry(f[0], "Write", kv["wios"]));
        }
        data["blkio"] = {{"ioServiceBytesRecursive", bytes}, {"ioServicedRecursive", ios}};
    }

    for (bool v2 : {false, true}) {
        if (!(v2 ? where.v2 : where.v1).contains("hugetlb")) continue;
        json h = json::object();
        for (const auto& size : hugepage_sizes) {
            std::string p = "hugetlb." + size + ".";
            if (v2)
                h[size] = {{"usage", number(get("hugetlb", true, p + "current"))},
                           {"max", 0},
                           {"failcnt", keyed(get("hugetlb", true, p + "events"))["max"]}};
            else
                h[size] = {{"usage", number(get("hugetlb", false, p + "usage_in_bytes"))},
                           {"max", number(get("hugetlb", false, p + "max_usage_in_bytes"))},
                           {"failcnt", number(get("hugetlb", false, p + "failcnt"))}};
        }
        data["hugetlb"] = h;
    }
    return data;
}

std::optional<uint64_t> cgroup_key(std::string_view text, std::string_view key) {
    auto all = keyed(text);
    auto it = all.find(std::string(key));
    if (it == all.end()) return std::nullopt;
    return it->second;
}

std::string event_line(std::string_view type, const std::string& id, const json& data) {
    json e = {{"type", type}, {"id", id}};
    if (!data.is_null()) e["data"] = data;
    return e.dump();
}

}  // namespace mk::runtime
