// SpawnSpec: everything the launcher needs to start one container, as plain data.
// Front ends (command-line options, .nspawn settings files, an OCI config.json) produce it, then
// finalize() resolves what the options imply; the launcher only reads it. No I/O here, so it is
// cheap to build in tests.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/base/id128.hpp"
#include "core/spawn/oci_spec.hpp"

namespace mk::core {

enum class StartMode { Command, Pid2, Boot };
enum class ConsoleMode { Interactive, ReadOnly, Passive, Pipe, Autopipe };
enum class VolatileMode { No, Yes, State, Overlay };
enum class RegisterMode { Auto, Yes, No };  // Auto: register when machd is reachable
enum class ResolvConfMode {
    Off,
    CopyHost,
    CopyStatic,
    CopyUplink,
    CopyStub,
    ReplaceHost,
    ReplaceStatic,
    ReplaceUplink,
    ReplaceStub,
    BindHost,
    BindStatic,
    BindUplink,
    BindStub,
    Delete,
    Auto
};
enum class TimezoneMode { Off, Copy, Bind, Symlink, Delete, Auto };
enum class SettingsMode { No, Yes, Trusted, Override };
enum class LinkJournalMode { No, Auto, Guest, Host, TryGuest, TryHost };
// --private-users=: Fixed uses uid_shift (kUidInvalid: take it from the owner of the root directory,
// which is what "yes" means); Pick allocates a free range; Identity maps 0..65535 to itself.
enum class UserNamespaceMode { No, Fixed, Pick, Identity };
enum class UserNamespaceOwnership { Off, Chown, Map, Auto };
enum class PortProtocol { Tcp, Udp };

inline constexpr uint32_t kUidInvalid = UINT32_MAX;
inline constexpr uint64_t kRlimitInfinity = UINT64_MAX;
inline constexpr size_t kRlimitCount = 16;  // RLIMIT_CPU .. RLIMIT_RTTIME, indexed by RLIMIT_* number

// Paths of binds and overlays: a leading '+' (nspawn syntax) means "relative to the container root",
// e.g. "+/var/data"; the launcher resolves it inside the root. Otherwise absolute host paths.
struct BindMount {
    std::string source;       // host path (absolute, or '+'-prefixed)
    std::string destination;  // path inside the container (absolute)
    bool read_only = false;
    bool recursive = true;  // rbind (default) or norbind
    bool idmap = false;
    bool idmap_root = false;       // "rootidmap": only the container's root is mapped to the owner
    bool idmap_recursive = false;  // OCI "ridmap": the submounts of an rbind are idmapped too
    // OCI mounts[].uidMappings/gidMappings as uid_map/gid_map texts: the idmapped mount's own
    // namespace instead of the container's (empty: the container's).
    std::string idmap_uid_map{}, idmap_gid_map{};
};

struct TmpfsMount {
    std::string destination;
    std::string options;  // extra mount options, e.g. "mode=0755,size=10M"
};

struct OverlayMount {
    std::vector<std::string> lower;  // host paths, lowest last as in overlayfs lowerdir=
    std::string upper;               // host path; empty for --overlay-ro
    std::string destination;
    bool read_only = false;
};

using Uuid = Id128;

struct PortForward {
    PortProtocol protocol = PortProtocol::Tcp;
    uint16_t host_port = 0;
    uint16_t container_port = 0;
};

struct ResourceLimit {
    uint64_t soft = 0;  // kRlimitInfinity for "infinity"
    uint64_t hard = 0;
};

// --set-credential=/--load-credential=: written to /run/host/credentials/ID for the payload.
struct Credential {
    std::string id;
    std::string data;  // may contain NUL bytes
};

struct SpawnSpec {
    // Image
    std::string directory;  // -D; absolute
    std::string image;      // -i
    std::string template_dir;
    std::string root_hash;      // --root-hash= (lowercase hex): dm-verity for -i
    std::string root_hash_sig;  // --root-hash-sig=: an absolute path, or "base64:..."
    std::string verity_data;    // --verity-data=: the hash device, when not in the image
    bool ephemeral = false;
    VolatileMode volatile_mode = VolatileMode::No;
    bool read_only = false;

