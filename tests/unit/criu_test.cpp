// criu's RPC codec and the checkpoint plan (src/core/criu): pure, no criu needed.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <map>

#include "core/base/error.hpp"
#include "core/criu/checkpoint.hpp"
#include "core/criu/plan.hpp"
#include "core/criu/protobuf.hpp"
#include "core/criu/rpc.hpp"

using namespace mk::core;
using namespace mk::core::criu;

TEST(CriuProtobuf, VarintsAndBytesRoundTrip) {
    ProtoWriter w;
    w.add_varint(1, 300);
    w.add_int32(2, -1);
    w.add_bytes(3, "abc");
    w.add_bool(4, true);
    // 300 = 0xac 0x02; -1 as int32 is ten bytes; field 3 length-delimited.
    EXPECT_EQ(w.data().substr(0, 3), std::string("\x08\xac\x02", 3));
    ProtoReader r(w.data());
    ProtoField f;
    ASSERT_TRUE(r.next(f));
    EXPECT_EQ(f.number, 1u);
    EXPECT_EQ(f.varint, 300u);
    ASSERT_TRUE(r.next(f));
    EXPECT_EQ(varint_int32(f.varint), -1);
    ASSERT_TRUE(r.next(f));
    EXPECT_EQ(f.type, WireType::Bytes);
    EXPECT_EQ(f.bytes, "abc");
    ASSERT_TRUE(r.next(f));
    EXPECT_EQ(f.varint, 1u);
    EXPECT_FALSE(r.next(f));
}

TEST(CriuProtobuf, MalformedInputThrows) {
    for (std::string bad : {std::string("\x08", 1),
                            std::string("\x1a\x05"
                                        "ab",
                                        4),
                            std::string("\x0b", 1), std::string("\x00\x01", 2), std::string(11, '\xff')}) {
        ProtoReader r(bad);
        ProtoField f;
        EXPECT_THROW(while (r.next(f)){}, std::runtime_error) << bad.size();
    }
}

TEST(CriuRpc, RequestCarriesTheFieldsOfRpcProto) {
    Options o;
    o.images_dir_fd = 5;
    o.pid = 42;
    o.tcp_established = true;
    o.root = "/r";
    o.ext_mnt = {{"/data", "/srv/data"}};
    o.inherit_fd = {{"extRootNetNS", 7}};
    o.manage_cgroups_mode = CgroupMode::Ignore;
    o.external = {"veth[host0]:ve-a"};
    o.rst_sibling = true;
    Request req{ReqType::Restore, o, std::nullopt, false, std::nullopt};
    std::string bytes = encode_request(req);
    ProtoReader r(bytes);
    ProtoField f;
    ASSERT_TRUE(r.next(f));
    EXPECT_EQ(f.number, 1u);
    EXPECT_EQ(f.varint, 2u);  // RESTORE
    ASSERT_TRUE(r.next(f));
    EXPECT_EQ(f.number, 2u);  // opts
    ProtoReader opts(f.bytes);
    std::map<uint32_t, int> seen;
    std::string ext_key, ext_val, external;
    ProtoField g;
    while (opts.next(g)) {
        ++seen[g.number];
        if (g.number == 23) {
            ProtoReader m(g.bytes);
            ProtoField k;
            m.next(k);
            ext_key = std::string(k.bytes);
            m.next(k);
            ext_val = std::string(k.bytes);
        }
        if (g.number == 37) external = std::string(g.bytes);
        if (g.number == 1) {
            EXPECT_EQ(g.varint, 5u);
        }
        if (g.number == 2) {
            EXPECT_EQ(g.varint, 42u);
        }
        if (g.number == 34) {
            EXPECT_EQ(g.varint, 0u);
        }
    }
    for (uint32_t n : {1u, 2u, 5u, 13u, 23u, 26u, 27u, 34u, 37u}) EXPECT_EQ(seen[n], 1) << n;
    EXPECT_EQ(ext_key, "/data");
    EXPECT_EQ(ext_val, "/srv/data");
    EXPECT_EQ(external, "veth[host0]:ve-a");
}

