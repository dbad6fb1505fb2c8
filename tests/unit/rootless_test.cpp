// Rootless spawn's pure pieces (issue 16): /etc/subuid parsing, the ID map, the mount plan an
// unprivileged user namespace can carry out, and where the machine's cgroup goes.
#include <linux/mount.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <tuple>
#include <utility>

#include "core/base/error.hpp"
#include "core/kernel/subid.hpp"
#include "core/kernel/userns.hpp"
#include "core/machine/owner.hpp"
#include "core/spawn/pasta.hpp"
#include "core/kernel/init_signals.hpp"
#include "core/spawn/relay.hpp"
#include "core/spawn/rootless_plan.hpp"

namespace mk::core {
namespace {

TEST(Subid, ParsesNamesAndUidsSkipsWhatShadowWouldNotUse) {
    auto e = parse_subid_file(
        "# comment\n"
        "alice:100000:65536\n"
        "\n"
        "1001:200000:65536\n"
        "bob:x:10\n"            // not a number
        "bob:300000:0\n"        // empty range
        "bob:4294967295:1\n"    // runs past the last valid ID
        "bob:1:2:3\n"           // a fourth field
        ":400000:10\n"          // no owner
        "carol:500000:65536");  // no final newline
    ASSERT_EQ(e.size(), 3u);
    EXPECT_EQ(e[0].owner, "alice");
    EXPECT_EQ(e[0].start, 100000u);
    EXPECT_EQ(e[0].count, 65536u);
    EXPECT_EQ(e[1].owner, "1001");
    EXPECT_EQ(e[2].owner, "carol");
}

TEST(Subid, LastValidRangeEndsBelowTheInvalidId) {
    auto e = parse_subid_file("a:4294967294:1\nb:4294967294:2\n");
    ASSERT_EQ(e.size(), 1u);
    EXPECT_EQ(e[0].owner, "a");
}

TEST(Subid, BoundsEntries) {
    std::string text;
    for (size_t i = 0; i < kSubidMaxEntries + 10; i++) text += "u:" + std::to_string(100000 + i) + ":1\n";
    EXPECT_EQ(parse_subid_file(text).size(), kSubidMaxEntries);
}

TEST(Subid, RangesByNameOrUidInFileOrder) {
    auto e = parse_subid_file("alice:100000:10\nbob:1:1\n1000:200000:20\nalicex:5:5\n");
    auto r = subid_ranges_for(e, "alice", 1000);
    ASSERT_EQ(r.size(), 2u);
    EXPECT_EQ(r[0], (SubidRange{100000, 10}));
    EXPECT_EQ(r[1], (SubidRange{200000, 20}));
    EXPECT_TRUE(subid_ranges_for(e, "carol", 1002).empty());
}

TEST(RootlessMap, OwnIdIsRootAndRangesFollow) {
    auto m = plan_rootless_map("alice", 1000, 1000, {{100000, 65536}}, {{100000, 65536}});
    EXPECT_TRUE(m.needs_helpers);
    EXPECT_TRUE(m.limitation.empty());
    ASSERT_EQ(m.uid_lines.size(), 2u);
    EXPECT_EQ(m.uid_lines[0], (MapLine{0, 1000, 1}));
    // 65536 IDs in all: the range's last one is not needed.
    EXPECT_EQ(m.uid_lines[1], (MapLine{1, 100000, 65535}));
    EXPECT_EQ(m.uid_count(), kRootlessMaxIds);
    EXPECT_EQ(map_lines_text(m.gid_lines), "0 1000 1\n1 100000 65535\n");
    EXPECT_EQ(id_map_helper_args("/usr/bin/newuidmap", 42, m.uid_lines),
              (std::vector<std::string>{"/usr/bin/newuidmap", "42", "0", "1000", "1", "1", "100000", "65535"}));
}

TEST(RootlessMap, SeveralSmallRangesAndDuplicates) {
    auto m = plan_rootless_map("a", 1000, 1000, {{100000, 100}, {100050, 10}, {300000, 1000}}, {});
    ASSERT_EQ(m.uid_lines.size(), 3u);
    EXPECT_EQ(m.uid_lines[1], (MapLine{1, 100000, 100}));
    EXPECT_EQ(m.uid_lines[2], (MapLine{101, 300000, 1000}));  // the overlapping one is left out
    // No subgid ranges: gids map only the user's own, still through newgidmap.
    EXPECT_EQ(m.gid_lines, (std::vector<MapLine>{{0, 1000, 1}}));
    EXPECT_TRUE(m.needs_helpers);
}

TEST(RootlessMap, BoundsLines) {
    std::vector<SubidRange> many;
    for (uint32_t i = 0; i < 1000; i++) many.push_back({100000 + 10 * i, 1});
    auto m = plan_rootless_map("a", 1000, 1000, many, many);
    EXPECT_EQ(m.uid_lines.size(), kMaxMapLines);
}

TEST(RootlessMap, WithoutRangesOnlyRootAndSaysWhatThatLimits) {
    auto m = plan_rootless_map("alice", 1000, 1000, {}, {});
    EXPECT_FALSE(m.needs_helpers);
    EXPECT_EQ(m.uid_lines, (std::vector<MapLine>{{0, 1000, 1}}));
    EXPECT_EQ(m.gid_lines, (std::vector<MapLine>{{0, 1000, 1}}));
    EXPECT_NE(m.limitation.find("/etc/subuid"), std::string::npos);
    EXPECT_NE(m.limitation.find("usermod --add-subuids"), std::string::npos);
    EXPECT_EQ(m.limitation.find('\n'), std::string::npos);
}

TEST(RootlessMap, RangeHoldingOwnUidIsRefused) {
    try {
        plan_rootless_map("alice", 100500, 1000, {{100000, 65536}}, {});
        FAIL();
    } catch (const UsageError& e) {
        std::string w = e.what();
        EXPECT_NE(w.find("/etc/subuid gives alice the range 100000-165535, which holds its own uid 100500"),
                  std::string::npos)
            << w;
    }
    EXPECT_THROW(plan_rootless_map("alice", 1000, 100001, {}, {{100000, 2}}), UsageError);
    // Just outside on both ends is fine.
    EXPECT_NO_THROW(plan_rootless_map("a", 99999, 165536, {{100000, 65536}}, {{100000, 65536}}));
}

std::vector<MountStep> root_plan(bool private_network) {
    SpawnSpec spec;
    spec.private_network = private_network;
    return build_mount_plan(spec);
}

const MountStep* find(const std::vector<MountStep>& p, std::string_view target) {
    for (const auto& s : p)
        if (s.target == target) return &s;
    return nullptr;
}

TEST(RootlessMounts, NodesBecomeBindsOfTheHostsNodes) {
    auto p = make_rootless_mount_plan(root_plan(false), false, kRootlessMaxIds);
    EXPECT_TRUE(std::none_of(p.begin(), p.end(), [](const MountStep& s) { return s.kind == StepKind::Node; }));
    const MountStep* null = find(p, "/dev/null");
    ASSERT_NE(null, nullptr);
    EXPECT_EQ(null->kind, StepKind::Bind);
    EXPECT_EQ(null->source, "/dev/null");
    EXPECT_FALSE(null->source_in_root);
    EXPECT_TRUE(null->create_target);
    EXPECT_FALSE(null->optional);
    EXPECT_TRUE(find(p, "/dev/net/tun")->optional);
}

TEST(RootlessMounts, SysfsIsAReadOnlyBindWithoutANetworkNamespace) {
    auto shared = make_rootless_mount_plan(root_plan(false), false, kRootlessMaxIds);
    const MountStep* sys = find(shared, "/sys");
    ASSERT_NE(sys, nullptr);
    EXPECT_EQ(sys->kind, StepKind::Bind);
    EXPECT_EQ(sys->source, "/sys");
    EXPECT_TRUE(sys->recursive);
    EXPECT_TRUE(sys->attrs & MOUNT_ATTR_RDONLY);

    auto own = make_rootless_mount_plan(root_plan(true), true, kRootlessMaxIds);
    sys = find(own, "/sys");
    ASSERT_NE(sys, nullptr);
    EXPECT_EQ(sys->kind, StepKind::Fs);
    EXPECT_EQ(sys->fstype, "sysfs");
    EXPECT_TRUE(sys->attrs & MOUNT_ATTR_RDONLY);
}

TEST(RootlessMounts, MasksAndProcStayAndDevptsGidOnlyWhenMapped) {
    auto p = make_rootless_mount_plan(root_plan(false), false, 1);
    for (const char* f : kMaskedProcFiles) {
        const MountStep* m = find(p, f);
        ASSERT_NE(m, nullptr) << f;
        EXPECT_EQ(m->kind, StepKind::Mask);
    }
    EXPECT_EQ(find(p, "/proc")->fstype, "proc");
    const MountStep* pts = nullptr;
    for (const auto& s : p)
        if (s.kind == StepKind::Fs && s.fstype == "devpts") pts = &s;
    ASSERT_NE(pts, nullptr);
    EXPECT_TRUE(std::none_of(pts->options.begin(), pts->options.end(), [](const auto& kv) { return kv.first == "gid"; }));

    auto full = make_rootless_mount_plan(root_plan(false), false, kRootlessMaxIds);
    for (const auto& s : full) {
        if (s.kind != StepKind::Fs || s.fstype != "devpts") continue;
        EXPECT_TRUE(std::any_of(s.options.begin(), s.options.end(),
                                [](const auto& kv) { return kv.first == "gid" && kv.second == "5"; }));
    }
}

TEST(RootlessSpec, RefusesWhatNeedsRoot) {
    SpawnSpec s;
    s.directory = "/home/a/tree";
    EXPECT_NO_THROW(check_rootless_spec(s));
    SpawnSpec img = s;
    img.image = "/x.raw";
    EXPECT_THROW(check_rootless_spec(img), UsageError);
    SpawnSpec idmap = s;
    idmap.binds.push_back({"/home/a/d", "/d", false, true, true, false});
    EXPECT_THROW(check_rootless_spec(idmap), UsageError);
    SpawnSpec u = s;
    u.userns_mode = UserNamespaceMode::Pick;
    EXPECT_THROW(check_rootless_spec(u), UsageError);
    // Ownership: "off" is what a rootless spawn does anyway, chown the consent to shift the tree
    // (plan_rootless_ownership); map needs root.
    SpawnSpec own = s;
    for (auto o : {UserNamespaceOwnership::Off, UserNamespaceOwnership::Chown}) {
        own.userns_ownership = o;
        EXPECT_NO_THROW(check_rootless_spec(own));
    }
    own.userns_ownership = UserNamespaceOwnership::Map;
    EXPECT_THROW(check_rootless_spec(own), UsageError);
}

TEST(RootlessRangeMap, RangesOnlyFromInsideZero) {
    auto m = plan_rootless_range_map("alice", 1000, 1000, {{100000, 10}, {200000, 65536}}, {{300000, 65536}});
    EXPECT_FALSE(m.own_ids_mapped);
    EXPECT_TRUE(m.needs_helpers);
    ASSERT_EQ(m.uid_lines.size(), 2u);
    EXPECT_EQ(m.uid_lines[0], (MapLine{0, 100000, 10}));
    EXPECT_EQ(m.uid_lines[1], (MapLine{10, 200000, 65526}));
    EXPECT_EQ(m.uid_count(), kRootlessMaxIds);
    ASSERT_EQ(m.gid_lines.size(), 1u);
    EXPECT_EQ(m.gid_lines[0], (MapLine{0, 300000, 65536}));
    EXPECT_TRUE(plan_rootless_map("alice", 1000, 1000, {{100000, 65536}}, {{100000, 65536}}).own_ids_mapped);
}

TEST(RootlessRangeMap, RefusesWithoutRangesOrWithOwnIdInOne) {
    for (auto [u, g] :
         {std::pair<std::vector<SubidRange>, std::vector<SubidRange>>{{}, {{100000, 10}}}, {{{100000, 10}}, {}}}) {
        try {
            plan_rootless_range_map("alice", 1000, 1000, u, g);
            ADD_FAILURE() << "not refused";
        } catch (const UsageError& e) {
            EXPECT_NE(std::string(e.what()).find("usermod --add-subuids"), std::string::npos) << e.what();
        }
    }
    EXPECT_THROW(plan_rootless_range_map("alice", 100005, 1000, {{100000, 10}}, {{100000, 10}}), UsageError);
}

TEST(RootlessRangeMap, LeavesALineForTheShiftsOwnId) {
    std::vector<SubidRange> many;
    for (uint32_t i = 0; i < 400; i++) many.push_back({100000 + i * 10, 5});
    auto m = plan_rootless_range_map("a", 1000, 1000, many, many);
    EXPECT_EQ(m.uid_lines.size(), kMaxMapLines - 1);
    auto shift = plan_rootless_shift_map(m, 1000, 1000);
    EXPECT_EQ(shift.uid_lines.size(), kMaxMapLines);
}

TEST(RootlessShiftMap, OwnIdThenTheRangeMapOneUp) {
    auto range = plan_rootless_range_map("alice", 1000, 1001, {{100000, 10}, {200000, 65536}}, {{300000, 65536}});
    auto m = plan_rootless_shift_map(range, 1000, 1001);
    ASSERT_EQ(m.uid_lines.size(), 3u);
    EXPECT_EQ(m.uid_lines[0], (MapLine{0, 1000, 1}));
    EXPECT_EQ(m.uid_lines[1], (MapLine{1, 100000, 10}));
    EXPECT_EQ(m.uid_lines[2], (MapLine{11, 200000, 65526}));
    EXPECT_EQ(m.gid_lines[0], (MapLine{0, 1001, 1}));
    EXPECT_EQ(m.gid_lines[1], (MapLine{1, 300000, 65536}));
    // Podman's inside k (its map: 0 -> own, 1.. -> ranges) is the shift map's k, the range map's
    // inside k its k+1: the one-time shift is k -> k+1 there.
    auto podman = plan_rootless_map("alice", 1000, 1001, {{100000, 10}, {200000, 65536}}, {{300000, 65536}});
    auto host_of = [](const std::vector<MapLine>& lines, uint32_t inside) -> int64_t {
        for (const auto& l : lines)
            if (inside >= l.inside && inside - l.inside < l.count) return l.outside + (inside - l.inside);
        return -1;
    };
    for (uint32_t k : {0u, 1u, 9u, 10u, 11u, 65534u}) {
        EXPECT_EQ(host_of(podman.uid_lines, k), host_of(m.uid_lines, k)) << k;
        EXPECT_EQ(host_of(range.uid_lines, k), host_of(m.uid_lines, k + 1)) << k;
    }
}

// A tree of the user's own (uid 1000, subordinate uids from 100000), shifted with its consent or not.
RootlessOwnershipInput users_own_tree(bool consent) {
    RootlessOwnershipInput in;
    in.tree = "/home/a/t";
    in.uid = 1000;
    in.root_owner = 1000;
    in.first_subuid = 100000;
    in.has_ranges = true;
    in.consent = consent;
    return in;
}

TEST(RootlessOwnership, AsIsWithoutTheFlag) {
    RootlessOwnershipInput in = users_own_tree(false);
    auto p = plan_rootless_ownership(in);
    EXPECT_EQ(p.how, RootlessTreeOwnership::AsIs);
    EXPECT_TRUE(p.notice.empty());
    in.root_owner = 0;  // anyone's tree the user can read: as today
    EXPECT_EQ(plan_rootless_ownership(in).how, RootlessTreeOwnership::AsIs);
}

TEST(RootlessOwnership, ShiftsOnceWithTheFlagAndSaysWhatThatMeans) {
    RootlessOwnershipInput in = users_own_tree(true);
    auto p = plan_rootless_ownership(in);
    EXPECT_EQ(p.how, RootlessTreeOwnership::ShiftNow);
    EXPECT_NE(p.notice.find("once"), std::string::npos);
    EXPECT_NE(p.notice.find("podman unshare"), std::string::npos);
    // Shifted before: the root's owner is the first subordinate uid. No second shift, with or
    // without the flag; without it, one line says which map it runs with.
    in.root_owner = 100000;
    p = plan_rootless_ownership(in);
    EXPECT_EQ(p.how, RootlessTreeOwnership::Shifted);
    EXPECT_TRUE(p.notice.empty());
    in.consent = false;
    p = plan_rootless_ownership(in);
    EXPECT_EQ(p.how, RootlessTreeOwnership::Shifted);
    EXPECT_NE(p.notice.find("your own uid not mapped"), std::string::npos);
    // Even -x runs a shifted tree with the range map (nothing is changed).
    in.keeps_tree = true;
    EXPECT_EQ(plan_rootless_ownership(in).how, RootlessTreeOwnership::Shifted);
}

TEST(RootlessOwnership, RefusalsWithTheFlag) {
    const RootlessOwnershipInput base = users_own_tree(true);
    auto refused = [](const RootlessOwnershipInput& in, const char* words) {
        try {
            plan_rootless_ownership(in);
            ADD_FAILURE() << "not refused: " << words;
        } catch (const UsageError& e) {
            std::string m = e.what();
            EXPECT_NE(m.find(words), std::string::npos) << m;
            EXPECT_EQ(m.find('\n'), std::string::npos) << m;
        }
    };
    auto no_ranges = base;
    no_ranges.has_ranges = false;
    no_ranges.first_subuid.reset();
    refused(no_ranges, "usermod --add-subuids");
    auto others = base;
    others.root_owner = 0;
    refused(others, "belongs to uid 0");
    auto interrupted = base;
    interrupted.interrupted = true;
    refused(interrupted, "unpack the tree again");
    auto ephemeral = base;
    ephemeral.keeps_tree = true;
    refused(ephemeral, "shift it once without them");
}

TEST(RootlessCgroup, UserManagerSubtree) {
    EXPECT_EQ(user_manager_subtree("/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope", 1000),
              "/user.slice/user-1000.slice/user@1000.service");
    EXPECT_EQ(user_manager_subtree("/user.slice/user-1000.slice/user@10000.service/app.slice", 1000), "");
    EXPECT_EQ(user_manager_subtree("/user.slice/user-1000.slice/session-1.scope", 1000), "");
    EXPECT_EQ(user_manager_subtree("", 1000), "");
}

TEST(RootlessCgroup, DelegatedSubtreeTakesTheMachine) {
    RootlessCgroupInput in;
    in.uid = 1000;
    in.own_cgroup2 = "/user.slice/user-1000.slice/user@1000.service/app.slice/term.scope";
    in.own_parent_writable = true;
    in.guest_systemd = 252;
    auto p = plan_rootless_cgroup(in, "tree");
    EXPECT_EQ(p.parent, "/user.slice/user-1000.slice/user@1000.service/machine-tree.scope");
    EXPECT_TRUE(p.guest_view);
    EXPECT_TRUE(p.notice.empty());
}

TEST(RootlessCgroup, NothingWritableMeansNoLimitsAndOneLine) {
    RootlessCgroupInput in;
    in.uid = 1000;
    in.own_cgroup2 = "/";
    auto p = plan_rootless_cgroup(in, "tree");
    EXPECT_TRUE(p.parent.empty());
    EXPECT_FALSE(p.guest_view);
    EXPECT_NE(p.notice.find("without cgroup limits"), std::string::npos);
    EXPECT_EQ(p.notice.find('\n'), std::string::npos);
    in.guest_systemd = 262;
    EXPECT_NE(plan_rootless_cgroup(in, "tree").notice.find("cannot boot"), std::string::npos);
}

TEST(RootlessCgroup, AnyWritableGroupGivesAView) {
    RootlessCgroupInput in;
    in.uid = 1000;
    in.own_cgroup2 = "/ci/job-7/user";
    in.own_parent_writable = true;
    in.guest_systemd = 262;
    auto p = plan_rootless_cgroup(in, "sid");
    EXPECT_EQ(p.parent, "/ci/job-7/machine-sid.scope");
    EXPECT_TRUE(p.guest_view);
    EXPECT_TRUE(p.notice.empty());
}

}  // namespace
}  // namespace mk::core

