// How a forked child tells its parent which step failed, and why: one fixed-size record
// {errno, step name, message} (as porto's TError::Serialize), written whole in one write()/send()
// on a CLOEXEC pipe or SEQPACKET socket. The channel closing without a record (exec, or a clean
// exit) means the child got through. Filling and sending a record allocate nothing, so a child may
// report between fork() and exec() (async-signal-safe). Used by the launcher's set-up channel and
// by StepPipe (step_pipe.hpp).
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

namespace mk::core {

struct ChildError {
    int32_t err = 0;         // errno of the failed call, 0 if none
    char step[48] = {};      // what the child was doing: "setns", "cannot mount the tree"...
    char message[440] = {};  // a full sentence, when the child could format one; may be empty

    // Truncates to the fields' sizes; `message` may be null.
    static ChildError make(const char* step, int err, const char* message = nullptr) noexcept {
        ChildError e;
        e.err = err;
        copy(e.step, sizeof e.step, step);
        copy(e.message, sizeof e.message, message);
        return e;
    }
    // The parent's sentence: the message when there is one, else "STEP: strerror".
    std::string what() const {
        std::string m(message, strnlen(message, sizeof message));
        if (!m.empty()) return m;
        std::string s(step, strnlen(step, sizeof step));
        return err ? s + ": " + std::strerror(err) : s;
    }
    std::string step_name() const { return std::string(step, strnlen(step, sizeof step)); }

    // Sends the record whole; MSG_NOSIGNAL on sockets, write() on pipes.
    void send_to(int fd) const noexcept {
        if (::send(fd, this, sizeof *this, MSG_NOSIGNAL) < 0 && errno == ENOTSOCK) (void)!::write(fd, this, sizeof *this);
    }
    // Reads one record (blocking, through EINTR); nullopt at EOF or on a short read.
    static std::optional<ChildError> receive_from(int fd) {
        ChildError e;
        ssize_t n;
        while ((n = ::read(fd, &e, sizeof e)) < 0 && errno == EINTR) {
        }
        if (n != static_cast<ssize_t>(sizeof e)) return std::nullopt;
        e.step[sizeof e.step - 1] = 0;
        e.message[sizeof e.message - 1] = 0;
        return e;
    }

private:
    static void copy(char* to, size_t size, const char* from) noexcept {
        if (!from) return;
        size_t n = strnlen(from, size - 1);
        std::memcpy(to, from, n);
        to[n] = 0;
    }
};

}  // namespace mk::core
