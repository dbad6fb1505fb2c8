#include "core/spawn/rootless.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <linux/sched.h>
#include <spawn.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <vector>

#include "core/base/child_error.hpp"
#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/passwd.hpp"
#include "core/kernel/userns.hpp"
#include "core/spawn/rootless_plan.hpp"

extern char** environ;

namespace mk::core {

namespace {

// Debian's uidmap package puts them here; a PATH search would let the caller's environment pick a
// different program for a setuid job.
constexpr const char* kNewuidmap = "/usr/bin/newuidmap";
constexpr const char* kNewgidmap = "/usr/bin/newgidmap";

std::string user_name(uid_t uid) {
    std::string passwd = read_host_file("/etc/passwd").value_or("");
    // find_user() takes digits as a uid; find the line by its third field instead.
    size_t pos = 0;
    const std::string want = std::to_string(uid);
    while (pos < passwd.size()) {
        size_t nl = passwd.find('\n', pos);
        std::string_view line(passwd.data() + pos, (nl == std::string::npos ? passwd.size() : nl) - pos);
        pos = nl == std::string::npos ? passwd.size() : nl + 1;
        size_t a = line.find(':');
        size_t b = a == std::string_view::npos ? a : line.find(':', a + 1);
        size_t c = b == std::string_view::npos ? b : line.find(':', b + 1);
        if (c != std::string_view::npos && line.substr(b + 1, c - b - 1) == want) return std::string(line.substr(0, a));
    }
    return want;
}

pid_t start_helper(const std::vector<std::string>& args) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid;
    // The helper reports its own refusals (which range, which file) on our stderr.
    int r = posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ);
    if (r != 0) throw_errno(r, "cannot run " + args[0]);
    return pid;
}

// True if the helper exited 0.
bool wait_helper(pid_t pid) {
    int status = 0;
    if (retry_eintr([&] { return waitpid(pid, &status, 0); }) < 0) return false;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

void write_file(const std::string& path, const std::string& text) {
    UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) throw_last_error("cannot open " + path);
    if (write(fd.get(), text.data(), text.size()) < 0) throw_last_error("cannot write " + path);
}

void write_proc(pid_t pid, const char* file, const std::string& text) {
    write_file("/proc/" + std::to_string(pid) + "/" + file, text);
}

// The PID of `pidfd`'s process as the /proc mounted here numbers it: the container's init makes the
// nested namespace before it mounts its own /proc, so /proc is still one of an outer PID namespace.
// A pidfd's fdinfo gives the PID in the namespace of the procfs it is read through (proc(5),
// "Pid:"; 0 when the process is not visible there). Never a guess: another process's maps must not
// be written.
pid_t proc_pid_of(int pidfd) {
    std::string info = read_host_file("/proc/self/fdinfo/" + std::to_string(pidfd), 4096).value_or("");
    size_t at = info.find("\nPid:\t");
    long n = at == std::string::npos ? 0 : strtol(info.c_str() + at + 6, nullptr, 10);
    if (n <= 0)
        throw std::runtime_error(
            "cannot find the nested user namespace's process in /proc: /proc must show spawn's own processes");
    return static_cast<pid_t>(n);
}

}  // namespace

bool running_rootless() { return geteuid() != 0; }

