#include "runtime/commands.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <set>
#include <climits>
#include <cstdio>
#include <functional>
#include <iostream>
#include <utility>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/base/names.hpp"
#include "core/base/strings.hpp"
#include "core/kernel/capabilities.hpp"
#include "core/kernel/cgroup_resources.hpp"
#include "core/kernel/device_program.hpp"
#include "core/machine/exec.hpp"
#include "core/oci/state.hpp"
#include "core/spawn/finalize.hpp"
#include "core/spawn/launcher.hpp"
#include "core/spawn/oci_config.hpp"
#include "core/spawn/option_values.hpp"
#include "runtime/checkpoint.hpp"
#include "runtime/commands_detail.hpp"
#include "runtime/console_socket.hpp"
#include "runtime/exec.hpp"
#include "runtime/hooks.hpp"
#include "runtime/log.hpp"
#include "runtime/update_events.hpp"

namespace mk::runtime {
// Not anonymous: checkpoint.cpp shares these steps (commands_detail.hpp).
namespace detail {

using core::ContainerLock;
using core::ContainerState;
using core::ContainerStatus;
using core::OciStateDir;
using core::UniqueFd;
using core::UsageError;
using json = nlohmann::json;

std::string read_file(const std::string& path, size_t max, const std::string& what) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!fd) core::throw_last_error("cannot open " + what + " " + path);
    std::string out;
    char buf[16384];
    ssize_t n;
    while ((n = ::read(fd.get(), buf, sizeof buf)) > 0) {
        out.append(buf, static_cast<size_t>(n));
        if (out.size() > max) throw UsageError(what + " " + path + " is larger than " + std::to_string(max / 1024) + " KiB");
    }
    if (n < 0) core::throw_last_error("cannot read " + what + " " + path);
    return out;
}

void write_file_atomic(const std::string& path, const std::string& text) {
    std::string tmp = path + ".machrun-tmp";
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!fd || ::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
        core::throw_last_error("cannot write " + path);
    if (::rename(tmp.c_str(), path.c_str()) < 0) {
        int e = errno;
        ::unlink(tmp.c_str());
        core::throw_errno(e, "cannot write " + path);
    }
}

std::string need_id(const Invocation& inv) {
    if (inv.args.empty()) throw UsageError("'" + inv.command + "' needs a container id");
    return inv.args[0];
}

void no_more_args(const Invocation& inv, size_t n) {
    if (inv.args.size() > n) throw UsageError("unexpected argument '" + inv.args[n] + "' for '" + inv.command + "'");
}

// process.consoleSize (height, width) on a pty master, before it is handed over.
void set_window_size(int master, std::pair<unsigned, unsigned> size) {
    winsize ws{};
    ws.ws_row = static_cast<unsigned short>(size.first);
    ws.ws_col = static_cast<unsigned short>(size.second);
    if (::ioctl(master, TIOCSWINSZ, &ws) < 0) core::throw_last_error("cannot set the terminal's size");
}

// ---- cgroups --------------------------------------------------------------------------------
// The container's group lives on the cgroup2 hierarchy (the host's root on a unified host, the
// hybrid host's /sys/fs/cgroup/unified): that is where pause (cgroup.freeze), ps and kill --all
// work on every layout. Resource limits on the v1 controllers of a hybrid host are applied by
// the config front end's cgroup step.

std::string cgroup2_root(const std::string& root) {
    if (::access((root + "/unified/cgroup.procs").c_str(), F_OK) == 0) return root + "/unified";
    if (::access((root + "/cgroup.controllers").c_str(), F_OK) == 0) return root;
    return {};
}

// Makes base/path (and missing parents); returns whether the leaf was made by us.
bool make_group_dir(const std::string& base, const std::string& path) {
    std::string dir = base;
    bool made = false;
    for (auto part : core::split(path, '/')) {
        if (part.empty()) continue;
        dir += "/" + std::string(part);
        made = ::mkdir(dir.c_str(), 0755) == 0;
        if (!made && errno != EEXIST) core::throw_last_error("cannot create the cgroup " + dir);
    }
    return made;
}

// A new v1 cpuset group has empty cpuset.cpus and cpuset.mems, and nothing can join it: each
// level from the hierarchy's root down to the container's group takes its parent's where empty
// (runc does the same), before the plan writes the container's own.
void fill_v1_cpuset(const std::string& hierarchy, const std::string& path) {
    std::string dir = hierarchy;
    for (auto part : core::split(path, '/')) {
        if (part.empty()) continue;
        std::string parent = dir;
        dir += "/" + std::string(part);
        for (const char* file : {"/cpuset.cpus", "/cpuset.mems"}) {
            std::string mine = read_file(dir + file, 64 * 1024, "the cpuset");
            if (mine.find_first_not_of(" \n") != std::string::npos) continue;
            std::string theirs = read_file(parent + file, 64 * 1024, "the cpuset");
            UniqueFd fd(::open((dir + file).c_str(), O_WRONLY | O_CLOEXEC));
            if (!fd || ::write(fd.get(), theirs.data(), theirs.size()) < 0)
                core::throw_last_error("cannot write " + dir + file);
        }
    }
}

bool make_cgroup(const std::string& root, const std::string& path) {
    std::string base = cgroup2_root(root);
    if (base.empty())
        throw UsageError("no cgroup2 hierarchy is mounted under " + root + "; machrun needs one (unified or hybrid)");
    return make_group_dir(base, path);
}

void join_group_dir(const std::string& dir, pid_t pid) {
    std::string procs = dir + "/cgroup.procs";
    UniqueFd fd(::open(procs.c_str(), O_WRONLY | O_CLOEXEC));
    std::string v = std::to_string(pid);
    if (!fd || ::write(fd.get(), v.data(), v.size()) < 0) core::throw_last_error("cannot move the container into " + procs);
}

void place_in_cgroup(const std::string& root, const std::string& path, pid_t pid) {
    join_group_dir(cgroup2_root(root) + path, pid);
}

