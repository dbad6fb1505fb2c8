#include "core/spawn/rootless_plan.hpp"

#include <linux/mount.h>
#include <sys/sysmacros.h>

#include "core/base/error.hpp"
#include "core/base/names.hpp"
#include "core/kernel/userns.hpp"

namespace mk::core {

void check_rootless_spec(const SpawnSpec& spec) {
    if (!spec.image.empty())
        throw UsageError(
            "-i needs root (loop devices and partition mounts): run as root, or unpack the image "
            "into a directory and pass it with -D");
    for (const auto& b : spec.binds)
        if (b.idmap || b.idmap_root)
            throw UsageError("--bind=" + b.source +
                             ":idmap needs root (idmapped mounts are made in the initial "
                             "user namespace): drop :idmap, the container's root already is your uid");
    if (!spec.network_interfaces.empty() || !spec.network_macvlan.empty() || !spec.network_ipvlan.empty() ||
        !spec.network_veth_extra.empty() || !spec.network_bridge.empty() || !spec.network_zone.empty() ||
        !spec.network_namespace_path.empty())
        throw UsageError(
            "host interfaces, bridges, zones and other network namespaces need root: as an ordinary "
            "user use --network-veth (through pasta) or --private-network");
    if (spec.userns_mode != UserNamespaceMode::No)
        throw UsageError(
            "-U/--private-users= pick a range as root; as an ordinary user the range comes from "
            "/etc/subuid and /etc/subgid: drop the option");
    if (spec.userns_ownership == UserNamespaceOwnership::Map)
        throw UsageError(
            "--private-users-ownership=map needs root (idmapped mounts are made in the initial user "
            "namespace): drop the option, a tree you own is root's inside as it is");
}

RootlessOwnershipPlan plan_rootless_ownership(const RootlessOwnershipInput& in) {
    RootlessOwnershipPlan p;
    const bool shifted = in.first_subuid && in.root_owner == *in.first_subuid;
    if (shifted) {
        // Shifted by an earlier run (the root is chowned last, so its owner is the record).
        p.how = RootlessTreeOwnership::Shifted;
        if (!in.consent)
            p.notice = in.tree +
                       " was moved into your subordinate range by --private-users-ownership=chown: it runs with "
                       "that range, your own uid not mapped";
        return p;
    }
    if (!in.consent) return p;  // AsIs: the podman layout, whatever the tree holds
    if (!in.has_ranges)
        throw UsageError(
            "--private-users-ownership=chown moves the tree into your subordinate range, and you have none in "
            "/etc/subuid and /etc/subgid: ask the administrator for one (usermod --add-subuids/--add-subgids), "
            "or drop the option");
    if (in.root_owner != in.uid)
        throw UsageError("--private-users-ownership=chown shifts a tree you own, and " + in.tree + " belongs to uid " +
                         std::to_string(in.root_owner) + ", neither you (" + std::to_string(in.uid) +
                         ") nor your first subordinate uid (" + std::to_string(*in.first_subuid) + "): drop the option");
    if (in.interrupted)
        throw UsageError("an earlier --private-users-ownership=chown of " + in.tree +
                         " was interrupted, so its owners are half moved: unpack the tree again, then run it with "
                         "--private-users-ownership=chown");
    if (in.keeps_tree)
        throw UsageError(
            "--private-users-ownership=chown changes the owners of " + in.tree +
            ", and -x/--volatile/--read-only keep it unchanged: shift it once without them, then run it with them");
    p.how = RootlessTreeOwnership::ShiftNow;
    p.notice = "moving the owners of " + in.tree + " into your subordinate range (once; uid " + std::to_string(in.uid) +
               " -> " + std::to_string(*in.first_subuid) +
               "): from now on edit it through spawn or podman unshare, not as yourself";
    return p;
}

std::vector<MountStep> make_rootless_mount_plan(std::vector<MountStep> plan, bool private_network, uint32_t gid_count) {
    for (auto& s : plan) {
        if (s.kind == StepKind::Node) {
            // The host's node, bound: an unprivileged namespace may not mknod, but may bind what it
            // can open. /dev/net/tun is not on every host.
            MountStep b;
            b.kind = StepKind::Bind;
            b.source = s.target;
            b.target = s.target;
            b.recursive = false;
            b.create_target = true;
            b.attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC;
            b.optional = s.target == "/dev/net/tun";
            s = b;
        } else if (s.kind == StepKind::Fs && s.fstype == "sysfs" && !private_network) {
            MountStep b;
            b.kind = StepKind::Bind;
            b.source = "/sys";
            b.target = s.target;
            b.recursive = true;
            b.api_target = true;
            b.create_target = true;
            b.attrs = s.attrs;  // read-only, nosuid, nodev, noexec: as the sysfs it stands for
            s = b;
        } else if (s.kind == StepKind::Fs && s.fstype == "devpts" && gid_count <= 5) {
            std::erase_if(s.options, [](const auto& kv) { return kv.first == "gid"; });
        }
    }
    return plan;
}

std::string user_manager_subtree(std::string_view own_cgroup2, uid_t uid) {
    const std::string unit = "/user@" + std::to_string(uid) + ".service";
    size_t at = own_cgroup2.find(unit);
    while (at != std::string_view::npos) {
        size_t end = at + unit.size();
        if (end == own_cgroup2.size() || own_cgroup2[end] == '/') return std::string(own_cgroup2.substr(0, end));
        at = own_cgroup2.find(unit, at + 1);
    }
    return "";
}

RootlessCgroupPlan plan_rootless_cgroup(const RootlessCgroupInput& in, std::string_view machine_name) {
    RootlessCgroupPlan p;
    const std::string scope = "/" + machine_scope_name(machine_name);
    std::string subtree = user_manager_subtree(in.own_cgroup2, in.uid);
    std::string own_parent;
    if (!in.own_cgroup2.empty() && in.own_cgroup2 != "/") own_parent = in.own_cgroup2.substr(0, in.own_cgroup2.rfind('/'));
    if (!subtree.empty() && in.own_parent_writable) {
        p.parent = subtree + scope;
        p.guest_view = in.guest_systemd.has_value();
        return p;
    }
    const bool needs_view = in.guest_systemd && *in.guest_systemd >= kSystemdUnifiedOnlySince;
    if (in.own_parent_writable && !in.own_cgroup2.empty()) {
        // A writable group beside our own: given by whoever started us (a harness, a CI job).
        p.parent = own_parent + scope;
        p.guest_view = in.guest_systemd.has_value();
        return p;
    }
    p.notice = "no delegated cgroup2 subtree (no systemd user session for uid " + std::to_string(in.uid) +
               "): the machine runs without cgroup limits";
    if (needs_view)
        p.notice += ", and its systemd " + std::to_string(*in.guest_systemd) + " cannot boot without a cgroup2 view";
    return p;
}

std::string kept_userns_record_path(std::string_view runtime_dir) { return std::string(runtime_dir) + "/machkit/userns"; }

std::string kept_userns_record_text(const KeptUsernsRecord& r) {
    return std::to_string(r.pid) + " " + std::to_string(r.start_time) + " " + std::to_string(r.ns_inode) + "\n";
}

std::optional<KeptUsernsRecord> parse_kept_userns_record(std::string_view text) {
    uint64_t v[3] = {};
    size_t pos = 0;
    for (int i = 0; i < 3; i++) {
        size_t start = pos;
        while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9' && pos - start < 20) {
            uint64_t d = static_cast<uint64_t>(text[pos] - '0');
            if (v[i] > (UINT64_MAX - d) / 10) return std::nullopt;
            v[i] = v[i] * 10 + d;
            pos++;
        }
        if (pos == start || v[i] == 0) return std::nullopt;
        if (pos >= text.size() || text[pos] != (i < 2 ? ' ' : '\n')) return std::nullopt;
        pos++;
    }
    if (pos != text.size() || v[0] > static_cast<uint64_t>(INT32_MAX)) return std::nullopt;
    return KeptUsernsRecord{static_cast<pid_t>(v[0]), v[1], v[2]};
}

bool id_map_text_is(std::string_view text, const std::vector<MapLine>& lines) {
    std::vector<IdMapLine> got;
    try {
        got = parse_id_map_text(text);
    } catch (const std::invalid_argument&) {
        return false;
    }
    if (got.size() != lines.size()) return false;
    for (size_t i = 0; i < got.size(); i++)
        if (got[i].inside != lines[i].inside || got[i].outside != lines[i].outside || got[i].count != lines[i].count)
            return false;
    return true;
}

bool may_join_kept_userns(const RootlessMap& map) { return map.needs_helpers && map.own_ids_mapped; }

}  // namespace mk::core
