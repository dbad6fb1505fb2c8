// machd: the machine registration daemon, wire-compatible with systemd-machined 252
// (org.freedesktop.machine1 on the system bus). See docs/machd.md; `machd --user`, the per-user one on
// the session bus: docs/rootless.md.
#include <getopt.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <system_error>
#include <string>
#include <vector>

#include <sdbus-c++/sdbus-c++.h>
#include <systemd/sd-daemon.h>

#include "bus/event_loop.hpp"
#include "bus/extension_object.hpp"
#include "bus/import_objects.hpp"
#include "bus/log.hpp"
#include "bus/machine_objects.hpp"
#include "bus/polkit.hpp"
#include "bus/systemd_scope.hpp"
#include "core/base/error.hpp"
#include "core/image/pool.hpp"
#include "core/kernel/cgroup.hpp"
#include "core/machine/launch.hpp"
#include "core/machine/owner.hpp"
#include "core/machine/service.hpp"
#include "core/machine/state_file.hpp"
#include "core/spawn/kept_userns.hpp"
#include "core/spawn/rootless.hpp"
#include "core/spawn/rootless_plan.hpp"
#include "varlink/machine_api.hpp"
#include "varlink/server.hpp"

namespace {

void usage(FILE* out) {
    std::fprintf(out,
                 "Usage: machd [OPTIONS]\n"
                 "Machine registration daemon serving org.freedesktop.machine1 on the system bus.\n\n"
                 "  --state-dir=DIR    machine state files (default /run/systemd/machines)\n"
                 "  --cgroup-root=DIR  cgroup mount root (default /sys/fs/cgroup)\n"
                 "  --stop-timeout=SEC SIGKILL a terminated machine after SEC seconds (default 10)\n"
                 "  --scope-backend=auto|cgroupfs|systemd\n"
                 "                     who creates machine scopes (auto: systemd when it is PID 1\n"
                 "                     and on the bus, else machd itself through cgroupfs)\n"
                 "  --spawn-path=PATH  spawn binary for StartMachine (default " MK_BINDIR
                 "/spawn)\n"
                 "  --machines-dir=DIR where StartMachine boots from (default: the --pool directory)\n"
                 "  --log-dir=DIR      StartMachine's spawn logs (default /run/machkit)\n"
                 "  --pool=DIR         the image pool: image methods and import1 transfers (default /var/lib/machines)\n"
                 "  --transfer-path=PATH machd-transfer helper (default: next to machd in a build tree,\n"
                 "                     else " MK_LIBEXECDIR
                 "/machd-transfer)\n"
                 "  --varlink-dir=DIR  where the io.systemd.Machine and io.systemd.MachineImage Varlink\n"
                 "                     sockets are made, mode 0666 (default /run/systemd/machine)\n"
                 "  --no-varlink       serve no Varlink sockets\n"
                 "  --user             the calling user's machd on its session bus ($DBUS_SESSION_BUS_ADDRESS):\n"
                 "                     state in $XDG_RUNTIME_DIR/machkit, images in ~/.local/share/machines,\n"
                 "                     registrations from that user (a rootless spawn) and root only; keeps a\n"
                 "                     user namespace mapped with the user's ranges for rootless starts\n"
                 "  -h, --help         show this help\n"
                 "  --version          show the version\n\n"
                 "The bus is $DBUS_SYSTEM_BUS_ADDRESS if set. SIGTERM stops machd; machines keep running\n"
                 "and are re-adopted from their state files at the next start.\n");
}

// In a build tree machd is build/src/machd/machd and the helper build/src/transfer/machd-transfer.
std::string default_transfer_path() {
    char buf[4096];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n > 0) {
        std::string exe(buf, static_cast<size_t>(n));
        auto slash = exe.rfind('/');
        if (slash != std::string::npos) {
            std::string candidate = exe.substr(0, slash) + "/../transfer/machd-transfer";
            if (::access(candidate.c_str(), X_OK) == 0) return candidate;
        }
    }
    return MK_LIBEXECDIR "/machd-transfer";
}

// The Varlink server runs in machd's one loop.
struct VarlinkLoop final : mk::varlink::FdLoop {
    explicit VarlinkLoop(mk::bus::EventLoop& loop) : loop_(loop) {}
    void watch(int fd, std::function<void()> on_event) override { loop_.watch_fd(fd, std::move(on_event)); }
    void unwatch(int fd) override { loop_.unwatch_fd(fd); }
    void set_writable(int fd, bool want) override { loop_.set_fd_writable(fd, want); }
    mk::bus::EventLoop& loop_;
};

