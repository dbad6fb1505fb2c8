#include "core/spawn/settings.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include "core/base/id128.hpp"

using namespace mk::core;

namespace {

constexpr std::string_view kRealistic = R"(# /etc/systemd/nspawn/web.nspawn
[Exec]
Boot=yes
Parameters=--log-level=debug "systemd.unit=multi-user.target"
Environment=LANG=C.UTF-8 TZ=UTC
Environment=FOO="bar baz"
Capability=CAP_NET_ADMIN, CAP_SYS_TIME
DropCapability=CAP_AUDIT_CONTROL
KillSignal=SIGRTMIN+3
MachineID=0123456789abcdef0123456789abcdef
Hostname=web.example
PrivateUsers=pick
NoNewPrivileges=yes
LimitNOFILE=1024:4096
ResolvConf=copy-host
Timezone=symlink
SystemCallFilter=@system-service
SystemCallFilter=~@clock
; a comment
[Files]
ReadOnly=no
Volatile=state
Bind=/srv/data:/data:norbind
BindReadOnly=/etc/ssl/certs
TemporaryFileSystem=/tmp:mode=1777
Inaccessible=/proc/kcore
Overlay=/lower:/upper:/opt
PrivateUsersOwnership=map
BindUser=alice

[Network]
VirtualEthernet=yes
Zone=office
Port=tcp:8080:80
)";

std::string error_of(std::string_view text, std::string_view source = "test.nspawn") {
    try {
        parse_settings(text, source);
    } catch (const UsageError& e) {
        return e.what();
    }
    return "";
}

std::string tmpdir() {
    char tmpl[] = "/tmp/mk-settings-XXXXXX";
    EXPECT_NE(mkdtemp(tmpl), nullptr);
    return tmpl;
}

void write_file(const std::string& path, std::string_view text) {
    std::ofstream f(path, std::ios::binary);
    f << text;
}

}  // namespace

TEST(ParseSettings, RealisticFile) {
    Settings s = parse_settings(kRealistic, "web.nspawn");
    EXPECT_TRUE(s.warnings.empty());
    EXPECT_EQ(s.boot, true);
    EXPECT_EQ(s.parameters, (std::vector<std::string>{"--log-level=debug", "systemd.unit=multi-user.target"}));
    EXPECT_EQ(s.environment, (std::vector<std::string>{"LANG=C.UTF-8", "TZ=UTC", "FOO=bar baz"}));
    EXPECT_EQ(s.capability, (UINT64_C(1) << CAP_NET_ADMIN) | (UINT64_C(1) << CAP_SYS_TIME));
    EXPECT_EQ(s.drop_capability, UINT64_C(1) << CAP_AUDIT_CONTROL);
    EXPECT_EQ(s.kill_signal, SIGRTMIN + 3);
    ASSERT_TRUE(s.machine_id);
    EXPECT_EQ(id128_to_string(*s.machine_id), "0123456789abcdef0123456789abcdef");
    EXPECT_EQ(s.hostname, "web.example");
    EXPECT_EQ(s.private_users->mode, UserNamespaceMode::Pick);
    EXPECT_EQ(s.no_new_privileges, true);
    EXPECT_EQ(s.rlimits[RLIMIT_NOFILE]->hard, 4096u);
    EXPECT_EQ(s.resolv_conf, ResolvConfMode::CopyHost);
    EXPECT_EQ(s.timezone, TimezoneMode::Symlink);
    EXPECT_EQ(s.syscall_allow, std::vector<std::string>{"@system-service"});
    EXPECT_EQ(s.syscall_deny, std::vector<std::string>{"@clock"});
    EXPECT_EQ(s.read_only, false);
    EXPECT_EQ(s.volatile_mode, VolatileMode::State);
    ASSERT_EQ(s.binds.size(), 2u);
    EXPECT_EQ(s.binds[0].destination, "/data");
    EXPECT_FALSE(s.binds[0].recursive);
    EXPECT_TRUE(s.binds[1].read_only);
    EXPECT_EQ(s.tmpfs.at(0).options, "mode=1777");
    EXPECT_EQ(s.inaccessible, std::vector<std::string>{"/proc/kcore"});
    EXPECT_EQ(s.overlays.at(0).destination, "/opt");
    EXPECT_EQ(s.private_users_ownership, UserNamespaceOwnership::Map);
    EXPECT_EQ(s.bind_user, std::vector<std::string>{"alice"});
    EXPECT_EQ(s.network_veth, true);
    EXPECT_EQ(s.network_zone, "office");
    EXPECT_EQ(s.ports.at(0).host_port, 8080);
    EXPECT_FALSE(s.ephemeral.has_value());
    EXPECT_FALSE(s.user.has_value());
}

