// How a forked helper says which of its steps failed, and why: the child writes a ChildError
// (child_error.hpp: step name + errno) to a CLOEXEC pipe and _exits (fail() is async-signal-safe);
// the write end closing without a report (exec, or a clean exit) means it got through. Used by the
// helpers that enter a machine's namespaces (shell, exec, bind, login).
#pragma once

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <optional>

#include "core/base/child_error.hpp"
#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::core {

using StepFailure = ChildError;

class StepPipe {
public:
    StepPipe() {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) < 0) throw_last_error("pipe2");
        rd_.reset(p[0]);
        wr_.reset(p[1]);
    }
    // fork(): the child keeps only the write end, the parent only the read end. Throws if fork fails.
    pid_t fork() {
        pid_t pid = ::fork();
        if (pid < 0) throw_last_error("fork");
        if (pid == 0) rd_.reset();
        else wr_.reset();
        return pid;
    }
    // In the child: report `step` (a constant the parent compares against) with the current
    // errno and exit 1.
    [[noreturn]] void fail(const char* step) const noexcept {
        ChildError::make(step, errno).send_to(wr_.get());
        _exit(1);
    }
    // In a child process that will not report (a waiter that outlives the reporting child).
    void close_writer() noexcept { wr_.reset(); }
    // In the parent: blocks until every holder of the write end closed it; the child's report, if any.
    std::optional<StepFailure> result() { return ChildError::receive_from(rd_.get()); }

private:
    UniqueFd rd_, wr_;
};

// waitpid() through EINTR; the exit code, or 128 + the signal that ended it.
inline int wait_exit_code(pid_t pid) {
    int status = 0;
    (void)retry_eintr([&] { return ::waitpid(pid, &status, 0); });
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace mk::core
