// machctl: the command line for machines, machinectl 252's verbs, options and output against
// machd (or systemd-machined) on the system bus. See docs/man/machctl.1.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <thread>

#include "bus/machine_client.hpp"
#include "core/base/error.hpp"
#include "core/base/unique_fd.hpp"
#include "machctl/cli.hpp"
#include "machctl/output.hpp"
#include "machctl/terminal.hpp"

#ifndef MK_UNITDIR
#define MK_UNITDIR "/lib/systemd/system"
#endif

namespace mk::machctl {
namespace {

using bus::ClientError;
using bus::MachineClient;
using core::UsageError;
using json = nlohmann::json;

constexpr const char* kMachineIface = "org.freedesktop.machine1.Machine";
constexpr const char* kImageIface = "org.freedesktop.machine1.Image";
constexpr const char* kManagerIface = "org.freedesktop.machine1.Manager";
constexpr const char* kManagerPath = "/org/freedesktop/machine1";
constexpr double kDefaultStopTimeout = 30;

// An error already phrased for the user ("Could not kill machine: No machine 'x' known").
struct Failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Context {
    Options opts;
    std::unique_ptr<MachineClient> client_;
    MachineClient& client() {
        if (!client_) client_ = std::make_unique<MachineClient>();
        return *client_;
    }
    bool is_json() const { return opts.output != Output::short_; }
    void emit_json(const json& j) const { std::fputs(format_json(j, opts.output).c_str(), stdout); }
};

// Runs a bus call; turns the daemon's error into "<what>: <message>". Connection problems pass
// through (main() phrases them once).
template <typename F>
auto bus_call(const std::string& what, F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (const ClientError& e) {
        if (e.kind != ClientError::Kind::remote) throw;
        std::string msg = e.what();
        if (e.name == "org.freedesktop.DBus.Error.AccessDenied") {
            // dbus-daemon's policy rejection is a paragraph about match rules; say it in a line.
            if (msg.starts_with("Rejected send message")) msg = "Access denied";
            msg += " (machctl needs root for this; try sudo)";
        }
        else if (e.name == "org.freedesktop.DBus.Error.UnknownMethod" || e.name == "org.freedesktop.DBus.Error.UnknownInterface")
            msg = "the machine manager on this bus does not implement this (it needs machd's io.machkit.Manager1)";
        throw Failure(what + ": " + msg);
    }
}

bool is_no_such(const ClientError& e) {
    return e.kind == ClientError::Kind::remote && e.name == "org.freedesktop.machine1.NoSuchMachine";
}

std::string get(const std::map<std::string, std::string>& m, const std::string& k) {
    auto it = m.find(k);
    return it == m.end() ? std::string() : it->second;
}

// ------------------------------------------------------------------------------------- list

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
        json jaddrs = json::array();
        std::string text;
        size_t shown = 0;
        for (const auto& a : addrs) {
            auto s = address_to_string(a);
            jaddrs.push_back(s);
            if (c.opts.max_addresses >= 0 && shown >= static_cast<size_t>(c.opts.max_addresses)) continue;
            text += (text.empty() ? "" : c.opts.full ? " " : " ") + s;
            shown++;
        }
        if (shown < addrs.size()) text += "…";
        std::vector<std::string> row = {m.name, m.klass, m.service.empty() ? "-" : m.service, id.empty() ? "-" : id,
                                        version.empty() ? "-" : version};
        if (c.opts.max_addresses != 0) row.push_back(text.empty() ? "-" : text);
        rows.push_back(row);
        out.push_back({{"machine", m.name}, {"class", m.klass}, {"service", m.service},
                       {"os", id.empty() ? json(nullptr) : json(id)},
                       {"version", version.empty() ? json(nullptr) : json(version)}, {"addresses", jaddrs}});
    }
    if (c.is_json()) {
        c.emit_json(out);
        return 0;
    }
    std::vector<std::string> header = {"MACHINE", "CLASS", "SERVICE", "OS", "VERSION"};
    if (c.opts.max_addresses != 0) header.push_back("ADDRESSES");
    if (rows.empty()) {
        if (!c.opts.no_legend) std::printf("No machines.\n");
        return 0;
    }
    std::fputs(format_table(header, rows, !c.opts.no_legend).c_str(), stdout);
    if (!c.opts.no_legend) std::printf("\n%zu machines listed.\n", rows.size());
    return 0;
}

