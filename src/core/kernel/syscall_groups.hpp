// systemd's named syscall groups ("@file-system", "@known", ...): static data, thread-safe.
#pragma once

#include <span>
#include <string_view>

namespace mk::core {

struct SyscallGroup {
    std::string_view name;                    // with the leading '@'
    std::span<const std::string_view> items;  // syscall names, or "@group" for a nested group
};

// All groups, in systemd's order. "@known" is every syscall name systemd v252 knows of (any arch).
std::span<const SyscallGroup> syscall_groups();

}  // namespace mk::core
