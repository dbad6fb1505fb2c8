#include "core/spawn/option_values.hpp"

#include <linux/capability.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <cstring>
#include <set>

#include "core/base/id128.hpp"
#include "core/base/names.hpp"
#include "core/base/strings.hpp"
#include "core/base/string_table.hpp"
#include "core/kernel/capabilities.hpp"

namespace mk::core {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); i++)
        if (lower(a[i]) != lower(b[i])) return false;
    return true;
}

bool has_control(std::string_view s) {
    return std::any_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

[[noreturn]] void fail(const std::string& reason) { throw UsageError(reason); }

// Unsigned decimal without sign, whitespace or overflow.
std::optional<uint64_t> parse_u64(std::string_view s) {
    if (s.empty() || s.size() > 20) return std::nullopt;
    uint64_t v = 0;
    for (char c : s) {
        if (!is_digit(c)) return std::nullopt;
        uint64_t d = static_cast<uint64_t>(c - '0');
        if (v > (UINT64_MAX - d) / 10) return std::nullopt;
        v = v * 10 + d;
    }
    return v;
}

// Splits on unescaped ':'; "\:" and "\\" are unescaped. Other backslashes stay as they are.
std::vector<std::string> split_colons(std::string_view s) {
    std::vector<std::string> parts(1);
    for (size_t i = 0; i < s.size(); i++) {
        char c = s[i];
        if (c == '\\' && i + 1 < s.size() && (s[i + 1] == ':' || s[i + 1] == '\\')) {
            parts.back() += s[++i];
        } else if (c == ':') {
            parts.emplace_back();
        } else {
            parts.back() += c;
        }
    }
    return parts;
}

// A path that may carry nspawn's '+' (relative to the container root) prefix; the prefix is kept.
std::string parse_source_path(std::string_view s) {
    if (!s.empty() && s[0] == '+') return "+" + parse_absolute_path(s.substr(1));
    return parse_absolute_path(s);
}

std::string_view strip_plus(std::string_view s) { return (!s.empty() && s[0] == '+') ? s.substr(1) : s; }

template <typename E, size_t N>
[[noreturn]] void fail_enum(const std::array<EnumName<E>, N>& table) {
    fail("expected one of: " + enum_names(table));
}

// A parsed name, or the "expected one of" error listing the table.
template <typename E, size_t N>
E or_fail_enum(std::optional<E> parsed, const std::array<EnumName<E>, N>& table) {
    if (parsed) return *parsed;
    fail_enum(table);
}

std::optional<bool> try_boolean(std::string_view s) {
    for (const char* t : {"1", "yes", "y", "true", "t", "on"})
        if (iequals(s, t)) return true;
    for (const char* f : {"0", "no", "n", "false", "f", "off"})
        if (iequals(s, f)) return false;
    return std::nullopt;
}

constexpr std::array<EnumName<VolatileMode>, 4> kVolatileNames{{{VolatileMode::No, "no"},
                                                                {VolatileMode::Yes, "yes"},
                                                                {VolatileMode::State, "state"},
                                                                {VolatileMode::Overlay, "overlay"}}};
constexpr std::array<EnumName<ConsoleMode>, 5> kConsoleNames{{{ConsoleMode::Interactive, "interactive"},
                                                              {ConsoleMode::ReadOnly, "read-only"},
                                                              {ConsoleMode::Passive, "passive"},
                                                              {ConsoleMode::Pipe, "pipe"},
                                                              {ConsoleMode::Autopipe, "autopipe"}}};
constexpr std::array<EnumName<ResolvConfMode>, 15> kResolvConfNames{{
    {ResolvConfMode::Off, "off"},
    {ResolvConfMode::CopyHost, "copy-host"},
    {ResolvConfMode::CopyStatic, "copy-static"},
    {ResolvConfMode::CopyUplink, "copy-uplink"},
    {ResolvConfMode::CopyStub, "copy-stub"},
    {ResolvConfMode::ReplaceHost, "replace-host"},
    {ResolvConfMode::ReplaceStatic, "replace-static"},
    {ResolvConfMode::ReplaceUplink, "replace-uplink"},
    {ResolvConfMode::ReplaceStub, "replace-stub"},
    {ResolvConfMode::BindHost, "bind-host"},
    {ResolvConfMode::BindStatic, "bind-static"},
    {ResolvConfMode::BindUplink, "bind-uplink"},
    {ResolvConfMode::BindStub, "bind-stub"},
    {ResolvConfMode::Delete, "delete"},
    {ResolvConfMode::Auto, "auto"},
}};
constexpr std::array<EnumName<TimezoneMode>, 6> kTimezoneNames{{{TimezoneMode::Off, "off"},
                                                                {TimezoneMode::Copy, "copy"},
                                                                {TimezoneMode::Bind, "bind"},
                                                                {TimezoneMode::Symlink, "symlink"},
                                                                {TimezoneMode::Delete, "delete"},
                                                                {TimezoneMode::Auto, "auto"}}};
constexpr std::array<EnumName<SettingsMode>, 4> kSettingsNames{{{SettingsMode::No, "no"},
                                                                {SettingsMode::Yes, "yes"},
                                                                {SettingsMode::Trusted, "trusted"},
                                                                {SettingsMode::Override, "override"}}};
constexpr std::array<EnumName<LinkJournalMode>, 6> kLinkJournalNames{{{LinkJournalMode::No, "no"},
                                                                      {LinkJournalMode::Auto, "auto"},
                                                                      {LinkJournalMode::Guest, "guest"},
                                                                      {LinkJournalMode::Host, "host"},
                                                                      {LinkJournalMode::TryGuest, "try-guest"},
                                                                      {LinkJournalMode::TryHost, "try-host"}}};
constexpr std::array<EnumName<UserNamespaceOwnership>, 4> kOwnershipNames{{{UserNamespaceOwnership::Off, "off"},
                                                                           {UserNamespaceOwnership::Chown, "chown"},
                                                                           {UserNamespaceOwnership::Map, "map"},
                                                                           {UserNamespaceOwnership::Auto, "auto"}}};
constexpr std::array<EnumName<PortProtocol>, 2> kProtocolNames{{{PortProtocol::Tcp, "tcp"}, {PortProtocol::Udp, "udp"}}};
constexpr std::array<EnumName<StartMode>, 3> kStartModeNames{
    {{StartMode::Command, "command"}, {StartMode::Pid2, "pid2"}, {StartMode::Boot, "boot"}}};
constexpr std::array<EnumName<RegisterMode>, 3> kRegisterNames{
    {{RegisterMode::Auto, "auto"}, {RegisterMode::Yes, "yes"}, {RegisterMode::No, "no"}}};

struct SignalName {
    int sig;
    std::string_view name;  // without "SIG"
};
constexpr std::array<SignalName, 31> kSignalNames{{
    {SIGHUP, "HUP"},   {SIGINT, "INT"},       {SIGQUIT, "QUIT"}, {SIGILL, "ILL"},       {SIGTRAP, "TRAP"}, {SIGABRT, "ABRT"},
    {SIGBUS, "BUS"},   {SIGFPE, "FPE"},       {SIGKILL, "KILL"}, {SIGUSR1, "USR1"},     {SIGSEGV, "SEGV"}, {SIGUSR2, "USR2"},
    {SIGPIPE, "PIPE"}, {SIGALRM, "ALRM"},     {SIGTERM, "TERM"}, {SIGSTKFLT, "STKFLT"}, {SIGCHLD, "CHLD"}, {SIGCONT, "CONT"},
    {SIGSTOP, "STOP"}, {SIGTSTP, "TSTP"},     {SIGTTIN, "TTIN"}, {SIGTTOU, "TTOU"},     {SIGURG, "URG"},   {SIGXCPU, "XCPU"},
    {SIGXFSZ, "XFSZ"}, {SIGVTALRM, "VTALRM"}, {SIGPROF, "PROF"}, {SIGWINCH, "WINCH"},   {SIGIO, "IO"},     {SIGPWR, "PWR"},
    {SIGSYS, "SYS"},
}};

struct RlimitName {
    int resource;
    std::string_view name;
};
constexpr std::array<RlimitName, kRlimitCount> kRlimitNames{{
    {RLIMIT_CPU, "CPU"},
    {RLIMIT_FSIZE, "FSIZE"},
    {RLIMIT_DATA, "DATA"},
    {RLIMIT_STACK, "STACK"},
    {RLIMIT_CORE, "CORE"},
    {RLIMIT_RSS, "RSS"},
    {RLIMIT_NPROC, "NPROC"},
    {RLIMIT_NOFILE, "NOFILE"},
    {RLIMIT_MEMLOCK, "MEMLOCK"},
    {RLIMIT_AS, "AS"},
    {RLIMIT_LOCKS, "LOCKS"},
    {RLIMIT_SIGPENDING, "SIGPENDING"},
    {RLIMIT_MSGQUEUE, "MSGQUEUE"},
    {RLIMIT_NICE, "NICE"},
    {RLIMIT_RTPRIO, "RTPRIO"},
    {RLIMIT_RTTIME, "RTTIME"},
}};

}  // namespace