// ---------------------------------------------------------------------------------- status

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
    std::string base = std::filesystem::exists("/sys/fs/cgroup/unified/cgroup.procs") ? "/sys/fs/cgroup/unified" : "/sys/fs/cgroup";
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

json props_json(const std::vector<bus::Property>& props) {
    json j = json::object();
    for (const auto& p : props) j[p.name] = property_json(p);
    return j;
}

const bus::Property* find_prop(const std::vector<bus::Property>& props, const std::string& name) {
    for (const auto& p : props)
        if (p.name == name) return &p;
    return nullptr;
}

template <typename T>
T prop_or(const std::vector<bus::Property>& props, const std::string& name, T dflt) {
    if (auto* p = find_prop(props, name))
        if (auto* v = std::get_if<T>(&p->value)) return *v;
    return dflt;
}

int verb_status(Context& c, const std::vector<std::string>& names) {
    json all = json::array();
    bool first = true;
    for (const auto& name : names) {
        auto path = bus_call("Could not get path to machine", [&] { return c.client().machine_path(name); });
        auto props = bus_call("Could not get properties", [&] { return c.client().properties(path, kMachineIface); });
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
                std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
            std::printf("\t   Since: %s; %s ago\n", format_timestamp(ts).c_str(), format_timespan(now > ts ? now - ts : 0).c_str());
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
    }
    if (c.is_json()) c.emit_json(names.size() == 1 && c.opts.output != Output::json_seq ? all[0] : all);
    return 0;
}

// ------------------------------------------------------------------------------------ show

// In machined 252's introspection order (the client orders them), as machinectl prints them
// against machined.
int print_props(Context& c, const std::vector<bus::Property>& props, bool& first, json& all) {
    auto wanted = [&](const bus::Property& p) {
        if (c.opts.properties.empty()) return true;
        return std::find(c.opts.properties.begin(), c.opts.properties.end(), p.name) != c.opts.properties.end();
    };
    if (c.is_json()) {
        json j = json::object();
        for (const auto& p : props)
            if (wanted(p)) j[p.name] = property_json(p);
        all.push_back(j);
        return 0;
    }
    if (!first) std::printf("\n");
    first = false;
    for (const auto& p : props) {
        if (!wanted(p)) continue;
        std::string v = property_text(p);
        if (v.empty() && !c.opts.all) continue;
        if (c.opts.value) std::printf("%s\n", v.c_str());
        else std::printf("%s=%s\n", p.name.c_str(), v.c_str());
    }
    return 0;
}

int show_objects(Context& c, const std::vector<std::string>& names, bool images) {
    bool first = true;
    json all = json::array();
    if (names.empty()) {
        auto props = bus_call("Could not get properties", [&] { return c.client().properties(kManagerPath, kManagerIface); });
        print_props(c, props, first, all);
    }
    for (const auto& name : names) {
        auto path = images ? bus_call("Could not get path to image", [&] { return c.client().image_path(name); })
                           : bus_call("Could not get path to machine", [&] { return c.client().machine_path(name); });
        auto props = bus_call("Could not get properties",
                              [&] { return c.client().properties(path, images ? kImageIface : kMachineIface); });
        print_props(c, props, first, all);
    }
    if (c.is_json()) c.emit_json(all.size() == 1 && c.opts.output != Output::json_seq ? all[0] : all);
    return 0;
}

int verb_show(Context& c, const std::vector<std::string>& names) { return show_objects(c, names, false); }
int verb_show_image(Context& c, const std::vector<std::string>& names) { return show_objects(c, names, true); }

// ---------------------------------------------------------------------- terminate, kill, ...

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

