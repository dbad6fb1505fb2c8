// The steps machrun's commands share (defined in commands.cpp), for the commands kept in files of
// their own (checkpoint.cpp). Same contracts as there: UsageError for what the caller can fix.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/base/unique_fd.hpp"
#include "core/kernel/cgroup_resources.hpp"
#include "core/machine/machine.hpp"
#include "core/oci/state.hpp"
#include "core/spawn/spawn_spec.hpp"
#include "runtime/cli.hpp"

namespace mk::runtime::detail {

inline constexpr const char* kCgroupRoot = "/sys/fs/cgroup";

std::string read_file(const std::string& path, size_t max, const std::string& what);
void write_file_atomic(const std::string& path, const std::string& text);
std::string need_id(const Invocation& inv);
void no_more_args(const Invocation& inv, size_t n);

// The container's cgroup2 group (see commands.cpp).
std::string cgroup2_root(const std::string& root);
bool make_cgroup(const std::string& root, const std::string& path);
void place_in_cgroup(const std::string& root, const std::string& path, pid_t pid);
void remove_cgroup(const std::string& root, const std::string& path);
void signal_all(const core::ContainerState& s, int sig);
// After a failed create or restore: kills what is in the container's groups, removes them and the
// state. Never throws: what it cannot remove is named with the delete --force to run.
void undo_container(const core::OciStateDir& dir, const core::ContainerState& st, const char* command) noexcept;

// The v1 groups a container's state records (made for its v1 limits), and their removal.
std::vector<std::string> v1_groups_of(const core::ContainerState& st);
void remove_v1_groups(const core::ContainerState& st);
void join_group_dir(const std::string& dir, pid_t pid);
// The container as core's machine operations see it (name, leader, cgroup path).
core::Machine machine_of(const core::ContainerState& s);

// The bundle of create and restore: its real path, config.json's text and its SpawnSpec (fields
// machrun does not apply refused in one line), process.consoleSize taken out for the pty machrun
// hands over, and --console-socket checked against process.terminal.
struct Bundle {
    std::string dir;
    std::string config;
    core::SpawnSpec spec;
    std::optional<std::pair<unsigned, unsigned>> console_size;
    std::string console_socket;
    bool terminal = false;
};
Bundle load_bundle(const Invocation& inv);
void set_window_size(int master, std::pair<unsigned, unsigned> size);

// linux.resources, planned against every hierarchy, so on a v1 or hybrid host the limits of v1
// controllers go to the container's group in that controller's hierarchy (made by
// make_container_groups, joined by the init and every exec, removed at delete). config.json's
// device rules are followed by the runtime's defaults, as runc's (podman sends only "deny all").
struct GroupPlan {
    std::vector<core::CgroupWrite> writes;
    core::CgroupMounts mounts;
    // The device rules on a pure cgroup2 host (core::plan_device_program), for the cgroup2 group.
    std::optional<std::vector<bpf_insn>> device_program;
};
GroupPlan plan_container_groups(const core::SpawnSpec& spec);
// Makes the container's cgroup2 group and its v1 groups, each recorded in `st` (written to `dir`)
// as it is made, and writes the limits. Returns the v1 group directories for the init to join.
std::vector<std::string> make_container_groups(const core::OciStateDir& dir, core::ContainerState& st, const GroupPlan& plan,
                                               const std::string& cgroup);

core::UniqueFd open_init(const core::ContainerState& s);
uint64_t start_time_of(pid_t pid);
bool wait_exit(int pidfd, int timeout_ms);

std::string machine_name_for(const std::string& id);
// Kills what is left of the container, removes its cgroup and state, runs poststop hooks. Takes
// the container's lock itself: the caller must not hold it.
void do_delete(const core::OciStateDir& dir, const std::string& id, bool force);

}  // namespace mk::runtime::detail
