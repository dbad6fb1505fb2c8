#include "machctl/terminal.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>

#include "core/base/io.hpp"

namespace mk::machctl {
namespace {

volatile sig_atomic_t g_winch = 0;
volatile sig_atomic_t g_quit = 0;
void on_winch(int) { g_winch = 1; }
void on_quit(int) { g_quit = 1; }

class RawMode {
public:
    explicit RawMode(int fd) : fd_(fd) {
        if (::isatty(fd) && ::tcgetattr(fd, &saved_) == 0) {
            termios raw = saved_;
            ::cfmakeraw(&raw);
            if (::tcsetattr(fd, TCSANOW, &raw) == 0) active_ = true;
        }
    }
    ~RawMode() {
        if (active_) ::tcsetattr(fd_, TCSANOW, &saved_);
    }
    RawMode(const RawMode&) = delete;
    RawMode& operator=(const RawMode&) = delete;

private:
    int fd_;
    termios saved_{};
    bool active_ = false;
};

void copy_winsize(int master) {
    winsize ws{};
    if (::ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 || ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0)
        ::ioctl(master, TIOCSWINSZ, &ws);
}

}  // namespace

int relay_pty(int master, int status_fd, bool survive_hangup) {
    struct sigaction sa {
    }, old{}, quit{}, old_term{}, old_hup{};
    sa.sa_handler = on_winch;
    ::sigaction(SIGWINCH, &sa, &old);
    // SIGTERM/SIGHUP end the relay through the normal path, so the terminal mode is restored.
    quit.sa_handler = on_quit;
    ::sigaction(SIGTERM, &quit, &old_term);
    ::sigaction(SIGHUP, &quit, &old_hup);
    struct Restore {
        struct sigaction *w, *t, *h;
        ~Restore() {
            ::sigaction(SIGWINCH, w, nullptr);
            ::sigaction(SIGTERM, t, nullptr);
            ::sigaction(SIGHUP, h, nullptr);
        }
    } restore{&old, &old_term, &old_hup};
    copy_winsize(master);
    RawMode raw(STDIN_FILENO);
    ::fcntl(master, F_SETFL, ::fcntl(master, F_GETFL) | O_NONBLOCK);

    int status = -1;
    bool stdin_open = true;
    bool hung_up = false;
    int escapes = 0;
    std::chrono::steady_clock::time_point first_escape;
    char buf[16384];
    for (;;) {
        if (g_quit) break;
        if (g_winch) {
            g_winch = 0;
            copy_winsize(master);
        }
        // While no terminal side is open (hung_up) the master polls as "hung up" at once: look again
        // every 100 ms instead.
        pollfd fds[3] = {
            {hung_up ? -1 : master, POLLIN, 0}, {stdin_open ? STDIN_FILENO : -1, POLLIN, 0}, {status_fd, POLLIN, 0}};
        int r = ::poll(fds, 3, hung_up ? 100 : -1);
        if (r < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (r == 0 && hung_up) {
            hung_up = false;
            continue;
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = ::read(master, buf, sizeof buf);
            if (n > 0) {
                if (core::write_all(STDOUT_FILENO, {buf, static_cast<size_t>(n)}) < 0) break;
            } else if (n < 0 && errno == EIO && survive_hangup) {
                hung_up = true;  // a getty's vhangup() or its restart after a logout
            } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                break;  // EIO: every slave fd is closed, the session is over
            }
        }
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
            if (n > 0) {
                // ^] three times within a second leaves the session (as machinectl).
                bool leave = false;
                for (ssize_t i = 0; i < n; i++) {
                    if (buf[i] != 0x1d) {
                        escapes = 0;
                        continue;
                    }
                    auto now = std::chrono::steady_clock::now();
                    if (escapes == 0 || now - first_escape > std::chrono::seconds(1)) {
                        escapes = 0;
                        first_escape = now;
                    }
                    if (++escapes == 3) leave = true;
                }
                if (leave) break;
                if (core::write_all(master, {buf, static_cast<size_t>(n)}) < 0) break;
            } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                stdin_open = false;
                // End of input: the terminal's EOF character, as a user typing ^D.
                char eot = 4;
                (void)!::write(master, &eot, 1);
            }
        }
        if (fds[2].revents & (POLLIN | POLLHUP | POLLERR)) {
            int st = 0;
            if (::read(status_fd, &st, sizeof st) == static_cast<ssize_t>(sizeof st)) status = st;
            status_fd = -1;
            // Drain what the command wrote before it ended (bounded: a background child may keep
            // the terminal open).
            for (int i = 0; i < 100; i++) {
                pollfd p{master, POLLIN, 0};
                if (::poll(&p, 1, 20) <= 0) break;
                ssize_t n = ::read(master, buf, sizeof buf);
                if (n <= 0) break;
                (void)core::write_all(STDOUT_FILENO, {buf, static_cast<size_t>(n)});
            }
            break;
        }
    }
    if (escapes == 3 || g_quit) return -1;
    if (status_fd >= 0) {
        // The terminal closed first: the status follows right away (the waiter reports it).
        pollfd p{status_fd, POLLIN, 0};
        int st = 0;
        if (::poll(&p, 1, 5000) > 0 && ::read(status_fd, &st, sizeof st) == static_cast<ssize_t>(sizeof st)) status = st;
    }
    return status;
}

}  // namespace mk::machctl
