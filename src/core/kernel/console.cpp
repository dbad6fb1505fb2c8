#include "core/kernel/console.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>

namespace mk::core {

RawTerminal::RawTerminal(int fd) : fd_(fd) {
    if (tcgetattr(fd_, &saved_) < 0) return;
    termios raw = saved_;
    cfmakeraw(&raw);
    raw.c_oflag = saved_.c_oflag;  // keep output post-processing: the container's pty already did it
    if (tcsetattr(fd_, TCSANOW, &raw) == 0) active_ = true;
}

RawTerminal::~RawTerminal() {
    if (active_) tcsetattr(fd_, TCSANOW, &saved_);
}

bool EscapeDetector::feed(const char* buf, size_t n, std::chrono::steady_clock::time_point now) {
    for (size_t i = 0; i < n; i++) {
        if (buf[i] != 0x1d) {
            count_ = 0;
            continue;
        }
        if (count_ == 0 || now - first_ > std::chrono::seconds(1)) {
            count_ = 1;
            first_ = now;
        } else if (++count_ >= 3) {
            return true;
        }
    }
    return false;
}

void copy_window_size(int from, int to) noexcept {
    winsize ws{};
    if (ioctl(from, TIOCGWINSZ, &ws) == 0) ioctl(to, TIOCSWINSZ, &ws);
}

}  // namespace mk::core
