#include "spawn/options.hpp"

#include <getopt.h>
#include <signal.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <string_view>

#include "core/base/error.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/names.hpp"
#include "core/base/passwd.hpp"
#include "core/kernel/capabilities.hpp"
#include "core/kernel/seccomp.hpp"

namespace mk::spawn {
namespace {

using core::UsageError;

enum {
    OPT_HOSTNAME = 0x100, OPT_CHDIR, OPT_BIND, OPT_BIND_RO, OPT_TMPFS, OPT_READ_ONLY, OPT_PRIVATE_NETWORK,
    OPT_UUID, OPT_CONSOLE, OPT_KILL_SIGNAL, OPT_CAPABILITY, OPT_DROP_CAPABILITY, OPT_NO_NEW_PRIVILEGES,
    OPT_SYSCALL_FILTER, OPT_RESOLV_CONF, OPT_TIMEZONE, OPT_REGISTER, OPT_VERSION, OPT_KEEP_UNIT, OPT_SLICE,
    OPT_PROPERTY, OPT_INACCESSIBLE, OPT_NOTIFY_READY,
};

const option kLongOptions[] = {
    {"help", no_argument, nullptr, 'h'},
    {"version", no_argument, nullptr, OPT_VERSION},
    {"quiet", no_argument, nullptr, 'q'},
    {"directory", required_argument, nullptr, 'D'},
    {"machine", required_argument, nullptr, 'M'},
    {"hostname", required_argument, nullptr, OPT_HOSTNAME},
    {"uuid", required_argument, nullptr, OPT_UUID},
    {"user", required_argument, nullptr, 'u'},
    {"chdir", required_argument, nullptr, OPT_CHDIR},
    {"setenv", required_argument, nullptr, 'E'},
    {"as-pid2", no_argument, nullptr, 'a'},
    {"boot", no_argument, nullptr, 'b'},
    {"bind", required_argument, nullptr, OPT_BIND},
    {"bind-ro", required_argument, nullptr, OPT_BIND_RO},
    {"tmpfs", required_argument, nullptr, OPT_TMPFS},
    {"inaccessible", required_argument, nullptr, OPT_INACCESSIBLE},
    {"read-only", no_argument, nullptr, OPT_READ_ONLY},
    {"private-network", no_argument, nullptr, OPT_PRIVATE_NETWORK},
    {"console", required_argument, nullptr, OPT_CONSOLE},
    {"pipe", no_argument, nullptr, 'P'},
    {"kill-signal", required_argument, nullptr, OPT_KILL_SIGNAL},
    {"capability", required_argument, nullptr, OPT_CAPABILITY},
    {"drop-capability", required_argument, nullptr, OPT_DROP_CAPABILITY},
    {"no-new-privileges", required_argument, nullptr, OPT_NO_NEW_PRIVILEGES},
    {"system-call-filter", required_argument, nullptr, OPT_SYSCALL_FILTER},
    {"resolv-conf", required_argument, nullptr, OPT_RESOLV_CONF},
    {"timezone", required_argument, nullptr, OPT_TIMEZONE},
    {"register", required_argument, nullptr, OPT_REGISTER},
    {"keep-unit", no_argument, nullptr, OPT_KEEP_UNIT},
    {"slice", required_argument, nullptr, OPT_SLICE},
    {"property", required_argument, nullptr, OPT_PROPERTY},
    {"notify-ready", required_argument, nullptr, OPT_NOTIFY_READY},
    {nullptr, 0, nullptr, 0},
};

bool parse_bool(std::string_view opt, std::string_view v) {
    for (const char* t : {"1", "yes", "y", "true", "t", "on"})
        if (v == t) return true;
    for (const char* f : {"0", "no", "n", "false", "f", "off"})
        if (v == f) return false;
    throw UsageError("invalid value '" + std::string(v) + "' for " + std::string(opt) + ": expected yes or no");
}

int parse_signal(std::string_view v) {
    std::string s(v);
    if (s.starts_with("SIG")) s.erase(0, 3);
    if (auto id = core::parse_id(s); id && *id > 0 && *id < static_cast<uint32_t>(NSIG)) return static_cast<int>(*id);
    if (s.starts_with("RTMIN")) {
        int off = 0;
        if (s.size() > 5) {
            if (s[5] != '+') throw UsageError("invalid signal '" + std::string(v) + "'");
            auto o = core::parse_id(s.substr(6));
            if (!o) throw UsageError("invalid signal '" + std::string(v) + "'");
            off = static_cast<int>(*o);
        }
        if (SIGRTMIN + off > SIGRTMAX) throw UsageError("invalid signal '" + std::string(v) + "': beyond SIGRTMAX");
        return SIGRTMIN + off;
    }
    for (int i = 1; i < SIGRTMIN; i++) {
        const char* abbrev = sigabbrev_np(i);
        if (abbrev && s == abbrev) return i;
    }
    throw UsageError("invalid signal '" + std::string(v) + "': use a name like SIGTERM or a number");
}

std::optional<core::Uuid> parse_uuid(std::string_view v) {
    std::string hex;
    for (size_t i = 0; i < v.size(); i++) {
        char c = v[i];
        if (c == '-' && (i == 8 || i == 13 || i == 18 || i == 23) && v.size() == 36) continue;
        if (!isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
        hex += c;
    }
    if (hex.size() != 32) return std::nullopt;
    core::Uuid u{};
    bool zero = true;
    for (size_t i = 0; i < 16; i++) {
        u[i] = static_cast<uint8_t>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
        zero = zero && u[i] == 0;
    }
    if (zero) return std::nullopt;
    return u;
}

std::string absolute_path(std::string_view p) {
    if (p.empty()) throw UsageError("empty path");
    std::string s(p);
    if (s[0] != '/') {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd)) throw UsageError("cannot determine the current directory");
        s = std::string(cwd) + "/" + s;
    }
    // Normalise "//", "/./" and a trailing '/'; ".." is refused by the callers that care.
    std::string out;
    size_t i = 0;
    while (i < s.size()) {
        size_t j = s.find('/', i);
        if (j == std::string::npos) j = s.size();
        std::string comp = s.substr(i, j - i);
        i = j + 1;
        if (comp.empty() || comp == ".") continue;
        out += "/" + comp;
    }
    return out.empty() ? "/" : out;
}

std::string container_path(std::string_view opt, std::string_view p) {
    std::string s(p);
    if (s.empty() || s[0] != '/')
        throw UsageError("invalid " + std::string(opt) + " path '" + s + "': paths inside the container must be absolute");
    std::string n = absolute_path(s);
    if (!core::path_is_normalized_absolute(n) || n.find("/../") != std::string::npos || n.ends_with("/.."))
        throw UsageError("invalid " + std::string(opt) + " path '" + s + "': '..' is not allowed");
    if (n == "/") throw UsageError("invalid " + std::string(opt) + " path '/': cannot mount over the container root");
    return n;
}

// --bind=SRC[:DST[:OPTS]] with nspawn's rbind/norbind options.
core::BindMount parse_bind(std::string_view opt, std::string_view v, bool ro) {
    core::BindMount b;
    b.read_only = ro;
    std::string s(v);
    std::vector<std::string> parts;
    size_t i = 0;
    for (;;) {
        size_t j = s.find(':', i);
        if (j == std::string::npos) {
            parts.push_back(s.substr(i));
            break;
        }
        parts.push_back(s.substr(i, j - i));
        i = j + 1;
    }
    if (parts.size() > 3 || parts[0].empty())
        throw UsageError("invalid " + std::string(opt) + "='" + s + "': expected SOURCE[:DESTINATION[:OPTIONS]]");
    if (parts[0][0] == '+') throw UsageError("invalid " + std::string(opt) + "='" + s + "': sources relative to the container root ('+') are not supported");
    b.source = absolute_path(parts[0]);
    b.destination = container_path(opt, parts.size() > 1 && !parts[1].empty() ? parts[1] : b.source);
    if (parts.size() > 2) {
        std::string o = parts[2];
        size_t k = 0;
        while (k <= o.size()) {
            size_t l = o.find(',', k);
            if (l == std::string::npos) l = o.size();
            std::string item = o.substr(k, l - k);
            k = l + 1;
            if (item == "rbind") b.recursive = true;
            else if (item == "norbind") b.recursive = false;
            else if (item == "noidmap" || item.empty()) {}
            else throw UsageError("invalid " + std::string(opt) + " option '" + item + "': expected rbind or norbind");
        }
    }
    return b;
}

template <typename E, size_t N>
E parse_enum(std::string_view opt, std::string_view v, const std::pair<const char*, E> (&table)[N]) {
    std::string names;
    for (auto& [n, e] : table) {
        if (v == n) return e;
        names += names.empty() ? n : std::string(", ") + n;
    }
    throw UsageError("invalid value '" + std::string(v) + "' for " + std::string(opt) + ": expected one of " + names);
}

const std::pair<const char*, core::ConsoleMode> kConsoleModes[] = {
    {"interactive", core::ConsoleMode::Interactive}, {"read-only", core::ConsoleMode::ReadOnly},
    {"passive", core::ConsoleMode::Passive},         {"pipe", core::ConsoleMode::Pipe},
    {"autopipe", core::ConsoleMode::Autopipe},
};
const std::pair<const char*, core::ResolvConfMode> kResolvConfModes[] = {
    {"off", core::ResolvConfMode::Off},       {"copy-host", core::ResolvConfMode::CopyHost},
    {"replace-host", core::ResolvConfMode::ReplaceHost}, {"bind-host", core::ResolvConfMode::BindHost},
    {"delete", core::ResolvConfMode::Delete}, {"auto", core::ResolvConfMode::Auto},
};
const std::pair<const char*, core::TimezoneMode> kTimezoneModes[] = {
    {"off", core::TimezoneMode::Off},   {"copy", core::TimezoneMode::Copy},     {"bind", core::TimezoneMode::Bind},
    {"symlink", core::TimezoneMode::Symlink}, {"delete", core::TimezoneMode::Delete}, {"auto", core::TimezoneMode::Auto},
};

}  // namespace

