// The config.json front end (spawn --oci-bundle=, the OCI runtime): what each field group maps to in
// SpawnSpec, that every field it does not implement is refused by name, and what spawn does not apply yet.
#include "core/spawn/oci_config.hpp"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>

#include "core/base/error.hpp"
#include "core/kernel/capabilities.hpp"

using namespace mk::core;

namespace {

const char* kConfig = R"({
  "ociVersion": "1.0.0",
  "root": {"path": "rootfs", "readonly": true},
  "process": {
    "terminal": false,
    "user": {"uid": 0, "gid": 0},
    "args": ["/bin/sh", "-c", "echo hi"],
    "env": ["PATH=/bin", "GREETING=hello"],
    "cwd": "/tmp",
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 1024}],
    "noNewPrivileges": true,
    "oomScoreAdj": 100,
    "capabilities": {"bounding": ["CAP_CHOWN", "CAP_NET_RAW", "CAP_SYS_TIME"], "effective": ["CAP_CHOWN", "CAP_NET_RAW", "CAP_SYS_TIME"],
                     "permitted": ["CAP_CHOWN", "CAP_NET_RAW", "CAP_SYS_TIME"]}
  },
  "hostname": "oci-box",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro"]},
    {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}
  ],
  "linux": {
    "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"}],
    "maskedPaths": ["/proc/kcore"],
    "readonlyPaths": ["/proc/sys"]
  },
  "annotations": {"org.example": "ignored"}
})";

std::string error_of(const std::string& json) {
    try {
        parse_oci_config(json, "/b");
    } catch (const UsageError& e) {
        return e.what();
    }
    return "";
}

std::string with(std::string config, const std::string& from, const std::string& to) {
    auto at = config.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return config.replace(at, from.size(), to);
}

}  // namespace

TEST(OciConfig, MapsTheSubsetIntoSpawnSpec) {
    SpawnSpec s = parse_oci_config(kConfig, "/var/lib/bundle");
    EXPECT_EQ(s.directory, "/var/lib/bundle/rootfs");
    EXPECT_TRUE(s.read_only);
    EXPECT_EQ(s.argv, (std::vector<std::string>{"/bin/sh", "-c", "echo hi"}));
    EXPECT_EQ(s.setenv, (std::vector<std::string>{"PATH=/bin", "GREETING=hello"}));
    EXPECT_EQ(s.chdir, "/tmp");
    EXPECT_EQ(s.console, ConsoleMode::Pipe);
    ASSERT_TRUE(s.rlimits[RLIMIT_NOFILE]);
    EXPECT_EQ(s.rlimits[RLIMIT_NOFILE]->soft, 1024u);
    EXPECT_TRUE(s.no_new_privileges);
    EXPECT_EQ(s.oom_score_adjust, 100);
    EXPECT_EQ(s.capabilities_add, cap_bit(CAP_SYS_TIME));
    EXPECT_EQ(s.capabilities_drop, kDefaultCapabilities & ~(cap_bit(CAP_CHOWN) | cap_bit(CAP_NET_RAW)));
    EXPECT_EQ(s.hostname, "oci-box");
    ASSERT_EQ(s.binds.size(), 1u);
    EXPECT_EQ(s.binds[0].source, "/srv/data");
    EXPECT_TRUE(s.binds[0].read_only);
    ASSERT_EQ(s.tmpfs.size(), 1u);
    EXPECT_EQ(s.tmpfs[0].options, "size=1m");
    EXPECT_TRUE(s.private_network);
    EXPECT_EQ(s.inaccessible, (std::vector<std::string>{"/proc/kcore"}));
}

TEST(OciConfig, RefusesUnknownAndUnsupportedFieldsByName) {
    EXPECT_EQ(error_of(with(kConfig, "\"1.0.0\"", "\"2.0.0\"")), "OCI config.json: ociVersion must be 1.0.0 to 1.2.x");
    EXPECT_EQ(error_of(with(kConfig, "\"1.0.0\"", "\"1.3.0\"")), "OCI config.json: ociVersion must be 1.0.0 to 1.2.x");
    EXPECT_EQ(error_of(with(kConfig, "\"annotations\"", "\"windows\": {}, \"annotations\"")),
              "OCI config field 'windows' is not supported");
    EXPECT_EQ(error_of(with(kConfig, "\"maskedPaths\"", "\"intelRdt\": {}, \"maskedPaths\"")),
              "OCI config field 'linux.intelRdt (no resctrl support)' is not supported");
    EXPECT_EQ(error_of(with(kConfig, "\"maskedPaths\"", "\"bogus\": 1, \"maskedPaths\"")),
              "OCI config field 'linux.bogus' is not supported");
    EXPECT_NE(error_of(with(kConfig, "\"cwd\"", "\"apparmorProfile\": \"x\", \"cwd\"")).find("process.apparmorProfile"),
              std::string::npos);
    EXPECT_EQ(error_of(with(kConfig, "\"cwd\"", "\"apparmorProfile\": \"\", \"selinuxLabel\": \"\", \"cwd\"")), "");
    EXPECT_NE(error_of(with(kConfig, "\"maskedPaths\"", "\"mountLabel\": \"x\", \"maskedPaths\"")).find("linux.mountLabel"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "{\"type\": \"network\"}", "{\"type\": \"bogus\"}")).find("unknown namespace type"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "{\"type\": \"network\"}", "{\"type\": \"pid\"}")).find("given twice"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "[\"/bin/sh\", \"-c\", \"echo hi\"]", "[]")).find("process.args"), std::string::npos);
    EXPECT_EQ(error_of("{"), "OCI config.json is not valid JSON");
    EXPECT_EQ(error_of("[]"), "OCI config field '' is invalid: expected an object");
    EXPECT_NE(error_of(with(kConfig, "\"rootfs\"", "\"../x/..\"")).find("root.path"), std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"type\": \"tmpfs\"", "\"type\": \"tmpfs\", \"extra\": 1")).find("mounts[].extra"),
              std::string::npos);
}