TEST(ParseSettings, IniRules) {
    Settings s = parse_settings("[Exec]\n  Hostname =  foo  \r\nParameters=a \\\n# skipped comment\n  b \\\nc\n", "f");
    EXPECT_EQ(s.hostname, "foo");
    EXPECT_EQ(s.parameters, (std::vector<std::string>{"a", "b", "c"}));

    // An empty assignment resets a list; later scalars win.
    s = parse_settings("[Files]\nBind=/a\nBind=\nBind=/b\n[Exec]\nHostname=x\nHostname=y\nUser=u\nUser=\n", "f");
    ASSERT_EQ(s.binds.size(), 1u);
    EXPECT_EQ(s.binds[0].source, "/b");
    EXPECT_EQ(s.hostname, "y");
    EXPECT_FALSE(s.user);
}

TEST(ParseSettings, UnknownThingsAreWarnings) {
    Settings s = parse_settings(
        "Hostname=x\n[Exec]\nFrobnicate=1\nX-Mine=1\n[Bogus]\nA=b\n[X-Vendor]\nA=b\n[Network]\nPrivate=yes\n", "f.nspawn");
    ASSERT_EQ(s.warnings.size(), 3u);
    EXPECT_EQ(s.warnings[0], "f.nspawn:1: assignment outside of a section, ignoring");
    EXPECT_EQ(s.warnings[1], "f.nspawn:3: unknown key 'Frobnicate' in section [Exec], ignoring");
    EXPECT_EQ(s.warnings[2], "f.nspawn:5: unknown section 'Bogus', ignoring");
    EXPECT_EQ(s.private_network, true);
    EXPECT_FALSE(s.hostname);

    std::string many = "[Exec]\n";
    for (int i = 0; i < 10000; i++) many += "Nope=1\n";
    EXPECT_EQ(parse_settings(many, "f").warnings.size(), kSettingsWarningsMax + 1);
}

TEST(ParseSettings, ErrorsNameFileAndLine) {
    struct Case {
        const char* text;
        const char* message;
    };
    const Case cases[] = {
        {"[Exec]\nBoot=maybe\n",
         "f.nspawn:2: Invalid Boot= value 'maybe': expected a boolean (yes/no, true/false, on/off, 1/0)"},
        {"[Exec]\n\nHostname=a..b\n", "f.nspawn:3: Invalid Hostname= value 'a..b': not a valid host name"},
        {"[Exec]\nKillSignal=SIGBOGUS\n", "f.nspawn:2: Invalid KillSignal= value 'SIGBOGUS': unknown signal name"},
        {"[Files]\nBind=/a:rel\n", "f.nspawn:2: Invalid Bind= value '/a:rel': destination must be an absolute path"},
        {"[Files]\nBind=relative\n", "f.nspawn:2: Invalid Bind= value 'relative': source: path must be absolute"},
        {"[Exec]\nBoot\n", "f.nspawn:2: missing '=' in 'Boot'"},
        {"[Exec]\n=yes\n", "f.nspawn:2: missing key name before '='"},
        {"[Exec\n", "f.nspawn:1: invalid section header '[Exec'"},
        {"[Exec]\nEnvironment=1A=b\n",
         "f.nspawn:2: Invalid Environment= value '1A=b': variable name must not start with a digit"},
        {"[Exec]\nMachineID=00000000000000000000000000000000\n",
         "f.nspawn:2: Invalid MachineID= value '00000000000000000000000000000000': the all-zero id is not allowed"},
        {"[Exec]\nParameters=\"unterminated\n",
         "f.nspawn:2: Invalid Parameters= value '\"unterminated': unterminated quote"},
        {"[Exec]\nHostname=a\x01z\n", "f.nspawn:2: Invalid Hostname= value 'a\\x01z': not a valid host name"},
    };
    for (const auto& c : cases) EXPECT_EQ(error_of(c.text, "f.nspawn"), c.message) << c.text;

    // Every error is exactly one line, whatever the input.
    for (const char* bad : {"[Exec]\nHostname=\xff\n", "[Exec]\nBoot=y\\\nes\n", "[Files]\nOverlay=/a\n",
                            "[Network]\nPort=0\n", "[Exec]\nCapability=CAP_NOPE\n", "[Exec]\nPrivateUsers=-1\n"}) {
        std::string e = error_of(bad, "f.nspawn");
        EXPECT_EQ(e.rfind("f.nspawn:", 0), 0u) << bad << " -> " << e;
        EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    }
    std::string nul = std::string("[Exec]\nHostname=a") + '\0' + "b\n";
    EXPECT_EQ(error_of(nul, "f"), "f:2: line contains a NUL byte");
}

