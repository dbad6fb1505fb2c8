// machrun's commands. Each returns the process exit status; errors are thrown (UsageError for what
// the caller can fix, std::system_error / std::runtime_error otherwise) and main() logs them.
//
// Process model (runtime-spec "Lifecycle"): `create` runs the launcher in detached mode: it makes
// the namespaces, the init does every inside step (mounts, pivot_root, credentials) and then waits
// at the exec gate (the FIFO exec.fifo in the container's state directory) before exec; machrun
// writes the state and --pid-file and EXITS, so the init is reparented to the engine's subreaper
// (conmon, containerd's shim), which waits for it. `start` opens the gate. Nothing here supervises
// a container after a command returns, and the state is read back from the kernel (state.hpp).
#pragma once

#include "runtime/cli.hpp"

namespace mk::runtime {

int dispatch(const Invocation& inv);

}  // namespace mk::runtime