void make_directory(const std::string& dir, mode_t mode = 0755) {
    for (size_t pos = 1; pos <= dir.size(); pos++) {
        if (pos < dir.size() && dir[pos] != '/') continue;
        std::string prefix = dir.substr(0, pos);
        if (::mkdir(prefix.c_str(), mode) < 0 && errno != EEXIST)
            throw std::system_error(errno, std::generic_category(), "mkdir " + prefix);
    }
}

void keep_user_namespace(std::optional<mk::core::KeptUserNamespace>& kept) {
    if (geteuid() == 0) return;  // root's spawn maps no rootless namespace
    try {
        mk::core::SpawnSpec spec;
        spec.quiet = true;
        mk::core::RootlessUser user = mk::core::prepare_rootless_user(spec);
        if (!mk::core::may_join_kept_userns(user.map)) return;  // no ranges: a start maps its one ID itself
        kept.emplace(user);
        mk::bus::log_line(LOG_INFO,
                          "keeping a user namespace mapped with your subordinate ranges for rootless "
                          "starts (held by PID " +
                              std::to_string(kept->holder()) + ")");
    } catch (const std::exception& e) {
        mk::bus::log_line(LOG_WARNING,
                          "not keeping a mapped user namespace (rootless starts map their own): " + mk::core::describe(e));
    }
}

}  // namespace

