#include "core/kernel/capabilities.hpp"

#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>

#include "core/base/error.hpp"

namespace mk::core {
namespace {

// Names indexed by number, as in <linux/capability.h>.
constexpr const char* kNames[] = {
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
};
constexpr int kKnown = sizeof kNames / sizeof kNames[0];

}  // namespace

int cap_last_cap() {
    static int cached = -1;
    if (cached >= 0) return cached;
    int v = kKnown - 1;
    if (FILE* f = fopen("/proc/sys/kernel/cap_last_cap", "re")) {
        if (fscanf(f, "%d", &v) != 1) v = kKnown - 1;
        fclose(f);
    }
    if (v > 63) v = 63;
    cached = v;
    return v;
}

std::optional<int> capability_from_name(std::string_view name) {
    std::string n;
    for (char c : name) n += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (n.starts_with("cap_")) n.erase(0, 4);
    for (int i = 0; i < kKnown; i++)
        if (n == kNames[i]) return i;
    return std::nullopt;
}

std::string capability_to_name(int cap) {
    if (cap < 0 || cap >= kKnown) return "cap_" + std::to_string(cap);
    std::string s = std::string("CAP_") + kNames[cap];
    for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
}

int drop_bounding_set(uint64_t keep) noexcept {
    int last = cap_last_cap();
    for (int c = 0; c <= last; c++) {
        if (keep & cap_bit(c)) continue;
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL) return -errno;
    }
    return 0;
}

uint64_t current_permitted_capabilities() {
    __user_cap_header_struct hdr{};
    hdr.version = _LINUX_CAPABILITY_VERSION_3;
    __user_cap_data_struct data[2]{};
    if (syscall(SYS_capget, &hdr, data) < 0) throw_last_error("capget");
    return uint64_t{data[0].permitted} | (uint64_t{data[1].permitted} << 32);
}

int set_capability_sets(uint64_t effective, uint64_t permitted, uint64_t inheritable) noexcept {
    __user_cap_header_struct hdr{};
    hdr.version = _LINUX_CAPABILITY_VERSION_3;
    hdr.pid = 0;
    __user_cap_data_struct data[2]{};
    for (int i = 0; i < 2; i++) {
        data[i].effective = static_cast<uint32_t>(effective >> (32 * i));
        data[i].permitted = static_cast<uint32_t>(permitted >> (32 * i));
        data[i].inheritable = static_cast<uint32_t>(inheritable >> (32 * i));
    }
    if (syscall(SYS_capset, &hdr, data) < 0) return -errno;
    return 0;
}

int raise_ambient_capabilities(uint64_t caps, int* failed) noexcept {
    for (int c = 0; c < 64; c++)
        if ((caps & cap_bit(c)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0) {
            if (failed) *failed = c;
            return -errno;
        }
    return 0;
}

}  // namespace mk::core
