// Machine verbs: list, status, show, terminate, kill, poweroff/stop, reboot, pause/resume, wait,
// bind, copy-to/copy-from.
#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "core/base/names.hpp"
#include "machctl/journal.hpp"
#include "machctl/verbs.hpp"

namespace mk::machctl {
namespace {

std::string comm_of(uint64_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/comm");
    std::string s;
    std::getline(f, s);
    return s;
}

std::string cmdline_of(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
    std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    while (!s.empty() && s.back() == '\0') s.pop_back();
    for (auto& ch : s)
        if (ch == '\0') ch = ' ';
    return s.size() > 100 ? s.substr(0, 99) + "…" : s;
}

// The processes of the machine's unit: the unit's cgroup2 group found from the leader's cgroup
// (hybrid's unified mount or the pure cgroup2 root), walked depth first.
std::vector<pid_t> unit_processes(uint64_t leader, const std::string& unit) {
    std::vector<pid_t> out;
    std::ifstream f("/proc/" + std::to_string(leader) + "/cgroup");
    std::string line, path;
    while (std::getline(f, line))
        if (line.starts_with("0::")) path = line.substr(3);
    if (path.empty() || unit.empty()) return out;
    auto pos = path.find("/" + unit);
    if (pos == std::string::npos) return out;
    std::string rel = path.substr(0, pos + 1 + unit.size());
    std::string base =
        std::filesystem::exists("/sys/fs/cgroup/unified/cgroup.procs") ? "/sys/fs/cgroup/unified" : "/sys/fs/cgroup";
    std::function<void(const std::filesystem::path&, int)> walk = [&](const std::filesystem::path& dir, int depth) {
        if (depth > 16 || out.size() > 200) return;
        std::ifstream procs(dir / "cgroup.procs");
        pid_t p;
        while (procs >> p) out.push_back(p);
        std::error_code ec;
        for (const auto& e : std::filesystem::directory_iterator(dir, ec))
            if (e.is_directory(ec)) walk(e.path(), depth + 1);
    };
    walk(base + rel, 0);
    return out;
}

std::string host_path(const std::string& p) {
    if (p.starts_with("/")) return p;
    return (std::filesystem::current_path() / p).lexically_normal().string();
}

}  // namespace

int verb_list(Context& c, const std::vector<std::string>&) {
    auto machines = bus_call("Could not get machines", [&] { return c.client().list_machines(); });
    std::sort(machines.begin(), machines.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    std::vector<std::vector<std::string>> rows;
    json out = json::array();
    for (const auto& m : machines) {
        if (!c.opts.all && m.name.starts_with(".")) continue;
        std::map<std::string, std::string> os;
        std::vector<bus::Address> addrs;
        try {
            os = c.client().os_release(m.name);
        } catch (const ClientError& e) {
            if (e.kind != ClientError::Kind::remote) throw;
        }
        try {
            if (c.opts.max_addresses != 0) addrs = c.client().addresses(m.name);
        } catch (const ClientError& e) {
            if (e.kind != ClientError::Kind::remote) throw;
        }
        std::string id = get(os, "ID"), version = get(os, "VERSION_ID");
        // As machinectl 252: one address per line, at most --max-addresses lines with "…" after
        // the last when some are left out; JSON gets them all, newline-joined, or null.
        std::string all, text;
        size_t shown = 0;
        for (const auto& a : addrs) {
            auto s = address_to_string(a);
            all += (all.empty() ? "" : "\n") + s;
            if (c.opts.max_addresses >= 0 && shown >= static_cast<size_t>(c.opts.max_addresses)) continue;
            text += (text.empty() ? "" : "\n") + s;
            shown++;
        }
        if (shown < addrs.size()) text += "…";
        auto or_null = [](const std::string& s) { return s.empty() ? json(nullptr) : json(s); };
        std::vector<std::string> row = {m.name, m.klass, m.service.empty() ? "-" : m.service, id.empty() ? "-" : id,
                                        version.empty() ? "-" : version};
        json j = {{"machine", m.name},
                  {"class", m.klass},
                  {"service", or_null(m.service)},
                  {"os", or_null(id)},
                  {"version", or_null(version)}};
        if (c.opts.max_addresses != 0) {
            row.push_back(text.empty() ? "-" : text);
            j["addresses"] = or_null(all);  // a hidden column is not in the JSON either
        }
        rows.push_back(row);
        out.push_back(j);
    }
    if (c.is_json()) {
        c.emit_table_json(out);
        return 0;
    }
    std::vector<std::string> header = {"MACHINE", "CLASS", "SERVICE", "OS", "VERSION"};
    if (c.opts.max_addresses != 0) header.push_back("ADDRESSES");
    if (rows.empty()) {
        if (!c.opts.no_legend) std::printf("No machines.\n");
        return 0;
    }
    c.print_table(header, rows);
    if (!c.opts.no_legend) std::printf("\n%zu machines listed.\n", rows.size());
    return 0;
}

int verb_status(Context& c, const std::vector<std::string>& names) {
    json all = json::array();
    bool first = true;
    for (const auto& name : names) {
        auto path = bus_call("Could not get path to machine", [&] { return c.client().machine_path(name); });
        auto props = bus_call("Could not get properties", [&] { return c.client().properties(path, kMachineInterface); });
        std::map<std::string, std::string> os;
        std::vector<bus::Address> addrs;
        try {
            os = c.client().os_release(name);
        } catch (const ClientError& e) {
            if (e.kind != ClientError::Kind::remote) throw;
        }
        try {
            addrs = c.client().addresses(name);
        } catch (const ClientError& e) {
            if (e.kind != ClientError::Kind::remote) throw;
        }
        uint64_t leader = prop_or<uint64_t>(props, "Leader", 0);
        std::string unit = prop_or<std::string>(props, "Unit", "");
        auto pids = unit_processes(leader, unit);
        if (c.is_json()) {
            json j = props_json(props);
            j["OS"] = os;
            json a = json::array();
            for (const auto& x : addrs) a.push_back(address_to_string(x));
            j["Addresses"] = a;
            json procs = json::array();
            for (pid_t p : pids) procs.push_back({{"pid", p}, {"command", cmdline_of(p)}});
            j["Processes"] = procs;
            all.push_back(j);
            continue;
        }
        if (!first) std::printf("\n");
        first = false;
        auto id = prop_or<std::vector<uint8_t>>(props, "Id", {});
        std::printf("%s", name.c_str());
        if (!id.empty()) std::printf("(%s)", hex(id).c_str());
        std::printf("\n");
        uint64_t ts = prop_or<uint64_t>(props, "Timestamp", 0);
        if (ts) {
            auto now = static_cast<uint64_t>(
                std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
                    .count());
            std::printf("\t   Since: %s; %s ago\n", format_timestamp(ts).c_str(),
                        format_timespan(now > ts ? now - ts : 0).c_str());
        }
        if (leader) std::printf("\t  Leader: %llu (%s)\n", static_cast<unsigned long long>(leader), comm_of(leader).c_str());
        std::string service = prop_or<std::string>(props, "Service", ""), klass = prop_or<std::string>(props, "Class", "");
        if (!service.empty()) std::printf("\t Service: %s; class %s\n", service.c_str(), klass.c_str());
        std::string root = prop_or<std::string>(props, "RootDirectory", "");
        if (!root.empty()) std::printf("\t    Root: %s\n", root.c_str());
        auto ifaces = prop_or<std::vector<int64_t>>(props, "NetworkInterfaces", {});
        if (!ifaces.empty()) {
            std::string s;
            for (auto i : ifaces) s += (s.empty() ? "" : " ") + std::to_string(i);
            std::printf("\t   Iface: %s\n", s.c_str());
        }
        for (size_t i = 0; i < addrs.size(); i++)
            std::printf("\t%s%s\n", i == 0 ? " Address: " : "          ", address_to_string(addrs[i]).c_str());
        std::string pretty = get(os, "PRETTY_NAME");
        if (pretty.empty()) pretty = get(os, "NAME");
        if (!pretty.empty()) std::printf("\t      OS: %s\n", pretty.c_str());
        std::string state = prop_or<std::string>(props, "State", "");
        if (!state.empty()) std::printf("\t   State: %s\n", state.c_str());
        if (!unit.empty()) std::printf("\t    Unit: %s\n", unit.c_str());
        for (size_t i = 0; i < pids.size(); i++)
            std::printf("\t          %s%d %s\n", i + 1 == pids.size() ? "└─" : "├─", pids[i], cmdline_of(pids[i]).c_str());
        // As machinectl: the machine's last log lines after a blank line (-n, default 10).
        auto journal = last_journal_lines(machine_journal_dir(hex(id), root), c.opts.lines);
        if (!journal.empty()) std::printf("\n");
        for (const auto& l : journal) std::printf("%s\n", l.c_str());
    }
    if (c.is_json()) c.emit_json(names.size() == 1 && c.opts.output != Output::json_seq ? all[0] : all);
    return 0;
}

int verb_show(Context& c, const Args& names) { return show_objects(c, names, false); }

int verb_terminate(Context& c, const std::vector<std::string>& names) {
    for (const auto& n : names) bus_call("Could not terminate machine", [&] { c.client().terminate(n); });
    return 0;
}

int verb_kill(Context& c, const std::vector<std::string>& names) {
    std::string whom = c.opts.kill_whom == KillWhom::leader ? "leader" : "all";
    int sig = c.opts.signal.value_or(SIGTERM);
    for (const auto& n : names) bus_call("Could not kill machine", [&] { c.client().kill(n, whom, sig); });
    return 0;
}

// poweroff/stop: SIGRTMIN+4 to the leader (what systemd and spawn -b take as "power off"), wait
// up to --timeout, then TerminateMachine (machd escalates to SIGKILL), then SIGKILL everything.
// Never waits without saying so and never longer than the timeouts.
int verb_poweroff(Context& c, const std::vector<std::string>& names) {
    double timeout = c.opts.timeout.value_or(kDefaultStopTimeout);
    int sig = c.opts.signal.value_or(SIGRTMIN + 4);
    for (const auto& n : names) bus_call("Could not kill machine", [&] { c.client().kill(n, "leader", sig); });
    int rc = 0;
    for (const auto& n : names) {
        if (timeout > 0 && wait_gone(c, n, timeout)) continue;
        if (!c.opts.quiet)
            std::fprintf(stderr, "Machine %s did not power off within %gs, terminating it.\n", n.c_str(), timeout);
        try {
            c.client().terminate(n);
        } catch (const ClientError& e) {
            if (is_no_such(e)) continue;
            throw;
        }
        if (wait_gone(c, n, 15)) continue;
        if (!c.opts.quiet)
            std::fprintf(stderr, "Machine %s still running, sending SIGKILL to all its processes.\n", n.c_str());
        try {
            c.client().kill(n, "all", SIGKILL);
        } catch (const ClientError& e) {
            if (is_no_such(e)) continue;
            throw;
        }
        if (!wait_gone(c, n, 5)) {
            std::fprintf(stderr, "Machine %s could not be stopped.\n", n.c_str());
            rc = 1;
        }
    }
    return rc;
}

int verb_reboot(Context& c, const std::vector<std::string>& names) {
    for (const auto& n : names) bus_call("Could not reboot machine", [&] { c.client().kill(n, "leader", SIGINT); });
    return 0;
}

int verb_pause(Context& c, const std::vector<std::string>& names) {
    for (const auto& n : names) bus_call("Could not pause machine", [&] { c.client().pause(n); });
    return 0;
}

int verb_resume(Context& c, const std::vector<std::string>& names) {
    for (const auto& n : names) bus_call("Could not resume machine", [&] { c.client().resume(n); });
    return 0;
}

// wait: until each machine is ready (docs/machctl.md "wait"): machd's MachineReady, which spawn
// reports when the guest's init sent READY=1 (or, for inits that never do, when it started).
// Machines not registered yet are waited for too. --timeout bounds the whole verb (default: none).
// Against systemd-machined, which has no readiness, "registered and running" is the best there is.
int verb_wait(Context& c, const std::vector<std::string>& names) {
    for (const auto& n : names)
        if (!core::machine_name_is_valid(n)) throw Failure("Invalid machine name: " + n);
    double timeout = c.opts.timeout.value_or(0);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout);
    auto timed_out = [&](const std::string& n, const std::string& why) {
        return Failure("Timed out after " + format_timespan(static_cast<uint64_t>(timeout * 1e6)) + " waiting for machine " +
                       n + ": " + why);
    };
    bool extension = true;
    for (const auto& n : names) {
        if (extension) {
            uint64_t left_usec = 0;
            if (timeout > 0) {
                auto left =
                    std::chrono::duration_cast<std::chrono::microseconds>(deadline - std::chrono::steady_clock::now());
                left_usec = left.count() > 0 ? static_cast<uint64_t>(left.count()) : 1;
            }
            try {
                switch (c.client().wait_ready(n, left_usec)) {
                case MachineClient::ReadyWait::ready: continue;
                case MachineClient::ReadyWait::not_registered: throw timed_out(n, "no such machine is registered");
                case MachineClient::ReadyWait::not_ready:
                    throw timed_out(n,
                                    "it runs, but never reported READY=1 (its guest did not finish booting, "
                                    "or its manager does not report readiness)");
                }
            } catch (const ClientError& e) {
                // UnknownMethod/UnknownInterface: machined; AccessDenied: a policy without ours.
                bool no_extension = e.name.find(".Unknown") != std::string::npos || e.name == bus::kAccessDenied;
                if (e.kind != ClientError::Kind::remote || !no_extension) throw;
                extension = false;  // systemd-machined
            }
        }
        for (;;) {
            try {
                auto path = c.client().machine_path(n);
                auto props = c.client().properties(path, kMachineInterface);
                if (prop_or<std::string>(props, "State", "") == "running") break;
            } catch (const ClientError& e) {
                if (e.kind != ClientError::Kind::remote) throw;
            }
            if (timeout > 0 && std::chrono::steady_clock::now() >= deadline)
                throw timed_out(n, "it is not registered and running");
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    }
    return 0;
}

int verb_bind(Context& c, const std::vector<std::string>& a) {
    std::string src = host_path(a[1]), dst = a.size() > 2 ? a[2] : src;
    bus_call("Failed to bind mount", [&] { c.client().bind_mount(a[0], src, dst, c.opts.read_only, c.opts.mkdir); });
    return 0;
}

int verb_copy(Context& c, const std::vector<std::string>& a, bool to) {
    std::string src = a[1], dst = a.size() > 2 ? a[2] : a[1];
    if (to) src = host_path(src);
    else dst = host_path(dst);
    bus_call("Failed to copy", [&] { c.client().copy(to, a[0], src, dst, c.opts.force ? 1 : 0); });
    return 0;
}

}  // namespace mk::machctl
