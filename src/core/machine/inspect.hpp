// Looking into a running machine: os-release (through /proc/LEADER/root, resolved inside that root
// so the guest's symlinks cannot point us at host files), addresses (from the leader's network
// namespace, in a short-lived child), UID shift (from /proc/LEADER/uid_map). The leader pidfd is
// checked after opening, so a recycled PID is never read as the machine.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/machine/machine.hpp"

namespace mk::core {

// os-release(5) / env-file syntax: KEY=value, quotes, backslash escapes, comments. Pure.
std::map<std::string, std::string> parse_os_release(std::string_view text);

std::map<std::string, std::string> machine_os_release(const Machine& m);

struct MachineAddress {
    int family;                  // AF_INET or AF_INET6
    std::vector<uint8_t> bytes;  // 4 or 16
};
// Throws MachineErrc::no_private_networking if the machine shares machd's network namespace.
std::vector<MachineAddress> machine_addresses(const Machine& m);

// 0 for the host or an identity map; the shift for a single "0 SHIFT >=65534" line with equal
// uid/gid maps; not_supported otherwise (machined's "complex UID/GID mapping").
uint32_t machine_uid_shift(const Machine& m);

}  // namespace mk::core
