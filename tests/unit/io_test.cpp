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

// pwrite_all writes at the offset and leaves the file position alone; a read-only fd gives -EBADF.
TEST(Io, PwriteAllWritesAtTheOffset) {
    char path[] = "/tmp/mk-io-test-XXXXXX";
    UniqueFd fd(::mkostemp(path, O_CLOEXEC));
    ASSERT_TRUE(fd);
    ::unlink(path);
    std::string data(300000, 'y');
    EXPECT_EQ(pwrite_all(fd.get(), data, 4096), 0);
    EXPECT_EQ(::lseek(fd.get(), 0, SEEK_CUR), 0);
    EXPECT_EQ(::lseek(fd.get(), 0, SEEK_END), 4096 + 300000);
    std::string back(data.size(), '\0');
    EXPECT_EQ(::pread(fd.get(), back.data(), back.size(), 4096), static_cast<ssize_t>(back.size()));
    EXPECT_EQ(back, data);

    UniqueFd ro(::open(("/proc/self/fd/" + std::to_string(fd.get())).c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(ro);
    EXPECT_EQ(pwrite_all(ro.get(), "x", 0), -EBADF);
}