TEST(ParseSettings, Bounds) {
    std::string big(kSettingsFileMax + 1, '#');
    EXPECT_EQ(error_of(big, "f"), "f: file too large (at most 1048576 bytes)");

    std::string line = "[Exec]\nParameters=" + std::string(kSettingsLineMax, 'a') + "\n";
    EXPECT_EQ(error_of(line, "f"), "f:2: line too long (at most 65536 bytes)");

    // Continuations cannot build an unbounded logical line either.
    std::string cont = "[Exec]\nParameters=";
    for (int i = 0; i < 100; i++) cont += std::string(1000, 'a') + "\\\n";
    EXPECT_EQ(error_of(cont, "f"), "f:2: line too long (at most 65536 bytes)");

    std::string many = "[Files]\n";
    for (size_t i = 0; i <= kSettingsListMax; i++) many += "Inaccessible=/x" + std::to_string(i) + "\n";
    EXPECT_EQ(error_of(many, "f"), "f:4098: Invalid Inaccessible= value '/x4096': too many entries (at most 4096)");
}

TEST(ParseSettings, BootAndProcessTwoConflict) {
    Settings s = parse_settings("[Exec]\nBoot=yes\nProcessTwo=yes\n", "f");
    EXPECT_EQ(s.boot, true);
    EXPECT_FALSE(s.process_two);
    ASSERT_EQ(s.warnings.size(), 1u);
}

TEST(ApplySettings, CommandLineWinsUnlessOverride) {
    Settings s = parse_settings("[Exec]\nHostname=fromfile\nUser=fileuser\n[Files]\nBind=/file\n", "f");
    SpawnSpec spec;
    spec.hostname = "fromcli";
    spec.binds.push_back(parse_bind("/cli", false));
    SettingsMask mask;
    mask.set(SettingGroup::Hostname);
    mask.set(SettingGroup::CustomMounts);
    std::vector<std::string> w;

    SpawnSpec a = spec;
    apply_settings(s, a, true, w, mask, SettingsMode::Yes);
    EXPECT_EQ(a.hostname, "fromcli");
    EXPECT_EQ(a.user, "fileuser");
    ASSERT_EQ(a.binds.size(), 1u);
    EXPECT_EQ(a.binds[0].source, "/cli");

    SpawnSpec b = spec;
    apply_settings(s, b, true, w, mask, SettingsMode::Override);
    EXPECT_EQ(b.hostname, "fromfile");
    EXPECT_EQ(b.binds.at(0).source, "/file");

    SpawnSpec c = spec;
    apply_settings(s, c, true, w, mask, SettingsMode::No);
    EXPECT_EQ(c.user, "");
    EXPECT_TRUE(w.empty());
}

