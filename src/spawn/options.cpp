#include "spawn/options.hpp"

#include <getopt.h>
#include <sys/random.h>
#include <signal.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <optional>
#include <string_view>

#include "core/base/error.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/names.hpp"
#include "core/base/passwd.hpp"
#include "core/kernel/capabilities.hpp"
#include "core/kernel/seccomp.hpp"
#include "core/spawn/option_values.hpp"

namespace mk::spawn {
namespace {

using core::UsageError;

enum {
    OPT_HOSTNAME = 0x100, OPT_CHDIR, OPT_BIND, OPT_BIND_RO, OPT_TMPFS, OPT_READ_ONLY, OPT_PRIVATE_NETWORK,
    OPT_UUID, OPT_CONSOLE, OPT_KILL_SIGNAL, OPT_CAPABILITY, OPT_DROP_CAPABILITY, OPT_NO_NEW_PRIVILEGES,
    OPT_SYSCALL_FILTER, OPT_RESOLV_CONF, OPT_TIMEZONE, OPT_REGISTER, OPT_VERSION, OPT_KEEP_UNIT, OPT_SLICE,
    OPT_PROPERTY, OPT_INACCESSIBLE, OPT_NOTIFY_READY, OPT_VOLATILE, OPT_SETTINGS, OPT_OVERLAY, OPT_OVERLAY_RO, OPT_PRIVATE_USERS, OPT_PRIVATE_USERS_OWNERSHIP, OPT_PRIVATE_USERS_CHOWN,
    OPT_NETWORK_INTERFACE, OPT_NETWORK_MACVLAN, OPT_NETWORK_IPVLAN, OPT_NETWORK_VETH_EXTRA, OPT_NETWORK_BRIDGE,
    OPT_NETWORK_ZONE, OPT_NETWORK_NAMESPACE_PATH, OPT_TEMPLATE,
    OPT_LINK_JOURNAL = 0x400,  // its own range: h17opts adds the other nspawn options above
};

const option kLongOptions[] = {
    {"help", no_argument, nullptr, 'h'},
    {"version", no_argument, nullptr, OPT_VERSION},
    {"quiet", no_argument, nullptr, 'q'},
    {"directory", required_argument, nullptr, 'D'},
    {"image", required_argument, nullptr, 'i'},
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
    {"network-veth", no_argument, nullptr, 'n'},
    {"network-veth-extra", required_argument, nullptr, OPT_NETWORK_VETH_EXTRA},
    {"network-bridge", required_argument, nullptr, OPT_NETWORK_BRIDGE},
    {"network-zone", required_argument, nullptr, OPT_NETWORK_ZONE},
    {"network-interface", required_argument, nullptr, OPT_NETWORK_INTERFACE},
    {"network-macvlan", required_argument, nullptr, OPT_NETWORK_MACVLAN},
    {"network-ipvlan", required_argument, nullptr, OPT_NETWORK_IPVLAN},
    {"network-namespace-path", required_argument, nullptr, OPT_NETWORK_NAMESPACE_PATH},
    {"port", required_argument, nullptr, 'p'},
    {"console", required_argument, nullptr, OPT_CONSOLE},
    {"pipe", no_argument, nullptr, 'P'},
    {"kill-signal", required_argument, nullptr, OPT_KILL_SIGNAL},
    {"capability", required_argument, nullptr, OPT_CAPABILITY},
    {"drop-capability", required_argument, nullptr, OPT_DROP_CAPABILITY},
    {"no-new-privileges", required_argument, nullptr, OPT_NO_NEW_PRIVILEGES},
    {"system-call-filter", required_argument, nullptr, OPT_SYSCALL_FILTER},
    {"resolv-conf", required_argument, nullptr, OPT_RESOLV_CONF},
    {"link-journal", required_argument, nullptr, OPT_LINK_JOURNAL},
    {"timezone", required_argument, nullptr, OPT_TIMEZONE},
    {"register", required_argument, nullptr, OPT_REGISTER},
    {"keep-unit", no_argument, nullptr, OPT_KEEP_UNIT},
    {"slice", required_argument, nullptr, OPT_SLICE},
    {"property", required_argument, nullptr, OPT_PROPERTY},
    {"notify-ready", required_argument, nullptr, OPT_NOTIFY_READY},
    {"ephemeral", no_argument, nullptr, 'x'},
    {"template", required_argument, nullptr, OPT_TEMPLATE},
    {"overlay", required_argument, nullptr, OPT_OVERLAY},
    {"private-users", optional_argument, nullptr, OPT_PRIVATE_USERS},
    {"private-users-ownership", required_argument, nullptr, OPT_PRIVATE_USERS_OWNERSHIP},
    {"private-users-chown", no_argument, nullptr, OPT_PRIVATE_USERS_CHOWN},
    {"overlay-ro", required_argument, nullptr, OPT_OVERLAY_RO},
    {"volatile", optional_argument, nullptr, OPT_VOLATILE},
    {"settings", required_argument, nullptr, OPT_SETTINGS},
    {nullptr, 0, nullptr, 0},
};

// Relative paths on the command line are relative to the current directory (like nspawn's -D).
std::string absolute_host_path(std::string_view p) {
    if (p.empty()) throw UsageError("empty path");
    std::string s(p);
    if (s[0] != '/') {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd)) throw UsageError("cannot determine the current directory");
        s = std::string(cwd) + "/" + s;
    }
    return core::parse_absolute_path(s);
}

