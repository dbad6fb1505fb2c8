// linux.resources.devices as a BPF_PROG_TYPE_CGROUP_DEVICE program: how a pure cgroup2 host (no
// v1 devices controller) enforces device rules, as runc (cgroups/devices/devicefilter.go) and crun
// (src/libcrun/ebpf.c) do. The kernel runs the program on every open, mknod and (for block
// devices) access of a device node by a process of the group or its descendants; it answers 1
// (allow) or 0 (EPERM).
//
// Semantics (the v1 devices files' in effect, decided per access bit): the rules are read in
// order; for each access the request asks (r = read, w = write, m = mknod), the last rule that
// matches the device (type, major, minor; `*` = any) and names that access decides; an access no
// rule decides is denied (default deny). Type 'a' matches every device with every access,
// whatever its major, minor and access fields say, as v1's `a` entry (which our v1 writes and
// runc's emulator treat the same way): `deny a` first is the usual "deny all, then allow".
//
// Everything here is pure: no syscalls, no allocation beyond the result. Loading and attaching
// the program is device_program.hpp's.
#pragma once

#include <linux/bpf.h>

#include <cstdint>
#include <string_view>
#include <vector>

#include "core/spawn/oci_spec.hpp"

namespace mk::core {

// The kernel's device types and access bits (BPF_DEVCG_DEV_*, BPF_DEVCG_ACC_*).
struct DeviceRequest {
    char type = 'c';  // 'c' or 'b'
    uint32_t major = 0;
    uint32_t minor = 0;
    std::string_view access = "r";  // non-empty subset of "rwm"
};

// The reference answer: whether `rules` allow the request. Throws UsageError for a malformed rule.
bool device_rules_allow(const std::vector<OciDeviceRule>& rules, const DeviceRequest& request);

// The program that answers as device_rules_allow() for every request the kernel can make.
// Throws UsageError naming the rule for a type other than a/b/c, an access outside "rwm", or a
// major/minor outside 0..4294967295. Rules before the last `a` rule are left out (it decides
// every request before them), so a long list behind `deny a` costs nothing. More than
// kMaxDeviceRules rules after that are refused: the kernel's verifier walks each branch, and
// measured on kernel 6.18 it gave up ("BPF program is too large", 1M instructions processed) at
// 1,200 rules with split accesses (1,100 loaded).
std::vector<bpf_insn> compile_device_filter(const std::vector<OciDeviceRule>& rules);
inline constexpr size_t kMaxDeviceRules = 1024;

// The license the program is loaded under (it calls no GPL-only helper): the project's.
inline constexpr const char* kDeviceFilterLicense = "LGPL-2.1-or-later";

}  // namespace mk::core
