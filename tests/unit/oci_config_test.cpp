// --oci-bundle='s config.json front end: what it maps into SpawnSpec, and that every field it does
// not implement is refused by name.
#include "core/spawn/oci_config.hpp"

#include <gtest/gtest.h>
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
    "capabilities": {"bounding": ["CAP_CHOWN", "CAP_NET_RAW", "CAP_SYS_TIME"], "effective": ["CAP_CHOWN", "CAP_NET_RAW", "CAP_SYS_TIME"]}
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

TEST(OciConfig, RefusesWhatItDoesNotImplementByName) {
    EXPECT_EQ(error_of(with(kConfig, "\"1.0.0\"", "\"1.0.2\"")),
              "OCI config.json: only ociVersion \"1.0.0\" is supported (as systemd-nspawn)");
    EXPECT_EQ(error_of(with(kConfig, "\"annotations\"", "\"hooks\": {}, \"annotations\"")),
              "OCI config field 'hooks' is not supported by spawn");
    EXPECT_EQ(error_of(with(kConfig, "\"maskedPaths\"", "\"seccomp\": {}, \"maskedPaths\"")),
              "OCI config field 'linux.seccomp' is not supported by spawn");
    EXPECT_EQ(error_of(with(kConfig, "\"cwd\"", "\"apparmorProfile\": \"x\", \"cwd\"")),
              "OCI config field 'process.apparmorProfile' is not supported by spawn");
    EXPECT_NE(error_of(with(kConfig, "{\"type\": \"network\"}", "{\"type\": \"user\"}")).find("'linux.namespaces[] of type 'user''"),
              std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "{\"type\": \"pid\"}, ", "")).find("without 'pid'"), std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"uid\": 0", "\"uid\": 1000")).find("process.user"), std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"/proc/sys\"", "\"/etc\"")).find("readonlyPaths entry /etc"), std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"type\": \"tmpfs\"", "\"type\": \"overlay\"")).find("type 'overlay'"), std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "\"effective\": [\"CAP_CHOWN\", ", "\"effective\": [")).find("effective"), std::string::npos);
    EXPECT_NE(error_of(with(kConfig, "[\"/bin/sh\", \"-c\", \"echo hi\"]", "[]")).find("process.args"), std::string::npos);
    EXPECT_EQ(error_of("{"), "OCI config.json is not valid JSON");
    EXPECT_EQ(error_of("[]"), "OCI config field '' is invalid: expected an object");
    EXPECT_NE(error_of(with(kConfig, "\"rootfs\"", "\"../x/..\"")).find("root.path"), std::string::npos);
}
