#include "core/spawn/settings.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <functional>

#include "core/base/io.hpp"
#include "core/base/names.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::core {
namespace {

[[noreturn]] void fail(const std::string& reason) { throw UsageError(reason); }

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

template <typename T>
void push_bounded(std::vector<T>& v, T item) {
    if (v.size() >= kSettingsListMax) fail("too many entries (at most " + std::to_string(kSettingsListMax) + ")");
    v.push_back(std::move(item));
}

// Setters: `value` is trimmed and non-empty unless the handler says it accepts empty (lists reset).
using Handler = std::function<void(Settings&, std::string_view)>;

// How a key's parsed value goes into the SpawnSpec. apply_settings() runs these in one loop, so the
// precedence and trust checks are written once.
struct Merge {
    std::function<bool(const Settings&)> set;                // did the file set it (empty: an alias another row merges)
    std::function<void(const Settings&, SpawnSpec&)> apply;  // idempotent: rows of one group may share it
    // SettingTrust::Narrowing only: whether the value widens the sandbox, and the part an untrusted
    // file still gets.
    std::function<bool(const Settings&)> widens = {};
    std::function<void(const Settings&, SpawnSpec&)> apply_narrowing = {};
    // The warning's key text when it is not "Name=".
    std::string_view label = {};
};

struct Key {
    std::string_view section;
    std::string_view name;
    Handler handler;
    SettingGroup group;
    SettingTrust trust;
    Merge merge;
    int rlimit = -1;  // Limit*= keys: the RLIMIT_* number, whose own bit in SettingsMask decides precedence
};

template <typename T>
std::function<bool(const Settings&)> has(std::optional<T> Settings::*field) {
    return [field](const Settings& s) { return (s.*field).has_value(); };
}

template <typename T>
std::function<bool(const Settings&)> has(std::vector<T> Settings::*field) {
    return [field](const Settings& s) { return !(s.*field).empty(); };
}

// Copies a set optional into the SpawnSpec field of the same meaning.
template <typename T, typename U>
Merge copy(std::optional<T> Settings::*from, U SpawnSpec::*to) {
    return {has(from), [from, to](const Settings& s, SpawnSpec& spec) { spec.*to = *(s.*from); }};
}

template <typename T>
Merge copy(std::vector<T> Settings::*from, std::vector<T> SpawnSpec::*to) {
    return {has(from), [from, to](const Settings& s, SpawnSpec& spec) { spec.*to = s.*from; }};
}

// Values 0 and "not set" mean the same for capability masks.
std::function<bool(const Settings&)> has_caps(std::optional<uint64_t> Settings::*field) {
    return [field](const Settings& s) { return (s.*field).value_or(0) != 0; };
}

void merge_start_mode(const Settings& s, SpawnSpec& spec) {
    if (s.boot.value_or(false)) spec.start_mode = StartMode::Boot;
    else if (s.process_two.value_or(false)) spec.start_mode = StartMode::Pid2;
    else spec.start_mode = StartMode::Command;
}

// As nspawn: the file's mounts replace the command line's as a whole.
void merge_custom_mounts(const Settings& s, SpawnSpec& spec) {
    spec.binds = s.binds;
    spec.tmpfs = s.tmpfs;
    spec.inaccessible = s.inaccessible;
    spec.overlays = s.overlays;
}

// nspawn's settings_private_network() / settings_network_veth(); the [Network] keys apply as a whole.
void merge_network(const Settings& s, SpawnSpec& spec) {
    bool veth = s.network_veth.value_or(false) || s.network_bridge || s.network_zone;
    spec.network_veth = veth;
    spec.private_network = s.private_network.value_or(false) || veth || !s.network_interfaces.empty() ||
                           !s.network_macvlan.empty() || !s.network_ipvlan.empty() || !s.network_veth_extra.empty();
    spec.network_interfaces = s.network_interfaces;
    spec.network_macvlan = s.network_macvlan;
    spec.network_ipvlan = s.network_ipvlan;
    spec.network_veth_extra = s.network_veth_extra;
    spec.network_bridge = s.network_bridge.value_or("");
    spec.network_zone = s.network_zone.value_or("");
}

Merge custom_mount(std::function<bool(const Settings&)> set) { return {std::move(set), merge_custom_mounts}; }
Merge network(std::function<bool(const Settings&)> set) { return {std::move(set), merge_network}; }

bool any_bind(const Settings& s, bool read_only) {
    for (const auto& b : s.binds)
        if (b.read_only == read_only) return true;
    return false;
}

bool any_overlay(const Settings& s, bool read_only) {
    for (const auto& o : s.overlays)
        if (o.read_only == read_only) return true;
    return false;
}

// Scalars: an empty value resets to "not set", like systemd's config_parse_tristate() & co.
template <typename T, typename Parse>
Handler scalar(std::optional<T> Settings::*field, Parse parse) {
    return [field, parse](Settings& s, std::string_view v) {
        if (v.empty()) (s.*field).reset();
        else s.*field = parse(v);
    };
}

Handler boolean(std::optional<bool> Settings::*field) { return scalar(field, parse_boolean); }

// Whitespace-separated word lists that accumulate; empty resets.
Handler word_list(std::vector<std::string> Settings::*field, std::function<std::string(std::string_view)> check) {
    return [field, check](Settings& s, std::string_view v) {
        if (v.empty()) {
            (s.*field).clear();
            return;
        }
        for (auto& w : split_words(v)) push_bounded(s.*field, check(w));
    };
}

// One entry per assignment that accumulates; empty resets.
template <typename T, typename Parse>
Handler entry_list(std::vector<T> Settings::*field, Parse parse) {
    return [field, parse](Settings& s, std::string_view v) {
        if (v.empty()) {
            (s.*field).clear();
            return;
        }
        push_bounded(s.*field, parse(v));
    };
}

Handler capability(std::optional<uint64_t> Settings::*field) {
    return [field](Settings& s, std::string_view v) {
        if (v.empty()) {
            (s.*field).reset();
            return;
        }
        s.*field = (s.*field).value_or(0) | parse_capability_list(v);
    };
}

struct StartModeConflict {};

// nspawn's config_parse_boot()/config_parse_pid2(): Boot=yes and ProcessTwo=yes conflict; the later
// one is ignored with a warning, not an error.
void set_start_mode(Settings& s, std::optional<bool> Settings::*field, std::optional<bool> Settings::*other,
                    std::string_view v) {
    if (v.empty()) {
        (s.*field).reset();
        return;
    }
    bool b = parse_boolean(v);
    if (b && (s.*other).value_or(false)) throw StartModeConflict{};
    s.*field = b;
}

std::string check_path(std::string_view v) { return parse_absolute_path(v); }
std::string check_ifname(std::string_view v) { return parse_interface_pair(v); }

const std::vector<Key>& keys() {
    static const std::vector<Key> table = [] {
        std::vector<Key> k = {
            {"Exec", "Boot",
             [](Settings& s, std::string_view v) { set_start_mode(s, &Settings::boot, &Settings::process_two, v); },
             SettingGroup::StartMode, SettingTrust::Any, Merge{has(&Settings::boot), merge_start_mode}},
            {"Exec", "ProcessTwo",
             [](Settings& s, std::string_view v) { set_start_mode(s, &Settings::process_two, &Settings::boot, v); },
             SettingGroup::StartMode, SettingTrust::Any, Merge{has(&Settings::process_two), merge_start_mode}},
            {"Exec", "Ephemeral", boolean(&Settings::ephemeral), SettingGroup::Ephemeral, SettingTrust::Trusted,
             copy(&Settings::ephemeral, &SpawnSpec::ephemeral)},
            {"Exec", "Parameters", word_list(&Settings::parameters, [](std::string_view w) { return std::string(w); }),
             SettingGroup::StartMode, SettingTrust::Any, copy(&Settings::parameters, &SpawnSpec::argv)},
            {"Exec", "Environment", word_list(&Settings::environment, parse_env_assignment), SettingGroup::Environment,
             SettingTrust::Any, copy(&Settings::environment, &SpawnSpec::setenv)},
            {"Exec", "User", scalar(&Settings::user, parse_user_name), SettingGroup::User, SettingTrust::Any,
             copy(&Settings::user, &SpawnSpec::user)},
            {"Exec", "Capability", capability(&Settings::capability), SettingGroup::Capability, SettingTrust::Trusted,
             Merge{has_caps(&Settings::capability),
                   [](const Settings& s, SpawnSpec& spec) {
                       if (*s.capability == kAllCapabilities) spec.capabilities_all = true;
                       else spec.capabilities_add |= *s.capability;
                   }}},
            {"Exec", "AmbientCapability", capability(&Settings::ambient_capability), SettingGroup::Capability,
             SettingTrust::Trusted,
             Merge{has_caps(&Settings::ambient_capability),
                   [](const Settings& s, SpawnSpec& spec) { spec.capabilities_ambient |= *s.ambient_capability; }}},
            {"Exec", "DropCapability", capability(&Settings::drop_capability), SettingGroup::Capability, SettingTrust::Any,
             Merge{has_caps(&Settings::drop_capability),
                   [](const Settings& s, SpawnSpec& spec) { spec.capabilities_drop |= *s.drop_capability; }}},
            {"Exec", "KillSignal", scalar(&Settings::kill_signal, parse_signal), SettingGroup::KillSignal, SettingTrust::Any,
             copy(&Settings::kill_signal, &SpawnSpec::kill_signal)},
            {"Exec", "Personality", scalar(&Settings::personality, parse_personality), SettingGroup::Personality,
             SettingTrust::Any, copy(&Settings::personality, &SpawnSpec::personality)},
            {"Exec", "MachineID", scalar(&Settings::machine_id, parse_uuid),
             // A chosen id could impersonate another registered machine.
             SettingGroup::MachineId, SettingTrust::Trusted, copy(&Settings::machine_id, &SpawnSpec::uuid)},
            {"Exec", "WorkingDirectory", scalar(&Settings::working_directory, check_path), SettingGroup::WorkingDirectory,
             SettingTrust::Any, copy(&Settings::working_directory, &SpawnSpec::chdir)},
            {"Exec", "PivotRoot", scalar(&Settings::pivot_root, parse_pivot_root), SettingGroup::PivotRoot,
             SettingTrust::Trusted,
             Merge{has(&Settings::pivot_root),
                   [](const Settings& s, SpawnSpec& spec) {
                       spec.pivot_root_new = s.pivot_root->first;
                       spec.pivot_root_old = s.pivot_root->second;
                   }}},
            {"Exec", "PrivateUsers", scalar(&Settings::private_users, parse_private_users), SettingGroup::UserNamespace,
             SettingTrust::Trusted,
             Merge{has(&Settings::private_users),
                   [](const Settings& s, SpawnSpec& spec) {
                       spec.userns_mode = s.private_users->mode;
                       spec.uid_shift = s.private_users->uid_shift;
                       spec.uid_range = s.private_users->uid_range;
                   }}},
            {"Exec", "NotifyReady", boolean(&Settings::notify_ready), SettingGroup::NotifyReady, SettingTrust::Any,
             copy(&Settings::notify_ready, &SpawnSpec::notify_ready)},
            {"Exec", "SystemCallFilter",
             [](Settings& s, std::string_view v) {
                 if (v.empty()) {
                     s.syscall_allow.clear();
                     s.syscall_deny.clear();
                     return;
                 }
                 bool deny = v[0] == '~';
                 if (deny) v.remove_prefix(1);
                 for (auto& w : split_words(v)) {
                     if (!syscall_name_is_valid(w)) fail("invalid system call name " + quote_value(w));
                     push_bounded(deny ? s.syscall_deny : s.syscall_allow, std::move(w));
                 }
             },
             SettingGroup::SyscallFilter, SettingTrust::Narrowing,
             Merge{[](const Settings& s) { return !s.syscall_allow.empty() || !s.syscall_deny.empty(); },
                   [](const Settings& s, SpawnSpec& spec) {
                       if (!s.syscall_allow.empty()) spec.syscall_allow = s.syscall_allow;
                       if (!s.syscall_deny.empty()) spec.syscall_deny = s.syscall_deny;
                   },
                   // Deny entries only narrow the filter; allow entries widen it.
                   [](const Settings& s) { return !s.syscall_allow.empty(); },
                   [](const Settings& s, SpawnSpec& spec) {
                       if (!s.syscall_deny.empty()) spec.syscall_deny = s.syscall_deny;
                   },
                   "SystemCallFilter= (allow-list entries)"}},
            {"Exec", "Hostname",
             scalar(&Settings::hostname,
                    [](std::string_view v) {
                        if (!machine_name_is_valid(v)) fail("not a valid host name");
                        return std::string(v);
                    }),
             SettingGroup::Hostname, SettingTrust::Any, copy(&Settings::hostname, &SpawnSpec::hostname)},
            {"Exec", "NoNewPrivileges", boolean(&Settings::no_new_privileges), SettingGroup::NoNewPrivileges,
             SettingTrust::Narrowing,
             Merge{has(&Settings::no_new_privileges),
                   [](const Settings& s, SpawnSpec& spec) { spec.no_new_privileges = *s.no_new_privileges; },
                   [](const Settings& s) { return !*s.no_new_privileges; }, [](const Settings&, SpawnSpec&) {},
                   "NoNewPrivileges=no"}},
            {"Exec", "OOMScoreAdjust", scalar(&Settings::oom_score_adjust, parse_oom_score_adjust),
             SettingGroup::OomScoreAdjust, SettingTrust::Trusted,
             copy(&Settings::oom_score_adjust, &SpawnSpec::oom_score_adjust)},
            {"Exec", "CPUAffinity", scalar(&Settings::cpu_affinity, parse_cpu_set), SettingGroup::CpuAffinity,
             SettingTrust::Trusted, copy(&Settings::cpu_affinity, &SpawnSpec::cpu_affinity)},
            {"Exec", "ResolvConf", scalar(&Settings::resolv_conf, parse_resolv_conf_mode), SettingGroup::ResolvConf,
             SettingTrust::Any, copy(&Settings::resolv_conf, &SpawnSpec::resolv_conf)},
            {"Exec", "LinkJournal", scalar(&Settings::link_journal, parse_link_journal_mode),
             // Links the container's journal into the host's /var/log/journal.
             SettingGroup::LinkJournal, SettingTrust::Trusted, copy(&Settings::link_journal, &SpawnSpec::link_journal)},
            {"Exec", "Timezone", scalar(&Settings::timezone, parse_timezone_mode), SettingGroup::Timezone, SettingTrust::Any,
             copy(&Settings::timezone, &SpawnSpec::timezone)},
            {"Exec", "SuppressSync", boolean(&Settings::suppress_sync), SettingGroup::SuppressSync, SettingTrust::Any,
             copy(&Settings::suppress_sync, &SpawnSpec::suppress_sync)},

            {"Files", "ReadOnly", boolean(&Settings::read_only), SettingGroup::ReadOnly, SettingTrust::Any,
             copy(&Settings::read_only, &SpawnSpec::read_only)},
            {"Files", "Volatile", scalar(&Settings::volatile_mode, parse_volatile_mode), SettingGroup::Volatile,
             SettingTrust::Any, copy(&Settings::volatile_mode, &SpawnSpec::volatile_mode)},
            {"Files", "Bind", entry_list(&Settings::binds, [](std::string_view v) { return parse_bind(v, false); }),
             SettingGroup::CustomMounts, SettingTrust::Trusted,
             custom_mount([](const Settings& s) { return any_bind(s, false); })},
            {"Files", "BindReadOnly", entry_list(&Settings::binds, [](std::string_view v) { return parse_bind(v, true); }),
             SettingGroup::CustomMounts, SettingTrust::Trusted,
             custom_mount([](const Settings& s) { return any_bind(s, true); })},
            {"Files", "TemporaryFileSystem", entry_list(&Settings::tmpfs, parse_tmpfs), SettingGroup::CustomMounts,
             SettingTrust::Trusted, custom_mount(has(&Settings::tmpfs))},
            {"Files", "Inaccessible", entry_list(&Settings::inaccessible, check_path), SettingGroup::CustomMounts,
             SettingTrust::Trusted, custom_mount(has(&Settings::inaccessible))},
            {"Files", "Overlay", entry_list(&Settings::overlays, [](std::string_view v) { return parse_overlay(v, false); }),
             SettingGroup::CustomMounts, SettingTrust::Trusted,
             custom_mount([](const Settings& s) { return any_overlay(s, false); })},
            {"Files", "OverlayReadOnly",
             entry_list(&Settings::overlays, [](std::string_view v) { return parse_overlay(v, true); }),
             SettingGroup::CustomMounts, SettingTrust::Trusted,
             custom_mount([](const Settings& s) { return any_overlay(s, true); })},
            {"Files", "PrivateUsersChown",
             scalar(&Settings::private_users_ownership,
                    [](std::string_view v) {
                        return parse_boolean(v) ? UserNamespaceOwnership::Chown : UserNamespaceOwnership::Off;
                    }),
             // An alias: the PrivateUsersOwnership= row merges the value.
             SettingGroup::UserNamespace, SettingTrust::Trusted, Merge{}},
            {"Files", "PrivateUsersOwnership", scalar(&Settings::private_users_ownership, parse_userns_ownership),
             SettingGroup::UserNamespace, SettingTrust::Trusted,
             Merge{has(&Settings::private_users_ownership),
                   [](const Settings& s, SpawnSpec& spec) { spec.userns_ownership = *s.private_users_ownership; },
                   {},
                   {},
                   "PrivateUsersOwnership=/PrivateUsersChown="}},
            {"Files", "BindUser", word_list(&Settings::bind_user, parse_user_name), SettingGroup::BindUser,
             SettingTrust::Trusted, copy(&Settings::bind_user, &SpawnSpec::bind_users)},

            {"Network", "Private", boolean(&Settings::private_network), SettingGroup::Network, SettingTrust::Trusted,
             network(has(&Settings::private_network))},
            {"Network", "Interface", word_list(&Settings::network_interfaces, check_ifname), SettingGroup::Network,
             SettingTrust::Trusted, network(has(&Settings::network_interfaces))},
            {"Network", "MACVLAN", word_list(&Settings::network_macvlan, check_ifname), SettingGroup::Network,
             SettingTrust::Trusted, network(has(&Settings::network_macvlan))},
            {"Network", "IPVLAN", word_list(&Settings::network_ipvlan, check_ifname), SettingGroup::Network,
             SettingTrust::Trusted, network(has(&Settings::network_ipvlan))},
            {"Network", "VirtualEthernet", boolean(&Settings::network_veth), SettingGroup::Network, SettingTrust::Trusted,
             network(has(&Settings::network_veth))},
            {"Network", "VirtualEthernetExtra", entry_list(&Settings::network_veth_extra, check_ifname),
             SettingGroup::Network, SettingTrust::Trusted, network(has(&Settings::network_veth_extra))},
            {"Network", "Bridge",
             scalar(&Settings::network_bridge,
                    [](std::string_view v) {
                        if (!ifname_is_valid(v)) fail("not a valid interface name");
                        return std::string(v);
                    }),
             SettingGroup::Network, SettingTrust::Trusted, network(has(&Settings::network_bridge))},
            {"Network", "Zone", scalar(&Settings::network_zone, parse_network_zone), SettingGroup::Network,
             SettingTrust::Trusted, network(has(&Settings::network_zone))},
            {"Network", "Port", entry_list(&Settings::ports, parse_port), SettingGroup::ExposePorts, SettingTrust::Trusted,
             copy(&Settings::ports, &SpawnSpec::ports)},

        };
        static constexpr std::string_view kLimitNames[] = {"CPU",      "FSIZE", "DATA",   "STACK",   "CORE",  "RSS",
                                                           "NOFILE",   "AS",    "NPROC",  "MEMLOCK", "LOCKS", "SIGPENDING",
                                                           "MSGQUEUE", "NICE",  "RTPRIO", "RTTIME"};
        static std::vector<std::string> limit_keys;
        limit_keys.reserve(std::size(kLimitNames));
        for (auto n : kLimitNames) {
            int resource = *rlimit_from_name(n);
            limit_keys.push_back("Limit" + std::string(n));
            k.push_back(
                {"Exec", limit_keys.back(),
                 [resource](Settings& s, std::string_view v) {
                     auto& slot = s.rlimits[static_cast<size_t>(resource)];
                     if (v.empty()) slot.reset();
                     else slot = parse_rlimit_value(v);
                 },
                 SettingGroup::Rlimit, SettingTrust::Trusted,
                 Merge{[resource](const Settings& s) { return s.rlimits[static_cast<size_t>(resource)].has_value(); },
                       [resource](const Settings& s, SpawnSpec& spec) {
                           spec.rlimits[static_cast<size_t>(resource)] = s.rlimits[static_cast<size_t>(resource)];
                       }},
                 resource});
        }
        return k;
    }();
    return table;
}

const Key* find_key(std::string_view section, std::string_view name) {
    for (const auto& k : keys())
        if (k.section == section && k.name == name) return &k;
    return nullptr;
}

class Parser {
public:
    Parser(std::string_view source, Settings& out) : source_(source), out_(out) {}

