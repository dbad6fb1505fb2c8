#include "core/spawn/launcher.hpp"

#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <stdexcept>

#include "core/base/error.hpp"
#include "core/base/rm_rf.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/run_lock.hpp"
#include "core/kernel/capabilities.hpp"
#include "core/kernel/userns.hpp"
#include "core/spawn/child_channel.hpp"
#include "core/spawn/container_cgroup.hpp"
#include "core/spawn/guest_init.hpp"
#include "core/spawn/inside_steps.hpp"
#include "core/spawn/kept_userns.hpp"
#include "core/spawn/oci_steps.hpp"
#include "core/spawn/network.hpp"
#include "core/spawn/outside_steps.hpp"
#include "core/spawn/pasta.hpp"
#include "core/spawn/rootless.hpp"
#include "core/spawn/relay.hpp"

namespace mk::core {
namespace {

// ---- the child: the container's PID 1 until it execs the payload ------------------------------

[[noreturn]] void child_main(const SpawnSpec& spec, Prepared& p, int chan) noexcept {
    const char* step = "start";
    bool past_gate = false;  // detached start: nobody reads the channel any more
    try {
        step = "become the container's init";
        become_container_init(p, chan);
        // Rootless: nothing may happen before the parent has written our user namespace's map.
        if (p.rootless && !wait_go_ahead(chan)) _exit(1);
        if (p.rootless) {
            step = "become root of the user namespace";
            become_mapped_root(*p.rootless);
        }
        step = "create the nested user namespace";
        make_nested_user_namespace(p);
        // ---- OCI (config.json) ----
        // In the container's UTS/IPC/network namespaces already; /proc/sys is not read-only yet.
        step = "set the OCI sysctls and domain name";
        apply_oci_sysctls(spec.oci);
        apply_oci_domainname(spec.oci);
        // ---- end OCI ----
        step = "mount the container's root";
        RootFs fs = mount_root_fs(spec, p);
        if (p.wait_for_parent) {
            // The parent registers the machine and places it in its groups meanwhile (a v1
            // cgroup.procs write waits for an RCU grace period, so the mounts above overlap with it);
            // only once placed does a new cgroup namespace root the guest's view at its own group.
            if (!wait_go_ahead(chan)) _exit(1);
            step = "enter a cgroup namespace";
            enter_cgroup_namespace(p, fs.root);
        }
        step = "write the guest's files";
        UniqueFd notify = populate_guest_files(spec, p, fs);
        const bool dev_in_userns = !p.userns_dev_plan.empty();
        if (dev_in_userns) {
            step = "clone the host's device nodes";
            clone_dev_sources(p);
        }
        step = "pivot into the container's root";
        seal_and_pivot(spec, p, fs);
        if (dev_in_userns) {
            // /dev is the user namespace's own (mount_plan.hpp): limits first, as host root may
            // raise them and root inside may not.
            step = "apply resource limits";
            apply_resource_limits(spec);
            step = "enter the user namespace";
            enter_user_namespace(p);
            step = "build /dev in the user namespace";
            build_dev_in_userns(p);
        }
        // ---- OCI (config.json) ----
        if (!spec.oci.devices.empty() || !spec.oci.readonly_paths.empty() || !spec.oci.mounts.empty()) {
            step = "create the OCI devices, mount options and read-only paths";
            UniqueFd root(open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
            if (!root) throw_last_error("open /");
            apply_oci_devices(spec.oci, root.get(), p.oci_uid_map, p.oci_gid_map);
            apply_oci_mount_attributes(spec.oci, root.get());
            apply_oci_readonly_paths(spec.oci, root.get());
        }
        apply_oci_rootfs_propagation(spec.oci);
        // ---- end OCI ----

        step = "set up the console";
        UniqueFd console_peer;
        if (p.guest.use_pty) {
            auto [master, peer] = setup_console();
            send_setup_done(chan, master.get(), notify.get());
            console_peer = std::move(peer);
        } else {
            send_setup_done(chan, -1, notify.get());
        }
        notify.reset();

        step = "set the container's identity";
        set_identity(p, console_peer.get());
        // The parent configures our links meanwhile; it says when they are there.
        if (p.wait_for_network && !wait_go_ahead(chan)) _exit(1);
        step = "start a session";
        take_session(spec, std::move(console_peer));
        if (p.rootless && spec.private_network) open_low_ports_to_guest();
        if (!dev_in_userns) {
            step = "apply resource limits";
            apply_resource_limits(spec);
            step = "enter the user namespace";
            enter_user_namespace(p);
        }
        step = "drop capabilities";
        drop_bounding_set_to(p.guest.bounding);

        if (spec.start_mode == StartMode::Pid2) {
            step = "start the payload under a stub init";
            pid_t pid = fork();
            if (pid < 0) throw_last_error("fork");
            if (pid > 0) {
                close(chan);
                stub_init(pid);
            }
            if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) throw_last_error("prctl(PDEATHSIG)");
        }
        step = "set the OCI I/O priority and scheduler";  // OCI; before the capabilities go
        apply_oci_scheduling(spec.oci);
        step = "drop privileges";
        if (p.exec_gate >= 0) outlive_parent();
        drop_privileges(spec, p);
        if (p.exec_gate >= 0) {
            step = "wait for start";
            send_gated(chan);
            past_gate = true;
            wait_at_exec_gate(p.exec_gate);
        }
        step = "enter the working directory";
        enter_working_directory(spec, p, chan);
        apply_oci_umask(spec.oci);  // OCI; enter_working_directory() set nspawn's 022
        step = "execute the payload";
        exec_payload(p);
    } catch (const std::system_error& e) {
        if (past_gate) dprintf(STDERR_FILENO, "cannot %s: %s\n", step, e.what());
        send_error(chan, step, e.code().value(), e.what());
    } catch (const std::exception& e) {
        if (past_gate) dprintf(STDERR_FILENO, "cannot %s: %s\n", step, e.what());
        send_error(chan, step, 0, e.what());
    }
    _exit(1);
}

// ---- the parent: one run of the container ------------------------------------------------------

// The booted guest's groups when spawn places it itself (no manager, or a --keep-unit one).
class GuestGroups {
public:
    GuestGroups(const SpawnSpec& spec, const Prepared& p) : spec_(spec), p_(p) {}
    void make(const CgroupLayout& layout) {
        UniqueFd own;
        if (p_.cgroup2_mount) {
            own.reset(fcntl(p_.cgroup2_mount.get(), F_DUPFD_CLOEXEC, 3));
            if (!own) throw_last_error("cannot duplicate the cgroup2 mount");
        }
        cgroup.emplace(layout, p_.rootless ? p_.rootless_cgroup : own_cgroup_path(spec_), "/sys/fs/cgroup", std::move(own));
        if (p_.rootless) cgroup->set_remover(rootless_cgroup_remover(*p_.rootless));
        cgroup->arm_reaper();
    }
    std::optional<ContainerCgroup> cgroup;

private:
    const SpawnSpec& spec_;
    const Prepared& p_;
};

// Registers the machine with the manager (if any) and places the child in its groups: returns
// whether the manager took it.
bool place_machine(const SpawnSpec& spec, const Prepared& p, const LaunchHooks& hooks, GuestGroups& groups, pid_t pid,
                   bool born_in_cgroup) {
    // Rootless: the user's machd registers the machine-NAME.scope spawn made in the user's delegated
    // group; without one the machine would be the user's session, so it is not registered.
    const bool may_register = hooks.register_machine && (!p.rootless || p.cgroups);
    const bool registered = may_register && hooks.register_machine(pid, p.guest.uuid);
    // machd's scope is the guest's group when machd made one (CreateMachine). Under a service
    // manager (--keep-unit, RegisterMachine) the unit is spawn's own, and the guest gets a payload
    // group below it, as under nspawn: with -U that is the group its root owns.
    const bool machd_scope = registered && !spec.keep_unit && !p.rootless;
    auto& cgroup = groups.cgroup;
    if (p.cgroups && !cgroup && !machd_scope) {
        groups.make(*p.cgroups);
    } else if (p.cgroups && !cgroup && p.cgroup2_mount) {
        // machd's scope lives in the host's hierarchies; a host with no cgroup2 mounted gets the
        // guest's cgroup2 group from spawn's own mount.
        CgroupLayout cgroup2_only;
        cgroup2_only.mode = CgroupMode::Unified;
        groups.make(cgroup2_only);
    }
    if (cgroup) cgroup->attach(pid, !born_in_cgroup);
    if (cgroup && p.rootless) delegate_rootless_cgroup(*p.rootless, *cgroup);  // range map: to its root
    if (p.userns && p.cgroups && !p.rootless) {  // rootless: the user made them, root inside owns them
        if (cgroup) cgroup->delegate_to(p.userns->shift, p.userns->shift);
        if (machd_scope) {
            // machd made the scope: hand over the groups it made where we know them.
            for (const char* h : {"/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup"}) {
                std::string dir = std::string(h) + own_cgroup_path(spec);
                if (access((dir + "/cgroup.procs").c_str(), F_OK) == 0)
                    chown_cgroup_dir(dir, p.userns->shift, p.userns->shift);
            }
        }
    }
    return registered;
}

// The OCI runtime's detached start, in place of the relay: waits until the init reports it sits
// at the exec gate (or fails), and hands over its console master. Throws if the init failed or died.
void await_exec_gate(int chan, pid_t pid, const DetachedLaunch& detached) {
    UniqueFd master, notify;
    for (;;) {
        ChannelMsg type{};
        if (!receive(chan, type, master, notify))
            throw std::runtime_error("the container's init exited before it reached the exec gate");
        if (type == ChannelMsg::Gated) {
            if (detached.gated) detached.gated(pid, std::move(master));
            return;
        }
    }
}

Outcome run_once(const SpawnSpec& spec, Prepared& p, const LaunchHooks& hooks,
                 std::chrono::steady_clock::time_point started) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) throw_last_error("socketpair");
    UniqueFd chan(sv[0]), child_chan(sv[1]);

