// The Varlink protocol layer: framing, call parsing, error mapping, and the server end to end on a
// socket in a temp dir with a small epoll loop standing in for machd's.
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <system_error>

#include <gtest/gtest.h>

#include "core/machine/machine_error.hpp"
#include "varlink/errors.hpp"
#include "varlink/json_writer.hpp"
#include "varlink/idl.hpp"
#include "varlink/protocol.hpp"
#include "varlink/server.hpp"

using namespace mk::varlink;
using mk::core::UniqueFd;

TEST(VarlinkFramer, SplitsOnNulAcrossFeeds) {
    Framer f;
    f.feed(std::string_view("{\"a\":1}\0{\"b\"", 12));
    EXPECT_EQ(f.next(), std::optional<std::string>("{\"a\":1}"));
    EXPECT_EQ(f.next(), std::nullopt);
    f.feed(std::string_view(":2}\0", 4));
    EXPECT_EQ(f.next(), std::optional<std::string>("{\"b\":2}"));
    EXPECT_EQ(f.next(), std::nullopt);
    EXPECT_TRUE(f.empty());
}

TEST(VarlinkFramer, BoundsAnUnfinishedMessage) {
    Framer f(16);
    f.feed(std::string(10, 'x'));
    EXPECT_THROW(f.feed(std::string(10, 'x')), ProtocolError);
    Framer g(16);
    // Complete messages do not count against the bound of the next one.
    g.feed(std::string(15, 'x') + '\0' + std::string(15, 'y'));
    EXPECT_EQ(g.next()->size(), 15u);
}

TEST(VarlinkCall, ParsesFlagsAndParameters) {
    auto c = parse_call(R"({"method":"io.systemd.Machine.List","parameters":{"name":"a"},"more":true})");
    EXPECT_EQ(c.method, "io.systemd.Machine.List");
    EXPECT_EQ(c.interface(), "io.systemd.Machine");
    EXPECT_EQ(c.member(), "List");
    EXPECT_TRUE(c.more);
    EXPECT_FALSE(c.oneway);
    EXPECT_EQ(c.parameters["name"], "a");
    auto d = parse_call(R"({"method":"org.varlink.service.GetInfo"})");
    EXPECT_TRUE(d.parameters.is_object());
    EXPECT_TRUE(d.parameters.empty());
}

TEST(VarlinkCall, RefusesMalformedCalls) {
    for (const char* bad :
         {"", "[]", "{}", "nope", R"({"method":1})", R"({"method":"NoDot"})", R"({"method":"io.systemd.Machine.list"})",
          R"({"method":".x.Y"})", R"({"method":"a.B","parameters":[]})", R"({"method":"a.b.C","more":"yes"})",
          R"({"method":"a.b.C","oneway":true,"more":true})", R"({"method":"a.b.C","extra":1})"})
        EXPECT_THROW(parse_call(bad), ProtocolError) << bad;
}

TEST(VarlinkCall, EncodesRepliesAndErrors) {
    EXPECT_EQ(encode_reply(Json{{"x", 1}}, false), std::string("{\"parameters\":{\"x\":1}}\0", 23));
    EXPECT_EQ(encode_reply(Json::object(), true), std::string("{\"continues\":true,\"parameters\":{}}\0", 35));
    EXPECT_EQ(encode_error("a.b.C"), std::string("{\"error\":\"a.b.C\",\"parameters\":{}}\0", 34));
    // A round trip through the client encoder.
    Call c;
    c.method = "a.b.C";
    c.oneway = true;
    std::string bytes = encode_call(c);
    ASSERT_EQ(bytes.back(), '\0');
    auto back = parse_call(std::string_view(bytes).substr(0, bytes.size() - 1));
    EXPECT_TRUE(back.oneway);
}

