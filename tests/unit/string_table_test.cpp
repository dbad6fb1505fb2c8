#include "core/base/string_table.hpp"

#include <gtest/gtest.h>

using namespace mk::core;

namespace {

enum class Color { Red, Green, Blue };
constexpr std::array<EnumName<Color>, 3> kColorNames{{{Color::Red, "red"}, {Color::Green, "green"}, {Color::Blue, "blue"}}};

// Usable in constant expressions, so a table can be checked at compile time.
static_assert(enum_to_string(kColorNames, Color::Green) == "green");
static_assert(*enum_from_string(kColorNames, "blue") == Color::Blue);

}  // namespace

TEST(StringTable, BothDirectionsAndFallback) {
    for (auto c : {Color::Red, Color::Green, Color::Blue})
        EXPECT_EQ(enum_from_string(kColorNames, enum_to_string(kColorNames, c)), c);
    EXPECT_EQ(enum_to_string(kColorNames, static_cast<Color>(42)), "invalid");
    EXPECT_EQ(enum_to_string(kColorNames, static_cast<Color>(42), "?"), "?");
    EXPECT_FALSE(enum_from_string(kColorNames, "Red"));  // exact match only
    EXPECT_FALSE(enum_from_string(kColorNames, ""));
    EXPECT_FALSE(enum_from_string(kColorNames, std::string_view("red\0", 4)));
    EXPECT_EQ(enum_names(kColorNames), "red, green, blue");
    EXPECT_EQ(enum_names(kColorNames, "|"), "red|green|blue");
}