TEST(ApplySettings, StartModeAndParameters) {
    SpawnSpec spec;
    std::vector<std::string> w;
    apply_settings(parse_settings("[Exec]\nBoot=yes\nParameters=--unit=rescue.target\n", "f"), spec, false, w, {},
                   SettingsMode::Yes);
    EXPECT_EQ(spec.start_mode, StartMode::Boot);
    EXPECT_EQ(spec.argv, std::vector<std::string>{"--unit=rescue.target"});
    SettingsMask mask;
    mask.set(SettingGroup::StartMode);
    SpawnSpec cli;
    cli.argv = {"/bin/sh"};
    apply_settings(parse_settings("[Exec]\nProcessTwo=yes\nParameters=x\n", "f"), cli, true, w, mask, SettingsMode::Yes);
    EXPECT_EQ(cli.start_mode, StartMode::Command);
    EXPECT_EQ(cli.argv, std::vector<std::string>{"/bin/sh"});
}

// T-27 / B-45: every privileged key from a file next to the image is ignored, with a warning
// naming it; harmless keys still apply. The same file in /etc applies fully.
TEST(ApplySettings, UntrustedFileIsGated) {
    constexpr std::string_view kHostile = R"([Exec]
Boot=yes
Hostname=inner
Environment=A=1
User=nobody
KillSignal=SIGTERM
DropCapability=CAP_SYS_TIME
Capability=all
AmbientCapability=CAP_SYS_ADMIN
PivotRoot=/sysroot
Ephemeral=yes
PrivateUsers=no
MachineID=0123456789abcdef0123456789abcdef
NoNewPrivileges=no
SystemCallFilter=@mount kexec_load
SystemCallFilter=~@clock
LimitNOFILE=infinity
OOMScoreAdjust=-1000
CPUAffinity=0
LinkJournal=host
ResolvConf=copy-host
Timezone=off
[Files]
Bind=/:/host
BindReadOnly=/etc/shadow
TemporaryFileSystem=/tmp
Inaccessible=/x
Overlay=/a:/b:/c
OverlayReadOnly=/a:/c
PrivateUsersOwnership=chown
BindUser=root
ReadOnly=yes
[Network]
Private=no
Interface=eth0
MACVLAN=eth1
IPVLAN=eth2
VirtualEthernet=yes
VirtualEthernetExtra=vx:vy
Bridge=br0
Zone=z
Port=22
)";
    Settings s = parse_settings(kHostile, "/var/lib/machines/m.nspawn");
    ASSERT_TRUE(s.warnings.empty()) << s.warnings.front();

    SpawnSpec spec;
    spec.no_new_privileges = true;
    std::vector<std::string> w;
    apply_settings(s, spec, false, w, {}, SettingsMode::Yes);

    for (const char* key : {"Capability=",
                            "AmbientCapability=",
                            "PivotRoot=",
                            "Ephemeral=",
                            "PrivateUsers=",
                            "PrivateUsersOwnership=",
                            "MachineID=",
                            "NoNewPrivileges=no",
                            "SystemCallFilter=",
                            "LimitNOFILE=",
                            "OOMScoreAdjust=",
                            "CPUAffinity=",
                            "LinkJournal=",
                            "Bind=",
                            "BindReadOnly=",
                            "TemporaryFileSystem=",
                            "Inaccessible=",
                            "Overlay=",
                            "OverlayReadOnly=",
                            "BindUser=",
                            "Private=",
                            "Interface=",
                            "MACVLAN=",
                            "IPVLAN=",
                            "VirtualEthernet=",
                            "VirtualEthernetExtra=",
                            "Bridge=",
                            "Zone=",
                            "Port="}) {
        std::string needle = std::string("/var/lib/machines/m.nspawn: ignoring ") + key;
        bool found = false;
        for (const auto& line : w) found = found || line.rfind(needle, 0) == 0;
        EXPECT_TRUE(found) << "no warning for " << key;
    }
    // Privileged effects absent.
    EXPECT_FALSE(spec.capabilities_all);
    EXPECT_EQ(spec.capabilities_add, 0u);
    EXPECT_EQ(spec.capabilities_ambient, 0u);
    EXPECT_EQ(spec.pivot_root_new, "");
    EXPECT_FALSE(spec.ephemeral);
    EXPECT_FALSE(spec.uuid);
    EXPECT_TRUE(spec.no_new_privileges);
    EXPECT_TRUE(spec.syscall_allow.empty());
    EXPECT_FALSE(spec.rlimits[RLIMIT_NOFILE]);
    EXPECT_FALSE(spec.oom_score_adjust);
    EXPECT_TRUE(spec.cpu_affinity.empty());
    EXPECT_EQ(spec.link_journal, LinkJournalMode::Auto);
    EXPECT_TRUE(spec.binds.empty());
    EXPECT_TRUE(spec.tmpfs.empty());
    EXPECT_TRUE(spec.inaccessible.empty());
    EXPECT_TRUE(spec.overlays.empty());
    EXPECT_TRUE(spec.bind_users.empty());
    EXPECT_EQ(spec.userns_ownership, UserNamespaceOwnership::Auto);
    EXPECT_TRUE(spec.network_interfaces.empty());
    EXPECT_FALSE(spec.network_veth);
    EXPECT_EQ(spec.network_bridge, "");
    EXPECT_TRUE(spec.ports.empty());
    // Harmless or narrowing keys apply (nspawn does not gate them either).
    EXPECT_EQ(spec.start_mode, StartMode::Boot);
    EXPECT_EQ(spec.hostname, "inner");
    EXPECT_EQ(spec.setenv, std::vector<std::string>{"A=1"});
    EXPECT_EQ(spec.user, "nobody");
    EXPECT_EQ(spec.kill_signal, SIGTERM);
    EXPECT_EQ(spec.capabilities_drop, UINT64_C(1) << CAP_SYS_TIME);
    EXPECT_EQ(spec.syscall_deny, std::vector<std::string>{"@clock"});
    EXPECT_EQ(spec.resolv_conf, ResolvConfMode::CopyHost);
    EXPECT_EQ(spec.timezone, TimezoneMode::Off);
    EXPECT_TRUE(spec.read_only);

    // Trusted (or --settings=trusted): all of it applies, without warnings.
    for (auto [trusted, mode] : {std::pair{true, SettingsMode::Yes}, std::pair{false, SettingsMode::Trusted}}) {
        SpawnSpec t;
        std::vector<std::string> tw;
        apply_settings(s, t, trusted, tw, {}, mode);
        EXPECT_TRUE(tw.empty());
        EXPECT_TRUE(t.capabilities_all);
        EXPECT_EQ(t.pivot_root_new, "/sysroot");
        EXPECT_TRUE(t.ephemeral);
        EXPECT_FALSE(t.no_new_privileges);
        EXPECT_EQ(t.binds.size(), 2u);
        EXPECT_EQ(t.bind_users, std::vector<std::string>{"root"});
        EXPECT_TRUE(t.network_veth);
        EXPECT_TRUE(t.private_network);
        EXPECT_EQ(t.network_zone, "z");
        EXPECT_EQ(t.ports.size(), 1u);
        EXPECT_EQ(t.syscall_allow, (std::vector<std::string>{"@mount", "kexec_load"}));
        EXPECT_EQ(t.rlimits[RLIMIT_NOFILE]->soft, kRlimitInfinity);
        EXPECT_EQ(t.userns_mode, UserNamespaceMode::No);
        EXPECT_EQ(t.userns_ownership, UserNamespaceOwnership::Chown);
    }
}

