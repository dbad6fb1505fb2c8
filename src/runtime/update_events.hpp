// machrun `update` and `events`, the pure parts: runc's update flags as linux.resources, Go
// durations (--interval), and runc's stats event (`{"type":"stats","id":..,"data":{cpu, memory,
// pids, blkio, hugetlb, ...}}`, the field names of runc's types/events.go) built from the text of
// the container's cgroup files on v1, cgroup2 or both (a hybrid host).
//
// Pure: parses strings and calls the given reader; no I/O of their own. Throw UsageError with a
// one-line reason.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/kernel/cgroup_resources.hpp"
#include "core/spawn/oci_spec.hpp"
#include "runtime/cli.hpp"

namespace mk::runtime {

// Docker's RAMInBytes ("64m", "1g", "512KiB", "1024"), as runc's --memory takes it; "-1" = unlimited.
int64_t parse_memory_size(std::string_view text, const std::string& option);

// linux.resources from `update`: the JSON of --resources (if given, `resources_json`), then each
// flag over it, as runc. Flags for what Linux no longer has (--kernel-memory) or we do not have
// (Intel RDT: --l3-cache-schema, --mem-bw-schema) are refused naming the flag.
core::OciResources update_resources(const Invocation& inv, const std::optional<std::string>& resources_json);

// Go's time.ParseDuration for the forms runc users pass ("5s", "100ms", "1m30s", "1.5s").
std::chrono::milliseconds parse_go_duration(std::string_view text);

// Reads one cgroup file of the container: (controller, on cgroup2?, file) -> contents, or nullopt
// where the file does not exist.
using CgroupFileReader = std::function<std::optional<std::string>(const std::string&, bool, const std::string&)>;

// runc's stats object from the container's groups (`where`: container_controllers()); `v2_group`:
// the container has a cgroup2 group (its cpu.stat is there whatever controllers are enabled);
// `hugepage_sizes`: "2MB", "1GB"... as the kernel offers them.
nlohmann::json stats_json(const core::CgroupControllers& where, bool v2_group,
                          const std::vector<std::string>& hugepage_sizes, const CgroupFileReader& read);

// The value of `key` in a "key value" cgroup file (memory.events' "oom_kill"), if there.
std::optional<uint64_t> cgroup_key(std::string_view text, std::string_view key);

// One line of runc's event stream.
std::string event_line(std::string_view type, const std::string& id, const nlohmann::json& data = nullptr);

// "hugepages-2048kB" (a /sys/kernel/mm/hugepages entry) -> "2MB", as runc names page sizes.
std::string hugepage_size_name(std::string_view dir_name);

}  // namespace mk::runtime
