#include "spawn/options.hpp"

#include <getopt.h>
#include <sys/random.h>
#include <signal.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <optional>
#include <string_view>
#include <tuple>

#include "core/base/error.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/names.hpp"
#include "core/base/passwd.hpp"
#include "core/kernel/capabilities.hpp"
#include "core/kernel/seccomp.hpp"
#include "core/spawn/credentials.hpp"
#include "core/spawn/finalize.hpp"
#include "core/spawn/mount_plan.hpp"
#include "core/spawn/oci_config.hpp"
#include "core/spawn/option_values.hpp"

namespace mk::spawn {
namespace {

using core::UsageError;

enum {
    OPT_HOSTNAME = 0x100,
    OPT_CHDIR,
    OPT_BIND,
    OPT_BIND_RO,
    OPT_TMPFS,
    OPT_READ_ONLY,
    OPT_PRIVATE_NETWORK,
    OPT_UUID,
    OPT_CONSOLE,
    OPT_KILL_SIGNAL,
    OPT_CAPABILITY,
    OPT_DROP_CAPABILITY,
    OPT_NO_NEW_PRIVILEGES,
    OPT_SYSCALL_FILTER,
    OPT_RESOLV_CONF,
    OPT_TIMEZONE,
    OPT_REGISTER,
    OPT_VERSION,
    OPT_KEEP_UNIT,
    OPT_SLICE,
    OPT_PROPERTY,
    OPT_INACCESSIBLE,
    OPT_NOTIFY_READY,
    OPT_VOLATILE,
    OPT_SETTINGS,
    OPT_OVERLAY,
    OPT_OVERLAY_RO,
    OPT_PRIVATE_USERS,
    OPT_PRIVATE_USERS_OWNERSHIP,
    OPT_PRIVATE_USERS_CHOWN,
    OPT_NETWORK_INTERFACE,
    OPT_NETWORK_MACVLAN,
    OPT_NETWORK_IPVLAN,
    OPT_NETWORK_VETH_EXTRA,
    OPT_NETWORK_BRIDGE,
    OPT_NETWORK_ZONE,
    OPT_NETWORK_NAMESPACE_PATH,
    OPT_TEMPLATE,
    OPT_RLIMIT,
    OPT_OOM_SCORE_ADJUST,
    OPT_CPU_AFFINITY,
    OPT_PERSONALITY,
    OPT_SUPPRESS_SYNC,
    OPT_AMBIENT_CAPABILITY,
    OPT_PIVOT_ROOT,
    OPT_SET_CREDENTIAL,
    OPT_LOAD_CREDENTIAL,
    OPT_NO_PAGER,
    OPT_ROOT_HASH,
    OPT_ROOT_HASH_SIG,
    OPT_VERITY_DATA,
    OPT_BIND_USER,
    OPT_OCI_BUNDLE,
    OPT_LINK_JOURNAL,
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
    {"rlimit", required_argument, nullptr, OPT_RLIMIT},
    {"oom-score-adjust", required_argument, nullptr, OPT_OOM_SCORE_ADJUST},
    {"cpu-affinity", required_argument, nullptr, OPT_CPU_AFFINITY},
    {"personality", required_argument, nullptr, OPT_PERSONALITY},
    {"suppress-sync", required_argument, nullptr, OPT_SUPPRESS_SYNC},
    {"ambient-capability", required_argument, nullptr, OPT_AMBIENT_CAPABILITY},
    {"pivot-root", required_argument, nullptr, OPT_PIVOT_ROOT},
    {"set-credential", required_argument, nullptr, OPT_SET_CREDENTIAL},
    {"load-credential", required_argument, nullptr, OPT_LOAD_CREDENTIAL},
    {"no-pager", no_argument, nullptr, OPT_NO_PAGER},
    {"root-hash", required_argument, nullptr, OPT_ROOT_HASH},
    {"root-hash-sig", required_argument, nullptr, OPT_ROOT_HASH_SIG},
    {"verity-data", required_argument, nullptr, OPT_VERITY_DATA},
    {"bind-user", required_argument, nullptr, OPT_BIND_USER},
    {"oci-bundle", required_argument, nullptr, OPT_OCI_BUNDLE},
    {"slice", required_argument, nullptr, 'S'},
    {"selinux-context", required_argument, nullptr, 'Z'},
    {"selinux-apifs-context", required_argument, nullptr, 'L'},
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
    case 'a':
    case 'b': return G::StartMode;
    case 'x': return G::Ephemeral;
    case 'U':
    case OPT_PRIVATE_USERS:
    case OPT_PRIVATE_USERS_OWNERSHIP:
    case OPT_PRIVATE_USERS_CHOWN: return G::UserNamespace;
    case 'E': return G::Environment;
    case 'u': return G::User;
    case OPT_CHDIR: return G::WorkingDirectory;
    case OPT_CAPABILITY:
    case OPT_DROP_CAPABILITY:
    case OPT_AMBIENT_CAPABILITY: return G::Capability;
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
    case OPT_BIND:
    case OPT_BIND_RO:
    case OPT_TMPFS:
    case OPT_INACCESSIBLE:
    case OPT_OVERLAY:
    case OPT_OVERLAY_RO: return G::CustomMounts;
    case 'p': return G::ExposePorts;
    case OPT_OOM_SCORE_ADJUST: return G::OomScoreAdjust;
    case OPT_CPU_AFFINITY: return G::CpuAffinity;
    case OPT_PERSONALITY: return G::Personality;
    case OPT_SUPPRESS_SYNC: return G::SuppressSync;
    case OPT_PIVOT_ROOT: return G::PivotRoot;
    case OPT_BIND_USER: return G::BindUser;
    case OPT_PRIVATE_NETWORK:
    case 'n':
    case OPT_NETWORK_VETH_EXTRA:
    case OPT_NETWORK_BRIDGE:
    case OPT_NETWORK_ZONE:
    case OPT_NETWORK_INTERFACE:
    case OPT_NETWORK_MACVLAN:
    case OPT_NETWORK_IPVLAN:
    case OPT_NETWORK_NAMESPACE_PATH: return G::Network;
    default: return std::nullopt;
    }
}

template <typename F>
auto value(const char* opt, std::string_view v, F&& f) {
    return core::parse_option_value(opt, v, std::forward<F>(f));
}

void refuse_root_destination(const char* opt, const std::string& dst, std::string_view v) {
    if (dst == "/")
        throw UsageError("Invalid " + std::string(opt) + " value " + core::quote_value(v) +
                         ": cannot mount over the container root");
}

// nspawn refuses a second credential with the same id rather than pick one.
void add_credential(core::SpawnSpec& s, core::Credential c) {
    size_t total = c.data.size();
    for (const auto& e : s.credentials) {
        if (e.id == c.id) throw UsageError("duplicate credential '" + c.id + "': pass each id once");
        total += e.data.size();
    }
    if (s.credentials.size() >= core::kCredentialsMax) throw UsageError("too many credentials (at most 256)");
    if (total > core::kCredentialSizeMax) throw UsageError("credentials larger than 1 MiB in total");
    s.credentials.push_back(std::move(c));
}

// --load-credential=ID:PATH, read now as nspawn does: an absolute path may also be an AF_UNIX stream
// socket (connected, read to EOF); a relative one names a credential spawn itself was given
// ($CREDENTIALS_DIRECTORY), so credentials can be passed down through spawn@.service.
core::Credential load_credential(std::string_view v) {
    auto [id, path] = value("--load-credential=", v, core::parse_load_credential);
    if (path[0] != '/') {
        const char* dir = getenv("CREDENTIALS_DIRECTORY");
        if (!dir || !*dir)
            throw UsageError("--load-credential=" + std::string(v) +
                             ": no credentials were passed to spawn; use an absolute path");
        if (path.find('/') != std::string::npos || !core::credential_name_is_valid(path))
            throw UsageError("--load-credential=" + std::string(v) + ": not a credential name");
        path = std::string(dir) + "/" + path;
    }
    std::string data;
    try {
        data = core::read_credential_source(path, core::kCredentialSizeMax);
    } catch (const std::system_error& e) {
        throw UsageError("--load-credential=" + std::string(v) + ": cannot read " + path + ": " +
                         std::strerror(e.code().value()));
    }
    return core::Credential{std::move(id), std::move(data)};
}

// "--bind" or "-D": how to name option `c` in a message.
std::string option_name(int c) {
    if (c < 0x100) return std::string("-") + static_cast<char>(c);
    for (const auto& o : kLongOptions)
        if (o.name && o.val == c) return std::string("--") + o.name;
    return "an option";
}

// With --oci-bundle=, config.json describes the container; the command line may add only what it
// does not: identity, registration, console, settings-file use.
bool combines_with_oci_bundle(int c) {
    switch (c) {
    case 'q':
    case 'M':
    case OPT_UUID:
    case OPT_REGISTER:
    case OPT_KEEP_UNIT:
    case 'S':
    case OPT_PROPERTY:
    case OPT_CONSOLE:
    case 'P':
    case OPT_SETTINGS:
    case OPT_OCI_BUNDLE:
    case OPT_NO_PAGER: return true;
    default: return false;
    }
}

void apply_oci_bundle(ParsedOptions& r, const std::string& bundle, const std::vector<std::string>& not_with_oci) {
    core::SpawnSpec& s = r.spec;
    if (!not_with_oci.empty())
        throw UsageError("--oci-bundle= cannot be combined with " + not_with_oci.front() +
                         ": config.json describes the container");
    if (!s.argv.empty())
        throw UsageError("--oci-bundle= takes the command from config.json (process.args): drop the command line");
    auto text = core::read_host_file(bundle + "/config.json", core::kOciConfigMax + 1);
    if (!text) throw UsageError("--oci-bundle=" + bundle + ": cannot read config.json: " + std::strerror(errno));
    core::SpawnSpec o = core::parse_oci_config(*text, bundle);
    if (auto field = core::oci_unapplied_field(o))
        throw UsageError("OCI config field '" + *field + "' is not supported by spawn");
    // What the command line may set on top (see combines_with_oci_bundle()).
    o.machine_name = s.machine_name;
    o.uuid = s.uuid;
    o.quiet = s.quiet;
    o.register_mode = s.register_mode;
    o.keep_unit = s.keep_unit;
    o.slice = s.slice;
    o.properties = s.properties;
    o.settings_mode = s.settings_mode;
    if (r.console_set) o.console = s.console;
    else r.console_set = o.console != core::ConsoleMode::Autopipe;
    s = std::move(o);
    // The groups config.json set win over .nspawn files, as command-line options do.
    for (auto g : {core::SettingGroup::StartMode, core::SettingGroup::Environment, core::SettingGroup::WorkingDirectory,
                   core::SettingGroup::CustomMounts, core::SettingGroup::Network, core::SettingGroup::Capability,
                   core::SettingGroup::NoNewPrivileges, core::SettingGroup::OomScoreAdjust, core::SettingGroup::Hostname,
                   core::SettingGroup::ReadOnly})
        r.set_on_command_line.set(g);
    for (size_t i = 0; i < core::kRlimitCount; i++)
        if (s.rlimits[i]) r.set_on_command_line.set_rlimit(static_cast<int>(i));
}

}  // namespace

