#include "machctl/journal.hpp"

#include <sys/stat.h>
#include <systemd/sd-journal.h>

#include <ctime>
#include <memory>

namespace mk::machctl {

namespace {

bool is_dir(const std::string& p) {
    struct stat st {};
    return !p.empty() && ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string field(sd_journal* j, const char* name) {
    const void* data = nullptr;
    size_t len = 0;
    if (sd_journal_get_data(j, name, &data, &len) < 0) return {};
    std::string s(static_cast<const char*>(data), len);
    auto eq = s.find('=');
    return eq == std::string::npos ? std::string() : s.substr(eq + 1);
}

}  // namespace

std::string machine_journal_dir(const std::string& id, const std::string& root) {
    if (id.size() != 32) return {};
    std::string host = "/var/log/journal/" + id;
    if (is_dir(host)) return host;  // also guest mode's symlink into the tree
    std::string guest = root.empty() || root == "/" ? std::string() : root + "/var/log/journal/" + id;
    return is_dir(guest) ? guest : std::string();
}

std::vector<std::string> last_journal_lines(const std::string& dir, unsigned lines) {
    std::vector<std::string> out;
    if (dir.empty() || lines == 0) return out;
    sd_journal* raw = nullptr;
    if (sd_journal_open_directory(&raw, dir.c_str(), 0) < 0) return out;
    std::unique_ptr<sd_journal, decltype(&sd_journal_close)> j(raw, sd_journal_close);
    if (sd_journal_seek_tail(j.get()) < 0) return out;
    // From the tail, back `lines` entries onto the oldest one shown; then forward over the rest.
    int back = sd_journal_previous_skip(j.get(), lines);
    for (int i = 0; i < back && (i == 0 || sd_journal_next(j.get()) > 0); i++) {
        uint64_t usec = 0;
        sd_journal_get_realtime_usec(j.get(), &usec);
        time_t t = static_cast<time_t>(usec / 1000000);
        struct tm tm {};
        localtime_r(&t, &tm);
        char when[32];
        strftime(when, sizeof when, "%b %d %H:%M:%S", &tm);
        std::string ident = field(j.get(), "SYSLOG_IDENTIFIER");
        if (ident.empty()) ident = field(j.get(), "_COMM");
        std::string pid = field(j.get(), "_PID");
        std::string line = std::string(when) + " " + field(j.get(), "_HOSTNAME") + " " + ident;
        if (!pid.empty()) line += "[" + pid + "]";
        std::string msg = field(j.get(), "MESSAGE");
        // One entry, one line: journalctl's short output indents continuation lines; ours keeps them apart.
        for (auto& ch : msg)
            if (ch == '\n') ch = ' ';
        out.push_back(line + ": " + msg);
    }
    return out;
}

}  // namespace mk::machctl