std::string quote_value(std::string_view value) {
    constexpr size_t kMax = 200;
    std::string body;
    for (char c : value.substr(0, kMax)) {
        if (c == '\\' || c == '\'') body += '\\';
        body += c;
    }
    return "'" + escape_control_chars(body) + (value.size() > kMax ? "..." : "") + "'";
}

bool parse_boolean(std::string_view s) {
    if (auto b = try_boolean(s)) return *b;
    fail("expected a boolean (yes/no, true/false, on/off, 1/0)");
}

std::string parse_absolute_path(std::string_view s) {
    if (s.empty()) fail("path is empty");
    if (s.size() >= kPathMax) fail("path is too long");
    if (s[0] != '/') fail("path must be absolute");
    if (s.find('\0') != std::string_view::npos) fail("path contains a NUL byte");
    std::string out;
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && s[i] == '/') i++;
        size_t j = s.find('/', i);
        if (j == std::string_view::npos) j = s.size();
        std::string_view comp = s.substr(i, j - i);
        i = j;
        if (comp.empty() || comp == ".") continue;
        if (comp == "..") fail("path must not contain \"..\"");
        out += '/';
        out += comp;
    }
    return out.empty() ? "/" : out;
}

BindMount parse_bind(std::string_view s, bool read_only) {
    auto parts = split_colons(s);
    if (parts.size() > 3) fail("too many ':'-separated fields, expected SRC[:DST[:OPTIONS]]");
    BindMount b;
    b.read_only = read_only;
    try {
        b.source = parse_source_path(parts[0]);
    } catch (const UsageError& e) {
        fail(std::string("source: ") + e.what());
    }
    if (parts.size() >= 2 && !parts[1].empty()) {
        if (parts[1][0] != '/') fail("destination must be an absolute path");
        try {
            b.destination = parse_absolute_path(parts[1]);
        } catch (const UsageError& e) {
            fail(std::string("destination: ") + e.what());
        }
    } else {
        b.destination = std::string(strip_plus(b.source));
    }
    if (parts.size() == 3) {
        std::string_view opts = parts[2];
        size_t i = 0;
        while (i <= opts.size()) {
            size_t j = opts.find(',', i);
            if (j == std::string_view::npos) j = opts.size();
            std::string_view o = opts.substr(i, j - i);
            i = j + 1;
            if (o.empty()) continue;
            if (o == "rbind") {
                b.recursive = true;
            } else if (o == "norbind") {
                b.recursive = false;
            } else if (o == "idmap") {
                b.idmap = true;
                b.idmap_root = false;
            } else if (o == "noidmap") {
                b.idmap = false;
                b.idmap_root = false;
            } else if (o == "rootidmap") {
                b.idmap = true;
                b.idmap_root = true;
            } else {
                fail("unknown bind option " + quote_value(o) + ", expected rbind, norbind, idmap, noidmap or rootidmap");
            }
        }
    }
    return b;
}