    if (p.userns && p.oci_userns_join) {  // config.json's namespace by path: joined, as is
        p.userns_fd.reset(fcntl(p.oci_userns_join.get(), F_DUPFD_CLOEXEC, 3));
        if (!p.userns_fd) throw_last_error("dup");
    } else if (p.userns && !p.oci_uid_map.empty()) {  // config.json's maps, several ranges
        p.userns_fd = make_user_namespace(id_map_text(p.oci_uid_map), id_map_text(p.oci_gid_map));
    } else if (p.userns && !p.rootless) {
        std::vector<IdMapping> uids, gids;
        for (const auto& u : p.bound_users) {
            uids.push_back({u.id, static_cast<uint32_t>(u.host.uid)});
            gids.push_back({u.id, static_cast<uint32_t>(u.host.gid)});
        }
        p.userns_fd = make_user_namespace(*p.userns, uids, gids);
    }
    if (p.netns_in_userns) p.userns_netns = make_network_namespace_in(p.userns_fd.get());

    // A booted guest gets groups of its own: machd's scope when it registers us, else ours, made
    // before clone so the child can be born into the cgroup2 one.
    // Rootless spawn makes its own scope even when registering (`machd --user` makes none).
    const bool machd_makes_scope = static_cast<bool>(hooks.register_machine) && !p.rootless;
    GuestGroups groups(spec, p);
    if (p.cgroups && !machd_makes_scope) groups.make(*p.cgroups);

