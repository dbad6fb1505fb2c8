// GuestPlan: what the container's PID 1 gets, decided before clone from a finished SpawnSpec
// (see finalize.hpp) and a few facts the outside steps read from the tree and the host. Pure: no
// I/O, so every decision here is unit-tested without root (tests/unit/guest_plan_test.cpp). The
// inside steps (inside_steps.hpp) only carry it out, as mount_apply carries out a mount plan.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/base/passwd.hpp"
#include "core/spawn/spawn_spec.hpp"

namespace mk::core {

// Where a guest's systemd lives, in the order -b looks (before /sbin/init, which may be any init).
inline constexpr std::array<std::string_view, 2> kSystemdInits = {"/usr/lib/systemd/systemd", "/lib/systemd/systemd"};
inline constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// What the outside steps found, for plan_guest().
struct GuestFacts {
    UserRecord user;                         // the payload's user, from the tree's /etc/passwd
    std::string init;                        // find_init() of the tree (read with --boot only); empty: none
    std::string shell;                       // the user's shell if executable in the tree, else /bin/sh if it is, else empty
    std::string host_os_release;             // the host's os-release text
    std::optional<Uuid> tree_machine_id;     // the tree's /etc/machine-id, when valid
    Uuid random_uuid{};                      // taken when neither --uuid nor the tree gives one
    uint64_t permitted_caps = ~uint64_t{0};  // the manager's own permitted set: it cannot grant more
};

// --resolv-conf, resolved: which host file goes to /etc/resolv.conf, and how.
struct ResolvConfPlan {
    enum Action { None, Copy, Replace, Bind, Delete } action = None;
    std::string source;  // host path for Copy/Replace/Bind
};

struct GuestPlan {
    std::vector<std::string> argv;
    std::string exec_path;  // absolute path inside the container, or empty to search PATH
    std::vector<std::string> env;
    std::string hostname;
    std::string cwd;
    uint64_t bounding = 0;  // the capability bounding set
    bool use_pty = false;
    bool boot = false;           // the guest's init: cgroups of its own, a notify socket
    bool init_notifies = false;  // the init will send READY=1 (systemd, or --notify-ready=yes)
    Uuid uuid{};
    std::string container_manager;  // $container and /run/host/container-manager
    ResolvConfPlan resolv_conf;
    TimezoneMode timezone = TimezoneMode::Off;  // Auto stays Auto: it depends on the tree's zoneinfo
};

// Throws UsageError when the tree cannot run what was asked (no init for --boot, no shell).
GuestPlan plan_guest(const SpawnSpec& spec, const GuestFacts& facts);

ResolvConfPlan plan_resolv_conf(const SpawnSpec& spec);
// --timezone with a read-only root: only bind can still be done.
TimezoneMode plan_timezone(const SpawnSpec& spec);
bool root_is_read_only(const SpawnSpec& spec);

// The payload's path: `cmd` itself if it has a '/', else the first executable along the PATH of
// `env` (kDefaultPath if none); empty if none. Runs inside the container (access()).
std::string resolve_in_path(const std::vector<std::string>& env, const std::string& cmd);

// Helpers the plan is made of, public for their tests.
std::string sanitize_term(const char* term);  // "vt220" for odd or escape-laden values (B-83)

}  // namespace mk::core