TmpfsMount parse_tmpfs(std::string_view s) {
    size_t colon = s.find(':');
    TmpfsMount t;
    t.destination = parse_absolute_path(s.substr(0, colon));
    if (colon != std::string_view::npos) {
        std::string_view opts = s.substr(colon + 1);
        if (has_control(opts)) fail("mount options contain control characters");
        t.options = std::string(opts);
    }
    return t;
}

OverlayMount parse_overlay(std::string_view s, bool read_only) {
    auto parts = split_colons(s);
    if (parts.size() < 2) fail("expected at least two ':'-separated paths");
    OverlayMount o;
    o.read_only = read_only;
    std::vector<std::string> lower;
    auto source = [](const std::string& p, const char* what) {
        try {
            return parse_source_path(p);
        } catch (const UsageError& e) {
            fail(std::string(what) + ": " + e.what());
        }
    };
    if (read_only) {
        for (size_t i = 0; i + 1 < parts.size(); i++) lower.push_back(source(parts[i], "lower directory"));
        if (parts.back().empty() || parts.back()[0] != '/') fail("destination must be an absolute path");
        o.destination = parse_absolute_path(parts.back());
    } else if (parts.size() == 2) {
        // nspawn: with two paths the second is both the upper directory and the mount point.
        lower.push_back(source(parts[0], "lower directory"));
        o.upper = source(parts[1], "upper directory");
        o.destination = std::string(strip_plus(o.upper));
    } else {
        for (size_t i = 0; i + 2 < parts.size(); i++) lower.push_back(source(parts[i], "lower directory"));
        const std::string& upper = parts[parts.size() - 2];
        if (!upper.empty()) o.upper = source(upper, "upper directory");
        if (parts.back().empty() || parts.back()[0] != '/') fail("destination must be an absolute path");
        o.destination = parse_absolute_path(parts.back());
    }
    std::reverse(lower.begin(), lower.end());
    o.lower = std::move(lower);
    return o;
}

