#include "machctl/output.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <cfloat>
#include <climits>
#include <ctime>
#include <stdexcept>

#include "core/base/error.hpp"

namespace mk::machctl {

size_t columns_of(std::string_view s) {
    size_t n = 0;
    for (unsigned char c : s)
        if ((c & 0xc0) != 0x80) n++;
    return n;
}

namespace {

std::vector<std::string> cell_lines(const std::string& cell) {
    std::vector<std::string> out;
    size_t pos = 0;
    for (;;) {
        auto nl = cell.find('\n', pos);
        out.push_back(cell.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos));
        if (nl == std::string::npos) return out;
        pos = nl + 1;
    }
}

}  // namespace

std::string format_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows,
                         bool legend, const TableStyle& style) {
    std::vector<size_t> width(header.size(), 0);
    auto measure = [&](const std::vector<std::string>& r) {
        for (size_t i = 0; i < r.size() && i < width.size(); i++)
            for (const auto& l : cell_lines(r[i])) width[i] = std::max(width[i], columns_of(l));
    };
    if (legend || style.measure_hidden_header) measure(header);
    for (const auto& r : rows) measure(r);
    std::string out;
    // A multi-line cell (machinectl's addresses, one per line) makes its row that many lines high;
    // the other cells of the row are empty on the extra lines.
    auto right = [&](size_t i) { return i < style.right.size() && style.right[i]; };
    auto line = [&](const std::vector<std::string>& r, bool is_header) {
        std::vector<std::vector<std::string>> cells;
        size_t height = 1;
        for (const auto& c : r) {
            cells.push_back(cell_lines(c));
            height = std::max(height, cells.back().size());
        }
        for (size_t h = 0; h < height; h++) {
            std::string l;
            for (size_t i = 0; i < cells.size() && i < width.size(); i++) {
                std::string text = h < cells[i].size() ? cells[i][h] : "";
                std::string pad(width[i] - columns_of(text), ' ');
                bool last = i + 1 == cells.size();
                if (right(i) && !is_header) l += pad + text;
                else l += text + (last ? (is_header && style.pad_header ? pad : "") : pad);
                if (!last) l += ' ';
            }
            if (!(is_header && style.pad_header))
                while (!l.empty() && l.back() == ' ') l.pop_back();
            out += l + "\n";
        }
    };
    if (legend) line(header, true);
    for (const auto& r : rows) line(r, false);
    return out;
}

std::string format_timestamp(uint64_t usec) {
    if (usec == 0 || usec == UINT64_MAX) return "n/a";
    time_t t = static_cast<time_t>(usec / 1000000);
    struct tm tm {};
    localtime_r(&t, &tm);
    char buf[64];
    strftime(buf, sizeof buf, "%a %Y-%m-%d %H:%M:%S %Z", &tm);
    return buf;
}

uint64_t parse_bytes(const std::string& s) {
    if (s == "infinity" || s == "-" || s == "none") return UINT64_MAX;
    std::string v = s;
    uint64_t mult = 1;
    if (!v.empty() && v.back() == 'B') v.pop_back();
    if (!v.empty()) {
        switch (v.back()) {
        case 'K': mult = 1ull << 10; break;
        case 'M': mult = 1ull << 20; break;
        case 'G': mult = 1ull << 30; break;
        case 'T': mult = 1ull << 40; break;
        case 'P': mult = 1ull << 50; break;
        case 'E': mult = 1ull << 60; break;
        default: break;
        }
        if (mult != 1) v.pop_back();
    }
    if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos || v.size() > 19)
        throw core::UsageError("Failed to parse size: " + s);
    uint64_t n = std::stoull(v);
    if (n > UINT64_MAX / mult) throw core::UsageError("Size too large: " + s);
    return n * mult;
}

std::string rate_of_status_line(const std::string& line) {
    if (!line.starts_with("Got ") || !line.ends_with("/s.")) return {};
    auto at = line.rfind(" at ");
    if (at == std::string::npos) at = line.rfind("At ");
    if (at == std::string::npos) return {};
    auto from = line.find_first_not_of(' ', line.find(' ', at + 1));
    return from == std::string::npos ? std::string() : line.substr(from, line.size() - 1 - from);
}

std::string hex(const std::vector<uint8_t>& bytes) {
    static const char digits[] = "0123456789abcdef";
    std::string s;
    for (uint8_t b : bytes) s += digits[b >> 4], s += digits[b & 15];
    return s;
}

std::string address_to_string(const bus::Address& a) {
    char buf[INET6_ADDRSTRLEN] = {};
    if ((a.family == AF_INET && a.bytes.size() == 4) || (a.family == AF_INET6 && a.bytes.size() == 16))
        if (inet_ntop(a.family, a.bytes.data(), buf, sizeof buf)) return buf;
    return "?";
}

namespace {
// As systemd's bus_print_property(): "...Timestamp" is a wall-clock time, "Limit..." at
// UINT64_MAX is "infinity", everything else the number.
bool is_timestamp(const bus::Property& p) { return p.signature == "t" && p.name.ends_with("Timestamp"); }
bool is_infinite_limit(const bus::Property& p, uint64_t v) { return p.name.starts_with("Limit") && v == UINT64_MAX; }
}  // namespace