TEST(VarlinkErrors, MapsOurErrorsAtOneBoundary) {
    using mk::core::MachineErrc;
    auto m = to_varlink_error(std::system_error(MachineErrc::no_such_machine, "x"), Domain::machine);
    EXPECT_EQ(m.name, "io.systemd.Machine.NoSuchMachine");
    EXPECT_EQ(to_varlink_error(std::system_error(MachineErrc::machine_exists, "x"), Domain::machine).name,
              "io.systemd.Machine.MachineExists");
    EXPECT_EQ(to_varlink_error(std::system_error(MachineErrc::not_supported, "x"), Domain::image).name,
              "io.systemd.MachineImage.NotSupported");
    auto e = to_varlink_error(std::system_error(ENOENT, std::generic_category(), "x"), Domain::machine);
    EXPECT_EQ(e.name, "io.systemd.System");
    EXPECT_EQ(e.parameters["errno"], ENOENT);
    EXPECT_EQ(e.parameters["errnoName"], "ENOENT");
    EXPECT_EQ(to_varlink_error(std::system_error(EPERM, std::generic_category(), "x"), Domain::machine).name,
              kPermissionDenied);
    auto p = to_varlink_error(Error(kInvalidParameter, Json{{"parameter", "name"}}), Domain::machine);
    EXPECT_EQ(p.name, kInvalidParameter);
    EXPECT_EQ(p.parameters["parameter"], "name");
}

TEST(VarlinkIdl, EmbedsSystemdInterfacesVerbatim) {
    EXPECT_TRUE(idl::kIoSystemdMachine.starts_with("interface io.systemd.Machine\n"));
    EXPECT_TRUE(idl::kIoSystemdMachineImage.starts_with("interface io.systemd.MachineImage\n"));
    EXPECT_NE(idl::kOrgVarlinkService.find("interface org.varlink.service\n"), std::string_view::npos);
    EXPECT_NE(idl::kIoSystemdMachine.find("method OpenRootDirectory("), std::string_view::npos);
}

namespace {

// A minimal FdLoop over epoll for the tests.
class TestLoop final : public FdLoop {
public:
    TestLoop() : ep_(epoll_create1(EPOLL_CLOEXEC)) {}
    void watch(int fd, std::function<void()> cb) override {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        ASSERT_EQ(epoll_ctl(ep_.get(), EPOLL_CTL_ADD, fd, &ev), 0);
        cbs_[fd] = std::move(cb);
    }
    void unwatch(int fd) override {
        if (cbs_.erase(fd)) epoll_ctl(ep_.get(), EPOLL_CTL_DEL, fd, nullptr);
    }
    void set_writable(int fd, bool want) override {
        epoll_event ev{};
        ev.events = EPOLLIN | (want ? EPOLLOUT : 0u);
        ev.data.fd = fd;
        epoll_ctl(ep_.get(), EPOLL_CTL_MOD, fd, &ev);
    }
    void round(int timeout_ms) {
        epoll_event evs[16];
        int n = epoll_wait(ep_.get(), evs, 16, timeout_ms);
        for (int i = 0; i < n; i++)
            if (auto it = cbs_.find(evs[i].data.fd); it != cbs_.end()) {
                auto cb = it->second;
                cb();
            }
    }

private:
    UniqueFd ep_;
    std::map<int, std::function<void()>> cbs_;
};

class VarlinkServerTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/varlink-test-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        path_ = dir_ + "/io.test.Thing";
        server_ = std::make_unique<Server>(loop_, ServiceInfo{"machkit", "test", "1", "https://example.invalid"});
        Interface i;
        i.name = "io.test.Thing";
        i.description = "interface io.test.Thing\n";
        i.methods["Echo"] = {[](Request& r) { r.reply(r.parameters()); }};
        i.methods["Count"] = {[](Request& r) {
                                  int n = r.parameters().value("n", 0);
                                  for (int k = 0; k < n - 1; k++) r.notify(Json{{"k", k}});
                                  r.reply(Json{{"k", n - 1}});
                              },
                              true, true};
        // Records 0..n-1 written in place; record `fail_at` throws instead.
        i.methods["Each"] = {[](Request& r) {
                                 int n = r.parameters().value("n", 0);
                                 int fail_at = r.parameters().value("failAt", -1);
                                 r.reply_each(static_cast<size_t>(n), [&](size_t k, std::string& out) {
                                     if (static_cast<int>(k) == fail_at)
                                         throw std::system_error(EIO, std::generic_category(), "record");
                                     ObjectWriter(out).number("k", k).string("s", "x\"y").close();
                                 });
                             },
                             true, false};
        i.methods["Pipe"] = {[](Request& r) {
            int p[2];
            ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
            std::vector<UniqueFd> fds;
            fds.emplace_back(p[1]);
            read_end_ = UniqueFd(p[0]);
            r.reply(Json{{"fileDescriptor", 0}}, std::move(fds));
        }};
        i.methods["Later"] = {[this](Request& r) { later_.push_back(r); }};
        i.methods["Fail"] = {[](Request&) { throw std::system_error(ENOENT, std::generic_category(), "gone"); }};
        server_->add_interface(std::move(i));
        server_->listen(path_, 0666);
    }
    void TearDown() override {
        server_.reset();
        std::filesystem::remove_all(dir_);
    }
    // Runs the loop until the client has something to read (or the server closed it).
    void pump(const Client& c) {
        if (c.buffered()) return;
        for (int i = 0; i < 200; i++) {
            pollfd p{c.fd(), POLLIN, 0};
            if (poll(&p, 1, 0) > 0) return;
            loop_.round(50);
        }
    }
    Json call(Client& c, const std::string& method, Json params = Json::object(), bool more = false) {
        Call k;
        k.method = method;
        k.parameters = std::move(params);
        k.more = more;
        c.send(k);
        pump(c);
        return c.receive();
    }

    TestLoop loop_;
    std::string dir_, path_;
    std::unique_ptr<Server> server_;
    std::vector<Request> later_;
    static inline UniqueFd read_end_;
};

}  // namespace