// Which .nspawn settings group each option belongs to (nspawn's SETTING_* bits).
std::optional<core::SettingGroup> group_of(int c) {
    using G = core::SettingGroup;
    switch (c) {
    case 'a': case 'b': return G::StartMode;
    case 'x': return G::Ephemeral;
    case 'U': case OPT_PRIVATE_USERS: case OPT_PRIVATE_USERS_OWNERSHIP: case OPT_PRIVATE_USERS_CHOWN:
        return G::UserNamespace;
    case 'E': return G::Environment;
    case 'u': return G::User;
    case OPT_CHDIR: return G::WorkingDirectory;
    case OPT_CAPABILITY: case OPT_DROP_CAPABILITY: return G::Capability;
    case OPT_KILL_SIGNAL: return G::KillSignal;
    case OPT_UUID: return G::MachineId;
    case OPT_NOTIFY_READY: return G::NotifyReady;
    case OPT_SYSCALL_FILTER: return G::SyscallFilter;
    case OPT_HOSTNAME: return G::Hostname;
    case OPT_NO_NEW_PRIVILEGES: return G::NoNewPrivileges;
    case OPT_RESOLV_CONF: return G::ResolvConf;
    case OPT_LINK_JOURNAL: return G::LinkJournal;
    case OPT_TIMEZONE: return G::Timezone;
    case OPT_READ_ONLY: return G::ReadOnly;
    case OPT_VOLATILE: return G::Volatile;
    case OPT_BIND: case OPT_BIND_RO: case OPT_TMPFS: case OPT_INACCESSIBLE: case OPT_OVERLAY: case OPT_OVERLAY_RO:
        return G::CustomMounts;
    case 'p': return G::ExposePorts;
    case OPT_PRIVATE_NETWORK: case 'n': case OPT_NETWORK_VETH_EXTRA: case OPT_NETWORK_BRIDGE: case OPT_NETWORK_ZONE:
    case OPT_NETWORK_INTERFACE: case OPT_NETWORK_MACVLAN: case OPT_NETWORK_IPVLAN: case OPT_NETWORK_NAMESPACE_PATH:
        return G::Network;
    default: return std::nullopt;
    }
}

template <typename F>
auto value(const char* opt, std::string_view v, F&& f) {
    return core::parse_option_value(opt, v, std::forward<F>(f));
}

void refuse_root_destination(const char* opt, const std::string& dst, std::string_view v) {
    if (dst == "/") throw UsageError("Invalid " + std::string(opt) + " value " + core::quote_value(v) + ": cannot mount over the container root");
}

}  // namespace

