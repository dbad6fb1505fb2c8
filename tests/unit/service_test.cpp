#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/machine/machine_error.hpp"
#include "core/machine/service.hpp"

using namespace mk::core;
namespace fs = std::filesystem;

namespace {

struct FakeBackend : ScopeBackend {
    std::vector<std::string> started, removed;
    std::vector<std::pair<std::string, int>> kills;
    std::string job;  // non-empty: behave like systemd (start completes later)
    ScopeStart start_scope(const std::string& unit, pid_t, const ScopeProperties& p) override {
        started.push_back(unit);
        return {*slice_to_path(p.slice) + "/" + unit, job};
    }
    size_t kill(const std::string& path, int sig) override {
        kills.emplace_back(path, sig);
        return 1;
    }
    void remove_scope(const std::string& path) override { removed.push_back(path); }
    bool exists(const std::string&) override { return true; }
    std::vector<pid_t> pids(const std::string&) override { return {}; }
    std::vector<std::string> dirs(const std::string&, const std::string&) override { return {}; }
};

struct RecordingListener : MachineService::Listener {
    std::vector<std::string> added, removed;
    void machine_added(Machine& m) override { added.push_back(m.name); }
    void machine_removed(const Machine& m) override { removed.push_back(m.name); }
};

std::string slurp_file(const fs::path& p) {
    std::ifstream f(p);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

struct Child {
    pid_t pid;
    Child() {
        pid = fork();
        if (pid == 0) {
            pause();
            _exit(0);
        }
    }
    ~Child() {
        ::kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
    }
};

struct Fixture : ::testing::Test {
    fs::path dir;
    std::unique_ptr<StateDir> state;
    FakeBackend backend;
    RecordingListener listener;
    std::unique_ptr<MachineService> svc;
    void SetUp() override {
        char tmpl[] = "/tmp/mk-svc-XXXXXX";
        dir = mkdtemp(tmpl);
        state = std::make_unique<StateDir>((dir / "machines").string());
        svc = std::make_unique<MachineService>(*state, backend, listener, 8);
    }
    void TearDown() override { fs::remove_all(dir); }
    RegisterRequest req(std::string name, pid_t leader) {
        RegisterRequest r;
        r.name = std::move(name);
        r.klass = "container";
        r.leader = leader;
        r.create_scope = true;
        return r;
    }
    MachineErrc code_of(const std::function<void()>& f) {
        try {
            f();
        } catch (const std::system_error& e) {
            if (e.code().category() == machine_category()) return static_cast<MachineErrc>(e.code().value());
            return MachineErrc{};
        }
        return MachineErrc{};
    }
};

}  // namespace

TEST_F(Fixture, CreateThenLeaderExit) {
    Child c;
    Machine& m = svc->register_machine(req("foo-bar", c.pid));
    EXPECT_EQ(m.unit, "machine-foo\\x2dbar.scope");
    EXPECT_EQ(m.cgroup_path, "/machine.slice/machine-foo\\x2dbar.scope");
    EXPECT_EQ(m.state, MachineState::running);
    EXPECT_TRUE(m.leader_pidfd.valid());
    EXPECT_EQ(backend.started, std::vector<std::string>{"machine-foo\\x2dbar.scope"});
    EXPECT_TRUE(fs::exists(dir / "machines/foo-bar"));
    EXPECT_TRUE(fs::is_symlink(dir / "machines/unit:machine-foo\\x2dbar.scope"));
    EXPECT_EQ(svc->find_by_pid(c.pid), &m);
    EXPECT_EQ(listener.added, std::vector<std::string>{"foo-bar"});

    svc->leader_exited(m);
    EXPECT_EQ(backend.removed, std::vector<std::string>{"/machine.slice/machine-foo\\x2dbar.scope"});
    EXPECT_FALSE(fs::exists(dir / "machines/foo-bar"));
    EXPECT_FALSE(fs::is_symlink(dir / "machines/unit:machine-foo\\x2dbar.scope"));
    EXPECT_EQ(listener.removed, std::vector<std::string>{"foo-bar"});
    EXPECT_EQ(svc->find("foo-bar"), nullptr);
}

TEST_F(Fixture, ValidationHasNoSideEffects) {
    Child c;
    EXPECT_EQ(code_of([&] { svc->register_machine(req("foo_bar", c.pid)); }), MachineErrc::invalid_argument);
    EXPECT_EQ(code_of([&] { svc->register_machine(req(".host", c.pid)); }), MachineErrc::invalid_argument);
    EXPECT_EQ(code_of([&] { svc->register_machine(req("a", 1)); }), MachineErrc::invalid_argument);
    EXPECT_EQ(code_of([&] { svc->register_machine(req("a", getpid())); }), MachineErrc::invalid_argument);
    EXPECT_EQ(code_of([&] { svc->register_machine(req("a", 2)); }), MachineErrc::invalid_argument);
    EXPECT_EQ(code_of([&] { svc->register_machine(req("a", 0x3ffffff0)); }), MachineErrc::invalid_argument);
    auto r = req("a", c.pid);
    r.id = {1, 2, 3};
    EXPECT_EQ(code_of([&] { svc->register_machine(r); }), MachineErrc::invalid_argument);
    r = req("a", c.pid);
    r.klass = "host";
    EXPECT_EQ(code_of([&] { svc->register_machine(r); }), MachineErrc::invalid_argument);
    r = req("a", c.pid);
    r.root_directory = "relative";
    EXPECT_EQ(code_of([&] { svc->register_machine(r); }), MachineErrc::invalid_argument);
    r = req("a", c.pid);
    r.netif = {0};
    EXPECT_EQ(code_of([&] { svc->register_machine(r); }), MachineErrc::invalid_argument);
    EXPECT_TRUE(backend.started.empty());
    EXPECT_TRUE(listener.added.empty());
    EXPECT_TRUE(fs::is_empty(dir / "machines"));
}

TEST_F(Fixture, DuplicateNameExactlyOneWins) {
    Child a, b;
    svc->register_machine(req("x", a.pid));
    EXPECT_EQ(code_of([&] { svc->register_machine(req("x", b.pid)); }), MachineErrc::machine_exists);
    EXPECT_EQ(backend.started.size(), 1u);
    EXPECT_EQ(svc->find("x")->leader, a.pid);
}

TEST_F(Fixture, KillAndTerminate) {
    Child c;
    Machine& m = svc->register_machine(req("k", c.pid));
    EXPECT_EQ(code_of([&] { svc->kill(m, "bogus", 1); }), MachineErrc::invalid_argument);
    EXPECT_EQ(code_of([&] { svc->kill(m, "all", 999); }), MachineErrc::invalid_argument);
    svc->kill(m, "", SIGUSR1);
    ASSERT_EQ(backend.kills.size(), 1u);
    EXPECT_EQ(backend.kills[0].second, SIGUSR1);
    svc->terminate(m);
    EXPECT_EQ(m.state, MachineState::closing);
    EXPECT_EQ(backend.kills.back().second, SIGTERM);
}

TEST_F(Fixture, HostMachineIsListedButProtected) {
    svc->add_host_machine();
    Machine* h = svc->find(".host");
    ASSERT_TRUE(h);
    EXPECT_EQ(h->klass, MachineClass::host);
    EXPECT_EQ(h->unit, "-.slice");
    EXPECT_EQ(svc->find_by_pid(1), nullptr);  // as machined 252: NoMachineForPID
    EXPECT_EQ(code_of([&] { svc->terminate(*h); }), MachineErrc::not_supported);
    EXPECT_EQ(code_of([&] { svc->kill(*h, "all", 15); }), MachineErrc::not_supported);
}

TEST_F(Fixture, RegisterNeedsTheLeaderInAUnit) {
    Child c;
    auto r = req("r", c.pid);
    r.create_scope = false;
    auto path = pid_cgroup_path(c.pid);
    if (path && unit_from_cgroup_path(*path)) GTEST_SKIP() << "test runs inside a unit";
    try {
        svc->register_machine(r);
        FAIL();
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), std::errc::no_such_device_or_address);
    }
}