std::string property_text(const bus::Property& p) {
    return std::visit(
        [&](const auto& v) -> std::string {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, std::string>) return v;
            else if constexpr (std::is_same_v<T, uint64_t>) {
                if (is_timestamp(p)) return v ? format_timestamp(v) : "";
                return is_infinite_limit(p, v) ? "infinity" : std::to_string(v);
            } else if constexpr (std::is_same_v<T, int64_t>) return std::to_string(v);
            else if constexpr (std::is_same_v<T, bool>) return v ? "yes" : "no";
            else if constexpr (std::is_same_v<T, double>) return std::to_string(v);
            else if constexpr (std::is_same_v<T, std::vector<uint8_t>>) return hex(v);
            else {
                std::string s;
                for (const auto& x : v) {
                    if (!s.empty()) s += ' ';
                    if constexpr (std::is_same_v<std::decay_t<decltype(x)>, std::string>) s += x;
                    else s += std::to_string(x);
                }
                return s;
            }
        },
        p.value);
}

json property_json(const bus::Property& p) {
    return std::visit(
        [&](const auto& v) -> json {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, std::vector<uint8_t>>) return hex(v);
            else return json(v);
        },
        p.value);
}

namespace {

// As systemd's json_format_string(): the escapes JSON needs, control characters (and DEL) as
// \u00xx in lower case, UTF-8 passed through; invalid UTF-8 (a guest's os-release) becomes U+FFFD
// so the output stays valid JSON.
void write_string(std::string& out, const std::string& s) {
    out += '"';
    for (size_t i = 0; i < s.size();) {
        auto c = static_cast<unsigned char>(s[i]);
        switch (c) {
        case '"':
            out += "\\\"";
            i++;
            continue;
        case '\\':
            out += "\\\\";
            i++;
            continue;
        case '\b':
            out += "\\b";
            i++;
            continue;
        case '\f':
            out += "\\f";
            i++;
            continue;
        case '\n':
            out += "\\n";
            i++;
            continue;
        case '\r':
            out += "\\r";
            i++;
            continue;
        case '\t':
            out += "\\t";
            i++;
            continue;
        default: break;
        }
        if (c < 0x20 || c == 0x7f) {
            static const char digits[] = "0123456789abcdef";
            out += "\\u00";
            out += digits[c >> 4];
            out += digits[c & 15];
            i++;
            continue;
        }
        if (c < 0x80) {
            out += static_cast<char>(c);
            i++;
            continue;
        }
        // A well-formed sequence (no overlongs, no surrogates, at most U+10FFFF) passes through.
        size_t n = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c <= 0xdf ? 2 : 0;
        bool good = n > 0 && i + n <= s.size();
        for (size_t k = 1; good && k < n; k++) good = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
        if (good) {
            auto c1 = static_cast<unsigned char>(s[i + 1]);
            if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f) || (c == 0xf0 && c1 < 0x90) || (c == 0xf4 && c1 > 0x8f))
                good = false;
        }
        if (good) {
            out.append(s, i, n);
            i += n;
        } else {
            out += "\xef\xbf\xbd";
            i++;
        }
    }
    out += '"';
}

// systemd's json_variant_dump(): compact "key":value, or pretty with tabs and "key" : value.
void write_value(std::string& out, const json& v, bool pretty, size_t depth) {
    auto newline_indent = [&](size_t d) {
        if (!pretty) return;
        out += '\n';
        out.append(d, '\t');
    };
    switch (v.type()) {
    case json::value_t::null: out += "null"; return;
    case json::value_t::boolean: out += v.get<bool>() ? "true" : "false"; return;
    case json::value_t::number_integer: out += std::to_string(v.get<int64_t>()); return;
    case json::value_t::number_unsigned: out += std::to_string(v.get<uint64_t>()); return;
    case json::value_t::number_float: {
        char buf[64];
        snprintf(buf, sizeof buf, "%.*e", DECIMAL_DIG, v.get<double>());  // as systemd 252 prints reals
        out += buf;
        return;
    }
    case json::value_t::string: write_string(out, v.get_ref<const std::string&>()); return;
    case json::value_t::array: {
        if (v.empty()) {
            out += "[]";
            return;
        }
        out += '[';
        bool first = true;
        for (const auto& e : v) {
            if (!first) out += ',';
            first = false;
            newline_indent(depth + 1);
            write_value(out, e, pretty, depth + 1);
        }
        newline_indent(depth);
        out += ']';
        return;
    }
    case json::value_t::object: {
        if (v.empty()) {
            out += "{}";
            return;
        }
        out += '{';
        bool first = true;
        for (const auto& [k, e] : v.items()) {
            if (!first) out += ',';
            first = false;
            newline_indent(depth + 1);
            write_string(out, k);
            out += pretty ? " : " : ":";
            write_value(out, e, pretty, depth + 1);
        }
        newline_indent(depth);
        out += '}';
        return;
    }
    default: out += "null"; return;  // binary, discarded: never built by machctl
    }
}

}  // namespace

std::string format_json(const json& records, Output mode, bool table) {
    std::string out;
    auto record = [&](const json& r) {
        if (mode == Output::json_seq) out += '\x1e';
        write_value(out, r, mode == Output::json_pretty, 0);
        out += '\n';
    };
    // A table is one record (machinectl 252's json-seq of list is the whole array); property
    // dumps of several objects are one record each.
    if (mode == Output::json_seq && !table && records.is_array())
        for (const auto& r : records) record(r);
    else record(records);
    return out;
}

}  // namespace mk::machctl
