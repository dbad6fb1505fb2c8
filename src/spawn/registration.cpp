#include "spawn/registration.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <csignal>
#include <cstring>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/id128.hpp"
#include "core/base/io.hpp"
#include "core/base/unique_fd.hpp"

extern char** environ;

namespace mk::spawn {
namespace {

// A rootless spawn registers with the user's `machd --user` on the session bus; root's with the
// system's machd, which takes registrations from root only (docs/rootless.md).
bool rootless() { return geteuid() != 0; }

const char* bus_variable() { return rootless() ? "DBUS_SESSION_BUS_ADDRESS" : "DBUS_SYSTEM_BUS_ADDRESS"; }

std::string bus_socket() {
    const char* addr = getenv(bus_variable());
    std::string fallback = "unix:path=/run/dbus/system_bus_socket";
    if (rootless()) {
        // sd-bus's default for the user bus.
        const char* runtime = getenv("XDG_RUNTIME_DIR");
        fallback = runtime && *runtime ? std::string("unix:path=") + runtime + "/bus" : "";
    }
    std::string a = addr && *addr ? addr : fallback;
    // Only the first address, and only unix:path= ones can be checked cheaply; others: assume there.
    if (auto semi = a.find(';'); semi != std::string::npos) a = a.substr(0, semi);
    if (!a.starts_with("unix:")) return "";
    auto p = a.find("path=");
    if (p == std::string::npos) return "";
    std::string path = a.substr(p + 5);
    if (auto comma = path.find(','); comma != std::string::npos) path = path.substr(0, comma);
    return path;
}

bool is_socket(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

// A user's machine manager (machd --user, or systemd >= 259's per-user machined) is there when its
// Varlink socket is: a stat, where asking the session bus would cost every rootless start on a
// desktop without one a helper run (~40 ms here).
bool user_manager_present() {
    const char* runtime = getenv("XDG_RUNTIME_DIR");
    return runtime && *runtime == '/' && is_socket(std::string(runtime) + "/systemd/machine/io.systemd.Machine");
}

}  // namespace

bool should_register(const core::SpawnSpec& spec) {
    if (spec.register_mode == core::RegisterMode::No) return false;
    if (spec.register_mode == core::RegisterMode::Yes) return true;
    if (rootless() && !user_manager_present()) return false;
    const char* addr = getenv(bus_variable());
    std::string sock = bus_socket();
    if (sock.empty()) return addr && *addr;
    return is_socket(sock);
}

std::string register_helper_path() {
    if (const char* e = getenv("MK_REGISTER_HELPER"); e && *e && getuid() == 0) return e;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = 0;
        std::string dir(self);
        dir = dir.substr(0, dir.rfind('/'));
        std::string cand = dir + "/machkit-register";
        if (access(cand.c_str(), X_OK) == 0) return cand;
    }
    return std::string(MK_LIBEXECDIR) + "/machkit-register";
}

bool register_with_manager(const core::SpawnSpec& spec, pid_t leader, const core::Uuid& uuid) {
    std::vector<std::string> args = {register_helper_path()};
    // Rootless: the leader already sits in the machine-NAME.scope spawn made in the user's delegated
    // group (or none); `machd --user` creates no scopes, it registers the one there.
    if (rootless()) args.insert(args.end(), {"--user", "register"});
    else args.emplace_back(spec.keep_unit ? "register" : "create");
    args.insert(args.end(), {spec.machine_name, std::to_string(leader), core::id128_to_string(uuid), spec.directory});
    if (!spec.slice.empty()) args.push_back("--slice=" + spec.slice);
    if (spec.start_mode == core::StartMode::Boot && spec.kill_signal > 0)
        args.push_back("--kill-signal=" + std::to_string(spec.kill_signal));
    for (const auto& p : spec.properties) args.push_back("--property=" + p);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) core::throw_last_error("pipe");
    core::UniqueFd rd(pipefd[0]), wr(pipefd[1]);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, wr.get(), STDERR_FILENO);
    pid_t pid;
    int err = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    wr.reset();
    if (err != 0) {
        if (spec.register_mode == core::RegisterMode::Yes)
            throw core::UsageError("cannot run " + args[0] + " to register with machd: " + strerror(err));
        return false;
    }
    std::string msg;
    char buf[512];
    ssize_t r;
    while ((r = read(rd.get(), buf, sizeof buf)) > 0 && msg.size() < 4096) msg.append(buf, static_cast<size_t>(r));
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == '\r')) msg.pop_back();
    if (auto nl = msg.find('\n'); nl != std::string::npos) msg = msg.substr(0, nl);
    int status = 0;
    core::retry_eintr([&] { return waitpid(pid, &status, 0); });
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    if (code == 0) return true;
    if (code == 3 && spec.register_mode != core::RegisterMode::Yes) return false;
    throw core::UsageError("cannot register machine '" + spec.machine_name + "' with machd: " + msg);
}

core::UniqueFd report_ready_async(const std::string& name) {
    std::vector<std::string> args = {register_helper_path()};
    if (rootless()) args.emplace_back("--user");
    args.insert(args.end(), {"ready", name});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // The launcher blocks the signals it reads from its signalfd; the helper gets a clean mask.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int err = posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (err != 0) return {};
    core::UniqueFd fd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
    if (!fd) {
        // No pidfds: wait here (the helper is one bus call).
        core::retry_eintr([&] { return waitpid(pid, nullptr, 0); });
    }
    return fd;
}

}  // namespace mk::spawn
