// --link-journal= (nspawn's): where the guest's persistent journal lives and how the other side
// sees it. host/try-host: in the host's /var/log/journal/ID, bind-mounted to the same path in the
// guest. guest/try-guest: in the guest's tree, the host's /var/log/journal/ID a symlink to it.
// auto: host mode if the host's directory for that ID already exists, else nothing. The try-*
// modes and auto skip silently where the plain modes fail (no machine ID, the host's own ID, a
// host path already taken, a tree that is not kept: --ephemeral, --volatile, --image).
// Decided in plan_journal_link() (pure, unit-tested), done by apply_journal_link() before the
// mount plan is built. Side effects of apply: mkdir/rmdir/symlink on the host, mkdir in the tree.
#pragma once

#include <optional>
#include <string>

#include "core/base/id128.hpp"
#include "core/spawn/spawn_spec.hpp"

namespace mk::core {

enum class HostJournalPath { absent, directory, empty_directory, symlink_to_guest, other };

struct JournalLinkPlan {
    enum class Action { none, bind_host, symlink_guest } action = Action::none;
    std::string id;                      // the machine ID, 32 hex digits
    std::string host_path;               // /var/log/journal/ID (host)
    std::string guest_path;              // /var/log/journal/ID (inside the tree)
    bool remove_empty_host_dir = false;  // guest mode over an empty directory: replace it
};

// Throws UsageError for the non-try modes when linking is impossible.
JournalLinkPlan plan_journal_link(LinkJournalMode mode, const std::optional<Uuid>& machine_id,
                                  const std::optional<Uuid>& host_id, HostJournalPath host_state, bool tree_is_kept);

// What is at the host's /var/log/journal/ID: a symlink to `guest_target` counts as ours.
HostJournalPath inspect_host_journal_path(const std::string& host_path, const std::string& guest_target);

// Carries the plan out: the guest directory inside `root_fd`, then the host directory (host mode)
// or the host symlink to `root_path` + guest path (guest mode). Returns the bind mount for the
// mount plan (host mode) or nullopt.
std::optional<BindMount> apply_journal_link(const JournalLinkPlan& plan, int root_fd, const std::string& root_path);

}  // namespace mk::core