TEST(OciConfig, AcceptsTheVersionsOfRuntimeSpec1) {
    for (const char* v : {"1.0.0", "1.0.2-dev", "1.1.0", "1.2.0", "1.2.1+dev"})
        EXPECT_EQ(error_of(with(kConfig, "\"1.0.0\"", std::string("\"") + v + "\"")), "") << v;
    for (const char* v : {"1", "1.0", "0.9.0", "1.x.0", "1.2.", ""})
        EXPECT_NE(error_of(with(kConfig, "\"1.0.0\"", std::string("\"") + v + "\"")), "") << v;
}

TEST(OciConfig, ProcessUserCapabilitiesAndScheduling) {
    SpawnSpec s = parse_oci_config(with(kConfig, "\"user\": {\"uid\": 0, \"gid\": 0}",
                                        R"("user": {"uid": 1000, "gid": 100, "umask": 18, "additionalGids": [5, 27]},
           "consoleSize": {"height": 24, "width": 80},
           "ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 7},
           "scheduler": {"policy": "SCHED_BATCH", "nice": 5, "flags": ["SCHED_FLAG_RESET_ON_FORK"]},
           "execCPUAffinity": {"initial": "0", "final": "0-1"})"),
                                   "/b");
    EXPECT_EQ(s.oci.uid, 1000u);
    EXPECT_EQ(s.oci.gid, 100u);
    EXPECT_EQ(s.oci.umask, 022u);
    EXPECT_EQ(s.oci.additional_gids, (std::vector<uint32_t>{5, 27}));
    EXPECT_EQ(s.oci.console_size, (std::pair<unsigned, unsigned>(24, 80)));
    ASSERT_TRUE(s.oci.io_priority);
    EXPECT_EQ(s.oci.io_priority->io_class, 3);
    EXPECT_EQ(s.oci.io_priority->priority, 7);
    ASSERT_TRUE(s.oci.scheduler);
    EXPECT_EQ(s.oci.scheduler->policy, SCHED_BATCH);
    EXPECT_EQ(s.oci.scheduler->nice, 5);
    EXPECT_EQ(s.oci.scheduler->flags, 1u);
    EXPECT_EQ(s.oci.exec_cpu_affinity_final, (std::vector<unsigned>{0, 1}));

    SpawnSpec c = parse_oci_config(
        with(with(kConfig, "\"effective\": [\"CAP_CHOWN\", \"CAP_NET_RAW\", \"CAP_SYS_TIME\"]",
                  R"("effective": ["CAP_CHOWN"])"),
             "\"permitted\": [\"CAP_CHOWN\", \"CAP_NET_RAW\", \"CAP_SYS_TIME\"]",
             R"("permitted": ["CAP_CHOWN", "CAP_NET_RAW"], "inheritable": ["CAP_KILL"], "ambient": ["CAP_CHOWN"])"),
        "/b");
    EXPECT_EQ(c.oci.cap_effective, cap_bit(CAP_CHOWN));
    EXPECT_EQ(c.oci.cap_permitted, cap_bit(CAP_CHOWN) | cap_bit(CAP_NET_RAW));
    EXPECT_EQ(c.oci.cap_inheritable, cap_bit(CAP_KILL));
    EXPECT_EQ(c.capabilities_ambient, cap_bit(CAP_CHOWN));
    EXPECT_EQ(*oci_unapplied_field(c), "process.capabilities.effective/permitted (different from bounding)");

    EXPECT_NE(error_of(with(kConfig, "\"uid\": 0", "\"uid\": -1")).find("process.user.uid"), std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"uid\": 0", "\"umask\": 512, \"uid\": 0")).find("process.user.umask"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"uid\": 0", "\"username\": \"x\", \"uid\": 0")).find("process.user.username"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"cwd\"", "\"ioPriority\": {\"class\": \"X\"}, \"cwd\"")).find("ioPriority.class"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"cwd\"", "\"scheduler\": {\"policy\": \"SCHED_FIFO\"}, \"cwd\"")).find("1..99"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"cwd\"",
                            "\"scheduler\": {\"policy\": \"SCHED_DEADLINE\", \"runtime\": 10, \"deadline\": 5}, \"cwd\""))
                  .find("SCHED_DEADLINE"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"CAP_SYS_TIME\"]}", "\"CAP_BOGUS\"]}")).find("unknown capability"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"hard\": 2048", "\"hard\": 10")).find("above the hard"), std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"oomScoreAdj\": 100", "\"oomScoreAdj\": 1001")).find("oomScoreAdj"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"cwd\": \"/tmp\"", "\"commandLine\": \"x\", \"cwd\": \"/tmp\"")).find("commandLine"),
              std::string::npos);
}