int main(int argc, char** argv) {
    std::string state_dir = "/run/systemd/machines";
    std::string cgroup_root = "/sys/fs/cgroup";
    uint64_t stop_timeout_usec = 10'000'000;
    std::string scope_backend = "auto";
    std::string pool_path = "/var/lib/machines";
    // machines_dir stays empty unless given: StartMachine then boots from the pool, where
    // machctl import/pull/clone put the images (issue 17: it used to ignore --pool).
    mk::core::LaunchConfig launch{MK_BINDIR "/spawn", "", "/run/machkit"};
    enum {
        kStateDir = 0x100,
        kCgroupRoot,
        kStopTimeout,
        kScopeBackend,
        kVersion,
        kSpawnPath,
        kMachinesDir,
        kLogDir,
        kPool,
        kTransferPath,
        kVarlinkDir,
        kNoVarlink,
        kUser
    };
    bool user_mode = false;
    std::vector<int> given;  // options set on the command line: --user leaves them alone
    std::string transfer_path;
    std::string varlink_dir = "/run/systemd/machine";
    static const option options[] = {
        {"state-dir", required_argument, nullptr, kStateDir},
        {"cgroup-root", required_argument, nullptr, kCgroupRoot},
        {"stop-timeout", required_argument, nullptr, kStopTimeout},
        {"scope-backend", required_argument, nullptr, kScopeBackend},
        {"spawn-path", required_argument, nullptr, kSpawnPath},
        {"machines-dir", required_argument, nullptr, kMachinesDir},
        {"log-dir", required_argument, nullptr, kLogDir},
        {"pool", required_argument, nullptr, kPool},
        {"transfer-path", required_argument, nullptr, kTransferPath},
        {"varlink-dir", required_argument, nullptr, kVarlinkDir},
        {"no-varlink", no_argument, nullptr, kNoVarlink},
        {"user", no_argument, nullptr, kUser},
        {"help", no_argument, nullptr, 'h'},
        {"version", no_argument, nullptr, kVersion},
        {},
    };
    for (int c; (c = getopt_long(argc, argv, "h", options, nullptr)) != -1;) {
        given.push_back(c);
        switch (c) {
        case kUser: user_mode = true; break;
        case kStateDir: state_dir = optarg; break;
        case kCgroupRoot: cgroup_root = optarg; break;
        case kSpawnPath: launch.spawn_path = optarg; break;
        case kMachinesDir: launch.machines_dir = optarg; break;
        case kLogDir: launch.log_dir = optarg; break;
        case kPool: pool_path = optarg; break;
        case kTransferPath: transfer_path = optarg; break;
        case kVarlinkDir:
            varlink_dir = optarg;
            if (varlink_dir.empty() || varlink_dir.front() != '/') {
                std::fprintf(stderr, "machd: --varlink-dir must be an absolute path, not '%s'\n", optarg);
                return 2;
            }
            break;
        case kNoVarlink: varlink_dir.clear(); break;
        case kScopeBackend:
            scope_backend = optarg;
            if (scope_backend != "auto" && scope_backend != "cgroupfs" && scope_backend != "systemd") {
                std::fprintf(stderr, "machd: invalid --scope-backend '%s'\n", optarg);
                return 2;
            }
            break;
        case kStopTimeout: {
            char* end = nullptr;
            double sec = std::strtod(optarg, &end);
            if (!end || *end || !(sec > 0 && sec <= 3600)) {
                std::fprintf(stderr, "machd: invalid --stop-timeout '%s' (seconds, 0 < SEC <= 3600)\n", optarg);
                return 2;
            }
            stop_timeout_usec = static_cast<uint64_t>(sec * 1e6);
            break;
        }
        case 'h': usage(stdout); return 0;
        case kVersion: std::printf("machd %s\n", MK_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        std::fprintf(stderr, "machd: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }

    if (user_mode) {
        auto plan = mk::core::plan_user_manager(getenv("XDG_RUNTIME_DIR"), getenv("XDG_DATA_HOME"), getenv("HOME"));
        if (!plan.error.empty()) {
            std::fprintf(stderr, "machd: %s\n", plan.error.c_str());
            return 2;
        }
        auto unset = [&](int opt) { return std::find(given.begin(), given.end(), opt) == given.end(); };
        if (unset(kStateDir)) state_dir = plan.state_dir;
        if (unset(kLogDir)) launch.log_dir = plan.log_dir;
        if (unset(kPool)) pool_path = plan.pool;
        if (unset(kVarlinkDir) && unset(kNoVarlink)) varlink_dir = plan.varlink_dir;
        // The user cannot make scopes in the host's tree: registrations name the scope a rootless
        // spawn made in the user's delegated group.
        if (unset(kScopeBackend)) scope_backend = "cgroupfs";
        mk::core::set_manager_owner(getuid());
    }
    if (launch.machines_dir.empty()) launch.machines_dir = pool_path;

    try {
        if (user_mode) {
            make_directory(state_dir, 0700);
            make_directory(pool_path, 0700);
        }
        mk::core::StateDir state(state_dir);
        auto connection = user_mode ? sdbus::createSessionBusConnection() : sdbus::createSystemBusConnection();
        if (scope_backend == "auto") {
            // sd_booted(): systemd as PID 1 owns the cgroup tree; writing it behind its back would fight it.
            struct stat st {};
            bool booted = ::lstat("/run/systemd/system", &st) == 0 && S_ISDIR(st.st_mode);
            scope_backend = booted && mk::bus::SystemdScopeBackend::systemd_on_bus(*connection) ? "systemd" : "cgroupfs";
        }
        mk::core::MachineService* service_ptr = nullptr;
        std::unique_ptr<mk::core::ScopeBackend> backend;
        if (scope_backend == "systemd")
            backend = std::make_unique<mk::bus::SystemdScopeBackend>(
                *connection, cgroup_root, [&](const std::string& unit, const std::string& job, const std::string& result) {
                    if (service_ptr) service_ptr->scope_job_done(unit, job, result);
                });
        else backend = std::make_unique<mk::core::CgroupfsBackend>(cgroup_root);

        // Listeners in order: the loop (watch leader pidfds from the first moment), then the bus
        // objects once they exist. The service reports to both through this chain.
        struct Chain : mk::core::MachineService::Listener {
            std::vector<mk::core::MachineService::Listener*> targets;
            void machine_added(mk::core::Machine& m) override {
                if (m.name != ".host") mk::bus::log_machine_started(m.name, m.leader);
                for (auto* t : targets) t->machine_added(m);
            }
            void machine_removed(const mk::core::Machine& m) override {
                if (m.name != ".host") mk::bus::log_machine_stopped(m.name, m.leader);
                for (auto* t : targets) t->machine_removed(m);
            }
            void machine_start_finished(mk::core::Machine& m, const std::string& error) override {
                for (auto* t : targets) t->machine_start_finished(m, error);
            }
        } chain;
        mk::core::MachineService service(state, *backend, chain, mk::core::kMachinesMax, stop_timeout_usec);
        service_ptr = &service;
        mk::bus::EventLoop loop(*connection, service);  // blocks SIGTERM/SIGINT first
        chain.targets.push_back(&loop);
        service.add_host_machine();
        auto adopted = service.readopt();
        mk::bus::ManagerObject manager(*connection, service, scope_backend == "systemd");
        manager.set_loop(&loop);
        mk::core::ImagePool pool(pool_path);
        mk::bus::ImageService images(*connection, service, pool);
        manager.set_images(&images);
        mk::bus::ExtensionObject extension(*connection, service, cgroup_root, launch);
        if (scope_backend == "systemd") {
            auto* systemd = static_cast<mk::bus::SystemdScopeBackend*>(backend.get());
            extension.use_units([systemd](const std::string& unit) { systemd->start_unit(unit); });
        }
        chain.targets.push_back(&manager);
        if (transfer_path.empty()) transfer_path = default_transfer_path();
        try {
            // Hidden .#import-*/.#pull-* entries of helpers killed with SIGKILL (docs/images.md).
            size_t stale = mk::core::ImagePool(pool_path).remove_stale_temporaries();
            if (stale)
                mk::bus::log_line(LOG_NOTICE,
                                  "removed " + std::to_string(stale) + " stale transfer temporaries from " + pool_path);
        } catch (const std::exception& e) {
            mk::bus::log_line(LOG_WARNING, "pool " + pool_path + ": " + mk::core::describe(e));
        }
        mk::bus::ImportManagerObject import_manager(*connection, loop, transfer_path, pool_path);
        // Non-root callers of the methods machined and importd hand to polkit wait for polkit's
        // answer here (docs/machd.md, Polkit); root never asks.
        mk::bus::PolkitGate polkit(manager.bus(), mk::bus::polkit_machine_lookup(service));
        if (scope_backend == "systemd") {
            auto* systemd = static_cast<mk::bus::SystemdScopeBackend*>(backend.get());
            import_manager.use_units({[systemd](const std::string& unit, const std::vector<std::string>& argv, int in,
                                                int out, int err, const mk::bus::ScopePropertyList& props) {
                                          systemd->start_service(unit, argv, in, out, err, props);
                                      },
                                      [systemd](const std::string& unit) { systemd->stop_unit(unit); }});
        }
        // io.systemd.Machine / io.systemd.MachineImage (systemd >= 257 clients; docs/varlink.md):
        // the same core as the bus objects, in the same loop.
        VarlinkLoop varlink_loop(loop);
        mk::varlink::PendingRegistrations registrations;
        chain.targets.push_back(&registrations);
        mk::varlink::MachineContext varlink_ctx{service, manager.copies(), manager.logins(), registrations};
        std::unique_ptr<mk::varlink::Server> varlink;
        if (!varlink_dir.empty()) {
            try {
                varlink = std::make_unique<mk::varlink::Server>(
                    varlink_loop, mk::varlink::ServiceInfo{"machkit", "machd", MK_VERSION, ""});
                varlink->add_interface(mk::varlink::machine_interface(varlink_ctx));
                varlink->add_interface(mk::varlink::machine_image_interface(service, pool));
                // A user's sockets are the user's own (its runtime directory is 0700 anyway).
                mode_t mode = user_mode ? 0600 : 0666;
                make_directory(varlink_dir, user_mode ? 0700 : 0755);
                varlink->listen(varlink_dir + "/io.systemd.Machine", mode);
                varlink->listen(varlink_dir + "/io.systemd.MachineImage", mode);
            } catch (const std::exception& e) {
                // D-Bus still serves (systemd < 261 needs nothing else); say what newer clients miss.
                varlink.reset();
                mk::bus::log_line(LOG_WARNING, "not serving Varlink in " + varlink_dir + ": " + mk::core::describe(e) +
                                                   " (systemd >= 261's machinectl poweroff/reboot/terminate need it)");
            }
        }
        // Own the names last: clients never see a half-built object tree.
        bool import1 = true;
        try {
            connection->requestName(mk::bus::kImportBusName);
        } catch (const sdbus::Error& e) {
            // e.g. the bus has no org.freedesktop.import1 policy installed: machine1 still serves.
            import1 = false;
            mk::bus::log_line(LOG_WARNING, std::string("not serving ") + mk::bus::kImportBusName + ": " + e.getMessage());
        }
        connection->requestName(mk::bus::kBusName);
        // The user's own machd, alone on its bus now: a user namespace mapped once with the user's
        // ranges, joined by rootless starts instead of mapping their own (docs/rootless.md).
        std::optional<mk::core::KeptUserNamespace> kept_userns;
        if (user_mode) keep_user_namespace(kept_userns);
        // machd.service is Type=notify, not Type=dbus: a BusName= equal to systemd-machined.service's
        // would make systemd refuse to load whichever of the two units comes second.
        sd_notify(0, "READY=1");
        mk::bus::log_line(LOG_INFO, std::string(MK_VERSION) + ": serving " + mk::bus::kBusName + ", scope backend " +
                                        scope_backend + ", " + std::to_string(adopted.size()) + " machine(s) re-adopted");
        int sig = loop.run();
        sd_notify(0, "STOPPING=1");
        mk::bus::log_line(LOG_INFO, std::string(strsignal(sig)) + ", exiting (machines keep running)");
        chain.targets.clear();
        varlink.reset();  // removes the sockets
        connection->releaseName(mk::bus::kBusName);
        if (import1) connection->releaseName(mk::bus::kImportBusName);
        return 0;
    } catch (const sdbus::Error& e) {
        mk::bus::log_line(LOG_ERR, e.getName() + ": " + e.getMessage());
        return 1;
    } catch (const std::exception& e) {
        mk::bus::log_line(LOG_ERR, mk::core::describe(e));
        return 1;
    }
}
