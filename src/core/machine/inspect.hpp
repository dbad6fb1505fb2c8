// Looking into a running machine: os-release (through /proc/LEADER/root, resolved inside that root
// so the guest's symlinks cannot point us at host files), addresses (from the leader's network
// namespace, in a short-lived child), UID shift (from /proc/LEADER/uid_map). The leader pidfd is
// checked after opening, so a recycled PID is never read as the machine.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/os_release.hpp"  // parse_os_release(), for callers of machine_os_release()
#include "core/base/unique_fd.hpp"
#include "core/machine/machine.hpp"

namespace mk::core {

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

// One line of /proc/PID/uid_map or gid_map.
struct IdRange {
    uint32_t inner, outer, count;
};
// Parses a uid_map/gid_map text; malformed lines are skipped. Pure.
std::vector<IdRange> parse_id_map(std::string_view text);

// machined's MapFromMachineUser/Group: the host ID of `inner` in the container (not_supported for
// non-containers, no_such_*_mapping if unmapped). `group` picks gid_map.
uint32_t map_from_machine(const Machine& m, uint32_t inner, bool group);
// The inner ID of host ID `outer` in `m`, if `m` maps it. Host range (< 0x10000) is refused by the caller.
std::optional<uint32_t> map_to_machine(const Machine& m, uint32_t outer, bool group);

// An O_DIRECTORY fd of the machine's root directory (its "/" as its processes see it).
UniqueFd open_machine_root(const Machine& m);

}  // namespace mk::core
