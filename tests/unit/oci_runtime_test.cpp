// machrun's pure parts: the state file, the status rules, cgroupsPath, the command line, the log
// line format, and the hook runner (forks /bin/sh; no root needed).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <sys/resource.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/base/error.hpp"
#include "core/kernel/capabilities.hpp"
#include "core/oci/state.hpp"
#include "runtime/cli.hpp"
#include "runtime/exec.hpp"
#include "runtime/hooks.hpp"
#include "runtime/log.hpp"

using namespace mk::core;
using namespace mk::runtime;
using json = nlohmann::json;

namespace {

ContainerState sample() {
    ContainerState s;
    s.id = "abc-1.x+y_z";
    s.pid = 4242;
    s.pid_start = 123456789;
    s.bundle = "/b";
    s.rootfs = "/b/rootfs";
    s.created = "2026-12-07T11:00:00.000000001Z";
    s.annotations = {{"org.example.key", "value with \"quotes\""}};
    s.cgroup = "/machrun/abc";
    s.cgroup_root = "/sys/fs/cgroup";
    s.own_cgroup = true;
    s.v1_cgroups = {"/sys/fs/cgroup/devices/machrun/abc", "/sys/fs/cgroup/pids/machrun/abc"};
    s.config = R"({"ociVersion":"1.0.0"})";
    return s;
}

}  // namespace

TEST(OciState, RoundTrips) {
    ContainerState s = sample();
    ContainerState t = state_from_json(state_to_json(s));
    EXPECT_EQ(t.id, s.id);
    EXPECT_EQ(t.pid, s.pid);
    EXPECT_EQ(t.pid_start, s.pid_start);
    EXPECT_EQ(t.bundle, s.bundle);
    EXPECT_EQ(t.rootfs, s.rootfs);
    EXPECT_EQ(t.created, s.created);
    EXPECT_EQ(t.annotations, s.annotations);
    EXPECT_EQ(t.cgroup, s.cgroup);
    EXPECT_TRUE(t.own_cgroup);
    EXPECT_EQ(t.v1_cgroups, s.v1_cgroups);
    EXPECT_EQ(t.config, s.config);
}

TEST(OciState, RefusesDamagedFiles) {
    EXPECT_THROW(state_from_json("not json"), UsageError);
    EXPECT_THROW(state_from_json("[]"), UsageError);
    EXPECT_THROW(state_from_json(R"({"id":"x"})"), UsageError);
    json j = json::parse(state_to_json(sample()));
    j["id"] = "../escape";
    EXPECT_THROW(state_from_json(j.dump()), UsageError);
    j = json::parse(state_to_json(sample()));
    j["pid"] = -1;
    EXPECT_THROW(state_from_json(j.dump()), UsageError);
    EXPECT_THROW(state_from_json(std::string(kOciStateMax + 1, ' ')), UsageError);
}

TEST(OciState, SpecStateHasRuncsFields) {
    json j = json::parse(oci_state_json(sample(), ContainerStatus::Running, false));
    EXPECT_EQ(j["id"], "abc-1.x+y_z");
    EXPECT_EQ(j["status"], "running");
    EXPECT_EQ(j["pid"], 4242);
    EXPECT_EQ(j["bundle"], "/b");
    EXPECT_EQ(j["rootfs"], "/b/rootfs");
    EXPECT_EQ(j["created"], "2026-12-07T11:00:00.000000001Z");
    EXPECT_EQ(j["owner"], "");
    EXPECT_TRUE(j.contains("ociVersion"));
    EXPECT_EQ(j["annotations"]["org.example.key"], "value with \"quotes\"");
    // Stopped: pid 0, as runc.
    EXPECT_EQ(json::parse(oci_state_json(sample(), ContainerStatus::Stopped, true))["pid"], 0);
}

TEST(OciState, IdRules) {
    EXPECT_TRUE(oci_id_is_valid("a"));
    EXPECT_TRUE(oci_id_is_valid(std::string(64, 'f')));
    EXPECT_TRUE(oci_id_is_valid("my_ctr-1.2+3"));
    EXPECT_FALSE(oci_id_is_valid(""));
    EXPECT_FALSE(oci_id_is_valid("."));
    EXPECT_FALSE(oci_id_is_valid(".."));
    EXPECT_FALSE(oci_id_is_valid("a/b"));
    EXPECT_FALSE(oci_id_is_valid("a b"));
    EXPECT_FALSE(oci_id_is_valid(std::string(kOciIdMax + 1, 'a')));
}

