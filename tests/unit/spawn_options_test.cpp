#include <gtest/gtest.h>

#include <csignal>

#include "core/base/error.hpp"
#include "spawn/options.hpp"

using namespace mk;

namespace {
spawn::ParsedOptions parse(std::vector<std::string> args, bool tty = false) {
    args.insert(args.begin(), "spawn");
    return spawn::parse_options(args, tty, tty);
}
}  // namespace

TEST(SpawnOptions, DirectoryAndDerivedName) {
    auto r = parse({"-D", "/var/lib/machines/deb-12", "ls", "-l"});
    EXPECT_EQ(r.spec.directory, "/var/lib/machines/deb-12");
    EXPECT_EQ(r.spec.machine_name, "deb-12");
    EXPECT_EQ(r.spec.argv, (std::vector<std::string>{"ls", "-l"}));
    EXPECT_EQ(r.spec.start_mode, core::StartMode::Command);
}

TEST(SpawnOptions, StopsAtFirstNonOption) {
    auto r = parse({"-D", "/t", "sh", "-c", "--foo"});
    EXPECT_EQ(r.spec.argv, (std::vector<std::string>{"sh", "-c", "--foo"}));
}

TEST(SpawnOptions, BootCombinedShortOptions) {
    auto r = parse({"-bD", "/srv/debian", "systemd.unit=rescue.target"});
    EXPECT_EQ(r.spec.start_mode, core::StartMode::Boot);
    EXPECT_EQ(r.spec.kill_signal, SIGRTMIN + 3);
    EXPECT_EQ(r.spec.argv, (std::vector<std::string>{"systemd.unit=rescue.target"}));
}

TEST(SpawnOptions, ConsoleDefaultsLikeNspawn) {
    EXPECT_EQ(parse({"-D", "/t"}, true).spec.console, core::ConsoleMode::Interactive);
    EXPECT_EQ(parse({"-D", "/t"}, false).spec.console, core::ConsoleMode::ReadOnly);
    EXPECT_EQ(parse({"-D", "/t", "--console=autopipe"}, false).spec.console, core::ConsoleMode::Pipe);
    EXPECT_EQ(parse({"-D", "/t", "--console=autopipe"}, true).spec.console, core::ConsoleMode::Interactive);
    EXPECT_EQ(parse({"-D", "/t", "-P"}, true).spec.console, core::ConsoleMode::Pipe);
    EXPECT_EQ(parse({"-D", "/t", "--console=passive"}).spec.console, core::ConsoleMode::Passive);
}

TEST(SpawnOptions, BindSpecs) {
    auto r = parse({"-D", "/t", "--bind=/srv/a", "--bind-ro=/srv/b:/mnt/b:norbind", "--bind=/x//y/:/z/"});
    ASSERT_EQ(r.spec.binds.size(), 3u);
    EXPECT_EQ(r.spec.binds[0].source, "/srv/a");
    EXPECT_EQ(r.spec.binds[0].destination, "/srv/a");
    EXPECT_FALSE(r.spec.binds[0].read_only);
    EXPECT_TRUE(r.spec.binds[1].read_only);
    EXPECT_FALSE(r.spec.binds[1].recursive);
    EXPECT_EQ(r.spec.binds[1].destination, "/mnt/b");
    EXPECT_EQ(r.spec.binds[2].source, "/x/y");
    EXPECT_EQ(r.spec.binds[2].destination, "/z");
    for (const char* bad :
         {"--bind=/a:rel", "--bind=/a:/b:weird", "--bind=/a:/../etc", "--bind=:/b", "--bind=/a:/b:c:d", "--bind=/a:/"})
        EXPECT_THROW(parse({"-D", "/t", bad}), core::UsageError) << bad;
}