TEST_F(Fixture, ReadoptDropsDeadAndMovedLeaders) {
    Child c;
    Machine dead;
    dead.name = "dead";
    dead.leader = 0x3ffffff0;
    dead.unit = "machine-dead.scope";
    state->save(dead);
    Machine moved;
    moved.name = "moved";
    moved.leader = c.pid;  // alive, but not in machine-moved.scope
    moved.unit = "machine-moved.scope";
    state->save(moved);
    auto adopted = svc->readopt();
    EXPECT_TRUE(adopted.empty());
    EXPECT_FALSE(fs::exists(dir / "machines/dead"));
    EXPECT_FALSE(fs::exists(dir / "machines/moved"));
    EXPECT_FALSE(fs::is_symlink(dir / "machines/unit:machine-dead.scope"));
    EXPECT_EQ(backend.removed.size(), 2u);
}

TEST_F(Fixture, TerminateEscalatesToSigkillAfterTimeout) {
    Child c;
    Machine& m = svc->register_machine(req("esc", c.pid));
    EXPECT_EQ(svc->next_deadline(), 0u);
    svc->terminate(m);
    uint64_t d = svc->next_deadline();
    ASSERT_GT(d, now_monotonic_usec());
    svc->run_deadlines(d - 1);
    EXPECT_EQ(backend.kills.back().second, SIGTERM);
    svc->run_deadlines(d);
    EXPECT_EQ(backend.kills.back().second, SIGKILL);
    EXPECT_EQ(svc->next_deadline(), 0u);
    int status = 0;
    ASSERT_EQ(waitpid(c.pid, &status, 0), c.pid);  // the leader got SIGTERM then SIGKILL via its pidfd
    EXPECT_TRUE(WIFSIGNALED(status));
}