// Every process in the group and its children.
std::vector<pid_t> cgroup_pids(const std::string& root, const std::string& path) {
    std::vector<pid_t> out;
    std::function<void(const std::string&, int)> walk = [&](const std::string& dir, int depth) {
        if (depth > 64) return;
        FILE* f = ::fopen((dir + "/cgroup.procs").c_str(), "re");
        if (f) {
            long p;
            while (fscanf(f, "%ld", &p) == 1) out.push_back(static_cast<pid_t>(p));
            fclose(f);
        }
        DIR* d = ::opendir(dir.c_str());
        if (!d) return;
        while (dirent* e = readdir(d))
            if (e->d_type == DT_DIR && e->d_name[0] != '.') walk(dir + "/" + e->d_name, depth + 1);
        closedir(d);
    };
    std::string base = cgroup2_root(root);
    if (!base.empty()) walk(base + path, 0);
    return out;
}

// Removes the group with its sub-groups, deepest first. Processes that were SIGKILLed leave it
// as they exit: retried for a bounded time.
void remove_group_dir(const std::string& top) {
    std::function<void(const std::string&, int)> rm = [&](const std::string& dir, int depth) {
        if (depth > 64) return;
        if (DIR* d = ::opendir(dir.c_str())) {
            std::vector<std::string> subs;
            while (dirent* e = readdir(d))
                if (e->d_type == DT_DIR && e->d_name[0] != '.') subs.push_back(dir + "/" + e->d_name);
            closedir(d);
            for (const auto& s : subs) rm(s, depth + 1);
        }
        for (int i = 0; i < 200; i++) {
            if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return;
            if (errno != EBUSY) core::throw_last_error("cannot remove the cgroup " + dir);
            ::usleep(10000);
        }
        core::throw_errno(EBUSY, "cannot remove the cgroup " + dir + ": processes are still in it");
    };
    rm(top, 0);
}

void remove_cgroup(const std::string& root, const std::string& path) {
    std::string base = cgroup2_root(root);
    if (base.empty() || path.empty()) return;
    remove_group_dir(base + path);
}

// The init's groups in the v1 hierarchies, from /proc/PID/cgroup: an exec joins all of them, so
// the limits there (pids, memory, devices...) hold for it too.
std::vector<std::string> v1_groups_of(const ContainerState& st) {
    std::vector<std::string> out;
    core::CgroupMounts mounts = core::detect_cgroup_mounts(st.cgroup_root);
    if (mounts.v1_dirs.empty()) return out;
    std::string text = read_file("/proc/" + std::to_string(st.pid) + "/cgroup", 64 * 1024, "the container's cgroups");
    for (auto line : core::split(text, '\n')) {
        // "4:cpu,cpuacct:/path"; cgroup2 is "0::/path", named hierarchies "1:name=systemd:/path".
        auto parts = core::split(line, ':');
        if (parts.size() < 3 || parts[1].empty() || parts[1].starts_with("name=")) continue;
        std::string controller(core::split(parts[1], ',')[0]);
        std::string base = mounts.v1_dir(controller);
        std::string path(line.substr(parts[0].size() + parts[1].size() + 2));
        if (!base.empty() && std::find(out.begin(), out.end(), base + path) == out.end()) out.push_back(base + path);
    }
    return out;
}

// The v1 groups machrun made for linux.resources (ContainerState::v1_cgroups).
void remove_v1_groups(const ContainerState& st) {
    for (const auto& dir : st.v1_cgroups) remove_group_dir(dir);
}

core::Machine machine_of(const ContainerState& s) {
    core::Machine m;
    m.name = s.id;
    m.klass = core::MachineClass::container;
    m.leader = s.pid;
    m.cgroup_path = s.cgroup;
    return m;
}

// ---- processes ------------------------------------------------------------------------------

// A pidfd for the container's init, or an empty fd if that process is gone (checked against the
// recorded start time, so a reused pid is never signalled).
UniqueFd open_init(const ContainerState& s) {
    if (s.pid <= 0) return {};
    UniqueFd fd(static_cast<int>(syscall(SYS_pidfd_open, s.pid, 0)));
    if (!fd) return {};
    std::string stat;
    try {
        stat = read_file("/proc/" + std::to_string(s.pid) + "/stat", 4096, "process status");
    } catch (...) {
        return {};
    }
    if (core::stat_start_time(stat) != s.pid_start) return {};
    return fd;
}

uint64_t start_time_of(pid_t pid) {
    auto t = core::stat_start_time(read_file("/proc/" + std::to_string(pid) + "/stat", 4096, "process status"));
    if (!t) throw std::runtime_error("cannot read the start time of process " + std::to_string(pid));
    return *t;
}

// Waits (bounded) until the process behind `pidfd` has exited.
bool wait_exit(int pidfd, int timeout_ms) {
    pollfd pf{pidfd, POLLIN, 0};
    int r;
    r = core::retry_eintr([&] { return poll(&pf, 1, timeout_ms); });
    return r > 0;
}

void signal_all(const ContainerState& s, int sig) {
    for (pid_t p : cgroup_pids(s.cgroup_root, s.cgroup)) ::kill(p, sig);
}

// ---- hooks ----------------------------------------------------------------------------------

core::SpawnSpec spec_of(const ContainerState& s) { return core::parse_oci_config(s.config, s.bundle); }

std::vector<Hook> hooks_for(const core::SpawnSpec& spec, std::string_view stage) {
    const core::OciHooks& h = spec.oci.hooks;
    const std::vector<core::OciHook>* list = nullptr;
    if (stage == "prestart") list = &h.prestart;
    else if (stage == "createRuntime") list = &h.create_runtime;
    else if (stage == "createContainer") list = &h.create_container;
    else if (stage == "startContainer") list = &h.start_container;
    else if (stage == "poststart") list = &h.poststart;
    else if (stage == "poststop") list = &h.poststop;
    else throw std::logic_error("unknown hook stage " + std::string(stage));
    std::vector<Hook> out;
    for (const auto& o : *list) out.push_back(Hook{o.path, o.args, o.env, o.timeout});
    return out;
}

void run_hooks(const core::SpawnSpec& spec, std::string_view stage, const std::string& state_json, bool fatal) {
    for (const auto& h : hooks_for(spec, stage)) {
        try {
            run_hook(h, state_json, std::string(stage));
        } catch (const std::exception& e) {
            if (fatal) throw;
            log_warning(e.what());
        }
    }
}

// ---- create / start -------------------------------------------------------------------------