TEST(OciState, ParsesProcStat) {
    // comm may contain spaces and parentheses: fields are counted after the last ')'.
    std::string stat = "77 (a) b (c)) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
    EXPECT_EQ(stat_start_time(stat), 987654u);
    EXPECT_EQ(stat_state(stat), 'S');
    EXPECT_EQ(stat_state("1 (x) Z 0"), 'Z');
    EXPECT_EQ(stat_start_time("1 (x) S 1 2"), std::nullopt);
    EXPECT_EQ(stat_start_time("garbage"), std::nullopt);
    EXPECT_EQ(stat_state("garbage"), 0);
}

TEST(OciState, StatusRules) {
    EXPECT_EQ(decide_status({}), ContainerStatus::Stopped);
    EXPECT_EQ(decide_status({.alive = true, .zombie = true}), ContainerStatus::Stopped);
    EXPECT_EQ(decide_status({.alive = true, .gate_present = true}), ContainerStatus::Created);
    EXPECT_EQ(decide_status({.alive = true, .frozen = true}), ContainerStatus::Paused);
    EXPECT_EQ(decide_status({.alive = true}), ContainerStatus::Running);
    EXPECT_EQ(decide_status({.alive = false, .gate_present = true}), ContainerStatus::Stopped);
    for (auto s : {ContainerStatus::Creating, ContainerStatus::Created, ContainerStatus::Running, ContainerStatus::Paused,
                   ContainerStatus::Stopped})
        EXPECT_EQ(container_status_from_string(to_string(s)), s);
    EXPECT_EQ(container_status_from_string("bogus"), std::nullopt);
}

TEST(OciState, CgroupsPath) {
    EXPECT_EQ(oci_cgroup_path("", false, "c1"), "/machrun/c1");
    EXPECT_EQ(oci_cgroup_path("/libpod_parent/x/", false, "c1"), "/libpod_parent/x");
    EXPECT_THROW(oci_cgroup_path("relative", false, "c1"), UsageError);
    EXPECT_THROW(oci_cgroup_path("/a/../b", false, "c1"), UsageError);
    EXPECT_THROW(oci_cgroup_path("/", false, "c1"), UsageError);
    EXPECT_EQ(oci_cgroup_path("machine.slice:libpod:abc", true, "c1"), "/machine.slice/libpod-abc.scope");
    EXPECT_EQ(oci_cgroup_path("a-b.slice:p:n", true, "c1"), "/a.slice/a-b.slice/p-n.scope");
    EXPECT_EQ(oci_cgroup_path("", true, "c1"), "/system.slice/machrun-c1.scope");
    EXPECT_EQ(oci_cgroup_path(":crio:n", true, "c1"), "/system.slice/crio-n.scope");
    EXPECT_THROW(oci_cgroup_path("onlyone", true, "c1"), UsageError);
    EXPECT_THROW(oci_cgroup_path("bad/slice:p:n", true, "c1"), UsageError);
}

TEST(OciState, Rfc3339) {
    std::string t = rfc3339_now();
    ASSERT_EQ(t.size(), 30u);
    EXPECT_EQ(t[4], '-');
    EXPECT_EQ(t[10], 'T');
    EXPECT_EQ(t[19], '.');
    EXPECT_EQ(t.back(), 'Z');
}

