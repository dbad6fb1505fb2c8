#include "machctl/output.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <climits>
#include <ctime>
#include <stdexcept>

#include "core/base/error.hpp"

namespace mk::machctl {

std::string format_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows,
                         bool legend) {
    std::vector<size_t> width(header.size(), 0);
    auto measure = [&](const std::vector<std::string>& r) {
        for (size_t i = 0; i < r.size() && i < width.size(); i++) width[i] = std::max(width[i], r[i].size());
    };
    if (legend) measure(header);
    for (const auto& r : rows) measure(r);
    std::string out;
    auto line = [&](const std::vector<std::string>& r) {
        std::string l;
        for (size_t i = 0; i < r.size() && i < width.size(); i++) {
            l += r[i];
            if (i + 1 < r.size()) l += std::string(width[i] - r[i].size() + 1, ' ');
        }
        while (!l.empty() && l.back() == ' ') l.pop_back();
        out += l + "\n";
    };
    if (legend) line(header);
    for (const auto& r : rows) line(r);
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
            }
            else if constexpr (std::is_same_v<T, int64_t>) return std::to_string(v);
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

nlohmann::json property_json(const bus::Property& p) {
    return std::visit(
        [&](const auto& v) -> nlohmann::json {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, std::vector<uint8_t>>) return hex(v);
            else return nlohmann::json(v);
        },
        p.value);
}

std::string format_json(const nlohmann::json& records, Output mode) {
    // Invalid UTF-8 from a guest (os-release, names) must not make the output invalid JSON.
    constexpr auto handler = nlohmann::json::error_handler_t::replace;
    switch (mode) {
    case Output::json_pretty: return records.dump(2, ' ', false, handler) + "\n";
    case Output::json_seq: {
        std::string s;
        if (records.is_array())
            for (const auto& r : records) s += "\x1e" + r.dump(-1, ' ', false, handler) + "\n";
        else
            s = "\x1e" + records.dump(-1, ' ', false, handler) + "\n";
        return s;
    }
    default: return records.dump(-1, ' ', false, handler) + "\n";
    }
}

}  // namespace mk::machctl