RootlessUser prepare_rootless_user(const SpawnSpec& spec) {
    check_rootless_spec(spec);
    RootlessUser u;
    u.uid = geteuid();
    u.gid = getegid();
    u.name = user_name(u.uid);

    if (!spec.directory.empty() && faccessat(AT_FDCWD, spec.directory.c_str(), R_OK | X_OK, AT_EACCESS) < 0) {
        if (errno == ENOENT) throw UsageError("directory " + spec.directory + " does not exist; pass an OS tree with -D");
        throw UsageError("cannot read " + spec.directory + " as " + u.name + " (" + strerror(errno) +
                         "): a rootless container's tree must be yours, e.g. unpacked with podman unshare");
    }

    auto subuid = parse_subid_file(read_host_file("/etc/subuid", kSubidMaxFileSize).value_or(""));
    auto subgid = parse_subid_file(read_host_file("/etc/subgid", kSubidMaxFileSize).value_or(""));
    u.uid_ranges = subid_ranges_for(subuid, u.name, u.uid);
    u.gid_ranges = subid_ranges_for(subgid, u.name, u.gid);
    u.map = plan_rootless_map(u.name, u.uid, u.gid, u.uid_ranges, u.gid_ranges);
    if (u.map.needs_helpers) {
        for (const char* h : {kNewuidmap, kNewgidmap}) {
            struct stat st;
            if (stat(h, &st) < 0)
                throw UsageError(std::string(h) +
                                 " is missing: install it (apt-get install uidmap) to use your ranges in "
                                 "/etc/subuid and /etc/subgid");
            if (!(st.st_mode & S_ISUID) || st.st_uid != 0)
                throw UsageError(std::string(h) +
                                 " is not setuid root, so it cannot map your subordinate ranges: "
                                 "reinstall it (apt-get install --reinstall uidmap)");
        }
        u.newuidmap = kNewuidmap;
        u.newgidmap = kNewgidmap;
    }
    if (!u.map.limitation.empty() && !spec.quiet) fprintf(stderr, "spawn: %s\n", u.map.limitation.c_str());

    const char* xdg = getenv("XDG_RUNTIME_DIR");
    if (xdg && xdg[0] == '/') {
        u.runtime_dir = xdg;
    } else {
        std::string run_user = "/run/user/" + std::to_string(u.uid);
        struct stat st;
        if (stat(run_user.c_str(), &st) == 0 && st.st_uid == u.uid) u.runtime_dir = run_user;
    }
    if (u.runtime_dir.empty())
        throw UsageError(
            "no $XDG_RUNTIME_DIR: log in through a session, or set XDG_RUNTIME_DIR to a private "
            "directory of yours (spawn keeps its locks there)");
    return u;
}

void write_rootless_maps(pid_t pid, const RootlessUser& u) {
    if (u.map.needs_helpers) {
        // Both at once: each is a setuid program's start (~20 ms here), and they touch different files.
        pid_t uid_helper = start_helper(id_map_helper_args(u.newuidmap, pid, u.map.uid_lines));
        pid_t gid_helper = -1;
        try {
            gid_helper = start_helper(id_map_helper_args(u.newgidmap, pid, u.map.gid_lines));
        } catch (...) {
            wait_helper(uid_helper);
            throw;
        }
        bool uid_ok = wait_helper(uid_helper);
        bool gid_ok = wait_helper(gid_helper);
        if (!uid_ok || !gid_ok)
            throw UsageError(std::string(!uid_ok ? u.newuidmap : u.newgidmap) +
                             " refused the container's map (see its message above): check your ranges in /etc/sub" +
                             (!uid_ok ? "uid" : "gid"));
        return;
    }
    // Without the helpers the kernel lets us map our own IDs only, and the gid map only once
    // setgroups(2) is denied in the namespace (user_namespaces(7)).
    write_proc(pid, "uid_map", map_lines_text(u.map.uid_lines));
    write_proc(pid, "setgroups", "deny");
    write_proc(pid, "gid_map", map_lines_text(u.map.gid_lines));
}

namespace {

constexpr const char* kShiftingXattr = "user.machkit.shifting";

// The child of run_in_shift_namespace(): a user namespace of its own, mapped by the parent, then
// `work` as its root.
[[noreturn]] void shift_namespace_child(const std::function<void()>& work, int ready, int go, int err) noexcept {
    const char* step = "create the shift's user namespace";
    try {
        if (unshare(CLONE_NEWUSER) < 0) throw_last_error(step);
        char c = 1;
        if (write(ready, &c, 1) != 1) _exit(1);
        if (read(go, &c, 1) != 1) _exit(1);  // the parent failed to map us
        step = "work as the range's owner";
        work();
        _exit(0);
    } catch (const std::system_error& e) {
        ChildError::make(step, e.code().value(), e.what()).send_to(err);
    } catch (const std::exception& e) {
        ChildError::make(step, 0, e.what()).send_to(err);
    } catch (...) {
        ChildError::make(step, 0).send_to(err);
    }
    _exit(1);
}

}  // namespace

