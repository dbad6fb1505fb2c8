// Small string helpers shared by the parsers. Pure, header-only.
#pragma once

#include <string_view>
#include <vector>

namespace mk::core {

// Splits `s` at every `sep`; empty fields are kept ("a::b" -> "a", "", "b"; "" -> one empty field).
inline std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    size_t i = 0;
    for (;;) {
        size_t j = s.find(sep, i);
        if (j == std::string_view::npos) {
            out.push_back(s.substr(i));
            return out;
        }
        out.push_back(s.substr(i, j - i));
        i = j + 1;
    }
}

// The lines of `text` without their '\n' (a final line without one included).
inline std::vector<std::string_view> lines(std::string_view text) {
    std::vector<std::string_view> out = split(text, '\n');
    if (!out.empty() && out.back().empty()) out.pop_back();
    return out;
}

}  // namespace mk::core
