// finalize(): the one place where a SpawnSpec's options imply others, shared by every front end
// (the command line and the OCI bundle in spawn/options.cpp, .nspawn files and machd's
// StartMachine through spawn's main). It runs once the spec is complete, after the settings file,
// and reads the caller's environment so that the launcher never does. Idempotent.
#pragma once

#include <functional>

#include "core/spawn/spawn_spec.hpp"

namespace mk::core {

// Looks up an environment variable; nullptr when unset. The default reads the process's.
using EnvLookup = std::function<const char*(const char*)>;

// - --boot implies SIGRTMIN+3 as the kill signal (a systemd init takes SIGTERM as "re-execute");
// - any network option (veth, zone, bridge, interfaces, macvlan...) implies a private network;
// - $TERM, $SYSTEMD_NSPAWN_CONTAINER_SERVICE (root callers only), $SYSTEMD_NSPAWN_UNIFIED_HIERARCHY
//   (or $UNIFIED_CGROUP_HIERARCHY; booted guests only) and $MK_SPAWN_TIMING are read into the spec.
// Throws UsageError for an environment value that is not valid.
void finalize(SpawnSpec& spec, const EnvLookup& env = {});

}  // namespace mk::core
