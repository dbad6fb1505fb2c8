// OCI hooks (runtime-spec "POSIX-platform Hooks"): each runs on the host with the container's state
// JSON on stdin, its own argv and environment (exactly those: nothing inherited), and an optional
// timeout in seconds after which it is killed. The caller decides what a failure means: the spec
// makes createRuntime/createContainer/startContainer/prestart failures fatal and only logs
// poststart/poststop ones.
// Side effects: forks and waits. Not thread-safe.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace mk::runtime {

struct Hook {
    std::string path;               // absolute, on the host
    std::vector<std::string> args;  // argv, args[0] included; empty: {path}
    std::vector<std::string> env;
    std::optional<int> timeout;  // seconds
};

// Runs `h`; throws std::runtime_error naming the hook (`stage` is e.g. "createRuntime") when it
// cannot be started, exits non-zero, dies by a signal or outlives its timeout.
void run_hook(const Hook& h, const std::string& state_json, const std::string& stage);

}  // namespace mk::runtime