// A machine name (the launcher's hostname default and lock name) from an OCI id: the id itself when
// it is one (engines' 64-hex ids are), else the id with other characters made '-'.
std::string machine_name_for(const std::string& id) {
    if (core::machine_name_is_valid(id)) return id;
    std::string n;
    for (char c : id.substr(0, core::kHostNameMax)) n += (std::isalnum(static_cast<unsigned char>(c)) ? c : '-');
    while (!n.empty() && n.front() == '-') n.erase(0, 1);
    while (!n.empty() && n.back() == '-') n.pop_back();
    return core::machine_name_is_valid(n) ? n : "machrun";
}

struct Created {
    ContainerState state;
    pid_t pid = 0;
};

// Cleans up a create that failed half way: the init (if any), the cgroup, the state directory.
Bundle load_bundle(const Invocation& inv) {
    Bundle b;
    b.dir = inv.value("bundle", ".");
    char real[PATH_MAX];
    if (!::realpath(b.dir.c_str(), real)) core::throw_last_error("cannot find the bundle " + b.dir);
    b.dir = real;
    b.config = read_file(b.dir + "/config.json", core::kOciConfigMax, "the bundle's config");
    b.spec = core::parse_oci_config(b.config, b.dir);
    // process.consoleSize: machrun sizes the pty it hands to --console-socket.
    b.console_size = std::exchange(b.spec.oci.console_size, std::nullopt);
    // machrun runs the hooks and places the container in linux.cgroupsPath with linux.resources.
    if (auto field = core::oci_unapplied_field(b.spec, core::OciFrontEndHandles{.hooks = true, .cgroups = true}))
        throw UsageError("OCI config field '" + *field + "' is not supported by machrun");
    b.console_socket = inv.value("console-socket");
    b.terminal = b.spec.console == core::ConsoleMode::Interactive;
    if (b.terminal && b.console_socket.empty())
        throw UsageError("process.terminal is set: --console-socket is needed to hand over the terminal");
    if (!b.terminal && !b.console_socket.empty())
        throw UsageError("--console-socket given, but process.terminal is not set in config.json");
    return b;
}

GroupPlan plan_container_groups(const core::SpawnSpec& spec) {
    GroupPlan plan;
    plan.mounts = core::detect_cgroup_mounts(kCgroupRoot);
    core::OciResources resources = spec.oci.resources;
    // Every container gets device rules, as runc's managers give them: config.json's (none: deny
    // all) and runc's defaults after them, as a device program on a cgroup2 host and in a devices
    // group of its own with the v1 controller. A bundle without rules reaches no other device.
    if (resources.devices.empty()) resources.devices.push_back(core::OciDeviceRule{});  // {}: deny all
    auto defaults = core::oci_default_device_rules();
    resources.devices.insert(resources.devices.end(), defaults.begin(), defaults.end());
    resources.present = true;
    if (resources.present) plan.writes = core::plan_cgroup_resources(resources, plan.mounts.controllers);
    plan.device_program = core::plan_device_program(resources.devices, plan.mounts.controllers);
    return plan;
}

// Attaches the loaded device program `prog` to the container's cgroup2 group in place of the
// group's previous one (if any). The group holds it: it goes with the group at delete.
void attach_device_rules(const std::string& root, const std::string& path, const UniqueFd& prog) {
    std::string dir = cgroup2_root(root) + path;
    UniqueFd group(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!group) core::throw_last_error("cannot open the cgroup " + dir);
    core::attach_device_program(group.get(), prog.get());
}

std::vector<std::string> make_container_groups(const OciStateDir& dir, ContainerState& st, const GroupPlan& plan,
                                               const std::string& cgroup) {
    st.own_cgroup = make_cgroup(kCgroupRoot, cgroup);
    st.cgroup = cgroup;
    std::vector<std::string> v1_groups = core::cgroup_v1_groups(plan.writes, plan.mounts, cgroup);
    dir.write(st);
    for (const auto& g : v1_groups) {
        // Recorded at once: a failure (or a crash) removes exactly what was made.
        if (make_group_dir("", g)) {
            st.v1_cgroups.push_back(g);
            dir.write(st);
        }
    }
    if (std::string cpuset = plan.mounts.v1_dir("cpuset");
        !cpuset.empty() && std::ranges::find(v1_groups, cpuset + cgroup) != v1_groups.end())
        fill_v1_cpuset(cpuset, cgroup);
    if (!plan.writes.empty()) core::apply_cgroup_writes(plan.writes, plan.mounts, cgroup);
    // Before the init joins the group: it never runs unfiltered.
    if (plan.device_program) attach_device_rules(kCgroupRoot, cgroup, core::load_device_program(*plan.device_program));
    return v1_groups;
}

void undo_container(const OciStateDir& dir, const ContainerState& st, const char* command) noexcept {
    try {
        if (st.own_cgroup) {
            signal_all(st, SIGKILL);
            remove_cgroup(st.cgroup_root, st.cgroup);
        }
        remove_v1_groups(st);
        dir.remove(st.id);
    } catch (const std::exception& e) {
        log_warning(std::string("cleaning up after the failed ") + command + ": " + e.what() +
                    "; run 'machrun delete --force " + st.id + "'");
    }
}

struct CreateRollback {
    const OciStateDir& dir;
    ContainerState& st;
    bool armed = true;
    ~CreateRollback() {
        if (!armed) return;
        try {
            if (UniqueFd init = open_init(st)) {
                syscall(SYS_pidfd_send_signal, init.get(), SIGKILL, nullptr, 0);
                wait_exit(init.get(), 2000);
            }
        } catch (const std::exception&) {
            // No init to kill (gone, or never recorded): the groups and the state still go.
        }
        undo_container(dir, st, "create");
    }
};