    // Signals are handled through a signalfd; the child restores the mask before exec.
    sigset_t mask, old_mask;
    sigemptyset(&mask);
    for (int sig : {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGWINCH, SIGQUIT}) sigaddset(&mask, sig);
    sigprocmask(SIG_BLOCK, &mask, &old_mask);
    UniqueFd sfd(signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sfd) throw_last_error("signalfd");

    clone_args ca{};
    ca.flags = CLONE_NEWNS | p.ns_clone_flags | CLONE_PIDFD;
    if (!p.wait_for_parent) ca.flags |= CLONE_NEWCGROUP;  // else the child unshares it once placed
    if (spec.private_network && !p.netns && !p.userns_netns) ca.flags |= CLONE_NEWNET;
    // The other namespaces then belong to the rootless user namespace: a new one, or the one
    // `machd --user` keeps mapped with the same map (kept_userns.hpp), joined by a helper.
    const bool kept_userns = p.rootless && p.kept_userns && !p.pidns;
    if (p.rootless && !kept_userns) ca.flags |= CLONE_NEWUSER;
    int pidfd_raw = -1;
    ca.pidfd = reinterpret_cast<uint64_t>(&pidfd_raw);
    ca.exit_signal = SIGCHLD;
    bool into_cgroup = groups.cgroup && groups.cgroup->unified_fd() >= 0;
    if (into_cgroup) {
        // Straight into the cgroup2 group: no cgroup.procs write, no RCU grace period to wait for.
        ca.flags |= CLONE_INTO_CGROUP;
        ca.cgroup = static_cast<uint64_t>(groups.cgroup->unified_fd());
    }
    // A PID namespace joined by path (config.json): ours for our children only, for this clone.
    UniqueFd own_pidns;
    if (p.pidns) {
        own_pidns.reset(open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC));
        if (!own_pidns) throw_last_error("cannot open /proc/self/ns/pid");
        if (setns(p.pidns.get(), CLONE_NEWPID) < 0) {
            int e = errno;
            sigprocmask(SIG_SETMASK, &old_mask, nullptr);
            errno = e;
            throw_last_error("cannot join the PID namespace");
        }
    }
    auto clone_child = [&] {
        return kept_userns ? clone_in_user_namespace(p.kept_userns.get(), ca) : syscall(SYS_clone3, &ca, sizeof ca);
    };
    long pid = clone_child();
    if (pid < 0 && into_cgroup) {
        ca.flags &= ~static_cast<uint64_t>(CLONE_INTO_CGROUP);
        into_cgroup = false;
        pid = clone_child();
    }
    int clone_errno = errno;
    if (pid != 0 && own_pidns && setns(own_pidns.get(), CLONE_NEWPID) < 0) {
        // Hooks and helpers forked later must not land in the container's PID namespace.
        int e = errno;
        if (pid > 0) {
            syscall(SYS_pidfd_send_signal, pidfd_raw, SIGKILL, nullptr, 0);
            siginfo_t si{};
            waitid(P_PIDFD, static_cast<id_t>(pidfd_raw), &si, WEXITED);
            close(pidfd_raw);
        }
        sigprocmask(SIG_SETMASK, &old_mask, nullptr);
        errno = e;
        throw_last_error("cannot return to the runtime's PID namespace");
    }
    errno = clone_errno;
    if (pid < 0 && p.rootless) throw UsageError(explain_userns_failure(errno));
    if (pid < 0) throw_last_error("cannot create the container's namespaces");
    if (pid == 0) {
        chan.reset();
        sfd.reset();
        signal(SIGPIPE, SIG_DFL);
        child_main(spec, p, child_chan.get());
    }
    UniqueFd pidfd(pidfd_raw);
    child_chan.reset();
    p.userns_netns.reset();  // the child holds it now
    // A set-up step in the parent failed: the child must not run on half set up.
    auto abandon_child = [&] {
        syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
        siginfo_t si{};
        waitid(P_PIDFD, static_cast<id_t>(pidfd.get()), &si, WEXITED);
        sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    };

    if (p.rootless) {
        try {
            if (!kept_userns) write_rootless_maps(static_cast<pid_t>(pid), *p.rootless);
        } catch (...) {
            abandon_child();
            throw;
        }
        send_go_ahead(chan.get());
    }

    bool registered = false;
    if (p.wait_for_parent) {
        try {
            if (hooks.detached && hooks.detached->cloned) hooks.detached->cloned(static_cast<pid_t>(pid));
            registered = place_machine(spec, p, hooks, groups, static_cast<pid_t>(pid), into_cgroup);
        } catch (...) {
            abandon_child();
            throw;
        }
        send_go_ahead(chan.get());
    }

    ContainerNetwork network;  // torn down when run_once returns, after the child is reaped
    PastaNetwork pasta;        // rootless: the user-mode network instead of veths
    if (p.wait_for_network) {
        try {
            if (p.rootless) pasta.start(spec.ports, static_cast<pid_t>(pid), p.rootless->runtime_dir);
            else network.setup(spec, static_cast<pid_t>(pid));
        } catch (...) {
            abandon_child();
            throw;
        }
        send_go_ahead(chan.get());
    }

    if (hooks.detached) {
        // The init lives on at the gate, reparented to the engine's subreaper when we exit.
        try {
            await_exec_gate(chan.get(), static_cast<pid_t>(pid), *hooks.detached);
        } catch (...) {
            abandon_child();
            throw;
        }
        sigprocmask(SIG_SETMASK, &old_mask, nullptr);
        return Outcome{};
    }

    std::function<UniqueFd()> report_ready;
    if (registered && hooks.report_ready) report_ready = hooks.report_ready;
    RelayEnds ends{static_cast<pid_t>(pid), pidfd.get(), sfd.get(), chan.get()};
    Relay relay(spec, p.guest.boot, p.guest.init_notifies, ends, std::move(report_ready), started);
    Outcome outcome = relay.run();

    sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    if (groups.cgroup) groups.cgroup->remove();
    if (!relay.setup_error().empty()) throw std::runtime_error(relay.setup_error());
    return outcome;
}

}  // namespace

