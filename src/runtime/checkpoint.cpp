#include "runtime/checkpoint.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sched.h>

#include <climits>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/criu/checkpoint.hpp"
#include "core/spawn/oci_config.hpp"
#include "core/machine/exec.hpp"
#include "runtime/commands_detail.hpp"
#include "runtime/console_socket.hpp"
#include "runtime/log.hpp"

namespace mk::runtime {
namespace {

using core::ContainerLock;
using core::ContainerState;
using core::ContainerStatus;
using core::OciStateDir;
using core::UniqueFd;
using core::UsageError;
using namespace detail;

// runc's default: ./checkpoint in the caller's directory.
std::string image_path_of(const Invocation& inv) {
    std::string p = inv.value("image-path");
    if (!p.empty()) return p;
    char cwd[PATH_MAX];
    if (!::getcwd(cwd, sizeof cwd)) core::throw_last_error("getcwd");
    return std::string(cwd) + "/checkpoint";
}

std::optional<core::criu::CgroupMode> cgroup_mode_of(const Invocation& inv) {
    if (!inv.flag("manage-cgroups-mode")) return std::nullopt;
    std::string v = inv.value("manage-cgroups-mode");
    auto m = core::criu::cgroup_mode_from_string(v);
    if (!m) throw UsageError("--manage-cgroups-mode must be soft, full, strict, ignore or props, not '" + v + "'");
    return m;
}

// runc's flags we take but cannot honour here: refused with the reason rather than ignored.
void refuse_unsupported(const Invocation& inv, const core::criu::CriuCommand& criu) {
    if (inv.flag("pre-dump") || inv.flag("parent-path")) {
        if (!core::criu::memory_tracking_available(criu))
            throw UsageError(
                "Pre-dump (iterative checkpoints) is impossible on this kernel: it lacks soft-dirty page tracking "
                "(CONFIG_MEM_SOFT_DIRTY)");
        throw UsageError("--pre-dump and --parent-path are not supported by machrun yet; checkpoint without them");
    }
    for (const char* f :
         {"page-server", "lazy-pages", "status-fd", "empty-ns", "auto-dedup", "lsm-profile", "lsm-mount-context"})
        if (inv.flag(f)) throw UsageError(std::string("--") + f + " is not supported by machrun; leave it out");
}

}  // namespace

int cmd_checkpoint(const Invocation& inv) {
    std::string id = need_id(inv);
    no_more_args(inv, 1);
    core::criu::CriuCommand criu = core::criu::criu_command(inv.global.criu);
    refuse_unsupported(inv, criu);
    OciStateDir dir(inv.global.root);
    bool leave_running = inv.flag("leave-running");
    {
        ContainerLock lock = dir.lock(id);
        ContainerState st = dir.read(id);
        ContainerStatus status = dir.status(st);
        if (status != ContainerStatus::Running)
            throw UsageError("cannot checkpoint container '" + id + "': it is " + std::string(core::to_string(status)) +
                             ", not running");
        core::SpawnSpec spec = core::parse_oci_config(st.config, st.bundle);
        // criu would dump a shared namespace as the container's own and restore a private copy
        // (a CRI container's pod IPC, a hostPID container's whole tree): refused, not half-restored.
        core::OciNamespacePlan ns = core::plan_oci_namespaces(spec);
        if (ns.clone_flags != (CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID) || !ns.join.empty() || !ns.pid_path.empty())
            throw UsageError("cannot checkpoint container '" + id +
                             "': it shares the host's or another container's UTS, IPC or PID namespace "
                             "(linux.namespaces), which machrun cannot checkpoint yet");
        core::criu::CheckpointRequest req;
        req.machine = machine_name_for(id);
        req.leader = st.pid;
        req.root = st.rootfs;
        req.image_dir = image_path_of(inv);
        req.image_dir_may_exist = true;  // engines make it first (podman), as runc allows
        req.work_dir = inv.value("work-path");
        req.leave_running = leave_running;
        req.tcp_established = inv.flag("tcp-established");
        req.ext_unix_sk = inv.flag("ext-unix-sk");
        req.shell_job = inv.flag("shell-job");
        req.file_locks = inv.flag("file-locks");
        req.manage_cgroups_mode = cgroup_mode_of(inv);
        req.external_network = !spec.network_namespace_path.empty();
        req.own_terminal = spec.console == core::ConsoleMode::Interactive;
        req.criu = criu;
        req.freezer_cgroup = core::machine_freezer_dir(machine_of(st), st.cgroup_root);  // as runc
        core::criu::checkpoint_machine(req);
    }
    // criu killed the tree: what is left is the state and the cgroup (and poststop hooks), as
    // runc's destroy after a checkpoint.
    if (!leave_running) do_delete(dir, id, true);
    return 0;
}

int cmd_restore(const Invocation& inv) {
    std::string id = need_id(inv);
    no_more_args(inv, 1);
    core::criu::CriuCommand criu = core::criu::criu_command(inv.global.criu);
    refuse_unsupported(inv, criu);
    auto [bundle, config, spec, console_size, console_socket, terminal] = load_bundle(inv);
    std::string cgroup = core::oci_cgroup_path(spec.oci.cgroups_path, inv.global.systemd_cgroup, id);
    GroupPlan groups = plan_container_groups(spec);
    UniqueFd netns;
    if (!spec.network_namespace_path.empty()) {
        netns.reset(::open(spec.network_namespace_path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!netns) core::throw_last_error("cannot open network namespace " + spec.network_namespace_path);
    }

    OciStateDir dir(inv.global.root);
    ContainerLock lock = dir.create(id);
    ContainerState st;
    st.id = id;
    st.bundle = bundle;
    st.rootfs = spec.directory;
    st.created = core::rfc3339_now();
    st.config = config;
    st.cgroup_root = kCgroupRoot;
    // Nothing half-made: the restored tree, the cgroup and the state go when a step fails.
    struct Rollback {
        const OciStateDir& dir;
        ContainerState& st;
        pid_t child = 0;
        bool armed = true;
        ~Rollback() {
            if (!armed) return;
            if (child > 0) {
                ::kill(child, SIGKILL);
                (void)core::retry_eintr([&] { return ::waitpid(child, nullptr, 0); });
            }
            undo_container(dir, st, "restore");
        }
    } rollback{dir, st};
    // As create's: the cgroup2 group, the v1 groups of config.json's limits, the limits written.
    std::vector<std::string> v1_groups = make_container_groups(dir, st, groups, cgroup);

    core::criu::RestoreRequest req;
    req.image_dir = image_path_of(inv);
    req.machine = machine_name_for(id);
    req.criu = criu;
    req.root = spec.directory;
    req.work_dir = inv.value("work-path");
    req.ext_unix_sk = inv.flag("ext-unix-sk");
    req.shell_job = inv.flag("shell-job");
    req.file_locks = inv.flag("file-locks");
    req.manage_cgroups_mode = cgroup_mode_of(inv);
    req.network_ns_fd = netns ? netns.get() : -1;
    req.orphan_pts_master = terminal;
    req.on_notify = [&](const std::string& script, int32_t pid, UniqueFd fd) {
        if (script == "orphan-pts-master") {
            if (!fd) throw std::runtime_error("criu sent no terminal with orphan-pts-master");
            if (console_size) set_window_size(fd.get(), *console_size);
            send_console_master(console_socket, fd.get(), "/dev/ptmx");
        } else if (script == "post-restore" && pid > 0) {
            // Before the tasks resume: the whole tree into the container's group, so ps, pause
            // and kill --all see it (criu made it in our cgroups; its cgroup mode is ignore).
            place_in_cgroup(kCgroupRoot, cgroup, pid);
            for (const auto& g : v1_groups) join_group_dir(g, pid);
            core::criu::adopt_into_leader_cgroups(pid, kCgroupRoot);
        }
    };
    core::criu::Restored restored = core::criu::restore_machine(req);
    rollback.child = restored.pid;
    st.pid = restored.pid;
    st.pid_start = start_time_of(restored.pid);
    dir.write(st);
    if (std::string pid_file = inv.value("pid-file"); !pid_file.empty())
        write_file_atomic(pid_file, std::to_string(restored.pid));
    rollback.armed = false;
    if (inv.flag("detach")) return 0;
    lock = ContainerLock();
    siginfo_t si{};
    (void)core::retry_eintr([&] { return waitid(P_PID, static_cast<id_t>(restored.pid), &si, WEXITED); });
    do_delete(dir, id, true);
    return si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
}

}  // namespace mk::runtime
