#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/machine/exec.hpp"
#include "core/machine/machine.hpp"
#include "core/machine/machine_error.hpp"
#include "core/machine/registry.hpp"
#include "core/machine/state_file.hpp"

using namespace mk::core;
namespace fs = std::filesystem;

namespace {

Machine make(std::string name, pid_t leader, std::string unit = "") {
    Machine m;
    m.name = std::move(name);
    m.leader = leader;
    m.unit = std::move(unit);
    m.klass = MachineClass::container;
    return m;
}

std::string slurp(const fs::path& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

struct TempDir {
    fs::path path;
    TempDir() {
        char tmpl[] = "/tmp/mk-unit-XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~TempDir() { fs::remove_all(path); }
};

}  // namespace

TEST(MachineClass, StringTableRoundTrips) {
    for (auto c : {MachineClass::container, MachineClass::vm, MachineClass::host})
        EXPECT_EQ(machine_class_from_string(to_string(c)), c);
    EXPECT_EQ(machine_class_from_string(""), MachineClass::unknown);
    EXPECT_FALSE(machine_class_from_string("Container"));
    EXPECT_FALSE(machine_class_from_string("bogus"));
    EXPECT_EQ(to_string(MachineState::opening), "opening");
    EXPECT_EQ(to_string(MachineState::running), "running");
    EXPECT_EQ(to_string(MachineState::closing), "closing");
}

TEST(MachineId, HexRoundTrip) {
    MachineId id{};
    for (int i = 0; i < 16; i++) id[i] = static_cast<uint8_t>(i + 1);
    EXPECT_EQ(id128_to_string(id), "0102030405060708090a0b0c0d0e0f10");
    EXPECT_EQ(id128_from_string("0102030405060708090a0b0c0d0e0f10"), id);
    EXPECT_FALSE(id128_from_string("0102"));
    EXPECT_FALSE(id128_from_string("zz02030405060708090a0b0c0d0e0f10"));
}

TEST(Registry, AddFindRemove) {
    Registry r;
    r.add(make("a", 100, "machine-a.scope"));
    r.add(make("b", 200));
    EXPECT_EQ(r.find("a")->leader, 100);
    EXPECT_EQ(r.find_by_leader(200)->name, "b");
    EXPECT_EQ(r.find_by_unit("machine-a.scope")->name, "a");
    EXPECT_EQ(r.find("c"), nullptr);
    EXPECT_EQ(r.all().size(), 2u);
    auto m = r.remove("a");
    ASSERT_TRUE(m);
    EXPECT_EQ(r.find("a"), nullptr);
    EXPECT_EQ(r.find_by_leader(100), nullptr);
    EXPECT_EQ(r.find_by_unit("machine-a.scope"), nullptr);
    EXPECT_EQ(r.remove("a"), nullptr);
}

TEST(Registry, AllIsInNameOrderAcrossAddsAndRemoves) {
    Registry r;
    for (const char* n : {"m5", "m1", "m30", "m2", "m10"}) r.add(make(n, 0));
    r.add_unchecked(make(".host", 0));
    auto names = [&] {
        std::vector<std::string> v;
        for (const Machine* m : r.all()) v.push_back(m->name);
        return v;
    };
    EXPECT_EQ(names(), (std::vector<std::string>{".host", "m1", "m10", "m2", "m30", "m5"}));
    r.remove("m10");
    r.remove(".host");
    r.add(make("m0", 0));
    EXPECT_EQ(names(), (std::vector<std::string>{"m0", "m1", "m2", "m30", "m5"}));
    EXPECT_EQ(r.all().size(), r.size());
}

TEST(Registry, SameNameExactlyOneWins) {
    Registry r;
    r.add(make("x", 10));
    try {
        r.add(make("x", 11));
        FAIL() << "second add succeeded";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), MachineErrc::machine_exists);
    }
    EXPECT_EQ(r.find("x")->leader, 10);
    EXPECT_EQ(r.size(), 1u);
}

TEST(Registry, LeaderBelongsToOneMachine) {
    Registry r;
    r.add(make("x", 10));
    try {
        r.add(make("y", 10));
        FAIL();
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), std::errc::file_exists);  // as machined 252
    }
}

TEST(Registry, Bounded) {
    Registry r(3);
    for (int i = 0; i < 3; i++) r.add(make("m" + std::to_string(i), 100 + i));
    try {
        r.add(make("m9", 999));
        FAIL();
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), MachineErrc::too_many_machines);
    }
}