TEST(CriuRpc, DecodesRestoreNotifyVersionAndErrors) {
    ProtoWriter restore;
    restore.add_int32(1, 1234);
    ProtoWriter w;
    w.add_int32(1, 2);
    w.add_bool(2, true);
    w.add_message(4, restore);
    Response r = decode_response(w.data());
    EXPECT_EQ(r.type, ReqType::Restore);
    EXPECT_TRUE(r.success);
    EXPECT_EQ(r.restore_pid, 1234);

    ProtoWriter notify;
    notify.add_bytes(1, "post-restore");
    notify.add_int32(2, 77);
    ProtoWriter n;
    n.add_int32(1, 6);
    n.add_bool(2, true);
    n.add_message(5, notify);
    Response rn = decode_response(n.data());
    EXPECT_EQ(rn.type, ReqType::Notify);
    EXPECT_EQ(rn.notify_script, "post-restore");
    EXPECT_EQ(rn.notify_pid, 77);

    ProtoWriter ver;
    ver.add_int32(1, 4);
    ver.add_int32(2, 2);
    ver.add_int32(4, 1);
    ProtoWriter v;
    v.add_int32(1, 10);
    v.add_bool(2, true);
    v.add_message(10, ver);
    Response rv = decode_response(v.data());
    ASSERT_TRUE(rv.version);
    EXPECT_EQ(to_string(*rv.version), "4.2.1");

    ProtoWriter e;
    e.add_int32(1, 1);
    e.add_bool(2, false);
    e.add_int32(7, 13);
    e.add_bytes(9, std::string(10000, 'x'));
    Response re = decode_response(e.data());
    EXPECT_FALSE(re.success);
    EXPECT_EQ(re.cr_errno, 13);
    EXPECT_EQ(re.cr_errmsg.size(), kMaxRpcString);

    ProtoWriter missing;
    missing.add_int32(1, 1);
    EXPECT_THROW(decode_response(missing.data()), std::runtime_error);  // no success field
}

TEST(CriuRpc, CgroupModeTable) {
    for (auto m : {CgroupMode::Ignore, CgroupMode::None, CgroupMode::Props, CgroupMode::Soft, CgroupMode::Full,
                   CgroupMode::Strict, CgroupMode::Default})
        EXPECT_EQ(cgroup_mode_from_string(to_string(m)), m);
    EXPECT_FALSE(cgroup_mode_from_string("bogus"));
}

namespace {
// A spawn container as this host shows it (tests/bus/test_criu.py's kind), plus a host bind and a
// device bind.
constexpr const char* kContainer =
    "68 45 254:0 /tmp/t/tree / rw,relatime - ext4 /dev/vda rw\n"
    "69 68 0:40 / /run rw,nosuid - tmpfs tmpfs rw\n"
    "70 68 0:41 / /proc rw - proc proc rw\n"
    "71 70 0:41 /sys /proc/sys ro - proc proc rw\n"
    "72 70 0:40 /host/inaccessible/reg /proc/kallsyms ro - tmpfs tmpfs rw\n"
    "79 68 0:21 / /sys ro - sysfs sysfs rw\n"
    "80 68 0:42 / /dev rw - tmpfs tmpfs rw\n"
    "81 80 0:43 / /dev/pts rw - devpts devpts rw\n"
    "85 69 0:40 /host /run/host ro - tmpfs tmpfs rw\n"
    "86 68 254:0 /srv/my\\040data /data rw - ext4 /dev/vda rw\n"
    "87 80 0:5 /fuse /dev/fuse rw - devtmpfs udev rw\n"
    "88 80 0:77 / /dev/hugepages rw - hugetlbfs hugetlbfs rw\n"
    "89 68 0:60 / /srv/hostrun rw - ramfs ramfs rw\n";
constexpr const char* kHost =
    "20 1 254:0 / / rw - ext4 /dev/vda rw\n"
    "21 20 0:5 / /dev rw - devtmpfs udev rw\n"
    "22 20 0:21 / /sys rw - sysfs sysfs rw\n"
    "23 20 0:60 / /run/shared rw - ramfs ramfs rw\n";
}  // namespace

