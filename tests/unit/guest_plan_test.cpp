// The GuestPlan (core/spawn/guest_plan) and finalize() (core/spawn/finalize): what the container's
// PID 1 gets and what options imply, decided without root, a tree or a clone.
#include <gtest/gtest.h>

#include <signal.h>

#include <algorithm>
#include <map>
#include <string>

#include "core/base/error.hpp"
#include "core/kernel/capabilities.hpp"
#include "core/spawn/finalize.hpp"
#include "core/spawn/guest_plan.hpp"

using namespace mk::core;

namespace {

const Uuid kTreeId = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
const Uuid kRandom = {0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x40, 0x11, 0x80, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88};

SpawnSpec spec_with(std::vector<std::string> argv = {"/bin/true"}) {
    SpawnSpec s;
    s.directory = "/srv/tree";
    s.machine_name = "box";
    s.argv = std::move(argv);
    s.console = ConsoleMode::Pipe;
    return s;
}

GuestFacts facts() {
    GuestFacts f;
    f.user.name = "root";
    f.user.home = "/root";
    f.user.shell = "/bin/bash";
    f.shell = "/bin/bash";
    f.init = "/usr/lib/systemd/systemd";
    f.host_os_release = "ID=debian\nVERSION_ID=\"12\"\n# comment\nbad-key=1\n";
    f.random_uuid = kRandom;
    return f;
}

std::map<std::string, std::string> env_of(const GuestPlan& g) {
    std::map<std::string, std::string> m;
    for (const auto& e : g.env) m[e.substr(0, e.find('='))] = e.substr(e.find('=') + 1);
    return m;
}

EnvLookup env_from(std::map<std::string, std::string> vars) {
    return [vars = std::move(vars)](const char* name) -> const char* {
        auto it = vars.find(name);
        return it == vars.end() ? nullptr : it->second.c_str();
    };
}

}  // namespace

TEST(GuestPlan, CommandRunsAsGivenWithNspawnsEnvironment) {
    GuestPlan g = plan_guest(spec_with({"/bin/echo", "hi"}), facts());
    EXPECT_EQ(g.argv, (std::vector<std::string>{"/bin/echo", "hi"}));
    EXPECT_EQ(g.exec_path, "/bin/echo");
    EXPECT_FALSE(g.boot);
    EXPECT_EQ(g.hostname, "box");
    EXPECT_EQ(g.cwd, "/root");
    auto env = env_of(g);
    EXPECT_EQ(env["PATH"], kDefaultPath);
    EXPECT_EQ(env["container"], "systemd-nspawn");
    EXPECT_EQ(env["HOME"], "/root");
    EXPECT_EQ(env["USER"], "root");
    EXPECT_EQ(env["TERM"], "dumb");  // pipe console
    EXPECT_EQ(env["LANG"], "C.UTF-8");
    EXPECT_EQ(env["container_host_id"], "debian");
    EXPECT_EQ(env["container_host_version_id"], "12");
    EXPECT_FALSE(env.contains("container_host_bad-key"));
    EXPECT_FALSE(env.contains("NOTIFY_SOCKET"));
    EXPECT_FALSE(g.use_pty);
}

TEST(GuestPlan, BareCommandIsSearchedInPath) {
    GuestPlan g = plan_guest(spec_with({"sh", "-c", "true"}), facts());
    EXPECT_TRUE(g.exec_path.empty());
}

TEST(GuestPlan, NoCommandRunsTheLoginShell) {
    GuestPlan g = plan_guest(spec_with({}), facts());
    EXPECT_EQ(g.exec_path, "/bin/bash");
    EXPECT_EQ(g.argv, (std::vector<std::string>{"-bash"}));
    GuestFacts none = facts();
    none.shell.clear();
    EXPECT_THROW(plan_guest(spec_with({}), none), UsageError);
}

