#include "core/machine/service.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <sstream>

#include "core/base/error.hpp"
#include "core/base/names.hpp"
#include "core/kernel/init_signals.hpp"
#include "core/machine/machine_error.hpp"
#include "core/machine/owner.hpp"

namespace mk::core {
namespace {

[[noreturn]] void invalid(const std::string& msg) { throw_machine_error(MachineErrc::invalid_argument, msg); }

std::optional<pid_t> parent_of(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(f, line))
        if (line.starts_with("PPid:")) return static_cast<pid_t>(std::stol(line.substr(5)));
    return std::nullopt;
}

bool pidfd_alive(int pidfd) {
    // pidfd_send_signal(0) answers ESRCH once the process has exited, even before it is reaped.
    return ::syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) == 0;
}

}  // namespace

bool kill_who_is_valid(std::string_view who) { return who.empty() || who == "leader" || who == "all"; }

UniqueFd pin_leader(pid_t pid) {
    if (pid <= 1) invalid("Invalid leader PID");
    if (pid == ::getpid()) invalid("Invalid leader PID");
    UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (!fd) {
        if (errno == ESRCH || errno == EINVAL) invalid("Leader PID " + std::to_string(pid) + " does not exist");
        throw_last_error("pidfd_open " + std::to_string(pid));
    }
    // Kernel threads (kthreadd and its children) are not machines.
    auto ppid = parent_of(pid);
    if (pid == 2 || (ppid && *ppid == 2)) invalid("Invalid leader PID: kernel thread");
    if (!pidfd_alive(fd.get())) invalid("Leader PID " + std::to_string(pid) + " does not exist");
    return fd;
}

MachineService::MachineService(StateDir& state, ScopeBackend& backend, Listener& listener, size_t max_machines,
                               uint64_t stop_timeout_usec)
    : state_(state),
      backend_(backend),
      listener_(listener),
      registry_(max_machines + 1 /* .host */),
      stop_timeout_usec_(stop_timeout_usec) {}

void MachineService::add_host_machine() {
    Machine m;
    m.name = ".host";
    m.klass = MachineClass::host;
    m.leader = 1;
    m.unit = "-.slice";
    m.root_directory = "/";
    m.state = MachineState::running;
    std::ifstream f("/etc/machine-id");
    std::string s;
    if (f >> s)
        if (auto id = id128_from_string(s)) m.id = *id;
    // Boot time on CLOCK_REALTIME, as machined stamps the host (TimestampMonotonic stays 0).
    m.realtime_usec = now_realtime_usec() - now_monotonic_usec();
    registry_.add_unchecked(std::move(m));
}

namespace {

// The unit a process's group belongs to: the host's units for the system's machd, the user's own
// for a per-user one (core/machine/owner.hpp).
std::optional<std::string> owned_unit(std::string_view cgroup_path) {
    return manager_owner() == 0 ? unit_from_cgroup_path(cgroup_path) : user_unit_from_cgroup_path(cgroup_path);
}

}  // namespace

Machine& MachineService::register_machine(RegisterRequest req) {
    // Validation in machined's order, all before any side effect.
    if (!machine_name_is_valid(req.name)) invalid("Invalid machine name");
    if (!req.id.empty() && req.id.size() != 16) invalid("Invalid machine ID parameter");
    auto klass = machine_class_from_string(req.klass);
    if (!klass || *klass == MachineClass::host) invalid("Invalid machine class parameter");
    if (req.leader == 1) invalid("Invalid leader PID");
    if (!req.root_directory.empty() && req.root_directory[0] != '/')
        invalid("Root directory must be empty or an absolute path");
    if (req.root_directory.size() > 4096) invalid("Root directory path too long");
    if (req.service.size() > 256 || !utf8_is_valid(req.service)) invalid("Invalid service name");
    if (req.netif.size() > 256) invalid("Too many network interfaces");
    for (int i : req.netif)
        if (i <= 0) invalid("Invalid network interface index " + std::to_string(i));
    // machined accepts "" here and then fails machine_start() with EOPNOTSUPP: same name, no side effect.
    if (*klass == MachineClass::unknown)
        throw_machine_error(MachineErrc::not_supported, "Machine class must be 'container' or 'vm'");
    registry_.check_can_add(req.name, req.leader);

    Machine m;
    m.leader_pidfd = pin_leader(req.leader);
    m.name = req.name;
    std::copy(req.id.begin(), req.id.end(), m.id.begin());
    m.service = req.service;
    m.klass = *klass;
    m.leader = req.leader;
    m.root_directory = req.root_directory;
    m.netif = req.netif;

    if (req.create_scope) {
        m.unit = machine_scope_name(m.name);
        if (registry_.find_by_unit(m.unit))
            throw_machine_error(MachineErrc::machine_exists, "Unit " + m.unit + " already belongs to a machine");
        // machined's description; a caller's Description= (cgroupfs: parsed, systemd: appended) wins.
        if (req.scope.description.empty())
            req.scope.description = (m.klass == MachineClass::vm ? "Virtual Machine " : "Container ") + m.name;
        auto started = backend_.start_scope(m.unit, m.leader, req.scope);
        m.cgroup_path = started.cgroup_path;
        m.scope_job = started.job;
        m.own_scope = true;
        m.kill_signal = req.scope.kill_signal;
    } else {
        auto path = pid_cgroup_path(m.leader);
        auto unit = path ? owned_unit(*path) : std::nullopt;
        if (!unit)
            throw std::system_error(ENXIO, std::generic_category(),
                                    "Failed to determine unit of process " + std::to_string(m.leader));
        m.unit = *unit;
        m.cgroup_path = path->substr(0, path->find(m.unit) + m.unit.size());
    }
    m.realtime_usec = now_realtime_usec();
    m.monotonic_usec = now_monotonic_usec();
    m.state = m.scope_job.empty() ? MachineState::running : MachineState::opening;

    Machine* added = nullptr;
    try {
        added = &registry_.add(std::move(m));
        state_.save(*added);
    } catch (...) {
        if (added) {
            auto back = registry_.remove(req.name);
            state_.remove(*back);
            if (back->own_scope) backend_.remove_scope(back->cgroup_path);
        } else if (req.create_scope) {
            backend_.remove_scope(*slice_to_path(req.scope.slice) + "/" + machine_scope_name(req.name));
        }
        throw;
    }
    listener_.machine_added(*added);
    return *added;
}

