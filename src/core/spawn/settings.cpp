#include "core/spawn/settings.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <functional>

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

struct Key {
    std::string_view section;
    std::string_view name;
    Handler handler;
};

// Scalars: an empty value resets to "not set", like systemd's config_parse_tristate() & co.
template <typename T, typename Parse>
Handler scalar(std::optional<T> Settings::*field, Parse parse) {
    return [field, parse](Settings& s, std::string_view v) {
        if (v.empty())
            (s.*field).reset();
        else
            s.*field = parse(v);
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
            {"Exec", "Boot", [](Settings& s, std::string_view v) { set_start_mode(s, &Settings::boot, &Settings::process_two, v); }},
            {"Exec", "ProcessTwo",
             [](Settings& s, std::string_view v) { set_start_mode(s, &Settings::process_two, &Settings::boot, v); }},
            {"Exec", "Ephemeral", boolean(&Settings::ephemeral)},
            {"Exec", "Parameters", word_list(&Settings::parameters, [](std::string_view w) { return std::string(w); })},
            {"Exec", "Environment", word_list(&Settings::environment, parse_env_assignment)},
            {"Exec", "User", scalar(&Settings::user, parse_user_name)},
            {"Exec", "Capability", capability(&Settings::capability)},
            {"Exec", "AmbientCapability", capability(&Settings::ambient_capability)},
            {"Exec", "DropCapability", capability(&Settings::drop_capability)},
            {"Exec", "KillSignal", scalar(&Settings::kill_signal, parse_signal)},
            {"Exec", "Personality", scalar(&Settings::personality, parse_personality)},
            {"Exec", "MachineID", scalar(&Settings::machine_id, parse_uuid)},
            {"Exec", "WorkingDirectory", scalar(&Settings::working_directory, check_path)},
            {"Exec", "PivotRoot", scalar(&Settings::pivot_root, parse_pivot_root)},
            {"Exec", "PrivateUsers", scalar(&Settings::private_users, parse_private_users)},
            {"Exec", "NotifyReady", boolean(&Settings::notify_ready)},
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
             }},
            {"Exec", "Hostname",
             scalar(&Settings::hostname,
                    [](std::string_view v) {
                        if (!machine_name_is_valid(v)) fail("not a valid host name");
                        return std::string(v);
                    })},
            {"Exec", "NoNewPrivileges", boolean(&Settings::no_new_privileges)},
            {"Exec", "OOMScoreAdjust", scalar(&Settings::oom_score_adjust, parse_oom_score_adjust)},
            {"Exec", "CPUAffinity", scalar(&Settings::cpu_affinity, parse_cpu_set)},
            {"Exec", "ResolvConf", scalar(&Settings::resolv_conf, parse_resolv_conf_mode)},
            {"Exec", "LinkJournal", scalar(&Settings::link_journal, parse_link_journal_mode)},
            {"Exec", "Timezone", scalar(&Settings::timezone, parse_timezone_mode)},
            {"Exec", "SuppressSync", boolean(&Settings::suppress_sync)},

            {"Files", "ReadOnly", boolean(&Settings::read_only)},
            {"Files", "Volatile", scalar(&Settings::volatile_mode, parse_volatile_mode)},
            {"Files", "Bind", entry_list(&Settings::binds, [](std::string_view v) { return parse_bind(v, false); })},
            {"Files", "BindReadOnly", entry_list(&Settings::binds, [](std::string_view v) { return parse_bind(v, true); })},
            {"Files", "TemporaryFileSystem", entry_list(&Settings::tmpfs, parse_tmpfs)},
            {"Files", "Inaccessible", entry_list(&Settings::inaccessible, check_path)},
            {"Files", "Overlay", entry_list(&Settings::overlays, [](std::string_view v) { return parse_overlay(v, false); })},
            {"Files", "OverlayReadOnly",
             entry_list(&Settings::overlays, [](std::string_view v) { return parse_overlay(v, true); })},
            {"Files", "PrivateUsersChown",
             scalar(&Settings::private_users_ownership,
                    [](std::string_view v) {
                        return parse_boolean(v) ? UserNamespaceOwnership::Chown : UserNamespaceOwnership::Off;
                    })},
            {"Files", "PrivateUsersOwnership", scalar(&Settings::private_users_ownership, parse_userns_ownership)},
            {"Files", "BindUser", word_list(&Settings::bind_user, parse_user_name)},

            {"Network", "Private", boolean(&Settings::private_network)},
            {"Network", "Interface", word_list(&Settings::network_interfaces, check_ifname)},
            {"Network", "MACVLAN", word_list(&Settings::network_macvlan, check_ifname)},
            {"Network", "IPVLAN", word_list(&Settings::network_ipvlan, check_ifname)},
            {"Network", "VirtualEthernet", boolean(&Settings::network_veth)},
            {"Network", "VirtualEthernetExtra", entry_list(&Settings::network_veth_extra, check_ifname)},
            {"Network", "Bridge",
             scalar(&Settings::network_bridge,
                    [](std::string_view v) {
                        if (!ifname_is_valid(v)) fail("not a valid interface name");
                        return std::string(v);
                    })},
            {"Network", "Zone", scalar(&Settings::network_zone, parse_network_zone)},
            {"Network", "Port", entry_list(&Settings::ports, parse_port)},
        };
        static constexpr std::string_view kLimitNames[] = {"CPU",    "FSIZE",   "DATA",  "STACK",      "CORE",     "RSS",
                                                           "NOFILE", "AS",      "NPROC", "MEMLOCK",    "LOCKS",    "SIGPENDING",
                                                           "MSGQUEUE", "NICE",  "RTPRIO", "RTTIME"};
        static std::vector<std::string> limit_keys;
        limit_keys.reserve(std::size(kLimitNames));
        for (auto n : kLimitNames) {
            int resource = *rlimit_from_name(n);
            limit_keys.push_back("Limit" + std::string(n));
            k.push_back({"Exec", limit_keys.back(), [resource](Settings& s, std::string_view v) {
                             auto& slot = s.rlimits[static_cast<size_t>(resource)];
                             if (v.empty())
                                 slot.reset();
                             else
                                 slot = parse_rlimit_value(v);
                         }});
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
            if (key.rfind("X-", 0) != 0) warn(n, "unknown key " + quote_value(std::string(key)) + " in section [" + section_ + "], ignoring");
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
    out.clear();
    char buf[16384];
    while (true) {
        ssize_t r = ::read(fd, buf, sizeof buf);
        if (r < 0) {
            if (errno == EINTR) continue;
            throw_last_error("read " + path);
        }
        if (r == 0) break;
        out.append(buf, static_cast<size_t>(r));
        // The file may grow after fstat().
        if (out.size() > kSettingsFileMax)
            throw UsageError(path + ": file too large (at most " + std::to_string(kSettingsFileMax) + " bytes)");
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

bool Settings::network_configured() const {
    return private_network.has_value() || network_veth.has_value() || network_bridge || network_zone ||
           !network_interfaces.empty() || !network_macvlan.empty() || !network_ipvlan.empty() ||
           !network_veth_extra.empty();
}

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
    auto file_wins = [&](SettingGroup g) { return override_cmdline || !cmdline.has(g); };
    auto untrusted = [&](std::string_view key) {
        warnings.push_back((s.source.empty() ? std::string("settings file") : s.source) + ": ignoring " +
                           std::string(key) + ", the file is not trusted (it is not in /etc or /run)");
    };

    if (file_wins(SettingGroup::StartMode)) {
        if (s.boot.value_or(false))
            spec.start_mode = StartMode::Boot;
        else if (s.process_two.value_or(false))
            spec.start_mode = StartMode::Pid2;
        else if (s.boot || s.process_two)
            spec.start_mode = StartMode::Command;
        if (!s.parameters.empty()) spec.argv = s.parameters;
    }
    // CVE-2026-40226: nspawn merged Ephemeral=, PivotRoot= and BindUser= without a trust check.
    if (s.ephemeral && file_wins(SettingGroup::Ephemeral)) {
        if (trusted)
            spec.ephemeral = *s.ephemeral;
        else
            untrusted("Ephemeral=");
    }
    if (!s.environment.empty() && file_wins(SettingGroup::Environment)) spec.setenv = s.environment;
    if (s.user && file_wins(SettingGroup::User)) spec.user = *s.user;
    if (s.working_directory && file_wins(SettingGroup::WorkingDirectory)) spec.chdir = *s.working_directory;
    if (s.pivot_root && file_wins(SettingGroup::PivotRoot)) {
        if (trusted) {
            spec.pivot_root_new = s.pivot_root->first;
            spec.pivot_root_old = s.pivot_root->second;
        } else {
            untrusted("PivotRoot=");
        }
    }
    if (file_wins(SettingGroup::Capability)) {
        uint64_t plus = s.capability.value_or(0);
        if (plus != 0) {
            if (!trusted)
                untrusted("Capability=");
            else if (plus == kAllCapabilities)
                spec.capabilities_all = true;
            else
                spec.capabilities_add |= plus;
        }
        // Dropping capabilities only narrows the sandbox, so any file may do it.
        spec.capabilities_drop |= s.drop_capability.value_or(0);
        uint64_t ambient = s.ambient_capability.value_or(0);
        if (ambient != 0) {
            if (trusted)
                spec.capabilities_ambient |= ambient;
            else
                untrusted("AmbientCapability=");
        }
    }
    if (s.kill_signal && file_wins(SettingGroup::KillSignal)) spec.kill_signal = *s.kill_signal;
    if (s.personality && file_wins(SettingGroup::Personality)) spec.personality = *s.personality;
    if (s.machine_id && file_wins(SettingGroup::MachineId)) {
        // A chosen id could impersonate another registered machine.
        if (trusted)
            spec.uuid = *s.machine_id;
        else
            untrusted("MachineID=");
    }
    if (s.notify_ready && file_wins(SettingGroup::NotifyReady)) spec.notify_ready = *s.notify_ready;
    if ((s.private_users || s.private_users_ownership) && file_wins(SettingGroup::UserNamespace)) {
        if (!trusted) {
            if (s.private_users) untrusted("PrivateUsers=");
            if (s.private_users_ownership) untrusted("PrivateUsersOwnership=/PrivateUsersChown=");
        } else {
            if (s.private_users) {
                spec.userns_mode = s.private_users->mode;
                spec.uid_shift = s.private_users->uid_shift;
                spec.uid_range = s.private_users->uid_range;
            }
            if (s.private_users_ownership) spec.userns_ownership = *s.private_users_ownership;
        }
    }
    if ((!s.syscall_allow.empty() || !s.syscall_deny.empty()) && file_wins(SettingGroup::SyscallFilter)) {
        // Deny entries only narrow the filter; allow entries widen it.
        if (!s.syscall_allow.empty()) {
            if (trusted)
                spec.syscall_allow = s.syscall_allow;
            else
                untrusted("SystemCallFilter= (allow-list entries)");
        }
        if (!s.syscall_deny.empty()) spec.syscall_deny = s.syscall_deny;
    }
    for (size_t r = 0; r < kRlimitCount; r++) {
        if (!s.rlimits[r] || (!override_cmdline && cmdline.has_rlimit(static_cast<int>(r)))) continue;
        if (trusted)
            spec.rlimits[r] = s.rlimits[r];
        else
            untrusted("Limit" + std::string(rlimit_to_name(static_cast<int>(r))) + "=");
    }
    if (s.hostname && file_wins(SettingGroup::Hostname)) spec.hostname = *s.hostname;
    if (s.no_new_privileges && file_wins(SettingGroup::NoNewPrivileges)) {
        if (*s.no_new_privileges || trusted)
            spec.no_new_privileges = *s.no_new_privileges;
        else
            untrusted("NoNewPrivileges=no");
    }
    if (s.oom_score_adjust && file_wins(SettingGroup::OomScoreAdjust)) {
        if (trusted)
            spec.oom_score_adjust = *s.oom_score_adjust;
        else
            untrusted("OOMScoreAdjust=");
    }
    if (s.cpu_affinity && file_wins(SettingGroup::CpuAffinity)) {
        if (trusted)
            spec.cpu_affinity = *s.cpu_affinity;
        else
            untrusted("CPUAffinity=");
    }
    if (s.resolv_conf && file_wins(SettingGroup::ResolvConf)) spec.resolv_conf = *s.resolv_conf;
    if (s.link_journal && file_wins(SettingGroup::LinkJournal)) {
        // Links the container's journal into the host's /var/log/journal.
        if (trusted)
            spec.link_journal = *s.link_journal;
        else
            untrusted("LinkJournal=");
    }
    if (s.timezone && file_wins(SettingGroup::Timezone)) spec.timezone = *s.timezone;
    if (s.suppress_sync && file_wins(SettingGroup::SuppressSync)) spec.suppress_sync = *s.suppress_sync;
    if (s.read_only && file_wins(SettingGroup::ReadOnly)) spec.read_only = *s.read_only;
    if (s.volatile_mode && file_wins(SettingGroup::Volatile)) spec.volatile_mode = *s.volatile_mode;

    bool any_mounts = !s.binds.empty() || !s.tmpfs.empty() || !s.inaccessible.empty() || !s.overlays.empty();
    if (any_mounts && file_wins(SettingGroup::CustomMounts)) {
        if (trusted) {
            // As nspawn: the file's mounts replace the command line's as a whole.
            spec.binds = s.binds;
            spec.tmpfs = s.tmpfs;
            spec.inaccessible = s.inaccessible;
            spec.overlays = s.overlays;
        } else {
            bool rw = false, ro = false, orw = false, oro = false;
            for (const auto& b : s.binds) (b.read_only ? ro : rw) = true;
            for (const auto& o : s.overlays) (o.read_only ? oro : orw) = true;
            if (rw) untrusted("Bind=");
            if (ro) untrusted("BindReadOnly=");
            if (!s.tmpfs.empty()) untrusted("TemporaryFileSystem=");
            if (!s.inaccessible.empty()) untrusted("Inaccessible=");
            if (orw) untrusted("Overlay=");
            if (oro) untrusted("OverlayReadOnly=");
        }
    }
    if (!s.bind_user.empty() && file_wins(SettingGroup::BindUser)) {
        if (trusted)
            spec.bind_users = s.bind_user;
        else
            untrusted("BindUser=");
    }
    if (s.network_configured() && file_wins(SettingGroup::Network)) {
        if (trusted) {
            // nspawn's settings_private_network() / settings_network_veth().
            bool veth = s.network_veth.value_or(false) || s.network_bridge || s.network_zone;
            spec.network_veth = veth;
            spec.private_network = s.private_network.value_or(false) || veth || !s.network_interfaces.empty() ||
                                   !s.network_macvlan.empty() || !s.network_ipvlan.empty() ||
                                   !s.network_veth_extra.empty();
            spec.network_interfaces = s.network_interfaces;
            spec.network_macvlan = s.network_macvlan;
            spec.network_ipvlan = s.network_ipvlan;
            spec.network_veth_extra = s.network_veth_extra;
            spec.network_bridge = s.network_bridge.value_or("");
            spec.network_zone = s.network_zone.value_or("");
        } else {
            if (s.private_network) untrusted("Private=");
            if (!s.network_interfaces.empty()) untrusted("Interface=");
            if (!s.network_macvlan.empty()) untrusted("MACVLAN=");
            if (!s.network_ipvlan.empty()) untrusted("IPVLAN=");
            if (s.network_veth) untrusted("VirtualEthernet=");
            if (!s.network_veth_extra.empty()) untrusted("VirtualEthernetExtra=");
            if (s.network_bridge) untrusted("Bridge=");
            if (s.network_zone) untrusted("Zone=");
        }
    }
    if (!s.ports.empty() && file_wins(SettingGroup::ExposePorts)) {
        if (trusted)
            spec.ports = s.ports;
        else
            untrusted("Port=");
    }
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