TEST(OciConfig, MountOptionsPropagationRecursiveFlagsAndIdmap) {
    SpawnSpec s =
        parse_oci_config(with(kConfig, "\"options\": [\"rbind\", \"ro\"]}",
                              R"("options": ["rbind", "ro", "nosuid", "nodev", "rslave", "rnoexec", "rro", "ridmap"],
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]},
           {"destination": "/m", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "rw", "suid", "mode=0700"]})"),
                         "/b");
    ASSERT_EQ(s.oci.mounts.size(), 4u);
    const OciMount& b = s.oci.mounts[1];
    EXPECT_TRUE(b.bind());
    EXPECT_EQ(b.flags, static_cast<unsigned long>(MS_BIND | MS_REC | MS_RDONLY | MS_NOSUID | MS_NODEV));
    EXPECT_EQ(b.propagation, static_cast<unsigned long>(MS_SLAVE | MS_REC));
    EXPECT_EQ(b.attr_set, static_cast<uint64_t>(MOUNT_ATTR_NOEXEC | MOUNT_ATTR_RDONLY));
    EXPECT_TRUE(b.idmap && b.idmap_recursive);
    ASSERT_EQ(b.uid_mappings.size(), 1u);
    EXPECT_EQ(b.uid_mappings[0].host_id, 100000u);
    const OciMount& m = s.oci.mounts[2];
    EXPECT_EQ(m.flags, 0u);  // "suid" after "nosuid" wins
    EXPECT_EQ(m.clear_flags, static_cast<unsigned long>(MS_RDONLY | MS_NOSUID));
    EXPECT_EQ(m.data, "mode=0700");
    EXPECT_EQ(*oci_unapplied_field(s), "mounts[] of type 'mqueue' at /m");  // the idmapped bind is applied

    EXPECT_NE(error_of(with(kConfig, "[\"rbind\", \"ro\"]", "[\"rbind\", \"copyup\"]")).find("'copyup'"), std::string::npos);
    // tmpcopyup is a tmpfs's: on a bind (or an API file system of another type) it is refused.
    SpawnSpec bind_up = parse_oci_config(with(kConfig, "[\"rbind\", \"ro\"]", "[\"rbind\", \"tmpcopyup\"]"), "/b");
    EXPECT_EQ(*oci_unapplied_field(bind_up), "mounts[].options 'tmpcopyup' (on a bind; only a tmpfs takes it) at /data");
    SpawnSpec proc_up = parse_oci_config(with(kConfig, R"("type": "proc", "source": "proc"})",
                                              R"("type": "proc", "source": "proc", "options": ["tmpcopyup"]})"),
                                         "/b");
    EXPECT_EQ(*oci_unapplied_field(proc_up), "mounts[].options 'tmpcopyup' (on a proc; only a tmpfs takes it) at /proc");
    EXPECT_NE(error_of(with(kConfig, "[\"rbind\", \"ro\"]",
                            "[\"rbind\"], \"uidMappings\": [{\"containerID\": 0, \"hostID\": 1, \"size\": 1}]"))
                  .find("gidMappings go together"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"type\": \"tmpfs\", ", "")).find("only binds"), std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"/srv/data\"", "\"srv\"")).find("mounts[].source"), std::string::npos);
}