const char* help_text() {
    return R"(spawn [OPTIONS...] [COMMAND [ARGS...]]

Run a command or boot an OS tree in a light-weight container.

  -h --help                 Show this help
     --version              Print the version
  -q --quiet                Do not show status information
     --no-pager             Accepted for nspawn compatibility (spawn never pages)
  -D --directory=PATH       Root directory for the container
  -i --image=PATH           Disk image (GPT per the Discoverable Partitions Specification, or a bare file system)
     --oci-bundle=PATH      Run an OCI bundle (config.json with ociVersion 1.0.0, a subset; see spawn(1))
     --root-hash=HASH       dm-verity root hash of the image (needs a kernel with device-mapper)
     --root-hash-sig=SIG    PKCS#7 signature of the root hash: a path, or base64:DATA
     --verity-data=PATH     dm-verity hash device of the image
  -b --boot                 Boot up the tree's init; remaining arguments go to it
  -x --ephemeral            Run on a throw-away overlay of the tree, removed at exit
     --template=PATH        Create a missing root directory as a copy of PATH
     --volatile[=MODE]      yes (tmpfs root + the tree's /usr), state (tmpfs /var), overlay
     --settings=MODE        Use .nspawn settings files: yes, no, trusted, override
  -U                        Equivalent to --private-users=pick --private-users-ownership=auto
     --private-users[=no|yes|pick|identity|UID[:COUNT]]  Run in a user namespace
     --private-users-ownership=off|chown|map|auto  How the tree's owners fit the range (map: idmapped mount;
                            as an ordinary user, chown moves a tree of yours into your subordinate range once)
  -a --as-pid2              Run COMMAND as PID 2, under a minimal init as PID 1
     --chdir=PATH           Working directory inside the container
  -E --setenv=NAME[=VALUE]  Pass an environment variable to PID 1
  -u --user=USER            Run the command as USER (looked up in the container)
     --kill-signal=SIGNAL   Signal sent to PID 1 when spawn is asked to stop
     --pivot-root=PATH[:PATH]  Make PATH of the tree the container's root (the old one at the second PATH)
     --personality=ARCH     Pick the personality (x86, x86-64) for the container
     --rlimit=NAME=LIMIT    Set a resource limit (SOFT[:HARD]) for the payload
     --oom-score-adjust=VALUE  Adjust the OOM score of the payload (-1000..1000)
     --cpu-affinity=CPUS    Run the container on these CPUs (e.g. 0-1,3)
     --set-credential=ID:VALUE  Pass a credential with a literal value to the container
     --load-credential=ID:PATH  Pass a credential read from a file or socket
     --suppress-sync=BOOL   Turn sync(), fsync() and friends into no-ops inside the container
     --notify-ready=BOOL    Wait for the init's READY=1 before reporting ready
  -M --machine=NAME         Machine name (default: the directory's name); without -D/-i,
                            also the image: NAME, NAME.raw or NAME.mstack in /var/lib/machines
     --hostname=NAME        Hostname inside the container (default: the machine name)
     --uuid=UUID            Machine UUID
     --register=BOOL        Register with machd (default: when machd runs)
     --keep-unit            Do not create a scope; use the unit spawn runs in
  -S --slice=SLICE          Slice for the machine's scope
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
     --ambient-capability=CAP  Give the command CAP as an ambient capability
     --no-new-privileges=BOOL  Set PR_SET_NO_NEW_PRIVS for the payload
     --system-call-filter=LIST|~LIST  Allow (or with ~, deny) system calls
  -Z --selinux-context=LABEL       SELinux label of the payload (needs SELinux)
  -L --selinux-apifs-context=LABEL SELinux label of the API file systems (needs SELinux)
     --read-only            Mount the root directory read-only
     --bind=PATH[:PATH[:OPTS]]     Bind mount a host path into the container
     --bind-ro=PATH[:PATH[:OPTS]]  Bind mount a host path read-only
     --tmpfs=PATH[:OPTS]    Mount an empty tmpfs
     --overlay=PATH[:PATH...]:PATH   Overlay mount: lower directories, upper, destination
     --overlay-ro=PATH[:PATH...]:PATH  Read-only overlay mount
     --inaccessible=PATH    Make PATH inaccessible inside the container
     --bind-user=NAME       Bind a host user (and home) into the container; needs -U
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
    std::string oci_bundle;
    std::vector<std::string> not_with_oci;  // options that config.json describes itself

    optind = 0;  // full re-initialisation, so parse_options can be called more than once
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv.data(), "+hqD:i:M:u:E:abPxUnp:S:Z:L:", kLongOptions, nullptr)) >= 0) {
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
        case OPT_NETWORK_NAMESPACE_PATH:
            s.network_namespace_path = value("--network-namespace-path=", v, absolute_host_path);
            break;
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
        case OPT_SYSCALL_FILTER: try { core::parse_syscall_filter(v, s.syscall_allow, s.syscall_deny);
            } catch (const UsageError& e) {
                throw UsageError("invalid --system-call-filter: " + std::string(e.what()));
            }
            break;
        case OPT_RESOLV_CONF: s.resolv_conf = value("--resolv-conf=", v, core::parse_resolv_conf_mode); break;
        case OPT_LINK_JOURNAL: s.link_journal = value("--link-journal=", v, core::parse_link_journal_mode); break;
        case OPT_TIMEZONE: s.timezone = value("--timezone=", v, core::parse_timezone_mode); break;
        case OPT_REGISTER:
            s.register_mode =
                value("--register=", v, core::parse_boolean) ? core::RegisterMode::Yes : core::RegisterMode::No;
            break;
        case OPT_KEEP_UNIT: s.keep_unit = true; break;
        case 'S': {
            std::string sl(v);
            if (!sl.ends_with(".slice") || sl.size() <= 6)
                throw UsageError("invalid --slice '" + sl + "': expected a name ending in .slice");
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
            core::PrivateUsers u = optarg ? value("--private-users=", v, core::parse_private_users)
                                          : core::PrivateUsers{core::UserNamespaceMode::Fixed};
            s.userns_mode = u.mode;
            s.uid_shift = u.uid_shift;
            s.uid_range = u.uid_range;
            break;
        }
        case OPT_PRIVATE_USERS_OWNERSHIP:
            s.userns_ownership = value("--private-users-ownership=", v, core::parse_userns_ownership);
            break;
        case OPT_PRIVATE_USERS_CHOWN: s.userns_ownership = core::UserNamespaceOwnership::Chown; break;
        case OPT_OVERLAY:
        case OPT_OVERLAY_RO: {
            const char* name = c == OPT_OVERLAY ? "--overlay=" : "--overlay-ro=";
            core::OverlayMount o =
                value(name, v, [&](std::string_view x) { return core::parse_overlay(x, c == OPT_OVERLAY_RO); });
            refuse_root_destination(name, o.destination, v);
            s.overlays.push_back(o);
            break;
        }
        case OPT_VOLATILE:
            s.volatile_mode = optarg ? value("--volatile=", v, core::parse_volatile_mode) : core::VolatileMode::Yes;
            break;
        case OPT_SETTINGS: s.settings_mode = value("--settings=", v, core::parse_settings_mode); break;
        case OPT_NOTIFY_READY: s.notify_ready = value("--notify-ready=", v, core::parse_boolean); break;
        case OPT_RLIMIT: {
            auto [resource, limit] = value("--rlimit=", v, core::parse_rlimit);
            s.rlimits[static_cast<size_t>(resource)] = limit;
            r.set_on_command_line.set_rlimit(resource);
            break;
        }
        case OPT_OOM_SCORE_ADJUST: s.oom_score_adjust = value("--oom-score-adjust=", v, core::parse_oom_score_adjust); break;
        case OPT_CPU_AFFINITY: s.cpu_affinity = value("--cpu-affinity=", v, core::parse_cpu_set); break;
        case OPT_PERSONALITY: s.personality = value("--personality=", v, core::parse_personality); break;
        case OPT_SUPPRESS_SYNC: s.suppress_sync = value("--suppress-sync=", v, core::parse_boolean); break;
        case OPT_AMBIENT_CAPABILITY: {
            uint64_t m = value("--ambient-capability=", v, core::parse_capability_list);
            if (m == core::kAllCapabilities)
                throw UsageError("--ambient-capability= does not take \"all\"; name the capabilities");
            s.capabilities_ambient |= m;
            break;
        }
        case OPT_PIVOT_ROOT:
            std::tie(s.pivot_root_new, s.pivot_root_old) = value("--pivot-root=", v, core::parse_pivot_root);
            break;
        case OPT_SET_CREDENTIAL: add_credential(s, value("--set-credential=", v, core::parse_set_credential)); break;
        case OPT_LOAD_CREDENTIAL: add_credential(s, load_credential(v)); break;
        case OPT_NO_PAGER: break;  // spawn's output is never paged
        case OPT_ROOT_HASH: s.root_hash = value("--root-hash=", v, core::parse_root_hash); break;
        case OPT_ROOT_HASH_SIG: s.root_hash_sig = value("--root-hash-sig=", v, core::parse_root_hash_sig); break;
        case OPT_VERITY_DATA: s.verity_data = value("--verity-data=", v, absolute_host_path); break;
        case OPT_BIND_USER: s.bind_users.push_back(value("--bind-user=", v, core::parse_user_name)); break;
        case 'Z': s.selinux_context = value("--selinux-context=", v, core::parse_selinux_label); break;
        case 'L': s.selinux_apifs_context = value("--selinux-apifs-context=", v, core::parse_selinux_label); break;
        case OPT_OCI_BUNDLE: oci_bundle = value("--oci-bundle=", v, absolute_host_path); break;
        case '?': {
            std::string bad = optind > 0 && optind <= argc ? copy[static_cast<size_t>(optind - 1)] : "?";
            if (optopt) bad = std::string("-") + static_cast<char>(optopt);
            throw UsageError("unknown option '" + bad + "'; see spawn --help");
        }
        case ':': throw UsageError("option '" + opt + "' needs a value; see spawn --help");
        default: throw UsageError("unknown option; see spawn --help");
        }
        if (auto g = group_of(c)) r.set_on_command_line.set(*g);
        if (!combines_with_oci_bundle(c)) not_with_oci.push_back(option_name(c));
    }
    for (int i = optind; i < argc; i++) s.argv.push_back(copy[static_cast<size_t>(i)]);
    if (!s.argv.empty()) r.set_on_command_line.set(core::SettingGroup::StartMode);

    if (!oci_bundle.empty()) apply_oci_bundle(r, oci_bundle, not_with_oci);

    if (s.directory.empty() && s.image.empty() && machine_set) {
        // As systemd-nspawn -M NAME: the machine's image from the search path (NAME, NAME.raw,
        // and a pulled image's NAME.mstack).
        std::vector<std::string> dirs(std::begin(core::kMachineSearchPath), std::end(core::kMachineSearchPath));
        auto found = core::find_machine_image(s.machine_name, dirs);
        if (!found)
            throw UsageError("no image for machine '" + s.machine_name +
                             "' in /etc/machines, /run/machines, /var/lib/machines, /usr/local/lib/machines or "
                             "/usr/lib/machines; pass its root with -D DIR or -i IMAGE");
        (found->is_raw ? s.image : s.directory) = found->path;
    }
    if (s.directory.empty() && s.image.empty())
        throw UsageError(
            "no directory given: pass the container's root with -D DIR (or a disk image with -i), or -M NAME of an image in "
            "/var/lib/machines");
    if (!s.directory.empty() && !s.image.empty()) throw UsageError("-D and -i exclude each other: pass one of them");
    // A pulled OCI image (NAME.mstack) is an image to its user, a directory to us: -i takes it too.
    if (core::is_mstack_path(s.image)) std::swap(s.directory, s.image);
    if (!s.network_namespace_path.empty() && s.private_network)
        throw UsageError("--network-namespace-path= cannot be combined with --private-network or other --network-* options");
    if (!machine_set) {
        const std::string& from = s.image.empty() ? s.directory : s.image;
        s.machine_name = core::machine_name_from_path(from);
        if (s.machine_name.empty())
            throw UsageError("cannot derive a machine name from " + from + "; pass one with -M NAME");
    }
    if (!r.console_set || s.console == core::ConsoleMode::Autopipe) {
        bool tty = stdin_tty && stdout_tty;
        if (!r.console_set) s.console = tty ? core::ConsoleMode::Interactive : core::ConsoleMode::ReadOnly;
        else s.console = tty ? core::ConsoleMode::Interactive : core::ConsoleMode::Pipe;
    }
    core::finalize(s);  // spawn's main finalizes again after a settings file changed the spec
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
