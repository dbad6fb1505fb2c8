// libFuzzer target: the config.json front end (spawn --oci-bundle=, the OCI runtime). Any input
// either parses into a SpawnSpec that satisfies the invariants the launcher and the runtime rely on,
// or is refused with a one-line UsageError; nothing else may escape (nlohmann's exceptions included).
// The same bytes also go through the `update --resources` and `exec --process` entry points.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/base/error.hpp"
#include "core/spawn/oci_config.hpp"

using namespace mk::core;

namespace {

void check_one_line(const UsageError& e) {
    if (std::string_view(e.what()).find('\n') != std::string_view::npos) abort();
}

bool absolute(const std::string& p) { return !p.empty() && p[0] == '/'; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        SpawnSpec s = parse_oci_config(text, "/bundle");
        if (!absolute(s.directory) || s.argv.empty() || !s.oci.present) abort();
        for (const auto& b : s.binds)
            if (!absolute(b.destination) || b.destination == "/" || !absolute(b.source)) abort();
        for (const auto& r : s.rlimits)
            if (r && r->soft > r->hard) abort();
        for (const auto& m : s.oci.mounts)
            if (!absolute(m.destination) || (m.uid_mappings.empty() != m.gid_mappings.empty())) abort();
        for (const auto& [k, v] : s.oci.sysctl)
            if (k.find("..") != std::string::npos || k.empty() || k[0] == '/') abort();
        for (const auto& [k, v] : s.oci.resources.unified)
            if (k.find('/') != std::string::npos || k.starts_with("cgroup.")) abort();
        if (s.oci.cgroups_path.find("/../") != std::string::npos) abort();
        if (s.oci.seccomp)
            for (const auto& r : s.oci.seccomp->syscalls)
                for (const auto& a : r.args)
                    if (a.index > 5) abort();
        (void)oci_unapplied_field(s);
    } catch (const UsageError& e) {
        check_one_line(e);
    }
    try {
        OciResources r = parse_oci_resources(text);
        if (r.block_io.weight && (*r.block_io.weight < 10 || *r.block_io.weight > 1000)) abort();
    } catch (const UsageError& e) {
        check_one_line(e);
    }
    try {
        SpawnSpec s;
        parse_oci_process(text, s);
        if (s.argv.empty() || !absolute(s.chdir)) abort();
    } catch (const UsageError& e) {
        check_one_line(e);
    }
    return 0;
}
