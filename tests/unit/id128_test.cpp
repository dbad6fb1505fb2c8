#include "core/base/id128.hpp"

#include <gtest/gtest.h>

using namespace mk::core;

TEST(Id128, BothFormsRoundTrip) {
    const Id128 id{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
    EXPECT_EQ(id128_to_string(id), "0123456789abcdef0123456789abcdef");
    EXPECT_EQ(id128_to_string(id, Id128Format::Uuid), "01234567-89ab-cdef-0123-456789abcdef");
    EXPECT_EQ(id128_from_string("0123456789abcdef0123456789abcdef"), id);
    EXPECT_EQ(id128_from_string("0123456789ABCDEF0123456789abcdef"), id);
    EXPECT_EQ(id128_from_string("01234567-89ab-cdef-0123-456789abcdef"), id);
    EXPECT_EQ(id128_from_string(std::string(32, '0')), Id128{});
    EXPECT_TRUE(id128_is_null(Id128{}));
    EXPECT_FALSE(id128_is_null(id));
}

TEST(Id128, RejectsEverythingElse) {
    for (const char* bad :
         {"", "0123", "0123456789abcdef0123456789abcde", "0123456789abcdef0123456789abcdef0",
          "0123456789abcdef0123456789abcdeg", "0123456789abcdef0123456789abcde\n", " 123456789abcdef0123456789abcdef",
          "01234567-89ab-cdef-0123-456789abcdeX", "0123456789-ab-cdef-0123-456789abcde",
          "01234567089ab0cdef001230456789abcdef", "+1234567-89ab-cdef-0123-456789abcdef"})
        EXPECT_FALSE(id128_from_string(bad)) << bad;
}

TEST(Id128, MachineIdFile) {
    const Id128 id{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    EXPECT_EQ(id128_from_machine_id_file("0102030405060708090a0b0c0d0e0f10\n"), id);
    EXPECT_EQ(id128_from_machine_id_file("0102030405060708090A0B0C0D0E0F10"), id);  // as id128_read()
    for (const char* none : {"", "\n", "uninitialized\n", "00000000000000000000000000000000\n",
                             "01020304-0506-0708-090a-0b0c0d0e0f10\n", " 0102030405060708090a0b0c0d0e0f10"})
        EXPECT_FALSE(id128_from_machine_id_file(none)) << none;
}

TEST(Id128, RandomUuidIsVersion4) {
    Id128 a = id128_random_uuid(), b = id128_random_uuid();
    EXPECT_NE(a, b);
    EXPECT_EQ(a[6] >> 4, 4);
    EXPECT_EQ(a[8] >> 6, 2);
}
