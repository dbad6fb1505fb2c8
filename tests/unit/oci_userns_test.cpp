// config.json's user namespace in the launcher's terms (core/spawn/oci_userns) and the ID-map
// helpers under it (core/kernel/userns): pure, no root.
#include <gtest/gtest.h>

#include <stdexcept>

#include "core/base/error.hpp"
#include "core/kernel/userns.hpp"
#include "core/spawn/oci_config.hpp"
#include "core/spawn/oci_userns.hpp"

namespace mk::core {
namespace {

std::string usage_error(const std::vector<IdMapLine>& u, const std::vector<IdMapLine>& g) {
    try {
        oci_userns_root_range(u, g, "linux.uidMappings/gidMappings");
    } catch (const UsageError& e) {
        return e.what();
    }
    return "";
}

TEST(IdMap, ProblemsTheKernelWouldRefuse) {
    EXPECT_EQ(id_map_problem({{0, 100000, 65536}}), "");
    EXPECT_EQ(id_map_problem({{0, 100000, 1}, {1, 200001, 65535}}), "");
    EXPECT_EQ(id_map_problem({}), "no ranges");
    EXPECT_NE(id_map_problem({{0, 1, 0}}).find("is empty"), std::string::npos);
    EXPECT_NE(id_map_problem({{0, 100000, 10}, {5, 300000, 10}}).find("inside the container"), std::string::npos);
    EXPECT_NE(id_map_problem({{0, 100000, 10}, {10, 100005, 10}}).find("on the host"), std::string::npos);
    EXPECT_NE(id_map_problem({{0, 4294967290u, 10}}).find("past the last ID"), std::string::npos);
    std::vector<IdMapLine> many;
    for (uint32_t i = 0; i < 341; i++) many.push_back({i, 100000 + i, 1});
    EXPECT_EQ(id_map_problem(many), "more than 340 ranges");
}

TEST(IdMap, TextRoundTripAndLookup) {
    std::vector<IdMapLine> m = {{0, 100000, 1}, {1, 200001, 999}, {1000, 1000, 1}};
    EXPECT_EQ(id_map_text(m), "0 100000 1\n1 200001 999\n1000 1000 1\n");
    EXPECT_EQ(parse_id_map_text("         0     100000          1\n         1     200001        999\n1000 1000 1\n"), m);
    EXPECT_EQ(parse_id_map_text(""), std::vector<IdMapLine>{});
    EXPECT_THROW(parse_id_map_text("0 1\n"), std::invalid_argument);
    EXPECT_THROW(parse_id_map_text("0 1 2 3\n"), std::invalid_argument);
    EXPECT_THROW(parse_id_map_text("0 -1 2\n"), std::invalid_argument);
    EXPECT_EQ(map_id_to_host(m, 0), 100000u);
    EXPECT_EQ(map_id_to_host(m, 5), 200005u);
    EXPECT_EQ(map_id_to_host(m, 1000), 1000u);
    EXPECT_EQ(map_id_to_host(m, 1001), std::nullopt);
}

TEST(OciUserns, RootRangeOfPodmansMaps) {
    // podman --uidmap 0:100000:65536 (both maps).
    IdRange r = oci_userns_root_range({{0, 100000, 65536}}, {{0, 100000, 65536}}, "x");
    EXPECT_EQ(r.shift, 100000u);
    EXPECT_EQ(r.count, 65536u);
    // Several ranges, listed out of order, adjacent on the host: one run from 0.
    r = oci_userns_root_range({{1000, 201000, 1000}, {0, 200000, 1000}, {5000, 7000, 1}}, {{0, 200000, 65536}}, "x");
    EXPECT_EQ(r.shift, 200000u);
    EXPECT_EQ(r.count, 2000u);
    // The smaller of the two runs counts.
    r = oci_userns_root_range({{0, 100000, 65536}}, {{0, 100000, 100}, {100, 5000, 10}}, "x");
    EXPECT_EQ(r.count, 100u);
}

TEST(OciUserns, RootRangeRefusals) {
    EXPECT_NE(usage_error({{1, 100000, 10}}, {{0, 100000, 10}}).find("container's root (uid 0 and gid 0) must be mapped"),
              std::string::npos);
    EXPECT_NE(usage_error({{0, 100000, 10}}, {{0, 200000, 10}}).find("same host ID"), std::string::npos);
    EXPECT_NE(usage_error({{0, 100000, 10}}, {{0, 100000, 3}, {3, 500, 10}}).find("0 to 5"), std::string::npos);
    std::string e = usage_error({{0, 100000, 10}, {5, 1, 1}}, {{0, 100000, 10}});
    EXPECT_NE(e.find("uidMappings"), std::string::npos);
    EXPECT_NE(e.find("overlaps"), std::string::npos);
    EXPECT_NE(e.find("linux.uidMappings/gidMappings"), std::string::npos);
}

TEST(OciUserns, HostIdOfADeviceOwner) {
    EXPECT_EQ(oci_host_id({}, 5, "d"), 5u);
    EXPECT_EQ(oci_host_id({{0, 100000, 65536}}, 5, "d"), 100005u);
    EXPECT_THROW(oci_host_id({{0, 100000, 10}}, 65534, "linux.devices[].uid of /dev/x"), UsageError);
}

// The front end: a user namespace, made or joined, and idmapped binds reach the launcher.
constexpr const char* kUserConfig = R"({"ociVersion": "1.0.2-dev", "root": {"path": "rootfs"},
  "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
  "mounts": [{"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "idmap"]},
             {"destination": "/own", "type": "bind", "source": "/srv/own", "options": ["rbind", "ridmap"],
              "uidMappings": [{"containerID": 0, "hostID": 300000, "size": 100}],
              "gidMappings": [{"containerID": 0, "hostID": 300000, "size": 100}]}],
  "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "user"}],
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}})";

