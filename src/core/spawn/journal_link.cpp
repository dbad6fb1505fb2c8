#include "core/spawn/journal_link.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "core/base/error.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/id128.hpp"
#include "core/spawn/option_values.hpp"

namespace mk::core {

namespace {

constexpr const char* kJournalDir = "/var/log/journal";

bool dir_is_empty(const std::string& path) {
    DIR* d = opendir(path.c_str());
    if (!d) return false;
    bool empty = true;
    while (dirent* e = readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") {
            empty = false;
            break;
        }
    }
    closedir(d);
    return empty;
}

}  // namespace

JournalLinkPlan plan_journal_link(LinkJournalMode mode, const std::optional<Uuid>& machine_id,
                                  const std::optional<Uuid>& host_id, HostJournalPath host_state, bool tree_is_kept) {
    JournalLinkPlan plan;
    if (mode == LinkJournalMode::No) return plan;
    bool strict = mode == LinkJournalMode::Host || mode == LinkJournalMode::Guest;
    auto skip_or_fail = [&](const std::string& why) {
        if (strict) throw UsageError("--link-journal=" + std::string(to_string(mode)) + ": " + why);
        return JournalLinkPlan{};
    };
    if (!machine_id)
        return skip_or_fail("the container has no machine ID (write one to its /etc/machine-id or pass --uuid=)");
    if (host_id && *host_id == *machine_id)
        return skip_or_fail("the container's machine ID is the host's; refusing to link the journals");
    plan.id = id128_to_string(*machine_id);
    plan.host_path = std::string(kJournalDir) + "/" + plan.id;
    plan.guest_path = plan.host_path;
    bool host_mode = mode == LinkJournalMode::Host || mode == LinkJournalMode::TryHost;
    if (mode == LinkJournalMode::Auto) {
        // nspawn's auto: only when the host already keeps a directory for this machine.
        if (host_state != HostJournalPath::directory && host_state != HostJournalPath::empty_directory) return {};
        host_mode = true;
    }
    if (host_mode) {
        if (host_state == HostJournalPath::symlink_to_guest || host_state == HostJournalPath::other)
            return skip_or_fail(plan.host_path +
                                " exists and is not a directory; remove it to keep the journal on the host");
        plan.action = JournalLinkPlan::Action::bind_host;
        return plan;
    }
    if (!tree_is_kept)
        return skip_or_fail(
            "the container's tree is not kept (--ephemeral, --volatile or --image): use --link-journal=host");
    switch (host_state) {
    case HostJournalPath::absent:
    case HostJournalPath::symlink_to_guest: break;
    case HostJournalPath::empty_directory: plan.remove_empty_host_dir = true; break;
    case HostJournalPath::directory:
        return skip_or_fail(plan.host_path + " is a directory with journal files on the host; move them away first");
    case HostJournalPath::other: return skip_or_fail(plan.host_path + " exists and is not ours; remove it first");
    }
    plan.action = JournalLinkPlan::Action::symlink_guest;
    return plan;
}

HostJournalPath inspect_host_journal_path(const std::string& host_path, const std::string& guest_target) {
    struct stat st {};
    if (lstat(host_path.c_str(), &st) < 0) {
        if (errno == ENOENT) return HostJournalPath::absent;
        throw_last_error("cannot inspect " + host_path);
    }
    if (S_ISLNK(st.st_mode)) {
        char buf[4096];
        ssize_t n = readlink(host_path.c_str(), buf, sizeof buf - 1);
        if (n > 0 && std::string(buf, static_cast<size_t>(n)) == guest_target) return HostJournalPath::symlink_to_guest;
        return HostJournalPath::other;
    }
    if (!S_ISDIR(st.st_mode)) return HostJournalPath::other;
    return dir_is_empty(host_path) ? HostJournalPath::empty_directory : HostJournalPath::directory;
}

std::optional<BindMount> apply_journal_link(const JournalLinkPlan& plan, int root_fd, const std::string& root_path) {
    if (plan.action == JournalLinkPlan::Action::none) return std::nullopt;
    // journald's own layout: the machine's directory, 0755 root-owned, under /var/log/journal.
    mkdir_p_in_root(root_fd, plan.guest_path, 0755);
    if (mkdir("/var/log", 0755) < 0 && errno != EEXIST) throw_last_error("cannot create /var/log");
    if (mkdir(kJournalDir, 0755) < 0 && errno != EEXIST) throw_last_error(std::string("cannot create ") + kJournalDir);
    if (plan.action == JournalLinkPlan::Action::bind_host) {
        if (mkdir(plan.host_path.c_str(), 0755) < 0 && errno != EEXIST) throw_last_error("cannot create " + plan.host_path);
        BindMount b;
        b.source = plan.host_path;
        b.destination = plan.guest_path;
        return b;
    }
    std::string target = root_path + plan.guest_path;
    if (plan.remove_empty_host_dir && rmdir(plan.host_path.c_str()) < 0) throw_last_error("cannot remove " + plan.host_path);
    if (symlink(target.c_str(), plan.host_path.c_str()) < 0 && errno != EEXIST)
        throw_last_error("cannot link " + plan.host_path + " to " + target);
    return std::nullopt;
}

}  // namespace mk::core
