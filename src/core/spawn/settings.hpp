// .nspawn settings files (systemd.nspawn(5), as of systemd 252): parsing, lookup, and merging into a
// SpawnSpec with nspawn's precedence and trust rules.
//
// parse_settings() is pure (takes the contents, not a path). find_settings_file() reads files.
// apply_settings() only modifies the SpawnSpec and the warnings it is given. All thread-compatible.
#pragma once

#include <array>
#include <bitset>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/spawn/option_values.hpp"
#include "core/spawn/spawn_spec.hpp"

namespace mk::core {

// Bounds on what a settings file may contain (the file comes with a pulled image, so it is input
// from whoever published the image).
inline constexpr size_t kSettingsFileMax = 1024 * 1024;
inline constexpr size_t kSettingsLineMax = 64 * 1024;
inline constexpr size_t kSettingsListMax = 4096;
inline constexpr size_t kSettingsWarningsMax = 64;

// Everything a .nspawn file said. std::nullopt / empty vector: the file did not set it (an empty
// assignment "Bind=" resets a list to empty, i.e. back to "not set", as in systemd).
struct Settings {
    // [Exec]
    std::optional<bool> boot;         // Boot=
    std::optional<bool> process_two;  // ProcessTwo=
    std::optional<bool> ephemeral;
    std::vector<std::string> parameters;
    std::vector<std::string> environment;  // NAME=VALUE
    std::optional<std::string> user;
    std::optional<uint64_t> capability;  // kAllCapabilities for "all"
    std::optional<uint64_t> ambient_capability;
    std::optional<uint64_t> drop_capability;
    std::optional<int> kill_signal;
    std::optional<std::string> personality;
    std::optional<Uuid> machine_id;
    std::optional<std::string> working_directory;
    std::optional<std::pair<std::string, std::string>> pivot_root;  // NEW, OLD (may be empty)
    std::optional<PrivateUsers> private_users;
    std::optional<bool> notify_ready;
    std::vector<std::string> syscall_allow;                          // SystemCallFilter=
    std::vector<std::string> syscall_deny;                           // SystemCallFilter=~
    std::array<std::optional<ResourceLimit>, kRlimitCount> rlimits;  // Limit*=, by RLIMIT_* number
    std::optional<std::string> hostname;
    std::optional<bool> no_new_privileges;
    std::optional<int> oom_score_adjust;
    std::optional<std::vector<unsigned>> cpu_affinity;
    std::optional<ResolvConfMode> resolv_conf;
    std::optional<LinkJournalMode> link_journal;
    std::optional<TimezoneMode> timezone;
    std::optional<bool> suppress_sync;

    // [Files]
    std::optional<bool> read_only;
    std::optional<VolatileMode> volatile_mode;
    std::vector<BindMount> binds;  // Bind= and BindReadOnly=, in file order
    std::vector<TmpfsMount> tmpfs;
    std::vector<std::string> inaccessible;
    std::vector<OverlayMount> overlays;                             // Overlay= and OverlayReadOnly=
    std::optional<UserNamespaceOwnership> private_users_ownership;  // also PrivateUsersChown=
    std::vector<std::string> bind_user;

    // [Network]
    std::optional<bool> private_network;
    std::vector<std::string> network_interfaces;  // Interface=
    std::vector<std::string> network_macvlan;     // MACVLAN=
    std::vector<std::string> network_ipvlan;      // IPVLAN=
    std::optional<bool> network_veth;             // VirtualEthernet=
    std::vector<std::string> network_veth_extra;  // VirtualEthernetExtra=
    std::optional<std::string> network_bridge;
    std::optional<std::string> network_zone;
    std::vector<PortForward> ports;

