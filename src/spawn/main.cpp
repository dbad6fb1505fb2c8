// spawn: boots an OS tree or runs one command in a container. Thin: options -> SpawnSpec -> Launcher.
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "core/base/error.hpp"
#include "core/spawn/launcher.hpp"
#include "spawn/options.hpp"

int main(int argc, char** argv) {
    using namespace mk;
    std::vector<std::string> args(argv, argv + argc);
    try {
        spawn::ParsedOptions opts = spawn::parse_options(args, isatty(STDIN_FILENO), isatty(STDOUT_FILENO));
        if (opts.action == spawn::Action::Help) {
            fputs(spawn::help_text(), stdout);
            return 0;
        }
        if (opts.action == spawn::Action::Version) {
            printf("machkit spawn %s\n", MK_VERSION);
            return 0;
        }
        core::Launcher launcher(std::move(opts.spec));
        return launcher.run();
    } catch (const std::exception& e) {
        fprintf(stderr, "spawn: %s\n", core::describe(e).c_str());
        return 1;
    }
}
