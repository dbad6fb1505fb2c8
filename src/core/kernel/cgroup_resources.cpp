#include "core/kernel/cgroup_resources.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <memory>
#include <sstream>

#include "core/base/error.hpp"
#include "core/base/strings.hpp"
#include "core/base/unique_fd.hpp"
#include "core/kernel/device_filter.hpp"

namespace mk::core {
namespace {

[[noreturn]] void cannot(const std::string& field, const std::string& why) {
    throw UsageError("OCI config field 'linux.resources." + field + "' is not supported here: " + why);
}

struct Planner {
    const CgroupControllers& where;
    std::vector<CgroupWrite> out;

    // Which hierarchy has `controller`; refuses `field` if none.
    bool v2_for(const std::string& controller, const std::string& field) const {
        if (where.v1.contains(controller)) return false;
        if (where.v2.contains(controller)) return true;
        cannot(field, "no " + controller + " cgroup controller on this host");
    }
    void add(const std::string& controller, bool v2, std::string file, std::string value) {
        out.push_back({controller, v2, std::move(file), std::move(value)});
    }
};

std::string limit_or(int64_t v, const char* unlimited) { return v < 0 ? unlimited : std::to_string(v); }

std::string dev(const OciBlockDeviceValue& d) { return std::to_string(d.major) + ":" + std::to_string(d.minor); }

// blkio weight 10..1000 -> io.weight 1..10000 (runc's and crun's conversion).
uint64_t io_weight(uint64_t blkio) { return 1 + (blkio - 10) * 9999 / 990; }

void plan_memory(Planner& p, const OciResources::Memory& m) {
    if (!m.limit && !m.reservation && !m.swap && !m.kernel_tcp && !m.swappiness && !m.disable_oom_killer && !m.use_hierarchy)
        return;
    bool v2 = p.v2_for("memory", "memory");
    if (!v2) {
        if (m.use_hierarchy) p.add("memory", false, "memory.use_hierarchy", *m.use_hierarchy ? "1" : "0");
        if (m.limit) p.add("memory", false, "memory.limit_in_bytes", limit_or(*m.limit, "-1"));
        if (m.swap) p.add("memory", false, "memory.memsw.limit_in_bytes", limit_or(*m.swap, "-1"));
        if (m.reservation) p.add("memory", false, "memory.soft_limit_in_bytes", limit_or(*m.reservation, "-1"));
        if (m.kernel_tcp) p.add("memory", false, "memory.kmem.tcp.limit_in_bytes", limit_or(*m.kernel_tcp, "-1"));
        if (m.swappiness) p.add("memory", false, "memory.swappiness", std::to_string(*m.swappiness));
        if (m.disable_oom_killer) p.add("memory", false, "memory.oom_control", *m.disable_oom_killer ? "1" : "0");
        return;
    }
    if (m.kernel_tcp) cannot("memory.kernelTCP", "cgroup2 has no TCP memory limit");
    if (m.swappiness) cannot("memory.swappiness", "cgroup2 has no per-group swappiness");
    if (m.disable_oom_killer && *m.disable_oom_killer)
        cannot("memory.disableOOMKiller", "cgroup2 cannot disable the OOM killer");
    if (m.use_hierarchy && !*m.use_hierarchy) cannot("memory.useHierarchy", "cgroup2 is always hierarchical");
    if (m.limit) p.add("memory", true, "memory.max", limit_or(*m.limit, "max"));
    if (m.reservation) p.add("memory", true, "memory.low", limit_or(*m.reservation, "max"));
    if (m.swap) {
        // OCI's swap is memory+swap (v1's memsw); cgroup2 limits swap alone.
        if (*m.swap < 0) p.add("memory", true, "memory.swap.max", "max");
        else if (!m.limit || *m.limit < 0) cannot("memory.swap", "on cgroup2 a swap limit needs a memory limit");
        else p.add("memory", true, "memory.swap.max", std::to_string(*m.swap - *m.limit));
    }
}

void plan_cpu(Planner& p, const OciResources::Cpu& c) {
    if (c.shares || c.quota || c.burst || c.period || c.realtime_runtime || c.realtime_period || c.idle) {
        bool v2 = p.v2_for("cpu", "cpu");
        if (!v2) {
            if (c.shares) p.add("cpu", false, "cpu.shares", std::to_string(*c.shares));
            if (c.period) p.add("cpu", false, "cpu.cfs_period_us", std::to_string(*c.period));
            if (c.quota) p.add("cpu", false, "cpu.cfs_quota_us", std::to_string(*c.quota));
            if (c.burst) p.add("cpu", false, "cpu.cfs_burst_us", std::to_string(*c.burst));
            if (c.realtime_period) p.add("cpu", false, "cpu.rt_period_us", std::to_string(*c.realtime_period));
            if (c.realtime_runtime) p.add("cpu", false, "cpu.rt_runtime_us", std::to_string(*c.realtime_runtime));
            if (c.idle) p.add("cpu", false, "cpu.idle", std::to_string(*c.idle));
        } else {
            if (c.realtime_runtime || c.realtime_period)
                cannot("cpu.realtimeRuntime", "cgroup2 has no realtime group scheduling");
            if (c.shares) p.add("cpu", true, "cpu.weight", std::to_string(1 + ((*c.shares - 2) * 9999) / 262142));
            if (c.quota || c.period)
                p.add("cpu", true, "cpu.max",
                      (c.quota && *c.quota > 0 ? std::to_string(*c.quota) : "max") + " " +
                          std::to_string(c.period.value_or(100000)));
            if (c.burst) p.add("cpu", true, "cpu.max.burst", std::to_string(*c.burst));
            if (c.idle) p.add("cpu", true, "cpu.idle", std::to_string(*c.idle));
        }
    }
    if (!c.cpus.empty()) p.add("cpuset", p.v2_for("cpuset", "cpu.cpus"), "cpuset.cpus", c.cpus);
    if (!c.mems.empty()) p.add("cpuset", p.v2_for("cpuset", "cpu.mems"), "cpuset.mems", c.mems);
}

void plan_block_io(Planner& p, const OciResources::BlockIo& b) {
    const std::pair<const std::vector<OciBlockDeviceValue>*, std::pair<const char*, const char*>> throttles[] = {
        {&b.throttle_read_bps, {"blkio.throttle.read_bps_device", "rbps"}},
        {&b.throttle_write_bps, {"blkio.throttle.write_bps_device", "wbps"}},
        {&b.throttle_read_iops, {"blkio.throttle.read_iops_device", "riops"}},
        {&b.throttle_write_iops, {"blkio.throttle.write_iops_device", "wiops"}}};
    bool any = b.weight || !b.weight_device.empty();
    for (const auto& [list, names] : throttles) any |= !list->empty();
    if (!any) return;
    if (p.where.v1.contains("blkio")) {
        if (b.weight) p.add("blkio", false, "blkio.weight", std::to_string(*b.weight));
        for (const auto& d : b.weight_device)
            p.add("blkio", false, "blkio.weight_device", dev(d) + " " + std::to_string(d.value));
        for (const auto& [list, names] : throttles)
            for (const auto& d : *list) p.add("blkio", false, names.first, dev(d) + " " + std::to_string(d.value));
        return;
    }
    if (!p.where.v2.contains("io")) cannot("blockIO", "no blkio (v1) or io (cgroup2) controller on this host");
    if (b.weight) p.add("io", true, "io.weight", "default " + std::to_string(io_weight(*b.weight)));
    for (const auto& d : b.weight_device) p.add("io", true, "io.weight", dev(d) + " " + std::to_string(io_weight(d.value)));
    for (const auto& [list, names] : throttles)
        for (const auto& d : *list) p.add("io", true, "io.max", dev(d) + " " + names.second + "=" + std::to_string(d.value));
}

void plan_devices(Planner& p, const std::vector<OciDeviceRule>& rules) {
    // Without the v1 controller (a pure cgroup2 host) the rules become a device program instead:
    // plan_device_program().
    if (rules.empty() || !p.where.v1.contains("devices")) return;
    for (const auto& r : rules) {
        std::string rule(1, r.type);
        if (r.type != 'a')
            rule += std::string(" ") + (r.major ? std::to_string(*r.major) : "*") + ":" +
                    (r.minor ? std::to_string(*r.minor) : "*") + " " + (r.access.empty() ? "rwm" : r.access);
        p.add("devices", false, r.allow ? "devices.allow" : "devices.deny", rule);
    }
}

}  // namespace

std::vector<CgroupWrite> plan_cgroup_resources(const OciResources& r, const CgroupControllers& where) {
    Planner p{where, {}};
    plan_devices(p, r.devices);
    plan_memory(p, r.memory);
    plan_cpu(p, r.cpu);
    if (r.pids_limit)
        p.add("pids", p.v2_for("pids", "pids"), "pids.max", *r.pids_limit > 0 ? std::to_string(*r.pids_limit) : "max");
    plan_block_io(p, r.block_io);
    for (const auto& [size, limit] : r.hugepage_limits) {
        bool v2 = p.v2_for("hugetlb", "hugepageLimits");
        p.add("hugetlb", v2, "hugetlb." + size + (v2 ? ".max" : ".limit_in_bytes"), std::to_string(limit));
    }
    if (r.network.class_id) {
        if (!where.v1.contains("net_cls")) cannot("network.classID", "needs the v1 net_cls controller");
        p.add("net_cls", false, "net_cls.classid", std::to_string(*r.network.class_id));
    }
    for (const auto& [ifname, prio] : r.network.priorities) {
        if (!where.v1.contains("net_prio")) cannot("network.priorities", "needs the v1 net_prio controller");
        p.add("net_prio", false, "net_prio.ifpriomap", ifname + " " + std::to_string(prio));
    }
    for (const auto& [device, limits] : r.rdma) {
        bool v2 = p.v2_for("rdma", "rdma");
        std::string v = device;
        if (limits.first) v += " hca_handle=" + std::to_string(*limits.first);
        if (limits.second) v += " hca_object=" + std::to_string(*limits.second);
        p.add("rdma", v2, "rdma.max", v);
    }
    for (const auto& [file, value] : r.unified) {
        std::string controller = file.substr(0, file.find('.'));
        if (!where.v2.contains(controller))
            cannot("unified." + file, "no " + controller + " controller on cgroup2 on this host");
        p.add(controller, true, file, value);
    }
    return std::move(p.out);
}

std::optional<std::vector<bpf_insn>> plan_device_program(const std::vector<OciDeviceRule>& rules,
                                                         const CgroupControllers& host) {
    if (rules.empty() || host.v1.contains("devices")) return std::nullopt;
    return compile_device_filter(rules);
}

std::vector<OciDeviceRule> oci_default_device_rules() {
    auto c = [](std::optional<int64_t> major, std::optional<int64_t> minor, const char* access) {
        return OciDeviceRule{.allow = true, .type = 'c', .major = major, .minor = minor, .access = access};
    };
    return {
        c(std::nullopt, std::nullopt, "m"),
        OciDeviceRule{.allow = true, .type = 'b', .major = std::nullopt, .minor = std::nullopt, .access = "m"},
        c(1, 3, "rwm"),               // /dev/null
        c(1, 8, "rwm"),               // /dev/random
        c(1, 7, "rwm"),               // /dev/full
        c(5, 0, "rwm"),               // /dev/tty
        c(1, 5, "rwm"),               // /dev/zero
        c(1, 9, "rwm"),               // /dev/urandom
        c(5, 1, "rwm"),               // /dev/console
        c(136, std::nullopt, "rwm"),  // /dev/pts/*
        c(5, 2, "rwm"),               // /dev/ptmx
        c(10, 200, "rwm"),            // /dev/net/tun
    };
}

std::string CgroupMounts::v1_dir(const std::string& controller) const {
    for (const auto& [c, dir] : v1_dirs)
        if (c == controller) return dir;
    return "";
}

CgroupMounts detect_cgroup_mounts(const std::string& root) {
    CgroupMounts m;
    auto read_controllers = [](const std::string& file) {
        std::set<std::string> out;
        std::ifstream f(file);
        std::string w;
        while (f >> w) out.insert(w);
        return out;
    };
    struct stat st {};
    if (stat((root + "/cgroup.controllers").c_str(), &st) == 0) {
        m.v2_root = root;
        m.controllers.v2 = read_controllers(root + "/cgroup.controllers");
        return m;
    }
    if (stat((root + "/unified/cgroup.controllers").c_str(), &st) == 0) {
        m.v2_root = root + "/unified";
        m.controllers.v2 = read_controllers(m.v2_root + "/cgroup.controllers");
    }
    std::unique_ptr<DIR, int (*)(DIR*)> d(opendir(root.c_str()), closedir);
    if (!d) return m;
    while (dirent* e = readdir(d.get())) {
        std::string name = e->d_name;
        if (name.starts_with(".") || name == "unified" || name == "systemd" || e->d_type != DT_DIR)
            continue;  // symlinks: aliases
        std::stringstream ss(name);
        for (std::string c; std::getline(ss, c, ',');) {
            if (m.controllers.v2.contains(c)) continue;  // an empty v1 mount point of a controller bound to cgroup2
            m.controllers.v1.insert(c);
            m.v1_dirs.emplace_back(c, root + "/" + name);
        }
    }
    return m;
}

std::vector<std::string> cgroup_v1_groups(const std::vector<CgroupWrite>& writes, const CgroupMounts& mounts,
                                          const std::string& cgroup_path) {
    std::vector<std::string> out;
    for (const auto& w : writes) {
        if (w.v2) continue;
        std::string base = mounts.v1_dir(w.controller);
        if (base.empty()) throw_errno(ENOENT, "no hierarchy for the " + w.controller + " controller");
        std::string dir = base + cgroup_path;
        if (std::find(out.begin(), out.end(), dir) == out.end()) out.push_back(std::move(dir));
    }
    return out;
}

void apply_cgroup_writes(const std::vector<CgroupWrite>& writes, const CgroupMounts& mounts,
                         const std::string& cgroup_path) {
    for (const auto& w : writes) {
        std::string base = w.v2 ? mounts.v2_root : mounts.v1_dir(w.controller);
        if (base.empty()) throw_errno(ENOENT, "no hierarchy for the " + w.controller + " controller");
        std::string path = base + cgroup_path + "/" + w.file;
        UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!fd) throw_last_error("cannot open " + path);
        ssize_t n = ::write(fd.get(), w.value.data(), w.value.size());
        if (n < 0) throw_last_error("cannot write '" + w.value + "' to " + path);
        if (size_t(n) != w.value.size()) throw_errno(EIO, "short write of '" + w.value + "' to " + path);
    }
}

