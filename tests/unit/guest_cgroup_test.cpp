// The guest's systemd version (read from its tree) and the cgroup layout that follows from it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/base/error.hpp"
#include "core/spawn/container_cgroup.hpp"
#include "core/spawn/guest_systemd.hpp"

using namespace mk::core;
namespace fs = std::filesystem;

namespace {

struct TempTree {
    fs::path root;
    TempTree() {
        char tmpl[] = "/tmp/mk-guest-XXXXXX";
        root = mkdtemp(tmpl);
    }
    ~TempTree() { fs::remove_all(root); }
    void file(const std::string& rel, const std::string& content = "") {
        fs::create_directories((root / rel).parent_path());
        std::ofstream(root / rel, std::ios::binary) << content;
    }
    std::optional<unsigned> version() const {
        UniqueFd fd(open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        return guest_systemd_version(fd.get());
    }
};

const char kHybridMountinfo[] =
    "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
    "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
    "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
const char kLegacyMountinfo[] =
    "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n";
const char kUnifiedMountinfo[] = "30 22 0:27 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n";

}  // namespace

TEST(GuestSystemd, SharedLibraryNames) {
    EXPECT_EQ(systemd_version_from_shared_lib_name("libsystemd-shared-262.so"), 262u);
    EXPECT_EQ(systemd_version_from_shared_lib_name("libsystemd-shared-252.so"), 252u);
    EXPECT_EQ(systemd_version_from_shared_lib_name("libsystemd-shared-257.5-1.so"), 257u);  // Arch's tag
    EXPECT_EQ(systemd_version_from_shared_lib_name("libsystemd-shared-258~rc2.so"), 258u);
    EXPECT_FALSE(systemd_version_from_shared_lib_name("libsystemd-shared-262.so.1"));
    EXPECT_FALSE(systemd_version_from_shared_lib_name("libsystemd-shared-.so"));
    EXPECT_FALSE(systemd_version_from_shared_lib_name("libsystemd-shared-abc.so"));
    EXPECT_FALSE(systemd_version_from_shared_lib_name("libsystemd-shared-262abc.so"));
    EXPECT_FALSE(systemd_version_from_shared_lib_name("libsystemd-shared-0.so"));
    EXPECT_FALSE(systemd_version_from_shared_lib_name("libsystemd-shared-99999999.so"));
    EXPECT_FALSE(systemd_version_from_shared_lib_name("libsystemd-shared-262 x.so"));
    EXPECT_FALSE(systemd_version_from_shared_lib_name("libsystemd-core-262.so"));
    EXPECT_FALSE(systemd_version_from_shared_lib_name("libsystemd-shared-262"));
}

TEST(GuestSystemd, BannerInBinary) {
    std::string bin = std::string(
                          "\x7f"
                          "ELF\0\0junk",
                          10) +
                      "systemd 262.1-1 running in %ssystem mode (%s)" + std::string(3, '\0');
    EXPECT_EQ(systemd_version_from_banner(bin), 262u);
    EXPECT_EQ(systemd_version_from_banner("systemd 219 running in %ssystem mode. (+PAM"), 219u);
    EXPECT_EQ(systemd_version_from_banner("systemd 252.39-1~deb12u2 running in %suser mode"), 252u);
    // Not banners: no digits, no " running in ", a space in the version, an endless version.
    EXPECT_FALSE(systemd_version_from_banner("systemd abc running in "));
    EXPECT_FALSE(systemd_version_from_banner("systemd 262 is running in "));
    EXPECT_FALSE(systemd_version_from_banner("systemd 262.1-1 running"));
    EXPECT_FALSE(systemd_version_from_banner("systemd 2" + std::string(80, 'a') + " running in "));
    EXPECT_FALSE(systemd_version_from_banner(""));
    // The first of several; a false start before a real one.
    EXPECT_EQ(systemd_version_from_banner("systemd x systemd 250 running in systemd 260 running in "), 250u);
}

TEST(GuestSystemd, BannerAcrossPieces) {
    std::string text = std::string(5000, 'x') + "systemd 262.1-1 running in %ssystem mode" + std::string(100, 'y');
    for (size_t cut = 4990; cut < 5060; cut++) {
        SystemdBannerScanner s;
        s.feed(std::string_view(text).substr(0, cut));
        s.feed(std::string_view(text).substr(cut));
        EXPECT_EQ(s.version(), 262u) << cut;
    }
    // Byte by byte.
    SystemdBannerScanner s;
    for (char c : text) s.feed(std::string_view(&c, 1));
    EXPECT_EQ(s.version(), 262u);
}

TEST(GuestSystemd, DebianMultiarchTree) {
    TempTree t;
    t.file("usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-262.so");
    t.file("usr/lib/x86_64-linux-gnu/systemd/libsystemd-core-262.so");
    fs::create_symlink("usr/lib", t.root / "lib");
    EXPECT_EQ(t.version(), 262u);
}

TEST(GuestSystemd, UsrPartitionOfAnImage) {
    // A disk image with /usr on its own partition: that partition's root is the tree's /usr.
    TempTree usr;
    usr.file("lib/x86_64-linux-gnu/systemd/libsystemd-shared-259.so");
    EXPECT_EQ(usr.version(), 259u);
    TempTree usr2;
    usr2.file("lib/systemd/systemd", "systemd 258.1 running in %ssystem mode");
    EXPECT_EQ(usr2.version(), 258u);
}

TEST(GuestSystemd, ClassicPathsAndHighestWins) {
    TempTree t;
    t.file("usr/lib/systemd/libsystemd-shared-249.so");
    t.file("lib/systemd/libsystemd-shared-255.so");
    t.file("usr/lib64/systemd/libsystemd-shared-251.so");
    EXPECT_EQ(t.version(), 255u);
}

TEST(GuestSystemd, SymlinksStayInsideTheTree) {
    // An absolute symlink in the tree means the tree's own path, never the host's.
    TempTree outside;
    outside.file("systemd/libsystemd-shared-999.so");
    outside.file("systemd/systemd", "systemd 999 running in x");
    TempTree t;
    fs::create_directories(t.root / "usr/lib");
    fs::create_symlink(outside.root / "systemd", t.root / "usr/lib/systemd");
    fs::create_symlink("../../../../../../../../" + (outside.root / "systemd").string(), t.root / "lib");
    EXPECT_FALSE(t.version());
    // The same link target inside the tree is found.
    t.file((outside.root / "systemd/libsystemd-shared-254.so").relative_path().string());
    EXPECT_EQ(t.version(), 254u);
}

TEST(GuestSystemd, BinaryFallback) {
    TempTree t;
    t.file("usr/lib/systemd/systemd", std::string(3u << 20, 'z') + "systemd 257.9 running in %ssystem mode");
    EXPECT_EQ(t.version(), 257u);
    // The library wins over the binary.
    t.file("usr/lib/systemd/libsystemd-shared-258.so");
    EXPECT_EQ(t.version(), 258u);
}

TEST(GuestSystemd, NoSystemdAndHostileFiles) {
    TempTree t;
    EXPECT_FALSE(t.version());
    // A FIFO where the binary should be must not block: only regular files are read.
    fs::create_directories(t.root / "usr/lib/systemd");
    ASSERT_EQ(mkfifo((t.root / "usr/lib/systemd/systemd").c_str(), 0644), 0);
    EXPECT_FALSE(t.version());
    // A directory named like the library still counts by name only; a busybox init does not.
    t.file("lib/systemd/systemd", "BusyBox v1.35.0 init");
    EXPECT_FALSE(t.version());
}

TEST(CgroupLayout, ParsesHostLayouts) {
    CgroupLayout h = parse_cgroup_layout(kHybridMountinfo);
    EXPECT_EQ(h.mode, CgroupMode::Hybrid);
    EXPECT_EQ(h.unified_dir, "/unified");
    ASSERT_EQ(h.v1.size(), 3u);
    EXPECT_EQ(h.v1[0].name, "cpu,cpuacct");
    EXPECT_EQ(h.v1[2].options, "name=systemd");
    EXPECT_EQ(parse_cgroup_layout(kLegacyMountinfo).mode, CgroupMode::Legacy);
    EXPECT_EQ(parse_cgroup_layout(kUnifiedMountinfo).mode, CgroupMode::Unified);
    EXPECT_EQ(parse_cgroup_layout("").mode, CgroupMode::None);
}

TEST(GuestCgroupPlan, SystemdWithoutV1GetsCgroup2Everywhere) {
    for (unsigned v : {258u, 262u}) {
        auto hy = plan_guest_cgroups(parse_cgroup_layout(kHybridMountinfo), v, std::nullopt);
        EXPECT_EQ(hy.layout.mode, CgroupMode::Unified);
        EXPECT_EQ(hy.layout.unified_dir, "/unified");  // a subtree of the host's cgroup2
        EXPECT_TRUE(hy.layout.v1.empty());
        EXPECT_FALSE(hy.own_cgroup2);
        EXPECT_TRUE(hy.v1_host);

        auto leg = plan_guest_cgroups(parse_cgroup_layout(kLegacyMountinfo), v, std::nullopt);
        EXPECT_EQ(leg.layout.mode, CgroupMode::Unified);
        EXPECT_TRUE(leg.own_cgroup2);  // none on the host: spawn mounts one
        EXPECT_TRUE(leg.layout.v1.empty());

        auto un = plan_guest_cgroups(parse_cgroup_layout(kUnifiedMountinfo), v, std::nullopt);
        EXPECT_EQ(un.layout.mode, CgroupMode::Unified);
        EXPECT_EQ(un.layout.unified_dir, "");
        EXPECT_FALSE(un.own_cgroup2);
        EXPECT_FALSE(un.v1_host);

        auto none = plan_guest_cgroups(CgroupLayout{}, v, std::nullopt);
        EXPECT_EQ(none.layout.mode, CgroupMode::Unified);
        EXPECT_TRUE(none.own_cgroup2);
    }
}

TEST(GuestCgroupPlan, SystemdWithV1Support) {
    CgroupLayout hybrid = parse_cgroup_layout(kHybridMountinfo);
    // 233..257 on a hybrid host: the hybrid layout nspawn 252 gives (measured, docs/architecture.md).
    for (unsigned v : {233u, 252u, 257u}) {
        auto p = plan_guest_cgroups(hybrid, v, std::nullopt);
        EXPECT_EQ(p.layout.mode, CgroupMode::Hybrid) << v;
        EXPECT_EQ(p.layout.unified_dir, "/unified");
        EXPECT_EQ(p.layout.v1.size(), 3u);
        EXPECT_FALSE(p.v1_host);
    }
    // The override gives them the cgroup2 view.
    EXPECT_EQ(plan_guest_cgroups(hybrid, 252, true).layout.mode, CgroupMode::Unified);
    // Before 233 systemd knew no hybrid layout: nspawn's legacy view, v1 only.
    auto old = plan_guest_cgroups(hybrid, 232, std::nullopt);
    EXPECT_EQ(old.layout.mode, CgroupMode::Legacy);
    EXPECT_EQ(old.layout.v1.size(), 3u);
    EXPECT_EQ(old.layout.unified_dir, "");
    // On a v1 host such guests keep the host's layout (the controllers are there).
    auto leg = plan_guest_cgroups(parse_cgroup_layout(kLegacyMountinfo), 252, std::nullopt);
    EXPECT_EQ(leg.layout.mode, CgroupMode::Legacy);
    EXPECT_FALSE(leg.own_cgroup2);
    // An init that is not a systemd we recognise (busybox): the host's layout, as before.
    EXPECT_EQ(plan_guest_cgroups(hybrid, std::nullopt, std::nullopt).layout.mode, CgroupMode::Hybrid);
}

TEST(GuestCgroupPlan, OverrideBothWays) {
    CgroupLayout hybrid = parse_cgroup_layout(kHybridMountinfo);
    CgroupLayout legacy = parse_cgroup_layout(kLegacyMountinfo);
    auto on = plan_guest_cgroups(hybrid, std::nullopt, true);
    EXPECT_EQ(on.layout.mode, CgroupMode::Unified);
    auto on_legacy = plan_guest_cgroups(legacy, 240, true);
    EXPECT_EQ(on_legacy.layout.mode, CgroupMode::Unified);
    EXPECT_TRUE(on_legacy.own_cgroup2);
    auto off = plan_guest_cgroups(hybrid, 252, false);
    EXPECT_EQ(off.layout.mode, CgroupMode::Hybrid);
    EXPECT_EQ(off.layout.v1.size(), 3u);
    EXPECT_FALSE(off.v1_host);
    // A guest that cannot boot on v1: refused in one line that says what to do.
    try {
        plan_guest_cgroups(hybrid, 262, false);
        FAIL() << "no error";
    } catch (const UsageError& e) {
        std::string m = e.what();
        EXPECT_NE(m.find("systemd 262"), std::string::npos) << m;
        EXPECT_NE(m.find("unset"), std::string::npos) << m;
        EXPECT_EQ(m.find('\n'), std::string::npos);
    }
    // A unified host has nothing else to give: =0 changes nothing there.
    EXPECT_EQ(plan_guest_cgroups(parse_cgroup_layout(kUnifiedMountinfo), 262, false).layout.mode, CgroupMode::Unified);
}

TEST(GuestCgroupPlan, OverrideVariable) {
    EXPECT_FALSE(parse_unified_override(nullptr, "X"));
    EXPECT_FALSE(parse_unified_override("", "X"));
    EXPECT_EQ(parse_unified_override("1", "X"), true);
    EXPECT_EQ(parse_unified_override("yes", "X"), true);
    EXPECT_EQ(parse_unified_override("0", "X"), false);
    EXPECT_EQ(parse_unified_override("off", "X"), false);
    EXPECT_THROW(parse_unified_override("maybe", "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"), UsageError);
}

TEST(GuestCgroupPlan, NoControllersNoticeIsOneLine) {
    std::string a = no_controllers_notice("hugetlb\n");
    EXPECT_NE(a.find("only hugetlb"), std::string::npos) << a;
    std::string b = no_controllers_notice("");
    EXPECT_NE(b.find("none"), std::string::npos) << b;
    EXPECT_EQ(a.find('\n'), std::string::npos);
}

TEST(ContainerCgroup, OwnCgroup2MountTakesTheGroup) {
    // A temp dir stands in for both the host's /sys/fs/cgroup and spawn's own cgroup2 mount.
    TempTree host, own;
    fs::create_directories(host.root / "systemd");
    CgroupLayout view;
    view.mode = CgroupMode::Unified;
    {
        ContainerCgroup cg(view, "/machine.slice/machine-x.scope", host.root.string(),
                           UniqueFd(open(own.root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)));
        EXPECT_TRUE(fs::is_directory(own.root / "machine.slice/machine-x.scope"));
        EXPECT_GE(cg.unified_fd(), 0);
        EXPECT_FALSE(fs::exists(host.root / "machine.slice"));
        EXPECT_FALSE(fs::exists(host.root / "systemd/machine.slice"));
    }
    EXPECT_FALSE(fs::exists(own.root / "machine.slice")) << "removed with the object";
}