TEST_F(VarlinkServerTest, SocketModeAndGetInfo) {
    struct stat st {};
    ASSERT_EQ(stat(path_.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0666u);
    Client c(path_);
    auto r = call(c, "org.varlink.service.GetInfo");
    EXPECT_EQ(r["parameters"]["product"], "test");
    EXPECT_EQ(r["parameters"]["interfaces"], Json::array({"org.varlink.service", "io.test.Thing"}));
    r = call(c, "org.varlink.service.GetInterfaceDescription", Json{{"interface", "io.test.Thing"}});
    EXPECT_EQ(r["parameters"]["description"], "interface io.test.Thing\n");
    r = call(c, "org.varlink.service.GetInterfaceDescription", Json{{"interface", "io.test.Nope"}});
    EXPECT_EQ(r["error"], kInterfaceNotFound);
    EXPECT_EQ(r["parameters"]["interface"], "io.test.Nope");
}

TEST_F(VarlinkServerTest, UnknownMethodsAndInterfaces) {
    Client c(path_);
    EXPECT_EQ(call(c, "io.test.Thing.Nope")["error"], kMethodNotFound);
    EXPECT_EQ(call(c, "io.test.Other.Echo")["error"], kInterfaceNotFound);
    auto r = call(c, "io.test.Thing.Fail");
    EXPECT_EQ(r["error"], "io.systemd.System");
    EXPECT_EQ(r["parameters"]["errnoName"], "ENOENT");
}

TEST_F(VarlinkServerTest, MoreStreamsWithContinues) {
    Client c(path_);
    Call k;
    k.method = "io.test.Thing.Count";
    k.parameters = Json{{"n", 3}};
    k.more = true;
    c.send(k);
    for (int i = 0; i < 3; i++) {
        pump(c);
        auto r = c.receive();
        EXPECT_EQ(r["parameters"]["k"], i);
        EXPECT_EQ(r.value("continues", false), i < 2);
    }
    // A method that requires more refuses a call without it.
    EXPECT_EQ(call(c, "io.test.Thing.Count", Json{{"n", 3}})["error"], kExpectedMore);
}

TEST_F(VarlinkServerTest, ReplyEachStreamsRecordsInBatches) {
    Client c(path_);
    Call k;
    k.method = "io.test.Thing.Each";
    // Enough records for several 256 KiB batches: every one arrives, in order, once.
    constexpr int kCount = 20000;
    k.parameters = Json{{"n", kCount}};
    k.more = true;
    c.send(k);
    for (int i = 0; i < kCount; i++) {
        pump(c);
        auto r = c.receive();
        ASSERT_EQ(r["parameters"]["k"], i);
        ASSERT_EQ(r["parameters"]["s"], "x\"y");
        ASSERT_EQ(r.value("continues", false), i < kCount - 1);
    }
    // Without more only the first record is sent, as the final reply.
    auto r = call(c, "io.test.Thing.Each", Json{{"n", 3}});
    EXPECT_EQ(r["parameters"]["k"], 0);
    EXPECT_FALSE(r.contains("continues"));
    // A record that throws: those before it arrive, then the error ends the call.
    k.parameters = Json{{"n", 5}, {"failAt", 2}};
    c.send(k);
    for (int i = 0; i < 2; i++) {
        pump(c);
        r = c.receive();
        EXPECT_EQ(r["parameters"]["k"], i);
        EXPECT_EQ(r["continues"], true);
    }
    pump(c);
    r = c.receive();
    EXPECT_EQ(r["error"], "io.systemd.System");
    EXPECT_EQ(r["parameters"]["errnoName"], "EIO");
    // The connection still serves calls.
    EXPECT_EQ(call(c, "io.test.Thing.Echo", Json{{"x", 1}})["parameters"]["x"], 1);
}

TEST_F(VarlinkServerTest, UpgradeIsRefused) {
    Client c(path_);
    Call k;
    k.method = "io.test.Thing.Echo";
    k.upgrade = true;
    c.send(k);
    pump(c);
    auto r = c.receive();
    EXPECT_EQ(r["error"], kInvalidParameter);
    EXPECT_EQ(r["parameters"]["parameter"], "upgrade");
}

TEST_F(VarlinkServerTest, OnewayGetsNoReplyAndOrderIsKept) {
    Client c(path_);
    Call k;
    k.method = "io.test.Thing.Echo";
    k.parameters = Json{{"first", true}};
    k.oneway = true;
    c.send(k);
    auto r = call(c, "io.test.Thing.Echo", Json{{"second", true}});
    EXPECT_EQ(r["parameters"], Json({{"second", true}}));
}

TEST_F(VarlinkServerTest, LaterRepliesKeepTheOrder) {
    Client c(path_);
    Call a;
    a.method = "io.test.Thing.Later";
    Call b;
    b.method = "io.test.Thing.Echo";
    b.parameters = Json{{"b", 1}};
    c.send(a);
    c.send(b);
    for (int i = 0; i < 5; i++) loop_.round(20);
    ASSERT_EQ(later_.size(), 1u);  // Echo waits behind the unanswered call
    pollfd p{c.fd(), POLLIN, 0};
    EXPECT_EQ(poll(&p, 1, 0), 0);
    later_[0].reply(Json{{"a", 1}});
    pump(c);
    EXPECT_EQ(c.receive()["parameters"], Json({{"a", 1}}));
    pump(c);
    EXPECT_EQ(c.receive()["parameters"], Json({{"b", 1}}));
}

TEST_F(VarlinkServerTest, PassesFileDescriptors) {
    Client c(path_);
    Call k;
    k.method = "io.test.Thing.Pipe";
    c.send(k);
    pump(c);
    std::vector<UniqueFd> fds;
    auto r = c.receive(&fds);
    EXPECT_EQ(r["parameters"]["fileDescriptor"], 0);
    ASSERT_EQ(fds.size(), 1u);
    ASSERT_EQ(write(fds[0].get(), "hi", 2), 2);
    char buf[2];
    ASSERT_EQ(read(read_end_.get(), buf, 2), 2);
    EXPECT_EQ(std::string(buf, 2), "hi");
}

TEST_F(VarlinkServerTest, MalformedInputDropsTheConnection) {
    Client c(path_);
    ASSERT_EQ(write(c.fd(), "not json\0", 9), 9);
    pump(c);
    char buf[8];
    EXPECT_EQ(read(c.fd(), buf, sizeof buf), 0);  // closed without an answer
    for (int i = 0; i < 3; i++) loop_.round(10);
    EXPECT_EQ(server_->connection_count(), 0u);
}

TEST_F(VarlinkServerTest, BoundsConnectionsPerUid) {
    std::vector<std::unique_ptr<Client>> clients;
    for (size_t i = 0; i < kConnectionsPerUidMax + 1; i++) clients.push_back(std::make_unique<Client>(path_));
    for (int i = 0; i < 20 && server_->connection_count() < kConnectionsPerUidMax; i++) loop_.round(10);
    loop_.round(10);
    EXPECT_EQ(server_->connection_count(), kConnectionsPerUidMax);
    // The one over the bound was closed.
    pollfd p{clients.back()->fd(), POLLIN, 0};
    ASSERT_EQ(poll(&p, 1, 1000), 1);
    char buf[1];
    EXPECT_EQ(read(clients.back()->fd(), buf, 1), 0);
    clients.clear();
    for (int i = 0; i < 20 && server_->connection_count() > 0; i++) loop_.round(10);
    EXPECT_EQ(server_->connection_count(), 0u);
}

TEST(VarlinkJsonWriter, WritesWhatAParserReadsBack) {
    std::string out;
    ObjectWriter w(out);
    std::string nasty = std::string("a\"b\\c\nd\x01") + "\xC3\xA9" + "\xFF" + "\xED\xA0\x80";
    w.string("s", nasty).number("n", 18446744073709551615ull).boolean("b", true).raw("o", R"({"pid":1})");
    w.close();
    auto j = Json::parse(out);
    // Invalid UTF-8 (a lone 0xFF, an encoded surrogate) becomes U+FFFD, as nlohmann's replace does.
    EXPECT_EQ(j["s"], std::string("a\"b\\c\nd\x01") + "\xC3\xA9" + "\xEF\xBF\xBD" + "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    EXPECT_EQ(j["n"].get<uint64_t>(), 18446744073709551615ull);
    EXPECT_EQ(j["b"], true);
    EXPECT_EQ(j["o"]["pid"], 1);
}

TEST(VarlinkJsonWriter, ReplacesInvalidUtf8AsNlohmannDoes) {
    // A truncated sequence is one U+FFFD (its maximal subpart), a bad lead or continuation byte one
    // each: byte for byte what nlohmann's dump with error_handler_t::replace writes (fuzz_varlink).
    for (std::string s : {std::string("\xE8\x93\"x"), std::string("a\xE8\x93"), std::string("\xF0\x9F\x98"),
                          std::string("\xED\xA0\x80"), std::string("\xED\x65"), std::string("\xC0\xAF"),
                          std::string("\xF4\x90\x80\x80"), std::string("\xFF\xF0\x9F\x98\x80")}) {
        std::string ours;
        append_json_string(ours, s);
        EXPECT_EQ(ours, Json(s).dump(-1, ' ', false, Json::error_handler_t::replace));
    }
}

TEST_F(VarlinkServerTest, DoesNotTakeOverALiveSocket) {
    Server other(loop_, ServiceInfo{});
    try {
        other.listen(path_, 0666);
        FAIL() << "listened on a live socket";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), EADDRINUSE);
    }
    Client c(path_);  // the first server still answers
    EXPECT_EQ(call(c, "io.test.Thing.Echo", Json{{"x", 1}})["parameters"]["x"], 1);
}