TEST(CriuPlan, ExternalsAreTheHostBindsOnly) {
    auto c = parse_mountinfo(kContainer);
    ASSERT_EQ(c.size(), 13u);
    EXPECT_EQ(c[9].root, "/srv/my data");  // \040 decoded
    auto ext = plan_external_mounts(c, parse_mountinfo(kHost));
    ASSERT_EQ(ext.size(), 3u);
    EXPECT_EQ(ext[0].key, "/data");
    EXPECT_EQ(ext[0].source, "/srv/my data");
    EXPECT_EQ(ext[1].key, "/dev/fuse");
    EXPECT_EQ(ext[1].source, "/dev/fuse");
    EXPECT_EQ(ext[2].key, "/srv/hostrun");  // the host's own instance, bound in: external
    EXPECT_EQ(ext[2].source, "/run/shared");
}

TEST(CriuPlan, AMountWithNoHostOriginIsRefused) {
    auto c = parse_mountinfo("1 0 254:0 /t / rw - ext4 /dev/vda rw\n2 1 0:99 /x /x rw - xfs /dev/sdb rw\n");
    EXPECT_THROW(plan_external_mounts(c, parse_mountinfo(kHost)), UsageError);
}

TEST(CriuPlan, NamespaceFileBindsHaveTheirNsfsRoot) {
    // `ip netns add` leaves such a line in the host's mountinfo.
    auto m = parse_mountinfo(
        "1 0 254:0 / / rw - ext4 /dev/vda rw\n"
        "2 1 0:4 net:[4026532900] /run/netns/x rw - nsfs nsfs rw\n");
    ASSERT_EQ(m.size(), 2u);
    EXPECT_EQ(m[1].root, "net:[4026532900]");
    EXPECT_THROW(parse_mountinfo("1 0 0:4 net:[1] /x rw - ext4 a rw\n"), std::runtime_error);
}

TEST(CriuPlan, MalformedMountinfoThrows) {
    EXPECT_THROW(parse_mountinfo("1 0 254:0 / / rw\n"), std::runtime_error);
    EXPECT_THROW(parse_mountinfo("x 0 254:0 / / rw - ext4 a rw\n"), std::runtime_error);
    EXPECT_THROW(parse_mountinfo("1 0 254:0 rel / rw - ext4 a rw\n"), std::runtime_error);
}

TEST(CriuPlan, RecordRoundTripsAndRejectsBadInput) {
    CheckpointRecord r;
    r.machine = "m";
    r.root = "/var/lib/machines/m";
    r.criu_version = "4.2.1";
    r.veth_host = "ve-m";
    r.veth_container = "host0";
    r.veth_addresses = {{AF_INET, "10.0.0.1", 28}, {AF_INET6, "fd00::1", 64}};
    r.mounts = {{"/data", "/srv/data"}};
    r.stdio = {"pipe:[1]", "", "file[1a:2b]"};
    r.files = {{"core-1.img", 10, 99}, {"pages-1.img", 4096, std::nullopt}};
    CheckpointRecord back = decode_record(encode_record(r));
    EXPECT_EQ(back.machine, "m");
    EXPECT_EQ(back.veth_addresses.size(), 2u);
    EXPECT_EQ(back.veth_addresses[1].family, AF_INET6);
    EXPECT_EQ(back.stdio, r.stdio);
    ASSERT_EQ(back.files.size(), 2u);
    EXPECT_EQ(back.files[0].hash, 99u);
    EXPECT_FALSE(back.files[1].hash);
    EXPECT_FALSE(back.orphan_pty);
    r.orphan_pty = true;
    EXPECT_TRUE(decode_record(encode_record(r)).orphan_pty);

    EXPECT_THROW(decode_record("[]"), UsageError);
    EXPECT_THROW(decode_record("{\"format\": 2}"), UsageError);
    std::string j = encode_record(r);
    auto with = [&](const std::string& from, const std::string& to) {
        std::string s = j;
        s.replace(s.find(from), from.size(), to);
        return s;
    };
    EXPECT_THROW(decode_record(with("\"core-1.img\"", "\"../core-1.img\"")), UsageError);
    EXPECT_THROW(decode_record(with("\"/var/lib/machines/m\"", "\"relative\"")), UsageError);
    EXPECT_THROW(decode_record(with("\"/srv/data\"", "\"srv\"")), UsageError);
    EXPECT_THROW(decode_record(std::string(kMaxRecordSize + 1, ' ')), UsageError);
    // Numbers out of their field's range, or not integers, are refused (fuzz_criu_rpc found a float
    // format turned into an int with a plain cast).
    EXPECT_THROW(decode_record("{\"format\":22222222222222222221,\"files\":[{\"name\":\"core-1.img\",\"size\":3}]}"),
                 UsageError);
    EXPECT_THROW(decode_record(with("\"format\": 1", "\"format\": 1.5")), UsageError);
    EXPECT_THROW(decode_record(with("\"size\": 4096", "\"size\": -1")), UsageError);
}