TEST(OciStateDir, CreateLockReadRemove) {
    char tmpl[] = "/tmp/machrun-unit-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    std::string root = std::string(tmpl) + "/root";
    {
        OciStateDir dir(root);
        EXPECT_TRUE(dir.ids().empty());
        ContainerState s = sample();
        s.id = "c1";
        {
            ContainerLock l = dir.create("c1");
            EXPECT_TRUE(l);
            EXPECT_THROW(dir.create("c1"), UsageError);
            EXPECT_THROW(dir.read("c1"), UsageError);  // no state yet
            dir.write(s);
        }
        EXPECT_EQ(dir.read("c1").bundle, "/b");
        EXPECT_EQ(dir.ids(), std::vector<std::string>{"c1"});
        EXPECT_THROW(dir.create("../x"), UsageError);
        EXPECT_THROW(dir.lock("nope"), UsageError);
        // pid 4242 with that start time is not a live process.
        EXPECT_EQ(dir.status(dir.read("c1")), ContainerStatus::Stopped);
        dir.remove("c1");
        EXPECT_FALSE(dir.exists("c1"));
        EXPECT_THROW(dir.read("c1"), UsageError);
    }
    std::string cmd = "rm -rf " + std::string(tmpl);
    ASSERT_EQ(system(cmd.c_str()), 0);
}

TEST(MachrunCli, GlobalOptionsAsEnginesPassThem) {
    // containerd's go-runc
    Invocation a = parse_command_line({"--root", "/run/containerd/runc/k8s.io", "--log", "/x/log.json", "--log-format",
                                       "json", "--systemd-cgroup", "create", "--bundle", "/b", "--pid-file", "/p",
                                       "--console-socket", "/s", "--no-pivot", "id1"});
    EXPECT_EQ(a.global.root, "/run/containerd/runc/k8s.io");
    EXPECT_EQ(a.global.log, "/x/log.json");
    EXPECT_EQ(a.global.log_format, LogFormat::Json);
    EXPECT_TRUE(a.global.systemd_cgroup);
    EXPECT_EQ(a.command, "create");
    EXPECT_EQ(a.value("bundle"), "/b");
    EXPECT_EQ(a.value("pid-file"), "/p");
    EXPECT_EQ(a.value("console-socket"), "/s");
    EXPECT_TRUE(a.flag("no-pivot"));
    EXPECT_EQ(a.args, std::vector<std::string>{"id1"});
    // conmon: single-dash and "=" spellings, short options
    Invocation b = parse_command_line({"--root=/r", "--log-format=text", "create", "-b", "/b", "-pid-file=/p", "id2"});
    EXPECT_EQ(b.global.root, "/r");
    EXPECT_EQ(b.value("bundle"), "/b");
    EXPECT_EQ(b.value("pid-file"), "/p");
    Invocation c = parse_command_line({"--systemd-cgroup=false", "delete", "--force=true", "x"});
    EXPECT_FALSE(c.global.systemd_cgroup);
    EXPECT_TRUE(c.flag("force"));
}

TEST(MachrunCli, ExecKeepsTheCommandsOwnOptions) {
    Invocation e = parse_command_line({"exec", "--tty", "id", "ls", "-l", "--all"});
    EXPECT_TRUE(e.flag("tty"));
    EXPECT_EQ(e.args, (std::vector<std::string>{"id", "ls", "-l", "--all"}));
    Invocation k = parse_command_line({"kill", "--all", "id", "KILL"});
    EXPECT_TRUE(k.flag("all"));
    EXPECT_EQ(k.args, (std::vector<std::string>{"id", "KILL"}));
}

TEST(MachrunCli, CheckpointAndRestoreTakeRuncsFlags) {
    // As podman 4.3 and conmon pass them.
    Invocation c =
        parse_command_line({"--criu", "/usr/sbin/criu", "checkpoint", "--image-path", "/i", "--work-path", "/w",
                            "--leave-running", "--tcp-established", "--file-locks", "--manage-cgroups-mode=soft", "id"});
    EXPECT_EQ(c.global.criu, "/usr/sbin/criu");
    EXPECT_EQ(c.value("image-path"), "/i");
    EXPECT_EQ(c.value("work-path"), "/w");
    EXPECT_TRUE(c.flag("leave-running") && c.flag("tcp-established") && c.flag("file-locks"));
    EXPECT_EQ(c.value("manage-cgroups-mode"), "soft");
    EXPECT_EQ(c.args, (std::vector<std::string>{"id"}));
    Invocation r = parse_command_line({"restore", "--bundle", "/b", "--detach", "--pid-file", "/p", "--image-path", "/i",
                                       "--console-socket", "/s", "--ext-unix-sk", "--shell-job", "id"});
    EXPECT_EQ(r.value("bundle"), "/b");
    EXPECT_TRUE(r.flag("detach") && r.flag("ext-unix-sk") && r.flag("shell-job"));
    EXPECT_EQ(r.value("console-socket"), "/s");
    EXPECT_THROW(parse_command_line({"checkpoint", "--bundle", "/b", "id"}), UsageError);
}

