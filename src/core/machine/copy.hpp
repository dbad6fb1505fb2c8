// CopyToMachine / CopyFromMachine: file trees copied between the host and a running container,
// never following the guest's symlinks out of it. The container side is reached through
// /proc/LEADER/root with openat2(RESOLVE_IN_ROOT) for the starting directory and then strictly
// fd-relative, O_NOFOLLOW steps (a guest that swaps a directory for a symlink mid-copy gets ELOOP,
// not the host). Symlinks are copied as symlinks, never followed; directories are merged; existing
// files are an error (EEXIST) unless `replace`. Ownership is shifted by the container's UID shift.
// The copy runs in a forked child; the caller watches its pidfd and then calls finish().
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "core/base/unique_fd.hpp"
#include "core/machine/machine.hpp"

namespace mk::core {

inline constexpr uint64_t kCopyReplace = 1;  // machined's MACHINE_COPY_REPLACE, the only public flag
inline constexpr int kCopyDepthMax = 256;

struct CopyOptions {
    bool replace = false;
    int64_t uid_delta = 0;  // added to uid/gid of every copied entry (clamped at 0)
};

// The copy engine: `src_name` in `src_dir` to `dst_name` in `dst_dir`. Returns 0 or a positive errno.
// Never throws; safe to run in a forked child of a single-threaded process.
int copy_tree_at(int src_dir, const char* src_name, int dst_dir, const char* dst_name, const CopyOptions& opts);

class CopyOperation {
public:
    // Validates (absolute paths, flags, container class, UID shift) and forks the copying child.
    static CopyOperation start(const Machine& m, std::string source, std::string destination, bool to_machine,
                               uint64_t flags);
    [[nodiscard]] int pidfd() const noexcept { return pidfd_.get(); }
    // Reaps the child; throws std::system_error with what failed, if it did.
    void finish();

private:
    pid_t pid_ = -1;
    UniqueFd pidfd_;
    UniqueFd result_;  // the child's errno (4 bytes) or EOF on success
    std::string what_;
};

}  // namespace mk::core
