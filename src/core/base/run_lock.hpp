// Named locks that only host root can reach: one file per lock in a root-only directory
// (/run/machkit/locks, 0700), locked with an open-file-description lock (fcntl F_OFD_SETLK).
//
// Why not an abstract AF_UNIX socket (what spawn used before): abstract names belong to a network
// namespace, so a container sharing the host's network, even under -U, could bind a name first and
// block that machine name on the host (issue 19 C). A file in a 0700 directory of the host's /run
// is out of every container's reach.
//
// Guarantees kept from the socket: the kernel drops the lock when the last fd of its open file
// description closes, so a SIGKILLed holder never leaves a stale lock; and a fork()ed child holding
// a copy of the fd keeps the lock held as long as it lives.
//
// Why OFD locks and not flock(2): both belong to the open file description and behave the same
// here, but F_OFD_GETLK asks whether someone holds a lock *without taking it*, so run_lock_held()
// never makes a concurrent try_take() fail.
//
// Files do not pile up: the holder unlinks its file while still holding the lock, and a taker
// re-checks after locking that the path still names the inode it locked (else it retries on the
// new file). A holder killed before it could unlink leaves an unlocked file, which the next taker of
// that key reuses or sweep_stale_run_locks() removes (under the same protocol).
//
// Thread-compatible. Side effects: creates the lock directory (and its parent) on first use.
#pragma once

#include <string>
#include <string_view>

#include "core/base/unique_fd.hpp"

namespace mk::core {

inline constexpr const char* kRunLockDir = "/run/machkit/locks";

class RunLock {
public:
    RunLock() noexcept = default;
    RunLock(RunLock&&) noexcept = default;
    RunLock& operator=(RunLock&& other) noexcept;
    RunLock(const RunLock&) = delete;
    RunLock& operator=(const RunLock&) = delete;
    // Unlinks the lock file (still holding the lock), then releases it.
    ~RunLock() { release(); }

    // Takes the lock named `key` without waiting. Returns an empty RunLock when another holder has
    // it. `key` is a short name such as "machine/NAME"; '/' is allowed, other path syntax is not.
    // Throws std::system_error when the directory cannot be made or is not root's and private.
    static RunLock try_take(std::string_view key, const std::string& dir = kRunLockDir);

    explicit operator bool() const noexcept { return fd_.valid(); }
    void release() noexcept;

private:
    UniqueFd dir_;
    UniqueFd fd_;
    std::string file_;
};

// Whether some process holds `key` now. Takes nothing; false when the directory or the file does
// not exist. Throws std::system_error on other failures.
bool run_lock_held(std::string_view key, const std::string& dir = kRunLockDir);

// Removes the files of locks nobody holds (left by holders that were killed). Best effort: never
// throws, skips what it cannot open.
void sweep_stale_run_locks(const std::string& dir = kRunLockDir) noexcept;

}  // namespace mk::core
