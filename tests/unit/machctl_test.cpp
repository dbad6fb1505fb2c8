// machctl's command table, option parser, table formatting and JSON output (no bus).
#include <gtest/gtest.h>

#include <csignal>
#include <set>

#include "core/base/error.hpp"
#include "machctl/cli.hpp"
#include "machctl/output.hpp"

using namespace mk::machctl;

namespace {
Invocation p(std::vector<std::string> a) { return parse(a); }
}  // namespace

TEST(MachctlTable, VerbsAndOptionsAreUnique) {
    std::set<std::string_view> names;
    for (const auto& v : verbs()) {
        EXPECT_TRUE(names.insert(v.name).second) << v.name;
        EXPECT_FALSE(v.help.empty());
        EXPECT_TRUE(v.max_args < 0 || v.max_args >= v.min_args) << v.name;
    }
    std::set<std::string_view> longs;
    std::set<char> shorts;
    for (const auto& o : options()) {
        EXPECT_TRUE(longs.insert(o.long_name).second) << o.long_name;
        if (o.short_name) {
            EXPECT_TRUE(shorts.insert(o.short_name).second) << o.short_name;
        }
    }
    for (auto v : {"list",       "status",   "show",   "start",     "login",     "shell",       "enable",
                   "disable",    "poweroff", "stop",   "reboot",    "terminate", "kill",        "pause",
                   "resume",     "wait",     "bind",   "copy-to",   "copy-from", "list-images", "image-status",
                   "show-image", "clone",    "rename", "read-only", "remove",    "set-limit",   "clean"})
        EXPECT_NE(find_verb(v), nullptr) << v;
}

TEST(MachctlTable, HelpAndCompletionComeFromTheTable) {
    auto help = help_text();
    auto comp = bash_completion();
    for (const auto& v : verbs()) {
        EXPECT_NE(help.find("  " + std::string(v.name)), std::string::npos) << v.name;
        EXPECT_NE(comp.find(std::string(v.name)), std::string::npos) << v.name;
    }
    for (const auto& o : options()) {
        EXPECT_NE(help.find("--" + std::string(o.long_name)), std::string::npos) << o.long_name;
        EXPECT_NE(comp.find("--" + std::string(o.long_name)), std::string::npos) << o.long_name;
    }
    EXPECT_NE(comp.find("complete -F _machctl machctl"), std::string::npos);
}

TEST(MachctlParse, DefaultVerbIsList) {
    auto i = p({});
    EXPECT_EQ(i.verb, "list");
    EXPECT_TRUE(i.args.empty());
    EXPECT_EQ(p({"--no-legend"}).verb, "list");
}

TEST(MachctlParse, OptionsAnywhere) {
    auto i = p({"show", "-p", "Name", "foo", "--value", "-pLeader,Class", "--all"});
    EXPECT_EQ(i.verb, "show");
    EXPECT_EQ(i.args, std::vector<std::string>{"foo"});
    EXPECT_TRUE(i.opts.value);
    EXPECT_TRUE(i.opts.all);
    EXPECT_EQ(i.opts.properties, (std::vector<std::string>{"Name", "Leader", "Class"}));
}

TEST(MachctlParse, UserBus) {
    EXPECT_FALSE(p({"list"}).opts.bus_target.user);
    EXPECT_TRUE(p({"--user", "list"}).opts.bus_target.user);
    EXPECT_FALSE(p({"--user", "--system", "list"}).opts.bus_target.user);
    // -M after --user keeps the choice (open_system_bus refuses the pair with one line).
    auto i = p({"--user", "-M", "foo", "status", "foo"});
    EXPECT_TRUE(i.opts.bus_target.user);
    EXPECT_EQ(i.opts.bus_target.kind, mk::bus::BusTarget::Kind::Machine);
}

TEST(MachctlParse, OutputModes) {
    EXPECT_EQ(p({"-o", "json"}).opts.output, Output::json);
    EXPECT_EQ(p({"--output=json-pretty"}).opts.output, Output::json_pretty);
    EXPECT_EQ(p({"-ojson-seq"}).opts.output, Output::json_seq);
    EXPECT_EQ(p({"--output", "short"}).opts.output, Output::short_);
    EXPECT_THROW(p({"-o", "yaml"}), mk::core::UsageError);
}

