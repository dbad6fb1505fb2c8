// Errors as std::system_error carrying errno plus a message that says what failed.
#pragma once

#include <cerrno>
#include <string>
#include <system_error>

namespace mk::core {

// Throws std::system_error(err, what). `err` is a positive errno value.
[[noreturn]] void throw_errno(int err, const std::string& what);

// Throws with the current errno.
[[noreturn]] inline void throw_last_error(const std::string& what) { throw_errno(errno, what); }

// Returns `r` unless it is negative, in which case throws with errno.
template <typename T>
T check(T r, const std::string& what) {
    if (r < 0) throw_last_error(what);
    return r;
}

// A user-facing error: bad input, something the user can fix. Its what() is one line.
class UsageError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The message of an exception as one line for stderr ("what: strerror").
std::string describe(const std::exception& e);

}  // namespace mk::core