// podman run --read-only: tmpfs mounts with crun's tmpcopyup on /run, /tmp (spawn's own API
// file systems) and /var/tmp (the config's own); the per-mount flags are not file-system data.
TEST(OciConfig, TmpcopyupAndTmpfsFlagsOfPodmansReadOnly) {
    const std::string ro = "\"options\": [\"rw\", \"rprivate\", \"nosuid\", \"nodev\", \"tmpcopyup\"]";
    SpawnSpec s = parse_oci_config(
        with(kConfig, R"({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]})",
             "{\"destination\": \"/run\", \"type\": \"tmpfs\", \"source\": \"tmpfs\", " + ro +
                 "}, {\"destination\": \"/tmp\", \"type\": \"tmpfs\", \"source\": \"tmpfs\", " + ro +
                 "}, {\"destination\": \"/var/tmp\", \"type\": \"tmpfs\", \"source\": \"tmpfs\", " + ro +
                 "}, {\"destination\": \"/x\", \"type\": \"tmpfs\", \"options\": [\"noexec\", \"size=2m\", \"ro\"]}"),
        "/b");
    EXPECT_EQ(oci_unapplied_field(s), std::nullopt);
    ASSERT_EQ(s.tmpfs.size(), 2u);  // /run and /tmp are spawn's own
    EXPECT_EQ(s.tmpfs[0].destination, "/var/tmp");
    EXPECT_EQ(s.tmpfs[0].options, "");  // rw, rprivate, nosuid, nodev are per-mount flags
    EXPECT_EQ(s.tmpfs[1].options, "size=2m");
    for (size_t i = 2; i < 5; i++) EXPECT_TRUE(s.oci.mounts[i].copy_up) << s.oci.mounts[i].destination;
    EXPECT_FALSE(s.oci.mounts[5].copy_up);
    EXPECT_EQ(s.oci.mounts[5].flags, static_cast<unsigned long>(MS_NOEXEC | MS_RDONLY));

    SpawnSpec sync = parse_oci_config(with(kConfig, R"("options": ["size=1m"])", R"("options": ["size=1m", "sync"])"), "/b");
    EXPECT_EQ(*oci_unapplied_field(sync),
              "mounts[].options (superblock flags such as sync, dirsync, mand, lazytime on a tmpfs) at /scratch");
}

TEST(OciConfig, HooksAnnotationsAndDomainname) {
    SpawnSpec s = parse_oci_config(with(kConfig, "\"annotations\": {\"org.example\": \"ignored\"}",
                                        R"("annotations": {"a": "1", "b": "2"}, "domainname": "example.org",
           "hooks": {"prestart": [{"path": "/bin/p"}],
                     "createRuntime": [{"path": "/bin/cr", "args": ["cr", "x"], "env": ["A=1"], "timeout": 5}],
                     "createContainer": [{"path": "/bin/cc"}], "startContainer": [{"path": "/bin/sc"}],
                     "poststart": [{"path": "/bin/ps"}], "poststop": [{"path": "/bin/pst"}, {"path": "/bin/pst2"}]})"),
                                   "/b");
    EXPECT_EQ(s.oci.annotations, (std::map<std::string, std::string>{{"a", "1"}, {"b", "2"}}));
    EXPECT_EQ(s.oci.domainname, "example.org");
    ASSERT_EQ(s.oci.hooks.create_runtime.size(), 1u);
    EXPECT_EQ(s.oci.hooks.create_runtime[0].args, (std::vector<std::string>{"cr", "x"}));
    EXPECT_EQ(s.oci.hooks.create_runtime[0].env, (std::vector<std::string>{"A=1"}));
    EXPECT_EQ(s.oci.hooks.create_runtime[0].timeout, 5);
    EXPECT_EQ(s.oci.hooks.prestart[0].path, "/bin/p");
    EXPECT_EQ(s.oci.hooks.poststop.size(), 2u);
    EXPECT_EQ(*oci_unapplied_field(s), "hooks");
    EXPECT_NE(error_of(with(kConfig, "\"annotations\"", "\"hooks\": {\"poststop\": [{\"path\": \"rel\"}]}, \"annotations\""))
                  .find("hooks.poststop[].path"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"annotations\"",
                            "\"hooks\": {\"poststop\": [{\"path\": \"/x\", \"timeout\": 0}]}, \"annotations\""))
                  .find("timeout"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"annotations\"", "\"hooks\": {\"later\": []}, \"annotations\"")).find("hooks.later"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"ignored\"", "1")).find("annotations.org.example"), std::string::npos);
}