TEST(MachctlParse, SignalsAndKillWhom) {
    EXPECT_EQ(p({"kill", "-s", "KILL", "x"}).opts.signal, SIGKILL);
    EXPECT_EQ(p({"kill", "--signal=SIGUSR1", "x"}).opts.signal, SIGUSR1);
    EXPECT_EQ(p({"kill", "-s9", "x"}).opts.signal, 9);
    EXPECT_EQ(p({"kill", "--kill-whom=leader", "x"}).opts.kill_whom, KillWhom::leader);
    EXPECT_THROW(p({"kill", "--kill-whom=some", "x"}), mk::core::UsageError);
    EXPECT_THROW(p({"kill", "-s", "NOPE", "x"}), mk::core::UsageError);
}

TEST(MachctlParse, ShellCommandKeepsItsOptions) {
    auto i = p({"-q", "shell", "--uid=user", "foo", "/bin/ls", "-l", "--all", "-q"});
    EXPECT_EQ(i.verb, "shell");
    EXPECT_EQ(i.opts.uid, "user");
    EXPECT_TRUE(i.opts.quiet);
    EXPECT_FALSE(i.opts.all);
    EXPECT_EQ(i.args, (std::vector<std::string>{"foo", "/bin/ls", "-l", "--all", "-q"}));
}

TEST(MachctlParse, SetenvAndTimeout) {
    auto i = p({"-E", "A=1", "--setenv=B=x y", "shell", "m"});
    EXPECT_EQ(i.opts.setenv, (std::vector<std::string>{"A=1", "B=x y"}));
    setenv("MK_TEST_VAR", "v", 1);
    EXPECT_EQ(p({"-E", "MK_TEST_VAR", "shell", "m"}).opts.setenv, std::vector<std::string>{"MK_TEST_VAR=v"});
    EXPECT_THROW(p({"-E", "=x"}), mk::core::UsageError);
    EXPECT_DOUBLE_EQ(*p({"--timeout=2.5", "wait", "x"}).opts.timeout, 2.5);
    EXPECT_DOUBLE_EQ(*p({"--timeout=500ms", "wait", "x"}).opts.timeout, 0.5);
    EXPECT_DOUBLE_EQ(*p({"--timeout", "2min", "wait", "x"}).opts.timeout, 120);
    EXPECT_THROW(p({"--timeout=soon", "wait", "x"}), mk::core::UsageError);
    EXPECT_EQ(p({"--max-addresses=all"}).opts.max_addresses, -1);
    EXPECT_EQ(p({"--max-addresses=0"}).opts.max_addresses, 0);
}

TEST(MachctlParse, Errors) {
    EXPECT_THROW(p({"frobnicate"}), mk::core::UsageError);
    EXPECT_THROW(p({"status"}), mk::core::UsageError);
    EXPECT_THROW(p({"bind", "a"}), mk::core::UsageError);
    EXPECT_THROW(p({"clone", "a", "b", "c"}), mk::core::UsageError);
    EXPECT_THROW(p({"--bogus"}), mk::core::UsageError);
    EXPECT_THROW(p({"-Z"}), mk::core::UsageError);
    EXPECT_THROW(p({"--no-legend=yes"}), mk::core::UsageError);
    EXPECT_THROW(p({"list", "-p"}), mk::core::UsageError);
    EXPECT_TRUE(p({"-h", "frobnicate"}).opts.help);
    // "--" ends options: a machine called "-x".
    EXPECT_EQ(p({"status", "--", "-x"}).args, std::vector<std::string>{"-x"});
}

TEST(MachctlOutput, TableLikeMachinectl) {
    auto t = format_table({"MACHINE", "CLASS", "SERVICE"}, {{"foo-bar", "container", "test"}, {"x", "vm", "-"}}, true);
    EXPECT_EQ(t, "MACHINE CLASS     SERVICE\nfoo-bar container test\nx       vm        -\n");
    auto n = format_table({"MACHINE", "CLASS"}, {{"a", "container"}}, false);
    EXPECT_EQ(n, "a container\n");
}

