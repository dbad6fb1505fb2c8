#include "core/spawn/oci_userns.hpp"

#include <algorithm>

#include "core/base/error.hpp"

namespace mk::core {

const OciNamespace* oci_user_namespace(const OciSpec& oci) {
    auto it = std::ranges::find(oci.namespaces, std::string("user"), &OciNamespace::type);
    return it == oci.namespaces.end() ? nullptr : &*it;
}

std::vector<IdMapLine> oci_id_map(const std::vector<OciIdMapping>& mappings) {
    std::vector<IdMapLine> out;
    out.reserve(mappings.size());
    for (const auto& m : mappings) out.push_back({m.container_id, m.host_id, m.size});
    return out;
}

namespace {

// How many IDs from `inside` on map contiguously on the host, following adjacent lines.
uint32_t contiguous_run(const std::vector<IdMapLine>& map, uint32_t inside) {
    auto start = map_id_to_host(map, inside);
    if (!start) return 0;
    uint64_t n = 0;
    for (;;) {
        auto it = std::ranges::find_if(map, [&](const IdMapLine& l) {
            return inside + n >= l.inside && inside + n - l.inside < l.count &&
                   l.outside + (inside + n - l.inside) == *start + n;
        });
        if (it == map.end()) break;
        n += it->count - (inside + n - it->inside);
        if (inside + n > UINT32_MAX) break;
    }
    return static_cast<uint32_t>(std::min<uint64_t>(n, UINT32_MAX));
}

}  // namespace

IdRange oci_userns_root_range(const std::vector<IdMapLine>& uid_map, const std::vector<IdMapLine>& gid_map,
                              const std::string& where) {
    for (auto [map, name] : {std::pair{&uid_map, "uidMappings"}, std::pair{&gid_map, "gidMappings"}}) {
        std::string problem = id_map_problem(*map);
        if (!problem.empty()) throw UsageError("OCI config " + where + " " + name + ": " + problem);
    }
    auto uid0 = map_id_to_host(uid_map, 0), gid0 = map_id_to_host(gid_map, 0);
    if (!uid0 || !gid0)
        throw UsageError("OCI config " + where +
                         ": the container's root (uid 0 and gid 0) must be mapped; add a range "
                         "with containerID 0 to uidMappings and gidMappings");
    if (*uid0 != *gid0)
        throw UsageError(
            "OCI config " + where + ": machrun needs the container's uid 0 and gid 0 on the same host ID (uid 0 is " +
            std::to_string(*uid0) + ", gid 0 is " + std::to_string(*gid0) + "); give both maps the same first range");
    IdRange r;
    r.shift = *uid0;
    r.count = std::min(contiguous_run(uid_map, 0), contiguous_run(gid_map, 0));
    if (r.count < 6)
        throw UsageError("OCI config " + where +
                         ": the container's IDs 0 to 5 (root and the tty group) must map to one "
                         "contiguous host range; map at least 6 IDs from containerID 0");
    return r;
}

uint32_t oci_host_id(const std::vector<IdMapLine>& map, uint32_t id, const std::string& what) {
    if (map.empty()) return id;
    auto host = map_id_to_host(map, id);
    if (!host)
        throw UsageError("OCI config " + what + ": ID " + std::to_string(id) +
                         " is not mapped in the container's user namespace; map it or change the owner");
    return *host;
}

}  // namespace mk::core