void MachineService::scope_job_done(const std::string& unit, const std::string& job, const std::string& result) {
    Machine* m = registry_.find_by_unit(unit);
    if (!m || m->scope_job.empty() || m->scope_job != job) return;
    m->scope_job.clear();
    if (result == "done") {
        m->state = MachineState::running;
        try {
            state_.save(*m);
        } catch (...) {
        }
        listener_.machine_start_finished(*m, "");
        return;
    }
    listener_.machine_start_finished(*m, "Start job for unit " + unit + " failed with '" + result + "'");
    try {
        finalize(*m, true);
    } catch (...) {
    }
}

void MachineService::terminate(Machine& m) {
    if (m.klass == MachineClass::host) throw_machine_error(MachineErrc::not_supported, "Refusing to terminate the host");
    m.state = MachineState::closing;
    if (!m.kill_deadline_usec) m.kill_deadline_usec = now_monotonic_usec() + stop_timeout_usec_;
    terminating_.insert(m.name);
    if (!m.cgroup_path.empty()) backend_.kill(m.cgroup_path, m.kill_signal);
    ::syscall(SYS_pidfd_send_signal, m.leader_pidfd.get(), m.kill_signal, nullptr, 0);
}

void MachineService::kill(Machine& m, std::string_view who, int signal) {
    if (!kill_who_is_valid(who)) invalid("Invalid kill parameter '" + std::string(who) + "'");
    if (signal <= 0 || signal >= _NSIG) invalid("Invalid signal " + std::to_string(signal));
    if (m.klass == MachineClass::host) throw_machine_error(MachineErrc::not_supported, "Refusing to kill the host");
    if (who == "leader") {
        // Through the pidfd: never a recycled PID. Checked first, so that a dead leader is an error now.
        if (::syscall(SYS_pidfd_send_signal, m.leader_pidfd.get(), 0, nullptr, 0) < 0)
            throw_last_error("Failed to kill leader of machine " + m.name);
        if (signal != SIGKILL && signal != SIGSTOP && !init_takes_signal(m.leader, signal).value_or(false)) {
            m.held_signal = signal;  // a later request replaces an earlier one still held
            m.held_signal_until_usec = now_monotonic_usec() + kHoldSignalUsec;
            holding_.insert(m.name);
            return;
        }
        if (::syscall(SYS_pidfd_send_signal, m.leader_pidfd.get(), signal, nullptr, 0) < 0)
            throw_last_error("Failed to kill leader of machine " + m.name);
        return;
    }
    if (m.cgroup_path.empty()) throw_errno(ESRCH, "Machine " + m.name + " has no cgroup");
    backend_.kill(m.cgroup_path, signal);
}

void MachineService::unregister(Machine& m) {
    if (m.klass == MachineClass::host) throw_machine_error(MachineErrc::not_supported, "Refusing to unregister the host");
    finalize(m, true);
}

void MachineService::leader_exited(Machine& m) { finalize(m, true); }

bool MachineService::report_ready(Machine& m, pid_t caller) {
    if (m.klass == MachineClass::host) throw_errno(EPERM, "The host machine has no readiness to report");
    // The leader pidfd pins the PID: while the leader lives, its parent is the spawn that cloned it.
    auto supervisor = pidfd_alive(m.leader_pidfd.get()) ? parent_of(m.leader) : std::nullopt;
    if (!supervisor || *supervisor <= 1 || caller <= 1 || caller == m.leader ||
        (caller != *supervisor && parent_of(caller) != supervisor))
        throw_errno(EPERM, "Only the process running machine " + m.name + " may report it ready");
    if (m.ready) return false;
    m.ready = true;
    try {
        state_.mark_ready(m);
    } catch (const std::system_error&) {
        // Only a restarted machd would miss it (the machine then reads as not ready).
    }
    return true;
}

