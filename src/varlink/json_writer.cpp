#include "varlink/json_writer.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>

namespace mk::varlink {
namespace {

// The UTF-8 sequence at s[i] (a byte >= 0x80): its length if valid (RFC 3629: no overlongs, no
// surrogates, <= U+10FFFF); else the length of its maximal invalid subpart (Unicode's "substitution
// of maximal subparts"), which becomes one U+FFFD, as with nlohmann's error_handler_t::replace.
struct Utf8 {
    size_t length;
    bool valid;
};

Utf8 utf8_sequence(std::string_view s, size_t i) {
    auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    unsigned char c = b(i);
    size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (n == 0 || c > 0xF4) return {1, false};
    for (size_t k = 1; k < n; k++) {
        if (i + k >= s.size()) return {k, false};
        unsigned char lo = 0x80, hi = 0xBF;
        if (k == 1) {
            if (c == 0xE0) lo = 0xA0;       // overlong
            else if (c == 0xED) hi = 0x9F;  // surrogate
            else if (c == 0xF0) lo = 0x90;  // overlong
            else if (c == 0xF4) hi = 0x8F;  // > U+10FFFF
        }
        if (b(i + k) < lo || b(i + k) > hi) return {k, false};
    }
    return {n, true};
}

// Bytes that are copied as they are: printable ASCII other than '"' and '\\'. Runs of them are
// appended with one append each, not byte by byte: a record is mostly such runs.
constexpr bool plain(unsigned char c) { return c >= 0x20 && c < 0x80 && c != '"' && c != '\\'; }

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
    static const char hex[] = "0123456789abcdef";
    out.push_back('"');
    size_t i = 0;
    while (i < s.size()) {
        size_t run = i;
        while (run < s.size() && plain(static_cast<unsigned char>(s[run]))) run++;
        if (run > i) {
            out.append(s.data() + i, run - i);
            i = run;
            if (i == s.size()) break;
        }
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c >= 0x80) {
            Utf8 u = utf8_sequence(s, i);
            if (u.valid) out.append(s.substr(i, u.length));
            else out.append("\xEF\xBF\xBD");
            i += u.length;
            continue;
        }
        switch (c) {
        case '"': out.append("\\\""); break;
        case '\\': out.append("\\\\"); break;
        case '\n': out.append("\\n"); break;
        case '\t': out.append("\\t"); break;
        case '\r': out.append("\\r"); break;
        case '\b': out.append("\\b"); break;
        case '\f': out.append("\\f"); break;
        default:
            out.append("\\u00");
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 15]);
        }
        i++;
    }
    out.push_back('"');
}

void ObjectWriter::key(std::string_view k, std::string_view tail) {
    // `,"key":tail` with one append where it fits: a record is some sixty small pieces, and each
    // std::string::append is a call with its own capacity check (perf: half of List's CPU).
    char buf[96];
    if (k.size() + tail.size() + 4 > sizeof buf) {
        if (!first_) out_.push_back(',');
        first_ = false;
        out_.push_back('"');
        out_.append(k);
        out_.append("\":");
        out_.append(tail);
        return;
    }
    size_t n = 0;
    if (!first_) buf[n++] = ',';
    first_ = false;
    buf[n++] = '"';
    std::memcpy(buf + n, k.data(), k.size());
    n += k.size();
    buf[n++] = '"';
    buf[n++] = ':';
    if (!tail.empty()) std::memcpy(buf + n, tail.data(), tail.size());  // an empty one may be null
    n += tail.size();
    out_.append(buf, n);
}

ObjectWriter& ObjectWriter::string(std::string_view k, std::string_view value) {
    // Most values (names, units, ids) are short and need no escaping: then one append for all.
    char buf[66];
    if (value.size() + 2 <= sizeof buf &&
        std::all_of(value.begin(), value.end(), [](char c) { return plain(static_cast<unsigned char>(c)); })) {
        buf[0] = '"';
        std::memcpy(buf + 1, value.data(), value.size());
        buf[value.size() + 1] = '"';
        key(k, std::string_view(buf, value.size() + 2));
        return *this;
    }
    key(k);
    append_json_string(out_, value);
    return *this;
}

ObjectWriter& ObjectWriter::number(std::string_view k, uint64_t value) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, value);
    key(k, std::string_view(buf, static_cast<size_t>(r.ptr - buf)));
    return *this;
}

ObjectWriter& ObjectWriter::boolean(std::string_view k, bool value) {
    key(k, value ? "true" : "false");
    return *this;
}

ObjectWriter ObjectWriter::object(std::string_view k) {
    key(k, "{");
    return ObjectWriter(out_, Nested{});
}

ObjectWriter& ObjectWriter::raw(std::string_view k, std::string_view json) {
    key(k, json);
    return *this;
}

}  // namespace mk::varlink