Created do_create(const Invocation& inv, const OciStateDir& dir) {
    std::string id = need_id(inv);
    no_more_args(inv, 1);
    if (inv.flag("preserve-fds") && inv.value("preserve-fds") != "0")
        throw UsageError("--preserve-fds is not supported yet; pass 0 or leave it out");
    auto [bundle, config, spec, console_size, console_socket, terminal] = load_bundle(inv);
    spec.machine_name = machine_name_for(id);
    spec.quiet = true;
    spec.register_mode = core::RegisterMode::No;
    std::string cgroup = core::oci_cgroup_path(spec.oci.cgroups_path, inv.global.systemd_cgroup, id);
    GroupPlan groups = plan_container_groups(spec);

    core::finalize(spec);
    ContainerLock lock = dir.create(id);
    ContainerState st;
    st.id = id;
    st.bundle = bundle;
    st.rootfs = spec.directory;
    st.created = core::rfc3339_now();
    st.owner = "";
    st.config = config;
    st.cgroup_root = kCgroupRoot;
    CreateRollback rollback{dir, st};

    // The gate: mode 0622 as runc's, so an init that switched to another user can still open it
    // for writing (through its own fd, never by the path, which it cannot reach).
    std::string fifo = dir.fifo_path(id);
    if (::mkfifo(fifo.c_str(), 0622) < 0) core::throw_last_error("cannot create the exec FIFO " + fifo);
    ::chmod(fifo.c_str(), 0622);  // past the umask
    UniqueFd gate(::open(fifo.c_str(), O_PATH | O_CLOEXEC));
    if (!gate) core::throw_last_error("cannot open the exec FIFO " + fifo);

    std::vector<std::string> v1_groups = make_container_groups(dir, st, groups, cgroup);

    Created out;
    core::LaunchHooks hooks;
    core::DetachedLaunch d;
    d.exec_gate = gate.get();
    d.cloned = [&](pid_t pid) {
        // Recorded before the init can outlive us: from here on `delete --force` finds it.
        st.pid = pid;
        st.pid_start = start_time_of(pid);
        dir.write(st);
        place_in_cgroup(kCgroupRoot, cgroup, pid);
        for (const auto& g : v1_groups) join_group_dir(g, pid);
    };
    d.gated = [&](pid_t pid, UniqueFd master) {
        out.pid = pid;
        if (!master) return;
        if (console_size) set_window_size(master.get(), *console_size);
        send_console_master(console_socket, master.get(), "/dev/console");
    };
    hooks.detached = std::move(d);
    core::Launcher(spec, std::move(hooks)).run();
    if (out.pid <= 0) throw std::runtime_error("the container's init did not reach the exec gate");

    std::string state_json = core::oci_state_json(st, ContainerStatus::Created, false);
    // runc runs these in create, in this order; prestart is the deprecated twin of createRuntime.
    run_hooks(spec, "prestart", state_json, true);
    run_hooks(spec, "createRuntime", state_json, true);
    run_hooks(spec, "createContainer", state_json, true);
    if (std::string pid_file = inv.value("pid-file"); !pid_file.empty())
        write_file_atomic(pid_file, std::to_string(out.pid));
    rollback.armed = false;
    out.state = st;
    return out;
}

