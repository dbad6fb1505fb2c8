// libFuzzer target: the --oci-bundle= config.json front end. Any input either parses into a
// SpawnSpec that satisfies the invariants the launcher relies on, or is refused with a one-line
// UsageError; nothing else may escape (nlohmann's exceptions included).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/base/error.hpp"
#include "core/spawn/oci_config.hpp"

using namespace mk::core;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        SpawnSpec s = parse_oci_config(text, "/bundle");
        if (s.directory.empty() || s.directory[0] != '/' || s.argv.empty()) abort();
        for (const auto& b : s.binds)
            if (b.destination.empty() || b.destination[0] != '/' || b.destination == "/") abort();
        for (const auto& r : s.rlimits)
            if (r && r->soft > r->hard) abort();
    } catch (const UsageError& e) {
        if (std::string_view(e.what()).find('\n') != std::string_view::npos) abort();
    }
    return 0;
}
