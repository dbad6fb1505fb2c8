// machrun checkpoint / restore: runc's commands of the same names over criu's RPC (core/criu), so
// engines (podman's `container checkpoint/restore`, containerd) drive them as they drive runc.
// See docs/criu.md, "The OCI runtime".
#pragma once

#include "runtime/cli.hpp"

namespace mk::runtime {

// checkpoint ID [--image-path DIR] [--work-path DIR] [--leave-running] [--tcp-established]
//   [--ext-unix-sk] [--shell-job] [--file-locks] [--manage-cgroups-mode MODE]
// Without --leave-running the container is gone afterwards (criu killed it; its cgroup and state
// are removed), as with runc.
int cmd_checkpoint(const Invocation& inv);

// restore ID [--bundle DIR] [--image-path DIR] [--work-path DIR] [--detach] [--pid-file F]
//   [--console-socket S] and the checkpoint's criu flags. The restored init is machrun's child;
// with --detach machrun leaves it to its parent's subreaper (as create does), otherwise it waits
// for it and returns its status.
int cmd_restore(const Invocation& inv);

}  // namespace mk::runtime