void run_in_shift_namespace(const RootlessUser& u, const RootlessMap& range_map, const std::function<void()>& work) {
    RootlessUser helper = u;
    helper.map = plan_rootless_shift_map(range_map, u.uid, u.gid);
    int a[2], b[2], c[2];
    if (pipe2(a, O_CLOEXEC) < 0) throw_last_error("pipe");
    UniqueFd ready_rd(a[0]), ready_wr(a[1]);
    if (pipe2(b, O_CLOEXEC) < 0) throw_last_error("pipe");
    UniqueFd go_rd(b[0]), go_wr(b[1]);
    if (pipe2(c, O_CLOEXEC) < 0) throw_last_error("pipe");
    UniqueFd err_rd(c[0]), err_wr(c[1]);
    pid_t pid = fork();
    if (pid < 0) throw_last_error("fork");
    if (pid == 0) shift_namespace_child(work, ready_wr.get(), go_rd.get(), err_wr.get());
    ready_wr.reset();
    go_rd.reset();
    err_wr.reset();
    struct Reap {
        pid_t pid;
        bool done = false;
        ~Reap() {
            if (done) return;
            kill(pid, SIGKILL);
            (void)retry_eintr([&] { return waitpid(pid, nullptr, 0); });
        }
    } reap{pid};
    char ok = 0;
    if (retry_eintr([&] { return read(ready_rd.get(), &ok, 1); }) != 1) {
        auto e = ChildError::receive_from(err_rd.get());
        throw UsageError(explain_userns_failure(e ? e->err : EPERM));
    }
    write_rootless_maps(pid, helper);
    if (write(go_wr.get(), &ok, 1) != 1) throw_last_error("cannot wake the shift's process");
    go_wr.reset();
    auto e = ChildError::receive_from(err_rd.get());
    int status = 0;
    (void)retry_eintr([&] { return waitpid(pid, &status, 0); });
    reap.done = true;
    if (e) throw std::runtime_error(e->what());
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw std::runtime_error("the shift's process died");
}

void shift_rootless_tree(int tree_fd, const RootlessUser& u, const RootlessMap& range_map) {
    const uint32_t count = std::min(range_map.uid_count(), range_map.gid_count());
    try {
        run_in_shift_namespace(u, range_map, [&] {
            if (fsetxattr(tree_fd, kShiftingXattr, "1", 1, 0) < 0 && errno != ENOTSUP && errno != EOPNOTSUPP)
                throw_last_error("cannot mark the tree's root as being shifted");
            shift_tree_owners_up_one(tree_fd, count);
            if (fremovexattr(tree_fd, kShiftingXattr) < 0 && errno != ENODATA && errno != ENOTSUP && errno != EOPNOTSUPP)
                throw_last_error("cannot remove the tree's shift mark");
        });
    } catch (const UsageError&) {
        throw;
    } catch (const std::exception& e) {
        throw std::runtime_error(std::string("cannot move the tree's owners into your subordinate range: ") + e.what() +
                                 "; the tree is half moved now: unpack it again");
    }
}

std::function<void(const std::string&)> rootless_cgroup_remover(const RootlessUser& u) {
    if (u.map.own_ids_mapped) return {};
    return [u](const std::string& dir) { run_in_shift_namespace(u, u.map, [&] { remove_cgroup_tree(dir); }); };
}

void delegate_rootless_cgroup(const RootlessUser& u, const ContainerCgroup& cgroup) {
    if (u.map.own_ids_mapped) return;  // root inside is the user, who made the group
    try {
        // The range map's inside 0 is the shift namespace's 1.
        run_in_shift_namespace(u, u.map, [&] { cgroup.delegate_to(1, 1); });
    } catch (const UsageError&) {
        throw;
    } catch (const std::exception& e) {
        throw std::runtime_error(std::string("cannot hand the machine's cgroup to its root: ") + e.what());
    }
}