    [[noreturn]] void error(size_t line, const std::string& what) const {
        throw UsageError(source_ + ":" + std::to_string(line) + ": " + what);
    }

    void warn(size_t line, const std::string& what) {
        if (out_.warnings.size() < kSettingsWarningsMax)
            out_.warnings.push_back(source_ + ":" + std::to_string(line) + ": " + what);
        else if (out_.warnings.size() == kSettingsWarningsMax)
            out_.warnings.push_back(source_ + ": further warnings suppressed");
    }

    void line(size_t n, std::string_view l) {
        l = trim(l);
        if (l.empty() || l[0] == '#' || l[0] == ';') return;
        if (!utf8_is_valid(l)) error(n, "line is not valid UTF-8");
        if (l[0] == '[') {
            if (l.size() < 3 || l.back() != ']') error(n, "invalid section header " + quote_value(l));
            section_ = std::string(l.substr(1, l.size() - 2));
            for (char c : section_)
                if (static_cast<unsigned char>(c) < 0x20 || c == '[' || c == ']')
                    error(n, "invalid section header " + quote_value(l));
            known_section_ = section_ == "Exec" || section_ == "Files" || section_ == "Network";
            // "X-" sections are for third parties, ignored silently as systemd does.
            if (!known_section_ && section_.rfind("X-", 0) != 0)
                warn(n, "unknown section " + quote_value(section_) + ", ignoring");
            return;
        }
        size_t eq = l.find('=');
        if (eq == std::string_view::npos) error(n, "missing '=' in " + quote_value(l));
        std::string_view key = trim(l.substr(0, eq)), value = trim(l.substr(eq + 1));
        if (key.empty()) error(n, "missing key name before '='");
        if (section_.empty()) {
            warn(n, "assignment outside of a section, ignoring");
            return;
        }
        if (!known_section_) return;
        const Key* k = find_key(section_, key);
        if (!k) {
            if (key.rfind("X-", 0) != 0)
                warn(n, "unknown key " + quote_value(std::string(key)) + " in section [" + section_ + "], ignoring");
            return;
        }
        try {
            k->handler(out_, value);
        } catch (const UsageError& e) {
            error(n, "Invalid " + std::string(key) + "= value " + quote_value(value) + ": " + e.what());
        } catch (const StartModeConflict&) {
            warn(n, "Boot=yes and ProcessTwo=yes conflict, ignoring " + std::string(key) + "=");
        }
    }

private:
    std::string source_;
    Settings& out_;
    std::string section_;
    bool known_section_ = false;
};

void read_bounded(int fd, const std::string& path, std::string& out) {
    struct stat st {};
    check(::fstat(fd, &st), "stat " + path);
    if (!S_ISREG(st.st_mode)) throw UsageError(path + ": not a regular file, refusing");
    if (static_cast<uint64_t>(st.st_size) > kSettingsFileMax)
        throw UsageError(path + ": file too large (at most " + std::to_string(kSettingsFileMax) + " bytes)");
    try {
        // The file may grow after fstat().
        out = read_all(fd, kSettingsFileMax, path);
    } catch (const std::system_error& e) {
        if (e.code().value() == EFBIG)
            throw UsageError(path + ": file too large (at most " + std::to_string(kSettingsFileMax) + " bytes)");
        throw;
    }
}

// Reads `path` if it exists; nullopt on ENOENT.
std::optional<std::string> read_settings(const std::string& path) {
    // O_NONBLOCK so that a FIFO planted in place of the file cannot block us; O_NOFOLLOW so a
    // symlink next to an image cannot make us read (and report parts of) an arbitrary host file.
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY));
    if (!fd) {
        if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
        if (errno == ELOOP) throw UsageError(path + ": is a symbolic link, refusing");
        throw_last_error("open " + path);
    }
    std::string contents;
    read_bounded(fd.get(), path, contents);
    return contents;
}

}  // namespace

