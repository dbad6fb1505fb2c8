// Capability sets the launcher applies to the payload. Constants only; thread-safe.
// Bit n of a mask is capability number n of <linux/capability.h>.
#pragma once

#include <linux/capability.h>

#include <cstdint>

namespace mk::core {

constexpr uint64_t cap_bit(int cap) { return uint64_t{1} << cap; }

// nspawn v252's retained bounding set (arg_caps_retain). With a private network the launcher adds
// CAP_NET_ADMIN on top (kDefaultCapabilities | cap_bit(CAP_NET_ADMIN)); both sets have seccomp
// programs precompiled at build time.
inline constexpr uint64_t kDefaultCapabilities =
    cap_bit(CAP_AUDIT_CONTROL) | cap_bit(CAP_AUDIT_WRITE) | cap_bit(CAP_CHOWN) | cap_bit(CAP_DAC_OVERRIDE) |
    cap_bit(CAP_DAC_READ_SEARCH) | cap_bit(CAP_FOWNER) | cap_bit(CAP_FSETID) | cap_bit(CAP_IPC_OWNER) |
    cap_bit(CAP_KILL) | cap_bit(CAP_LEASE) | cap_bit(CAP_LINUX_IMMUTABLE) | cap_bit(CAP_MKNOD) |
    cap_bit(CAP_NET_BIND_SERVICE) | cap_bit(CAP_NET_BROADCAST) | cap_bit(CAP_NET_RAW) | cap_bit(CAP_SETFCAP) |
    cap_bit(CAP_SETGID) | cap_bit(CAP_SETPCAP) | cap_bit(CAP_SETUID) | cap_bit(CAP_SYS_ADMIN) |
    cap_bit(CAP_SYS_BOOT) | cap_bit(CAP_SYS_CHROOT) | cap_bit(CAP_SYS_NICE) | cap_bit(CAP_SYS_PTRACE) |
    cap_bit(CAP_SYS_RESOURCE) | cap_bit(CAP_SYS_TTY_CONFIG);

static_assert(__builtin_popcountll(kDefaultCapabilities) == 26);

}  // namespace mk::core