void settle_rootless_tree_ownership(RootlessUser& u, const SpawnSpec& spec, int root_fd) {
    if (!spec.image.empty()) return;  // refused by check_rootless_spec()
    struct stat st;
    if (fstat(root_fd, &st) < 0) throw_last_error("cannot stat " + spec.directory);
    RootlessOwnershipInput in;
    in.tree = spec.directory;
    in.uid = u.uid;
    in.root_owner = st.st_uid;
    if (!u.uid_ranges.empty()) in.first_subuid = u.uid_ranges.front().start;
    in.has_ranges = !u.uid_ranges.empty() && !u.gid_ranges.empty();
    in.consent = spec.userns_ownership == UserNamespaceOwnership::Chown;
    in.keeps_tree = spec.ephemeral || spec.volatile_mode != VolatileMode::No || spec.read_only;
    if (in.consent && in.root_owner == u.uid) {
        const std::string self = "/proc/self/fd/" + std::to_string(root_fd);
        char c;
        in.interrupted = getxattr(self.c_str(), kShiftingXattr, &c, 1) >= 0 || errno == ERANGE;
    }
    RootlessOwnershipPlan plan = plan_rootless_ownership(in);
    if (plan.how == RootlessTreeOwnership::AsIs) return;
    RootlessMap range = plan_rootless_range_map(u.name, u.uid, u.gid, u.uid_ranges, u.gid_ranges);
    // The shift's line is printed even with --quiet: it happens once and changes how the tree is edited.
    if (!plan.notice.empty() && (!spec.quiet || plan.how == RootlessTreeOwnership::ShiftNow))
        fprintf(stderr, "spawn: %s\n", plan.notice.c_str());
    if (plan.how == RootlessTreeOwnership::ShiftNow) {
        UniqueFd tree(openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!tree) throw_last_error("cannot open " + spec.directory);
        shift_rootless_tree(tree.get(), u, range);
    }
    u.map = std::move(range);
}

void become_mapped_root(const RootlessUser& u) {
    if (u.map.own_ids_mapped) return;
    if (setgroups(0, nullptr) < 0) throw_last_error("setgroups");
    if (setresgid(0, 0, 0) < 0) throw_last_error("setresgid");
    if (setresuid(0, 0, 0) < 0) throw_last_error("setresuid");
    // A credential change clears the parent-death signal and makes us non-dumpable, which gives our
    // /proc files (uid_map of the nested namespace's maker) to the host's root: undo both.
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) throw_last_error("prctl(PDEATHSIG)");
    if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0) throw_last_error("prctl(PR_SET_DUMPABLE)");
}

pid_t clone_into_new_user_namespace(int* pidfd, const std::string& what) {
    clone_args ca{};
    ca.flags = CLONE_NEWUSER | CLONE_PIDFD;
    ca.pidfd = reinterpret_cast<uint64_t>(pidfd);
    ca.exit_signal = SIGCHLD;
    long pid = syscall(SYS_clone3, &ca, sizeof ca);
    if (pid < 0) throw_last_error(what);
    return static_cast<pid_t>(pid);
}