Settings parse_settings(std::string_view contents, std::string_view source) {
    Settings out;
    out.source = std::string(source);
    Parser p(source, out);
    if (contents.size() > kSettingsFileMax)
        throw UsageError(std::string(source) + ": file too large (at most " + std::to_string(kSettingsFileMax) + " bytes)");

    std::string logical;
    size_t logical_start = 0;
    bool continued = false;
    size_t n = 0, pos = 0;
    while (pos < contents.size()) {
        size_t nl = contents.find('\n', pos);
        size_t end = nl == std::string_view::npos ? contents.size() : nl;
        std::string_view raw = contents.substr(pos, end - pos);
        pos = end + 1;
        n++;
        if (raw.size() > kSettingsLineMax)
            p.error(n, "line too long (at most " + std::to_string(kSettingsLineMax) + " bytes)");
        if (raw.find('\0') != std::string_view::npos) p.error(n, "line contains a NUL byte");
        std::string_view t = trim(raw);
        // systemd skips comment lines inside a continuation rather than ending it.
        if (continued && !t.empty() && (t[0] == '#' || t[0] == ';')) continue;
        if (!continued) logical_start = n;
        // A trailing backslash continues the line; it is replaced by a space. An escaped "\\" at the
        // end does not continue.
        size_t backslashes = 0;
        while (backslashes < t.size() && t[t.size() - 1 - backslashes] == '\\') backslashes++;
        if (backslashes % 2 == 1) {
            logical.append(t.substr(0, t.size() - 1));
            logical += ' ';
            continued = true;
        } else {
            logical.append(t);
            continued = false;
        }
        if (logical.size() > kSettingsLineMax)
            p.error(logical_start, "line too long (at most " + std::to_string(kSettingsLineMax) + " bytes)");
        if (!continued) {
            p.line(logical_start, logical);
            logical.clear();
        }
    }
    if (continued) p.line(logical_start, logical);
    return out;
}

