// The user namespace `machd --user` keeps mapped for rootless starts (issue 16, docs/rootless.md).
//
// Mapping a rootless container's user namespace runs the setuid newuidmap and newgidmap (~5 ms of
// CPU each), on every start. `machd --user` maps one namespace with the user's ranges once, holds it
// with a child that only waits, and names it in RUNTIME/machkit/userns (KeptUsernsRecord). A
// rootless spawn whose map is exactly that one joins it (setns) and makes its other namespaces
// there, after checking that the record names a live process of this user whose user namespace is
// a child of ours, owned by the caller, with exactly the expected uid and gid maps. Anything
// missing or different: the namespace is not joined, and spawn maps a new one as before.
//
// Thread-compatible. Side effects: KeptUserNamespace runs newuidmap/newgidmap and writes the
// record; clone_in_user_namespace() forks a short-lived helper.
#pragma once

#include <linux/sched.h>
#include <sys/types.h>

#include <string>

#include "core/base/unique_fd.hpp"
#include "core/spawn/rootless.hpp"

namespace mk::core {

// machd --user's side: the namespace, its holder and its record. Not copyable; the destructor
// removes the record (if it is still this one's), SIGKILLs the holder and reaps it. Machines that
// joined the namespace keep it alive after that.
class KeptUserNamespace {
public:
    // Maps a new namespace with `user.map` (which must be may_join_kept_userns()) and writes the
    // record below `user.runtime_dir`. Throws std::system_error/UsageError; nothing is left then.
    explicit KeptUserNamespace(const RootlessUser& user);
    ~KeptUserNamespace();
    KeptUserNamespace(const KeptUserNamespace&) = delete;
    KeptUserNamespace& operator=(const KeptUserNamespace&) = delete;

    pid_t holder() const { return pid_; }

private:
    void stop() noexcept;
    pid_t pid_ = -1;
    std::string path_, text_;
};

// spawn's side: the kept namespace for `user`, checked as above, or an invalid fd (silently) when
// there is none or it does not check out.
UniqueFd open_kept_user_namespace(const RootlessUser& user);

// clone3(`ca`), with the child's new namespaces owned by the user namespace `userns_fd` rather than
// by a new one (`ca` must not hold CLONE_NEWUSER): a helper forked for it joins that namespace and
// clones the child as our own (CLONE_PARENT), then exits and is reaped here. As clone3: 0 in the
// child, its PID in the caller (and a pidfd in *ca.pidfd when `ca` holds CLONE_PIDFD), -1 and errno
// on failure.
long clone_in_user_namespace(int userns_fd, clone_args ca);

}  // namespace mk::core
