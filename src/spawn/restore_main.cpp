// spawn --restore=DIR: the supervisor of a machine restored from a checkpoint (machctl checkpoint).
// criu restores the process tree into fresh namespaces as this process's child (rst_sibling), so
// spawn is to it what it is to a container it started: it registers it with machd, forwards
// SIGTERM/SIGINT as SIGKILL (what a command container gets), and exits with its status.
#include "spawn/restore_main.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "core/base/error.hpp"
#include "core/base/id128.hpp"
#include "core/base/io.hpp"
#include "core/base/run_lock.hpp"
#include "core/criu/checkpoint.hpp"
#include "spawn/registration.hpp"

namespace mk::spawn {

bool is_restore(const std::vector<std::string>& args) {
    return args.size() > 1 && (args[1] == "--restore" || args[1].starts_with("--restore="));
}

namespace {

struct RestoreArgs {
    std::string dir, machine, criu;
    core::RegisterMode reg = core::RegisterMode::Auto;
    bool quiet = false;
    bool unlocked_mounts = false;  // --unlocked-mounts (core::criu::check_unlocked_mounts_accepted)
};

RestoreArgs parse(const std::vector<std::string>& args) {
    RestoreArgs r;
    for (size_t i = 1; i < args.size(); ++i) {
        const std::string& a = args[i];
        auto value = [&](std::string_view opt) -> std::string {
            if (a.size() > opt.size() && a.starts_with(opt) && a[opt.size()] == '=') return a.substr(opt.size() + 1);
            if (i + 1 >= args.size()) throw core::UsageError(std::string(opt) + " needs a value");
            return args[++i];
        };
        if (a == "--restore" || a.starts_with("--restore=")) r.dir = value("--restore");
        else if (a == "-M" || a == "--machine" || a.starts_with("--machine="))
            r.machine = value(a == "-M" ? "-M" : "--machine");
        else if (a == "--criu" || a.starts_with("--criu=")) r.criu = value("--criu");
        else if (a == "-q" || a == "--quiet") r.quiet = true;
        else if (a == "--unlocked-mounts") r.unlocked_mounts = true;
        else if (a == "--register" || a.starts_with("--register=")) {
            std::string v = value("--register");
            if (v == "yes") r.reg = core::RegisterMode::Yes;
            else if (v == "no") r.reg = core::RegisterMode::No;
            else if (v != "auto") throw core::UsageError("--register takes yes, no or auto");
        } else {
            throw core::UsageError(
                "'" + a +
                "' is not an option of spawn --restore (it takes -M NAME, --criu=CMD, --register=, --unlocked-mounts, -q)");
        }
    }
    if (r.dir.empty()) throw core::UsageError("--restore needs the checkpoint directory");
    return r;
}

}  // namespace

int restore_main(const std::vector<std::string>& args) {
    RestoreArgs a = parse(args);
    core::criu::CriuCommand criu = core::criu::criu_command(a.criu);

    // Cheap checks and the locks first: a name in use or a tree still run by the original machine
    // is refused before criu creates anything.
    core::UniqueFd dir(open(a.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir) throw core::UsageError(a.dir + " does not exist or is not a directory");
    core::criu::CheckpointRecord rec = core::criu::read_checkpoint(dir.get(), a.dir);
    dir.reset();
    std::string name = a.machine.empty() ? rec.machine : a.machine;
    core::RunLock name_lock = core::RunLock::try_take("machine/" + name);
    if (!name_lock)
        throw core::UsageError("machine name '" + name +
                               "' is already in use by a running container; restore with another NAME");
    struct stat st;
    if (stat(rec.root.c_str(), &st) < 0)
        throw core::UsageError("the checkpointed machine's root directory " + rec.root + " is gone");
    core::RunLock image_lock =
        core::RunLock::try_take("image/" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino));
    if (!image_lock)
        throw core::UsageError(rec.root +
                               " is in use by a running container (the original machine?); stop it before restoring");

    sigset_t mask;
    sigemptyset(&mask);
    for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, s);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    core::UniqueFd sfd(signalfd(-1, &mask, SFD_CLOEXEC));
    if (!sfd) core::throw_last_error("signalfd");

    core::criu::RestoreRequest req;
    req.image_dir = a.dir;
    req.machine = name;
    req.criu = criu;
    req.unlocked_mounts = a.unlocked_mounts;
    // A machine whose console was its own pty gets a new one: criu sends the master, and spawn
    // relays it as it relayed the old one (stdin in, stdout out).
    core::UniqueFd master;
    req.on_notify = [&](const std::string& script, int32_t, core::UniqueFd fd) {
        if (script == "orphan-pts-master") master = std::move(fd);
    };
    core::criu::Restored restored = core::criu::restore_machine(req);
    pid_t leader = restored.pid;
    core::SpawnSpec spec;
    spec.machine_name = name;
    spec.directory = rec.root;
    spec.register_mode = a.reg;
    try {
        if (should_register(spec)) {
            if (register_with_manager(spec, leader, core::id128_random_uuid()))
                core::criu::adopt_into_leader_cgroups(leader);
        }
    } catch (...) {
        // Nothing half-made: the restored tree dies with its PID 1.
        kill(leader, SIGKILL);
        (void)core::retry_eintr([&] { return waitpid(leader, nullptr, 0); });
        throw;
    }
    if (!a.quiet) fprintf(stderr, "Restored machine %s (PID %d) from %s.\n", name.c_str(), leader, a.dir.c_str());

    bool stdin_open = master.valid();
    for (;;) {
        if (master) {
            pollfd pf[3] = {{sfd.get(), POLLIN, 0}, {master.get(), POLLIN, 0}, {stdin_open ? 0 : -1, POLLIN, 0}};
            if (poll(pf, 3, -1) < 0) {
                if (errno == EINTR) continue;
                core::throw_last_error("poll");
            }
            char buf[4096];
            if (pf[1].revents) {
                ssize_t n = read(master.get(), buf, sizeof buf);
                if (n > 0) (void)core::write_all(STDOUT_FILENO, std::string_view(buf, static_cast<size_t>(n)));
                else if (n == 0 || (errno != EINTR && errno != EAGAIN)) master.reset();  // hung up (EIO)
            }
            if (master && pf[2].revents) {
                ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
                if (n > 0) (void)core::write_all(master.get(), std::string_view(buf, static_cast<size_t>(n)));
                else if (n == 0 || (errno != EINTR && errno != EAGAIN)) stdin_open = false;
            }
            if (!pf[0].revents) continue;
        }
        struct signalfd_siginfo si;
        ssize_t n = core::retry_eintr([&] { return read(sfd.get(), &si, sizeof si); });
        if (n != sizeof si) core::throw_last_error("read signalfd");
        if (si.ssi_signo != SIGCHLD) {
            kill(leader, SIGKILL);
            continue;
        }
        int status = 0;
        pid_t got;
        while ((got = waitpid(-1, &status, WNOHANG)) > 0) {
            if (got != leader) continue;  // helpers (machkit-register ready)
            if (WIFEXITED(status)) return WEXITSTATUS(status);
            return 128 + WTERMSIG(status);
        }
    }
}

}  // namespace mk::spawn