void apply_settings(const Settings& s, SpawnSpec& spec, bool trusted, std::vector<std::string>& warnings,
                    const SettingsMask& cmdline, SettingsMode mode) {
    if (mode == SettingsMode::No) return;
    if (mode == SettingsMode::Trusted) trusted = true;
    const bool override_cmdline = mode == SettingsMode::Override;
    auto untrusted = [&](std::string_view key) {
        warnings.push_back((s.source.empty() ? std::string("settings file") : s.source) + ": ignoring " + std::string(key) +
                           ", the file is not trusted (it is not in /etc or /run)");
    };

    // CVE-2026-40226: nspawn merged Ephemeral=, PivotRoot= and BindUser= without a trust check; here
    // every key's class is in its row, and this is the only place that reads it.
    for (const Key& k : keys()) {
        const Merge& m = k.merge;
        if (!m.set || !m.set(s)) continue;
        bool cmdline_set = k.rlimit >= 0 ? cmdline.has_rlimit(k.rlimit) : cmdline.has(k.group);
        if (cmdline_set && !override_cmdline) continue;
        std::string label = m.label.empty() ? std::string(k.name) + "=" : std::string(m.label);
        switch (k.trust) {
        case SettingTrust::Any: m.apply(s, spec); break;
        case SettingTrust::Trusted:
            if (trusted) m.apply(s, spec);
            else untrusted(label);
            break;
        case SettingTrust::Narrowing:
            if (trusted || !m.widens(s)) {
                m.apply(s, spec);
            } else {
                untrusted(label);
                m.apply_narrowing(s, spec);
            }
            break;
        }
    }
}