TEST(SpawnOptions, SignalsCapabilitiesAndMore) {
    auto r = parse({"-D", "/t", "--kill-signal=SIGRTMIN+4", "--capability=CAP_SYS_TIME,net_admin",
                    "--drop-capability=CAP_MKNOD", "--no-new-privileges=yes", "--uuid=0123456789ABCDEF0123456789abcdef",
                    "-E", "A=b", "--private-network", "--read-only", "--tmpfs=/scratch:mode=0700", "-M", "x.y"});
    EXPECT_EQ(r.spec.kill_signal, SIGRTMIN + 4);
    EXPECT_EQ(r.spec.capabilities_add, (uint64_t{1} << 25) | (uint64_t{1} << 12));
    EXPECT_EQ(r.spec.capabilities_drop, uint64_t{1} << 27);
    EXPECT_TRUE(r.spec.no_new_privileges);
    ASSERT_TRUE(r.spec.uuid.has_value());
    EXPECT_EQ((*r.spec.uuid)[0], 0x01);
    EXPECT_EQ((*r.spec.uuid)[15], 0xef);
    EXPECT_EQ(r.spec.setenv, (std::vector<std::string>{"A=b"}));
    EXPECT_TRUE(r.spec.private_network);
    EXPECT_TRUE(r.spec.read_only);
    ASSERT_EQ(r.spec.tmpfs.size(), 1u);
    EXPECT_EQ(r.spec.tmpfs[0].options, "mode=0700");
    EXPECT_EQ(r.spec.machine_name, "x.y");
    EXPECT_EQ(parse({"-D", "/t", "--kill-signal=TERM"}).spec.kill_signal, SIGTERM);
    EXPECT_EQ(parse({"-D", "/t", "--kill-signal=9"}).spec.kill_signal, 9);
}

TEST(SpawnOptions, RejectsBadInput) {
    for (std::vector<std::string> bad : {
             std::vector<std::string>{"-D", "/t", "-M", "foo_bar"},
             {"-D", "/t", "--hostname=-x"},
             {"-D", "/t", "--uuid=00000000000000000000000000000000"},
             {"-D", "/t", "--uuid=xyz"},
             {"-D", "/t", "--kill-signal=SIGNOPE"},
             {"-D", "/t", "--kill-signal=RTMIN+99"},
             {"-D", "/t", "--capability=CAP_NOPE"},
             {"-D", "/t", "--register=maybe"},
             {"-D", "/t", "--console=loud"},
             {"-D", "/t", "--resolv-conf=copy-everything"},
             {"-D", "/t", "-E", "1A=b"},
             {"-D", "/t", "--chdir=relative"},
             {"-D", "/t", "--slice=foo"},
             {"-D", "/t", "--property=novalue"},
             {"-D", "/t", "--no-such-option"},
             {"-D"},
             {"ls"},
             {"-D", "/___"},
             {"-M", "mk-no-such-image-7f3a"},  // -M alone: no such image in the machine search path
         })
        EXPECT_THROW(parse(bad), core::UsageError) << bad.back();
}

TEST(SpawnOptions, HelpAndVersion) {
    EXPECT_EQ(parse({"--help"}).action, spawn::Action::Help);
    EXPECT_EQ(parse({"--version"}).action, spawn::Action::Version);
}

TEST(SpawnOptions, LinkJournal) {
    EXPECT_EQ(parse({"-D", "/t"}).spec.link_journal, core::LinkJournalMode::Auto);  // nspawn's default
    EXPECT_EQ(parse({"-D", "/t", "--link-journal=try-guest"}).spec.link_journal, core::LinkJournalMode::TryGuest);
    EXPECT_EQ(parse({"-D", "/t", "--link-journal", "host"}).spec.link_journal, core::LinkJournalMode::Host);
    EXPECT_EQ(parse({"-D", "/t", "--link-journal=no"}).spec.link_journal, core::LinkJournalMode::No);
    EXPECT_THROW(parse({"-D", "/t", "--link-journal=sometimes"}), core::UsageError);
}
