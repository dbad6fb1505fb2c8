#include "core/base/io.hpp"

#include <fcntl.h>
#include <signal.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <system_error>
#include <thread>

#include "core/base/unique_fd.hpp"

using namespace mk::core;

namespace {

struct Pipe {
    UniqueFd rd, wr;
    explicit Pipe(int flags = 0) {
        int p[2];
        EXPECT_EQ(::pipe2(p, O_CLOEXEC | flags), 0);
        rd.reset(p[0]);
        wr.reset(p[1]);
    }
};

}  // namespace

// A non-blocking pipe fills after 64 KiB: write_all waits for the reader instead of failing with EAGAIN.
TEST(Io, WriteAllWaitsOnNonBlockingFdAndReadAllGetsEverything) {
    Pipe p(O_NONBLOCK);
    ASSERT_EQ(::fcntl(p.rd.get(), F_SETFL, 0), 0);  // only the writer end non-blocking
    std::string data(1 << 20, 'x');
    for (size_t i = 0; i < data.size(); i += 4099) data[i] = static_cast<char>('a' + i % 26);
    std::string got;
    std::thread reader([&] { got = read_all(p.rd.get(), data.size(), "the pipe"); });
    EXPECT_EQ(write_all(p.wr.get(), data), 0);
    p.wr.reset();
    reader.join();
    EXPECT_EQ(got, data);
}

TEST(Io, ReadAllIsBounded) {
    Pipe p;
    write_all_or_throw(p.wr.get(), "0123456789", "pipe");
    p.wr.reset();
    try {
        read_all(p.rd.get(), 9, "the pipe");
        FAIL() << "no error";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), EFBIG);
        EXPECT_NE(std::string(e.what()).find("the pipe is larger than 9 bytes"), std::string::npos) << e.what();
    }
}

TEST(Io, WriteAllReportsAGonePeer) {
    Pipe p;
    p.rd.reset();
    struct sigaction ign {
    }, old{};
    ign.sa_handler = SIG_IGN;
    ::sigaction(SIGPIPE, &ign, &old);
    EXPECT_EQ(write_all(p.wr.get(), "x"), -EPIPE);
    EXPECT_THROW(write_all_or_throw(p.wr.get(), "x", "pipe"), std::system_error);
    ::sigaction(SIGPIPE, &old, nullptr);
}

TEST(Io, RetryEintrRetriesOnlyEintr) {
    int calls = 0;
    EXPECT_EQ(retry_eintr([&] {
                  if (++calls < 3) {
                      errno = EINTR;
                      return -1;
                  }
                  return 7;
              }),
              7);
    EXPECT_EQ(calls, 3);
    calls = 0;
    EXPECT_EQ(retry_eintr([&] {
                  calls++;
                  errno = EBADF;
                  return -1;
              }),
              -1);
    EXPECT_EQ(errno, EBADF);
    EXPECT_EQ(calls, 1);
}
