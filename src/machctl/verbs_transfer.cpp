// Image transfer verbs against org.freedesktop.import1 (machd or systemd-importd 252):
// pull-tar/raw, import-tar/raw/fs, export-tar/raw, list-transfers, cancel-transfer.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "bus/import_client.hpp"
#include "core/base/error.hpp"
#include "core/base/unique_fd.hpp"
#include "machctl/verbs.hpp"

namespace mk::machctl {
namespace {

using bus::ImportClient;

std::string base_name(std::string s) {
    while (s.size() > 1 && s.back() == '/') s.pop_back();
    if (auto q = s.find_first_of("?#"); q != std::string::npos && s.find("://") != std::string::npos) s.resize(q);
    auto slash = s.rfind('/');
    return slash == std::string::npos ? s : s.substr(slash + 1);
}

// "foo.tar.xz" -> "foo", as machinectl's image name from a file/URL.
std::string name_from(const std::string& path) {
    std::string n = base_name(path);
    for (const char* suffix : {".xz", ".gz", ".bz2", ".zst", ".tar", ".raw", ".qcow2", ".img"})
        if (n.size() > std::strlen(suffix) && n.ends_with(suffix)) n.resize(n.size() - std::strlen(suffix));
    if (n.empty()) throw Failure("Cannot determine the image name from '" + path + "', please specify one.");
    return n;
}

std::string format_from(const std::string& file) {
    if (file.ends_with(".xz")) return "xz";
    if (file.ends_with(".gz")) return "gzip";
    if (file.ends_with(".bz2")) return "bzip2";
    if (file.ends_with(".zst")) return "zstd";
    return "uncompressed";
}

double now_sec() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Waits for the transfer; a progress bar with rate and ETA on a terminal (stderr), quiet when
// piped or with -q. `total` is the byte size when known; else (pulls) the rate is the one the
// transfer's own "Got …% of URL. … at 1.2M/s." lines report, whose bytes only the helper sees.
int wait_transfer(Context& c, ImportClient& client, uint32_t id, uint64_t total) {
    bool bar = !c.opts.quiet && ::isatty(STDERR_FILENO);
    double start = now_sec();
    bool drew = false;
    std::string reported_rate;
    auto progress = [&](double p) {
        if (!bar || p < 0) return;
        double el = now_sec() - start;
        int width = 30, filled = static_cast<int>(std::lround(p * width));
        std::string b(static_cast<size_t>(filled), '#');
        b.append(static_cast<size_t>(width - filled), '.');
        std::string rate =
            total ? format_bytes(static_cast<uint64_t>(p * static_cast<double>(total) / (el > 0 ? el : 1))) + "/s"
            : reported_rate.empty() ? std::string("?B/s")
                                    : reported_rate;
        // Before the first percent there is no estimate yet: say so rather than draw nothing.
        std::string eta =
            p <= 0 ? std::string("?") : format_timespan(static_cast<uint64_t>((p < 1 ? el * (1 - p) / p : 0) * 1e6));
        std::fprintf(stderr, "\r[%s] %3d%% %s ETA %s   ", b.c_str(), static_cast<int>(p * 100), rate.c_str(), eta.c_str());
        drew = true;
    };
    std::string last_error;
    auto log = [&](uint32_t prio, const std::string& line) {
        if (prio <= 3) last_error = line;
        if (auto r = rate_of_status_line(line); !r.empty()) {
            reported_rate = r;
            if (bar) return;  // the bar shows it; the line would only scroll it away
        }
        if (!c.opts.quiet) {
            if (drew) std::fputs("\r\033[K", stderr);
            std::fprintf(stderr, "%s\n", line.c_str());
        }
    };
    std::string result = bus_call("Failed to wait for transfer", [&] { return client.wait(id, progress, log); });
    if (drew) std::fputs("\r\033[K", stderr);
    if (result == "done") {
        if (!c.opts.quiet) std::fprintf(stderr, "Transfer %u done.\n", id);
        return 0;
    }
    throw Failure("Transfer " + std::to_string(id) + " " + result + (last_error.empty() ? "." : ": " + last_error));
}

}  // namespace

int verb_pull(Context& c, const Args& a, bool raw) {
    const std::string& url = a[0];
    if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) throw Failure("URL '" + url + "' is not valid.");
    std::string name = a.size() > 1 ? a[1] : name_from(url);
    ImportClient client(c.opts.bus_target);
    uint32_t id = bus_call("Could not pull image",
                           [&] { return client.pull(raw ? "PullRaw" : "PullTar", url, name, c.opts.verify, c.opts.force); });
    if (!c.opts.quiet) std::fprintf(stderr, "Enqueued transfer job %u. Press C-c to continue download in background.\n", id);
    return wait_transfer(c, client, id, 0);
}

int verb_import(Context& c, const Args& a, const char* kind) {
    std::string file = a[0];
    bool fs = std::string(kind) == "fs";
    std::string name = a.size() > 1 ? a[1] : (file == "-" ? "" : name_from(file));
    if (name.empty()) throw Failure("Need either a path or an image name, please specify one.");
    core::UniqueFd fd(file == "-" ? ::fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3)
                                  : ::open(file.c_str(), (fs ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!fd) throw Failure("Failed to open " + file + ": " + std::strerror(errno));
    struct stat st {};
    uint64_t total = ::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) ? static_cast<uint64_t>(st.st_size) : 0;
    ImportClient client(c.opts.bus_target);
    const char* method = fs ? "ImportFileSystem" : std::string(kind) == "raw" ? "ImportRaw" : "ImportTar";
    uint32_t id = bus_call("Could not import image",
                           [&] { return client.import(method, fd.get(), name, c.opts.force, c.opts.read_only); });
    if (!c.opts.quiet) std::fprintf(stderr, "Enqueued transfer job %u. Press C-c to continue download in background.\n", id);
    return wait_transfer(c, client, id, total);
}

