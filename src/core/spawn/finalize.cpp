#include "core/spawn/finalize.hpp"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>

#include "core/spawn/container_cgroup.hpp"
#include "core/spawn/network.hpp"

namespace mk::core {

void finalize(SpawnSpec& spec, const EnvLookup& lookup) {
    auto env = [&](const char* name) -> const char* { return lookup ? lookup(name) : ::getenv(name); };
    if (spec.start_mode == StartMode::Boot && spec.kill_signal == 0) spec.kill_signal = SIGRTMIN + 3;
    // As nspawn: links need a network namespace of their own.
    if (ContainerNetwork::needed(spec)) spec.private_network = true;

    const char* term = env("TERM");
    spec.term = term ? term : "";
    if (const char* cm = env("SYSTEMD_NSPAWN_CONTAINER_SERVICE"); cm && *cm && getuid() == 0) spec.container_manager = cm;
    if (spec.start_mode == StartMode::Boot) {
        const char* var = "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY";
        const char* value = env(var);
        if (!value || !*value) {
            var = "UNIFIED_CGROUP_HIERARCHY";  // nspawn's old name for it
            value = env(var);
        }
        spec.unified_cgroup_hierarchy = parse_unified_override(value, var);
    }
    spec.report_exec_timing = env("MK_SPAWN_TIMING") != nullptr;
    spec.finalized = true;
}

}  // namespace mk::core
