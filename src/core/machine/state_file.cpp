#include "core/machine/state_file.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/base/names.hpp"

namespace mk::core {
namespace {

constexpr size_t kStateFileMax = 64 * 1024;

std::optional<std::string> read_small_file_at(int dir_fd, const char* name) {
    UniqueFd fd(::openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK));
    if (!fd) return std::nullopt;
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0 || !S_ISREG(st.st_mode)) return std::nullopt;
    try {
        return read_all(fd.get(), kStateFileMax, name);
    } catch (const std::system_error&) {
        return std::nullopt;
    }
}

bool parse_u64(std::string_view s, uint64_t& out) {
    if (s.empty() || s.size() > 20) return false;
    uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
        uint64_t nv = v * 10 + static_cast<uint64_t>(c - '0');
        if (nv / 10 != v) return false;
        v = nv;
    }
    out = v;
    return true;
}

}  // namespace

std::string cescape(std::string_view s) {
    std::string r;
    r.reserve(s.size());
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        switch (ch) {
        case '\a': r += "\\a"; break;
        case '\b': r += "\\b"; break;
        case '\f': r += "\\f"; break;
        case '\n': r += "\\n"; break;
        case '\r': r += "\\r"; break;
        case '\t': r += "\\t"; break;
        case '\v': r += "\\v"; break;
        case '\\': r += "\\\\"; break;
        case '"': r += "\\\""; break;
        case '\'': r += "\\'"; break;
        default:
            if (c < ' ' || c >= 127) {
                r += '\\';
                r += static_cast<char>('0' + (c >> 6));
                r += static_cast<char>('0' + ((c >> 3) & 7));
                r += static_cast<char>('0' + (c & 7));
            } else {
                r += ch;
            }
        }
    }
    return r;
}

std::string cunescape(std::string_view s) {
    std::string r;
    for (size_t i = 0; i < s.size(); i++) {
        if (s[i] != '\\' || i + 1 == s.size()) {
            r += s[i];
            continue;
        }
        char e = s[++i];
        switch (e) {
        case 'a': r += '\a'; break;
        case 'b': r += '\b'; break;
        case 'f': r += '\f'; break;
        case 'n': r += '\n'; break;
        case 'r': r += '\r'; break;
        case 't': r += '\t'; break;
        case 'v': r += '\v'; break;
        default:
            if (e >= '0' && e <= '3' && i + 2 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7' && s[i + 2] >= '0' &&
                s[i + 2] <= '7') {
                r += static_cast<char>((e - '0') << 6 | (s[i + 1] - '0') << 3 | (s[i + 2] - '0'));
                i += 2;
            } else {
                r += e;
            }
        }
    }
    return r;
}

std::string format_state_file(const Machine& m) {
    // Key order and formatting as machined 252's machine_save().
    std::string s = "# This is private data. Do not parse.\nNAME=" + m.name + "\n";
    if (!m.unit.empty()) s += "SCOPE=" + cescape(m.unit) + "\n";
    if (!m.scope_job.empty()) s += "SCOPE_JOB=" + m.scope_job + "\n";
    if (!m.service.empty()) s += "SERVICE=" + cescape(m.service) + "\n";
    if (!m.root_directory.empty()) s += "ROOT=" + cescape(m.root_directory) + "\n";
    if (m.has_id()) s += "ID=" + id128_to_string(m.id) + "\n";
    if (m.leader != 0) s += "LEADER=" + std::to_string(m.leader) + "\n";
    if (m.klass != MachineClass::unknown) s += "CLASS=" + std::string(to_string(m.klass)) + "\n";
    if (m.realtime_usec || m.monotonic_usec)
        s += "REALTIME=" + std::to_string(m.realtime_usec) + "\nMONOTONIC=" + std::to_string(m.monotonic_usec) + "\n";
    if (!m.netif.empty()) {
        s += "NETIF=";
        for (size_t i = 0; i < m.netif.size(); i++) {
            if (i) s += ' ';
            s += std::to_string(m.netif[i]);
        }
        s += '\n';
    }
    return s;
}

std::optional<Machine> parse_state_file(std::string_view name, std::string_view text) {
    Machine m;
    bool named = false;
    while (!text.empty()) {
        auto nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        if (line.empty() || line[0] == '#' || line[0] == ';') continue;
        auto eq = line.find('=');
        if (eq == std::string_view::npos) continue;
        std::string_view key = line.substr(0, eq), value = line.substr(eq + 1);
        uint64_t u = 0;
        if (key == "NAME") {
            if (value != name) return std::nullopt;
            named = true;
        } else if (key == "SCOPE") {
            m.unit = cunescape(value);
        } else if (key == "SERVICE") {
            m.service = cunescape(value);
        } else if (key == "ROOT") {
            m.root_directory = cunescape(value);
        } else if (key == "ID") {
            if (auto id = id128_from_string(value)) m.id = *id;
        } else if (key == "LEADER") {
            if (parse_u64(value, u) && u > 0 && u <= 0x7fffffff) m.leader = static_cast<pid_t>(u);
        } else if (key == "CLASS") {
            if (auto c = machine_class_from_string(value)) m.klass = *c;
        } else if (key == "REALTIME") {
            if (parse_u64(value, u)) m.realtime_usec = u;
        } else if (key == "MONOTONIC") {
            if (parse_u64(value, u)) m.monotonic_usec = u;
        } else if (key == "NETIF") {
            if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
            while (!value.empty()) {
                auto sp = value.find(' ');
                std::string_view word = value.substr(0, sp);
                value.remove_prefix(sp == std::string_view::npos ? value.size() : sp + 1);
                if (parse_u64(word, u) && u > 0 && u <= 0x7fffffff) m.netif.push_back(static_cast<int>(u));
            }
        }
    }
    if (!named) return std::nullopt;
    m.name = std::string(name);
    m.state = MachineState::running;
    return m;
}