namespace {

uint64_t oci_flags(const Context& c) {
    return (c.opts.force ? 1 : 0) | (c.opts.read_only ? 2 : 0) | (c.opts.flatten ? uint64_t{1} << 32 : 0);
}

// "registry:5000/team/app:1.2@sha256:…" -> "app", the image name when none is given.
std::string name_from_ref(const std::string& ref) {
    std::string s = ref.substr(0, ref.find('@'));
    auto slash = s.rfind('/');
    if (slash != std::string::npos) s = s.substr(slash + 1);
    s = s.substr(0, s.find(':'));
    if (s.empty()) throw Failure("Cannot determine the image name from '" + ref + "', please specify one.");
    return s;
}

}  // namespace

int verb_pull_oci(Context& c, const Args& a) {
    std::string name = a.size() > 1 ? a[1] : name_from_ref(a[0]);
    ImportClient client(c.opts.bus_target);
    uint32_t id = bus_call("Could not pull image", [&] { return client.pull_oci(a[0], name, oci_flags(c)); });
    if (!c.opts.quiet) std::fprintf(stderr, "Enqueued transfer job %u. Press C-c to continue download in background.\n", id);
    return wait_transfer(c, client, id, 0);
}

int verb_import_oci(Context& c, const Args& a) {
    const std::string& src = a[0];
    std::string name = a.size() > 1 ? a[1] : name_from(src);
    for (const char* suffix : {".oci", ".oci-archive"})
        if (name.size() > std::strlen(suffix) && name.ends_with(suffix)) name.resize(name.size() - std::strlen(suffix));
    core::UniqueFd fd(::open(src.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    if (!fd) throw Failure("Failed to open " + src + ": " + std::strerror(errno));
    ImportClient client(c.opts.bus_target);
    uint32_t id = bus_call("Could not import image", [&] { return client.import_oci(fd.get(), name, oci_flags(c)); });
    if (!c.opts.quiet) std::fprintf(stderr, "Enqueued transfer job %u. Press C-c to continue download in background.\n", id);
    return wait_transfer(c, client, id, 0);
}

int verb_export(Context& c, const Args& a, bool raw) {
    const std::string& name = a[0];
    std::string file = a.size() > 1 ? a[1] : "-";
    std::string format = c.opts.format.empty() ? format_from(file) : c.opts.format;
    core::UniqueFd fd;
    if (file == "-") {
        if (::isatty(STDOUT_FILENO)) throw Failure("Refusing to write image to a terminal; specify a file or redirect.");
        fd = core::UniqueFd(::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3));
    } else {
        fd = core::UniqueFd(::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0666));
    }
    if (!fd) throw Failure("Failed to open " + file + ": " + std::strerror(errno));
    ImportClient client(c.opts.bus_target);
    uint32_t id = bus_call("Could not export image",
                           [&] { return client.export_(raw ? "ExportRaw" : "ExportTar", name, fd.get(), format); });
    if (!c.opts.quiet) std::fprintf(stderr, "Enqueued transfer job %u. Press C-c to continue download in background.\n", id);
    return wait_transfer(c, client, id, 0);
}

// machinectl 252 prints its table for every --output (with -o json without the legend, as its
// --output only switches the legend off here): byte-compatible output means the same table, not
// a JSON of our own invention.
int verb_list_transfers(Context& c, const Args&) {
    ImportClient client(c.opts.bus_target);
    auto list = bus_call("Could not get transfers", [&] { return client.list(); });
    bool legend = !c.opts.no_legend && !c.is_json();
    std::vector<std::vector<std::string>> rows;
    for (const auto& t : list)
        rows.push_back(
            {std::to_string(t.id), std::to_string(static_cast<int>(t.progress * 100)) + "%", t.type, t.local, t.remote});
    if (!rows.empty()) {
        bool no_legend = c.opts.no_legend;
        c.opts.no_legend = !legend;  // -o json turns the legend off here, as in 252
        c.print_table({"ID", "PERCENT", "TYPE", "LOCAL", "REMOTE"}, rows, TableStyle{{true, true}, true, true}, 4);
        c.opts.no_legend = no_legend;
    }
    if (legend) {
        if (rows.empty()) std::puts("No transfers.");
        else std::printf("\n%zu transfers listed.\n", list.size());
    }
    return 0;
}

int verb_cancel_transfer(Context& c, const Args& a) {
    (void)c;
    ImportClient client(c.opts.bus_target);
    for (const auto& s : a) {
        char* end = nullptr;
        unsigned long id = std::strtoul(s.c_str(), &end, 10);
        if (s.empty() || *end || id == 0 || id > UINT32_MAX) throw Failure("Failed to parse transfer id: " + s);
        bus_call("Could not cancel transfer", [&] { client.cancel(static_cast<uint32_t>(id)); });
    }
    return 0;
}

}  // namespace mk::machctl
