#include "core/machine/launch.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <vector>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/base/names.hpp"
#include "core/base/unique_fd.hpp"
#include "core/machine/machine_error.hpp"

namespace mk::core {

std::string launchable_image_dir(const LaunchConfig& cfg, const std::string& name) {
    if (!machine_name_is_valid(name) || name.starts_with("."))
        throw_machine_error(MachineErrc::invalid_argument, "Invalid machine name: " + name);
    std::string dir = cfg.machines_dir + "/" + name;
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return dir;
    // An OCI image pulled as a layer stack (core/image/oci_store.hpp).
    if (::stat((dir + ".mstack").c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return dir + ".mstack";
    throw_errno(ENOENT, "No image directory " + dir + " for machine " + name);
}

bool image_is_oci(const LaunchConfig& cfg, const std::string& name) {
    struct stat st {};
    return ::stat((cfg.machines_dir + "/" + name + ".oci-config").c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Machine names are valid hostnames: no character needs unit-name escaping.
std::string launch_unit_name(const std::string& name) { return "spawn@" + name + ".service"; }

Launched launch_machine(const LaunchConfig& cfg, const std::string& name) {
    std::string dir = launchable_image_dir(cfg, name);
    // In a user namespace by default, as machines started through spawn@.service: root inside is
    // not root outside.
    // An OCI image runs its Entrypoint+Cmd (Parameters= of NAME.nspawn next to it), not an init.
    std::vector<std::string> args = {cfg.spawn_path, "--quiet", "--boot", "-U", "--console=passive", "-M", name, "-D", dir};
    if (image_is_oci(cfg, name)) args.erase(args.begin() + 2);
    return launch_detached(cfg, name, std::move(args));
}

Launched launch_detached(const LaunchConfig& cfg, const std::string& name, std::vector<std::string> args) {
    if (::mkdir(cfg.log_dir.c_str(), 0700) < 0 && errno != EEXIST) throw_last_error("mkdir " + cfg.log_dir);
    Launched out;
    out.log_path = cfg.log_dir + "/" + name + ".log";
    UniqueFd log(::open(out.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!log) throw_last_error("open " + out.log_path);
    UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    // Pipe: the grandchild's PID, then (only if exec fails) its errno; EOF at exec.
    int p[2];
    if (::pipe2(p, O_CLOEXEC) < 0) throw_last_error("pipe2");
    UniqueFd rd(p[0]), wr(p[1]);
    pid_t mid = ::fork();
    if (mid < 0) throw_last_error("fork");
    if (mid == 0) {
        rd.reset();
        ::setsid();
        pid_t child = ::fork();
        if (child < 0) _exit(1);
        if (child > 0) _exit(0);
        pid_t self = ::getpid();
        (void)!::write(wr.get(), &self, sizeof self);
        if (::dup2(null.get(), 0) < 0 || ::dup2(log.get(), 1) < 0 || ::dup2(log.get(), 2) < 0) _exit(1);
        // machd's descriptors are not spawn's business (its bus socket would outlive a restart).
        int keep = wr.get();
        if (keep > 3) ::syscall(SYS_close_range, 3u, static_cast<unsigned>(keep - 1), 0u);
        ::syscall(SYS_close_range, static_cast<unsigned>(keep + 1), ~0u, 0u);
        // machd blocks SIGTERM/SIGINT for its signalfd; spawn must get them.
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::execv(argv[0], argv.data());
        int e = errno;
        (void)!::write(wr.get(), &e, sizeof e);
        _exit(127);
    }
    wr.reset();
    pid_t child = 0;
    int e = 0;
    ssize_t n1 = ::read(rd.get(), &child, sizeof child);
    ssize_t n2 = ::read(rd.get(), &e, sizeof e);
    int status = 0;
    retry_eintr([&] { return ::waitpid(mid, &status, 0); });
    if (n1 != static_cast<ssize_t>(sizeof child)) throw_errno(ECHILD, "Failed to start spawn for machine " + name);
    if (n2 == static_cast<ssize_t>(sizeof e)) throw_errno(e, "Failed to execute " + cfg.spawn_path);
    out.pid = child;
    return out;
}

}  // namespace mk::core
