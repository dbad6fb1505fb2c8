// Starting a machine from the pool on hosts without systemd (io.machkit.Manager1.StartMachine):
// machd runs `spawn --quiet --boot --console=passive -M NAME -D POOL/NAME` detached (double fork,
// reparented to PID 1), its output appended to LOGDIR/NAME.log. spawn registers the machine with
// machd itself, so from then on the machine is tracked like any other (terminate/kill/poweroff).
// Side effects: fork/exec. Not thread-safe.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace mk::core {

struct LaunchConfig {
    std::string spawn_path;    // the spawn binary
    std::string machines_dir;  // the pool, /var/lib/machines
    std::string log_dir;       // where NAME.log goes (created 0700 if missing)
};

struct Launched {
    pid_t pid = 0;  // spawn's PID (not our child: it was reparented)
    std::string log_path;
};

// Validates the name (machine_name_is_valid, no leading dot) and that POOL/NAME is a directory;
// returns that directory. Throws MachineError invalid_argument, or ENOENT.
std::string launchable_image_dir(const LaunchConfig& cfg, const std::string& name);
// NAME.oci-config next to the image: pulled by pull-oci/import-oci (started without --boot).
bool image_is_oci(const LaunchConfig& cfg, const std::string& name);

// launchable_image_dir(), then the detached spawn. Errno of a failed exec.
Launched launch_machine(const LaunchConfig& cfg, const std::string& name);

// Runs `args` (args[0] the program) detached like launch_machine(), output appended to
// LOGDIR/LOG_NAME.log. Used for spawn --restore (io.machkit.Manager1.RestoreMachine).
Launched launch_detached(const LaunchConfig& cfg, const std::string& log_name, std::vector<std::string> args);

// The unit that boots POOL/NAME where systemd runs: units/spawn@.service's instance.
std::string launch_unit_name(const std::string& name);

}  // namespace mk::core
