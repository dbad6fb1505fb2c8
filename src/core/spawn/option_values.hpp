// Parsers for the values of nspawn-style options, shared by the command line and .nspawn files.
//
// Convention: each parser takes the bare value and throws UsageError whose what() is only the
// *reason* ("destination must be an absolute path"). The caller knows whether the value came from
// --bind= or from "Bind=" in a file, so it wraps the call in parse_option_value(), which produces the
// one-line "Invalid --bind= value '/x:y': destination must be an absolute path".
// Pure functions, no I/O, thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/base/error.hpp"
#include "core/spawn/spawn_spec.hpp"

namespace mk::core {

inline constexpr size_t kPathMax = 4096;
inline constexpr uint64_t kAllCapabilities = UINT64_MAX;  // what "all" parses to, as in nspawn

// The value quoted for an error message: control characters and '\'' escaped, cut at 200 bytes,
// so the message stays one line whatever the input.
std::string quote_value(std::string_view value);

// Runs parse(value); a UsageError from it becomes "Invalid <option> value '<value>': <reason>".
// `option` is spelled the way the user wrote it: "--bind=" or "Bind=".
template <typename F>
auto parse_option_value(std::string_view option, std::string_view value, F&& parse) {
    try {
        return std::forward<F>(parse)(value);
    } catch (const UsageError& e) {
        throw UsageError("Invalid " + std::string(option) + " value " + quote_value(value) + ": " + e.what());
    }
}

// yes/no/true/false/1/0/on/off (also y/n/t/f), case-insensitive like systemd's parse_boolean().
bool parse_boolean(std::string_view s);

// An absolute path, returned normalized: repeated '/' collapsed, "." components and a trailing '/'
// dropped. Rejects empty, relative, ".." components, NUL and paths longer than kPathMax.
std::string parse_absolute_path(std::string_view s);

// SRC[:DST[:OPTS]]; ':' and '\' inside paths may be escaped with '\'. SRC may start with '+'
// (relative to the container root; kept in BindMount::source). DST defaults to SRC without '+'.
// OPTS: comma list of rbind|norbind|idmap|noidmap|rootidmap.
BindMount parse_bind(std::string_view s, bool read_only);

// PATH[:OPTS]; OPTS are passed to the tmpfs mount as they are (no control characters).
TmpfsMount parse_tmpfs(std::string_view s);

// --overlay=: LOWER[:LOWER...]:UPPER:DST, or LOWER:UPPER (DST = UPPER without '+'). An empty UPPER
// means "a temporary directory". --overlay-ro (read_only): LOWER[:LOWER...]:DST, no upper.
// Command-line order is lowest first; OverlayMount::lower is stored lowest *last* (lowerdir= order).
OverlayMount parse_overlay(std::string_view s, bool read_only);

// SIGTERM, TERM, RTMIN+3, SIGRTMAX-1, or a number 1.._NSIG-1.
int parse_signal(std::string_view s);
// "SIGTERM", "SIGRTMIN+3", or the number for signals without a name.
std::string signal_to_string(int sig);

// "CAP_SYS_ADMIN,cap_net_admin sys_chroot" (comma or whitespace separated, case-insensitive,
// CAP_ prefix optional, numbers accepted) -> bit mask; "all" -> kAllCapabilities. Empty -> 0.
uint64_t parse_capability_list(std::string_view s);

// 32 hex digits, or the 8-4-4-4-12 form. The all-zero id is rejected (it means "unset").
Uuid parse_uuid(std::string_view s);

// NAME=VALUE with NAME of [A-Za-z0-9_], not starting with a digit; VALUE valid UTF-8, no NUL.
std::string parse_env_assignment(std::string_view s);

// Network interface name as the kernel accepts it: 1..15 bytes, no '/', ':', whitespace, control.
bool ifname_is_valid(std::string_view s);
// IF[:CIF] (for --network-interface=, --network-macvlan=, --network-veth-extra=, ...).
std::string parse_interface_pair(std::string_view s);
// --network-zone=: the bridge is "vz-" + name, so at most 12 bytes.
std::string parse_network_zone(std::string_view s);
// [tcp|udp:]HOST[:CONT], ports 1..65535; CONT defaults to HOST.
PortForward parse_port(std::string_view s);

// --private-users=: boolean, "pick", "identity", "UID[:RANGE]". Sets mode/uid_shift/uid_range.
struct PrivateUsers {
    UserNamespaceMode mode = UserNamespaceMode::No;
    uint32_t uid_shift = kUidInvalid;
    uint32_t uid_range = 0x10000;
};
PrivateUsers parse_private_users(std::string_view s);

// NEW[:OLD] for --pivot-root=.
std::pair<std::string, std::string> parse_pivot_root(std::string_view s);

// --rlimit= value SOFT[:HARD] ("infinity" allowed; K/M/G/T/P/E suffixes, base 1024).
ResourceLimit parse_rlimit_value(std::string_view s);
// "NOFILE", "RLIMIT_NOFILE", "nofile" -> RLIMIT_NOFILE; nullopt if unknown.
std::optional<int> rlimit_from_name(std::string_view s);
std::string_view rlimit_to_name(int resource);  // "NOFILE"

// --rlimit=NAME=SOFT[:HARD]: the RLIMIT_* number and the limit.
std::pair<int, ResourceLimit> parse_rlimit(std::string_view s);

// -1000..1000.
int parse_oom_score_adjust(std::string_view s);
// "0-3,5 7": CPU numbers and ranges, comma or whitespace separated; sorted, deduplicated, < 8192.
std::vector<unsigned> parse_cpu_set(std::string_view s);
// Host-supported personalities: x86, x86-64 on x86-64; arm, arm64 on aarch64 (nspawn accepts those).
std::string parse_personality(std::string_view s);
// User name for -u / --bind-user=: 1..256 bytes of [A-Za-z0-9_.-], not starting with '-' (a
// relaxed form of systemd's valid_user_group_name(); whether the user exists is NSS's business).
std::string parse_user_name(std::string_view s);
// The personality(2) value for a name parse_personality() accepts (PER_LINUX32 for "x86").
unsigned long personality_number(std::string_view name);

// Credential IDs as systemd's credential_name_valid(): a file name (no '/', not "." or ".."), of
// printable ASCII without ':', 1..255 bytes.
bool credential_name_is_valid(std::string_view id);
inline constexpr size_t kCredentialSizeMax = 1024 * 1024;  // systemd's CREDENTIAL_SIZE_MAX, also the total
inline constexpr size_t kCredentialsMax = 256;
// --set-credential=ID:VALUE; VALUE is C-unescaped (\n, \xNN, \0..., so it may hold NUL bytes).
Credential parse_set_credential(std::string_view s);
// --load-credential=ID:PATH: {id, path}; the caller reads the file (an absolute path, or a name in
// $CREDENTIALS_DIRECTORY as nspawn).
std::pair<std::string, std::string> parse_load_credential(std::string_view s);
// systemd's cunescape(UNESCAPE_ACCEPT_NUL): \a \b \f \n \r \t \v \\ \" \' \s \xNN \NNN (octal)
// \uNNNN \UNNNNNNNN (as UTF-8). Throws on an incomplete or invalid escape.
std::string c_unescape(std::string_view s);

// --root-hash=: hex, at least 128 bits (as nspawn) and at most 1024; returned lowercase.
std::string parse_root_hash(std::string_view s);
// --root-hash-sig=: "base64:DATA" (checked) or an absolute path.
std::string parse_root_hash_sig(std::string_view s);

// An SELinux label for -Z/-L: user:role:type[:range], printable, no whitespace, at most 255 bytes.
std::string parse_selinux_label(std::string_view s);

// A system call name or @group for --system-call-filter= (checked lexically; the launcher resolves).
bool syscall_name_is_valid(std::string_view s);

// Splits on whitespace honouring '...' and "..." quotes and backslash escapes (systemd's
// EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE subset: \\ \" \' \n \t \xNN). Throws on an unterminated quote.
std::vector<std::string> split_words(std::string_view s);

// One table per enum. from_string returns nullopt for unknown names.
std::string_view to_string(VolatileMode m);
std::optional<VolatileMode> volatile_mode_from_string(std::string_view s);  // also booleans
std::string_view to_string(ConsoleMode m);
std::optional<ConsoleMode> console_mode_from_string(std::string_view s);
std::string_view to_string(ResolvConfMode m);
std::optional<ResolvConfMode> resolv_conf_mode_from_string(std::string_view s);
std::string_view to_string(TimezoneMode m);
std::optional<TimezoneMode> timezone_mode_from_string(std::string_view s);
std::string_view to_string(SettingsMode m);
std::optional<SettingsMode> settings_mode_from_string(std::string_view s);  // also booleans
std::string_view to_string(LinkJournalMode m);
std::optional<LinkJournalMode> link_journal_mode_from_string(std::string_view s);
std::string_view to_string(UserNamespaceOwnership m);
std::optional<UserNamespaceOwnership> userns_ownership_from_string(std::string_view s);
std::string_view to_string(PortProtocol p);
std::optional<PortProtocol> port_protocol_from_string(std::string_view s);
std::string_view to_string(StartMode m);
std::optional<StartMode> start_mode_from_string(std::string_view s);
std::string_view to_string(RegisterMode m);
std::optional<RegisterMode> register_mode_from_string(std::string_view s);  // also booleans

// Same, throwing UsageError "unknown mode, expected one of: a, b, c" for use in parse_option_value().
VolatileMode parse_volatile_mode(std::string_view s);
ConsoleMode parse_console_mode(std::string_view s);
ResolvConfMode parse_resolv_conf_mode(std::string_view s);
TimezoneMode parse_timezone_mode(std::string_view s);
SettingsMode parse_settings_mode(std::string_view s);
LinkJournalMode parse_link_journal_mode(std::string_view s);
UserNamespaceOwnership parse_userns_ownership(std::string_view s);

}  // namespace mk::core
