// SpawnSpec: everything the launcher needs to start one container, as plain data.
// Front ends (command-line options, .nspawn settings files, later an OCI config.json) produce it;
// the launcher only reads it. No I/O here, so it is cheap to build in tests.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mk::core {

enum class StartMode { Command, Pid2, Boot };
enum class ConsoleMode { Interactive, ReadOnly, Passive, Pipe, Autopipe };
enum class VolatileMode { No, Yes, State, Overlay };
enum class RegisterMode { Auto, Yes, No };  // Auto: register when machd is reachable
enum class ResolvConfMode {
    Off, CopyHost, CopyStatic, CopyUplink, CopyStub, ReplaceHost, ReplaceStatic, ReplaceUplink, ReplaceStub,
    BindHost, BindStatic, BindUplink, BindStub, Delete, Auto
};
enum class TimezoneMode { Off, Copy, Bind, Symlink, Delete, Auto };
enum class SettingsMode { No, Yes, Trusted, Override };

struct BindMount {
    std::string source;       // host path (absolute)
    std::string destination;  // path inside the container (absolute)
    bool read_only = false;
    bool recursive = true;    // rbind (default) or norbind
    bool idmap = false;
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

using Uuid = std::array<uint8_t, 16>;

struct SpawnSpec {
    // Image
    std::string directory;  // -D; absolute
    std::string image;      // -i
    std::string template_dir;
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
    std::vector<std::string> setenv;  // NAME=VALUE
    int kill_signal = 0;              // 0: SIGKILL for commands, SIGRTMIN+3 for --boot
    bool notify_ready = false;

    // Mounts
    std::vector<BindMount> binds;
    std::vector<TmpfsMount> tmpfs;
    std::vector<OverlayMount> overlays;
    std::vector<std::string> inaccessible;

    // Network
    bool private_network = false;

    // Security
    uint64_t capabilities_add = 0;   // bit n = capability n
    uint64_t capabilities_drop = 0;
    bool capabilities_all = false;   // --capability=all
    bool no_new_privileges = false;
    std::vector<std::string> syscall_allow;  // --system-call-filter=LIST (names or @groups)
    std::vector<std::string> syscall_deny;   // --system-call-filter=~LIST

    // Integration
    ResolvConfMode resolv_conf = ResolvConfMode::Auto;
    TimezoneMode timezone = TimezoneMode::Auto;
    RegisterMode register_mode = RegisterMode::Auto;
    bool keep_unit = false;
    std::string slice;                    // empty: machine.slice
    std::vector<std::string> properties;  // --property=NAME=VALUE
    SettingsMode settings_mode = SettingsMode::Yes;

    // I/O
    ConsoleMode console = ConsoleMode::Autopipe;  // resolved by the front end from isatty()
    bool quiet = false;
};

}  // namespace mk::core
