// libFuzzer target: every parser of untrusted OCI input (core/image/oci_manifest). The first byte
// picks the parser; the only acceptable failure is UsageError. Invariants: a parsed manifest has
// at most kOciMaxLayers layers with valid digests, and the .nspawn text has no line that is
// neither a comment, a section nor a KEY=VALUE.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/base/error.hpp"
#include "core/image/oci_manifest.hpp"

using namespace mk::core;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
    try {
        switch (data[0] % 7) {
        case 0: {
            auto r = parse_oci_reference(in, default_oci_registry_config());
            if (r.repository.empty() || (r.tag.empty() && r.digest.empty())) abort();
            break;
        }
        case 1: {
            OciRegistryConfig c;
            parse_oci_registries_file(in, "fuzz.conf", c);
            for (const auto& r : c.registries)
                if (r.name.empty() || r.endpoint.empty()) abort();
            break;
        }
        case 2: {
            auto m = parse_oci_manifest(in);
            if (m.layers.size() > kOciMaxLayers) abort();
            for (const auto& l : m.layers)
                if (!oci_digest_is_valid(l.digest)) abort();
            break;
        }
        case 3: {
            auto idx = parse_oci_index(in);
            oci_choose_platform(idx, "amd64", "linux", nullptr);
            break;
        }
        case 4: {
            std::string s = oci_nspawn_settings(parse_oci_image_config(in));
            for (size_t i = 0, n; i < s.size(); i = n + 1) {
                n = s.find('\n', i);
                if (n == std::string::npos) abort();  // always newline-terminated
                std::string_view l(s.data() + i, n - i);
                if (!l.empty() && l[0] != '#' && l[0] != '[' && l.find('=') == std::string_view::npos) abort();
                for (char c : l)
                    if (static_cast<unsigned char>(c) < 0x20) abort();
            }
            break;
        }
        case 5: {
            auto c = parse_www_authenticate(in);
            if (c && !(c->realm.starts_with("http://") || c->realm.starts_with("https://"))) abort();
            break;
        }
        case 6:
            oci_doc_kind(in.substr(0, in.find('\n')), in);
            parse_oci_token_reply(in);
            break;
        }
    } catch (const UsageError&) {
    }
    return 0;
}
