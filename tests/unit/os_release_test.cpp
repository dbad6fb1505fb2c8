#include "core/base/os_release.hpp"

#include <gtest/gtest.h>

using namespace mk::core;

TEST(OsReleaseParser, QuotingAndEscapes) {
    auto m = parse_os_release(
        "A='single \"q\" \\n'\n"         // single quotes: everything literal
        "B=\"dq \\\"x\\\" \\\\ 'y'\"\n"  // double quotes: backslash takes the next character
        "C=un\\ quoted\\#x\n"            // unquoted backslash escapes
        "D=mixed\"a b\"'c d'e\n"         // adjacent quoted parts join, as in the shell
        "E=value # comment\n"
        "F=value#not-a-comment\n"
        "G=  spaced  \n"
        "H=\"unterminated\n"
        "I=\"kept  \"  \n"  // quoted blanks stay
        "J=trailing\\\n");
    EXPECT_EQ(m["A"], "single \"q\" \\n");
    EXPECT_EQ(m["B"], "dq \"x\" \\ 'y'");
    EXPECT_EQ(m["C"], "un quoted#x");
    EXPECT_EQ(m["D"], "mixeda bc de");
    EXPECT_EQ(m["E"], "value");
    EXPECT_EQ(m["F"], "value#not-a-comment");
    EXPECT_EQ(m["G"], "  spaced");
    EXPECT_EQ(m["H"], "unterminated");
    EXPECT_EQ(m["I"], "kept  ");
    EXPECT_EQ(m["J"], "trailing\\");
}

TEST(OsReleaseParser, LinesKeysAndOddInput) {
    auto m = parse_os_release(std::string_view("\tID=debian\r\nID_LIKE=x\n#ID=no\nID=sid\n=v\njunk\nNUL=a\0b\nLAST=1", 58));
    EXPECT_EQ(m["ID"], "sid");  // a later assignment wins
    EXPECT_EQ(m["ID_LIKE"], "x");
    EXPECT_EQ(m["NUL"], std::string("a\0b", 3));
    EXPECT_EQ(m["LAST"], "1");  // no final newline
    EXPECT_EQ(m.count(""), 0u);
    EXPECT_EQ(m.size(), 4u);
    EXPECT_TRUE(parse_os_release("").empty());
    EXPECT_TRUE(parse_os_release("\n\n# only comments\n").empty());
}
