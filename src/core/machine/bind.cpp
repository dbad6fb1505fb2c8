#include "core/machine/bind.hpp"

#include <fcntl.h>
#include <linux/mount.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/base/error.hpp"
#include "core/base/step_pipe.hpp"
#include "core/base/unique_fd.hpp"
#include "core/machine/inspect.hpp"
#include "core/machine/machine_error.hpp"

namespace mk::core {
namespace {

[[noreturn]] void invalid(const std::string& msg) { throw_machine_error(MachineErrc::invalid_argument, msg); }

// mkdir -p inside the current (the container's) mount namespace; the last component as a directory
// or, for a file source, an empty file.
int make_path(const std::string& path, bool last_is_dir) {
    for (size_t pos = 1; pos < path.size(); pos++) {
        if (path[pos] != '/') continue;
        std::string part = path.substr(0, pos);
        if (::mkdir(part.c_str(), 0755) < 0 && errno != EEXIST) return -1;
    }
    if (last_is_dir) return ::mkdir(path.c_str(), 0755) < 0 && errno != EEXIST ? -1 : 0;
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_NOCTTY | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return errno == EEXIST ? 0 : -1;
    ::close(fd);
    return 0;
}

}  // namespace

bool path_is_absolute_normalized(std::string_view p) {
    if (p.empty() || p[0] != '/' || p.size() > 4096) return false;
    if (p == "/") return true;
    if (p.back() == '/') return false;
    size_t pos = 1;
    while (pos <= p.size()) {
        size_t next = p.find('/', pos);
        std::string_view comp = p.substr(pos, next == std::string_view::npos ? std::string_view::npos : next - pos);
        if (comp.empty() || comp == "." || comp == "..") return false;
        if (next == std::string_view::npos) break;
        pos = next + 1;
    }
    return true;
}

void bind_mount_into_machine(const Machine& m, const std::string& source, const std::string& destination, bool read_only,
                             bool make_dir) {
    if (m.klass != MachineClass::container)
        throw_machine_error(MachineErrc::not_supported, "Bind mounting is only supported on container machines.");
    const std::string dest = destination.empty() ? source : destination;
    if (!path_is_absolute_normalized(source)) invalid("Source path must be absolute and normalized.");
    if (!path_is_absolute_normalized(dest) || dest == "/") invalid("Destination path must be absolute and normalized.");
    if (machine_uid_shift(m) != 0)
        throw_machine_error(MachineErrc::not_supported, "Can't bind mount on container with user namespacing applied.");

    UniqueFd tree(static_cast<int>(
        ::syscall(SYS_open_tree, AT_FDCWD, source.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)));
    if (!tree) throw_last_error("Failed to clone " + source);
    if (read_only) {
        mount_attr attr{};
        attr.attr_set = MOUNT_ATTR_RDONLY;
        if (::syscall(SYS_mount_setattr, tree.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
            throw_last_error("Failed to make " + source + " read-only");
    }
    struct stat st {};
    if (::fstat(tree.get(), &st) < 0) throw_last_error("fstat " + source);
    const bool is_dir = S_ISDIR(st.st_mode);

    StepPipe steps;
    pid_t child = steps.fork();
    if (child == 0) {
        if (::setns(m.leader_pidfd.get(), CLONE_NEWNS) < 0) steps.fail("join the mount namespace");
        if (make_dir && make_path(dest, is_dir) < 0) steps.fail("create");
        if (::syscall(SYS_move_mount, tree.get(), "", AT_FDCWD, dest.c_str(), MOVE_MOUNT_F_EMPTY_PATH) < 0)
            steps.fail("mount on");
        _exit(0);
    }
    auto failed = steps.result();
    int rc = wait_exit_code(child);
    if (failed) {
        const std::string step = failed->step_name();
        std::string what = step == "join the mount namespace" ? step + " of machine " + m.name
                                                              : step + " " + dest + " in machine " + m.name;
        throw std::system_error(failed->err, std::generic_category(), "Failed to " + what);
    }
    if (rc != 0) throw_errno(EIO, "Bind mount helper failed");
}

}  // namespace mk::core
