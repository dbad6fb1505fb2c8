#include "machctl/pager.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/base/io.hpp"

namespace mk::machctl {

namespace {

pid_t g_pager = 0;
unsigned g_columns = 0;  // measured before fd 1 became the pager's pipe

unsigned measure_columns() {
    if (const char* c = std::getenv("COLUMNS")) {
        char* end = nullptr;
        unsigned long v = std::strtoul(c, &end, 10);
        if (*c && !*end && v > 0 && v < 100000) return static_cast<unsigned>(v);
    }
    winsize ws{};
    if (::isatty(STDOUT_FILENO) && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    return 0;
}

}  // namespace

unsigned terminal_columns() { return g_pager ? g_columns : measure_columns(); }

void pager_open(bool no_pager) {
    if (no_pager || g_pager || !::isatty(STDOUT_FILENO)) return;
    std::string pager;
    if (const char* p = std::getenv("SYSTEMD_PAGER")) pager = p;
    else if (const char* p2 = std::getenv("PAGER")) pager = p2;
    else pager = "less";
    if (pager.empty() || pager == "cat") return;
    g_columns = measure_columns();
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) < 0) return;  // no pager: print directly
    std::fflush(stdout);
    pid_t pid = ::fork();
    if (pid < 0) {
        ::close(fds[0]);
        ::close(fds[1]);
        return;
    }
    if (pid == 0) {
        ::dup2(fds[0], STDIN_FILENO);
        const char* less = std::getenv("SYSTEMD_LESS");
        ::setenv("LESS", less ? less : "FRSXMK", 1);
        // The pager survives machctl's ^C: less handles its own keys.
        ::signal(SIGINT, SIG_IGN);
        if (pager.find_first_of(" \t|;&<>$'\"") != std::string::npos) {
            ::execl("/bin/sh", "sh", "-c", pager.c_str(), static_cast<char*>(nullptr));
        } else {
            ::execlp(pager.c_str(), pager.c_str(), static_cast<char*>(nullptr));
            if (pager == "less") ::execlp("more", "more", static_cast<char*>(nullptr));
        }
        // No pager at all: pass the text through, as systemd's pager_open() falls back to cat.
        char buf[65536];
        for (ssize_t n; (n = ::read(STDIN_FILENO, buf, sizeof buf)) > 0;)
            if (::write(STDOUT_FILENO, buf, static_cast<size_t>(n)) < 0) break;
        _exit(0);
    }
    ::close(fds[0]);
    bool err_same = ::isatty(STDERR_FILENO);
    ::dup2(fds[1], STDOUT_FILENO);
    if (err_same) ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[1]);
    g_pager = pid;
}

void pager_close() {
    if (!g_pager) return;
    std::fflush(stdout);
    std::fflush(stderr);
    ::close(STDOUT_FILENO);
    ::close(STDERR_FILENO);
    int status = 0;
    core::retry_eintr([&] { return ::waitpid(g_pager, &status, 0); });
    g_pager = 0;
}

}  // namespace mk::machctl
