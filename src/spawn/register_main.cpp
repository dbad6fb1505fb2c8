// machkit-register: registers one container with the machine manager (machd or systemd-machined)
// on spawn's behalf. spawn itself is a static binary and carries no D-Bus code; it runs this helper
// once per start, only when a system bus is there to talk to.
//
//   machkit-register create|register NAME LEADER_PID UUID_HEX ROOT [--slice=S] [--kill-signal=N]
//                    [--property=K=V]...
//   machkit-register ready NAME    (machd's SetMachineReady: the guest is up; run by the same spawn)
// A leading --user talks to the user's `machd --user` on the session bus instead (a rootless spawn).
// Exit status: 0 registered; 3 no bus or nothing owns org.freedesktop.machine1; 1 refused or bad
// input (one line on stderr either way).
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "bus/register_client.hpp"
#include "core/base/passwd.hpp"

int main(int argc, char** argv) {
    using namespace mk;
    auto bus = bus::ManagerBus::system;
    if (argc > 1 && std::string_view(argv[1]) == "--user") {
        bus = bus::ManagerBus::user;
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    if (argc == 3 && std::string_view(argv[1]) == "ready") {
        try {
            bus::report_machine_ready(argv[2], bus);
            return 0;
        } catch (const bus::RegisterError& e) {
            // Runs beside a live container whose output shares this stderr: one line, and none when
            // the manager simply has no such method (systemd-machined).
            using K = bus::RegisterError::Kind;
            if (e.kind == K::no_bus || e.kind == K::no_daemon) return 3;
            fprintf(stderr, "spawn: cannot tell the machine manager that %s is ready: %s\n", argv[2], e.what());
            return 1;
        }
    }
    if (argc < 6) {
        fprintf(stderr,
                "usage: machkit-register [--user] create|register NAME LEADER_PID UUID_HEX ROOT [options] | ready NAME\n");
        return 1;
    }
    std::string_view verb = argv[1];
    bus::MachineRegistration m;
    m.name = argv[2];
    auto leader = core::parse_id(argv[3]);
    if (!leader || *leader == 0) {
        fprintf(stderr, "invalid leader PID '%s'\n", argv[3]);
        return 1;
    }
    m.leader = static_cast<pid_t>(*leader);
    std::string_view hex = argv[4];
    if (hex.size() == 32)
        for (size_t i = 0; i < 16; i++)
            m.id[i] = static_cast<uint8_t>(std::stoul(std::string(hex.substr(2 * i, 2)), nullptr, 16));
    m.root_directory = argv[5];
    m.service = "systemd-nspawn";  // the service name clients key behaviour off, as for container=
    bus::ScopeSettings scope;
    for (int i = 6; i < argc; i++) {
        std::string_view a = argv[i];
        if (a.starts_with("--slice=")) scope.slice = std::string(a.substr(8));
        else if (a.starts_with("--kill-signal=")) scope.kill_signal = atoi(argv[i] + 14);
        else if (a.starts_with("--property=")) scope.properties.emplace_back(a.substr(11));
        else {
            fprintf(stderr, "unknown option '%s'\n", argv[i]);
            return 1;
        }
    }
    try {
        if (verb == "create") bus::create_machine(m, scope, bus);
        else if (verb == "register") bus::register_machine(m, bus);
        else {
            fprintf(stderr, "unknown verb '%s'\n", argv[1]);
            return 1;
        }
        return 0;
    } catch (const bus::RegisterError& e) {
        fprintf(stderr, "%s\n", e.what());
        using K = bus::RegisterError::Kind;
        return e.kind == K::no_bus || e.kind == K::no_daemon ? 3 : 1;
    } catch (const std::exception& e) {
        fprintf(stderr, "%s\n", e.what());
        return 1;
    }
}
