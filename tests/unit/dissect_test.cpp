#include <gtest/gtest.h>

#include <string>

#include "core/kernel/dissect.hpp"

using namespace mk::core;

namespace {
void put64(std::string& s, size_t off, uint64_t v) {
    for (int i = 0; i < 8; i++) s[off + static_cast<size_t>(i)] = static_cast<char>(v >> (8 * i));
}
void put32(std::string& s, size_t off, uint32_t v) {
    for (int i = 0; i < 4; i++) s[off + static_cast<size_t>(i)] = static_cast<char>(v >> (8 * i));
}
// A GPT with the given type GUIDs (on-disk byte order) at LBAs 2048.., 1000 sectors each.
std::string gpt(std::initializer_list<std::string> types) {
    std::string s(64 * 1024, '\0');
    s.replace(512, 8, "EFI PART");
    put32(s, 512 + 12, 92);
    put64(s, 512 + 72, 2);
    put32(s, 512 + 80, 128);
    put32(s, 512 + 84, 128);
    size_t i = 0;
    for (const auto& t : types) {
        size_t e = 1024 + i * 128;
        s.replace(e, 16, t);
        put64(s, e + 32, 2048 + i * 1000);
        put64(s, e + 40, 2048 + i * 1000 + 999);
        i++;
    }
    return s;
}
// 4f68bce3-e8cd-4db1-96e7-fbcaf984b709 (root x86-64) and 933ac7e1-... (home), on-disk order.
const std::string kRoot("\xe3\xbc\x68\x4f\xcd\xe8\xb1\x4d\x96\xe7\xfb\xca\xf9\x84\xb7\x09", 16);
const std::string kHome("\xe1\xc7\x3a\x93\xb4\x2e\x13\x4f\xb8\x44\x0e\x14\xe2\xae\xf9\x15", 16);
const std::string kOther(16, '\x42');
}  // namespace

TEST(Dissect, GptFindsDiscoverablePartitions) {
    auto parts = parse_gpt(gpt({kOther, kHome, kRoot}), 64ull << 20);
    ASSERT_TRUE(parts);
    ASSERT_EQ(parts->size(), 2u);
    EXPECT_EQ((*parts)[0].mount_point, "/home");
    EXPECT_EQ((*parts)[0].offset, (2048u + 1000u) * 512u);
    EXPECT_EQ((*parts)[1].mount_point, "/");
    EXPECT_EQ((*parts)[1].size, 1000u * 512u);
}

TEST(Dissect, RejectsWhatIsNotAGptOrLiesAboutSizes) {
    EXPECT_FALSE(parse_gpt(std::string(4096, '\0'), 1 << 20));
    EXPECT_FALSE(parse_gpt("short", 1 << 20));
    auto small = parse_gpt(gpt({kRoot}), 1 << 20);  // the partition ends beyond a 1 MiB image
    ASSERT_TRUE(small);
    EXPECT_TRUE(small->empty());
    std::string bad = gpt({kRoot});
    put32(bad, 512 + 80, 100000);  // absurd entry count
    EXPECT_FALSE(parse_gpt(bad, 64ull << 20));
}

TEST(Dissect, FileSystemMagic) {
    std::string ext(2048, '\0');
    ext[1080] = '\x53';
    ext[1081] = '\xEF';
    EXPECT_EQ(detect_fs_type(ext), "ext4");
    EXPECT_EQ(detect_fs_type(std::string("XFSB") + std::string(100, '\0')), "xfs");
    EXPECT_EQ(detect_fs_type(std::string("hsqs") + std::string(100, '\0')), "squashfs");
    EXPECT_EQ(detect_fs_type(std::string(4096, '\0')), "");
    EXPECT_EQ(detect_fs_type(""), "");
}