void MachineService::send_held_signals(uint64_t now_usec) {
    for (auto it = holding_.begin(); it != holding_.end();) {
        Machine* m = registry_.find(*it);
        if (!m || !m->held_signal) {
            it = holding_.erase(it);
            continue;
        }
        if (now_usec < m->held_signal_until_usec && !init_takes_signal(m->leader, m->held_signal).value_or(false)) {
            ++it;
            continue;
        }
        ::syscall(SYS_pidfd_send_signal, m->leader_pidfd.get(), m->held_signal, nullptr, 0);
        m->held_signal = 0;
        it = holding_.erase(it);
    }
}

uint64_t MachineService::next_deadline() const {
    uint64_t next = holding_.empty() ? 0 : now_monotonic_usec() + kHeldSignalPollUsec;
    for (const auto& name : terminating_)
        if (Machine* m = registry_.find(name); m && m->kill_deadline_usec && (!next || m->kill_deadline_usec < next))
            next = m->kill_deadline_usec;
    return next;
}

void MachineService::run_deadlines(uint64_t now_usec) {
    send_held_signals(now_usec);
    for (auto it = terminating_.begin(); it != terminating_.end();) {
        Machine* m = registry_.find(*it);
        if (!m || !m->kill_deadline_usec) {
            it = terminating_.erase(it);
            continue;
        }
        if (m->kill_deadline_usec > now_usec) {
            ++it;
            continue;
        }
        it = terminating_.erase(it);
        m->kill_deadline_usec = 0;
        // As systemd after TimeoutStopSec=: SIGKILL to the whole unit; a container's PID 1 in its own
        // PID namespace ignores everything else from us.
        if (!m->cgroup_path.empty()) backend_.kill(m->cgroup_path, SIGKILL);
        ::syscall(SYS_pidfd_send_signal, m->leader_pidfd.get(), SIGKILL, nullptr, 0);
    }
}

void MachineService::finalize(Machine& m, bool remove_cgroup) {
    m.state = MachineState::closing;
    std::string name = m.name;
    std::exception_ptr failure;
    if (remove_cgroup && m.own_scope) {
        try {
            backend_.remove_scope(m.cgroup_path);
        } catch (...) {
            failure = std::current_exception();
        }
    }
    state_.remove(m);
    listener_.machine_removed(m);
    terminating_.erase(name);
    holding_.erase(name);
    registry_.remove(name);
    if (failure) std::rethrow_exception(failure);
}

std::vector<Machine*> MachineService::readopt() {
    std::vector<Machine*> adopted;
    for (auto& m : state_.load_all()) {
        bool keep = false;
        if (m.leader > 1) {
            UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, m.leader, 0)));
            if (fd && pidfd_alive(fd.get())) {
                // The PID may have been recycled: it must still sit in the recorded unit.
                auto path = pid_cgroup_path(m.leader);
                auto unit = path ? owned_unit(*path) : std::nullopt;
                if (unit && *unit == m.unit) {
                    m.leader_pidfd = std::move(fd);
                    m.cgroup_path = path->substr(0, path->find(m.unit) + m.unit.size());
                    keep = true;
                }
            }
        }
        // machd's own scopes are machine.slice/machine-NAME.scope; RegisterMachine'd units are not ours.
        m.own_scope = m.unit == machine_scope_name(m.name);
        if (m.own_scope && m.cgroup_path.empty()) m.cgroup_path = "/machine.slice/" + m.unit;
        if (!keep || !machine_name_is_valid(m.name)) {
            state_.remove(m);
            if (m.own_scope && backend_.exists(m.cgroup_path)) {
                try {
                    backend_.remove_scope(m.cgroup_path);
                } catch (...) {
                }
            }
            continue;
        }
        try {
            Machine& added = registry_.add(std::move(m));
            adopted.push_back(&added);
            listener_.machine_added(added);
        } catch (const std::system_error&) {
            // Duplicate leader or over the bound: skip this file.
        }
    }
    return adopted;
}

Pty MachineService::open_shell(Machine& m, const ShellRequest& req) {
    // The leader's own group (nspawn's "payload" sub-group, say), else the unit's.
    std::vector<std::string> dirs;
    if (!m.cgroup_path.empty()) {
        auto leader_path = pid_cgroup_path(m.leader);
        dirs = backend_.dirs(leader_path && leader_path->starts_with(m.cgroup_path) ? *leader_path : m.cgroup_path,
                             m.cgroup_path);
    }
    return open_machine_shell(m, req, dirs);
}

Machine* MachineService::find_by_pid(pid_t pid) const {
    if (pid <= 0) return nullptr;
    if (auto* m = registry_.find_by_leader(pid)) return m;
    auto path = pid_cgroup_path(pid);
    if (!path) return nullptr;
    auto unit = owned_unit(*path);
    return unit ? registry_.find_by_unit(*unit) : nullptr;
}

bool image_in_use(const MachineService& service, const std::string& image_path) {
    for (const Machine* m : service.registry().all()) {
        const std::string& root = m->root_directory;
        if (!root.empty() && (root == image_path || root.starts_with(image_path + "/"))) return true;
    }
    return false;
}

}  // namespace mk::core