TEST(OciConfig, LinuxNamespacesMappingsDevicesSysctlAndMore) {
    SpawnSpec u =
        parse_oci_config(with(with(kConfig, "{\"type\": \"network\"}",
                                   "{\"type\": \"network\", \"path\": \"/run/netns/x\"}, {\"type\": \"user\"}, {\"type\": "
                                   "\"time\"}, {\"type\": \"cgroup\", \"path\": \"/proc/1/ns/cgroup\"}"),
                              R"("maskedPaths": ["/proc/kcore"],)", R"(
        "uidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}],
        "timeOffsets": {"monotonic": {"secs": 100, "nanosecs": 5}, "boottime": {"secs": -3}},
        "devices": [{"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229, "fileMode": 438, "uid": 0, "gid": 0},
                    {"type": "p", "path": "/dev/fifo"}],
        "cgroupsPath": "machine.slice:libpod:abc",
        "sysctl": {"net.ipv4.ip_forward": "1", "kernel.msgmax": "8192"},
        "rootfsPropagation": "rslave",
        "personality": {"domain": "LINUX32"},
        "maskedPaths": ["/proc/kcore"],)"),
                         "/b");
    EXPECT_EQ(u.network_namespace_path, "/run/netns/x");
    EXPECT_FALSE(u.private_network);
    ASSERT_EQ(u.oci.namespaces.size(), 8u);
    EXPECT_EQ(u.oci.namespaces[7].path, "/proc/1/ns/cgroup");
    EXPECT_EQ(u.oci.uid_mappings[0].host_id, 200000u);
    EXPECT_EQ(u.oci.time_monotonic->secs, 100);
    EXPECT_EQ(u.oci.time_monotonic->nanosecs, 5u);
    EXPECT_EQ(u.oci.time_boottime->secs, -3);
    ASSERT_EQ(u.oci.devices.size(), 2u);
    EXPECT_EQ(u.oci.devices[0].major, 10);
    EXPECT_EQ(u.oci.devices[0].file_mode, 0666u);
    EXPECT_EQ(u.oci.devices[1].type, 'p');
    EXPECT_EQ(u.oci.cgroups_path, "machine.slice:libpod:abc");
    EXPECT_EQ(u.oci.sysctl.at("kernel.msgmax"), "8192");
    EXPECT_EQ(u.oci.rootfs_propagation, static_cast<unsigned long>(MS_SLAVE | MS_REC));
    EXPECT_EQ(u.personality, "x86");
    EXPECT_EQ(u.oci.readonly_paths, (std::vector<std::string>{"/proc/sys"}));

    EXPECT_NE(error_of(with(kConfig, "{\"type\": \"network\"}", "{\"type\": \"user\"}")).find("needs uidMappings"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"maskedPaths\"",
                            "\"uidMappings\": [{\"containerID\": 0, \"hostID\": 1, \"size\": 1}], \"maskedPaths\""))
                  .find("without a user namespace"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"maskedPaths\"", "\"timeOffsets\": {\"monotonic\": {\"secs\": 1}}, \"maskedPaths\""))
                  .find("without a time namespace"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"maskedPaths\"", "\"sysctl\": {\"../x\": \"1\"}, \"maskedPaths\""))
                  .find("not a sysctl name"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"maskedPaths\"", "\"cgroupsPath\": \"/a/../b\", \"maskedPaths\"")).find("'..'"),
              std::string::npos);
    EXPECT_NE(
        error_of(with(kConfig, "\"maskedPaths\"", "\"devices\": [{\"type\": \"c\", \"path\": \"/dev/x\"}], \"maskedPaths\""))
            .find("major and minor"),
        std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"maskedPaths\"", "\"rootfsPropagation\": \"weird\", \"maskedPaths\""))
                  .find("rootfsPropagation"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"maskedPaths\"",
                            "\"personality\": {\"domain\": \"LINUX\", \"flags\": [\"x\"]}, \"maskedPaths\""))
                  .find("personality.flags"),
              std::string::npos);
}