int parse_signal(std::string_view s) {
    if (auto n = parse_u64(s)) {
        if (*n < 1 || *n >= static_cast<uint64_t>(_NSIG)) fail("signal number out of range");
        return static_cast<int>(*n);
    }
    std::string_view name = s;
    if (name.size() > 3 && name.substr(0, 3) == "SIG") name.remove_prefix(3);
    for (const auto& n : kSignalNames)
        if (n.name == name) return n.sig;
    auto rt = [&](std::string_view prefix, int base, int sign) -> std::optional<int> {
        if (name.substr(0, prefix.size()) != prefix) return std::nullopt;
        std::string_view rest = name.substr(prefix.size());
        if (rest.empty()) return base;
        if (rest[0] != (sign > 0 ? '+' : '-')) fail("unknown signal name");
        auto off = parse_u64(rest.substr(1));
        if (!off || *off > static_cast<uint64_t>(SIGRTMAX - SIGRTMIN)) fail("real-time signal offset out of range");
        return base + sign * static_cast<int>(*off);
    };
    if (auto v = rt("RTMIN", SIGRTMIN, +1)) return *v;
    if (auto v = rt("RTMAX", SIGRTMAX, -1)) return *v;
    fail("unknown signal name");
}

std::string signal_to_string(int sig) {
    for (const auto& n : kSignalNames)
        if (n.sig == sig) return "SIG" + std::string(n.name);
    if (sig >= SIGRTMIN && sig <= SIGRTMAX)
        return sig == SIGRTMIN ? "SIGRTMIN" : "SIGRTMIN+" + std::to_string(sig - SIGRTMIN);
    return std::to_string(sig);
}

uint64_t parse_capability_list(std::string_view s) {
    uint64_t mask = 0;
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && (is_space(s[i]) || s[i] == ',')) i++;
        size_t j = i;
        while (j < s.size() && !is_space(s[j]) && s[j] != ',') j++;
        std::string_view word = s.substr(i, j - i);
        i = j;
        if (word.empty()) continue;
        if (iequals(word, "all")) {
            mask = kAllCapabilities;
            continue;
        }
        if (word.size() > 64) fail("unknown capability " + quote_value(word));
        std::optional<int> cap;
        if (auto n = parse_u64(word)) {
            if (*n <= 63) cap = static_cast<int>(*n);
        } else {
            cap = capability_from_name(word);
        }
        if (!cap) fail("unknown capability " + quote_value(word));
        mask |= UINT64_C(1) << *cap;
    }
    return mask;
}

Uuid parse_uuid(std::string_view s) {
    auto id = id128_from_string(s);
    if (!id) fail("expected 32 hexadecimal digits, optionally as 8-4-4-4-12");
    if (id128_is_null(*id)) fail("the all-zero id is not allowed");
    return *id;
}

std::string parse_env_assignment(std::string_view s) {
    size_t eq = s.find('=');
    if (eq == std::string_view::npos) fail("expected NAME=VALUE");
    std::string_view name = s.substr(0, eq), value = s.substr(eq + 1);
    if (name.empty()) fail("variable name is empty");
    if (is_digit(name[0])) fail("variable name must not start with a digit");
    for (char c : name)
        if (!is_alpha(c) && !is_digit(c) && c != '_') fail("variable name may only contain A-Z, a-z, 0-9 and _");
    if (value.find('\0') != std::string_view::npos) fail("value contains a NUL byte");
    if (!utf8_is_valid(value)) fail("value is not valid UTF-8");
    return std::string(s);
}

bool ifname_is_valid(std::string_view s) {
    if (s.empty() || s.size() > 15 || s == "." || s == "..") return false;
    return std::none_of(s.begin(), s.end(), [](char c) {
        auto u = static_cast<unsigned char>(c);
        return u <= 0x20 || u == 0x7f || u >= 0x80 || c == '/' || c == ':' || c == '%';
    });
}