bool machine_gone(Context& c, const std::string& name) {
    try {
        c.client().machine_path(name);
        return false;
    } catch (const ClientError& e) {
        if (is_no_such(e)) return true;
        throw;
    }
}

bool wait_gone(Context& c, const std::string& name, double seconds) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (!machine_gone(c, name)) {
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return true;
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
        if (!c.opts.quiet) std::fprintf(stderr, "Machine %s still running, sending SIGKILL to all its processes.\n", n.c_str());
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

// wait: until each machine is registered and running; --timeout bounds it (default: no bound).
int verb_wait(Context& c, const std::vector<std::string>& names) {
    double timeout = c.opts.timeout.value_or(0);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout);
    for (const auto& n : names) {
        for (;;) {
            try {
                auto path = c.client().machine_path(n);
                auto props = c.client().properties(path, kMachineIface);
                if (prop_or<std::string>(props, "State", "") == "running") break;
            } catch (const ClientError& e) {
                if (e.kind != ClientError::Kind::remote) throw;
            }
            if (timeout > 0 && std::chrono::steady_clock::now() >= deadline)
                throw Failure("Timed out after " + format_timespan(static_cast<uint64_t>(timeout * 1e6)) +
                              " waiting for machine " + n);
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    }
    return 0;
}

// ---------------------------------------------------------------------------- shell, login

int exit_code(int status) {
    if (status < 0) return 255;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 255;
}

int verb_shell(Context& c, const std::vector<std::string>& args) {
    std::string name = args.empty() ? ".host" : args[0];
    std::string user = c.opts.uid;
    if (auto at = name.find('@'); at != std::string::npos) {
        if (user.empty()) user = name.substr(0, at);
        name = name.substr(at + 1);
    }
    if (name.empty()) name = ".host";
    std::string path;
    std::vector<std::string> argv;
    if (args.size() > 1) {
        argv.assign(args.begin() + 1, args.end());
        if (argv[0].starts_with("/")) {
            path = argv[0];
        } else {
            // machined wants an absolute path; let the guest's shell find the command on its PATH.
            path = "/bin/sh";
            argv.insert(argv.begin(), {"sh", "-c", "exec \"$0\" \"$@\""});
        }
    }
    std::vector<std::string> env;
    const bool tty = ::isatty(STDIN_FILENO) && ::isatty(STDOUT_FILENO);
    if (const char* term = std::getenv("TERM"); term && tty) env.push_back(std::string("TERM=") + term);
    env.insert(env.end(), c.opts.setenv.begin(), c.opts.setenv.end());

    if (!tty) {
        // Pipes: the command runs on machctl's own descriptors; only the status comes back. A closed
        // one (`machctl shell m cmd <&-`) becomes /dev/null: D-Bus cannot carry a missing fd.
        core::UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
        int io[3];
        for (int i = 0; i < 3; i++) io[i] = ::fcntl(i, F_GETFD) < 0 ? null.get() : i;
        int fd = -1;
        try {
            fd = c.client().exec(name, user, path, argv, env, io[0], io[1], io[2], false);
        } catch (const ClientError& e) {
            if (e.name != "org.freedesktop.DBus.Error.UnknownMethod" && e.name != "org.freedesktop.DBus.Error.UnknownInterface")
                return bus_call("Failed to run command", [&]() -> int { throw; });
            throw Failure("Failed to run command: without a terminal machctl needs machd's ExecMachine "
                          "(io.machkit.Manager1), which this machine manager does not offer");
        }
        core::UniqueFd status_fd(fd);
        int st = 0;
        ssize_t n;
        while ((n = ::read(status_fd.get(), &st, sizeof st)) < 0 && errno == EINTR) {
        }
        return exit_code(n == static_cast<ssize_t>(sizeof st) ? st : -1);
    }

    // Terminal: a pty from the machine's devpts; the command gets its slave (TIOCGPTPEER), we relay.
    try {
        auto [master_fd, pty_path] = bus_call("Failed to get PTY", [&] { return c.client().open_pty(name); });
        core::UniqueFd master(master_fd);
        core::UniqueFd slave(::ioctl(master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
        if (!slave) throw Failure(std::string("Failed to open the PTY's terminal side: ") + std::strerror(errno));
        int fd = c.client().exec(name, user, path, argv, env, slave.get(), slave.get(), slave.get(), true);
        core::UniqueFd status_fd(fd);
        slave.reset();
        if (!c.opts.quiet)
            std::fprintf(stderr, "Connected to machine %s. Press ^] three times within 1s to leave.\n", name.c_str());
        int rc = exit_code(relay_pty(master.get(), status_fd.get()));
        if (!c.opts.quiet) std::fprintf(stderr, "\nConnection to machine %s terminated.\n", name.c_str());
        return rc;
    } catch (const ClientError& e) {
        if (e.name != "org.freedesktop.DBus.Error.UnknownMethod" && e.name != "org.freedesktop.DBus.Error.UnknownInterface")
            return bus_call("Failed to get shell PTY", [&]() -> int { throw; });
    }
    // systemd-machined: OpenMachineShell, whose exit status nobody gets back.
    auto [master_fd, pty_path] = bus_call("Failed to get shell PTY", [&] {
        return c.client().open_shell(name, user, path, argv, env);
    });
    core::UniqueFd master(master_fd);
    relay_pty(master.get(), -1);
    return 0;
}

// OpenMachineLogin (machined: a getty started by the guest's systemd). Where the manager does not
// implement it (machd), the guest's own login(1) on a pty of its devpts through ExecMachine: a login
// prompt in any guest, systemd or not.
int verb_login(Context& c, const std::vector<std::string>& args) {
    std::string name = args.empty() ? ".host" : args[0];
    int master_fd = -1;
    try {
        master_fd = c.client().open_login(name).first;
    } catch (const ClientError& e) {
        bool unsupported = e.name == "org.freedesktop.DBus.Error.NotSupported" && name != ".host";
        if (!unsupported) return bus_call("Failed to get login PTY", [&]() -> int { throw; });
    }
    if (master_fd < 0) {
        if (!::isatty(STDIN_FILENO)) throw Failure("Failed to get login PTY: login needs a terminal on stdin");
        auto [fd, pty_path] = bus_call("Failed to get login PTY", [&] { return c.client().open_pty(name); });
        core::UniqueFd master(fd);
        core::UniqueFd slave(::ioctl(master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
        if (!slave) throw Failure(std::string("Failed to open the PTY's terminal side: ") + std::strerror(errno));
        std::vector<std::string> env;
        if (const char* term = std::getenv("TERM")) env.push_back(std::string("TERM=") + term);
        core::UniqueFd status_fd(bus_call("Failed to start login", [&] {
            return c.client().exec(name, "", "/bin/login", {"login"}, env, slave.get(), slave.get(), slave.get(), true);
        }));
        slave.reset();
        if (!c.opts.quiet)
            std::fprintf(stderr, "Connected to machine %s. Press ^] three times within 1s to exit session.\n", name.c_str());
        relay_pty(master.get(), status_fd.get());
        if (!c.opts.quiet) std::fprintf(stderr, "\nConnection to machine %s terminated.\n", name.c_str());
        return 0;
    }
    core::UniqueFd master(master_fd);
    if (!c.opts.quiet)
        std::fprintf(stderr, "Connected to machine %s. Press ^] three times within 1s to exit session.\n", name.c_str());
    relay_pty(master.get(), -1);
    return 0;
}

// ----------------------------------------------------------------------------- bind, copy

std::string host_path(const std::string& p) {
    if (p.starts_with("/")) return p;
    return (std::filesystem::current_path() / p).lexically_normal().string();
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

// ------------------------------------------------------------------ start, enable, disable

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
                    if (prop_or<std::string>(c.client().properties(path, kMachineIface), "State", "") == "running") break;
                } catch (const ClientError& e) {
                    if (!is_no_such(e)) throw;
                }
                std::string state = c.client().unit_active_state(unit);
                // Until the job runs, the unit may still show its previous inactive/failed state.
                if (state == "activating" || state == "active") seen_start = true;
                bool settled = seen_start || std::chrono::steady_clock::now() - started > std::chrono::seconds(3);
                if (settled && (state == "failed" || state == "inactive"))
                    throw Failure("Failed to start machine " + n + ": " + unit + " is " + state +
                                  " (see 'journalctl -u " + unit + "')");
                if (std::chrono::steady_clock::now() >= deadline)
                    throw Failure("Machine " + n + " did not register within " +
                                  format_timespan(static_cast<uint64_t>(timeout * 1e6)) + " (" + unit + " is " + state + ")");
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
                if (prop_or<std::string>(c.client().properties(path, kMachineIface), "State", "") == "running") break;
            } catch (const ClientError& e) {
                if (!is_no_such(e)) throw;
            }
            if (!process_alive(static_cast<pid_t>(pid)))
                throw Failure("Machine " + n + " failed to start; spawn exited (" + log + "):" + tail_of(log, 5));
            if (std::chrono::steady_clock::now() >= deadline)
                throw Failure("Machine " + n + " did not register within " +
                              format_timespan(static_cast<uint64_t>(timeout * 1e6)) + " (spawn PID " +
                              std::to_string(pid) + ", log " + log + ")");
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        if (!c.opts.quiet) std::fprintf(stderr, "Started machine %s (spawn PID %u, log %s).\n", n.c_str(), pid, log.c_str());
    }
    return 0;
}

std::string unit_root() {
    const char* r = std::getenv("MACHCTL_ROOT");  // for tests and image building: act on another tree
    return r ? r : "";
}

int verb_enable(Context& c, const std::vector<std::string>& names, bool enable) {
    namespace fs = std::filesystem;
    fs::path etc = unit_root() + "/etc/systemd/system";
    fs::path wants = etc / "machines.target.wants";
    std::error_code ec;
    for (const auto& n : names) {
        if (n.empty() || n.find('/') != std::string::npos || n.starts_with("."))
            throw Failure("Invalid machine name: " + n);
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
    if (c.opts.now) {
        if (enable) return verb_start(c, names);
        // Only those that run: disable --now of a stopped machine is not an error.
        std::vector<std::string> running;
        for (const auto& n : names)
            if (!machine_gone(c, n)) running.push_back(n);
        return running.empty() ? 0 : verb_poweroff(c, running);
    }
    return 0;
}

// ------------------------------------------------------------------------------- images

int verb_list_images(Context& c, const std::vector<std::string>&) {
    auto images = bus_call("Could not get images", [&] { return c.client().list_images(); });
    std::sort(images.begin(), images.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    std::vector<std::vector<std::string>> rows;
    json out = json::array();
    for (const auto& i : images) {
        if (!c.opts.all && i.name.starts_with(".")) continue;
        rows.push_back({i.name, i.type, i.read_only ? "yes" : "no", format_bytes(i.usage),
                        i.crtime ? format_timestamp(i.crtime) : "-", i.mtime ? format_timestamp(i.mtime) : "-"});
        out.push_back({{"name", i.name}, {"type", i.type}, {"ro", i.read_only},
                       {"usage", i.usage == UINT64_MAX ? json(nullptr) : json(i.usage)}, {"created", i.crtime},
                       {"modified", i.mtime}});
    }
    if (c.is_json()) {
        c.emit_json(out);
        return 0;
    }
    if (rows.empty()) {
        if (!c.opts.no_legend) std::printf("No images.\n");
        return 0;
    }
    std::fputs(format_table({"NAME", "TYPE", "RO", "USAGE", "CREATED", "MODIFIED"}, rows, !c.opts.no_legend).c_str(), stdout);
    if (!c.opts.no_legend) std::printf("\n%zu images listed.\n", rows.size());
    return 0;
}

int verb_image_status(Context& c, const std::vector<std::string>& names) {
    if (names.empty()) return show_objects(c, names, true);
    json all = json::array();
    bool first = true;
    for (const auto& name : names) {
        auto path = bus_call("Could not get path to image", [&] { return c.client().image_path(name); });
        auto props = bus_call("Could not get properties", [&] { return c.client().properties(path, kImageIface); });
        std::map<std::string, std::string> os;
        std::string hostname;
        try {
            os = c.client().image_os_release(name);
        } catch (const ClientError& e) {
            if (e.kind != ClientError::Kind::remote) throw;
        }
        try {
            hostname = c.client().image_hostname(name);
        } catch (const ClientError& e) {
            if (e.kind != ClientError::Kind::remote) throw;
        }
        if (c.is_json()) {
            json j = props_json(props);
            j["OS"] = os;
            j["Hostname"] = hostname;
            all.push_back(j);
            continue;
        }
        auto now = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
        auto when = [&](uint64_t t) {
            return format_timestamp(t) + (now > t ? "; " + format_timespan(now - t) + " ago" : "");
        };
        if (!first) std::printf("\n");
        first = false;
        std::printf("%s\n", name.c_str());
        std::printf("\t    Type: %s\n", prop_or<std::string>(props, "Type", "").c_str());
        std::printf("\t    Path: %s\n", prop_or<std::string>(props, "Path", "").c_str());
        if (!hostname.empty()) std::printf("\tHostname: %s\n", hostname.c_str());
        std::string pretty = get(os, "PRETTY_NAME");
        if (pretty.empty()) pretty = get(os, "NAME");
        if (!pretty.empty()) std::printf("\t      OS: %s\n", pretty.c_str());
        std::printf("\t      RO: %s\n", prop_or<bool>(props, "ReadOnly", false) ? "read-only" : "writable");
        if (auto t = prop_or<uint64_t>(props, "CreationTimestamp", 0)) std::printf("\t Created: %s\n", when(t).c_str());
        if (auto t = prop_or<uint64_t>(props, "ModificationTimestamp", 0)) std::printf("\tModified: %s\n", when(t).c_str());
        if (auto u = prop_or<uint64_t>(props, "Usage", UINT64_MAX); u != UINT64_MAX)
            std::printf("\t   Usage: %s\n", format_bytes(u).c_str());
        if (auto l = prop_or<uint64_t>(props, "Limit", UINT64_MAX); l != UINT64_MAX)
            std::printf("\t   Limit: %s\n", format_bytes(l).c_str());
    }
    if (c.is_json()) c.emit_json(all.size() == 1 && c.opts.output != Output::json_seq ? all[0] : all);
    return 0;
}

int verb_clone(Context& c, const std::vector<std::string>& a) {
    bus_call("Could not clone image", [&] { c.client().clone_image(a[0], a[1], c.opts.read_only); });
    return 0;
}

int verb_rename(Context& c, const std::vector<std::string>& a) {
    bus_call("Could not rename image", [&] { c.client().rename_image(a[0], a[1]); });
    return 0;
}

int verb_read_only(Context& c, const std::vector<std::string>& a) {
    bool ro = true;
    if (a.size() > 1) {
        const auto& v = a[1];
        if (v == "1" || v == "yes" || v == "true" || v == "on") ro = true;
        else if (v == "0" || v == "no" || v == "false" || v == "off") ro = false;
        else throw UsageError("Failed to parse read-only boolean: " + v);
    }
    bus_call("Could not mark image read-only", [&] { c.client().mark_image_read_only(a[0], ro); });
    return 0;
}

int verb_remove(Context& c, const std::vector<std::string>& names) {
    for (const auto& n : names) bus_call("Could not remove image", [&] { c.client().remove_image(n); });
    return 0;
}

int verb_set_limit(Context& c, const std::vector<std::string>& a) {
    uint64_t bytes = parse_bytes(a.back());
    if (a.size() == 1) bus_call("Could not set limit", [&] { c.client().set_pool_limit(bytes); });
    else bus_call("Could not set limit", [&] { c.client().set_image_limit(a[0], bytes); });
    return 0;
}

int verb_clean(Context& c, const std::vector<std::string>&) {
    auto removed = bus_call("Could not clean pool", [&] { return c.client().clean_pool(c.opts.all ? "all" : "hidden"); });
    if (c.is_json()) {
        json out = json::array();
        for (const auto& [n, sz] : removed) out.push_back({{"name", n}, {"size", sz}});
        c.emit_json(out);
        return 0;
    }
    if (c.opts.quiet) return 0;
    for (const auto& [n, sz] : removed) {
        if (sz == UINT64_MAX) std::fprintf(stderr, "Removed image '%s'\n", n.c_str());
        else std::fprintf(stderr, "Removed image '%s'. Freed exclusive disk space: %s\n", n.c_str(), format_bytes(sz).c_str());
    }
    std::fprintf(stderr, "Removed %zu images in total.\n", removed.size());
    return 0;
}

using Handler = std::function<int(Context&, const std::vector<std::string>&)>;

const std::map<std::string, Handler>& handlers() {
    static const std::map<std::string, Handler> h = {
        {"list", verb_list},
        {"status", verb_status},
        {"show", verb_show},
        {"start", verb_start},
        {"login", verb_login},
        {"shell", verb_shell},
        {"enable", [](Context& c, const std::vector<std::string>& a) { return verb_enable(c, a, true); }},
        {"disable", [](Context& c, const std::vector<std::string>& a) { return verb_enable(c, a, false); }},
        {"poweroff", verb_poweroff},
        {"stop", verb_poweroff},
        {"reboot", verb_reboot},
        {"restart", verb_reboot},
        {"terminate", verb_terminate},
        {"kill", verb_kill},
        {"pause", verb_pause},
        {"resume", verb_resume},
        {"wait", verb_wait},
        {"bind", verb_bind},
        {"copy-to", [](Context& c, const std::vector<std::string>& a) { return verb_copy(c, a, true); }},
        {"copy-from", [](Context& c, const std::vector<std::string>& a) { return verb_copy(c, a, false); }},
        {"list-images", verb_list_images},
        {"image-status", verb_image_status},
        {"show-image", verb_show_image},
        {"clone", verb_clone},
        {"rename", verb_rename},
        {"read-only", verb_read_only},
        {"remove", verb_remove},
        {"set-limit", verb_set_limit},
        {"clean", verb_clean},
    };
    return h;
}

}  // namespace
}  // namespace mk::machctl

int main(int argc, char** argv) {
    using namespace mk::machctl;
    std::vector<std::string> args(argv + 1, argv + argc);
    Context ctx;
    try {
        Invocation inv = parse(args);
        if (inv.opts.help) {
            std::fputs(help_text().c_str(), stdout);
            return 0;
        }
        if (inv.opts.version) {
            std::printf("machctl %s (machkit)\n", MK_VERSION);
            return 0;
        }
        ctx.opts = inv.opts;
        auto it = handlers().find(inv.verb);
        if (it == handlers().end()) throw mk::core::UsageError("Unknown command verb '" + inv.verb + "'.");
        int rc = it->second(ctx, inv.args);
        std::fflush(stdout);
        return rc;
    } catch (const mk::core::UsageError& e) {
        std::fprintf(stderr, "machctl: %s\nSee 'machctl --help'.\n", e.what());
        return 2;
    } catch (const Failure& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    } catch (const ClientError& e) {
        if (e.kind == ClientError::Kind::no_daemon)
            std::fprintf(stderr, "machd is not running: start it with 'machd' (or systemctl start machd).\n");
        else if (e.kind == ClientError::Kind::no_bus)
            std::fprintf(stderr, "%s (is dbus-daemon running? DBUS_SYSTEM_BUS_ADDRESS selects the bus)\n", e.what());
        else
            std::fprintf(stderr, "%s\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "machctl: %s\n", mk::core::describe(e).c_str());
        return 1;
    }
}