// Opens the gate: the init, blocked in open() of the FIFO for writing, writes one byte and execs.
void release_gate(const OciStateDir& dir, const ContainerState& st) {
    UniqueFd init = open_init(st);
    if (!init) throw UsageError("container '" + st.id + "' has stopped before it was started");
    std::string fifo = dir.fifo_path(st.id);
    UniqueFd r(::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (!r) core::throw_last_error("cannot open the exec FIFO of " + st.id);
    for (;;) {
        pollfd fds[2] = {{r.get(), POLLIN, 0}, {init.get(), POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            core::throw_last_error("poll");
        }
        char c;
        ssize_t n = ::read(r.get(), &c, 1);
        if (n == 1) break;
        if (n < 0 && errno != EAGAIN && errno != EINTR) core::throw_last_error("cannot read the exec FIFO");
        if (fds[1].revents) throw std::runtime_error("container '" + st.id + "' exited before it was started");
        if (n == 0 && (fds[0].revents & POLLHUP))
            throw std::runtime_error("container '" + st.id + "' closed its exec FIFO without starting");
    }
    ::unlink(fifo.c_str());
}

void do_start(const OciStateDir& dir, const std::string& id) {
    ContainerLock lock = dir.lock(id);
    ContainerState st = dir.read(id);
    ContainerStatus status = dir.status(st);
    if (status != ContainerStatus::Created)
        throw UsageError("cannot start container '" + id + "': it is " + std::string(core::to_string(status)) +
                         ", not created");
    core::SpawnSpec spec = spec_of(st);
    run_hooks(spec, "startContainer", core::oci_state_json(st, ContainerStatus::Created, false), true);
    release_gate(dir, st);
    run_hooks(spec, "poststart", core::oci_state_json(st, ContainerStatus::Running, false), false);
}

// ---- delete ---------------------------------------------------------------------------------

void do_delete(const OciStateDir& dir, const std::string& id, bool force) {
    if (!dir.exists(id)) {
        // runc: --force on a container that is gone (conmon's cleanup after a failed create) succeeds.
        if (force) return;
        throw UsageError("container '" + id + "' does not exist");
    }
    ContainerLock lock = dir.lock(id);
    ContainerState st;
    try {
        st = dir.read(id);
    } catch (const UsageError&) {
        // A create that crashed before it wrote any state: nothing was started yet.
        if (!force) throw;
        dir.remove(id);
        return;
    }
    ContainerStatus status = dir.status(st);
    if ((status == ContainerStatus::Running || status == ContainerStatus::Paused) && !force)
        throw UsageError("cannot delete container '" + id + "': it is " + std::string(core::to_string(status)) +
                         "; stop it first or use --force");
    if (UniqueFd init = open_init(st)) {
        // A created container is destroyed without --force, as runc: its payload never ran.
        if (status == ContainerStatus::Paused) core::freeze_machine(machine_of(st), false, st.cgroup_root);
        signal_all(st, SIGKILL);
        syscall(SYS_pidfd_send_signal, init.get(), SIGKILL, nullptr, 0);
        if (!wait_exit(init.get(), 10000)) throw std::runtime_error("container '" + id + "' did not exit after SIGKILL");
    }
    if (st.own_cgroup) {
        signal_all(st, SIGKILL);
        remove_cgroup(st.cgroup_root, st.cgroup);
    }
    remove_v1_groups(st);
    std::optional<core::SpawnSpec> spec;
    try {
        spec = spec_of(st);
    } catch (const std::exception& e) {
        log_warning(std::string("poststop hooks not run: ") + e.what());
    }
    dir.remove(id);
    if (spec) run_hooks(*spec, "poststop", core::oci_state_json(st, ContainerStatus::Stopped, false), false);
}

// ---- the commands ---------------------------------------------------------------------------

int cmd_create(const Invocation& inv) {
    OciStateDir dir(inv.global.root);
    do_create(inv, dir);
    return 0;
}

int cmd_start(const Invocation& inv) {
    std::string id = need_id(inv);
    no_more_args(inv, 1);
    do_start(OciStateDir(inv.global.root), id);
    return 0;
}

int cmd_run(const Invocation& inv) {
    if (inv.flag("detach")) {
        // The init would be our child with nobody to reap it once we leave; an engine that
        // detaches uses create + start, which hand it to the engine's subreaper.
        throw UsageError("run --detach is not supported; use create and start");
    }
    OciStateDir dir(inv.global.root);
    Created c = do_create(inv, dir);
    try {
        do_start(dir, c.state.id);
    } catch (...) {
        do_delete(dir, c.state.id, true);
        throw;
    }
    // The init is our own child: wait for it and report its status as a shell would.
    siginfo_t si{};
    (void)core::retry_eintr([&] { return waitid(P_PID, static_cast<id_t>(c.pid), &si, WEXITED); });
    if (!inv.flag("keep")) do_delete(dir, c.state.id, true);
    return si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
}

int cmd_state(const Invocation& inv) {
    std::string id = need_id(inv);
    no_more_args(inv, 1);
    OciStateDir dir(inv.global.root);
    ContainerState st = dir.read(id);
    std::cout << core::oci_state_json(st, dir.status(st), true) << "\n";
    return 0;
}

int cmd_kill(const Invocation& inv) {
    std::string id = need_id(inv);
    no_more_args(inv, 2);
    int sig = inv.args.size() > 1 ? core::parse_signal(inv.args[1]) : SIGTERM;
    OciStateDir dir(inv.global.root);
    ContainerLock lock = dir.lock(id);
    ContainerState st = dir.read(id);
    ContainerStatus status = dir.status(st);
    if (inv.flag("all")) {
        signal_all(st, sig);
        return 0;
    }
    UniqueFd init = open_init(st);
    if (!init || status == ContainerStatus::Stopped) throw UsageError("container '" + id + "' is not running");
    if (syscall(SYS_pidfd_send_signal, init.get(), sig, nullptr, 0) < 0)
        core::throw_last_error("cannot signal container " + id);
    return 0;
}

int cmd_delete(const Invocation& inv) {
    std::string id = need_id(inv);
    no_more_args(inv, 1);
    do_delete(OciStateDir(inv.global.root), id, inv.flag("force"));
    return 0;
}

int cmd_list(const Invocation& inv) {
    no_more_args(inv, 0);
    OciStateDir dir(inv.global.root);
    std::string format = inv.value("format", "table");
    if (format != "table" && format != "json") throw UsageError("--format must be 'table' or 'json'");
    json all = json::array();
    std::vector<std::tuple<std::string, pid_t, std::string, std::string, std::string>> rows;
    for (const auto& id : dir.ids()) {
        ContainerState st;
        try {
            st = dir.read(id);
        } catch (const UsageError&) {
            continue;  // being created, or left by a crashed create (delete --force removes it)
        }
        ContainerStatus status = dir.status(st);
        pid_t pid = status == ContainerStatus::Stopped ? 0 : st.pid;
        if (inv.flag("quiet")) {
            std::cout << id << "\n";
            continue;
        }
        if (format == "json") {
            all.push_back({{"ociVersion", "1.0.2-dev"},
                           {"id", id},
                           {"pid", pid},
                           {"status", core::to_string(status)},
                           {"bundle", st.bundle},
                           {"rootfs", st.rootfs},
                           {"created", st.created},
                           {"owner", st.owner},
                           {"annotations", st.annotations}});
        } else {
            rows.emplace_back(id, pid, std::string(core::to_string(status)), st.bundle, st.created);
        }
    }
    if (inv.flag("quiet")) return 0;
    if (format == "json") {
        std::cout << all.dump() << "\n";
        return 0;
    }
    printf("%-12s %-8s %-10s %-40s %-30s %s\n", "ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER");
    for (const auto& [id, pid, status, bundle, created] : rows)
        printf("%-12s %-8d %-10s %-40s %-30s %s\n", id.c_str(), pid, status.c_str(), bundle.c_str(), created.c_str(),
               "root");
    return 0;
}

int cmd_ps(const Invocation& inv) {
    std::string id = need_id(inv);
    OciStateDir dir(inv.global.root);
    ContainerState st = dir.read(id);
    std::vector<pid_t> pids = cgroup_pids(st.cgroup_root, st.cgroup);
    std::string format = inv.value("format", "table");
    if (format == "json") {
        std::cout << json(pids).dump() << "\n";
        return 0;
    }
    if (format != "table") throw UsageError("--format must be 'table' or 'json'");
    printf("%-8s %s\n", "PID", "CMD");
    for (pid_t p : pids) {
        std::string comm;
        try {
            comm = read_file("/proc/" + std::to_string(p) + "/comm", 64, "comm");
        } catch (...) {
        }
        if (!comm.empty() && comm.back() == '\n') comm.pop_back();
        printf("%-8d %s\n", p, comm.c_str());
    }
    return 0;
}

int cmd_pause_resume(const Invocation& inv, bool freeze) {
    std::string id = need_id(inv);
    no_more_args(inv, 1);
    OciStateDir dir(inv.global.root);
    ContainerLock lock = dir.lock(id);
    ContainerState st = dir.read(id);
    ContainerStatus status = dir.status(st);
    if (freeze && status != ContainerStatus::Running)
        throw UsageError("cannot pause container '" + id + "': it is " + std::string(core::to_string(status)));
    if (!freeze && status != ContainerStatus::Paused)
        throw UsageError("cannot resume container '" + id + "': it is " + std::string(core::to_string(status)) +
                         ", not paused");
    core::freeze_machine(machine_of(st), freeze, st.cgroup_root);
    return 0;
}

int cmd_exec(const Invocation& inv) {
    std::string id = need_id(inv);
    OciStateDir dir(inv.global.root);
    ContainerState st = dir.read(id);
    ContainerStatus status = dir.status(st);
    if (status != ContainerStatus::Running)
        throw UsageError("cannot exec in container '" + id + "': it is " + std::string(core::to_string(status)));
    UniqueFd init = open_init(st);
    if (!init) throw UsageError("container '" + id + "' is not running");
    if (inv.flag("preserve-fds") && inv.value("preserve-fds") != "0")
        throw UsageError("exec --preserve-fds is not supported yet; pass 0 or leave it out");
    if (inv.flag("cgroup"))
        throw UsageError(
            "exec --cgroup (a sub-cgroup of the container) is not supported; leave it out to join the "
            "container's own groups");
    ExecRequest req;
    if (inv.flag("process")) {
        if (inv.args.size() > 1) throw UsageError("give the command either in --process or as arguments, not both");
        // runc takes everything from the file then; options that would change it are refused
        // rather than dropped.
        for (const char* o : {"cwd", "env", "user", "cap", "no-new-privs", "process-label", "apparmor", "additional-gids"})
            if (inv.flag(o))
                throw UsageError(std::string("exec --") + o + " goes with the argv form; with --process put it in the file");
        req = parse_process_json(read_file(inv.value("process"), core::kOciConfigMax, "the process file"));
    } else {
        // runc's argv form: the container's own process (config.json as read at create) with
        // the options on top.
        ExecOptions o;
        o.args.assign(inv.args.begin() + std::min<size_t>(1, inv.args.size()), inv.args.end());
        o.cwd = inv.value("cwd");
        o.env = inv.values("env");
        o.tty = inv.flag("tty");
        if (inv.flag("no-new-privs")) o.no_new_privs = true;
        o.user = inv.value("user");
        o.additional_gids = inv.values("additional-gids");
        o.caps = inv.values("cap");
        o.apparmor = inv.value("apparmor");
        o.process_label = inv.value("process-label");
        req = parse_process_json(exec_process_json(st.config, o));
    }
    if (inv.flag("tty")) req.terminal = true;
    std::string console_socket = inv.value("console-socket");
    if (req.terminal && console_socket.empty())
        throw UsageError("a terminal was asked for: --console-socket is needed to hand it over");
    ExecTarget target{st.pid, init.get(), cgroup2_root(st.cgroup_root) + st.cgroup, v1_groups_of(st)};
    ExecStarted started = start_exec(target, req);
    if (started.master) {
        if (req.console_size) set_window_size(started.master.get(), *req.console_size);
        send_console_master(console_socket, started.master.get(), "/dev/pts/ptmx");
    }
    started.master.reset();
    if (std::string pid_file = inv.value("pid-file"); !pid_file.empty())
        write_file_atomic(pid_file, std::to_string(started.pid));
    if (inv.flag("detach")) return 0;
    siginfo_t si{};
    (void)core::retry_eintr([&] { return waitid(P_PID, static_cast<id_t>(started.pid), &si, WEXITED); });
    return si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
}

// ---- update / events -----------------------------------------------------------------------
// Both work on the container's own groups only, found from its init's /proc/PID/cgroup
// (core::container_controllers): the cgroup2 group machrun makes, and a v1 group in any hierarchy
// where the init sits in a group of the same path. A controller whose group the container shares
// with others (a hierarchy's root) is never written.

struct ContainerGroups {
    core::CgroupMounts mounts;      // the host's hierarchies
    core::CgroupControllers where;  // the controllers of the container's own groups
    bool v2_group = false;          // the init is in the cgroup2 group `cgroup`
};

ContainerGroups container_groups(const ContainerState& st, int init_pidfd) {
    ContainerGroups g;
    g.mounts = core::detect_cgroup_mounts(st.cgroup_root);
    std::string self = read_file("/proc/" + std::to_string(st.pid) + "/cgroup", 65536, "the container's cgroups");
    // The pid was checked against the recorded start time when the pidfd was opened: if the
    // process is still alive, what we read was its file.
    if (wait_exit(init_pidfd, 0)) throw UsageError("container '" + st.id + "' has stopped");
    std::set<std::string> v2;
    if (!g.mounts.v2_root.empty()) {
        try {
            std::string list = read_file(g.mounts.v2_root + st.cgroup + "/cgroup.controllers", 4096, "controllers");
            std::replace(list.begin(), list.end(), '\n', ' ');
            for (auto c : core::split(list, ' '))
                if (!c.empty()) v2.insert(std::string(c));
        } catch (const std::exception&) {
        }
    }
    g.where = core::container_controllers(self, g.mounts.controllers, v2, st.cgroup);
    for (auto line : core::lines(self))
        if (line == "0::" + st.cgroup) g.v2_group = true;
    return g;
}

std::optional<std::string> read_group_file(const ContainerGroups& g, const std::string& cgroup,
                                           const std::string& controller, bool v2, const std::string& file) {
    std::string base = v2 ? g.mounts.v2_root : g.mounts.v1_dir(controller);
    if (base.empty()) return std::nullopt;
    UniqueFd fd(::open((base + cgroup + "/" + file).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) return std::nullopt;
    try {
        return core::read_all(fd.get(), 1 << 20, file);
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

std::string controller_list(const core::CgroupControllers& c) {
    std::string out;
    for (const auto* set : {&c.v1, &c.v2})
        for (const auto& n : *set) out += (out.empty() ? "" : ", ") + n;
    return out.empty() ? "none" : out;
}

// The running container's init, or a one-line refusal naming what the container is.
UniqueFd running_init(const OciStateDir& dir, const ContainerState& st, const char* what) {
    ContainerStatus status = dir.status(st);
    UniqueFd init = open_init(st);
    if (!init || status == ContainerStatus::Stopped)
        throw UsageError(std::string("cannot ") + what + " container '" + st.id + "': it is stopped");
    return init;
}

int cmd_update(const Invocation& inv) {
    std::string id = need_id(inv);
    no_more_args(inv, 1);
    std::optional<std::string> resources_json;
    if (inv.flag("resources")) {
        std::string path = inv.value("resources");
        resources_json = path == "-" ? core::read_all(STDIN_FILENO, core::kOciConfigMax, "the resources on stdin")
                                     : read_file(path, core::kOciConfigMax, "the resources file");
    }
    core::OciResources r = update_resources(inv, resources_json);
    OciStateDir dir(inv.global.root);
    ContainerLock lock = dir.lock(id);
    ContainerState st = dir.read(id);
    UniqueFd init = running_init(dir, st, "update");
    ContainerGroups g = container_groups(st, init.get());
    auto read = [&](const std::string& c, bool v2, const std::string& f) { return read_group_file(g, st.cgroup, c, v2, f); };
    std::optional<int64_t> memsw;
    if (g.where.v1.contains("memory"))
        if (auto v = read("memory", false, "memory.memsw.limit_in_bytes")) memsw = std::strtoll(v->c_str(), nullptr, 10);
    std::vector<core::CgroupWrite> writes;
    std::optional<std::vector<bpf_insn>> device_program;
    try {
        writes = core::plan_cgroup_update(r, g.where, memsw);
        if (!r.devices.empty()) {
            // On cgroup2 the new rules (with the runtime's defaults after them, as at create)
            // replace the group's device program; with the v1 controller they are create's only.
            if (g.mounts.controllers.v1.contains("devices"))
                throw UsageError(
                    "'linux.resources.devices' cannot be changed by update on a host with the v1 devices controller: "
                    "device rules are set at create");
            if (!g.v2_group)
                throw UsageError(
                    "'linux.resources.devices' cannot be changed: the container's init is not in its cgroup2 group " +
                    st.cgroup);
            auto rules = r.devices;
            auto defaults = core::oci_default_device_rules();
            rules.insert(rules.end(), defaults.begin(), defaults.end());
            device_program = core::plan_device_program(rules, g.mounts.controllers);
        }
    } catch (const UsageError& e) {
        throw UsageError(std::string(e.what()) + " (the controllers of container '" + id +
                         "''s own cgroups: " + controller_list(g.where) + ")");
    }
    if (r.memory.check_before_update.value_or(false) && r.memory.limit && *r.memory.limit >= 0) {
        bool v2 = !g.where.v1.contains("memory");
        auto usage = read("memory", v2, v2 ? "memory.current" : "memory.usage_in_bytes");
        if (usage && std::strtoll(usage->c_str(), nullptr, 10) > *r.memory.limit)
            throw UsageError("memory limit " + std::to_string(*r.memory.limit) + " is below container '" + id +
                             "''s current usage " + std::to_string(std::strtoll(usage->c_str(), nullptr, 10)) +
                             " (checkBeforeUpdate)");
    }
    // Loaded before anything is written: a program the kernel refuses leaves the container as it was.
    UniqueFd program = device_program ? core::load_device_program(*device_program) : UniqueFd();
    core::apply_cgroup_writes(writes, g.mounts, st.cgroup);
    if (program) attach_device_rules(st.cgroup_root, st.cgroup, program);
    return 0;
}

std::vector<std::string> hugepage_sizes() {
    std::vector<std::string> out;
    if (DIR* d = ::opendir("/sys/kernel/mm/hugepages")) {
        while (dirent* e = readdir(d))
            if (std::string n = hugepage_size_name(e->d_name); !n.empty()) out.push_back(n);
        closedir(d);
    }
    std::sort(out.begin(), out.end());
    return out;
}

int cmd_events(const Invocation& inv) {
    std::string id = need_id(inv);
    no_more_args(inv, 1);
    auto interval = parse_go_duration(inv.value("interval", "5s"));
    OciStateDir dir(inv.global.root);
    ContainerState st = dir.read(id);
    UniqueFd init = running_init(dir, st, "show the events of");
    ContainerGroups g = container_groups(st, init.get());
    auto read = [&](const std::string& c, bool v2, const std::string& f) { return read_group_file(g, st.cgroup, c, v2, f); };
    std::vector<std::string> sizes = hugepage_sizes();
    auto emit = [](const std::string& line) {
        std::string l = line + "\n";
        if (core::write_all(STDOUT_FILENO, l) < 0) throw std::runtime_error("cannot write the events: stdout is closed");
    };
    auto stats = [&] { emit(event_line("stats", id, stats_json(g.where, g.v2_group, sizes, read))); };
    if (inv.flag("stats")) {
        stats();
        return 0;
    }

    // OOM: v1's eventfd on memory.oom_control (cgroup.event_control), or cgroup2's memory.events,
    // whose oom_kill counter the kernel announces with POLLPRI.
    UniqueFd oom_fd;
    bool v2_oom = false;
    uint64_t oom_kills = 0;
    if (g.where.v1.contains("memory")) {
        std::string group = g.mounts.v1_dir("memory") + st.cgroup;
        UniqueFd control(::open((group + "/memory.oom_control").c_str(), O_RDONLY | O_CLOEXEC));
        UniqueFd event_control(::open((group + "/cgroup.event_control").c_str(), O_WRONLY | O_CLOEXEC));
        oom_fd = UniqueFd(::eventfd(0, EFD_CLOEXEC));
        if (!control || !event_control || !oom_fd) core::throw_last_error("cannot watch " + group + " for OOM");
        core::write_all_or_throw(event_control.get(), std::to_string(oom_fd.get()) + " " + std::to_string(control.get()),
                                 "cannot watch " + group + " for OOM");
    } else if (g.where.v2.contains("memory")) {
        std::string file = g.mounts.v2_root + st.cgroup + "/memory.events";
        oom_fd = UniqueFd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
        if (!oom_fd) core::throw_last_error("cannot watch " + file + " for OOM");
        v2_oom = true;
        oom_kills = cgroup_key(read("memory", true, "memory.events").value_or(""), "oom_kill").value_or(0);
    }

    // Until the container's init exits: stats every interval (the first after one, as runc), OOM
    // events as they come.
    using clock = std::chrono::steady_clock;
    auto next = clock::now() + interval;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(next - clock::now()).count();
        pollfd fds[2] = {{init.get(), POLLIN, 0}, {oom_fd.get(), static_cast<short>(v2_oom ? POLLPRI : POLLIN), 0}};
        int n = poll(fds, oom_fd ? 2 : 1, static_cast<int>(std::max<int64_t>(left, 0)));
        if (n < 0) {
            if (errno == EINTR) continue;
            core::throw_last_error("poll");
        }
        if (fds[0].revents) return 0;  // the container has stopped
        if (oom_fd && fds[1].revents) {
            if (v2_oom) {
                uint64_t now =
                    cgroup_key(read("memory", true, "memory.events").value_or(""), "oom_kill").value_or(oom_kills);
                for (; oom_kills < now; oom_kills++) emit(event_line("oom", id));
            } else {
                uint64_t count = 0;
                if (::read(oom_fd.get(), &count, sizeof count) == sizeof count && !wait_exit(init.get(), 0))
                    emit(event_line("oom", id));
            }
        }
        if (clock::now() >= next) {
            stats();
            next += interval;
        }
    }
}

int cmd_features(const Invocation& inv) {
    no_more_args(inv, 0);
    json caps = json::array();
    for (int c = 0; c <= core::cap_last_cap(); c++) caps.push_back(core::capability_to_name(c));
    json f = {
        {"ociVersionMin", "1.0.0"},
        {"ociVersionMax", "1.2.0"},  // the config front end takes 1.0.0 to 1.2.x
        {"hooks", {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}},
        {"mountOptions",
         {"bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec", "private", "rprivate", "tmpcopyup", "idmap", "ridmap"}},
        {"linux",
         {{"namespaces", {"cgroup", "ipc", "mount", "network", "pid", "user", "uts"}},
          {"mountExtensions", {{"idmap", {{"enabled", true}}}}},
          {"capabilities", caps},
          {"cgroup", {{"v1", true}, {"v2", true}, {"systemd", false}, {"systemdUser", false}}},
          // What core/kernel/seccomp_oci compiles (SCMP_ACT_NOTIFY and WAIT_KILLABLE_RECV are refused).
          {"seccomp",
           {{"enabled", true},
            {"actions",
             {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
              "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"}},
            {"operators",
             {"SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ",
              "SCMP_CMP_NE"}},
            {"knownFlags",
             {"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
              "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"}},
            {"supportedFlags", {"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"}}}},
          {"apparmor", {{"enabled", false}}},
          {"selinux", {{"enabled", false}}}}},
        {"annotations", {{"io.machkit.runtime.version", MK_VERSION}}},
    };
    std::cout << f.dump(4) << "\n";
    return 0;
}

// runc's `spec` template, reduced to what the config front end takes today.
int cmd_spec(const Invocation& inv) {
    no_more_args(inv, 0);
    if (inv.flag("rootless")) throw UsageError("spec --rootless is not supported yet");
    std::string bundle = inv.value("bundle", ".");
    json caps = {"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"};
    json spec = {
        {"ociVersion", "1.0.0"},
        {"process",
         {{"terminal", true},
          {"user", {{"uid", 0}, {"gid", 0}}},
          {"args", {"sh"}},
          {"env", {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"}},
          {"cwd", "/"},
          {"capabilities", {{"bounding", caps}, {"effective", caps}, {"permitted", caps}}},
          {"rlimits", {{{"type", "RLIMIT_NOFILE"}, {"hard", 1024}, {"soft", 1024}}}},
          {"noNewPrivileges", true}}},
        {"root", {{"path", "rootfs"}, {"readonly", true}}},
        {"hostname", "machrun"},
        {"mounts",
         {{{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}},
          {{"destination", "/dev"},
           {"type", "tmpfs"},
           {"source", "tmpfs"},
           {"options", {"nosuid", "strictatime", "mode=755", "size=65536k"}}},
          {{"destination", "/dev/pts"},
           {"type", "devpts"},
           {"source", "devpts"},
           {"options", {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}}},
          {{"destination", "/dev/shm"},
           {"type", "tmpfs"},
           {"source", "shm"},
           {"options", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}}},
          {{"destination", "/dev/mqueue"},
           {"type", "mqueue"},
           {"source", "mqueue"},
           {"options", {"nosuid", "noexec", "nodev"}}},
          {{"destination", "/sys"},
           {"type", "sysfs"},
           {"source", "sysfs"},
           {"options", {"nosuid", "noexec", "nodev", "ro"}}},
          {{"destination", "/sys/fs/cgroup"},
           {"type", "cgroup"},
           {"source", "cgroup"},
           {"options", {"nosuid", "noexec", "nodev", "relatime", "ro"}}}}},
        // runc's default: no device but the defaults every container gets, and the masks it lists.
        {"linux",
         {{"resources", {{"devices", {{{"allow", false}, {"access", "rwm"}}}}}},
          {"namespaces",
           {{{"type", "pid"}}, {{"type", "network"}}, {{"type", "ipc"}}, {{"type", "uts"}}, {{"type", "mount"}}}},
          {"maskedPaths",
           {"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
            "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"}},
          {"readonlyPaths", {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}}}},
    };
    std::string path = bundle + "/config.json";
    if (::access(path.c_str(), F_OK) == 0) throw UsageError("File " + path + " exists. Remove it first");
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    std::string text = spec.dump(4) + "\n";
    if (!fd || ::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
        core::throw_last_error("cannot write " + path);
    return 0;
}

}  // namespace detail

int dispatch(const Invocation& inv) {
    using namespace detail;
    const std::string& c = inv.command;
    if (c == "create") return cmd_create(inv);
    if (c == "start") return cmd_start(inv);
    if (c == "run") return cmd_run(inv);
    if (c == "state") return cmd_state(inv);
    if (c == "kill") return cmd_kill(inv);
    if (c == "delete") return cmd_delete(inv);
    if (c == "list") return cmd_list(inv);
    if (c == "ps") return cmd_ps(inv);
    if (c == "exec") return cmd_exec(inv);
    if (c == "pause") return cmd_pause_resume(inv, true);
    if (c == "resume") return cmd_pause_resume(inv, false);
    if (c == "update") return cmd_update(inv);
    if (c == "events") return cmd_events(inv);
    if (c == "features") return cmd_features(inv);
    if (c == "spec") return cmd_spec(inv);
    if (c == "checkpoint") return cmd_checkpoint(inv);
    if (c == "restore") return cmd_restore(inv);
    throw UsageError("unknown command '" + c + "'");
}

}  // namespace mk::runtime
