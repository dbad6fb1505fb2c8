// libFuzzer target for parse_os_release(): the file comes from a guest or a pulled image.
// Besides crashes and sanitizer reports, checks what callers rely on: no key is empty or holds
// '=' or a newline, no value holds a newline (each field is one line of the file).
// Run: tests/fuzz/run.sh (FUZZ_TARGETS=os_release for this one only)
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/base/os_release.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    for (const auto& [k, v] : mk::core::parse_os_release(text)) {
        if (k.empty() || k.find('=') != std::string::npos || k.find('\n') != std::string::npos) __builtin_trap();
        if (v.find('\n') != std::string::npos) __builtin_trap();
        if (k.size() + v.size() > size) __builtin_trap();
    }
    return 0;
}