TEST(OciConfig, Resources) {
    OciResources r = parse_oci_resources(R"({
        "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"},
                    {"allow": true, "type": "c", "major": 136, "access": "rwm"}],
        "memory": {"limit": 67108864, "reservation": 33554432, "swap": 134217728, "kernelTCP": 1048576, "swappiness": 10,
                   "disableOOMKiller": true, "useHierarchy": true, "checkBeforeUpdate": true},
        "cpu": {"shares": 512, "quota": 50000, "burst": 1000, "period": 100000, "realtimeRuntime": 0, "realtimePeriod": 1000000,
                "cpus": "0-1", "mems": "0", "idle": 1},
        "pids": {"limit": 64},
        "blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 300}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
        "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]},
        "rdma": {"mlx4_0": {"hcaHandles": 3, "hcaObjects": 10000}},
        "unified": {"memory.high": "50000000", "io.weight": "default 100"}
    })");
    EXPECT_TRUE(r.present);
    ASSERT_EQ(r.devices.size(), 3u);
    EXPECT_FALSE(r.devices[0].allow);
    EXPECT_EQ(r.devices[0].type, 'a');
    EXPECT_FALSE(r.devices[0].major);
    EXPECT_EQ(r.devices[1].minor, 3);
    EXPECT_FALSE(r.devices[2].minor);
    EXPECT_EQ(r.memory.limit, 67108864);
    EXPECT_EQ(r.memory.swap, 134217728);
    EXPECT_EQ(r.memory.swappiness, 10u);
    EXPECT_EQ(r.memory.disable_oom_killer, true);
    EXPECT_EQ(r.cpu.shares, 512u);
    EXPECT_EQ(r.cpu.quota, 50000);
    EXPECT_EQ(r.cpu.cpus, "0-1");
    EXPECT_EQ(r.cpu.idle, 1);
    EXPECT_EQ(r.pids_limit, 64);
    EXPECT_EQ(r.block_io.weight, 500);
    EXPECT_EQ(r.block_io.weight_device[0].value, 300u);
    EXPECT_EQ(r.block_io.throttle_read_bps[0].value, 1048576u);
    EXPECT_EQ(r.block_io.throttle_write_iops[0].value, 100u);
    EXPECT_EQ(r.hugepage_limits[0], (std::pair<std::string, uint64_t>("2MB", 4194304)));
    EXPECT_EQ(r.network.class_id, 1048577u);
    EXPECT_EQ(r.network.priorities[0].first, "eth0");
    EXPECT_EQ(r.rdma.at("mlx4_0").second, 10000u);
    EXPECT_EQ(r.unified.at("io.weight"), "default 100");

    auto res_error = [](const char* text) {
        try {
            parse_oci_resources(text);
        } catch (const UsageError& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    EXPECT_NE(res_error(R"({"memory": {"kernel": 1}})").find("memory.kernel"), std::string::npos);
    EXPECT_NE(res_error(R"({"memory": {"limit": 100, "swap": 50}})").find("memory.swap"), std::string::npos);
    EXPECT_NE(res_error(R"({"memory": {"limit": 0}})").find("memory.limit"), std::string::npos);
    EXPECT_NE(res_error(R"({"cpu": {"shares": 1}})").find("cpu.shares"), std::string::npos);
    EXPECT_NE(res_error(R"({"cpu": {"cpus": "x"}})").find("cpu.cpus"), std::string::npos);
    EXPECT_NE(res_error(R"({"blockIO": {"weight": 5}})").find("blockIO.weight"), std::string::npos);
    EXPECT_NE(res_error(R"({"blockIO": {"leafWeight": 500}})").find("leafWeight"), std::string::npos);
    EXPECT_NE(res_error(R"({"hugepageLimits": [{"pageSize": "2XB", "limit": 1}]})").find("pageSize"), std::string::npos);
    EXPECT_NE(res_error(R"({"unified": {"../memory.max": "1"}})").find("not a cgroup file name"), std::string::npos);
    EXPECT_NE(res_error(R"({"unified": {"cgroup.procs": "1"}})").find("cgroup.procs"), std::string::npos);
    EXPECT_NE(res_error(R"({"devices": [{"allow": true, "access": "x"}]})").find("rwm"), std::string::npos);
    EXPECT_NE(res_error(R"({"pids": {}})").find("pids.limit"), std::string::npos);
    EXPECT_NE(res_error(R"({"bogus": {}})").find("linux.resources.bogus"), std::string::npos);
}

TEST(OciConfig, Seccomp) {
    SpawnSpec s = parse_oci_config(with(kConfig, "\"maskedPaths\"", R"("seccomp": {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                     {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 4294967295, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}]},
                     {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}, "maskedPaths")"),
                                   "/b");
    ASSERT_TRUE(s.oci.seccomp);
    const OciSeccomp& sc = *s.oci.seccomp;
    EXPECT_EQ(sc.default_action, "SCMP_ACT_ERRNO");
    EXPECT_EQ(sc.default_errno_ret, 38u);
    EXPECT_EQ(sc.architectures.size(), 2u);
    EXPECT_EQ(sc.flags, (std::vector<std::string>{"SECCOMP_FILTER_FLAG_SPEC_ALLOW"}));
    ASSERT_EQ(sc.syscalls.size(), 3u);
    EXPECT_EQ(sc.syscalls[1].args[0].value, 4294967295u);
    EXPECT_EQ(sc.syscalls[1].args[0].op, "SCMP_CMP_MASKED_EQ");
    EXPECT_EQ(sc.syscalls[2].errno_ret, 1u);
    EXPECT_NE(error_of(with(kConfig, "\"maskedPaths\"",
                            R"("seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"}, "maskedPaths")"))
                  .find("listenerPath"),
              std::string::npos);
    EXPECT_NE(
        error_of(
            with(
                kConfig, "\"maskedPaths\"",
                R"("seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 6, "op": "SCMP_CMP_EQ"}]}]}, "maskedPaths")"))
            .find("index"),
        std::string::npos);
}

