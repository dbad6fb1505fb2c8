// libFuzzer target: option value parsers. The first byte picks the parser; errors must be
// UsageError with a one-line message, results must satisfy the documented invariants.
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/base/id128.hpp"
#include "core/spawn/option_values.hpp"

using namespace mk::core;

namespace {

bool absolute_normalized(std::string_view p) {
    if (!p.empty() && p[0] == '+') p.remove_prefix(1);
    if (p.empty() || p[0] != '/') return false;
    if (p.size() > 1 && p.back() == '/') return false;
    return p.find("//") == std::string_view::npos && p.find("/../") == std::string_view::npos &&
           p.find("/./") == std::string_view::npos && !(p.size() >= 3 && p.substr(p.size() - 3) == "/..");
}

void check(bool ok) {
    if (!ok) abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    std::string_view v(reinterpret_cast<const char*>(data) + 1, size - 1);
    try {
        switch (data[0] % 19) {
        case 0: {
            auto b = parse_option_value("--bind=", v, [](std::string_view x) { return parse_bind(x, false); });
            check(absolute_normalized(b.source) && absolute_normalized(b.destination) && b.destination[0] == '/');
            break;
        }
        case 1: {
            auto o = parse_option_value("--overlay=", v, [](std::string_view x) { return parse_overlay(x, false); });
            check(!o.lower.empty() && absolute_normalized(o.destination) && o.destination[0] == '/');
            for (const auto& l : o.lower) check(absolute_normalized(l));
            check(o.upper.empty() || absolute_normalized(o.upper));
            break;
        }
        case 2: {
            auto o = parse_option_value("--overlay-ro=", v, [](std::string_view x) { return parse_overlay(x, true); });
            check(o.upper.empty() && !o.lower.empty());
            break;
        }
        case 3: {
            int sig = parse_option_value("--kill-signal=", v, parse_signal);
            check(sig > 0 && sig < _NSIG && parse_signal(signal_to_string(sig)) == sig);
            break;
        }
        case 4: (void)parse_option_value("--capability=", v, parse_capability_list); break;
        case 5: {
            auto id = parse_option_value("--uuid=", v, parse_uuid);
            check(parse_uuid(id128_to_string(id)) == id && parse_uuid(id128_to_string(id, Id128Format::Uuid)) == id);
            break;
        }
        case 6: {
            auto t = parse_option_value("--tmpfs=", v, parse_tmpfs);
            check(absolute_normalized(t.destination));
            break;
        }
        case 7: check(absolute_normalized(parse_option_value("--chdir=", v, parse_absolute_path))); break;
        case 8: (void)parse_option_value("--setenv=", v, parse_env_assignment); break;
        case 9: (void)parse_option_value("Parameters=", v, split_words); break;
        case 10: (void)parse_option_value("--port=", v, parse_port); break;
        case 11: {
            auto r = parse_option_value("--rlimit=", v, parse_rlimit_value);
            check(r.soft <= r.hard);
            break;
        }
        case 12: (void)parse_option_value("--cpu-affinity=", v, parse_cpu_set); break;
        case 13: {
            auto [resource, limit] = parse_option_value("--rlimit=", v, parse_rlimit);
            check(resource >= 0 && resource < static_cast<int>(kRlimitCount) && limit.soft <= limit.hard);
            break;
        }
        case 14: {
            auto c = parse_option_value("--set-credential=", v, parse_set_credential);
            check(credential_name_is_valid(c.id) && c.data.size() <= kCredentialSizeMax);
            break;
        }
        case 15: {
            auto [id, path] = parse_option_value("--load-credential=", v, parse_load_credential);
            check(credential_name_is_valid(id) && !path.empty());
            break;
        }
        case 16: {
            auto h = parse_option_value("--root-hash=", v, parse_root_hash);
            check(h.size() >= 32 && h.size() % 2 == 0 && parse_root_hash(h) == h);
            break;
        }
        case 17: {
            auto sig = parse_option_value("--root-hash-sig=", v, parse_root_hash_sig);
            check(sig.starts_with("base64:") || absolute_normalized(sig));
            break;
        }
        case 18: (void)parse_option_value("--selinux-context=", v, parse_selinux_label); break;
        }
    } catch (const UsageError& e) {
        if (std::string_view(e.what()).find('\n') != std::string_view::npos) abort();
    }
    return 0;
}
