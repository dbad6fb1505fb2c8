// Whole-buffer reads and writes and the EINTR retry, once for the whole tree (they used to be
// hand-written in each file, and the copies disagreed about EAGAIN and bounds).
// All functions are thread-safe; the noexcept ones are also safe in a forked child.
#pragma once

#include <cerrno>
#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace mk::core {

// Calls f() until it does not fail with EINTR. f returns a number, negative with errno on failure
// (a syscall wrapper); the last result is returned, errno intact.
template <typename F>
auto retry_eintr(F&& f) noexcept(noexcept(f())) -> decltype(f()) {
    for (;;) {
        auto r = f();
        if (r >= 0 || errno != EINTR) return r;
    }
}

// Writes all of `data`. On a non-blocking fd, EAGAIN waits in poll(POLLOUT) until the reader
// drains. Returns 0, or -errno of the first other failure (EPIPE, EIO... when the peer is gone).
int write_all(int fd, std::string_view data) noexcept;

// Writes all of `data` at `offset` (a regular file: no EAGAIN). Returns 0, or -errno (ENOSPC...).
int pwrite_all(int fd, std::string_view data, off_t offset) noexcept;

// write_all that throws std::system_error("<what>: <strerror>").
void write_all_or_throw(int fd, std::string_view data, const std::string& what);

// Reads until end of file. More than `max` bytes is an error (EFBIG, "<what> is larger than <max>
// bytes"), so a hostile file cannot make us allocate without bound. Other failures throw
// std::system_error("cannot read <what>").
std::string read_all(int fd, size_t max, const std::string& what);

}  // namespace mk::core