TEST(MachrunCli, RefusesWithOneLine) {
    EXPECT_THROW(parse_command_line({}), UsageError);
    EXPECT_THROW(parse_command_line({"frobnicate"}), UsageError);
    EXPECT_THROW(parse_command_line({"--root", "relative", "list"}), UsageError);
    EXPECT_THROW(parse_command_line({"--log-format", "xml", "list"}), UsageError);
    EXPECT_THROW(parse_command_line({"create", "--bogus", "x"}), UsageError);
    EXPECT_THROW(parse_command_line({"create", "--bundle"}), UsageError);
    EXPECT_THROW(parse_command_line({"delete", "--force=maybe", "x"}), UsageError);
    EXPECT_TRUE(parse_command_line({"--version"}).version);
}

TEST(MachrunLog, LinesAsLogrusWritesThem) {
    std::string j = format_log_line(LogFormat::Json, "error", "container \"x\" failed", "2026-01-01T00:00:00Z");
    ASSERT_EQ(j.back(), '\n');
    json parsed = json::parse(j);
    EXPECT_EQ(parsed["level"], "error");
    EXPECT_EQ(parsed["msg"], "container \"x\" failed");
    EXPECT_EQ(parsed["time"], "2026-01-01T00:00:00Z");
    EXPECT_EQ(format_log_line(LogFormat::Text, "warning", "a \"b\"", "T"), "time=\"T\" level=warning msg=\"a \\\"b\\\"\"\n");
}

TEST(MachrunHooks, StateOnStdinArgsAndEnvExactly) {
    char tmpl[] = "/tmp/machrun-hook-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    std::string out = std::string(tmpl) + "/out";
    Hook h{
        "/bin/sh", {"sh", "-c", "cat > " + out + "; echo \"$0 $FOO ${HOME:-nohome}\" >> " + out, "argzero"}, {"FOO=bar"}, 5};
    run_hook(h, R"({"id":"c"})", "createRuntime");
    std::ifstream in(out);
    std::stringstream ss;
    ss << in.rdbuf();
    EXPECT_EQ(ss.str(), "{\"id\":\"c\"}argzero bar nohome\n");
    std::string cmd = "rm -rf " + std::string(tmpl);
    ASSERT_EQ(system(cmd.c_str()), 0);
}

TEST(MachrunHooks, FailuresNameTheHook) {
    try {
        run_hook({"/bin/sh", {"sh", "-c", "exit 7"}, {}, std::nullopt}, "{}", "poststart");
        FAIL() << "no error";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("poststart hook /bin/sh failed with exit status 7"), std::string::npos);
    }
    EXPECT_THROW(run_hook({"/nonexistent/hook", {}, {}, std::nullopt}, "{}", "prestart"), std::runtime_error);
    try {
        // Killed at its timeout (the hook itself would sleep far longer).
        run_hook({"/bin/sh", {"sh", "-c", "sleep 600"}, {}, 1}, "{}", "createContainer");
        FAIL() << "no error";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos);
    }
}

namespace {
std::string exec_error(const std::string& process) {
    try {
        parse_process_json(process);
    } catch (const UsageError& e) {
        return e.what();
    }
    return "";
}
}  // namespace

