// Sizes and durations for people, as systemd prints them (format_bytes(), format_timespan()):
// shared by machctl's tables and the transfer helper's progress lines. Pure.
#pragma once

#include <cstdint>
#include <string>

namespace mk::core {

// "144ms", "3min 2s", "2h 5min" (two most significant units, like systemd's format_timespan).
std::string format_timespan(uint64_t usec);
// "1.5G", "512B" (base 1024), "-" for UINT64_MAX.
std::string format_bytes(uint64_t bytes);

}  // namespace mk::core