std::vector<SettingsKeyInfo> settings_keys() {
    std::vector<SettingsKeyInfo> out;
    out.reserve(keys().size());
    for (const Key& k : keys()) out.push_back({k.section, k.name, k.group, k.trust});
    return out;
}

std::optional<SettingsFile> find_settings_file(std::string_view machine_name, std::string_view image_path,
                                               const std::string& etc_dir, const std::string& run_dir) {
    // The name becomes a path component: it must not be able to contain '/' or "..".
    if (!machine_name_is_valid(machine_name))
        throw UsageError("Invalid machine name " + quote_value(machine_name) + " for settings lookup");
    const std::string file = std::string(machine_name) + ".nspawn";
    for (const std::string& dir : {etc_dir, run_dir}) {
        std::string path = dir + "/" + file;
        if (auto c = read_settings(path)) return SettingsFile{path, true, std::move(*c)};
    }
    std::string_view image = image_path;
    while (image.size() > 1 && image.back() == '/') image.remove_suffix(1);
    if (image.empty() || image == "/") return std::nullopt;
    size_t slash = image.rfind('/');
    std::string dir = slash == std::string_view::npos ? "." : slash == 0 ? "" : std::string(image.substr(0, slash));
    std::string path = dir + "/" + file;
    if (auto c = read_settings(path)) return SettingsFile{path, false, std::move(*c)};
    return std::nullopt;
}

}  // namespace mk::core