TEST(CriuPlan, PagesAreSizedNotHashed) {
    EXPECT_FALSE(image_file_is_hashed("pages-1.img"));
    EXPECT_TRUE(image_file_is_hashed("pagemap-1.img"));
    EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ULL);
    EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
}

// spawn -U (docs/criu.md, "-U"): the record keeps the host IDs of the container's root, a -U
// machine's sysfs may be the restore's fresh one, and its restore is refused unless accepted.
TEST(CriuPlan, UserNamespaceRecordAndItsRestoreGate) {
    CheckpointRecord r;
    r.machine = "m";
    r.root = "/var/lib/machines/m";
    r.files = {{"core-1.img", 10, 99}};
    r.mounts = {{"/dev/null", "/dev/null"}, {"/sys", std::string(kFreshSysfs)}};
    CheckpointRecord plain = decode_record(encode_record(r));
    EXPECT_FALSE(plain.userns_uid);
    EXPECT_NO_THROW(check_unlocked_mounts_accepted(plain, false));
    r.userns_uid = 100000;
    r.userns_gid = 100001;
    CheckpointRecord back = decode_record(encode_record(r));
    EXPECT_EQ(back.userns_uid, 100000u);
    EXPECT_EQ(back.userns_gid, 100001u);
    ASSERT_EQ(back.mounts.size(), 2u);
    EXPECT_EQ(back.mounts[1].source, kFreshSysfs);
    try {
        check_unlocked_mounts_accepted(back, false);
        ADD_FAILURE() << "a -U checkpoint's restore must be refused without --unlocked-mounts";
    } catch (const UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("--unlocked-mounts"), std::string::npos) << e.what();
    }
    EXPECT_NO_THROW(check_unlocked_mounts_accepted(back, true));
    // Only that one word stands for a source that is not a path.
    std::string j = encode_record(r);
    j.replace(j.find("@fresh-sysfs"), 12, "@elsewhere!!");
    EXPECT_THROW(decode_record(j), UsageError);
}

TEST(CriuPlan, DeviceNodesBoundFromTheHostAreExternals) {
    // spawn -U binds the host's nodes on /dev's files (devtmpfs, root /null): external mounts.
    auto c = parse_mountinfo(
        "1 0 254:0 /m / rw - ext4 /dev/vda rw\n"
        "2 1 0:40 / /dev rw - tmpfs tmpfs rw\n"
        "3 2 0:6 /null /dev/null rw - devtmpfs devtmpfs rw\n"
        "4 2 0:6 /net/tun /dev/net/tun rw - devtmpfs devtmpfs rw\n");
    auto h = parse_mountinfo(
        "20 1 254:0 / / rw - ext4 /dev/vda rw\n"
        "21 20 0:6 / /dev rw - devtmpfs devtmpfs rw\n");
    auto ext = plan_external_mounts(c, h);
    ASSERT_EQ(ext.size(), 2u);
    EXPECT_EQ(ext[0].key, "/dev/null");
    EXPECT_EQ(ext[0].source, "/dev/null");
    EXPECT_EQ(ext[1].source, "/dev/net/tun");
}