Launcher::Launcher(SpawnSpec spec, LaunchHooks hooks) : spec_(std::move(spec)), hooks_(std::move(hooks)) {}

int Launcher::run() {
    // As nspawn's notice: on a terminal, pipe mode hands the payload the user's terminal itself.
    if (spec_.console == ConsoleMode::Pipe && !spec_.quiet && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO))
        fprintf(stderr,
                "Console mode 'pipe' selected, but standard input and output are a terminal: the container "
                "gets no terminal of its own and no job control (--console=interactive gives both). "
                "Proceeding anyway.\n");
    if (!spec_.finalized) throw std::logic_error("Launcher: the SpawnSpec was not finalized (call finalize())");
    // A stop request must not kill spawn while it prepares the container (loop devices, shifted
    // owners, locks, scratch directories): held from here, it ends the start once what is prepared
    // is undone, or goes to the guest once the relay runs (run_once keeps them blocked).
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&stop_signals, sig);
    sigprocmask(SIG_BLOCK, &stop_signals, nullptr);
    auto stop_if_requested = [&] {
        sigset_t pending;
        if (sigpending(&pending) < 0) return;
        for (int sig : {SIGTERM, SIGINT, SIGHUP})
            if (sigismember(&pending, sig)) {
                throw UsageError(std::string("stopped by SIG") + sigabbrev_np(sig) +
                                 " before the container started; nothing of it is left");
            }
    };
    // Two containers writing one tree would corrupt it: a writable tree is taken exclusively (by
    // device and inode, so every path to it counts); --read-only and throw-away runs share it.
    const bool exclusive = !spec_.read_only && !spec_.ephemeral && spec_.volatile_mode == VolatileMode::No;
    RunLock image_lock;
    auto lock_image = [&](const struct stat& st, const std::string& lock_dir, const std::string& what) {
        image_lock = RunLock::try_take("image/" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino), lock_dir);
        if (!image_lock)
            throw UsageError(what + " is in use by another running container; use --ephemeral or --read-only to share it");
    };
    // A layer stack: prepare() moves the owners of its rw/ into this run's range, so the stack is
    // taken first (by its directory: the overlay that becomes the root is new for every run).
    if (exclusive && spec_.image.empty() && is_mstack_path(spec_.directory) && !running_rootless()) {
        struct stat st;
        if (stat(spec_.directory.c_str(), &st) < 0) throw_last_error("stat " + spec_.directory);
        lock_image(st, kRunLockDir, spec_.directory);
    }
    Prepared p = prepare(spec_, static_cast<bool>(hooks_.register_machine));
    if (hooks_.detached) {  // the init waits until its pid is recorded (DetachedLaunch::cloned)
        if (p.cgroups) throw UsageError("a detached start cannot boot a guest with groups of its own");
        p.wait_for_parent = true;
        p.exec_gate = hooks_.detached->exec_gate;
    }
    cap_last_cap();  // cache before clone
    signal(SIGPIPE, SIG_IGN);

    // In a root-only directory of the host (run_lock.hpp): no container can take a name first.
    // Rootless: the user's own, in its runtime directory (names are per user, as its machd's would be).
    const std::string lock_dir = p.rootless ? rootless_lock_dir(*p.rootless) : kRunLockDir;
    RunLock name_lock = RunLock::try_take("machine/" + spec_.machine_name, lock_dir);
    if (!name_lock)
        throw UsageError("machine name '" + spec_.machine_name +
                         "' is already in use by a running container; pick another with -M");
    sweep_stale_run_locks(lock_dir);  // files of spawns that were SIGKILLed before they could remove them
    if (exclusive && !image_lock) {
        struct stat st;
        if (!spec_.image.empty() ? stat(spec_.image.c_str(), &st) < 0 : fstat(p.root_dir.get(), &st) < 0)
            throw_last_error("stat " + (spec_.image.empty() ? spec_.directory : spec_.image));
        lock_image(st, lock_dir, spec_.image.empty() ? spec_.directory : spec_.image);
    }

    struct WorkdirCleanup {
        const std::vector<std::string>& dirs;
        ~WorkdirCleanup() {
            for (const auto& w : dirs) rm_rf_at_noexcept(AT_FDCWD, w, kRemoveChmod);
        }
    } cleanup{p.overlay_workdirs};

    stop_if_requested();
    for (;;) {
        Outcome o = run_once(spec_, p, hooks_, created_);
        if (hooks_.detached) return 0;  // the container lives on, detached
        created_ = std::chrono::steady_clock::now();
        if (!o.reboot) {
            if (p.guest.boot && !spec_.quiet)
                fprintf(stderr, "Container %s has been shut down.\n", spec_.machine_name.c_str());
            // Under a service manager 133 means "restart me" (spawn@.service): a payload's own 133
            // must not be taken for that, as nspawn rewrites it too.
            if (spec_.keep_unit && o.exit_code == 133) return 1;
            return o.exit_code;
        }
        // Under a service manager (--keep-unit), let it restart the whole unit, as nspawn does.
        if (spec_.keep_unit) return 133;
        if (!spec_.quiet) fprintf(stderr, "Container %s is being rebooted.\n", spec_.machine_name.c_str());
    }
}

}  // namespace mk::core
