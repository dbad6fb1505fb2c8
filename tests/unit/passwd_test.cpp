#include <gtest/gtest.h>

#include "core/base/passwd.hpp"

using namespace mk::core;

static const char* kPasswd =
    "root:x:0:0:root:/root:/bin/bash\n"
    "# comment\n"
    "0:x:1234:1234:a user named zero:/home/zero:/bin/sh\n"
    "user:x:1000:100::/home/user:\n"
    "broken line\n";

TEST(Passwd, LooksUpByName) {
    auto u = find_user(kPasswd, "user");
    ASSERT_TRUE(u);
    EXPECT_EQ(u->uid, 1000u);
    EXPECT_EQ(u->gid, 100u);
    EXPECT_EQ(u->home, "/home/user");
    EXPECT_EQ(u->shell, "/bin/sh");
}

TEST(Passwd, AllDigitSpecIsAUidNeverAName) {
    // T-18: a user literally named "0" must not be chosen for "0", and "0" is root by UID.
    auto u = find_user(kPasswd, "0");
    ASSERT_TRUE(u);
    EXPECT_EQ(u->uid, 0u);
    EXPECT_EQ(u->name, "root");
    auto n = find_user(kPasswd, "4242");
    ASSERT_TRUE(n);
    EXPECT_EQ(n->uid, 4242u);
    EXPECT_EQ(n->gid, 4242u);
    EXPECT_FALSE(find_user(kPasswd, "nobody"));
    EXPECT_FALSE(find_user(kPasswd, "4294967295"));
}

TEST(Passwd, SupplementaryGroups) {
    const char* group = "root:x:0:\nusers:x:100:user\nwheel:x:10:root,user\naudio:x:29:other\n";
    auto g = find_supplementary_groups(group, "user", 100);
    EXPECT_EQ(g, (std::vector<gid_t>{10}));
}

TEST(Passwd, ParseId) {
    EXPECT_EQ(parse_id("0").value(), 0u);
    EXPECT_FALSE(parse_id(""));
    EXPECT_FALSE(parse_id("-1"));
    EXPECT_FALSE(parse_id(" 1"));
    EXPECT_FALSE(parse_id("12345678901"));
}

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/kernel/userns.hpp"

TEST(UserNamespace, PickIsDeterministicAlignedAndInThePool) {
    for (const char* name : {"a", "debian", "x.y.z", ""}) {
        for (unsigned attempt = 0; attempt < 50; attempt++) {
            uint32_t b = pick_uid_base(name, attempt);
            EXPECT_EQ(b % 65536, 0u);
            EXPECT_GE(b, kPickFirst);
            EXPECT_LT(b, kPickLast);
            EXPECT_EQ(b, pick_uid_base(name, attempt));
        }
        EXPECT_NE(pick_uid_base(name, 0), pick_uid_base(name, 1));
    }
    EXPECT_NE(pick_uid_base("debian", 0), pick_uid_base("fedora", 0));
}

// Issue 19 B: which directories keep other users away from an idmapped tree.
TEST(UserNamespace, OnlyARootDirectoryWithoutSearchBitsKeepsOthersOut) {
    EXPECT_TRUE(keeps_out_other_users(0, 0, S_IFDIR | 0700));
    EXPECT_TRUE(keeps_out_other_users(0, 0, S_IFDIR | 0750));    // group root: root only
    EXPECT_TRUE(keeps_out_other_users(0, 100, S_IFDIR | 0740));  // group may read names, not enter
    EXPECT_FALSE(keeps_out_other_users(0, 100, S_IFDIR | 0750)) << "members of group 100 can enter";
    EXPECT_FALSE(keeps_out_other_users(0, 0, S_IFDIR | 0701));
    EXPECT_FALSE(keeps_out_other_users(0, 0, S_IFDIR | 0755));
    EXPECT_FALSE(keeps_out_other_users(0, 0, S_IFDIR | 01777));
    EXPECT_FALSE(keeps_out_other_users(1000, 1000, S_IFDIR | 0700)) << "its owner can enter (and chmod it)";
}

TEST(UserNamespace, ReachabilityLooksAtTheDirectoriesAboveTheTree) {
    if (geteuid() != 0) GTEST_SKIP() << "the directories must be root's";
    char tmpl[] = "/tmp/mk-reach-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    const std::string base = tmpl, parent = base + "/parent", tree = parent + "/tree";
    ASSERT_EQ(mkdir(parent.c_str(), 0755), 0);
    ASSERT_EQ(mkdir(tree.c_str(), 0755), 0);
    auto reachable = [&] {
        UniqueFd fd(open(tree.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        return reachable_by_other_users(fd.get());
    };
    ASSERT_EQ(chmod(base.c_str(), 0755), 0);
    EXPECT_TRUE(reachable());
    ASSERT_EQ(chmod(parent.c_str(), 0700), 0);
    EXPECT_FALSE(reachable());
    ASSERT_EQ(chmod(parent.c_str(), 0755), 0);
    ASSERT_EQ(chmod(base.c_str(), 0700), 0);  // any directory on the way will do
    EXPECT_FALSE(reachable());
    // The tree's own mode does not count: container root could chmod it.
    ASSERT_EQ(chmod(base.c_str(), 0755), 0);
    ASSERT_EQ(chmod(tree.c_str(), 0700), 0);
    EXPECT_TRUE(reachable());
    rmdir(tree.c_str());
    rmdir(parent.c_str());
    rmdir(base.c_str());
}