TEST(Registry, RejectsInvalidNames) {
    Registry r;
    for (const char* bad : {"", ".host", "foo_bar", "-foo", "a..b"}) {
        try {
            r.add(make(bad, 1000));
            FAIL() << bad;
        } catch (const std::system_error& e) {
            EXPECT_EQ(e.code(), MachineErrc::invalid_argument) << bad;
        }
    }
    EXPECT_THROW(r.add(make(std::string(65, 'y'), 1000)), std::system_error);
}

TEST(StateFile, MatchesMachined252Byte4Byte) {
    // Golden file written by systemd-machined 252 for RegisterMachineWithNetwork("foo-bar", 01..10,
    // "my svc", "container", leader, "/var/lib/x y", [3, 7]).
    std::string golden = slurp(fs::path(MK_UNIT_DATA_DIR) / "data-statefile-foo-bar.golden");
    Machine m = make("foo-bar", 6695, "mkref-t1.scope");
    for (int i = 0; i < 16; i++) m.id[i] = static_cast<uint8_t>(i + 1);
    m.service = "my svc";
    m.root_directory = "/var/lib/x y";
    m.realtime_usec = 1795458448866450;
    m.monotonic_usec = 253830551;
    m.netif = {3, 7};
    EXPECT_EQ(format_state_file(m), golden);

    auto back = parse_state_file("foo-bar", golden);
    ASSERT_TRUE(back);
    EXPECT_EQ(back->unit, "mkref-t1.scope");
    EXPECT_EQ(back->service, "my svc");
    EXPECT_EQ(back->root_directory, "/var/lib/x y");
    EXPECT_EQ(back->id, m.id);
    EXPECT_EQ(back->leader, 6695);
    EXPECT_EQ(back->klass, MachineClass::container);
    EXPECT_EQ(back->realtime_usec, m.realtime_usec);
    EXPECT_EQ(back->monotonic_usec, m.monotonic_usec);
    EXPECT_EQ(back->netif, (std::vector<int>{3, 7}));
}

TEST(StateFile, MinimalAndEscaped) {
    Machine m;
    m.name = "a";
    EXPECT_EQ(format_state_file(m), "# This is private data. Do not parse.\nNAME=a\n");
    m.root_directory = "/x\ny\\\"z\x01";
    auto text = format_state_file(m);
    EXPECT_NE(text.find("ROOT=/x\\ny\\\\\\\"z\\001\n"), std::string::npos) << text;
    EXPECT_EQ(parse_state_file("a", text)->root_directory, m.root_directory);
}

TEST(StateFile, RejectsForeignOrGarbage) {
    EXPECT_FALSE(parse_state_file("a", "NAME=b\n"));
    EXPECT_FALSE(parse_state_file("a", "garbage"));
    auto m = parse_state_file("a", "NAME=a\nLEADER=-5\nCLASS=bogus\nNETIF=1 x -3 4\nID=short\n");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->leader, 0);
    EXPECT_EQ(m->klass, MachineClass::unknown);
    EXPECT_EQ(m->netif, (std::vector<int>{1, 4}));
    EXPECT_FALSE(m->has_id());
}

