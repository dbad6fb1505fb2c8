// Small string helpers shared by the parsers and everything that prints outside text. Pure,
// header-only.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace mk::core {

// The value of one hexadecimal digit (either case), or -1: the one hex decoder of the tree.
constexpr int hex_digit_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

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

// `s` with every control character (below 0x20, and DEL) written as \xNN, so that text from
// outside (a name, a URL, an os-release value) cannot break a line or send a terminal escape
// sequence wherever it is printed or logged. Everything else, backslashes included, stays as it is,
// so escaping twice changes nothing: any layer may escape what it passes on.
inline std::string escape_control_chars(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if (c < 0x20 || c == 0x7f) {
            out += "\\x";
            out += "0123456789abcdef"[c >> 4];
            out += "0123456789abcdef"[c & 15];
        } else {
            out += ch;
        }
    }
    return out;
}

}  // namespace mk::core
