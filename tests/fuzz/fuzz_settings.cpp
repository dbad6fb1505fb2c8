// libFuzzer target: .nspawn parsing and merging. Any input may be rejected with UsageError; nothing
// else may escape, and a parsed file must apply to a SpawnSpec without surprises.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/spawn/settings.hpp"

using namespace mk::core;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    Settings s;
    try {
        s = parse_settings(text, "fuzz.nspawn");
    } catch (const UsageError& e) {
        if (std::string_view(e.what()).find('\n') != std::string_view::npos) abort();  // one line
        return 0;
    }
    if (s.warnings.size() > kSettingsWarningsMax + 1) abort();
    for (const auto& w : s.warnings)
        if (w.find('\n') != std::string::npos) abort();

    SpawnSpec untrusted;
    std::vector<std::string> warnings;
    apply_settings(s, untrusted, false, warnings, {}, SettingsMode::Yes);
    // An untrusted file can never add host mounts, capabilities or network interfaces.
    if (!untrusted.binds.empty() || !untrusted.overlays.empty() || untrusted.capabilities_add != 0 ||
        untrusted.capabilities_all || !untrusted.network_interfaces.empty() || !untrusted.bind_users.empty() ||
        !untrusted.pivot_root_new.empty() || untrusted.ephemeral)
        abort();

    SpawnSpec trusted;
    apply_settings(s, trusted, true, warnings, {}, SettingsMode::Override);
    for (const auto& b : trusted.binds)
        if (b.destination.empty() || b.destination[0] != '/') abort();
    return 0;
}