TEST(MachctlOutput, RateOfATransferStatusLine) {
    EXPECT_EQ(rate_of_status_line("Got 40% of http://h/x.tar. 3s left at 1.2M/s."), "1.2M/s");
    EXPECT_EQ(rate_of_status_line("Got 10.0K of http://h/x.tar. At 10.0K/s."), "10.0K/s");
    EXPECT_EQ(rate_of_status_line("Downloading x.tar."), "");
    EXPECT_EQ(rate_of_status_line("Got 40% of http://h/x.tar."), "");
}

TEST(MachctlOutput, Formatting) {
    EXPECT_EQ(format_timespan(144000), "144ms");
    EXPECT_EQ(format_timespan(3'000'000), "3s");
    EXPECT_EQ(format_timespan(62'000'000), "1min 2s");
    EXPECT_EQ(format_timespan(7'500'000'000ull), "2h 5min");
    EXPECT_EQ(format_bytes(512), "512B");
    EXPECT_EQ(format_bytes(1536), "1.5K");
    EXPECT_EQ(format_bytes(UINT64_MAX), "-");
    EXPECT_EQ(parse_bytes("1G"), 1ull << 30);
    EXPECT_EQ(parse_bytes("10"), 10u);
    EXPECT_EQ(parse_bytes("infinity"), UINT64_MAX);
    EXPECT_THROW(parse_bytes("1Q"), mk::core::UsageError);
    EXPECT_THROW(parse_bytes("99999999999E"), mk::core::UsageError);
    EXPECT_EQ(hex({0x01, 0xab}), "01ab");
    EXPECT_EQ(address_to_string({2, {192, 0, 2, 1}}), "192.0.2.1");
    EXPECT_EQ(address_to_string({10, {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}}), "fe80::1");
}

TEST(MachctlOutput, Properties) {
    using mk::bus::Property;
    EXPECT_EQ(property_text(Property{"Id", "ay", std::vector<uint8_t>{1, 2, 255}}), "0102ff");
    EXPECT_EQ(property_text(Property{"Leader", "u", uint64_t{42}}), "42");
    EXPECT_EQ(property_text(Property{"TimestampMonotonic", "t", uint64_t{5}}), "5");
    EXPECT_NE(property_text(Property{"Timestamp", "t", uint64_t{1'700'000'000'000'000}}).find("2023-11-14"),
              std::string::npos);
    EXPECT_EQ(property_text(Property{"NetworkInterfaces", "ai", std::vector<int64_t>{}}), "");
    EXPECT_EQ(property_text(Property{"NetworkInterfaces", "ai", std::vector<int64_t>{3, 4}}), "3 4");
    EXPECT_EQ(property_text(Property{"ReadOnly", "b", true}), "yes");
    EXPECT_EQ(property_text(Property{"Limit", "t", UINT64_MAX}), "infinity");
    EXPECT_EQ(property_text(Property{"PoolLimit", "t", UINT64_MAX}), "18446744073709551615");
    EXPECT_EQ(property_text(Property{"ModificationTimestamp", "t", uint64_t{0}}), "");
    EXPECT_EQ(property_json(Property{"Id", "ay", std::vector<uint8_t>{1, 2}}), "0102");
    EXPECT_EQ(property_json(Property{"Leader", "u", uint64_t{42}}), 42);
    EXPECT_TRUE(property_json(Property{"NetworkInterfaces", "ai", std::vector<int64_t>{}}).is_array());
}

TEST(MachctlOutput, JsonModesAreValid) {
    nlohmann::json rows = nlohmann::json::array({{{"machine", "a"}}, {{"machine", "b\xff"}}});
    auto compact = format_json(rows, Output::json);
    EXPECT_EQ(compact.back(), '\n');
    auto back = nlohmann::json::parse(compact);  // invalid UTF-8 was replaced, not passed through
    EXPECT_EQ(back[0]["machine"], "a");
    EXPECT_EQ(nlohmann::json::parse(format_json(rows, Output::json_pretty)), back);
    auto seq = format_json(rows, Output::json_seq);
    EXPECT_EQ(std::count(seq.begin(), seq.end(), '\x1e'), 2);
    EXPECT_EQ(format_json(nlohmann::json::array(), Output::json), "[]\n");
}

TEST(MachctlOutput, JsonIsSystemdsWriter) {
    // Byte for byte as machinectl 252 prints it: keys in column order, tabs and " : " when pretty,
    // a table as one json-seq record, control characters as \u00xx.
    json rows = json::array({{{"name", "a"}, {"type", "directory"}, {"ro", false}, {"usage", nullptr}, {"created", 5u}},
                             {{"name", "b\x01\"\n"}, {"type", "raw"}, {"ro", true}, {"usage", 7u}, {"created", 0u}}});
    EXPECT_EQ(format_json(rows, Output::json),
              "[{\"name\":\"a\",\"type\":\"directory\",\"ro\":false,\"usage\":null,\"created\":5},"
              "{\"name\":\"b\\u0001\\\"\\n\",\"type\":\"raw\",\"ro\":true,\"usage\":7,\"created\":0}]\n");
    EXPECT_EQ(format_json(json::array({{{"k", 1}, {"e", json::array()}}}), Output::json_pretty),
              "[\n\t{\n\t\t\"k\" : 1,\n\t\t\"e\" : []\n\t}\n]\n");
    EXPECT_EQ(format_json(rows, Output::json_seq, true).find('\x1e', 1), std::string::npos);
    EXPECT_EQ(format_json(json("caf\xc3\xa9 \xff"), Output::json), "\"caf\xc3\xa9 \xef\xbf\xbd\"\n");
}

TEST(MachctlOutput, TableCellsSpanLinesAndAlign) {
    auto t = format_table({"MACHINE", "ADDRESSES"}, {{"h", "10.0.0.1\nfd00::2\xe2\x80\xa6"}, {"x", "-"}}, true);
    EXPECT_EQ(t, "MACHINE ADDRESSES\nh       10.0.0.1\n        fd00::2\xe2\x80\xa6\nx       -\n");
    auto r = format_table({"ID", "PERCENT", "REMOTE"}, {{"1", "0%", "http://a/b"}}, true, TableStyle{{true, true}, true});
    EXPECT_EQ(r, "ID PERCENT REMOTE    \n 1      0% http://a/b\n");
}

// Each row's id is unique (main.cpp dispatches on it) and the paged verbs are machinectl's.
TEST(MachctlTable, VerbIdsAreUniqueAndPagingIsInTheRow) {
    std::set<Verb> ids;
    std::set<std::string_view> paged;
    for (const auto& v : verbs()) {
        EXPECT_TRUE(ids.insert(v.id).second) << v.name;
        if (v.paged) paged.insert(v.name);
    }
    EXPECT_EQ(ids.size(), static_cast<size_t>(Verb::cancel_transfer) + 1);
    EXPECT_EQ(paged, (std::set<std::string_view>{"list", "status", "show", "list-images", "image-status", "show-image",
                                                 "list-transfers"}));
}

// An option whose row lists values accepts exactly those, and its error names them from the row.
TEST(MachctlParse, OptionValuesComeFromTheRow) {
    for (const auto& o : options()) {
        if (o.values.empty()) continue;
        std::string values(o.values);
        size_t start = 0;
        while (start < values.size()) {
            size_t sp = values.find(' ', start);
            std::string v = values.substr(start, sp == std::string::npos ? std::string::npos : sp - start);
            EXPECT_NO_THROW(p({"--" + std::string(o.long_name) + "=" + v, "list"})) << o.long_name << "=" << v;
            if (sp == std::string::npos) break;
            start = sp + 1;
        }
        try {
            p({"--" + std::string(o.long_name) + "=bogus", "list"});
            ADD_FAILURE() << o.long_name << " accepted bogus";
        } catch (const mk::core::UsageError& e) {
            std::string listed = values;
            for (size_t i = listed.find(' '); i != std::string::npos; i = listed.find(' ', i + 2))
                listed.replace(i, 1, ", ");
            EXPECT_NE(std::string(e.what()).find("(" + listed + ")"), std::string::npos) << e.what();
        }
    }
    EXPECT_EQ(p({"-o", "cat"}).opts.output, Output::short_);  // machinectl's alias, not offered for completion
}
