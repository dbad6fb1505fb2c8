// The console relay between the user's terminal and the container's pty master, plus the
// terminal mode guard. Runs in spawn's parent process, single-threaded.
#pragma once

#include <termios.h>

#include <chrono>
#include <cstddef>
#include <string>

#include "core/base/io.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::core {

// Puts a terminal into raw mode for the lifetime of the object and restores it after.
class RawTerminal {
public:
    explicit RawTerminal(int fd);
    RawTerminal(const RawTerminal&) = delete;
    RawTerminal& operator=(const RawTerminal&) = delete;
    ~RawTerminal();

private:
    int fd_;
    bool active_ = false;
    termios saved_{};
};

// Counts ^] (0x1d) presses: three within one second ask to kill the container, like nspawn.
class EscapeDetector {
public:
    // Feeds input bytes; returns true once the third ^] within a second has been seen.
    bool feed(const char* buf, size_t n, std::chrono::steady_clock::time_point now);

private:
    int count_ = 0;
    std::chrono::steady_clock::time_point first_{};
};

// Copies the window size of `from` (a terminal) to `to` (a pty master). Ignores errors.
void copy_window_size(int from, int to) noexcept;

// launcher.cpp's relay still calls this form; it goes once launcher.cpp uses base/io.hpp directly.
inline bool write_all(int fd, const char* buf, size_t n) noexcept { return write_all(fd, std::string_view(buf, n)) == 0; }

}  // namespace mk::core
