// checkpoint / restore: io.machkit.Manager1.CheckpointMachine and RestoreMachine (docs/criu.md).
// machd runs criu for the checkpoint; the restore runs in a spawn that machd starts detached and
// that stays as the restored machine's supervisor, so machctl waits until that spawn registered
// the machine, or exited (then its log says why).
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "machctl/verbs.hpp"

namespace mk::machctl {
namespace {

constexpr uint64_t kLeaveRunning = 1;
constexpr uint64_t kTcpEstablished = 2;
constexpr uint64_t kPreDump = 4;
constexpr uint64_t kUnlockedMounts = 1;  // RestoreMachine
constexpr double kDefaultRestoreTimeout = 30;

// machd resolves nothing relative to the caller: the directory goes as an absolute, normal path.
std::string absolute_dir(const std::string& d) {
    std::string p = std::filesystem::absolute(d).lexically_normal().string();
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    return p;
}

bool alive(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string stat;
    if (!std::getline(f, stat)) return false;
    auto rp = stat.rfind(')');
    return rp != std::string::npos && rp + 2 < stat.size() && stat[rp + 2] != 'Z';
}

std::string last_line(const std::string& path) {
    std::ifstream f(path);
    std::string l, last;
    while (std::getline(f, l))
        if (!l.empty()) last = l;
    return last;
}

}  // namespace

int verb_checkpoint(Context& c, const Args& a) {
    uint64_t flags = (c.opts.leave_running ? kLeaveRunning : 0) | (c.opts.tcp_established ? kTcpEstablished : 0) |
                     (c.opts.pre_dump ? kPreDump : 0);
    std::string dir = absolute_dir(a[1]);
    bus_call("Could not checkpoint machine " + a[0], [&] { c.client().checkpoint_machine(a[0], dir, flags); });
    if (!c.opts.quiet)
        std::fprintf(stderr, "Checkpointed machine %s to %s%s.\n", a[0].c_str(), dir.c_str(),
                     c.opts.leave_running ? " (left running)" : "");
    return 0;
}

int verb_restore(Context& c, const Args& a) {
    std::string dir = absolute_dir(a[0]);
    std::string name = a.size() > 1 ? a[1] : "";
    auto [pid, log] = bus_call("Could not restore from " + dir, [&] {
        return c.client().restore_machine(dir, name, c.opts.unlocked_mounts ? kUnlockedMounts : 0);
    });
    if (name.empty()) {
        // The checkpointed name: machd read it from the record; the log file is named after it.
        name = std::filesystem::path(log).stem().string();
    }
    double timeout = c.opts.timeout.value_or(kDefaultRestoreTimeout);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout);
    for (;;) {
        try {
            c.client().machine_path(name);
            break;
        } catch (const ClientError& e) {
            if (!is_no_such(e)) throw;
        }
        if (!alive(static_cast<pid_t>(pid))) {
            std::string why = last_line(log);
            if (why.starts_with("spawn: ")) why = why.substr(7);
            throw Failure("Could not restore from " + dir + ": " + (why.empty() ? "spawn exited (see " + log + ")" : why));
        }
        if (timeout > 0 && std::chrono::steady_clock::now() >= deadline)
            throw Failure("Machine " + name + " was not restored within the timeout (spawn PID " + std::to_string(pid) +
                          ", log " + log + ")");
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!c.opts.quiet)
        std::fprintf(stderr, "Restored machine %s from %s (spawn PID %u, log %s).\n", name.c_str(), dir.c_str(), pid,
                     log.c_str());
    return 0;
}

}  // namespace mk::machctl
