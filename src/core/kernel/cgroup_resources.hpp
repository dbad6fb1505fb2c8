// linux.resources of an OCI config.json as cgroup file writes, for whichever hierarchy holds each
// controller: v1 (legacy), cgroup2 (unified), or a mix of both (hybrid hosts such as this one, where
// memory, cpu, pids... are on v1 and e.g. hugetlb on cgroup2).
//
// plan_cgroup_resources() is pure: resources + where the controllers are -> ordered writes, or a
// UsageError naming the field when the host's layout cannot express it (e.g. memory.swappiness on
// cgroup2, linux.resources.unified without cgroup2 controllers). apply_cgroup_writes() performs them.
// Device rules are devices.allow/deny writes where the v1 devices controller is; on a pure cgroup2
// host they are a BPF device program instead (plan_device_program(), device_filter.hpp).
#pragma once

#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <linux/bpf.h>

#include "core/spawn/oci_spec.hpp"

namespace mk::core {

// Which controllers are on which hierarchy.
struct CgroupControllers {
    std::set<std::string> v1;  // "memory", "cpu", "cpuacct", "blkio", "devices", "net_cls", ...
    std::set<std::string> v2;  // cgroup2's cgroup.controllers: "memory", "cpu", "io", "hugetlb", ...
};

struct CgroupWrite {
    std::string controller;  // the controller the file belongs to
    bool v2 = false;         // in the cgroup2 hierarchy, else in the controller's v1 hierarchy
    std::string file;        // "memory.limit_in_bytes", "cpu.max", ...
    std::string value;
    bool operator==(const CgroupWrite&) const = default;
};

// Ordered as the kernel needs them (cfs period before quota, memory limit before memsw). Pure.
std::vector<CgroupWrite> plan_cgroup_resources(const OciResources& resources, const CgroupControllers& where);

// The device program for `rules` on a host without the v1 devices controller (cgroup2 only, as
// runc's fs2 manager): compile_device_filter(rules), to be attached to the container's cgroup2
// group. Nothing when there are no rules or the v1 controller takes them (a hybrid host, as
// runc's fs manager, which attaches no program there). Throws UsageError for a malformed rule. Pure.
std::optional<std::vector<bpf_insn>> plan_device_program(const std::vector<OciDeviceRule>& rules,
                                                         const CgroupControllers& host);

// The device rules an OCI runtime adds after config.json's own (runc's specconv.AllowedDevices, in
// its order): mknod of any device, the standard character devices (null, zero, full, random,
// urandom, tty, console), ptmx and the pts range, and tun. Engines such as podman send only
// `deny a` and rely on these, so a runtime without them leaves the container no /dev/null. Pure.
std::vector<OciDeviceRule> oci_default_device_rules();

// Where the host's controllers are mounted under `root` (normally /sys/fs/cgroup).
struct CgroupMounts {
    CgroupControllers controllers;
    std::string v2_root;                                       // "" if no cgroup2 hierarchy
    std::vector<std::pair<std::string, std::string>> v1_dirs;  // (controller, hierarchy root)
    std::string v1_dir(const std::string& controller) const;   // "" if not on v1
};
CgroupMounts detect_cgroup_mounts(const std::string& root = "/sys/fs/cgroup");

// The v1 groups a plan writes to: <controller's hierarchy>/<cgroup_path> for each v1 controller
// the writes name, one per hierarchy (cpu and cpuacct mounted together are one group), in the
// order of first use. A runtime makes these, moves the container into them and removes them at
// delete. Pure.
std::vector<std::string> cgroup_v1_groups(const std::vector<CgroupWrite>& writes, const CgroupMounts& mounts,
                                          const std::string& cgroup_path);

// Writes each value to <hierarchy>/<cgroup_path>/<file> (cgroup_path: "/machine.slice/x.scope").
// The groups must exist. Throws std::system_error naming the file and value on the first failure.
void apply_cgroup_writes(const std::vector<CgroupWrite>& writes, const CgroupMounts& mounts, const std::string& cgroup_path);

// The controllers of a container's own groups, from its process's /proc/PID/cgroup text: a v1
// controller counts only where the process's group in that hierarchy is exactly `cgroup_path`; a
// cgroup2 controller only where the process's cgroup2 group is `cgroup_path` and the controller is
// in that group's cgroup.controllers (`v2_group_controllers`). A controller whose group is another
// (the host's root, an engine's parent) is left out, so nothing meant for the container is ever
// written to a group it shares. Pure.
CgroupControllers container_controllers(std::string_view proc_pid_cgroup, const CgroupControllers& host,
                                        const std::set<std::string>& v2_group_controllers, const std::string& cgroup_path);

// A change of linux.resources for a running container (the OCI runtime's `update`): the writes of
// plan_cgroup_resources(), refusing what `update` cannot change (device rules where the v1 devices
// controller holds them: set at create, as runc's update leaves them too; on cgroup2 they are not
// writes but a new plan_device_program(), which the caller attaches in place of the old). On v1, raising the memory limit above the current memory+swap
// limit (`v1_memsw_now`, if known) writes memory.memsw.limit_in_bytes first, as the kernel requires
// memsw >= limit at every step. Pure.
std::vector<CgroupWrite> plan_cgroup_update(const OciResources& resources, const CgroupControllers& where,
                                            std::optional<int64_t> v1_memsw_now = std::nullopt);

}  // namespace mk::core
