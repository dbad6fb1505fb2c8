// config.json's user namespace (linux.namespaces "user" with linux.uidMappings/gidMappings, or one
// joined by path) in the terms of the launcher's user-namespace step: the maps the parent writes
// before the child runs on, and the host ID of the container's root, which spawn's -U steps take
// as the range's shift (the owner of the container's /dev, /run..., the tty group of its ptys).
// Pure: the launcher opens, makes and enters the namespace (outside_steps, inside_steps).
#pragma once

#include <string>
#include <vector>

#include "core/kernel/userns.hpp"
#include "core/spawn/oci_spec.hpp"

namespace mk::core {

// The "user" entry of linux.namespaces, or nullptr.
const OciNamespace* oci_user_namespace(const OciSpec& oci);

// config.json's mappings as uid_map/gid_map lines (containerID hostID size).
std::vector<IdMapLine> oci_id_map(const std::vector<OciIdMapping>& mappings);

// The container root's range under these maps: its host ID (uid 0 and gid 0 must be the same host
// ID, as spawn's -U has it) and how many IDs from 0 map contiguously from there in both maps. The
// container's tty group (gid 5, its ptys' group) must be in that run. Throws UsageError naming
// `where` (the config field, or the joined namespace's path) and what to change.
IdRange oci_userns_root_range(const std::vector<IdMapLine>& uid_map, const std::vector<IdMapLine>& gid_map,
                              const std::string& where);

// The host ID a config.json owner `id` (a device's uid or gid) is under `map`: itself without a user
// namespace (empty map). Throws UsageError naming `what` if the namespace does not map it.
uint32_t oci_host_id(const std::vector<IdMapLine>& map, uint32_t id, const std::string& what);

}  // namespace mk::core