TEST(ApplySettings, UntrustedNoNewPrivilegesYesApplies) {
    SpawnSpec spec;
    std::vector<std::string> w;
    apply_settings(parse_settings("[Exec]\nNoNewPrivileges=yes\n", "f"), spec, false, w, {}, SettingsMode::Yes);
    EXPECT_TRUE(spec.no_new_privileges);
    EXPECT_TRUE(w.empty());
}

class FindSettings : public ::testing::Test {
protected:
    void SetUp() override {
        root_ = tmpdir();
        etc_ = root_ + "/etc";
        run_ = root_ + "/run";
        pool_ = root_ + "/pool";
        for (const auto& d : {etc_, run_, pool_}) std::filesystem::create_directory(d);
        std::filesystem::create_directory(pool_ + "/m");
    }
    void TearDown() override { std::filesystem::remove_all(root_); }
    std::string root_, etc_, run_, pool_;
};

TEST_F(FindSettings, SearchOrder) {
    EXPECT_FALSE(find_settings_file("m", pool_ + "/m", etc_, run_));

    write_file(pool_ + "/m.nspawn", "pool");
    auto f = find_settings_file("m", pool_ + "/m/", etc_, run_);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->path, pool_ + "/m.nspawn");
    EXPECT_FALSE(f->trusted);
    EXPECT_EQ(f->contents, "pool");

    // A raw image: same directory, named after the machine.
    f = find_settings_file("m", pool_ + "/m.raw", etc_, run_);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->path, pool_ + "/m.nspawn");

    write_file(run_ + "/m.nspawn", "run");
    f = find_settings_file("m", pool_ + "/m", etc_, run_);
    EXPECT_EQ(f->contents, "run");
    EXPECT_TRUE(f->trusted);

    write_file(etc_ + "/m.nspawn", "etc");
    f = find_settings_file("m", pool_ + "/m", etc_, run_);
    EXPECT_EQ(f->contents, "etc");
    EXPECT_TRUE(f->trusted);

    EXPECT_THROW(find_settings_file("../m", pool_, etc_, run_), UsageError);
    EXPECT_FALSE(find_settings_file("other", "", etc_, run_));
}

