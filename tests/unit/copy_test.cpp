#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/base/unique_fd.hpp"
#include "core/machine/copy.hpp"

using namespace mk::core;
namespace fs = std::filesystem;

namespace {

struct Dirs {
    fs::path root, src, dst;
    UniqueFd src_fd, dst_fd;
    Dirs() {
        char tmpl[] = "/tmp/mk-copy-XXXXXX";
        root = mkdtemp(tmpl);
        src = root / "src";
        dst = root / "dst";
        fs::create_directories(src);
        fs::create_directories(dst);
        src_fd = UniqueFd(::open(src.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        dst_fd = UniqueFd(::open(dst.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    }
    ~Dirs() { fs::remove_all(root); }
    int copy(const char* from, const char* to, CopyOptions o = {}) {
        return copy_tree_at(src_fd.get(), from, dst_fd.get(), to, o);
    }
};

std::string slurp(const fs::path& p) {
    std::ifstream f(p);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

TEST(CopyTree, CopiesTreeKeepsSymlinksAsSymlinks) {
    Dirs d;
    fs::create_directories(d.src / "t/sub");
    std::ofstream(d.src / "t/sub/f") << "data";
    fs::permissions(d.src / "t/sub/f", fs::perms(0640));
    fs::create_symlink("/etc/shadow", d.src / "t/evil");
    fs::create_symlink("../../..", d.src / "t/up");
    ::mkfifo((d.src / "t/fifo").c_str(), 0600);
    ASSERT_EQ(d.copy("t", "t"), 0);
    EXPECT_EQ(slurp(d.dst / "t/sub/f"), "data");
    EXPECT_EQ(fs::status(d.dst / "t/sub/f").permissions(), fs::perms(0640));
    EXPECT_TRUE(fs::is_symlink(d.dst / "t/evil"));
    EXPECT_EQ(fs::read_symlink(d.dst / "t/evil"), "/etc/shadow");  // copied, never followed
    EXPECT_TRUE(fs::is_symlink(d.dst / "t/up"));
    EXPECT_TRUE(fs::is_fifo(d.dst / "t/fifo"));  // recreated without opening (no blocking)
}

TEST(CopyTree, ExistingFileNeedsReplaceDirectoriesMerge) {
    Dirs d;
    std::ofstream(d.src / "f") << "new";
    std::ofstream(d.dst / "f") << "old";
    EXPECT_EQ(d.copy("f", "f"), EEXIST);
    EXPECT_EQ(slurp(d.dst / "f"), "old");
    CopyOptions replace;
    replace.replace = true;
    EXPECT_EQ(d.copy("f", "f", replace), 0);
    EXPECT_EQ(slurp(d.dst / "f"), "new");

    fs::create_directories(d.src / "m/a");
    fs::create_directories(d.dst / "m/b");
    EXPECT_EQ(d.copy("m", "m"), 0);
    EXPECT_TRUE(fs::is_directory(d.dst / "m/a"));
    EXPECT_TRUE(fs::is_directory(d.dst / "m/b"));
}

TEST(CopyTree, DestinationSymlinkIsNotFollowed) {
    Dirs d;
    std::ofstream(d.src / "f") << "x";
    fs::create_directories(d.root / "outside");
    fs::create_symlink(d.root / "outside/f", d.dst / "f");
    EXPECT_EQ(d.copy("f", "f"), EEXIST);  // O_EXCL|O_NOFOLLOW: not written through the link
    EXPECT_FALSE(fs::exists(d.root / "outside/f"));
    fs::create_directories(d.src / "dir");
    std::ofstream(d.src / "dir/g") << "y";
    fs::create_symlink(d.root / "outside", d.dst / "dir");
    EXPECT_NE(d.copy("dir", "dir"), 0);  // a symlink where a directory should be: refused
    EXPECT_FALSE(fs::exists(d.root / "outside/g"));
}

TEST(CopyTree, DepthIsBounded) {
    Dirs d;
    fs::path p = d.src / "deep";
    for (int i = 0; i < kCopyDepthMax + 5; i++) p /= "d";
    fs::create_directories(p);
    EXPECT_EQ(d.copy("deep", "deep"), ELOOP);
}

TEST(CopyTree, UidShift) {
    if (geteuid() != 0) GTEST_SKIP() << "chown needs root";
    Dirs d;
    std::ofstream(d.src / "f") << "x";
    CopyOptions o;
    o.uid_delta = 655360;
    ASSERT_EQ(d.copy("f", "f", o), 0);
    struct stat st {};
    ASSERT_EQ(::stat((d.dst / "f").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 655360u);
    EXPECT_EQ(st.st_gid, 655360u);
}
