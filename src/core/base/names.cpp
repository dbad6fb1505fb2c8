#include "core/base/names.hpp"

#include <cstdint>

#include "core/base/strings.hpp"

namespace mk::core {
namespace {

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_ldh(char c) { return is_alpha(c) || is_digit(c) || c == '-'; }
char hexchar(unsigned v) { return "0123456789abcdef"[v & 15]; }

}  // namespace

bool machine_name_is_valid(std::string_view name) {
    if (name.empty() || name.size() > kHostNameMax) return false;
    if (name == ".host") return false;
    bool label_start = true;  // at the first character of a label
    char prev = 0;
    for (char c : name) {
        if (c == '.') {
            if (label_start || prev == '-') return false;  // empty label, or label ending in '-'
            label_start = true;
        } else {
            if (!is_ldh(c)) return false;
            if (label_start && c == '-') return false;
            label_start = false;
        }
        prev = c;
    }
    return !label_start && prev != '-';  // no trailing dot, no trailing '-'
}

bool utf8_is_valid(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        auto c = static_cast<unsigned char>(s[i]);
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else return false;
        if (i + len > s.size()) return false;
        for (size_t k = 1; k < len; k++) {
            auto cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        // Overlong forms, surrogates and values above U+10FFFF are invalid.
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return false;
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += len;
    }
    return true;
}

bool image_name_is_valid(std::string_view name) {
    if (name.empty() || name.size() > 255) return false;
    if (name == "." || name == "..") return false;
    if (name.starts_with(".#")) return false;
    for (char c : name) {
        auto u = static_cast<unsigned char>(c);
        if (c == '/' || u < 0x20 || u == 0x7f) return false;
    }
    return utf8_is_valid(name);
}

std::string machine_name_from_path(std::string_view path) {
    while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
    if (auto slash = path.rfind('/'); slash != std::string_view::npos) path.remove_prefix(slash + 1);
    if (path.ends_with(".raw")) path.remove_suffix(4);
    else if (path.ends_with(".mstack")) path.remove_suffix(7);  // an OCI layer stack (NAME.mstack)

    // Like systemd's hostname_cleanup(): keep LDH characters, collapse separators, trim the ends.
    std::string out;
    bool after_dot = true, after_hyphen = false;
    for (char c : path) {
        if (out.size() >= kHostNameMax) break;
        if (c == '.') {
            if (after_dot || after_hyphen) continue;
            out += '.';
            after_dot = true;
            after_hyphen = false;
        } else if (c == '-') {
            if (after_dot) continue;
            out += '-';
            after_hyphen = true;
        } else if (is_ldh(c)) {
            out += c;
            after_dot = after_hyphen = false;
        }
    }
    while (!out.empty() && (out.back() == '-' || out.back() == '.')) out.pop_back();
    if (!machine_name_is_valid(out)) return {};
    return out;
}

std::string unit_name_escape(std::string_view s) {
    std::string out;
    out.reserve(s.size() * 2);
    for (size_t i = 0; i < s.size(); i++) {
        char c = s[i];
        if (c == '/') {
            out += '-';
        } else if (c == '-' || c == '\\' || (i == 0 && c == '.') ||
                   !(is_alpha(c) || is_digit(c) || c == ':' || c == '_' || c == '.')) {
            auto u = static_cast<unsigned char>(c);
            out += "\\x";
            out += hexchar(u >> 4);
            out += hexchar(u);
        } else {
            out += c;
        }
    }
    return out;
}

std::string machine_scope_name(std::string_view name) { return "machine-" + unit_name_escape(name) + ".scope"; }

void append_bus_label(std::string& out, std::string_view s) {
    if (s.empty()) {
        out += '_';
        return;
    }
    for (size_t i = 0; i < s.size(); i++) {
        char c = s[i];
        if (is_alpha(c) || (i > 0 && is_digit(c))) {
            out += c;
        } else {
            auto u = static_cast<unsigned char>(c);
            out += '_';
            out += hexchar(u >> 4);
            out += hexchar(u);
        }
    }
}

std::string bus_label_escape(std::string_view s) {
    std::string out;
    out.reserve(s.size() * 3);
    append_bus_label(out, s);
    return out;
}

std::optional<std::string> bus_label_unescape(std::string_view s) {
    if (s == "_") return std::string();
    std::string out;
    for (size_t i = 0; i < s.size(); i++) {
        if (s[i] == '_') {
            if (i + 2 >= s.size()) return std::nullopt;
            int a = hex_digit_value(s[i + 1]), b = hex_digit_value(s[i + 2]);
            if (a < 0 || b < 0) return std::nullopt;
            out += static_cast<char>((a << 4) | b);
            i += 2;
        } else {
            out += s[i];
        }
    }
    return out;
}

}  // namespace mk::core
