// OCI layer stacks as a container root (mount_plan's plan_mstack_root / mstack_overlay_options):
// what a stack may point to, the layer order, and the overlay options.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/names.hpp"
#include "core/spawn/mount_plan.hpp"

using namespace mk::core;

namespace {
std::string layer(char c) { return "../.oci-sha256-" + std::string(64, c); }
}  // namespace

TEST(Mstack, PlanOrderAndOptions) {
    EXPECT_TRUE(is_mstack_path("/var/lib/machines/app.mstack"));
    EXPECT_TRUE(is_mstack_path("/var/lib/machines/app.mstack/"));
    EXPECT_FALSE(is_mstack_path("/var/lib/machines/.mstack"));
    EXPECT_FALSE(is_mstack_path("/var/lib/machines/app"));
    EXPECT_EQ(machine_name_from_path("/var/lib/machines/app.mstack"), "app");

    auto r = plan_mstack_root(
        "/pool/app.mstack", {{"layer@1", layer('b')}, {"rw", ""}, {"layer@0", layer('a')}, {"layer@2", layer('c')}}, false);
    ASSERT_EQ(r.lowers.size(), 3u);
    EXPECT_EQ(r.lowers[0], "/pool/.oci-sha256-" + std::string(64, 'c'));  // top-most first
    EXPECT_EQ(r.lowers[2], "/pool/.oci-sha256-" + std::string(64, 'a'));
    EXPECT_EQ(r.upper, "/pool/app.mstack/rw");
    EXPECT_EQ(r.work, overlay_workdir(r.upper));
    auto o = mstack_overlay_options(r);
    ASSERT_EQ(o.size(), 6u);
    EXPECT_EQ(o[0].first, "lowerdir+");
    EXPECT_EQ(o[3].first, "upperdir");
    EXPECT_EQ(o[5].first, "userxattr");

    auto e = plan_mstack_root("/pool/app.mstack", {{"layer@0", layer('a')}}, true);
    EXPECT_TRUE(e.upper.empty());
    EXPECT_EQ(mstack_overlay_options(e).size(), 2u);
    // Not writing to rw/: what it holds stays visible, as the top-most lower layer.
    auto w = plan_mstack_root("/pool/app.mstack", {{"layer@0", layer('a')}, {"rw", ""}}, true);
    ASSERT_EQ(w.lowers.size(), 2u);
    EXPECT_TRUE(w.rw_lower);
    EXPECT_EQ(w.lowers[0], "/pool/app.mstack/rw");
    EXPECT_TRUE(w.upper.empty());
    EXPECT_FALSE(e.rw_lower);
}

TEST(Mstack, Rejects) {
    using E = std::vector<std::pair<std::string, std::string>>;
    for (const E& bad : {E{}, E{{"layer@0", "/etc"}}, E{{"layer@0", "../../.oci-sha256-" + std::string(64, 'a')}},
                         E{{"layer@0", "../.oci-sha256-" + std::string(63, 'a') + "/"}},
                         E{{"layer@0", layer('a')}, {"layer@2", layer('b')}}, E{{"layer@01", layer('a')}},
                         E{{"layer@x", layer('a')}}, E{{"layer@1", layer('a')}}})
        EXPECT_THROW(plan_mstack_root("/pool/x.mstack", bad, false), UsageError);
    E many;
    for (size_t i = 0; i <= kMstackMaxLayers; i++) many.emplace_back("layer@" + std::to_string(i), layer('a'));
    EXPECT_THROW(plan_mstack_root("/pool/x.mstack", many, false), UsageError);
    EXPECT_THROW(plan_mstack_root("relative.mstack", {{"layer@0", layer('a')}}, false), UsageError);
}

TEST(Mstack, UpperFollowsTheRunMode) {
    SpawnSpec s;
    EXPECT_EQ(plan_mstack_upper(s, false), MstackUpper::Stack);
    EXPECT_EQ(plan_mstack_upper(s, true), MstackUpper::None);  // a read-only stack: no rw/
    s.read_only = true;
    EXPECT_EQ(plan_mstack_upper(s, false), MstackUpper::None);
    s.read_only = false;
    s.ephemeral = true;
    EXPECT_EQ(plan_mstack_upper(s, true), MstackUpper::Scratch);  // writes vanish: a tmpfs even then
    s.ephemeral = false;
    s.volatile_mode = VolatileMode::Overlay;
    EXPECT_EQ(plan_mstack_upper(s, false), MstackUpper::Scratch);
    s.volatile_mode = VolatileMode::State;
    EXPECT_EQ(plan_mstack_upper(s, false), MstackUpper::None);
    s.volatile_mode = VolatileMode::Yes;
    EXPECT_THROW(plan_mstack_upper(s, false), UsageError);
}

TEST(Mstack, FindMachineImageAsNspawnDoes) {
    char tmpl[] = "/tmp/mk-find-image-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    const std::string a = std::string(tmpl) + "/a", b = std::string(tmpl) + "/b";
    auto run = [](const std::string& cmd) { ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd; };
    run("mkdir -p " + a + "/tree " + a + "/app.mstack " + b + "/app " + b + "/disk.raw && touch " + a + "/disk.raw " + a +
        "/file");
    std::vector<std::string> dirs = {a, b};
    EXPECT_EQ(find_machine_image("tree", dirs)->path, a + "/tree");
    // The first directory that has the name wins, whatever the form.
    auto app = find_machine_image("app", dirs);
    ASSERT_TRUE(app);
    EXPECT_EQ(app->path, a + "/app.mstack");
    EXPECT_FALSE(app->is_raw);
    auto disk = find_machine_image("disk", dirs);
    ASSERT_TRUE(disk);
    EXPECT_EQ(disk->path, a + "/disk.raw");
    EXPECT_TRUE(disk->is_raw);
    // A plain file is no tree; a directory named .raw is no disk image.
    EXPECT_FALSE(find_machine_image("file", dirs));
    EXPECT_FALSE(find_machine_image("missing", dirs));
    EXPECT_FALSE(find_machine_image("disk", {b}));
    EXPECT_THROW(find_machine_image("../a", dirs), UsageError);
    EXPECT_THROW(find_machine_image(".hidden", dirs), UsageError);
    run("rm -rf " + std::string(tmpl));
}