TEST(GuestPlan, BootRunsTheInitWithItsNotifySocket) {
    SpawnSpec s = spec_with({"--unit=rescue.target"});
    s.start_mode = StartMode::Boot;
    GuestPlan g = plan_guest(s, facts());
    EXPECT_TRUE(g.boot);
    EXPECT_TRUE(g.init_notifies);
    EXPECT_EQ(g.argv, (std::vector<std::string>{"/usr/lib/systemd/systemd", "--unit=rescue.target"}));
    EXPECT_EQ(g.cwd, "/");
    auto env = env_of(g);
    EXPECT_EQ(env["NOTIFY_SOCKET"], "/run/host/notify");
    EXPECT_FALSE(env.contains("LANG"));

    GuestFacts sysv = facts();
    sysv.init = "/sbin/init";
    EXPECT_FALSE(plan_guest(s, sysv).init_notifies);  // only systemd answers $NOTIFY_SOCKET
    s.notify_ready = true;
    EXPECT_TRUE(plan_guest(s, sysv).init_notifies);
    sysv.init.clear();
    EXPECT_THROW(plan_guest(s, sysv), UsageError);
}

TEST(GuestPlan, MachineIdIsUuidElseTheTreesElseRandom) {
    SpawnSpec s = spec_with();
    GuestFacts f = facts();
    EXPECT_EQ(plan_guest(s, f).uuid, kRandom);
    f.tree_machine_id = kTreeId;
    GuestPlan g = plan_guest(s, f);
    EXPECT_EQ(g.uuid, kTreeId);
    EXPECT_EQ(env_of(g)["container_uuid"], "01020304-0506-0708-090a-0b0c0d0e0f10");
    s.uuid = kRandom;
    EXPECT_EQ(plan_guest(s, f).uuid, kRandom);
}

TEST(GuestPlan, CapabilitiesFollowTheOptionsAndTheManagersOwn) {
    SpawnSpec s = spec_with();
    GuestFacts f = facts();
    EXPECT_EQ(plan_guest(s, f).bounding, kDefaultCapabilities);
    s.private_network = true;
    EXPECT_TRUE(plan_guest(s, f).bounding & cap_bit(CAP_NET_ADMIN));
    s.capabilities_add = cap_bit(CAP_SYS_MODULE);
    s.capabilities_drop = cap_bit(CAP_MKNOD);
    uint64_t b = plan_guest(s, f).bounding;
    EXPECT_TRUE(b & cap_bit(CAP_SYS_MODULE));
    EXPECT_FALSE(b & cap_bit(CAP_MKNOD));
    f.permitted_caps = ~cap_bit(CAP_SYS_RESOURCE);
    EXPECT_FALSE(plan_guest(s, f).bounding & cap_bit(CAP_SYS_RESOURCE));
}

TEST(GuestPlan, SetenvOverridesAndTermIsSanitized) {
    SpawnSpec s = spec_with();
    s.console = ConsoleMode::Interactive;
    s.term = "xterm\x1b]0;pwned";
    s.setenv = {"PATH=/opt/bin", "FOO=bar"};
    GuestPlan g = plan_guest(s, facts());
    auto env = env_of(g);
    EXPECT_EQ(env["TERM"], "vt220");
    EXPECT_EQ(env["PATH"], "/opt/bin");
    EXPECT_EQ(env["FOO"], "bar");
    EXPECT_EQ(std::ranges::count_if(g.env, [](const std::string& e) { return e.starts_with("PATH="); }), 1);
    EXPECT_TRUE(g.use_pty);
    s.term = "xterm-256color";
    EXPECT_EQ(env_of(plan_guest(s, facts()))["TERM"], "xterm-256color");
}

