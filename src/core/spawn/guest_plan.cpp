#include "core/spawn/guest_plan.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>

#include "core/base/error.hpp"
#include "core/base/id128.hpp"
#include "core/base/os_release.hpp"
#include "core/base/strings.hpp"
#include "core/kernel/capabilities.hpp"
#include "core/spawn/credentials.hpp"
#include "core/spawn/network.hpp"

namespace mk::core {

// A TERM value passed into the container must not carry escape sequences (B-83).
std::string sanitize_term(const char* term) {
    if (!term || !*term || std::strlen(term) > 64) return "vt220";
    for (const char* p = term; *p; p++)
        if (!(isalnum(static_cast<unsigned char>(*p)) || *p == '-' || *p == '_' || *p == '.' || *p == '+')) return "vt220";
    return term;
}

bool root_is_read_only(const SpawnSpec& spec) { return spec.read_only || spec.volatile_mode == VolatileMode::State; }

std::string resolve_in_path(const std::vector<std::string>& env, const std::string& cmd) {
    if (cmd.find('/') != std::string::npos) return cmd;
    std::string path = kDefaultPath;
    for (const auto& e : env)
        if (e.starts_with("PATH=")) path = e.substr(5);
    for (std::string_view dir : split(path, ':')) {
        if (dir.empty()) continue;
        std::string cand = std::string(dir) + "/" + cmd;
        if (access(cand.c_str(), X_OK) == 0) return cand;
    }
    return {};
}

ResolvConfPlan plan_resolv_conf(const SpawnSpec& spec) {
    using M = ResolvConfMode;
    M m = spec.resolv_conf;
    // A private network without a way out gets none; with spawn's veth/zone and NAT the host's works.
    const bool routed = spec.network_veth || !spec.network_zone.empty() || !spec.network_bridge.empty();
    if (m == M::Auto) m = spec.private_network && !routed ? M::Off : (root_is_read_only(spec) ? M::BindHost : M::CopyHost);
    ResolvConfPlan r;
    r.source = "/etc/resolv.conf";
    using A = ResolvConfPlan;
    switch (m) {
    case M::CopyHost: r.action = A::Copy; break;
    case M::CopyStatic: r.action = A::Copy, r.source = "/usr/lib/systemd/resolv.conf"; break;
    case M::CopyUplink: r.action = A::Copy, r.source = "/run/systemd/resolve/resolv.conf"; break;
    case M::CopyStub: r.action = A::Copy, r.source = "/run/systemd/resolve/stub-resolv.conf"; break;
    case M::ReplaceHost: r.action = A::Replace; break;
    case M::ReplaceStatic: r.action = A::Replace, r.source = "/usr/lib/systemd/resolv.conf"; break;
    case M::ReplaceUplink: r.action = A::Replace, r.source = "/run/systemd/resolve/resolv.conf"; break;
    case M::ReplaceStub: r.action = A::Replace, r.source = "/run/systemd/resolve/stub-resolv.conf"; break;
    case M::BindHost: r.action = A::Bind; break;
    case M::BindStatic: r.action = A::Bind, r.source = "/usr/lib/systemd/resolv.conf"; break;
    case M::BindUplink: r.action = A::Bind, r.source = "/run/systemd/resolve/resolv.conf"; break;
    case M::BindStub: r.action = A::Bind, r.source = "/run/systemd/resolve/stub-resolv.conf"; break;
    case M::Delete: r.action = A::Delete, r.source.clear(); break;
    default: r.action = A::None, r.source.clear();
    }
    return r;
}

TimezoneMode plan_timezone(const SpawnSpec& spec) {
    if (root_is_read_only(spec) && spec.timezone != TimezoneMode::Bind) return TimezoneMode::Off;  // nothing may be written
    return spec.timezone;
}

GuestPlan plan_guest(const SpawnSpec& spec, const GuestFacts& facts) {
    GuestPlan g;
    const UserRecord& user = facts.user;
    g.boot = spec.start_mode == StartMode::Boot;
    // What to run.
    if (g.boot) {
        if (facts.init.empty())
            throw UsageError(
                "no init found in " + spec.directory +
                " (looked for /usr/lib/systemd/systemd, /lib/systemd/systemd, /sbin/init); drop -b to run a command");
        g.exec_path = facts.init;
        // systemd always answers $NOTIFY_SOCKET; other inits (busybox, sysvinit) never do, so for
        // them "ready" is the start, as nspawn's --notify-ready=no has it.
        g.init_notifies = spec.notify_ready || std::ranges::find(kSystemdInits, facts.init) != kSystemdInits.end();
        g.argv.push_back(facts.init);
        for (const auto& a : spec.argv) g.argv.push_back(a);
    } else if (spec.argv.empty()) {
        if (facts.shell.empty())
            throw UsageError("no usable shell in " + spec.directory + ": neither " + user.shell +
                             " nor /bin/sh exists there; give a command to run");
        g.exec_path = facts.shell;
        g.argv.push_back("-" + facts.shell.substr(facts.shell.rfind('/') + 1));  // a login shell, as nspawn runs it
    } else {
        g.argv = spec.argv;
        if (spec.argv[0].find('/') != std::string::npos) g.exec_path = spec.argv[0];
    }

    g.hostname = spec.hostname.empty() ? spec.machine_name : spec.hostname;
    g.cwd = !spec.chdir.empty() ? spec.chdir : (g.boot ? "/" : user.home);

    g.bounding = spec.capabilities_all ? ~uint64_t{0} : kDefaultCapabilities;
    // nspawn keeps CAP_NET_ADMIN for a private network; config.json's capability sets are exact.
    if (spec.private_network && !spec.oci.capabilities_given) g.bounding |= cap_bit(CAP_NET_ADMIN);
    g.bounding |= spec.capabilities_add;
    g.bounding &= ~spec.capabilities_drop;
    // A manager that lacks a capability itself (CAP_SYS_RESOURCE on some hosts) cannot grant it.
    g.bounding &= facts.permitted_caps;

    g.use_pty = spec.console == ConsoleMode::Interactive || spec.console == ConsoleMode::ReadOnly ||
                spec.console == ConsoleMode::Passive;
    g.container_manager = spec.container_manager.empty() ? "systemd-nspawn" : spec.container_manager;
    // The machine's UUID: --uuid, else the tree's own machine ID (so that both agree), else random.
    g.uuid = spec.uuid ? *spec.uuid : facts.tree_machine_id ? *facts.tree_machine_id : facts.random_uuid;
    g.resolv_conf = plan_resolv_conf(spec);
    g.timezone = plan_timezone(spec);

    // The environment: nspawn's set, so that guests recognise their container.
    g.env.push_back(std::string("PATH=") + kDefaultPath);
    g.env.push_back("container=" + g.container_manager);
    g.env.push_back("container_uuid=" + id128_to_string(g.uuid, Id128Format::Uuid));
    g.env.push_back("HOME=" + user.home);
    g.env.push_back("USER=" + user.name);
    g.env.push_back("LOGNAME=" + user.name);
    g.env.push_back("TERM=" + (spec.console == ConsoleMode::Pipe ? std::string("dumb") : sanitize_term(spec.term.c_str())));
    if (!g.boot) g.env.push_back("LANG=C.UTF-8");
    if (g.boot) g.env.push_back("NOTIFY_SOCKET=/run/host/notify");
    if (!spec.credentials.empty()) g.env.push_back(std::string("CREDENTIALS_DIRECTORY=") + kCredentialsDirectory);
    for (auto& [k, v] : parse_os_release(facts.host_os_release)) {
        // The parser keeps any key, as machined does; only names fit for the environment pass.
        if (!std::ranges::all_of(k, [](char c) { return isalnum(static_cast<unsigned char>(c)) || c == '_'; })) continue;
        std::string lk = k;
        for (char& c : lk) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
        g.env.push_back("container_host_" + lk + "=" + v);
    }
    for (const auto& e : spec.setenv) {
        std::string name = e.substr(0, e.find('='));
        std::erase_if(g.env, [&](const std::string& x) { return x.compare(0, name.size() + 1, name + "=") == 0; });
        g.env.push_back(e);
    }
    return g;
}

}  // namespace mk::core