IdentityUserNamespace make_identity_user_namespace(const RootlessMap& map) {
    auto identity = [](std::vector<MapLine> lines) {
        for (auto& l : lines) l.outside = l.inside;
        return map_lines_text(lines);
    };
    const std::string uid_text = identity(map.uid_lines), gid_text = identity(map.gid_lines);
    // Born in the new namespace (clone3 with CLONE_NEWUSER), so we may map it at once, without waiting
    // for the child to be scheduled; it only has to live until its /proc/PID/ns/user is open.
    int pidfd_raw = -1;
    pid_t pid = clone_into_new_user_namespace(&pidfd_raw, "cannot create the nested user namespace");
    if (pid == 0) {
        for (;;) pause();  // until SIGKILL
    }
    UniqueFd pidfd(pidfd_raw);
    IdentityUserNamespace ns;
    ns.maker = static_cast<pid_t>(pid);
    struct Kill {
        pid_t pid;
        ~Kill() { kill(pid, SIGKILL); }  // done with it, or failed: either way it goes now
    } kill_maker{ns.maker};
    const std::string dir = "/proc/" + std::to_string(proc_pid_of(pidfd.get())) + "/";
    write_file(dir + "uid_map", uid_text);
    if (!map.needs_helpers) write_file(dir + "setgroups", "deny");  // denied above us already
    write_file(dir + "gid_map", gid_text);
    ns.fd.reset(open((dir + "ns/user").c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns.fd) throw_last_error("cannot open " + dir + "ns/user");
    return ns;
}

void reap_identity_maker(IdentityUserNamespace& ns) {
    if (ns.maker <= 0) return;
    (void)retry_eintr([&] { return waitpid(ns.maker, nullptr, 0); });
    ns.maker = -1;
}

std::optional<RootlessCgroups> find_rootless_cgroups(const RootlessUser& user, std::string_view machine_name,
                                                     std::optional<unsigned> guest_systemd, bool quiet) {
    CgroupLayout host = detect_cgroup_layout();
    RootlessCgroupInput in;
    in.uid = user.uid;
    in.guest_systemd = guest_systemd;
    std::string self = read_host_file("/proc/self/cgroup", 1 << 16).value_or("");
    if (size_t at = self.find("0::"); at != std::string::npos && (at == 0 || self[at - 1] == '\n'))
        in.own_cgroup2 = self.substr(at + 3, self.find('\n', at) - at - 3);
    const bool cgroup2 = host.mode == CgroupMode::Unified || host.mode == CgroupMode::Hybrid;
    if (cgroup2 && !in.own_cgroup2.empty() && in.own_cgroup2 != "/") {
        // The kernel lets us create a group beside ours and move processes into it when we may
        // write both the parent directory and its cgroup.procs (cgroups(7), "delegation").
        std::string parent = "/sys/fs/cgroup" + host.unified_dir + in.own_cgroup2.substr(0, in.own_cgroup2.rfind('/'));
        in.own_parent_writable = access(parent.c_str(), W_OK) == 0 && access((parent + "/cgroup.procs").c_str(), W_OK) == 0;
    }
    RootlessCgroupPlan plan = plan_rootless_cgroup(in, machine_name);
    if (plan.parent.empty()) {
        if (!quiet) fprintf(stderr, "spawn: %s\n", plan.notice.c_str());
        return std::nullopt;
    }
    RootlessCgroups out;
    out.layout.mode = CgroupMode::Unified;
    out.layout.unified_dir = host.unified_dir;
    out.path = plan.parent;
    return out;
}

void open_low_ports_to_guest() {
    UniqueFd f(open("/proc/sys/net/ipv4/ip_unprivileged_port_start", O_WRONLY | O_CLOEXEC));
    if (!f || write(f.get(), "0", 1) != 1) throw_last_error("cannot open the ports below 1024 to the guest");
}

std::string explain_userns_failure(int err) {
    std::string limit = read_host_file("/proc/sys/user/max_user_namespaces", 64).value_or("?");
    while (!limit.empty() && (limit.back() == '\n' || limit.back() == ' ')) limit.pop_back();
    if (err == ENOSPC || err == EUSERS)
        return "cannot create a user namespace: none may be made here (user.max_user_namespaces is " + limit +
               ", or your share of it is used up): ask the administrator to raise user.max_user_namespaces";
    if (err == EPERM || err == EACCES) {
        std::string extra;
        if (auto v = read_host_file("/proc/sys/kernel/unprivileged_userns_clone", 64); v && v->starts_with("0"))
            extra = " (kernel.unprivileged_userns_clone is 0)";
        return "cannot create a user namespace: unprivileged user namespaces are disabled" + extra +
               " or refused by a security policy (seccomp, AppArmor): ask the administrator to allow them, or run as root";
    }
    return std::string("cannot create the container's namespaces: ") + strerror(err);
}

std::string rootless_lock_dir(const RootlessUser& u) { return u.runtime_dir + "/machkit/locks"; }

}  // namespace mk::core