// exec --process: every field of the process object lands in the request (or is refused).
TEST(MachrunExec, ProcessFileCarriesEveryField) {
    ExecRequest r = parse_process_json(R"({"args": ["sh"], "cwd": "/w", "env": ["A=1"], "terminal": true,
        "consoleSize": {"height": 30, "width": 100}, "noNewPrivileges": true, "oomScoreAdj": 500,
        "user": {"uid": 1000, "gid": 100, "umask": 63, "additionalGids": [5, 6]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024}, {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}],
        "capabilities": {"bounding": ["CAP_KILL", "CAP_CHOWN", "CAP_NET_RAW"], "effective": ["CAP_KILL"],
                         "permitted": ["CAP_KILL", "CAP_CHOWN"], "inheritable": ["CAP_KILL", "CAP_CHOWN"],
                         "ambient": ["CAP_CHOWN"]},
        "ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 0},
        "scheduler": {"policy": "SCHED_BATCH", "nice": 7},
        "execCPUAffinity": {"initial": "0", "final": "0-1"}})");
    EXPECT_EQ(r.args, std::vector<std::string>{"sh"});
    EXPECT_EQ(r.cwd, "/w");
    EXPECT_TRUE(r.terminal && r.no_new_privileges);
    EXPECT_EQ(r.console_size, (std::pair<unsigned, unsigned>(30, 100)));
    EXPECT_EQ(r.oom_score_adj, 500);
    EXPECT_EQ(r.uid, 1000u);
    EXPECT_EQ(r.gid, 100u);
    EXPECT_EQ(r.umask, 63u);
    EXPECT_EQ(r.additional_gids, (std::vector<uint32_t>{5, 6}));
    ASSERT_TRUE(r.rlimits[RLIMIT_NOFILE]);
    EXPECT_EQ(r.rlimits[RLIMIT_NOFILE]->soft, 512u);
    EXPECT_EQ(r.rlimits[RLIMIT_NOFILE]->hard, 1024u);
    EXPECT_TRUE(r.rlimits[RLIMIT_CORE]);
    EXPECT_FALSE(r.rlimits[RLIMIT_NPROC]);
    ASSERT_TRUE(r.capabilities);
    EXPECT_EQ(r.capabilities->bounding, cap_bit(CAP_KILL) | cap_bit(CAP_CHOWN) | cap_bit(CAP_NET_RAW));
    EXPECT_EQ(r.capabilities->effective, cap_bit(CAP_KILL));
    EXPECT_EQ(r.capabilities->permitted, cap_bit(CAP_KILL) | cap_bit(CAP_CHOWN));
    EXPECT_EQ(r.capabilities->inheritable, cap_bit(CAP_KILL) | cap_bit(CAP_CHOWN));
    EXPECT_EQ(r.capabilities->ambient, cap_bit(CAP_CHOWN));
    ASSERT_TRUE(r.io_priority && r.scheduler);
    EXPECT_EQ(r.io_priority->io_class, 3);
    EXPECT_EQ(r.scheduler->nice, 7);
    EXPECT_EQ(r.cpu_affinity_initial, std::vector<unsigned>{0});
    EXPECT_EQ(r.cpu_affinity_final, (std::vector<unsigned>{0, 1}));
    EXPECT_FALSE(parse_process_json(R"({"args": ["sh"], "cwd": "/"})").capabilities);
}

TEST(MachrunExec, ProcessFileRefusesWhatCannotBeAppliedByName) {
    EXPECT_NE(exec_error(R"({"args": ["sh"], "cwd": "/", "apparmorProfile": "p"})").find("process.apparmorProfile"),
              std::string::npos);
    EXPECT_NE(exec_error(R"({"args": ["sh"], "cwd": "/", "selinuxLabel": "l"})").find("process.selinuxLabel"),
              std::string::npos);
    EXPECT_EQ(exec_error(R"({"args": ["sh"], "cwd": "/", "capabilities": {"bounding": ["CAP_KILL"],
        "effective": ["CAP_KILL", "CAP_CHOWN"], "permitted": ["CAP_KILL"]}})"),
              "exec: process.capabilities.effective has CAP_CHOWN, not in permitted; add them there or leave them out");
    EXPECT_NE(exec_error(R"({"args": ["sh"], "cwd": "/", "capabilities": {"bounding": ["CAP_KILL"],
        "permitted": ["CAP_CHOWN"], "ambient": ["CAP_KILL"]}})")
                  .find("process.capabilities.ambient has CAP_KILL, not in both permitted and bounding"),
              std::string::npos);
    EXPECT_NE(exec_error(R"({"args": ["sh"], "cwd": "/", "capabilities": {"inheritable": ["CAP_KILL"]}})")
                  .find("process.capabilities.inheritable"),
              std::string::npos);
    EXPECT_NE(exec_error(R"({"args": ["sh"], "cwd": "/", "bogus": 1})").find("process.bogus"), std::string::npos);
}