TEST_F(FindSettings, RefusesSymlinksFifosAndHugeFiles) {
    std::filesystem::create_symlink("/etc/passwd", pool_ + "/m.nspawn");
    EXPECT_THROW(find_settings_file("m", pool_ + "/m", etc_, run_), UsageError);
    std::filesystem::remove(pool_ + "/m.nspawn");

    ASSERT_EQ(mkfifo((pool_ + "/m.nspawn").c_str(), 0600), 0);
    EXPECT_THROW(find_settings_file("m", pool_ + "/m", etc_, run_), UsageError);  // and does not block
    std::filesystem::remove(pool_ + "/m.nspawn");

    write_file(pool_ + "/m.nspawn", std::string(kSettingsFileMax + 1, '#'));
    EXPECT_THROW(find_settings_file("m", pool_ + "/m", etc_, run_), UsageError);
    write_file(pool_ + "/m.nspawn", std::string(kSettingsFileMax, '#'));
    EXPECT_TRUE(find_settings_file("m", pool_ + "/m", etc_, run_));
}

// The trust policy as data: adding a key to the table without a sample here, or changing a key's
// class, fails this test, so it is a decision someone made and reviewed.
TEST(SettingsKeys, EveryKeyIsGatedByItsTrustClass) {
    const std::map<std::string, std::string> kSample = {
        {"Boot", "yes"},
        {"ProcessTwo", "yes"},
        {"Ephemeral", "yes"},
        {"Parameters", "x"},
        {"Environment", "A=1"},
        {"User", "nobody"},
        {"Capability", "CAP_NET_ADMIN"},
        {"AmbientCapability", "CAP_NET_ADMIN"},
        {"DropCapability", "CAP_SYS_TIME"},
        {"KillSignal", "SIGTERM"},
        {"Personality", "x86"},
        {"MachineID", "0123456789abcdef0123456789abcdef"},
        {"WorkingDirectory", "/x"},
        {"PivotRoot", "/sysroot"},
        {"PrivateUsers", "pick"},
        {"NotifyReady", "yes"},
        {"SystemCallFilter", "kexec_load"},
        {"Hostname", "h"},
        {"NoNewPrivileges", "no"},
        {"OOMScoreAdjust", "-1000"},
        {"CPUAffinity", "0"},
        {"ResolvConf", "off"},
        {"LinkJournal", "host"},
        {"Timezone", "off"},
        {"SuppressSync", "yes"},
        {"ReadOnly", "yes"},
        {"Volatile", "state"},
        {"Bind", "/a"},
        {"BindReadOnly", "/a"},
        {"TemporaryFileSystem", "/tmp"},
        {"Inaccessible", "/x"},
        {"Overlay", "/a:/b:/c"},
        {"OverlayReadOnly", "/a:/c"},
        {"PrivateUsersChown", "yes"},
        {"PrivateUsersOwnership", "chown"},
        {"BindUser", "root"},
        {"Private", "yes"},
        {"Interface", "eth0"},
        {"MACVLAN", "eth0"},
        {"IPVLAN", "eth0"},
        {"VirtualEthernet", "yes"},
        {"VirtualEthernetExtra", "vx:vy"},
        {"Bridge", "br0"},
        {"Zone", "z"},
        {"Port", "22"},
    };
    const std::set<std::string> kHarmless = {
        "Boot",       "ProcessTwo",   "Parameters",       "Environment", "User",     "DropCapability",
        "KillSignal", "Personality",  "WorkingDirectory", "NotifyReady", "Hostname", "ResolvConf",
        "Timezone",   "SuppressSync", "ReadOnly",         "Volatile"};
    const std::set<std::string> kNarrowing = {"SystemCallFilter", "NoNewPrivileges"};
    size_t n = 0;
    for (const auto& k : settings_keys()) {
        std::string name(k.name);
        SCOPED_TRACE(name);
        std::string value = name.rfind("Limit", 0) == 0 ? "1" : kSample.count(name) ? kSample.at(name) : "";
        ASSERT_FALSE(value.empty()) << "no sample value for a new key: decide its trust class and add it here";
        SettingTrust want = kHarmless.count(name)    ? SettingTrust::Any
                            : kNarrowing.count(name) ? SettingTrust::Narrowing
                                                     : SettingTrust::Trusted;
        EXPECT_EQ(k.trust, want);
        Settings s = parse_settings("[" + std::string(k.section) + "]\n" + name + "=" + value + "\n", "f");
        std::vector<std::string> w;
        SpawnSpec untrusted;
        apply_settings(s, untrusted, false, w, {}, SettingsMode::Yes);
        EXPECT_EQ(w.size(), k.trust == SettingTrust::Any ? 0u : 1u);
        std::string label = name == "PrivateUsersChown" ? "PrivateUsersOwnership" : name;
        if (!w.empty()) {
            EXPECT_EQ(w[0].rfind("f: ignoring " + label + "=", 0), 0u) << w[0];
        }
        w.clear();
        SpawnSpec trusted;
        apply_settings(s, trusted, true, w, {}, SettingsMode::Yes);
        EXPECT_TRUE(w.empty());
        // The command line's group wins, so nothing is applied and nothing is warned about.
        SettingsMask mask;
        if (k.group == SettingGroup::Rlimit) mask.set_rlimit(*rlimit_from_name(name.substr(5)));
        else mask.set(k.group);
        apply_settings(s, untrusted, false, w, mask, SettingsMode::Yes);
        EXPECT_TRUE(w.empty());
        n++;
    }
    EXPECT_EQ(n, kSample.size() + kRlimitCount);
}