TEST(OciConfig, UnappliedFieldsAreNamedForSpawn) {
    EXPECT_EQ(oci_unapplied_field(parse_oci_config(kConfig, "/b")), std::nullopt);
    EXPECT_EQ(*oci_unapplied_field(parse_oci_config(with(kConfig, "\"uid\": 0", "\"uid\": 1000"), "/b")),
              "process.capabilities.effective/permitted (different from ambient, for a non-root user)");
    // podman's --user 1000: bounding kept, the other four sets empty; the payload gets no capability.
    std::string user_config = with(kConfig, "\"uid\": 0", "\"uid\": 1000");
    for (const char* set : {"effective", "permitted"})
        user_config = with(user_config, std::string("\"") + set + "\": [\"CAP_CHOWN\", \"CAP_NET_RAW\", \"CAP_SYS_TIME\"]",
                           std::string("\"") + set + "\": []");
    EXPECT_EQ(oci_unapplied_field(parse_oci_config(user_config, "/b")), std::nullopt);
    EXPECT_EQ(*oci_unapplied_field(parse_oci_config(
                  with(user_config, "\"effective\": []", "\"inheritable\": [\"CAP_KILL\"], \"effective\": []"), "/b")),
              "process.capabilities.inheritable (beyond ambient)");
    EXPECT_EQ(*oci_unapplied_field(parse_oci_config(with(kConfig, "{\"type\": \"mount\"}, ", ""), "/b")),
              "linux.namespaces without 'mount' (spawn always creates it)");
    EXPECT_EQ(oci_unapplied_field(parse_oci_config(with(kConfig, "\"/proc/sys\"", "\"/etc\""), "/b")), std::nullopt);
    EXPECT_EQ(*oci_unapplied_field(parse_oci_config(with(kConfig, "\"type\": \"tmpfs\"", "\"type\": \"overlay\""), "/b")),
              "mounts[] of type 'overlay' at /scratch");
    EXPECT_EQ(oci_unapplied_field(parse_oci_config(
                  with(kConfig, "\"maskedPaths\"", "\"sysctl\": {\"kernel.msgmax\": \"1\"}, \"maskedPaths\""), "/b")),
              std::nullopt);
    EXPECT_EQ(*oci_unapplied_field(parse_oci_config(
                  with(kConfig, "\"maskedPaths\"", "\"resources\": {\"pids\": {\"limit\": 5}}, \"maskedPaths\""), "/b")),
              "linux.resources");
    EXPECT_EQ(oci_unapplied_field(SpawnSpec{}), std::nullopt);  // not from config.json
    SpawnSpec r =
        parse_oci_config(with(kConfig, "\"maskedPaths\"",
                              "\"cgroupsPath\": \"/a\", \"resources\": {\"pids\": {\"limit\": 5}}, \"maskedPaths\""),
                         "/b");
    EXPECT_EQ(*oci_unapplied_field(r), "linux.cgroupsPath");
    EXPECT_EQ(oci_unapplied_field(r, {.hooks = true, .cgroups = true}), std::nullopt);
}