const char* help_text() {
    return R"(spawn [OPTIONS...] [COMMAND [ARGS...]]

Run a command or boot an OS tree in a light-weight container.

  -h --help                 Show this help
     --version              Print the version
  -q --quiet                Do not show status information
  -D --directory=PATH       Root directory for the container
  -i --image=PATH           Disk image (GPT per the Discoverable Partitions Specification, or a bare file system)
  -b --boot                 Boot up the tree's init; remaining arguments go to it
  -x --ephemeral            Run on a throw-away overlay of the tree, removed at exit
     --template=PATH        Create a missing root directory as a copy of PATH
     --volatile[=MODE]      yes (tmpfs root + the tree's /usr), state (tmpfs /var), overlay
     --settings=MODE        Use .nspawn settings files: yes, no, trusted, override
  -U                        Equivalent to --private-users=pick --private-users-ownership=auto
     --private-users[=no|yes|pick|identity|UID[:COUNT]]  Run in a user namespace
     --private-users-ownership=off|map|auto  How the tree's owners fit the range (map: idmapped mount)
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
  -n --network-veth         Add a virtual Ethernet link: ve-NAME on the host, host0 inside
     --network-veth-extra=HOSTIF[:CIF]  Add another veth pair
     --network-bridge=BR    Add a veth (vb-NAME) to the host bridge BR
     --network-zone=ZONE    Add a veth (vb-NAME) to bridge vz-ZONE, created on demand
     --network-interface=IF[:CIF]  Move a host interface in (and back at exit)
     --network-macvlan=IF[:CIF]    Add a macvlan on IF (mv-IF inside)
     --network-ipvlan=IF[:CIF]     Add an ipvlan on IF (iv-IF inside)
  -p --port=[tcp|udp:]HOST[:CONT]  Forward a host port to the container
     --network-namespace-path=PATH  Join an existing network namespace
     --capability=CAP       Keep CAP in addition to the default set (or "all")
     --drop-capability=CAP  Drop CAP from the default set
     --no-new-privileges=BOOL  Set PR_SET_NO_NEW_PRIVS for the payload
     --system-call-filter=LIST|~LIST  Allow (or with ~, deny) system calls
     --read-only            Mount the root directory read-only
     --bind=PATH[:PATH[:OPTS]]     Bind mount a host path into the container
     --bind-ro=PATH[:PATH[:OPTS]]  Bind mount a host path read-only
     --tmpfs=PATH[:OPTS]    Mount an empty tmpfs
     --overlay=PATH[:PATH...]:PATH   Overlay mount: lower directories, upper, destination
     --overlay-ro=PATH[:PATH...]:PATH  Read-only overlay mount
     --inaccessible=PATH    Make PATH inaccessible inside the container
     --resolv-conf=MODE     off, copy-host, replace-host, bind-host, delete, auto
     --link-journal=MODE    no, host, try-host, guest, try-guest, auto: link the guest's
                            /var/log/journal/MACHINE-ID with the host's
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
    while ((c = getopt_long(argc, argv.data(), "+hqD:i:M:u:E:abPxUnp:", kLongOptions, nullptr)) >= 0) {
        std::string_view v = optarg ? optarg : "";
        std::string opt = optind > 0 && optind <= argc ? copy[static_cast<size_t>(optind - 1)] : "";
        switch (c) {
        case 'h': r.action = Action::Help; return r;
        case OPT_VERSION: r.action = Action::Version; return r;
        case 'q': s.quiet = true; break;
        case 'D': s.directory = value("--directory=", v, absolute_host_path); break;
        case 'i': s.image = value("--image=", v, absolute_host_path); break;
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
        case OPT_UUID: s.uuid = value("--uuid=", v, core::parse_uuid); break;
        case 'u': s.user = value("--user=", v, core::parse_user_name); break;
        case OPT_CHDIR: s.chdir = value("--chdir=", v, core::parse_absolute_path); break;
        case 'E': {
            std::string e(v);
            if (e.find('=') == std::string::npos) {  // like nspawn: NAME alone passes the variable on if set
                const char* hv = getenv(e.c_str());
                if (!hv) break;
                e += std::string("=") + hv;
            }
            s.setenv.push_back(value("--setenv=", e, core::parse_env_assignment));
            break;
        }
        case 'a': s.start_mode = core::StartMode::Pid2; break;
        case 'b': s.start_mode = core::StartMode::Boot; break;
        case OPT_BIND:
        case OPT_BIND_RO: {
            const char* name = c == OPT_BIND ? "--bind=" : "--bind-ro=";
            core::BindMount b = value(name, v, [&](std::string_view x) { return core::parse_bind(x, c == OPT_BIND_RO); });
            if (b.source.starts_with("+"))
                throw UsageError("Invalid " + std::string(name) + " value " + core::quote_value(v) +
                                 ": sources relative to the container root ('+') are not supported");
            refuse_root_destination(name, b.destination, v);
            s.binds.push_back(b);
            break;
        }
        case OPT_TMPFS: {
            core::TmpfsMount m = value("--tmpfs=", v, core::parse_tmpfs);
            refuse_root_destination("--tmpfs=", m.destination, v);
            s.tmpfs.push_back(m);
            break;
        }
        case OPT_INACCESSIBLE: s.inaccessible.push_back(value("--inaccessible=", v, core::parse_absolute_path)); break;
        case OPT_READ_ONLY: s.read_only = true; break;
        case OPT_PRIVATE_NETWORK: s.private_network = true; break;
        // Every option that adds links implies a private network namespace (as nspawn's).
        case 'n': s.network_veth = s.private_network = true; break;
        case OPT_NETWORK_VETH_EXTRA:
            s.network_veth_extra.push_back(value("--network-veth-extra=", v, core::parse_interface_pair));
            s.private_network = true;
            break;
        case OPT_NETWORK_BRIDGE:
            if (!core::ifname_is_valid(v)) throw UsageError("invalid --network-bridge= value " + core::quote_value(v));
            s.network_bridge = std::string(v);
            s.network_veth = s.private_network = true;
            break;
        case OPT_NETWORK_ZONE:
            s.network_zone = value("--network-zone=", v, core::parse_network_zone);
            s.network_veth = s.private_network = true;
            break;
        case OPT_NETWORK_INTERFACE:
            s.network_interfaces.push_back(value("--network-interface=", v, core::parse_interface_pair));
            s.private_network = true;
            break;
        case OPT_NETWORK_MACVLAN:
            s.network_macvlan.push_back(value("--network-macvlan=", v, core::parse_interface_pair));
            s.private_network = true;
            break;
        case OPT_NETWORK_IPVLAN:
            s.network_ipvlan.push_back(value("--network-ipvlan=", v, core::parse_interface_pair));
            s.private_network = true;
            break;
        case OPT_NETWORK_NAMESPACE_PATH: s.network_namespace_path = value("--network-namespace-path=", v, absolute_host_path); break;
        case 'p': s.ports.push_back(value("--port=", v, core::parse_port)); break;
        case OPT_CONSOLE:
            s.console = value("--console=", v, core::parse_console_mode);
            r.console_set = true;
            break;
        case 'P':
            s.console = core::ConsoleMode::Pipe;
            r.console_set = true;
            break;
        case OPT_KILL_SIGNAL: s.kill_signal = value("--kill-signal=", v, core::parse_signal); break;
        case OPT_CAPABILITY: {
            uint64_t m = value("--capability=", v, core::parse_capability_list);
            if (m == core::kAllCapabilities) s.capabilities_all = true;
            else s.capabilities_add |= m;
            break;
        }
        case OPT_DROP_CAPABILITY: s.capabilities_drop |= value("--drop-capability=", v, core::parse_capability_list); break;
        case OPT_NO_NEW_PRIVILEGES: s.no_new_privileges = value("--no-new-privileges=", v, core::parse_boolean); break;
        case OPT_SYSCALL_FILTER:
            try {
                core::parse_syscall_filter(v, s.syscall_allow, s.syscall_deny);
            } catch (const UsageError& e) {
                throw UsageError("invalid --system-call-filter: " + std::string(e.what()));
            }
            break;
        case OPT_RESOLV_CONF: s.resolv_conf = value("--resolv-conf=", v, core::parse_resolv_conf_mode); break;
        case OPT_LINK_JOURNAL: s.link_journal = value("--link-journal=", v, core::parse_link_journal_mode); break;
        case OPT_TIMEZONE: s.timezone = value("--timezone=", v, core::parse_timezone_mode); break;
        case OPT_REGISTER:
            s.register_mode = value("--register=", v, core::parse_boolean) ? core::RegisterMode::Yes : core::RegisterMode::No;
            break;
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
        case 'x': s.ephemeral = true; break;
        case OPT_TEMPLATE: s.template_dir = value("--template=", v, absolute_host_path); break;
        case 'U':
            s.userns_mode = core::UserNamespaceMode::Pick;
            s.userns_ownership = core::UserNamespaceOwnership::Auto;
            break;
        case OPT_PRIVATE_USERS: {
            core::PrivateUsers u = optarg ? value("--private-users=", v, core::parse_private_users) : core::PrivateUsers{core::UserNamespaceMode::Fixed};
            s.userns_mode = u.mode;
            s.uid_shift = u.uid_shift;
            s.uid_range = u.uid_range;
            break;
        }
        case OPT_PRIVATE_USERS_OWNERSHIP: s.userns_ownership = value("--private-users-ownership=", v, core::parse_userns_ownership); break;
        case OPT_PRIVATE_USERS_CHOWN: s.userns_ownership = core::UserNamespaceOwnership::Chown; break;
        case OPT_OVERLAY:
        case OPT_OVERLAY_RO: {
            const char* name = c == OPT_OVERLAY ? "--overlay=" : "--overlay-ro=";
            core::OverlayMount o = value(name, v, [&](std::string_view x) { return core::parse_overlay(x, c == OPT_OVERLAY_RO); });
            refuse_root_destination(name, o.destination, v);
            s.overlays.push_back(o);
            break;
        }
        case OPT_VOLATILE:
            s.volatile_mode = optarg ? value("--volatile=", v, core::parse_volatile_mode) : core::VolatileMode::Yes;
            break;
        case OPT_SETTINGS: s.settings_mode = value("--settings=", v, core::parse_settings_mode); break;
        case OPT_NOTIFY_READY: s.notify_ready = value("--notify-ready=", v, core::parse_boolean); break;
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
        if (auto g = group_of(c)) r.set_on_command_line.set(*g);
    }
    for (int i = optind; i < argc; i++) s.argv.push_back(copy[static_cast<size_t>(i)]);
    if (!s.argv.empty()) r.set_on_command_line.set(core::SettingGroup::StartMode);

    if (s.directory.empty() && s.image.empty())
        throw UsageError("no directory given: pass the container's root with -D DIR (or a disk image with -i)");
    if (!s.directory.empty() && !s.image.empty()) throw UsageError("-D and -i exclude each other: pass one of them");
    if (!s.network_namespace_path.empty() && s.private_network)
        throw UsageError("--network-namespace-path= cannot be combined with --private-network or other --network-* options");
    if (!machine_set) {
        const std::string& from = s.image.empty() ? s.directory : s.image;
        s.machine_name = core::machine_name_from_path(from);
        if (s.machine_name.empty()) throw UsageError("cannot derive a machine name from " + from + "; pass one with -M NAME");
    }
    if (!r.console_set || s.console == core::ConsoleMode::Autopipe) {
        bool tty = stdin_tty && stdout_tty;
        if (!r.console_set) s.console = tty ? core::ConsoleMode::Interactive : core::ConsoleMode::ReadOnly;
        else s.console = tty ? core::ConsoleMode::Interactive : core::ConsoleMode::Pipe;
    }
    if (s.start_mode == core::StartMode::Boot && s.kill_signal == 0) s.kill_signal = SIGRTMIN + 3;
    r.settings_name = s.machine_name;
    if (s.ephemeral && !machine_set) {
        // As nspawn: an ephemeral machine gets a random suffix, so several can run from one tree.
        char suffix[18];
        unsigned long long rnd = 0;
        if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd) throw UsageError("getrandom failed");
        snprintf(suffix, sizeof suffix, "-%016llx", rnd);
        std::string name = s.machine_name.substr(0, core::kHostNameMax - 17) + suffix;
        s.machine_name = name;
    }
    return r;
}

}  // namespace mk::spawn
