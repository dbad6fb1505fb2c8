// machrun: machkit as an OCI runtime, with runc's command line, for podman (conmon), containerd's
// runc shim, CRI-O and Kubernetes' RuntimeClass. Named like its siblings machd and machctl; the
// "run" says what engines call it for (their configs name it as runc's replacement: BinaryName,
// --runtime, runtime_path). See docs/oci.md.
#include <cstdio>
#include <string>
#include <vector>

#include "core/base/error.hpp"
#include "runtime/cli.hpp"
#include "runtime/commands.hpp"
#include "runtime/log.hpp"

namespace {

void print_help() {
    printf(
        "Usage: machrun [GLOBAL OPTIONS] COMMAND [OPTIONS] ID [ARGS]\n\n"
        "machkit's OCI runtime (runc's command line).\n\n"
        "Global options:\n"
        "  --root DIR            state directory (default /run/machrun)\n"
        "  --log FILE            also log to FILE\n"
        "  --log-format FORMAT   text or json\n"
        "  --systemd-cgroup      cgroupsPath is slice:prefix:name\n"
        "  --debug               log debug messages\n"
        "  --criu CMD            criu command line for checkpoint/restore (default $MK_CRIU or criu)\n"
        "  --version             print the version\n\n"
        "Commands:\n"
        "  create ID --bundle DIR [--pid-file F] [--console-socket S]\n"
        "  start ID | run ID --bundle DIR | state ID | kill ID [SIGNAL] [--all]\n"
        "  delete ID [--force] | list [--format json] | ps ID [--format json]\n"
        "  exec ID [--process FILE | CMD ARGS...] [--detach] [--pid-file F] [--tty --console-socket S]\n"
        "  pause ID | resume ID | features | spec [--bundle DIR]\n"
        "  update ID [--resources FILE|-] [--memory SIZE] [--memory-swap SIZE] [--pids-limit N]\n"
        "            [--cpu-quota N] [--cpu-period N] [--cpu-share N] [--cpuset-cpus L] ... (runc's flags)\n"
        "  events ID [--stats] [--interval DURATION]\n"
        "  checkpoint ID [--image-path DIR] [--work-path DIR] [--leave-running] [--tcp-established]\n"
        "  restore ID --bundle DIR [--image-path DIR] [--detach] [--pid-file F] [--console-socket S]\n");
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    mk::runtime::Invocation inv;
    try {
        inv = mk::runtime::parse_command_line(args);
    } catch (const std::exception& e) {
        fprintf(stderr, "machrun: %s\n", e.what());
        return 2;
    }
    mk::runtime::open_log(inv.global);
    if (inv.version) {
        printf("machrun version %s\nspec: 1.0.0\n", MK_VERSION);
        return 0;
    }
    if (inv.help) {
        print_help();
        return 0;
    }
    try {
        return mk::runtime::dispatch(inv);
    } catch (const mk::core::UsageError& e) {
        mk::runtime::log_error(e.what());
        return 1;
    } catch (const std::exception& e) {
        mk::runtime::log_error(mk::core::describe(e));
        return 1;
    }
}