const char* help_text() {
    return R"(spawn [OPTIONS...] [COMMAND [ARGS...]]

Run a command or boot an OS tree in a light-weight container.

  -h --help                 Show this help
     --version              Print the version
  -q --quiet                Do not show status information
  -D --directory=PATH       Root directory for the container
  -b --boot                 Boot up the tree's init; remaining arguments go to it
  -a --as-pid2              Run COMMAND as PID 2, under a minimal init as PID 1
     --chdir=PATH           Working directory inside the container
  -E --setenv=NAME[=VALUE]  Pass an environment variable to PID 1
  -u --user=USER            Run the command as USER (looked up in the container)
     --kill-signal=SIGNAL   Signal sent to PID 1 when spawn is asked to stop
     --notify-ready=BOOL    Wait for the init's READY=1 before reporting ready
  -M --machine=NAME         Machine name (default: the directory's name)
     --hostname=NAME        Hostname inside the container (default: the machine name)
     --uuid=UUID            Machine UUID
     --register=BOOL        Register with machd (default: when machd runs)
     --keep-unit            Do not create a scope; use the unit spawn runs in
     --slice=SLICE          Slice for the machine's scope
     --property=NAME=VALUE  Property for the machine's scope
     --private-network      Disconnect from the host's network (loopback only)
     --capability=CAP       Keep CAP in addition to the default set (or "all")
     --drop-capability=CAP  Drop CAP from the default set
     --no-new-privileges=BOOL  Set PR_SET_NO_NEW_PRIVS for the payload
     --system-call-filter=LIST|~LIST  Allow (or with ~, deny) system calls
     --read-only            Mount the root directory read-only
     --bind=PATH[:PATH[:OPTS]]     Bind mount a host path into the container
     --bind-ro=PATH[:PATH[:OPTS]]  Bind mount a host path read-only
     --tmpfs=PATH[:OPTS]    Mount an empty tmpfs
     --inaccessible=PATH    Make PATH inaccessible inside the container
     --resolv-conf=MODE     off, copy-host, replace-host, bind-host, delete, auto
     --timezone=MODE        off, copy, bind, symlink, delete, auto
     --console=MODE         interactive, read-only, passive, pipe, autopipe
  -P --pipe                 Equivalent to --console=pipe
)";
}