std::string replaced(std::string text, const std::string& from, const std::string& to) {
    auto at = text.find(from);
    if (at == std::string::npos) throw std::logic_error("no " + from);
    return text.replace(at, from.size(), to);
}

std::string parse_error(const std::string& text) {
    try {
        parse_oci_config(text, "/b");
    } catch (const UsageError& e) {
        return e.what();
    }
    return "";
}

TEST(OciUserns, FrontEndTakesUserNamespacesAndIdmappedBinds) {
    SpawnSpec s = parse_oci_config(kUserConfig, "/b");
    EXPECT_EQ(oci_unapplied_field(s, OciFrontEndHandles{.hooks = true, .cgroups = true}), std::nullopt);
    ASSERT_NE(oci_user_namespace(s.oci), nullptr);
    EXPECT_EQ(oci_id_map(s.oci.uid_mappings), (std::vector<IdMapLine>{{0, 100000, 65536}}));
    ASSERT_EQ(s.binds.size(), 2u);
    EXPECT_TRUE(s.binds[0].idmap);
    EXPECT_FALSE(s.binds[0].idmap_recursive);
    EXPECT_TRUE(s.binds[0].idmap_uid_map.empty());  // the container's namespace
    EXPECT_TRUE(s.binds[1].idmap && s.binds[1].idmap_recursive);
    EXPECT_EQ(s.binds[1].idmap_uid_map, "0 300000 100\n");
    EXPECT_EQ(s.binds[1].idmap_gid_map, "0 300000 100\n");

    // Joined by path: no maps of its own.
    const std::string maps = R"(,
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]})";
    std::string joined =
        replaced(replaced(kUserConfig, R"({"type": "user"})", R"({"type": "user", "path": "/proc/1/ns/user"})"), maps, "}");
    SpawnSpec j = parse_oci_config(joined, "/b");
    EXPECT_EQ(oci_user_namespace(j.oci)->path, "/proc/1/ns/user");
    EXPECT_EQ(oci_unapplied_field(j, OciFrontEndHandles{.hooks = true, .cgroups = true}), std::nullopt);
    EXPECT_NE(parse_error(replaced(kUserConfig, R"({"type": "user"})", R"({"type": "user", "path": "/proc/1/ns/user"})"))
                  .find("joined by path"),
              std::string::npos);

    // idmap needs a namespace to map through: the container's or the mount's own maps.
    std::string no_user = replaced(replaced(kUserConfig, R"(, {"type": "user"}])", "]"), maps, "}");
    std::string e = parse_error(no_user);
    EXPECT_NE(e.find("'idmap' at /data"), std::string::npos) << e;
    EXPECT_NE(e.find("needs a user namespace"), std::string::npos) << e;
    // Overlapping ranges of a mount's own maps are refused at parse time.
    e = parse_error(replaced(kUserConfig, R"("uidMappings": [{"containerID": 0, "hostID": 300000, "size": 100}])",
                             R"("uidMappings": [{"containerID": 0, "hostID": 300000, "size": 100},
                                                {"containerID": 50, "hostID": 400000, "size": 1}])"));
    EXPECT_NE(e.find("mounts[].uidMappings at /own"), std::string::npos) << e;
}

}  // namespace
}  // namespace mk::core
