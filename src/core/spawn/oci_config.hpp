// --oci-bundle=: an OCI runtime-spec config.json as one more front end producing a SpawnSpec.
//
// A minimal but strict subset, like systemd-nspawn's (which accepts only ociVersion "1.0.0"):
// root, process (args, env, cwd, terminal, user 0:0, rlimits, noNewPrivileges, oomScoreAdj,
// capabilities as one set), hostname, mounts (bind and tmpfs; the API file systems spawn mounts
// itself are accepted and left to it), linux.namespaces (spawn's set; a network namespace new or
// by path), linux.maskedPaths, and annotations (ignored, they are metadata). Every other field is
// refused with "OCI config field 'NAME' is not supported", so a bundle never runs with less
// isolation or fewer settings than it asked for. A full runtime (create/start/state, hooks,
// cgroups resources, seccomp) is a separate front end (issue 13).
//
// Pure: parses text, no I/O; throws UsageError with a one-line reason. Thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/spawn/spawn_spec.hpp"

namespace mk::core {

inline constexpr size_t kOciConfigMax = 1024 * 1024;

// `bundle` is the bundle directory (absolute, normalized): root.path is relative to it.
SpawnSpec parse_oci_config(std::string_view json, const std::string& bundle);

}  // namespace mk::core