TEST(OciConfig, UtsAndIpcNamespacesNewLeftOutOrJoined) {
    // spawn's own specs and a config.json with all three: new ones, the host name set.
    for (const SpawnSpec& s : {SpawnSpec{}, parse_oci_config(kConfig, "/b")}) {
        OciNamespacePlan plan = plan_oci_namespaces(s);
        EXPECT_EQ(plan.clone_flags, static_cast<unsigned long>(CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID));
        EXPECT_TRUE(plan.join.empty());
        EXPECT_EQ(plan.pid_path, "");
        EXPECT_TRUE(plan.set_hostname);
    }
    // containerd's CRI container in a hostNetwork pod: no uts (the node's), ipc of the sandbox.
    const std::string cri =
        with(with(with(kConfig, "{\"type\": \"uts\"}, {\"type\": \"network\"}", "{\"type\": \"cgroup\"}"),
                  "{\"type\": \"ipc\"}", "{\"type\": \"ipc\", \"path\": \"/proc/42/ns/ipc\"}"),
             "\"hostname\": \"oci-box\",", "");
    SpawnSpec c = parse_oci_config(cri, "/b");
    EXPECT_EQ(oci_unapplied_field(c), std::nullopt);
    OciNamespacePlan plan = plan_oci_namespaces(c);
    EXPECT_EQ(plan.clone_flags, static_cast<unsigned long>(CLONE_NEWPID));
    EXPECT_EQ(plan.join, (std::vector<std::pair<int, std::string>>{{CLONE_NEWIPC, "/proc/42/ns/ipc"}}));
    EXPECT_FALSE(plan.set_hostname);
    // A joined uts keeps its owner's host name unless config.json names one (runc).
    SpawnSpec j =
        parse_oci_config(with(kConfig, "{\"type\": \"uts\"}", "{\"type\": \"uts\", \"path\": \"/proc/42/ns/uts\"}"), "/b");
    plan = plan_oci_namespaces(j);
    EXPECT_EQ(plan.clone_flags, static_cast<unsigned long>(CLONE_NEWIPC | CLONE_NEWPID));
    EXPECT_EQ(plan.join, (std::vector<std::pair<int, std::string>>{{CLONE_NEWUTS, "/proc/42/ns/uts"}}));
    EXPECT_TRUE(plan.set_hostname);
    j.hostname.clear();
    EXPECT_FALSE(plan_oci_namespaces(j).set_hostname);
    // Without a uts namespace there is no host name or domain name to set.
    EXPECT_NE(error_of(with(kConfig, "{\"type\": \"uts\"}, ", "")).find("'hostname'"), std::string::npos);
    EXPECT_NE(error_of(with(with(kConfig, "{\"type\": \"uts\"}, ", ""), "\"hostname\": \"oci-box\"",
                            "\"domainname\": \"example.org\""))
                  .find("'domainname'"),
              std::string::npos);
    // shareProcessNamespace: the sandbox's PID namespace, entered by the launcher for its clone;
    // hostPID: none of the container's own.
    SpawnSpec sp =
        parse_oci_config(with(kConfig, "{\"type\": \"pid\"}", "{\"type\": \"pid\", \"path\": \"/proc/42/ns/pid\"}"), "/b");
    EXPECT_EQ(oci_unapplied_field(sp), std::nullopt);
    EXPECT_EQ(plan_oci_namespaces(sp).pid_path, "/proc/42/ns/pid");
    EXPECT_EQ(plan_oci_namespaces(sp).clone_flags, static_cast<unsigned long>(CLONE_NEWUTS | CLONE_NEWIPC));
    SpawnSpec hp = parse_oci_config(with(kConfig, "{\"type\": \"pid\"}, ", ""), "/b");
    EXPECT_EQ(oci_unapplied_field(hp), std::nullopt);
    EXPECT_EQ(plan_oci_namespaces(hp).clone_flags, static_cast<unsigned long>(CLONE_NEWUTS | CLONE_NEWIPC));
    EXPECT_EQ(plan_oci_namespaces(hp).pid_path, "");
    EXPECT_EQ(*oci_unapplied_field(parse_oci_config(
                  with(kConfig, "{\"type\": \"mount\"}", "{\"type\": \"mount\", \"path\": \"/proc/42/ns/mnt\"}"), "/b")),
              "linux.namespaces[].path for 'mount'");
    EXPECT_EQ(*oci_unapplied_field(parse_oci_config(with(kConfig, "{\"type\": \"mount\"}, ", ""), "/b")),
              "linux.namespaces without 'mount' (spawn always creates it)");
    // A kernel.shm* sysctl needs an ipc namespace of the container's (new or joined), not the host's.
    EXPECT_NE(error_of(with(with(kConfig, "{\"type\": \"ipc\"}, ", ""), "\"maskedPaths\"",
                            "\"sysctl\": {\"kernel.shmmax\": \"1\"}, \"maskedPaths\""))
                  .find("kernel.shmmax"),
              std::string::npos);
}

TEST(OciConfig, SysctlsOnlyOfTheContainersOwnNamespaces) {
    EXPECT_TRUE(oci_sysctl_allowed("kernel.msgmax", true, false, false));
    EXPECT_TRUE(oci_sysctl_allowed("fs.mqueue.queues_max", true, false, false));
    EXPECT_TRUE(oci_sysctl_allowed("net/ipv4/ip_forward", false, true, false));
    EXPECT_TRUE(oci_sysctl_allowed("kernel.domainname", false, false, true));
    EXPECT_FALSE(oci_sysctl_allowed("kernel.msgmax", false, true, true));
    EXPECT_FALSE(oci_sysctl_allowed("net.ipv4.ip_forward", true, false, true));
    EXPECT_FALSE(oci_sysctl_allowed("kernel.core_pattern", true, true, true));
    EXPECT_FALSE(oci_sysctl_allowed("vm.overcommit_memory", true, true, true));
    EXPECT_NE(error_of(with(kConfig, "\"maskedPaths\"", "\"sysctl\": {\"kernel.core_pattern\": \"|/x\"}, \"maskedPaths\""))
                  .find("kernel.core_pattern is not in a namespace"),
              std::string::npos);
    EXPECT_EQ(error_of(with(kConfig, "\"maskedPaths\"",
                            "\"sysctl\": {\"net.ipv4.ip_forward\": \"1\", \"kernel.sem\": \"1 2 3 4\"}, \"maskedPaths\"")),
              "");
}

TEST(OciConfig, FuzzerFindings) {
    // process without cwd (crash-f3ae962f, a fuzz build that mixed objects from two SpawnSpec layouts).
    EXPECT_EQ(
        error_of(
            R"({"ociVersion":"1.0.0","root":{"path":"r"},"process":{"args":["/bin/true"]},"linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"ipc"},{"type":"uts"}]}})"),
        "OCI config field 'process.cwd' is invalid: missing");
}