namespace mk::core {
namespace {

TEST(Pasta, ForwardsOnlyNamedPortsFromLoopback) {
    auto a = pasta_args("/usr/bin/pasta", {{PortProtocol::Tcp, 8080, 80}, {PortProtocol::Udp, 5353, 53}}, 42, "/run/p");
    auto has = [&](const std::string& opt, const std::string& val) {
        for (size_t i = 0; i + 1 < a.size(); i++)
            if (a[i] == opt && a[i + 1] == val) return true;
        return false;
    };
    EXPECT_EQ(a.front(), "/usr/bin/pasta");
    EXPECT_EQ(a.back(), "42");
    EXPECT_TRUE(has("--tcp-ports", "127.0.0.1/8080:80"));
    EXPECT_TRUE(has("--udp-ports", "127.0.0.1/5353:53"));
    EXPECT_TRUE(has("--tcp-ns", "none"));
    EXPECT_TRUE(has("--udp-ns", "none"));
    EXPECT_TRUE(has("--pid", "/run/p"));
    EXPECT_NE(std::find(a.begin(), a.end(), "--foreground"), a.end());
    EXPECT_NE(std::find(a.begin(), a.end(), "--config-net"), a.end());
    // Nothing named: nothing forwarded (pasta's default would be every bound port).
    auto none = pasta_args("/usr/bin/pasta", {}, 7, "/run/p");
    auto count_none = std::count(none.begin(), none.end(), std::string("none"));
    EXPECT_EQ(count_none, 4);
}

TEST(RootlessSpec, RefusesRootOnlyNetworking) {
    SpawnSpec s;
    s.network_veth = true;
    s.ports.push_back({PortProtocol::Tcp, 8080, 80});
    EXPECT_NO_THROW(check_rootless_spec(s));
    SpawnSpec z = s;
    z.network_zone = "z";
    EXPECT_THROW(check_rootless_spec(z), UsageError);
    SpawnSpec i = s;
    i.network_interfaces.push_back("eth1");
    EXPECT_THROW(check_rootless_spec(i), UsageError);
}

// machd --user: where it keeps things, from the user's environment.
TEST(UserManagerPlan, RuntimeAndDataDirectories) {
    auto p = plan_user_manager("/run/user/1000/", nullptr, "/home/u");
    EXPECT_EQ(p.error, "");
    EXPECT_EQ(p.state_dir, "/run/user/1000/machkit/machines");
    EXPECT_EQ(p.log_dir, "/run/user/1000/machkit");
    EXPECT_EQ(p.varlink_dir, "/run/user/1000/systemd/machine");
    EXPECT_EQ(p.pool, "/home/u/.local/share/machines");
    EXPECT_EQ(plan_user_manager("/run/user/1000", "/data/", "/home/u").pool, "/data/machines");
    // A relative XDG_DATA_HOME is ignored, as the XDG spec says.
    EXPECT_EQ(plan_user_manager("/run/user/1000", "rel", "/home/u").pool, "/home/u/.local/share/machines");
}

TEST(UserManagerPlan, MissingVariablesAreOneLine) {
    for (const char* runtime : {static_cast<const char*>(nullptr), "", "run/user/1"}) {
        auto p = plan_user_manager(runtime, nullptr, "/home/u");
        EXPECT_NE(p.error.find("XDG_RUNTIME_DIR"), std::string::npos);
        EXPECT_EQ(p.error.find('\n'), std::string::npos);
        EXPECT_TRUE(p.state_dir.empty());
    }
    EXPECT_NE(plan_user_manager("/run/user/1", nullptr, nullptr).error.find("$HOME"), std::string::npos);
}

TEST(UserManagerPlan, OwnerIsPrivileged) {
    EXPECT_TRUE(caller_is_privileged(0));
    EXPECT_FALSE(caller_is_privileged(1000));
    set_manager_owner(1000);
    EXPECT_TRUE(caller_is_privileged(0));
    EXPECT_TRUE(caller_is_privileged(1000));
    EXPECT_FALSE(caller_is_privileged(1001));
    set_manager_owner(0);
    EXPECT_FALSE(caller_is_privileged(1000));
}

// The bytes of a POSIX ACL xattr: version 2, then {le16 tag, le16 perm, le32 id} entries.
std::string acl(std::vector<std::tuple<uint16_t, uint16_t, uint32_t>> entries) {
    std::string s("\x02\x00\x00\x00", 4);
    for (auto [tag, perm, id] : entries) {
        char e[8] = {static_cast<char>(tag & 0xff),        static_cast<char>(tag >> 8),
                     static_cast<char>(perm & 0xff),       0,
                     static_cast<char>(id & 0xff),         static_cast<char>((id >> 8) & 0xff),
                     static_cast<char>((id >> 16) & 0xff), static_cast<char>(id >> 24)};
        s.append(e, 8);
    }
    return s;
}

TEST(ShiftXattrs, AclUserAndGroupEntriesMoveOthersStay) {
    // USER_OBJ, USER 5, USER 70000 (outside), GROUP 0, MASK, OTHER
    auto in = acl(
        {{0x01, 7, 0xFFFFFFFF}, {0x02, 6, 5}, {0x02, 6, 70000}, {0x08, 4, 0}, {0x10, 7, 0xFFFFFFFF}, {0x20, 4, 0xFFFFFFFF}});
    auto out = remap_acl_xattr(in, 0, 1, 65536);
    ASSERT_TRUE(out);
    EXPECT_EQ(*out, acl({{0x01, 7, 0xFFFFFFFF},
                         {0x02, 6, 6},
                         {0x02, 6, 70000},
                         {0x08, 4, 1},
                         {0x10, 7, 0xFFFFFFFF},
                         {0x20, 4, 0xFFFFFFFF}}));
    // Root's -U shift: 0.. to 0x80000..
    auto root = remap_acl_xattr(in, 0, 0x80000, 65536);
    ASSERT_TRUE(root);
    EXPECT_EQ(*root, acl({{0x01, 7, 0xFFFFFFFF},
                          {0x02, 6, 0x80005},
                          {0x02, 6, 70000},
                          {0x08, 4, 0x80000},
                          {0x10, 7, 0xFFFFFFFF},
                          {0x20, 4, 0xFFFFFFFF}}));
    EXPECT_FALSE(remap_acl_xattr(acl({{0x01, 7, 0xFFFFFFFF}}), 0, 1, 65536));  // nothing to move
    EXPECT_FALSE(remap_acl_xattr("\x01\x00\x00\x00", 0, 1, 65536));            // not version 2
    EXPECT_FALSE(remap_acl_xattr(in.substr(0, 7), 0, 1, 65536));               // torn
}

TEST(ShiftXattrs, FileCapsBecomeRevision3WithTheirRootMoved) {
    // Revision 2 (effective flag set): permitted cap_net_raw (bit 13); its root is 0.
    std::string v2("\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
    auto out = remap_file_caps(v2, 0, 1, 65536);
    ASSERT_TRUE(out);
    ASSERT_EQ(out->size(), 24u);
    EXPECT_EQ(out->substr(0, 4), std::string("\x01\x00\x00\x03", 4));
    EXPECT_EQ(out->substr(4, 16), v2.substr(4, 16));
    EXPECT_EQ(out->substr(20), std::string("\x01\x00\x00\x00", 4));
    // Revision 3 with root 7: 8.
    std::string v3 = *out;
    v3[20] = 7;
    auto moved = remap_file_caps(v3, 0, 1, 65536);
    ASSERT_TRUE(moved);
    EXPECT_EQ(static_cast<unsigned char>((*moved)[20]), 8u);
    // Outside the range: unchanged (root -U with a range that does not hold it).
    EXPECT_EQ(*remap_file_caps(v3, 100, 200, 10), v3);
    EXPECT_FALSE(remap_file_caps(v2.substr(0, 19), 0, 1, 65536));
    EXPECT_FALSE(remap_file_caps(std::string(20, '\0'), 0, 1, 65536));  // no revision
}

// A halt request to a booted guest (SIGRTMIN+3 = 37 on glibc) is sent once the init blocks or
// catches it; before that a PID 1 of its namespace would drop it (issue 16's lost poweroff).
TEST(HaltSignal, TakenWhenBlockedOrCaught) {
    const int rtmin3 = SIGRTMIN + 3;
    // A fresh child of spawn's: nothing blocked or caught.
    std::string fresh =
        "Name:\tsystemd\nSigQ:\t0/1\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n"
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\nSigCgt:\t0000000000000000\n";
    EXPECT_FALSE(process_takes_signal(fresh, rtmin3));
    EXPECT_FALSE(process_takes_signal(fresh, SIGTERM));
    // systemd after its signalfd setup: everything but SIGKILL/SIGSTOP blocked.
    std::string blocked = fresh;
    blocked.replace(blocked.find("SigBlk:\t") + 8, 16, "fffffffe7ffbfeff");
    EXPECT_TRUE(process_takes_signal(blocked, rtmin3));
    EXPECT_TRUE(process_takes_signal(blocked, SIGTERM));
    EXPECT_TRUE(process_takes_signal(blocked, SIGKILL));  // set up: the init's choice
    // A handler for SIGTERM only (bit 14): the init has set up its signals, the rest is its choice
    // (busybox init shows SIGTSTP only and still powers off on SIGUSR2).
    std::string caught = fresh;
    caught.replace(caught.find("SigCgt:\t") + 8, 16, "0000000000004000");
    EXPECT_TRUE(process_takes_signal(caught, SIGTERM));
    EXPECT_TRUE(process_takes_signal(caught, SIGINT));
    // A systemd that caught its crash signals (SEGV, ILL, FPE, BUS, QUIT, ABRT) but has not blocked the
    // rest yet: only the signal itself counts for it.
    std::string crash_only = fresh;
    crash_only.replace(crash_only.find("SigCgt:\t") + 8, 16, "00000000000005ac");
    EXPECT_FALSE(process_takes_signal(crash_only, rtmin3, true));
    EXPECT_TRUE(process_takes_signal(crash_only, rtmin3, false));
    EXPECT_TRUE(process_takes_signal(blocked, rtmin3, true));
    EXPECT_FALSE(process_takes_signal("", SIGTERM));
    EXPECT_FALSE(process_takes_signal(blocked, 0));
    EXPECT_FALSE(process_takes_signal(blocked, 65));
}

TEST(KeptUserns, RecordRoundTripsAndRefusesAnythingElse) {
    KeptUsernsRecord r{4242, 123456789, 4026532173};
    EXPECT_EQ(kept_userns_record_text(r), "4242 123456789 4026532173\n");
    EXPECT_EQ(parse_kept_userns_record(kept_userns_record_text(r)), r);
    EXPECT_EQ(kept_userns_record_path("/run/user/1000"), "/run/user/1000/machkit/userns");
    for (const char* bad : {"", "4242 1 2", "4242 1 2\n\n", "4242  1 2\n", "-1 1 2\n", "0 1 2\n", "1 0 2\n", "1 2 0\n",
                            "1 2 3 4\n", "x 1 2\n", "4294967296 1 2\n", "1 99999999999999999999999 2\n", " 1 2 3\n"})
        EXPECT_FALSE(parse_kept_userns_record(bad)) << bad;
}

TEST(KeptUserns, MapTextMustBeTheExpectedLinesExactly) {
    std::vector<MapLine> want{{0, 1001, 1}, {1, 100000, 65535}};
    // As /proc/PID/uid_map prints it: right-aligned columns.
    EXPECT_TRUE(id_map_text_is("         0       1001          1\n         1     100000      65535\n", want));
    EXPECT_FALSE(id_map_text_is("         0       1001          1\n", want));
    EXPECT_FALSE(id_map_text_is("0 1001 1\n1 100000 65534\n", want));
    EXPECT_FALSE(id_map_text_is("0 1002 1\n1 100000 65535\n", want));
    EXPECT_FALSE(id_map_text_is("1 100000 65535\n0 1001 1\n", want));  // same IDs, other order: not the same map
    EXPECT_FALSE(id_map_text_is("0 1001 1\n1 100000 65535\n2 200000 1\n", want));
    EXPECT_FALSE(id_map_text_is("0 1001 x\n", want));
    EXPECT_FALSE(id_map_text_is("", want));
}

TEST(KeptUserns, OnlyThePodmanMapOfAUserWithRangesIsJoined) {
    SubidRange r{100000, 65536};
    RootlessMap podman = plan_rootless_map("alice", 1000, 1000, {r}, {r});
    EXPECT_TRUE(may_join_kept_userns(podman));
    EXPECT_FALSE(may_join_kept_userns(plan_rootless_map("alice", 1000, 1000, {}, {})));          // one ID, no helper
    EXPECT_FALSE(may_join_kept_userns(plan_rootless_range_map("alice", 1000, 1000, {r}, {r})));  // chown layout
}

}  // namespace
}  // namespace mk::core