    // The `source` given to parse_settings(), for messages.
    std::string source;
    // Unknown sections and keys, assignments outside a section, ignored conflicts: "file:line: ..."
    // each; at most kSettingsWarningsMax, then one "further warnings suppressed".
    std::vector<std::string> warnings;
};

// Parses the contents of a .nspawn file. `source` names it in messages ("file:line: ...").
// Throws UsageError (one line, "source:line: what is wrong") on syntax errors, invalid values and
// exceeded bounds.
Settings parse_settings(std::string_view contents, std::string_view source);

// Which groups of settings the command line set; those win over the file unless --settings=override.
// Groups follow nspawn's SETTING_* bits: e.g. --bind, --tmpfs, --overlay, --inaccessible are all
// CustomMounts; --private-network, --network-* are Network.
enum class SettingGroup : unsigned {
    StartMode,  // -b, -a, and a command line / init arguments
    Ephemeral,
    Environment,
    User,
    WorkingDirectory,
    PivotRoot,
    Capability,  // --capability, --drop-capability, --ambient-capability
    KillSignal,
    Personality,
    MachineId,  // --uuid
    NotifyReady,
    UserNamespace,  // --private-users, --private-users-ownership, -U
    SyscallFilter,
    Hostname,
    NoNewPrivileges,
    OomScoreAdjust,
    CpuAffinity,
    ResolvConf,
    LinkJournal,
    Timezone,
    SuppressSync,
    ReadOnly,
    Volatile,
    CustomMounts,
    BindUser,
    Network,
    ExposePorts,
    Rlimit,  // use SettingsMask::set_rlimit() for one resource
    Count_,
};

struct SettingsMask {
    std::bitset<static_cast<size_t>(SettingGroup::Count_)> groups;
    std::bitset<kRlimitCount> rlimits;  // per RLIMIT_* number

    void set(SettingGroup g) { groups.set(static_cast<size_t>(g)); }
    void set_rlimit(int resource) { rlimits.set(static_cast<size_t>(resource)); }
    [[nodiscard]] bool has(SettingGroup g) const { return groups.test(static_cast<size_t>(g)); }
    [[nodiscard]] bool has_rlimit(int resource) const { return rlimits.test(static_cast<size_t>(resource)); }
};

// How far a settings file must be trusted for a key to apply. Each key's class sits in its row of
// the key table, so a new key cannot be added without deciding it (CVE-2026-40226 was a key merged
// by a hand-written branch that forgot the check).
enum class SettingTrust {
    Any,        // harmless, or only narrows the sandbox: any file may set it
    Trusted,    // touches host resources or widens the sandbox: only /etc and /run files
    Narrowing,  // an untrusted file gets only the narrowing part (NoNewPrivileges=yes, SystemCallFilter=~…)
};

struct SettingsKeyInfo {
    std::string_view section;
    std::string_view name;
    SettingGroup group;
    SettingTrust trust;
};

// Every key parse_settings() knows, in table order (for tests and documentation).
std::vector<SettingsKeyInfo> settings_keys();

// Merges `settings` into `spec`.
// - mode No: does nothing. Yes/Trusted: groups set on the command line are kept. Override: the file
//   wins for everything it sets.
// - An untrusted file (trusted == false and mode != Trusted) cannot touch host resources or weaken
//   the sandbox: such keys are skipped with a warning "…: Bind= ignored, file is not trusted". The
//   gated set is nspawn 252's merge_settings() plus what CVE-2026-40226 showed was missing
//   (PivotRoot=, BindUser=, Ephemeral=) plus NoNewPrivileges=no and SystemCallFilter= allow entries.
void apply_settings(const Settings& settings, SpawnSpec& spec, bool trusted, std::vector<std::string>& warnings,
                    const SettingsMask& set_on_command_line, SettingsMode mode);

struct SettingsFile {
    std::string path;
    bool trusted = false;
    std::string contents;  // read at lookup time, so what is parsed is what was found
};

// nspawn's lookup: <etc_dir>/<machine>.nspawn, then <run_dir>/<machine>.nspawn (trusted), else
// <dir of image>/<machine>.nspawn (untrusted), where image_path is the -D directory or -i image
// (empty: no image-side lookup). nullopt if none exists. Files are opened O_NOFOLLOW|O_CLOEXEC,
// must be regular files and at most kSettingsFileMax bytes; otherwise UsageError. Throws
// UsageError for an invalid machine name and std::system_error for I/O errors other than ENOENT.
std::optional<SettingsFile> find_settings_file(std::string_view machine_name, std::string_view image_path,
                                               const std::string& etc_dir = "/etc/systemd/nspawn",
                                               const std::string& run_dir = "/run/systemd/nspawn");

}  // namespace mk::core
