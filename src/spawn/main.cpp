// spawn: boots an OS tree or runs one command in a container. Thin: options -> SpawnSpec -> Launcher.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "core/base/error.hpp"
#include "core/spawn/finalize.hpp"
#include "core/spawn/launcher.hpp"
#include "core/spawn/settings.hpp"
#include "spawn/options.hpp"
#include "spawn/registration.hpp"
#include "spawn/restore_main.hpp"

int main(int argc, char** argv) {
    using namespace mk;
    std::vector<std::string> args(argv, argv + argc);
    // A stop request is held from the start: it must not kill spawn half-way through preparing a
    // container (the launcher ends the start cleanly, or the relay hands it to the guest).
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&stop_signals, sig);
    sigprocmask(SIG_BLOCK, &stop_signals, nullptr);
    try {
        if (spawn::is_restore(args)) return spawn::restore_main(args);  // checkpoint/restore (docs/criu.md)
        spawn::ParsedOptions opts = spawn::parse_options(args, isatty(STDIN_FILENO), isatty(STDOUT_FILENO));
        if (opts.action == spawn::Action::Help) {
            fputs(spawn::help_text(), stdout);
            return 0;
        }
        if (opts.action == spawn::Action::Version) {
            printf("machkit spawn %s\n", MK_VERSION);
            return 0;
        }
        core::SpawnSpec& spec = opts.spec;
        if (spec.settings_mode != core::SettingsMode::No) {
            // The machine's .nspawn file: /etc/systemd/nspawn and /run/systemd/nspawn are trusted;
            // one next to the tree is not, and its privileged keys are ignored (CVE-2026-40226).
            if (auto file = core::find_settings_file(opts.settings_name, spec.directory)) {
                core::Settings settings = core::parse_settings(file->contents, file->path);
                std::vector<std::string> warnings = settings.warnings;
                bool trusted = file->trusted || spec.settings_mode == core::SettingsMode::Trusted;
                core::apply_settings(settings, spec, trusted, warnings, opts.set_on_command_line, spec.settings_mode);
                for (const auto& w : warnings) fprintf(stderr, "spawn: %s\n", w.c_str());  // each names its file
            }
        }
        core::finalize(spec);  // the spec is complete: resolve what its options imply
        core::LaunchHooks hooks;
        if (spawn::should_register(spec)) {
            core::SpawnSpec copy = spec;
            hooks.register_machine = [copy](pid_t leader, const core::Uuid& uuid) {
                return spawn::register_with_manager(copy, leader, uuid);
            };
            hooks.report_ready = [name = spec.machine_name] { return spawn::report_ready_async(name); };
        }
        core::Launcher launcher(std::move(spec), std::move(hooks));
        return launcher.run();
    } catch (const std::exception& e) {
        fprintf(stderr, "spawn: %s\n", core::describe(e).c_str());
        return 1;
    }
}
