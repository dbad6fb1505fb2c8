// start, enable, disable: spawn@NAME.service through systemd, or machd's StartMachine without it.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "machctl/verbs.hpp"

#ifndef MK_UNITDIR
#define MK_UNITDIR "/lib/systemd/system"
#endif

namespace mk::machctl {
namespace {

bool systemd_booted() {
    struct stat st {};
    return ::lstat("/run/systemd/system", &st) == 0 && S_ISDIR(st.st_mode);
}

// Alive and not a zombie (spawn was reparented; its reaper may be slow).
bool process_alive(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string stat;
    if (!std::getline(f, stat)) return false;
    auto rp = stat.rfind(')');
    return rp != std::string::npos && rp + 2 < stat.size() && stat[rp + 2] != 'Z';
}

std::string tail_of(const std::string& path, size_t lines) {
    std::ifstream f(path);
    std::vector<std::string> all;
    std::string l;
    while (std::getline(f, l)) {
        all.push_back(l);
        if (all.size() > lines) all.erase(all.begin());
    }
    std::string s;
    for (const auto& x : all) s += "\n    " + x;
    return s;
}

std::string unit_root() {
    const char* r = std::getenv("MACHCTL_ROOT");  // for tests and image building: act on another tree
    return r ? r : "";
}

}  // namespace

namespace {

// --now: enable starts, disable powers off those that run (a stopped machine is not an error).
int enable_now(Context& c, const std::vector<std::string>& names, bool enable) {
    if (!c.opts.now) return 0;
    if (enable) return verb_start(c, names);
    std::vector<std::string> running;
    for (const auto& n : names)
        if (!machine_gone(c, n)) running.push_back(n);
    return running.empty() ? 0 : verb_poweroff(c, running);
}

}  // namespace

// start: systemd's spawn@NAME.service where systemd runs; else machd's StartMachine, then wait
// (bounded by --timeout, default 30 s) until spawn registered the machine, reporting spawn's own
// last words if it died first.
int verb_start(Context& c, const std::vector<std::string>& names) {
    double timeout = c.opts.timeout.value_or(kDefaultStopTimeout);
    if (systemd_booted() && c.client().systemd_present()) {
        for (const auto& n : names) {
            std::string unit = "spawn@" + n + ".service";
            bus_call("Failed to start " + unit, [&] { c.client().start_unit(unit); });
            // StartUnit returns with the job queued: wait for the registration or the unit's failure.
            auto started = std::chrono::steady_clock::now();
            auto deadline = started + std::chrono::duration<double>(timeout);
            bool seen_start = false;
            for (;;) {
                try {
                    auto path = c.client().machine_path(n);
                    if (prop_or<std::string>(c.client().properties(path, kMachineInterface), "State", "") == "running")
                        break;
                } catch (const ClientError& e) {
                    if (!is_no_such(e)) throw;
                }
                std::string state = c.client().unit_active_state(unit);
                // Until the job runs, the unit may still show its previous inactive/failed state.
                if (state == "activating" || state == "active") seen_start = true;
                bool settled = seen_start || std::chrono::steady_clock::now() - started > std::chrono::seconds(3);
                if (settled && (state == "failed" || state == "inactive"))
                    throw Failure("Failed to start machine " + n + ": " + unit + " is " + state + " (see 'journalctl -u " +
                                  unit + "')");
                if (std::chrono::steady_clock::now() >= deadline)
                    throw Failure("Machine " + n + " did not register within " +
                                  format_timespan(static_cast<uint64_t>(timeout * 1e6)) + " (" + unit + " is " + state +
                                  ")");
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
        }
        return 0;
    }
    for (const auto& n : names) {
        auto [pid, log] = bus_call("Failed to start machine " + n, [&] { return c.client().start_machine(n); });
        auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout);
        for (;;) {
            try {
                auto path = c.client().machine_path(n);
                if (prop_or<std::string>(c.client().properties(path, kMachineInterface), "State", "") == "running") break;
            } catch (const ClientError& e) {
                if (!is_no_such(e)) throw;
            }
            if (!process_alive(static_cast<pid_t>(pid)))
                throw Failure("Machine " + n + " failed to start; spawn exited (" + log + "):" + tail_of(log, 5));
            if (std::chrono::steady_clock::now() >= deadline)
                throw Failure("Machine " + n + " did not register within " +
                              format_timespan(static_cast<uint64_t>(timeout * 1e6)) + " (spawn PID " + std::to_string(pid) +
                              ", log " + log + ")");
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        if (!c.opts.quiet) std::fprintf(stderr, "Started machine %s (spawn PID %u, log %s).\n", n.c_str(), pid, log.c_str());
    }
    return 0;
}

// enable/disable as machinectl: the image must exist (enable); where systemd runs, its
// EnableUnitFiles/DisableUnitFiles make the links (machines.target included) and Reload makes it
// read them; without systemd machctl writes the same links itself.
int verb_enable(Context& c, const std::vector<std::string>& names, bool enable) {
    namespace fs = std::filesystem;
    for (const auto& n : names) {
        if (n.empty() || n.find('/') != std::string::npos || n.starts_with(".")) throw Failure("Invalid machine name: " + n);
        if (enable) bus_call("Failed to enable " + n, [&] { c.client().image_path(n); });
    }
    if (unit_root().empty() && systemd_booted() && c.client().systemd_present()) {
        std::vector<std::string> units;
        if (enable) units.push_back("machines.target");
        for (const auto& n : names) units.push_back("spawn@" + n + ".service");
        auto changes = bus_call(std::string("Failed to ") + (enable ? "enable" : "disable") + " units",
                                [&] { return c.client().enable_unit_files(units, enable); });
        if (!c.opts.quiet)
            for (const auto& ch : changes) {
                if (ch.type == "symlink")
                    std::fprintf(stderr, "Created symlink %s → %s.\n", ch.file.c_str(), ch.destination.c_str());
                else if (ch.type == "unlink") std::fprintf(stderr, "Removed \"%s\".\n", ch.file.c_str());
            }
        bus_call("Failed to reload daemon", [&] { c.client().reload_systemd(); });
        return enable_now(c, names, enable);
    }
    fs::path etc = unit_root() + "/etc/systemd/system";
    fs::path wants = etc / "machines.target.wants";
    std::error_code ec;
    for (const auto& n : names) {
        fs::path link = wants / ("spawn@" + n + ".service");
        if (enable) {
            fs::create_directories(wants, ec);
            if (ec) throw Failure("Failed to create " + wants.string() + ": " + ec.message());
            fs::remove(link, ec);
            fs::create_symlink(fs::path(MK_UNITDIR) / "spawn@.service", link, ec);
            if (ec) throw Failure("Failed to create " + link.string() + ": " + ec.message());
            if (!c.opts.quiet) std::fprintf(stderr, "Created symlink %s → %s/spawn@.service.\n", link.c_str(), MK_UNITDIR);
        } else {
            if (fs::remove(link, ec) && !c.opts.quiet) std::fprintf(stderr, "Removed \"%s\".\n", link.c_str());
            if (ec) throw Failure("Failed to remove " + link.string() + ": " + ec.message());
        }
    }
    // machines.target itself must be wanted at boot, or the links above do nothing (systemd#26162).
    fs::path target_link = etc / "multi-user.target.wants" / "machines.target";
    if (enable && !fs::is_symlink(target_link)) {
        fs::create_directories(target_link.parent_path(), ec);
        fs::create_symlink(fs::path(MK_UNITDIR) / "machines.target", target_link, ec);
        if (!ec && !c.opts.quiet)
            std::fprintf(stderr, "Created symlink %s → %s/machines.target.\n", target_link.c_str(), MK_UNITDIR);
    }
    return enable_now(c, names, enable);
}

}  // namespace mk::machctl