namespace {
std::string ready_mark(const Machine& m) { return ".ready:" + m.name; }
}  // namespace

StateDir::StateDir(std::string path) : path_(std::move(path)) {
    if (::mkdir(path_.c_str(), 0755) < 0 && errno != EEXIST) throw_last_error("mkdir " + path_);
    dir_fd_ = UniqueFd(::open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir_fd_) throw_last_error("open " + path_);
}

void StateDir::save(const Machine& m) const {
    if (!machine_name_is_valid(m.name)) throw_errno(EINVAL, "invalid machine name for state file");
    // Unique per process and call; O_EXCL catches the rest (a stale file from a crashed machd).
    static unsigned counter = 0;
    char suffix[32];
    std::snprintf(suffix, sizeof suffix, "%x.%x", static_cast<unsigned>(::getpid()), ++counter);
    std::string tmp = ".#" + m.name + suffix;
    UniqueFd fd(::openat(dir_fd_.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!fd) throw_last_error("create " + path_ + "/" + tmp);
    try {
        if (::fchmod(fd.get(), 0644) < 0) throw_last_error("fchmod " + tmp);  // umask must not narrow it
        write_all_or_throw(fd.get(), format_state_file(m), "write " + tmp);
        fd.reset();
        if (::renameat(dir_fd_.get(), tmp.c_str(), dir_fd_.get(), m.name.c_str()) < 0)
            throw_last_error("rename " + tmp + " to " + m.name);
    } catch (...) {
        ::unlinkat(dir_fd_.get(), tmp.c_str(), 0);
        throw;
    }
    // A new registration of the name starts unready, whatever an earlier machd left behind.
    if (!m.ready) ::unlinkat(dir_fd_.get(), ready_mark(m).c_str(), 0);
    if (!m.unit.empty() && m.unit.find('/') == std::string::npos) {
        std::string link = "unit:" + m.unit;
        ::unlinkat(dir_fd_.get(), link.c_str(), 0);
        if (::symlinkat(m.name.c_str(), dir_fd_.get(), link.c_str()) < 0) throw_last_error("symlink " + link);
    }
}

void StateDir::remove(const Machine& m) const {
    if (!m.unit.empty() && m.unit.find('/') == std::string::npos) {
        // Only our own link: another machine may have claimed the unit since.
        std::string link = "unit:" + m.unit;
        char target[256];
        ssize_t n = ::readlinkat(dir_fd_.get(), link.c_str(), target, sizeof target - 1);
        if (n >= 0 && std::string_view(target, static_cast<size_t>(n)) == m.name) ::unlinkat(dir_fd_.get(), link.c_str(), 0);
    }
    if (machine_name_is_valid(m.name)) {
        ::unlinkat(dir_fd_.get(), m.name.c_str(), 0);
        ::unlinkat(dir_fd_.get(), ready_mark(m).c_str(), 0);
    }
}

void StateDir::mark_ready(const Machine& m) const {
    if (!machine_name_is_valid(m.name)) throw_errno(EINVAL, "invalid machine name for state file");
    UniqueFd fd(::openat(dir_fd_.get(), ready_mark(m).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!fd) throw_last_error("create " + path_ + "/" + ready_mark(m));
}

std::vector<Machine> StateDir::load_all() const {
    std::vector<Machine> result;
    int dup_fd = ::openat(dir_fd_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dup_fd < 0) throw_last_error("open " + path_);
    DIR* d = ::fdopendir(dup_fd);
    if (!d) {
        ::close(dup_fd);
        throw_last_error("fdopendir " + path_);
    }
    while (dirent* de = ::readdir(d)) {
        std::string_view n = de->d_name;
        if (n.starts_with(".") || n.starts_with("unit:") || !machine_name_is_valid(n)) continue;
        auto text = read_small_file_at(dir_fd_.get(), de->d_name);
        if (!text) continue;
        if (auto m = parse_state_file(n, *text)) {
            m->ready = ::faccessat(dir_fd_.get(), ready_mark(*m).c_str(), F_OK, AT_SYMLINK_NOFOLLOW) == 0;
            result.push_back(std::move(*m));
        }
    }
    ::closedir(d);
    return result;
}

}  // namespace mk::core
