// libFuzzer target: the guest systemd version parsers (bytes from an untrusted tree: file names and
// the systemd binary). Checks invariants, not just absence of crashes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/spawn/guest_systemd.hpp"

using namespace mk::core;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view s(reinterpret_cast<const char*>(data), size);

    if (auto v = systemd_version_from_shared_lib_name(s)) {
        if (*v == 0 || *v > 999999 || !s.starts_with("libsystemd-shared-") || !s.ends_with(".so")) abort();
    }

    // The banner found in one piece is the banner found in any two or three pieces.
    auto whole = systemd_version_from_banner(s);
    if (whole && (*whole == 0 || *whole > 999999)) abort();
    size_t a = size ? data[0] % (size + 1) : 0;
    size_t b = size > 1 ? a + data[size - 1] % (size - a + 1) : a;
    SystemdBannerScanner split;
    split.feed(s.substr(0, a));
    split.feed(s.substr(a, b - a));
    split.feed(s.substr(b));
    if (split.version() != whole) abort();
    return 0;
}
