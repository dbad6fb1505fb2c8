// Capability sets as 64-bit masks (bit n = capability n from <linux/capability.h>).
#pragma once

#include <linux/capability.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mk::core {

constexpr uint64_t cap_bit(int cap) { return uint64_t{1} << cap; }

// systemd-nspawn's retained bounding set for a container (26 capabilities); CAP_NET_ADMIN is
// added by the caller when the container has a network namespace of its own.
inline constexpr uint64_t kDefaultCapabilities =
    cap_bit(CAP_AUDIT_CONTROL) | cap_bit(CAP_AUDIT_WRITE) | cap_bit(CAP_CHOWN) | cap_bit(CAP_DAC_OVERRIDE) |
    cap_bit(CAP_DAC_READ_SEARCH) | cap_bit(CAP_FOWNER) | cap_bit(CAP_FSETID) | cap_bit(CAP_IPC_OWNER) | cap_bit(CAP_KILL) |
    cap_bit(CAP_LEASE) | cap_bit(CAP_LINUX_IMMUTABLE) | cap_bit(CAP_MKNOD) | cap_bit(CAP_NET_BIND_SERVICE) |
    cap_bit(CAP_NET_BROADCAST) | cap_bit(CAP_NET_RAW) | cap_bit(CAP_SETFCAP) | cap_bit(CAP_SETGID) | cap_bit(CAP_SETPCAP) |
    cap_bit(CAP_SETUID) | cap_bit(CAP_SYS_ADMIN) | cap_bit(CAP_SYS_BOOT) | cap_bit(CAP_SYS_CHROOT) | cap_bit(CAP_SYS_NICE) |
    cap_bit(CAP_SYS_PTRACE) | cap_bit(CAP_SYS_RESOURCE) | cap_bit(CAP_SYS_TTY_CONFIG);
static_assert(__builtin_popcountll(kDefaultCapabilities) == 26);

// The highest capability the running kernel knows (from /proc/sys/kernel/cap_last_cap).
int cap_last_cap();

// "CAP_SYS_ADMIN", "sys_admin" -> number; nullopt if unknown.
std::optional<int> capability_from_name(std::string_view name);
std::string capability_to_name(int cap);

// In the child, before exec. Async-signal-safe enough for a forked child: no allocation.
// Drops every capability not in `keep` from the bounding set. Returns 0 or -errno.
int drop_bounding_set(uint64_t keep) noexcept;
// The calling thread's permitted set.
uint64_t current_permitted_capabilities();

// Sets the calling thread's three capset(2) sets. Returns 0 or -errno.
int set_capability_sets(uint64_t effective, uint64_t permitted, uint64_t inheritable) noexcept;

// Sets effective = permitted = `caps`, inheritable = `inheritable`. Returns 0 or -errno.
inline int set_capabilities(uint64_t caps, uint64_t inheritable) noexcept {
    return set_capability_sets(caps, caps, inheritable);
}

// Raises each capability of `caps` in the ambient set. Returns 0, or -errno with *failed set to
// the capability the kernel refused (when `failed` is given).
int raise_ambient_capabilities(uint64_t caps, int* failed = nullptr) noexcept;

}  // namespace mk::core