TEST(GuestPlan, ResolvConfAutoFollowsTheNetworkAndTheRoot) {
    SpawnSpec s = spec_with();
    EXPECT_EQ(plan_resolv_conf(s).action, ResolvConfPlan::Copy);
    EXPECT_EQ(plan_resolv_conf(s).source, "/etc/resolv.conf");
    s.read_only = true;
    EXPECT_EQ(plan_resolv_conf(s).action, ResolvConfPlan::Bind);
    s.read_only = false;
    s.private_network = true;  // no way out: none
    EXPECT_EQ(plan_resolv_conf(s).action, ResolvConfPlan::None);
    s.network_veth = true;  // NATed veth: the host's works
    EXPECT_EQ(plan_resolv_conf(s).action, ResolvConfPlan::Copy);
    s.resolv_conf = ResolvConfMode::ReplaceStub;
    EXPECT_EQ(plan_resolv_conf(s).action, ResolvConfPlan::Replace);
    EXPECT_EQ(plan_resolv_conf(s).source, "/run/systemd/resolve/stub-resolv.conf");
    s.resolv_conf = ResolvConfMode::Delete;
    EXPECT_EQ(plan_resolv_conf(s).action, ResolvConfPlan::Delete);
    s.resolv_conf = ResolvConfMode::Off;
    EXPECT_EQ(plan_resolv_conf(s).action, ResolvConfPlan::None);
}

TEST(GuestPlan, TimezoneOnAReadOnlyRootOnlyBinds) {
    SpawnSpec s = spec_with();
    EXPECT_EQ(plan_timezone(s), TimezoneMode::Auto);
    s.volatile_mode = VolatileMode::State;
    EXPECT_EQ(plan_timezone(s), TimezoneMode::Off);
    s.timezone = TimezoneMode::Bind;
    EXPECT_EQ(plan_timezone(s), TimezoneMode::Bind);
}

TEST(GuestPlan, MachineIdParsing) {
    EXPECT_EQ(parse_machine_id("0102030405060708090a0b0c0d0e0f10\n"), kTreeId);
    EXPECT_FALSE(parse_machine_id("00000000000000000000000000000000"));
    EXPECT_FALSE(parse_machine_id("0102030405060708090A0B0C0D0E0F10"));
    EXPECT_FALSE(parse_machine_id("uninitialized"));
}

TEST(Finalize, BootImpliesSigrtmin3AndLinksImplyAPrivateNetwork) {
    SpawnSpec s = spec_with();
    finalize(s, env_from({}));
    EXPECT_EQ(s.kill_signal, 0);
    EXPECT_FALSE(s.private_network);
    EXPECT_TRUE(s.finalized);

    s.start_mode = StartMode::Boot;
    s.ports.push_back({});
    finalize(s, env_from({}));
    EXPECT_EQ(s.kill_signal, SIGRTMIN + 3);
    EXPECT_TRUE(s.private_network);

    s.kill_signal = SIGTERM;  // an explicit --kill-signal= stays
    finalize(s, env_from({}));
    EXPECT_EQ(s.kill_signal, SIGTERM);
}

TEST(Finalize, ReadsTheCallersEnvironmentSoTheLauncherDoesNot) {
    SpawnSpec s = spec_with();
    s.start_mode = StartMode::Boot;
    finalize(s, env_from({{"TERM", "xterm"}, {"UNIFIED_CGROUP_HIERARCHY", "0"}, {"MK_SPAWN_TIMING", "1"}}));
    EXPECT_EQ(s.term, "xterm");
    EXPECT_EQ(s.unified_cgroup_hierarchy, false);
    EXPECT_TRUE(s.report_exec_timing);
    finalize(s, env_from({{"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "yes"}, {"UNIFIED_CGROUP_HIERARCHY", "0"}}));
    EXPECT_EQ(s.unified_cgroup_hierarchy, true);  // the new name wins
    EXPECT_FALSE(s.report_exec_timing);
    EXPECT_THROW(finalize(s, env_from({{"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "maybe"}})), UsageError);

    SpawnSpec cmd = spec_with();  // a command does not boot: the override is not its business
    finalize(cmd, env_from({{"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "maybe"}}));
    EXPECT_FALSE(cmd.unified_cgroup_hierarchy);
}