std::string parse_interface_pair(std::string_view s) {
    size_t colon = s.find(':');
    std::string_view host = s.substr(0, colon);
    if (!ifname_is_valid(host)) fail("invalid interface name " + quote_value(host));
    if (colon != std::string_view::npos) {
        std::string_view cont = s.substr(colon + 1);
        if (!ifname_is_valid(cont)) fail("invalid container interface name " + quote_value(cont));
    }
    return std::string(s);
}

std::string parse_network_zone(std::string_view s) {
    if (!ifname_is_valid("vz-" + std::string(s))) fail("invalid zone name (at most 12 interface name characters)");
    return std::string(s);
}

PortForward parse_port(std::string_view s) {
    PortForward p;
    std::string_view rest = s;
    size_t colon = rest.find(':');
    if (colon != std::string_view::npos) {
        if (auto proto = port_protocol_from_string(rest.substr(0, colon))) {
            p.protocol = *proto;
            rest = rest.substr(colon + 1);
        }
    }
    colon = rest.find(':');
    auto port = [](std::string_view v) -> uint16_t {
        auto n = parse_u64(v);
        if (!n || *n < 1 || *n > 65535) fail("port must be a number 1..65535");
        return static_cast<uint16_t>(*n);
    };
    p.host_port = port(rest.substr(0, colon));
    p.container_port = colon == std::string_view::npos ? p.host_port : port(rest.substr(colon + 1));
    return p;
}

PrivateUsers parse_private_users(std::string_view s) {
    PrivateUsers u;
    if (auto b = try_boolean(s)) {
        u.mode = *b ? UserNamespaceMode::Fixed : UserNamespaceMode::No;
        return u;
    }
    if (s == "pick") {
        u.mode = UserNamespaceMode::Pick;
        return u;
    }
    if (s == "identity") {
        u.mode = UserNamespaceMode::Identity;
        u.uid_shift = 0;
        return u;
    }
    size_t colon = s.find(':');
    auto shift = parse_u64(s.substr(0, colon));
    if (!shift || *shift >= kUidInvalid) fail("expected a boolean, \"pick\", \"identity\" or UID[:RANGE]");
    u.mode = UserNamespaceMode::Fixed;
    u.uid_shift = static_cast<uint32_t>(*shift);
    if (colon != std::string_view::npos) {
        auto range = parse_u64(s.substr(colon + 1));
        if (!range || *range == 0 || *range > UINT32_MAX) fail("invalid UID range");
        u.uid_range = static_cast<uint32_t>(*range);
    }
    if (static_cast<uint64_t>(u.uid_shift) + u.uid_range > kUidInvalid) fail("UID range does not fit in 32 bits");
    return u;
}

std::pair<std::string, std::string> parse_pivot_root(std::string_view s) {
    auto parts = split_colons(s);
    if (parts.size() > 2) fail("expected PATH[:PATH]");
    std::pair<std::string, std::string> r;
    r.first = parse_absolute_path(parts[0]);
    if (parts.size() == 2) r.second = parse_absolute_path(parts[1]);
    return r;
}

ResourceLimit parse_rlimit_value(std::string_view s) {
    auto one = [](std::string_view v) -> uint64_t {
        if (v == "infinity") return kRlimitInfinity;
        uint64_t mult = 1;
        if (!v.empty() && !is_digit(v.back())) {
            static constexpr std::string_view kSuffixes = "KMGTPE";
            size_t k = kSuffixes.find(v.back());
            if (k == std::string_view::npos) fail("expected a number (with K/M/G/T/P/E suffix) or \"infinity\"");
            mult = UINT64_C(1) << (10 * (k + 1));
            v.remove_suffix(1);
        }
        auto n = parse_u64(v);
        if (!n) fail("expected a number (with K/M/G/T/P/E suffix) or \"infinity\"");
        if (*n > (kRlimitInfinity - 1) / mult) fail("value too large");
        return *n * mult;
    };
    size_t colon = s.find(':');
    ResourceLimit r;
    r.soft = one(s.substr(0, colon));
    r.hard = colon == std::string_view::npos ? r.soft : one(s.substr(colon + 1));
    if (r.soft > r.hard) fail("soft limit is above the hard limit");
    return r;
}

std::optional<int> rlimit_from_name(std::string_view s) {
    if (s.size() > 7 && iequals(s.substr(0, 7), "RLIMIT_")) s.remove_prefix(7);
    for (const auto& n : kRlimitNames)
        if (iequals(n.name, s)) return n.resource;
    return std::nullopt;
}

