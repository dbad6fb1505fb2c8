#include "core/spawn/option_values.hpp"

#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sys/resource.h>

#include <csignal>
#include <string>

#include "core/base/id128.hpp"

using namespace mk::core;

namespace {

// The message a caller gets for `value` of option `opt`, or "" if it parsed.
template <typename F>
std::string error_of(std::string_view opt, std::string_view value, F parse) {
    try {
        parse_option_value(opt, value, parse);
    } catch (const UsageError& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(Boolean, AllSpellings) {
    for (const char* t : {"yes", "YES", "true", "1", "on", "y", "t"}) EXPECT_TRUE(parse_boolean(t)) << t;
    for (const char* f : {"no", "false", "0", "off", "Off", "n", "f"}) EXPECT_FALSE(parse_boolean(f)) << f;
    for (const char* bad : {"", "2", "yess", " yes", "nope"}) EXPECT_THROW(parse_boolean(bad), UsageError) << bad;
}

TEST(Path, NormalizesAndRejects) {
    EXPECT_EQ(parse_absolute_path("/"), "/");
    EXPECT_EQ(parse_absolute_path("//a//b/./c/"), "/a/b/c");
    for (const char* bad : {"", "a", "./a", "/a/../b", "/..", "~/x"})
        EXPECT_THROW(parse_absolute_path(bad), UsageError) << bad;
    EXPECT_THROW(parse_absolute_path(std::string("/a\0b", 4)), UsageError);
    EXPECT_THROW(parse_absolute_path("/" + std::string(5000, 'a')), UsageError);
}

TEST(Bind, Forms) {
    auto b = parse_bind("/src", false);
    EXPECT_EQ(b.source, "/src");
    EXPECT_EQ(b.destination, "/src");
    EXPECT_TRUE(b.recursive);
    EXPECT_FALSE(b.read_only);

    b = parse_bind("/a/:/b:norbind,idmap", true);
    EXPECT_EQ(b.source, "/a");
    EXPECT_EQ(b.destination, "/b");
    EXPECT_FALSE(b.recursive);
    EXPECT_TRUE(b.idmap);
    EXPECT_TRUE(b.read_only);

    b = parse_bind("+/var/x", false);
    EXPECT_EQ(b.source, "+/var/x");
    EXPECT_EQ(b.destination, "/var/x");

    b = parse_bind("/a::rootidmap", false);
    EXPECT_EQ(b.destination, "/a");
    EXPECT_TRUE(b.idmap_root);

    b = parse_bind("/with\\:colon:/dst", false);
    EXPECT_EQ(b.source, "/with:colon");
}

TEST(Bind, ErrorsAreOneLineAndNameTheOption) {
    EXPECT_EQ(error_of("--bind=", "/x:y", [](std::string_view v) { return parse_bind(v, false); }),
              "Invalid --bind= value '/x:y': destination must be an absolute path");
    for (const char* bad : {"", "rel", "/a/../b", "/a:/b:bogus", "/a:/b:c:d", "+rel", "/a:/../b", ":/b"}) {
        std::string e = error_of("Bind=", bad, [](std::string_view v) { return parse_bind(v, false); });
        EXPECT_NE(e, "") << bad;
        EXPECT_EQ(e.find('\n'), std::string::npos);
    }
    std::string e = error_of("--bind=", "/a\n:b", [](std::string_view v) { return parse_bind(v, false); });
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
}

TEST(Tmpfs, Forms) {
    auto t = parse_tmpfs("/tmp:mode=0755,size=10M");
    EXPECT_EQ(t.destination, "/tmp");
    EXPECT_EQ(t.options, "mode=0755,size=10M");
    EXPECT_EQ(parse_tmpfs("/run").options, "");
    EXPECT_THROW(parse_tmpfs("run"), UsageError);
    EXPECT_THROW(parse_tmpfs("/run:a\nb"), UsageError);
}

TEST(Overlay, Forms) {
    auto o = parse_overlay("/l1:/l2:/up:/dst", false);
    EXPECT_EQ(o.lower, (std::vector<std::string>{"/l2", "/l1"}));  // lowest last
    EXPECT_EQ(o.upper, "/up");
    EXPECT_EQ(o.destination, "/dst");

    o = parse_overlay("/l:+/up", false);
    EXPECT_EQ(o.lower, (std::vector<std::string>{"/l"}));
    EXPECT_EQ(o.upper, "+/up");
    EXPECT_EQ(o.destination, "/up");

    o = parse_overlay("/l::/dst", false);
    EXPECT_EQ(o.upper, "");

    o = parse_overlay("/l1:/l2:/dst", true);
    EXPECT_TRUE(o.read_only);
    EXPECT_EQ(o.lower, (std::vector<std::string>{"/l2", "/l1"}));
    EXPECT_EQ(o.upper, "");

    for (const char* bad : {"/only", "rel:/u:/d", "/l:/u:rel", "/l:/../u:/d", ""})
        EXPECT_THROW(parse_overlay(bad, false), UsageError) << bad;
}

TEST(Signal, NamesAndNumbers) {
    EXPECT_EQ(parse_signal("SIGTERM"), SIGTERM);
    EXPECT_EQ(parse_signal("TERM"), SIGTERM);
    EXPECT_EQ(parse_signal("9"), SIGKILL);
    EXPECT_EQ(parse_signal("RTMIN+3"), SIGRTMIN + 3);
    EXPECT_EQ(parse_signal("SIGRTMIN+3"), SIGRTMIN + 3);
    EXPECT_EQ(parse_signal("SIGRTMAX-1"), SIGRTMAX - 1);
    EXPECT_EQ(parse_signal("RTMIN"), SIGRTMIN);
    for (const char* bad : {"", "0", "65", "SIGFOO", "RTMIN+99", "RTMIN-1", "-1", "SIG", "term"})
        EXPECT_THROW(parse_signal(bad), UsageError) << bad;
    for (int s = 1; s < _NSIG; s++) EXPECT_EQ(parse_signal(signal_to_string(s)), s) << s;
}

TEST(Capabilities, Lists) {
    uint64_t want = (UINT64_C(1) << CAP_SYS_ADMIN) | (UINT64_C(1) << CAP_NET_ADMIN);
    EXPECT_EQ(parse_capability_list("CAP_SYS_ADMIN,CAP_NET_ADMIN"), want);
    EXPECT_EQ(parse_capability_list("sys_admin net_admin"), want);
    EXPECT_EQ(parse_capability_list("cap_Sys_Admin, NET_ADMIN"), want);
    EXPECT_EQ(parse_capability_list("all"), kAllCapabilities);
    EXPECT_EQ(parse_capability_list(""), 0u);
    EXPECT_THROW(parse_capability_list("CAP_BOGUS"), UsageError);
    EXPECT_THROW(parse_capability_list("CAP_"), UsageError);
    EXPECT_THROW(parse_capability_list("99"), UsageError);
}

TEST(Uuid, Forms) {
    auto a = parse_uuid("0123456789abcdef0123456789ABCDEF");
    auto b = parse_uuid("01234567-89ab-cdef-0123-456789abcdef");
    EXPECT_EQ(a, b);
    EXPECT_EQ(id128_to_string(a), "0123456789abcdef0123456789abcdef");
    for (const char* bad :
         {"", "00000000000000000000000000000000", "00000000-0000-0000-0000-000000000000", "0123456789abcdef0123456789abcdeg",
          "0123456789abcdef0123456789abcde", "01234567-89ab-cdef-0123-456789abcdef0"})
        EXPECT_THROW(parse_uuid(bad), UsageError) << bad;
}

TEST(Environment, Assignments) {
    EXPECT_EQ(parse_env_assignment("A_1=x y"), "A_1=x y");
    EXPECT_EQ(parse_env_assignment("A="), "A=");
    for (const char* bad : {"", "A", "=x", "1A=x", "A-B=x", "A B=x", "A=\xff"})
        EXPECT_THROW(parse_env_assignment(bad), UsageError) << bad;
}

TEST(Network, Values) {
    EXPECT_TRUE(ifname_is_valid("eth0"));
    EXPECT_FALSE(ifname_is_valid("a23456789012345x"));
    EXPECT_FALSE(ifname_is_valid("a/b"));
    EXPECT_EQ(parse_interface_pair("eth0:host0"), "eth0:host0");
    EXPECT_THROW(parse_interface_pair("eth0:"), UsageError);
    EXPECT_EQ(parse_network_zone("office"), "office");
    EXPECT_THROW(parse_network_zone("abcdefghijklm"), UsageError);
    auto p = parse_port("udp:53:5353");
    EXPECT_EQ(p.protocol, PortProtocol::Udp);
    EXPECT_EQ(p.host_port, 53);
    EXPECT_EQ(p.container_port, 5353);
    p = parse_port("80");
    EXPECT_EQ(p.protocol, PortProtocol::Tcp);
    EXPECT_EQ(p.container_port, 80);
    for (const char* bad : {"", "0", "65536", "sctp:80", "tcp:", "80:x"}) EXPECT_THROW(parse_port(bad), UsageError) << bad;
}

TEST(PrivateUsersValue, Forms) {
    EXPECT_EQ(parse_private_users("no").mode, UserNamespaceMode::No);
    auto u = parse_private_users("yes");
    EXPECT_EQ(u.mode, UserNamespaceMode::Fixed);
    EXPECT_EQ(u.uid_shift, kUidInvalid);
    EXPECT_EQ(parse_private_users("pick").mode, UserNamespaceMode::Pick);
    EXPECT_EQ(parse_private_users("identity").mode, UserNamespaceMode::Identity);
    u = parse_private_users("65536:1000");
    EXPECT_EQ(u.uid_shift, 65536u);
    EXPECT_EQ(u.uid_range, 1000u);
    for (const char* bad : {"", "x", "1:0", "4294967295", "4294967000:65536"})
        EXPECT_THROW(parse_private_users(bad), UsageError) << bad;
}

TEST(Rlimit, Values) {
    auto r = parse_rlimit_value("1024:4K");
    EXPECT_EQ(r.soft, 1024u);
    EXPECT_EQ(r.hard, 4096u);
    EXPECT_EQ(parse_rlimit_value("infinity").hard, kRlimitInfinity);
    EXPECT_THROW(parse_rlimit_value("10:5"), UsageError);
    EXPECT_THROW(parse_rlimit_value("99999999999999999999"), UsageError);
    EXPECT_THROW(parse_rlimit_value("16E"), UsageError);
    EXPECT_EQ(rlimit_from_name("nofile"), RLIMIT_NOFILE);
    EXPECT_EQ(rlimit_from_name("RLIMIT_AS"), RLIMIT_AS);
    EXPECT_FALSE(rlimit_from_name("BOGUS"));
    for (int i = 0; i < static_cast<int>(kRlimitCount); i++) EXPECT_EQ(rlimit_from_name(rlimit_to_name(i)), i);
}

TEST(Misc, Values) {
    EXPECT_EQ(parse_oom_score_adjust("-1000"), -1000);
    EXPECT_THROW(parse_oom_score_adjust("1001"), UsageError);
    EXPECT_THROW(parse_oom_score_adjust("-"), UsageError);
    EXPECT_EQ(parse_cpu_set("0-2, 5 1"), (std::vector<unsigned>{0, 1, 2, 5}));
    EXPECT_THROW(parse_cpu_set("3-1"), UsageError);
    EXPECT_THROW(parse_cpu_set("0-99999999"), UsageError);
    EXPECT_EQ(parse_user_name("build-user"), "build-user");
    EXPECT_THROW(parse_user_name("-x"), UsageError);
    EXPECT_THROW(parse_user_name("a b"), UsageError);
    EXPECT_TRUE(syscall_name_is_valid("@system-service"));
    EXPECT_FALSE(syscall_name_is_valid("@"));
    EXPECT_EQ(parse_pivot_root("/sysroot:/oldroot"), (std::pair<std::string, std::string>{"/sysroot", "/oldroot"}));
}

TEST(SplitWords, Quotes) {
    EXPECT_EQ(split_words(R"(a "b c" 'd e' f\ g h\x41)"), (std::vector<std::string>{"a", "b c", "d e", "f g", "hA"}));
    EXPECT_EQ(split_words("  "), std::vector<std::string>{});
    EXPECT_THROW(split_words("\"open"), UsageError);
    EXPECT_THROW(split_words("x\\"), UsageError);
}

// STYLE.md: each enum crossing a boundary has one table, tested to round-trip.
template <typename E, typename FromString>
void round_trip(std::initializer_list<E> all, FromString from) {
    for (E v : all) {
        std::string_view name = to_string(v);
        EXPECT_NE(name, "invalid");
        auto back = from(name);
        ASSERT_TRUE(back.has_value()) << name;
        EXPECT_EQ(*back, v) << name;
    }
    EXPECT_FALSE(from("bogus").has_value());
}

TEST(EnumTables, RoundTrip) {
    round_trip({VolatileMode::No, VolatileMode::Yes, VolatileMode::State, VolatileMode::Overlay}, volatile_mode_from_string);
    round_trip(
        {ConsoleMode::Interactive, ConsoleMode::ReadOnly, ConsoleMode::Passive, ConsoleMode::Pipe, ConsoleMode::Autopipe},
        console_mode_from_string);
    round_trip(
        {ResolvConfMode::Off, ResolvConfMode::CopyHost, ResolvConfMode::CopyStatic, ResolvConfMode::CopyUplink,
         ResolvConfMode::CopyStub, ResolvConfMode::ReplaceHost, ResolvConfMode::ReplaceStatic, ResolvConfMode::ReplaceUplink,
         ResolvConfMode::ReplaceStub, ResolvConfMode::BindHost, ResolvConfMode::BindStatic, ResolvConfMode::BindUplink,
         ResolvConfMode::BindStub, ResolvConfMode::Delete, ResolvConfMode::Auto},
        resolv_conf_mode_from_string);
    round_trip({TimezoneMode::Off, TimezoneMode::Copy, TimezoneMode::Bind, TimezoneMode::Symlink, TimezoneMode::Delete,
                TimezoneMode::Auto},
               timezone_mode_from_string);
    round_trip({SettingsMode::No, SettingsMode::Yes, SettingsMode::Trusted, SettingsMode::Override},
               settings_mode_from_string);
    round_trip({LinkJournalMode::No, LinkJournalMode::Auto, LinkJournalMode::Guest, LinkJournalMode::Host,
                LinkJournalMode::TryGuest, LinkJournalMode::TryHost},
               link_journal_mode_from_string);
    round_trip({UserNamespaceOwnership::Off, UserNamespaceOwnership::Chown, UserNamespaceOwnership::Map,
                UserNamespaceOwnership::Auto},
               userns_ownership_from_string);
    round_trip({PortProtocol::Tcp, PortProtocol::Udp}, port_protocol_from_string);
    round_trip({StartMode::Command, StartMode::Pid2, StartMode::Boot}, start_mode_from_string);
    round_trip({RegisterMode::Auto, RegisterMode::Yes, RegisterMode::No}, register_mode_from_string);
}

TEST(EnumTables, BooleanAliases) {
    EXPECT_EQ(volatile_mode_from_string("true"), VolatileMode::Yes);
    EXPECT_EQ(settings_mode_from_string("0"), SettingsMode::No);
    EXPECT_EQ(register_mode_from_string("on"), RegisterMode::Yes);
    EXPECT_EQ(error_of("--timezone=", "nope", parse_timezone_mode),
              "Invalid --timezone= value 'nope': expected one of: off, copy, bind, symlink, delete, auto");
}
