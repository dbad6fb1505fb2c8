#include "runtime/log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cstdio>

#include "core/base/unique_fd.hpp"
#include "core/oci/state.hpp"

namespace mk::runtime {
namespace {

core::UniqueFd g_log;
LogFormat g_format = LogFormat::Text;
bool g_debug = false;

void emit(std::string_view level, std::string_view msg, bool to_stderr) {
    if (to_stderr) fprintf(stderr, "machrun: %.*s\n", static_cast<int>(msg.size()), msg.data());
    if (!g_log) return;
    std::string line = format_log_line(g_format, level, msg, core::rfc3339_now());
    (void)!::write(g_log.get(), line.data(), line.size());  // one write: O_APPEND keeps lines whole
}

}  // namespace

std::string format_log_line(LogFormat f, std::string_view level, std::string_view msg, std::string_view time) {
    if (f == LogFormat::Json) {
        nlohmann::json j = {{"level", level}, {"msg", msg}, {"time", time}};
        return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    }
    // logrus's text formatter: key=value, values with spaces or quotes quoted as Go's %q.
    std::string quoted = nlohmann::json(std::string(msg)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return "time=\"" + std::string(time) + "\" level=" + std::string(level) + " msg=" + quoted + "\n";
}

void open_log(const GlobalOptions& g) {
    g_format = g.log_format;
    g_debug = g.debug;
    if (g.log.empty()) return;
    g_log.reset(::open(g.log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600));
    if (!g_log) fprintf(stderr, "machrun: cannot open the log %s: %m; logging to stderr only\n", g.log.c_str());
}

void log_error(std::string_view msg) { emit("error", msg, true); }
void log_warning(std::string_view msg) { emit("warning", msg, true); }
void log_debug(std::string_view msg) {
    if (g_debug) emit("debug", msg, true);
}

}  // namespace mk::runtime