std::string_view rlimit_to_name(int resource) {
    for (const auto& n : kRlimitNames)
        if (n.resource == resource) return n.name;
    return "invalid";
}

std::pair<int, ResourceLimit> parse_rlimit(std::string_view s) {
    size_t eq = s.find('=');
    if (eq == std::string_view::npos) fail("expected NAME=LIMIT, e.g. NOFILE=1024:4096");
    auto r = rlimit_from_name(s.substr(0, eq));
    if (!r) fail("unknown resource limit " + quote_value(s.substr(0, eq)) + " (NOFILE, NPROC, CORE, ...)");
    return {*r, parse_rlimit_value(s.substr(eq + 1))};
}

int parse_oom_score_adjust(std::string_view s) {
    bool neg = !s.empty() && s[0] == '-';
    auto n = parse_u64(neg ? s.substr(1) : s);
    if (!n || *n > 1000) fail("expected an integer -1000..1000");
    return neg ? -static_cast<int>(*n) : static_cast<int>(*n);
}

std::vector<unsigned> parse_cpu_set(std::string_view s) {
    constexpr uint64_t kMaxCpu = 8192;
    std::set<unsigned> cpus;
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && (is_space(s[i]) || s[i] == ',')) i++;
        size_t j = i;
        while (j < s.size() && !is_space(s[j]) && s[j] != ',') j++;
        std::string_view word = s.substr(i, j - i);
        i = j;
        if (word.empty()) continue;
        size_t dash = word.find('-');
        auto lo = parse_u64(word.substr(0, dash));
        auto hi = dash == std::string_view::npos ? lo : parse_u64(word.substr(dash + 1));
        if (!lo || !hi || *lo > *hi) fail("expected CPU numbers or ranges like 0-3");
        if (*hi >= kMaxCpu) fail("CPU number too large");
        for (uint64_t c = *lo; c <= *hi; c++) cpus.insert(static_cast<unsigned>(c));
    }
    if (cpus.empty()) fail("no CPUs given");
    return {cpus.begin(), cpus.end()};
}

std::string parse_personality(std::string_view s) {
#if defined(__x86_64__)
    if (s == "x86" || s == "x86-64") return std::string(s);
    fail("expected x86 or x86-64");
#elif defined(__aarch64__)
    if (s == "arm" || s == "arm64") return std::string(s);
    fail("expected arm or arm64");
#else
    fail("personalities are not supported on this architecture");
#endif
}

unsigned long personality_number(std::string_view name) {
    // <sys/personality.h>'s PER_LINUX and PER_LINUX32, spelled out so this stays a pure header-free table.
    constexpr unsigned long kPerLinux = 0x0000, kPerLinux32 = 0x0008;
    if (name == "x86" || name == "arm") return kPerLinux32;
    return kPerLinux;
}

bool credential_name_is_valid(std::string_view id) {
    if (id.empty() || id.size() > 255 || id == "." || id == "..") return false;
    return std::all_of(id.begin(), id.end(), [](char c) { return c > 0x20 && c < 0x7f && c != '/' && c != ':'; });
}

namespace {

std::pair<std::string, std::string_view> split_credential(std::string_view s) {
    size_t colon = s.find(':');
    if (colon == std::string_view::npos) fail("expected ID:VALUE");
    std::string id(s.substr(0, colon));
    if (!credential_name_is_valid(id)) fail("credential name " + quote_value(id) + " is not valid");
    return {id, s.substr(colon + 1)};
}

void append_utf8(std::string& out, uint32_t cp) {
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) fail("invalid Unicode escape");
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

}  // namespace

std::string c_unescape(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size(); i++) {
        if (s[i] != '\\') {
            out += s[i];
            continue;
        }
        if (++i == s.size()) fail("trailing backslash");
        char c = s[i];
        switch (c) {
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'v': out += '\v'; break;
        case 's': out += ' '; break;
        case '\\':
        case '"':
        case '\'': out += c; break;
        case 'x':
        case 'u':
        case 'U': {
            size_t digits = c == 'x' ? 2 : c == 'u' ? 4 : 8;
            if (s.size() - i - 1 < digits) fail("incomplete \\" + std::string(1, c) + " escape");
            uint32_t v = 0;
            for (size_t k = 1; k <= digits; k++) {
                int d = hex_digit_value(s[i + k]);
                if (d < 0) fail("invalid \\" + std::string(1, c) + " escape");
                v = v << 4 | static_cast<uint32_t>(d);
            }
            i += digits;
            if (c == 'x') out += static_cast<char>(v);
            else append_utf8(out, v);
            break;
        }
        default:
            if (c >= '0' && c <= '7') {
                if (s.size() - i < 3) fail("incomplete octal escape");
                uint32_t v = 0;
                for (size_t k = 0; k < 3; k++) {
                    char o = s[i + k];
                    if (o < '0' || o > '7') fail("invalid octal escape");
                    v = v << 3 | static_cast<uint32_t>(o - '0');
                }
                if (v > 0xFF) fail("octal escape out of range");
                i += 2;
                out += static_cast<char>(v);
                break;
            }
            fail("unknown escape " + quote_value(s.substr(i - 1, 2)));
        }
    }
    return out;
}

