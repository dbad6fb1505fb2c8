// The steps machrun's commands share (defined in commands.cpp), for the commands kept in files of
// their own (checkpoint.cpp). Same contracts as there: UsageError for what the caller can fix.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/base/unique_fd.hpp"
#include "core/oci/state.hpp"
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

core::UniqueFd open_init(const core::ContainerState& s);
uint64_t start_time_of(pid_t pid);
bool wait_exit(int pidfd, int timeout_ms);

std::string machine_name_for(const std::string& id);
// Kills what is left of the container, removes its cgroup and state, runs poststop hooks. Takes
// the container's lock itself: the caller must not hold it.
void do_delete(const core::OciStateDir& dir, const std::string& id, bool force);

}  // namespace mk::runtime::detail
