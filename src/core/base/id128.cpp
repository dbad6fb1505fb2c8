#include "core/base/id128.hpp"

#include "core/base/strings.hpp"

namespace mk::core {
namespace {

bool is_dash_position(size_t i) { return i == 8 || i == 13 || i == 18 || i == 23; }

}  // namespace

std::string id128_to_string(const Id128& id, Id128Format format) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string s;
    s.reserve(36);
    for (size_t i = 0; i < id.size(); i++) {
        if (format == Id128Format::Uuid && (i == 4 || i == 6 || i == 8 || i == 10)) s += '-';
        s += kDigits[id[i] >> 4];
        s += kDigits[id[i] & 15];
    }
    return s;
}

std::optional<Id128> id128_from_string(std::string_view s) {
    if (s.size() != 32 && s.size() != 36) return std::nullopt;
    const bool dashed = s.size() == 36;
    Id128 id{};
    size_t n = 0;
    for (size_t i = 0; i < s.size();) {
        if (dashed && is_dash_position(i)) {
            if (s[i] != '-') return std::nullopt;
            i++;
            continue;
        }
        int hi = hex_digit_value(s[i]), lo = i + 1 < s.size() ? hex_digit_value(s[i + 1]) : -1;
        if (hi < 0 || lo < 0) return std::nullopt;
        id[n++] = static_cast<uint8_t>(hi << 4 | lo);
        i += 2;
    }
    return id;
}

}  // namespace mk::core