    // Identity
    std::string machine_name;  // -M, or derived from the directory
    std::string hostname;      // --hostname; empty: machine name
    std::optional<Uuid> uuid;

    // Execution
    StartMode start_mode = StartMode::Command;
    std::vector<std::string> argv;  // command, or init arguments with --boot
    std::string user;               // -u; empty: root
    std::string chdir;
    std::string pivot_root_new;  // --pivot-root=NEW[:OLD]; empty: no pivot
    std::string pivot_root_old;
    std::vector<std::string> setenv;  // NAME=VALUE
    int kill_signal = 0;              // 0: SIGKILL for commands, SIGRTMIN+3 for --boot
    bool notify_ready = false;
    std::string personality;  // "" (host's), "x86", "x86-64", ...
    bool suppress_sync = false;

    // Mounts
    std::vector<BindMount> binds;
    std::vector<TmpfsMount> tmpfs;
    std::vector<OverlayMount> overlays;
    std::vector<std::string> inaccessible;
    std::vector<std::string> bind_users;  // --bind-user=

    // Network
    bool private_network = false;
    bool network_veth = false;
    std::vector<std::string> network_interfaces;  // IF[:CIF]
    std::vector<std::string> network_macvlan;
    std::vector<std::string> network_ipvlan;
    std::vector<std::string> network_veth_extra;  // HOSTIF[:CIF]
    std::string network_bridge;
    std::string network_zone;
    std::vector<PortForward> ports;
    std::string network_namespace_path;  // join this namespace instead of creating one

    // User namespace
    UserNamespaceMode userns_mode = UserNamespaceMode::No;
    uint32_t uid_shift = kUidInvalid;
    uint32_t uid_range = 0x10000;
    UserNamespaceOwnership userns_ownership = UserNamespaceOwnership::Auto;

    // Security
    uint64_t capabilities_add = 0;  // bit n = capability n
    uint64_t capabilities_drop = 0;
    bool capabilities_all = false;  // --capability=all
    uint64_t capabilities_ambient = 0;
    std::string selinux_context;        // -Z: exec label of the payload
    std::string selinux_apifs_context;  // -L: label of the API file systems
    bool no_new_privileges = false;
    std::vector<std::string> syscall_allow;  // --system-call-filter=LIST (names or @groups)
    std::vector<std::string> syscall_deny;   // --system-call-filter=~LIST

    // Resources
    std::array<std::optional<ResourceLimit>, kRlimitCount> rlimits;  // unset: kernel's PID 1 defaults
    std::optional<int> oom_score_adjust;
    std::vector<unsigned> cpu_affinity;  // CPU numbers, sorted; empty: inherit

    std::vector<Credential> credentials;  // ids unique, in command-line order

    // OCI runtime-spec fields with no nspawn option (config.json front end only; oci.present).
    OciSpec oci;

    // Integration
    ResolvConfMode resolv_conf = ResolvConfMode::Auto;
    TimezoneMode timezone = TimezoneMode::Auto;
    LinkJournalMode link_journal = LinkJournalMode::Auto;
    RegisterMode register_mode = RegisterMode::Auto;
    bool keep_unit = false;
    std::string slice;                    // empty: machine.slice
    std::vector<std::string> properties;  // --property=NAME=VALUE
    SettingsMode settings_mode = SettingsMode::Yes;

    // I/O
    ConsoleMode console = ConsoleMode::Autopipe;  // resolved by the front end from isatty()
    bool quiet = false;

    // Set by finalize() (finalize.hpp) from the front end's environment: the launcher reads none.
    std::string term;                              // $TERM of the caller, sanitized by the plan
    std::string container_manager;                 // $container for the guest; empty: systemd-nspawn
    std::optional<bool> unified_cgroup_hierarchy;  // $SYSTEMD_NSPAWN_UNIFIED_HIERARCHY
    bool report_exec_timing = false;               // $MK_SPAWN_TIMING: print the time to exec
    bool finalized = false;
};

}  // namespace mk::core