struct AsyncListener : RecordingListener {
    std::vector<std::pair<std::string, std::string>> finished;
    void machine_start_finished(Machine& m, const std::string& error) override { finished.emplace_back(m.name, error); }
};

TEST_F(Fixture, AsyncBackendOpeningThenRunning) {
    AsyncListener l;
    MachineService s(*state, backend, l, 8);
    backend.job = "/org/freedesktop/systemd1/job/7";
    Child c;
    Machine& m = s.register_machine(req("as", c.pid));
    EXPECT_EQ(m.state, MachineState::opening);
    EXPECT_NE(slurp_file(dir / "machines/as").find("SCOPE_JOB=/org/freedesktop/systemd1/job/7\n"), std::string::npos);
    s.scope_job_done("machine-as.scope", "/org/freedesktop/systemd1/job/6", "done");  // not our job
    EXPECT_EQ(m.state, MachineState::opening);
    s.scope_job_done("machine-as.scope", "/org/freedesktop/systemd1/job/7", "done");
    EXPECT_EQ(m.state, MachineState::running);
    EXPECT_EQ(slurp_file(dir / "machines/as").find("SCOPE_JOB="), std::string::npos);
    ASSERT_EQ(l.finished.size(), 1u);
    EXPECT_EQ(l.finished[0].second, "");
}

TEST_F(Fixture, AsyncBackendJobFailureRemovesMachine) {
    AsyncListener l;
    MachineService s(*state, backend, l, 8);
    backend.job = "/job/9";
    Child c;
    s.register_machine(req("af", c.pid));
    s.scope_job_done("machine-af.scope", "/job/9", "failed");
    ASSERT_EQ(l.finished.size(), 1u);
    EXPECT_EQ(l.finished[0].second, "Start job for unit machine-af.scope failed with 'failed'");
    EXPECT_EQ(l.removed, std::vector<std::string>{"af"});
    EXPECT_EQ(s.find("af"), nullptr);
    EXPECT_FALSE(fs::exists(dir / "machines/af"));
}

TEST_F(Fixture, OnlyTheLeadersParentOrItsChildReportsReady) {
    Child c;  // our child: we are its "spawn"
    Machine& m = svc->register_machine(req("rdy", c.pid));
    EXPECT_FALSE(m.ready);
    auto errno_of = [&](pid_t caller) {
        try {
            svc->report_ready(m, caller);
        } catch (const std::system_error& e) {
            return e.code().value();
        }
        return 0;
    };
    EXPECT_EQ(errno_of(1), EPERM);
    EXPECT_EQ(errno_of(getppid()), EPERM);  // whoever started the test is not the supervisor
    EXPECT_EQ(errno_of(c.pid), EPERM);      // nor is the guest itself
    EXPECT_FALSE(m.ready);
    Child helper;  // a sibling of the leader: the helper spawn runs for the bus call
    EXPECT_TRUE(svc->report_ready(m, helper.pid));
    EXPECT_TRUE(m.ready);
    EXPECT_FALSE(svc->report_ready(m, getpid()));  // once
}

TEST_F(Fixture, HostMachineIsNeverReportedReady) {
    svc->add_host_machine();
    Machine* host = svc->find(".host");
    ASSERT_NE(host, nullptr);
    EXPECT_THROW(svc->report_ready(*host, getpid()), std::system_error);
}
