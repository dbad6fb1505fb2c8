// How spawn registers its container with the machine manager: it runs the machkit-register helper
// (which holds all the D-Bus code) between clone and the payload's start.
#pragma once

#include <sys/types.h>

#include <string>

#include "core/base/unique_fd.hpp"
#include "core/spawn/spawn_spec.hpp"

namespace mk::spawn {

// Whether to try at all: --register=yes always; the default only when a system bus socket exists.
bool should_register(const core::SpawnSpec& spec);

// Registers (CreateMachine, or RegisterMachine with --keep-unit). Returns true when the machine
// manager took the machine (and placed it in its scope), false when there is no bus or no machine
// manager and --register was not explicitly "yes". Throws core::UsageError with the manager's reason
// when it refused.
bool register_with_manager(const core::SpawnSpec& spec, pid_t leader, const core::Uuid& uuid);

// Runs `machkit-register ready NAME` without waiting for it (io.machkit.Manager1.SetMachineReady:
// machd checks that the caller is a child of the leader's parent, i.e. of this spawn). Returns the
// helper's pidfd for the launcher to reap; an empty fd if it could not be started or was reaped here.
core::UniqueFd report_ready_async(const std::string& name);

// Where the helper is: next to spawn (a build tree), else the installed libexec directory.
std::string register_helper_path();

}  // namespace mk::spawn