TEST(ApplySettings, UntrustedSystemCallFilterKeepsDenyEntries) {
    Settings s = parse_settings("[Exec]\nSystemCallFilter=kexec_load\nSystemCallFilter=~@clock\n", "f");
    SpawnSpec spec;
    std::vector<std::string> w;
    apply_settings(s, spec, false, w, {}, SettingsMode::Yes);
    EXPECT_TRUE(spec.syscall_allow.empty());
    EXPECT_EQ(spec.syscall_deny, std::vector<std::string>{"@clock"});
    ASSERT_EQ(w.size(), 1u);
    EXPECT_EQ(w[0],
              "f: ignoring SystemCallFilter= (allow-list entries), the file is not trusted (it is not in /etc or /run)");
}

// The file's mounts replace the command line's as a whole, whichever mount key it set.
TEST(ApplySettings, TrustedMountsReplaceAsAWhole) {
    SpawnSpec spec;
    spec.binds.push_back(parse_bind("/cli", false));
    std::vector<std::string> w;
    apply_settings(parse_settings("[Files]\nTemporaryFileSystem=/tmp\n", "f"), spec, true, w, {}, SettingsMode::Yes);
    EXPECT_TRUE(spec.binds.empty());
    EXPECT_EQ(spec.tmpfs.size(), 1u);
}