ParsedOptions parse_options(const std::vector<std::string>& args, bool stdin_tty, bool stdout_tty) {
    ParsedOptions r;
    core::SpawnSpec& s = r.spec;
    std::vector<char*> argv;
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    int argc = static_cast<int>(copy.size());
    bool machine_set = false;

    optind = 0;  // full re-initialisation, so parse_options can be called more than once
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv.data(), "+hqD:M:u:E:abPx", kLongOptions, nullptr)) >= 0) {
        std::string_view v = optarg ? optarg : "";
        std::string opt = optind > 0 && optind <= argc ? copy[static_cast<size_t>(optind - 1)] : "";
        switch (c) {
        case 'h': r.action = Action::Help; return r;
        case OPT_VERSION: r.action = Action::Version; return r;
        case 'q': s.quiet = true; break;
        case 'D': s.directory = absolute_path(v); break;
        case 'M':
            if (!core::machine_name_is_valid(v))
                throw UsageError("invalid machine name '" + std::string(v) +
                                 "': use letters, digits, '-' and '.', at most 64 characters");
            s.machine_name = std::string(v);
            machine_set = true;
            break;
        case OPT_HOSTNAME:
            if (!core::machine_name_is_valid(v)) throw UsageError("invalid hostname '" + std::string(v) + "'");
            s.hostname = std::string(v);
            break;
        case OPT_UUID: {
            auto u = parse_uuid(v);
            if (!u) throw UsageError("invalid --uuid '" + std::string(v) + "': expected 32 hex digits, not all zero");
            s.uuid = *u;
            break;
        }
        case 'u':
            if (v.empty()) throw UsageError("empty --user");
            s.user = std::string(v);
            break;
        case OPT_CHDIR: s.chdir = container_path("--chdir", v == "/" ? "/." : v); if (v == "/") s.chdir = "/"; break;
        case 'E': {
            std::string e(v);
            size_t eq = e.find('=');
            std::string name = e.substr(0, eq);
            bool ok = !name.empty() && !isdigit(static_cast<unsigned char>(name[0]));
            for (char ch : name) ok = ok && (isalnum(static_cast<unsigned char>(ch)) || ch == '_');
            if (!ok) throw UsageError("invalid --setenv '" + e + "': expected NAME=VALUE with a valid variable name");
            if (eq == std::string::npos) {
                const char* hv = getenv(name.c_str());
                if (!hv) break;  // like nspawn: NAME alone passes the variable through if set
                e = name + "=" + hv;
            }
            s.setenv.push_back(e);
            break;
        }
        case 'a': s.start_mode = core::StartMode::Pid2; break;
        case 'b': s.start_mode = core::StartMode::Boot; break;
        case OPT_BIND: s.binds.push_back(parse_bind("--bind", v, false)); break;
        case OPT_BIND_RO: s.binds.push_back(parse_bind("--bind-ro", v, true)); break;
        case OPT_TMPFS: {
            std::string t(v);
            size_t colon = t.find(':');
            core::TmpfsMount m;
            m.destination = container_path("--tmpfs", t.substr(0, colon));
            if (colon != std::string::npos) m.options = t.substr(colon + 1);
            s.tmpfs.push_back(m);
            break;
        }
        case OPT_INACCESSIBLE: s.inaccessible.push_back(container_path("--inaccessible", v)); break;
        case OPT_READ_ONLY: s.read_only = true; break;
        case OPT_PRIVATE_NETWORK: s.private_network = true; break;
        case OPT_CONSOLE:
            s.console = parse_enum("--console", v, kConsoleModes);
            r.console_set = true;
            break;
        case 'P':
            s.console = core::ConsoleMode::Pipe;
            r.console_set = true;
            break;
        case OPT_KILL_SIGNAL: s.kill_signal = parse_signal(v); break;
        case OPT_CAPABILITY: {
            bool all = false;
            try {
                s.capabilities_add |= core::parse_capability_list(v, &all);
            } catch (const UsageError& e) {
                throw UsageError("invalid --capability: " + std::string(e.what()));
            }
            if (all) s.capabilities_all = true;
            break;
        }
        case OPT_DROP_CAPABILITY:
            try {
                s.capabilities_drop |= core::parse_capability_list(v, nullptr);
            } catch (const UsageError& e) {
                throw UsageError("invalid --drop-capability: " + std::string(e.what()));
            }
            break;
        case OPT_NO_NEW_PRIVILEGES: s.no_new_privileges = parse_bool("--no-new-privileges", v); break;
        case OPT_SYSCALL_FILTER:
            try {
                core::parse_syscall_filter(v, s.syscall_allow, s.syscall_deny);
            } catch (const UsageError& e) {
                throw UsageError("invalid --system-call-filter: " + std::string(e.what()));
            }
            break;
        case OPT_RESOLV_CONF: s.resolv_conf = parse_enum("--resolv-conf", v, kResolvConfModes); break;
        case OPT_TIMEZONE: s.timezone = parse_enum("--timezone", v, kTimezoneModes); break;
        case OPT_REGISTER: s.register_mode = parse_bool("--register", v) ? core::RegisterMode::Yes : core::RegisterMode::No; break;
        case OPT_KEEP_UNIT: s.keep_unit = true; break;
        case OPT_SLICE: {
            std::string sl(v);
            if (!sl.ends_with(".slice") || sl.size() <= 6) throw UsageError("invalid --slice '" + sl + "': expected a name ending in .slice");
            s.slice = sl;
            break;
        }
        case OPT_PROPERTY:
            if (v.find('=') == std::string_view::npos || v[0] == '=')
                throw UsageError("invalid --property '" + std::string(v) + "': expected NAME=VALUE");
            s.properties.emplace_back(v);
            break;
        case OPT_NOTIFY_READY: s.notify_ready = parse_bool("--notify-ready", v); break;
        case '?': {
            std::string bad = optind > 0 && optind <= argc ? copy[static_cast<size_t>(optind - 1)] : "?";
            if (optopt) bad = std::string("-") + static_cast<char>(optopt);
            throw UsageError("unknown option '" + bad + "'; see spawn --help");
        }
        case ':':
            throw UsageError("option '" + opt + "' needs a value; see spawn --help");
        default:
            throw UsageError("unknown option; see spawn --help");
        }
    }
    for (int i = optind; i < argc; i++) s.argv.push_back(copy[static_cast<size_t>(i)]);

    if (s.directory.empty()) throw UsageError("no directory given: pass the container's root with -D DIR");
    if (!machine_set) {
        s.machine_name = core::machine_name_from_path(s.directory);
        if (s.machine_name.empty())
            throw UsageError("cannot derive a machine name from " + s.directory + "; pass one with -M NAME");
    }
    if (!r.console_set || s.console == core::ConsoleMode::Autopipe) {
        bool tty = stdin_tty && stdout_tty;
        if (!r.console_set) s.console = tty ? core::ConsoleMode::Interactive : core::ConsoleMode::ReadOnly;
        else s.console = tty ? core::ConsoleMode::Interactive : core::ConsoleMode::Pipe;
    }
    if (s.start_mode == core::StartMode::Boot && s.kill_signal == 0) s.kill_signal = SIGRTMIN + 3;
    return r;
}

}  // namespace mk::spawn
