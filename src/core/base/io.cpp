#include "core/base/io.hpp"

#include <poll.h>
#include <unistd.h>

#include "core/base/error.hpp"

namespace mk::core {

int write_all(int fd, std::string_view data) noexcept {
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                pollfd pfd{fd, POLLOUT, 0};
                if (retry_eintr([&] { return ::poll(&pfd, 1, -1); }) < 0) return -errno;
                continue;
            }
            return -errno;
        }
        data.remove_prefix(static_cast<size_t>(n));
    }
    return 0;
}

int pwrite_all(int fd, std::string_view data, off_t offset) noexcept {
    while (!data.empty()) {
        ssize_t n = retry_eintr([&] { return ::pwrite(fd, data.data(), data.size(), offset); });
        if (n < 0) return -errno;
        data.remove_prefix(static_cast<size_t>(n));
        offset += n;
    }
    return 0;
}

void write_all_or_throw(int fd, std::string_view data, const std::string& what) {
    int r = write_all(fd, data);
    if (r < 0) throw_errno(-r, what);
}

std::string read_all(int fd, size_t max, const std::string& what) {
    std::string out;
    char buf[16384];
    for (;;) {
        ssize_t n = retry_eintr([&] { return ::read(fd, buf, sizeof buf); });
        if (n < 0) throw_last_error("cannot read " + what);
        if (n == 0) return out;
        if (out.size() + static_cast<size_t>(n) > max)
            throw_errno(EFBIG, what + " is larger than " + std::to_string(max) + " bytes");
        out.append(buf, static_cast<size_t>(n));
    }
}

}  // namespace mk::core
