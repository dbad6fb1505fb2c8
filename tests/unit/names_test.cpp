#include <gtest/gtest.h>

#include <set>
#include <string>

#include "core/base/names.hpp"
#include "core/base/strings.hpp"
#include "core/spawn/option_values.hpp"

using namespace mk::core;

TEST(MachineName, AcceptsWhatSystemdAccepts) {
    for (const char* ok : {"foo", "a.b.c", "0abc", "Foo", "a-b", "x1.y2"}) EXPECT_TRUE(machine_name_is_valid(ok)) << ok;
    EXPECT_TRUE(machine_name_is_valid(std::string(64, 'x')));
}

TEST(MachineName, RejectsWhatSystemdRejects) {
    for (const char* bad :
         {"",        ".",      "..",  ".host", "foo_bar", "-foo",          "foo-",  "a..b", ".foo", "foo.",
          "foo/bar", "../etc", "a b", "a\nb",  "\x1b[2J", "f\xc3\xb6obar", "$(id)", "*",    "a.-b", "a-.b"})
        EXPECT_FALSE(machine_name_is_valid(bad)) << bad;
    EXPECT_FALSE(machine_name_is_valid(std::string(65, 'y')));
    EXPECT_FALSE(machine_name_is_valid(std::string("foo\0bar", 7)));
    EXPECT_FALSE(machine_name_is_valid("au-xph5-rvgrdsb5hcxc-47et3a5vvkrc-server-wyoz4elpdpe3.openstack.local"));
}

TEST(ImageName, Rules) {
    EXPECT_TRUE(image_name_is_valid("foo_bar"));
    EXPECT_TRUE(image_name_is_valid("f\xc3\xb6obar"));
    EXPECT_TRUE(image_name_is_valid(std::string(255, 'a')));
    EXPECT_FALSE(image_name_is_valid(std::string(256, 'a')));
    for (const char* bad : {"", ".", "..", ".#foo", "a/b", "a\nb", "\x7f", "\xc0\xaf", "\xed\xa0\x80"})
        EXPECT_FALSE(image_name_is_valid(bad)) << bad;
}

TEST(MachineNameFromPath, LikeNspawn) {
    EXPECT_EQ(machine_name_from_path("/var/lib/machines/debian-tree"), "debian-tree");
    EXPECT_EQ(machine_name_from_path("/x/foo.raw"), "foo");
    EXPECT_EQ(machine_name_from_path("/x/foo_bar/"), "foobar");
    EXPECT_EQ(machine_name_from_path("/x/-foo-"), "foo");
    EXPECT_EQ(machine_name_from_path("/x/___"), "");
    EXPECT_EQ(machine_name_from_path("/x/" + std::string(100, 'a')).size(), 64u);
}

TEST(UnitName, EscapesLikeSystemd) {
    EXPECT_EQ(machine_scope_name("foo"), "machine-foo.scope");
    EXPECT_EQ(machine_scope_name("foo-bar"), "machine-foo\\x2dbar.scope");
    EXPECT_EQ(unit_name_escape(".a"), "\\x2ea");
    EXPECT_EQ(unit_name_escape("a.b"), "a.b");
}

TEST(UnitName, DistinctNamesGiveDistinctScopes) {
    std::set<std::string> seen;
    for (const char* n : {"a-b", "a.b", "ab", "a--b", "a-b.c", "a.b-c", "A-b"})
        EXPECT_TRUE(seen.insert(machine_scope_name(n)).second) << n;
}

TEST(BusLabel, EscapeAndRoundTrip) {
    EXPECT_EQ(bus_label_escape(""), "_");
    EXPECT_EQ(bus_label_escape("foo"), "foo");
    EXPECT_EQ(bus_label_escape("foo-bar"), "foo_2dbar");
    EXPECT_EQ(bus_label_escape("0abc"), "_30abc");
    EXPECT_EQ(bus_label_escape("a0"), "a0");
    for (const char* s : {"", "foo", "foo-bar.baz", "0x", "_", "f\xc3\xb6"})
        EXPECT_EQ(bus_label_unescape(bus_label_escape(s)).value(), s);
    EXPECT_FALSE(bus_label_unescape("_zz").has_value());
    EXPECT_FALSE(bus_label_unescape("_2").has_value());
}

// Issue 19: one escaping for outside text in error texts, logs and the CLI.
TEST(Strings, ControlCharactersAreEscapedAndEscapingTwiceChangesNothing) {
    using mk::core::escape_control_chars;
    EXPECT_EQ(escape_control_chars("plain name-1.x"), "plain name-1.x");
    EXPECT_EQ(escape_control_chars("a\nb"), "a\\x0ab");
    EXPECT_EQ(escape_control_chars("\x1b]0;pwn\a"), "\\x1b]0;pwn\\x07");
    EXPECT_EQ(escape_control_chars(std::string_view("\0\x7f", 2)), "\\x00\\x7f");
    EXPECT_EQ(escape_control_chars("back\\slash \xc3\xa9"), "back\\slash \xc3\xa9") << "UTF-8 and backslashes stay";
    const std::string once = escape_control_chars("x\r\ny\t");
    EXPECT_EQ(escape_control_chars(once), once);
}

TEST(Strings, QuoteValueKeepsOneLine) {
    EXPECT_EQ(mk::core::quote_value("it's\n"), "'it\\'s\\x0a'");
    EXPECT_EQ(mk::core::quote_value(std::string(300, 'a')), "'" + std::string(200, 'a') + "...'");
}