// runc's argv form: the container's process with the options on top (runc's getProcess()).
TEST(MachrunExec, ArgvFormStartsFromTheConfigsProcess) {
    const std::string config = R"({"ociVersion": "1.0.2", "process": {"args": ["init"], "cwd": "/srv",
        "terminal": true, "env": ["PATH=/bin", "A=1"], "user": {"uid": 5, "gid": 6},
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}], "noNewPrivileges": false,
        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]}}})";
    ExecOptions o;
    o.args = {"sh", "-c", "x"};
    ExecRequest plain = parse_process_json(exec_process_json(config, o));
    EXPECT_EQ(plain.args, (std::vector<std::string>{"sh", "-c", "x"}));
    EXPECT_EQ(plain.cwd, "/srv");
    EXPECT_FALSE(plain.terminal);  // only with --tty, as runc
    EXPECT_EQ(plain.uid, 5u);
    EXPECT_EQ(plain.gid, 6u);
    EXPECT_EQ(plain.rlimits[RLIMIT_NOFILE]->hard, 200u);
    EXPECT_EQ(plain.capabilities->effective, cap_bit(CAP_KILL));

    o.cwd = "/tmp";
    o.env = {"B=2"};
    o.tty = true;
    o.no_new_privs = true;
    o.user = "1000";  // the gid stays the config's
    o.additional_gids = {"100", "7"};
    o.caps = {"CAP_NET_RAW"};
    ExecRequest r = parse_process_json(exec_process_json(config, o));
    EXPECT_EQ(r.cwd, "/tmp");
    EXPECT_EQ(r.env, (std::vector<std::string>{"PATH=/bin", "A=1", "B=2"}));
    EXPECT_TRUE(r.terminal && r.no_new_privileges);
    EXPECT_EQ(r.uid, 1000u);
    EXPECT_EQ(r.gid, 6u);
    EXPECT_EQ(r.additional_gids, (std::vector<uint32_t>{100, 7}));
    const uint64_t both = cap_bit(CAP_KILL) | cap_bit(CAP_NET_RAW);
    EXPECT_EQ(r.capabilities->bounding, both);
    EXPECT_EQ(r.capabilities->effective, both);
    EXPECT_EQ(r.capabilities->permitted, both);
    EXPECT_EQ(r.capabilities->ambient, 0u);  // no inheritable in the config: none, as runc
    ExecRequest amb = parse_process_json(R"({"args": ["sh"], "cwd": "/", "capabilities": {"bounding": ["CAP_KILL"],
        "permitted": ["CAP_KILL"], "ambient": ["CAP_KILL"]}})");
    EXPECT_EQ(amb.capabilities->inheritable, cap_bit(CAP_KILL));  // made inheritable to be raised
    o.user = "1000:1001";
    EXPECT_EQ(parse_process_json(exec_process_json(config, o)).gid, 1001u);

    // Bad options and what cannot be applied are one line naming them.
    auto error = [&](ExecOptions bad) {
        try {
            parse_process_json(exec_process_json(config, bad));
        } catch (const UsageError& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    ExecOptions b = o;
    b.user = "root";
    EXPECT_NE(error(b).find("--user must be UID[:GID]"), std::string::npos);
    b = o;
    b.additional_gids = {"-1"};
    EXPECT_NE(error(b).find("--additional-gids"), std::string::npos);
    b = o;
    b.caps = {"CAP_BOGUS"};
    EXPECT_NE(error(b).find("unknown capability CAP_BOGUS"), std::string::npos);
    b = o;
    b.apparmor = "unconfined";
    EXPECT_NE(error(b).find("process.apparmorProfile"), std::string::npos);
    b = o;
    b.process_label = "system_u:system_r:container_t:s0";
    EXPECT_NE(error(b).find("process.selinuxLabel"), std::string::npos);
    b = o;
    b.args.clear();
    EXPECT_NE(error(b).find("exec needs a command"), std::string::npos);
    // A config without a process (an old state file): the defaults runc's spec has.
    ExecRequest bare = parse_process_json(exec_process_json("", o));
    EXPECT_EQ(bare.env.front(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
}
