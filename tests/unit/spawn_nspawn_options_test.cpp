// The nspawn options of issue 17 §6: their value parsers (option_values) and how the command line
// fills SpawnSpec and the settings mask, so .nspawn files and options meet in the same fields.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "core/base/error.hpp"
#include "core/spawn/option_values.hpp"
#include "spawn/options.hpp"

using namespace mk;
using namespace mk::core;

namespace {

spawn::ParsedOptions parse(std::vector<std::string> args) {
    args.insert(args.begin(), "spawn");
    return spawn::parse_options(args, false, false);
}

std::string error_of(std::vector<std::string> args) {
    try {
        parse(std::move(args));
    } catch (const UsageError& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(NspawnOptionValues, RlimitAssignment) {
    auto [r, l] = parse_rlimit("NOFILE=1024:4096");
    EXPECT_EQ(r, RLIMIT_NOFILE);
    EXPECT_EQ(l.soft, 1024u);
    EXPECT_EQ(l.hard, 4096u);
    EXPECT_EQ(parse_rlimit("rlimit_core=infinity").first, RLIMIT_CORE);
    EXPECT_EQ(parse_rlimit("AS=1G").second.hard, uint64_t{1} << 30);
    for (const char* bad : {"", "NOFILE", "=5", "FOO=1", "NOFILE=", "NOFILE=5:1", "NOFILE=x"})
        EXPECT_THROW(parse_rlimit(bad), UsageError) << bad;
}

TEST(NspawnOptionValues, PersonalityNumbers) {
    EXPECT_EQ(personality_number("x86"), 0x0008u);     // PER_LINUX32
    EXPECT_EQ(personality_number("x86-64"), 0x0000u);  // PER_LINUX
}

TEST(NspawnOptionValues, CredentialNames) {
    for (const char* ok : {"a", "my.cred", "tls_key-1"}) EXPECT_TRUE(credential_name_is_valid(ok)) << ok;
    for (const char* bad : {"", ".", "..", "a/b", "a b", "a\tb", "a:b", "A:"})
        EXPECT_FALSE(credential_name_is_valid(bad)) << bad;
    EXPECT_TRUE(credential_name_is_valid(std::string(255, 'x')));
    EXPECT_FALSE(credential_name_is_valid(std::string(256, 'x')));
}

TEST(NspawnOptionValues, SetCredentialUnescapes) {
    auto c = parse_set_credential("key:two\\nlines\\x41\\000end\\u00e9");
    EXPECT_EQ(c.id, "key");
    EXPECT_EQ(c.data, std::string("two\nlinesA\0end\xc3\xa9", 16));
    EXPECT_EQ(parse_set_credential("k:a:b").data, "a:b");  // only the first ':' separates
    EXPECT_EQ(parse_set_credential("k:").data, "");
    for (const char* bad : {"novalue", ":v", "a/b:v", "k:\\", "k:\\q", "k:\\x4", "k:\\u0000", "k:\\477", "k:\\12"})
        EXPECT_THROW(parse_set_credential(bad), UsageError) << bad;
    EXPECT_THROW(parse_set_credential("k:" + std::string(kCredentialSizeMax + 1, 'a')), UsageError);
    // Found by the fuzzer: an escaped newline must not break the one-line error.
    try {
        parse_option_value("--set-credential=", "k:\\\n", parse_set_credential);
        ADD_FAILURE();
    } catch (const UsageError& e) {
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
}

TEST(NspawnOptionValues, LoadCredential) {
    EXPECT_EQ(parse_load_credential("k:/etc/secret"), (std::pair<std::string, std::string>{"k", "/etc/secret"}));
    EXPECT_EQ(parse_load_credential("k:name").second, "name");
    for (const char* bad : {"k:", "k", ":x"}) EXPECT_THROW(parse_load_credential(bad), UsageError) << bad;
}

TEST(NspawnOptionValues, RootHashAndSignature) {
    EXPECT_EQ(parse_root_hash(std::string(64, 'A')), std::string(64, 'a'));
    for (std::string bad :
         {std::string(30, 'a'), std::string(63, 'a'), std::string(258, 'a'), std::string(64, 'g'), std::string()})
        EXPECT_THROW(parse_root_hash(bad), UsageError) << bad;
    EXPECT_EQ(parse_root_hash_sig("base64:aGVsbG8="), "base64:aGVsbG8=");
    EXPECT_EQ(parse_root_hash_sig("//etc/sig"), "/etc/sig");
    for (const char* bad : {"base64:", "base64:a", "base64:a=bc", "base64:!!!!", "sig", ""})
        EXPECT_THROW(parse_root_hash_sig(bad), UsageError) << bad;
}

TEST(NspawnOptionValues, SelinuxLabel) {
    EXPECT_EQ(parse_selinux_label("system_u:system_r:container_t:s0"), "system_u:system_r:container_t:s0");
    for (const char* bad : {"", "container_t", "a:b c:d", "a:b:\x01"})
        EXPECT_THROW(parse_selinux_label(bad), UsageError) << bad;
}

TEST(NspawnOptions, ResourceOptionsFillTheSpecAndTheMask) {
    auto r = parse({"-D", "/t", "--rlimit=NOFILE=10:20", "--oom-score-adjust=-5", "--cpu-affinity=0,1", "--personality=x86",
                    "--suppress-sync=yes"});
    ASSERT_TRUE(r.spec.rlimits[RLIMIT_NOFILE]);
    EXPECT_EQ(r.spec.rlimits[RLIMIT_NOFILE]->hard, 20u);
    EXPECT_TRUE(r.set_on_command_line.has_rlimit(RLIMIT_NOFILE));
    EXPECT_FALSE(r.set_on_command_line.has_rlimit(RLIMIT_CORE));
    EXPECT_EQ(r.spec.oom_score_adjust, -5);
    EXPECT_EQ(r.spec.cpu_affinity, (std::vector<unsigned>{0, 1}));
    EXPECT_EQ(r.spec.personality, "x86");
    EXPECT_TRUE(r.spec.suppress_sync);
    for (auto g :
         {SettingGroup::OomScoreAdjust, SettingGroup::CpuAffinity, SettingGroup::Personality, SettingGroup::SuppressSync})
        EXPECT_TRUE(r.set_on_command_line.has(g));
}

TEST(NspawnOptions, CapabilitiesAndPivot) {
    auto r = parse({"-D", "/t", "--ambient-capability=CAP_NET_RAW", "--pivot-root=/sysroot:/oldroot"});
    EXPECT_EQ(r.spec.capabilities_ambient, uint64_t{1} << 13);
    EXPECT_EQ(r.spec.pivot_root_new, "/sysroot");
    EXPECT_EQ(r.spec.pivot_root_old, "/oldroot");
    EXPECT_TRUE(r.set_on_command_line.has(SettingGroup::Capability));
    EXPECT_TRUE(r.set_on_command_line.has(SettingGroup::PivotRoot));
    EXPECT_NE(error_of({"-D", "/t", "--ambient-capability=all"}).find("\"all\""), std::string::npos);
}

TEST(NspawnOptions, Credentials) {
    char path[] = "/tmp/mk-cred-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "file\0data", 9), 9);
    close(fd);
    auto r = parse({"-D", "/t", "--set-credential=a:x\\ty", std::string("--load-credential=b:") + path});
    unlink(path);
    ASSERT_EQ(r.spec.credentials.size(), 2u);
    EXPECT_EQ(r.spec.credentials[0].id, "a");
    EXPECT_EQ(r.spec.credentials[0].data, "x\ty");
    EXPECT_EQ(r.spec.credentials[1].data, std::string("file\0data", 9));
    EXPECT_EQ(error_of({"-D", "/t", "--set-credential=a:1", "--set-credential=a:2"}),
              "duplicate credential 'a': pass each id once");
    EXPECT_NE(error_of({"-D", "/t", "--load-credential=a:/nonexistent/x"}).find("cannot read /nonexistent/x"),
              std::string::npos);
}

TEST(NspawnOptions, CompatibilitySpellings) {
    auto r = parse({"-D", "/t", "--no-pager", "-S", "custom.slice", "--bind-user=alice",
                    "--root-hash=" + std::string(64, 'f'), "--root-hash-sig=base64:aGVsbG8=", "--verity-data=/v"});
    EXPECT_EQ(r.spec.slice, "custom.slice");
    EXPECT_EQ(r.spec.bind_users, (std::vector<std::string>{"alice"}));
    EXPECT_EQ(r.spec.root_hash, std::string(64, 'f'));
    EXPECT_EQ(r.spec.verity_data, "/v");
    EXPECT_EQ(parse({"-D", "/t", "-Z", "u:r:t:s0"}).spec.selinux_context, "u:r:t:s0");
    EXPECT_EQ(parse({"-D", "/t", "-L", "u:r:t:s0"}).spec.selinux_apifs_context, "u:r:t:s0");
    EXPECT_EQ(error_of({"-D", "/t", "--oci-bundle=/b"}),
              "--oci-bundle= cannot be combined with -D: config.json describes the container");
}

// ---- --bind-user= (bind_user.hpp) and the extra ID maps it needs (userns.hpp) ----------------------

#include "core/kernel/userns.hpp"
#include "core/spawn/bind_user.hpp"

namespace {

HostUser host_user(const char* name, uid_t uid) { return {name, uid, uid, name, std::string("/home/") + name}; }

constexpr const char* kPasswd =
    "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\nsys:x:60514:60514::/:/bin/false\n";
constexpr const char* kGroup = "root:x:0:\nuser:x:1000:\nother:x:60515:\n";

}  // namespace

TEST(BindUser, PicksFreeIdsFromTheNspawnRange) {
    auto b =
        plan_bound_users({host_user("alice", 1500), host_user("bob", 1501)}, kPasswd, kGroup, IdRange{0x80000, 0x10000});
    ASSERT_EQ(b.size(), 2u);
    EXPECT_EQ(b[0].id, 60516u);  // 60514 is a user, 60515 a group of the tree
    EXPECT_EQ(b[1].id, 60517u);
    EXPECT_EQ(b[0].home_inside(), "/run/host/home/alice");
    EXPECT_EQ(bound_user_record(b[0]),
              "{\"userName\":\"alice\",\"uid\":60516,\"gid\":60516,\"homeDirectory\":\"/run/host/home/alice\","
              "\"service\":\"io.systemd.NSpawn\"}\n");
    EXPECT_EQ(bound_group_record(b[1]), "{\"groupName\":\"bob\",\"gid\":60517,\"service\":\"io.systemd.NSpawn\"}\n");
}

TEST(BindUser, RefusesWhatNspawnRefuses) {
    IdRange r{0x80000, 0x10000};
    auto err = [&](HostUser u, IdRange range) {
        try {
            plan_bound_users({u}, kPasswd, kGroup, range);
        } catch (const UsageError& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    EXPECT_NE(err(host_user("root", 0), r).find("root"), std::string::npos);
    EXPECT_NE(err(host_user("nobody", 65534), r).find("nobody"), std::string::npos);
    EXPECT_NE(err(host_user("user", 1000), r).find("already exists in the container"), std::string::npos);
    EXPECT_NE(err(host_user("inrange", 0x80005), r).find("inside the container's UID range"), std::string::npos);
    HostUser shared = host_user("carol", 1600);
    shared.group_name = "users";
    EXPECT_NE(err(shared, r).find("private group"), std::string::npos);
    EXPECT_NE(err(host_user("dave", 1700), IdRange{0x80000, 60000}).find("no free UID"), std::string::npos);
    EXPECT_THROW(plan_bound_users({host_user("eve", 1800), host_user("eve", 1800)}, "", "", r), UsageError);
}

TEST(UsernsIdMap, ExtraIdsAreCutOutOfTheRange) {
    EXPECT_EQ(id_map_text(IdRange{0x80000, 0x10000}, {}), "0 524288 65536\n");
    EXPECT_EQ(id_map_text(IdRange{0x80000, 0x10000}, {{60516, 1500}, {60514, 1000}}),
              "0 524288 60514\n60515 584803 1\n60517 584805 5019\n60514 1000 1\n60516 1500 1\n");
    EXPECT_EQ(id_map_text(IdRange{0x80000, 0x10000}, {{0, 7}}), "1 524289 65535\n0 7 1\n");
}

TEST(BindUser, LooksUpTheHostUserInTheHostsFiles) {
    const char* passwd = "root:x:0:0::/root:/bin/sh\nalice:x:1500:1600:Alice:/home/alice:/bin/bash\n1000:x:7:7::/:/bin/sh\n";
    const char* group = "root:x:0:\nalice:x:1600:\n";
    HostUser u = lookup_host_user("alice", passwd, group);
    EXPECT_EQ(u.uid, 1500u);
    EXPECT_EQ(u.gid, 1600u);
    EXPECT_EQ(u.group_name, "alice");
    EXPECT_EQ(u.home, "/home/alice");
    EXPECT_THROW(lookup_host_user("bob", passwd, group), UsageError);
    EXPECT_THROW(lookup_host_user("1500", passwd, group), UsageError);  // names only, never UIDs
    EXPECT_THROW(lookup_host_user("alice", passwd, "root:x:0:\n"), UsageError);
}
