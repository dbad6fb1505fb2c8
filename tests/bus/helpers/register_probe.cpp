// Drives mk::bus::register_client from the bus tests:
//   register-probe register|create NAME PID [PROPERTY=VALUE...]
//   register-probe terminate|unregister NAME
// Prints the object path (or "ok"); on error prints "error KIND DBUS_NAME: MESSAGE" and exits 1.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bus/register_client.hpp"

int main(int argc, char** argv) {
    using namespace mk::bus;
    if (argc < 3) {
        std::fprintf(stderr, "usage: register-probe VERB NAME [PID [PROPERTY=VALUE...]]\n");
        return 2;
    }
    std::string verb = argv[1];
    try {
        if (verb == "register" || verb == "create") {
            if (argc < 4) return 2;
            MachineRegistration m;
            m.name = argv[2];
            m.leader = std::atoi(argv[3]);
            m.root_directory = "/srv/" + m.name;
            for (int i = 0; i < 16; i++) m.id[i] = static_cast<uint8_t>(0xa0 + i);
            if (verb == "register") {
                std::puts(register_machine(m).c_str());
            } else {
                ScopeSettings s;
                for (int i = 4; i < argc; i++) s.properties.emplace_back(argv[i]);
                std::puts(create_machine(m, s).c_str());
            }
        } else if (verb == "terminate") {
            terminate_machine(argv[2]);
            std::puts("ok");
        } else if (verb == "unregister") {
            unregister_machine(argv[2]);
            std::puts("ok");
        } else {
            return 2;
        }
    } catch (const RegisterError& e) {
        static const char* kinds[] = {"no_bus", "no_daemon", "refused", "bad_request"};
        std::printf("error %s %s: %s\n", kinds[static_cast<int>(e.kind)], e.dbus_name.c_str(), e.what());
        return 1;
    }
    return 0;
}
