// The one 16-byte ID: machine IDs, container UUIDs, machined's Machine.Id. One type and one codec,
// as systemd's sd_id128_t (the tree had Uuid and MachineId, three hex codecs and two printers).
// Pure, thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mk::core {

using Id128 = std::array<uint8_t, 16>;

enum class Id128Format {
    Plain,  // 32 lowercase hex digits: machined, /etc/machine-id, journald's directories
    Uuid,   // 8-4-4-4-12 lowercase: /run/host/container-uuid, $container_uuid
};

std::string id128_to_string(const Id128& id, Id128Format format = Id128Format::Plain);

// 32 hex digits or the 8-4-4-4-12 form, either case, as sd_id128_from_string(); nothing else (no
// blanks, no newline). The all-zero ID parses: whether it means "unset" is the caller's call.
std::optional<Id128> id128_from_string(std::string_view s);

// machined's SD_ID128_NULL, "no ID".
constexpr bool id128_is_null(const Id128& id) {
    for (uint8_t b : id)
        if (b) return false;
    return true;
}

}  // namespace mk::core
