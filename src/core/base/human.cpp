#include "core/base/human.hpp"

#include <cstdio>

namespace mk::core {

std::string format_timespan(uint64_t usec) {
    struct Unit {
        const char* name;
        uint64_t usec;
    };
    static const Unit units[] = {{"y", 31557600ull * 1000000},
                                 {"month", 2629800ull * 1000000},
                                 {"w", 604800ull * 1000000},
                                 {"d", 86400ull * 1000000},
                                 {"h", 3600ull * 1000000},
                                 {"min", 60ull * 1000000},
                                 {"s", 1000000},
                                 {"ms", 1000},
                                 {"us", 1}};
    if (usec == 0) return "0";
    std::string out;
    int parts = 0;
    for (const auto& u : units) {
        if (usec < u.usec) continue;
        if (parts == 2) break;
        uint64_t n = usec / u.usec;
        usec %= u.usec;
        out += (out.empty() ? "" : " ") + std::to_string(n) + u.name;
        parts++;
        if (u.usec <= 1000000 && parts == 1 && u.usec >= 1000) break;  // "144ms", "3s": no finer unit
    }
    return out;
}

std::string format_bytes(uint64_t bytes) {
    if (bytes == UINT64_MAX) return "-";
    static const char* const suffix[] = {"B", "K", "M", "G", "T", "P", "E"};
    double v = static_cast<double>(bytes);
    int i = 0;
    while (v >= 1024 && i < 6) v /= 1024, i++;
    char buf[32];
    if (i == 0) snprintf(buf, sizeof buf, "%lluB", static_cast<unsigned long long>(bytes));
    else snprintf(buf, sizeof buf, "%.1f%s", v, suffix[i]);
    return buf;
}

}  // namespace mk::core