CgroupControllers container_controllers(std::string_view proc_pid_cgroup, const CgroupControllers& host,
                                        const std::set<std::string>& v2_group_controllers, const std::string& cgroup_path) {
    CgroupControllers out;
    for (auto line : lines(proc_pid_cgroup)) {
        // "ID:controller,controller:/path"; cgroup2's line is "0::/path".
        size_t a = line.find(':');
        size_t b = a == std::string_view::npos ? a : line.find(':', a + 1);
        if (b == std::string_view::npos) continue;
        std::string_view list = line.substr(a + 1, b - a - 1);
        if (line.substr(b + 1) != cgroup_path) continue;
        if (line.substr(0, a) == "0" && list.empty()) {
            for (const auto& c : v2_group_controllers)
                if (host.v2.contains(c)) out.v2.insert(c);
            continue;
        }
        for (auto c : split(list, ','))
            if (host.v1.contains(std::string(c))) out.v1.insert(std::string(c));
    }
    return out;
}

std::vector<CgroupWrite> plan_cgroup_update(const OciResources& resources, const CgroupControllers& where,
                                            std::optional<int64_t> v1_memsw_now) {
    if (!resources.devices.empty() && where.v1.contains("devices"))
        throw UsageError(
            "'linux.resources.devices' cannot be changed by update with the v1 devices controller: device rules are set "
            "at create (update replaces them only on a cgroup2 host)");
    std::vector<CgroupWrite> out = plan_cgroup_resources(resources, where);
    auto find = [&](const char* file) {
        return std::ranges::find_if(out, [&](const CgroupWrite& w) { return !w.v2 && w.file == file; });
    };
    auto limit = find("memory.limit_in_bytes");
    auto memsw = find("memory.memsw.limit_in_bytes");
    if (limit != out.end() && memsw != out.end() && v1_memsw_now && *v1_memsw_now >= 0 &&
        (limit->value == "-1" || std::stoll(limit->value) > *v1_memsw_now))
        std::iter_swap(limit, memsw);  // the limit comes first in the plan
    return out;
}

}  // namespace mk::core