Credential parse_set_credential(std::string_view s) {
    auto [id, value] = split_credential(s);
    Credential c{std::move(id), c_unescape(value)};
    if (c.data.size() > kCredentialSizeMax) fail("credential larger than 1 MiB");
    return c;
}

std::pair<std::string, std::string> parse_load_credential(std::string_view s) {
    auto [id, path] = split_credential(s);
    if (path.empty()) fail("expected ID:PATH");
    if (path.size() > kPathMax || path.find('\0') != std::string_view::npos) fail("invalid path");
    return {std::move(id), std::string(path)};
}

std::string parse_root_hash(std::string_view s) {
    if (s.size() % 2 != 0 || std::any_of(s.begin(), s.end(), [](char c) { return hex_digit_value(c) < 0; }))
        fail("expected an even number of hex digits");
    if (s.size() < 32) fail("a root hash must be at least 128 bits long");
    if (s.size() > 256) fail("a root hash must be at most 1024 bits long");
    std::string out;
    for (char c : s) out += lower(c);
    return out;
}

std::string parse_root_hash_sig(std::string_view s) {
    if (s.starts_with("base64:")) {
        std::string_view b = s.substr(7);
        bool ok = !b.empty() && b.size() % 4 == 0 && b.size() <= 65536;
        for (size_t i = 0; ok && i < b.size(); i++) {
            char c = b[i];
            bool pad = c == '=' && i + 2 >= b.size() && (i + 1 == b.size() || b[i + 1] == '=');
            ok = is_alpha(c) || is_digit(c) || c == '+' || c == '/' || pad;
        }
        if (!ok) fail("expected base64:DATA with valid base64");
        return std::string(s);
    }
    if (s.empty() || s[0] != '/') fail("expected an absolute path to a signature file, or base64:DATA");
    return parse_absolute_path(s);
}

std::string parse_selinux_label(std::string_view s) {
    if (s.empty() || s.size() > 255) fail("label must be 1..255 characters");
    if (std::any_of(s.begin(), s.end(), [](char c) { return c <= 0x20 || c >= 0x7f; }))
        fail("label must be printable ASCII without spaces");
    if (std::count(s.begin(), s.end(), ':') < 2) fail("expected user:role:type[:range]");
    return std::string(s);
}

std::string parse_user_name(std::string_view s) {
    if (s.empty() || s.size() > 256) fail("user name must be 1..256 characters");
    if (s[0] == '-') fail("user name must not start with '-'");
    for (char c : s)
        if (!is_alpha(c) && !is_digit(c) && c != '_' && c != '.' && c != '-')
            fail("user name may only contain A-Z, a-z, 0-9, '_', '.' and '-'");
    if (s == "." || s == "..") fail("invalid user name");
    return std::string(s);
}

bool syscall_name_is_valid(std::string_view s) {
    if (s.empty() || s.size() > 64) return false;
    size_t start = s[0] == '@' ? 1 : 0;
    if (start == s.size()) return false;
    for (size_t i = start; i < s.size(); i++) {
        char c = s[i];
        if (!is_alpha(c) && !is_digit(c) && c != '_' && c != '-') return false;
    }
    return true;
}