TEST(StateDir, SaveLoadRemove) {
    TempDir t;
    auto dir = t.path / "machines";
    StateDir sd(dir.string());
    ASSERT_TRUE(fs::is_directory(dir));
    Machine m = make("foo-bar", 4242, "machine-foo\\x2dbar.scope");
    m.realtime_usec = 5;
    m.monotonic_usec = 6;
    ::umask(077);
    sd.save(m);
    ::umask(022);
    struct stat st {};
    ASSERT_EQ(::stat((dir / "foo-bar").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0644u);
    EXPECT_EQ(fs::read_symlink(dir / "unit:machine-foo\\x2dbar.scope"), "foo-bar");
    EXPECT_EQ(slurp(dir / "foo-bar"), format_state_file(m));

    // Stray files are skipped on load.
    std::ofstream(dir / ".#foo-bar1234") << "NAME=foo-bar\n";
    std::ofstream(dir / "bad_name") << "NAME=bad_name\n";
    auto all = sd.load_all();
    ASSERT_EQ(all.size(), 1u);
    EXPECT_EQ(all[0].name, "foo-bar");
    EXPECT_EQ(all[0].leader, 4242);
    EXPECT_EQ(all[0].unit, "machine-foo\\x2dbar.scope");

    // Readiness survives a reload through a hidden mark (the state file keeps machined's format).
    EXPECT_FALSE(all[0].ready);
    m.ready = true;
    sd.mark_ready(m);
    EXPECT_EQ(slurp(dir / "foo-bar"), format_state_file(m));
    all = sd.load_all();
    ASSERT_EQ(all.size(), 1u);
    EXPECT_TRUE(all[0].ready);
    m.ready = false;  // a new registration of the name starts unready
    sd.save(m);
    EXPECT_FALSE(sd.load_all()[0].ready);
    m.ready = true;
    sd.mark_ready(m);

    sd.save(m);  // saving again replaces file and link
    sd.remove(m);
    EXPECT_FALSE(fs::exists(dir / "foo-bar"));
    EXPECT_FALSE(fs::exists(dir / ".ready:foo-bar"));
    EXPECT_FALSE(fs::is_symlink(dir / "unit:machine-foo\\x2dbar.scope"));
    sd.remove(m);  // idempotent
}

#include "core/machine/inspect.hpp"

TEST(OsRelease, ParsesQuotesEscapesComments) {
    auto m = parse_os_release(
        "# comment\nID=debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME='single q'\n"
        "ESC=\"a\\\"b\"\n  INDENT=x\nEMPTY=\nnoequals\n=novalue\n");
    EXPECT_EQ(m["ID"], "debian");
    EXPECT_EQ(m["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
    EXPECT_EQ(m["NAME"], "single q");
    EXPECT_EQ(m["ESC"], "a\"b");
    EXPECT_EQ(m["INDENT"], "x");
    EXPECT_EQ(m["EMPTY"], "");
    EXPECT_EQ(m.count("noequals"), 0u);
    EXPECT_EQ(m.size(), 6u);
}

TEST(IdMap, Parses) {
    auto r = parse_id_map("         0     655360      65536\n     65536          0          1\ngarbage\n1 2 0\n");
    ASSERT_EQ(r.size(), 2u);
    EXPECT_EQ(r[0].inner, 0u);
    EXPECT_EQ(r[0].outer, 655360u);
    EXPECT_EQ(r[0].count, 65536u);
    EXPECT_EQ(r[1].inner, 65536u);
}

#include "core/machine/bind.hpp"

TEST(Paths, AbsoluteNormalized) {
    for (const char* ok : {"/", "/a", "/a/b", "/a.b/c-d", "/.hidden"}) EXPECT_TRUE(path_is_absolute_normalized(ok)) << ok;
    for (const char* bad : {"", "a", "a/b", "/a/", "//a", "/a//b", "/a/./b", "/a/../b", "/..", "/.", "./a"})
        EXPECT_FALSE(path_is_absolute_normalized(bad)) << bad;
    EXPECT_FALSE(path_is_absolute_normalized("/" + std::string(5000, 'a')));
}

// criu's freeze_cgroup: the cgroup2 group with cgroup.freeze first (unified or hybrid's unified/),
// else the v1 freezer group; nothing for a machine without a group.
TEST(MachineFreezerDir, PrefersCgroup2ThenV1FreezerElseNone) {
    fs::path root = fs::temp_directory_path() / ("mk-freezer-" + std::to_string(getpid()));
    fs::remove_all(root);
    Machine m = make("frz", 1);
    m.cgroup_path = "/machine.slice/machine-frz.scope";
    EXPECT_EQ(machine_freezer_dir(m, root.string()), "");
    fs::create_directories(root / "freezer/machine.slice/machine-frz.scope");
    std::ofstream(root / "freezer/machine.slice/machine-frz.scope/freezer.state") << "THAWED\n";
    EXPECT_EQ(machine_freezer_dir(m, root.string()), (root / "freezer/machine.slice/machine-frz.scope").string());
    fs::create_directories(root / "unified/machine.slice/machine-frz.scope");
    std::ofstream(root / "unified/machine.slice/machine-frz.scope/cgroup.freeze") << "0\n";
    EXPECT_EQ(machine_freezer_dir(m, root.string()), (root / "unified/machine.slice/machine-frz.scope").string());
    m.cgroup_path = "/";
    EXPECT_EQ(machine_freezer_dir(m, root.string()), "");
    fs::remove_all(root);
}
