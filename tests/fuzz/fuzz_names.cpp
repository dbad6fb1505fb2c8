// libFuzzer target: naming rules. Checks invariants, not just absence of crashes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/base/names.hpp"

using namespace mk::core;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view s(reinterpret_cast<const char*>(data), size);

    bool machine_ok = machine_name_is_valid(s);
    if (machine_ok && (s.empty() || s.size() > kHostNameMax || s.find('/') != std::string_view::npos)) abort();
    bool image_ok = image_name_is_valid(s);
    if (image_ok && (s.empty() || s.find('/') != std::string_view::npos || s == "." || s == "..")) abort();
    // Every valid machine name is a valid image name (machines live in images of the same name).
    if (machine_ok && !image_ok) abort();

    std::string derived = machine_name_from_path(s);
    if (!derived.empty() && !machine_name_is_valid(derived)) abort();

    // bus_label_escape is injective and reversible.
    std::string escaped = bus_label_escape(s);
    auto back = bus_label_unescape(escaped);
    if (!back || *back != s) abort();
    for (char c : escaped)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) abort();

    // Unescaping arbitrary input must not crash; when it succeeds, escaping gives the input back
    // only for canonical escapings, so just exercise it.
    (void)bus_label_unescape(s);

    std::string unit = unit_name_escape(s);
    if (unit.find('/') != std::string::npos) abort();
    (void)machine_scope_name(s);
    return 0;
}
