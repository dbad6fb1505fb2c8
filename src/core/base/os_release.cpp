#include "core/base/os_release.hpp"

namespace mk::core {

std::map<std::string, std::string> parse_os_release(std::string_view text) {
    std::map<std::string, std::string> out;
    while (!text.empty()) {
        auto nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
        if (line.empty() || line[0] == '#') continue;
        auto eq = line.find('=');
        if (eq == std::string_view::npos || eq == 0) continue;
        std::string key(line.substr(0, eq));
        std::string_view raw = line.substr(eq + 1);
        std::string value;
        char quote = 0;
        size_t keep = 0;  // quoted or escaped characters are never trimmed
        for (size_t i = 0; i < raw.size(); i++) {
            char c = raw[i];
            if (quote) {
                if (c == quote) quote = 0;
                else if (c == '\\' && quote == '"' && i + 1 < raw.size()) value += raw[++i];
                else value += c;
                keep = value.size();
            } else if (c == '"' || c == '\'') {
                quote = c;
            } else if (c == '\\' && i + 1 < raw.size()) {
                value += raw[++i];
                keep = value.size();
            } else if (c == '#' && (i == 0 || raw[i - 1] == ' ')) {
                break;
            } else {
                value += c;
            }
        }
        while (!quote && value.size() > keep && (value.back() == ' ' || value.back() == '\t')) value.pop_back();
        out[key] = value;
    }
    return out;
}

}  // namespace mk::core