std::vector<std::string> split_words(std::string_view s) {
    std::vector<std::string> words;
    size_t i = 0;
    while (true) {
        while (i < s.size() && is_space(s[i])) i++;
        if (i >= s.size()) break;
        std::string w;
        char quote = 0;
        for (; i < s.size(); i++) {
            char c = s[i];
            if (!quote && is_space(c)) break;
            if (c == '\\') {
                if (++i >= s.size()) fail("trailing backslash");
                char e = s[i];
                switch (e) {
                case 'n': w += '\n'; break;
                case 't': w += '\t'; break;
                case 'x': {
                    int hi = i + 1 < s.size() ? hex_digit_value(s[i + 1]) : -1;
                    int lo = i + 2 < s.size() ? hex_digit_value(s[i + 2]) : -1;
                    if (hi < 0 || lo < 0) fail("invalid \\x escape");
                    if (hi == 0 && lo == 0) fail("\\x00 is not allowed");
                    w += static_cast<char>(hi << 4 | lo);
                    i += 2;
                    break;
                }
                default: w += e;
                }
            } else if (quote && c == quote) {
                quote = 0;
            } else if (!quote && (c == '\'' || c == '"')) {
                quote = c;
            } else {
                w += c;
            }
        }
        if (quote) fail("unterminated quote");
        words.push_back(std::move(w));
    }
    return words;
}

std::string_view to_string(VolatileMode m) { return enum_to_string(kVolatileNames, m); }
std::optional<VolatileMode> volatile_mode_from_string(std::string_view s) {
    if (auto b = try_boolean(s)) return *b ? VolatileMode::Yes : VolatileMode::No;
    return enum_from_string(kVolatileNames, s);
}
std::string_view to_string(ConsoleMode m) { return enum_to_string(kConsoleNames, m); }
std::optional<ConsoleMode> console_mode_from_string(std::string_view s) { return enum_from_string(kConsoleNames, s); }
std::string_view to_string(ResolvConfMode m) { return enum_to_string(kResolvConfNames, m); }
std::optional<ResolvConfMode> resolv_conf_mode_from_string(std::string_view s) {
    return enum_from_string(kResolvConfNames, s);
}
std::string_view to_string(TimezoneMode m) { return enum_to_string(kTimezoneNames, m); }
std::optional<TimezoneMode> timezone_mode_from_string(std::string_view s) { return enum_from_string(kTimezoneNames, s); }
std::string_view to_string(SettingsMode m) { return enum_to_string(kSettingsNames, m); }
std::optional<SettingsMode> settings_mode_from_string(std::string_view s) {
    if (auto b = try_boolean(s)) return *b ? SettingsMode::Yes : SettingsMode::No;
    return enum_from_string(kSettingsNames, s);
}
std::string_view to_string(LinkJournalMode m) { return enum_to_string(kLinkJournalNames, m); }
std::optional<LinkJournalMode> link_journal_mode_from_string(std::string_view s) {
    return enum_from_string(kLinkJournalNames, s);
}
std::string_view to_string(UserNamespaceOwnership m) { return enum_to_string(kOwnershipNames, m); }
std::optional<UserNamespaceOwnership> userns_ownership_from_string(std::string_view s) {
    return enum_from_string(kOwnershipNames, s);
}
std::string_view to_string(PortProtocol p) { return enum_to_string(kProtocolNames, p); }
std::optional<PortProtocol> port_protocol_from_string(std::string_view s) { return enum_from_string(kProtocolNames, s); }
std::string_view to_string(StartMode m) { return enum_to_string(kStartModeNames, m); }
std::optional<StartMode> start_mode_from_string(std::string_view s) { return enum_from_string(kStartModeNames, s); }
std::string_view to_string(RegisterMode m) { return enum_to_string(kRegisterNames, m); }
std::optional<RegisterMode> register_mode_from_string(std::string_view s) {
    if (auto b = try_boolean(s)) return *b ? RegisterMode::Yes : RegisterMode::No;
    return enum_from_string(kRegisterNames, s);
}

VolatileMode parse_volatile_mode(std::string_view s) { return or_fail_enum(volatile_mode_from_string(s), kVolatileNames); }
ConsoleMode parse_console_mode(std::string_view s) { return or_fail_enum(console_mode_from_string(s), kConsoleNames); }
ResolvConfMode parse_resolv_conf_mode(std::string_view s) {
    return or_fail_enum(resolv_conf_mode_from_string(s), kResolvConfNames);
}
TimezoneMode parse_timezone_mode(std::string_view s) { return or_fail_enum(timezone_mode_from_string(s), kTimezoneNames); }
SettingsMode parse_settings_mode(std::string_view s) { return or_fail_enum(settings_mode_from_string(s), kSettingsNames); }
LinkJournalMode parse_link_journal_mode(std::string_view s) {
    return or_fail_enum(link_journal_mode_from_string(s), kLinkJournalNames);
}
UserNamespaceOwnership parse_userns_ownership(std::string_view s) {
    return or_fail_enum(userns_ownership_from_string(s), kOwnershipNames);
}

}  // namespace mk::core
