// config.json (OCI runtime-spec 1.2, Linux) as one more front end producing a SpawnSpec: used by
// spawn --oci-bundle= and by the OCI runtime.
//
// Every field of the Linux spec is parsed, or refused with the one-line error
// "OCI config field 'NAME' is not supported" (intelRdt, apparmorProfile, selinuxLabel, mountLabel,
// seccomp listeners, the other platforms' sections...): a bundle never runs with less isolation or
// fewer settings than it asked for. What nspawn's options already express lands in SpawnSpec's own
// members (argv, setenv, rlimits, binds, ...); the rest in SpawnSpec::oci (core/spawn/oci_spec.hpp).
//
// The launcher does not apply every OCI field yet: oci_unapplied_field() names the first one a spec
// sets that it would not apply, and both front ends refuse such a bundle with that name.
//
// Pure: parses text, no I/O; throws UsageError with a one-line reason. Thread-safe.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/spawn/spawn_spec.hpp"

namespace mk::core {

inline constexpr size_t kOciConfigMax = 1024 * 1024;
inline constexpr int kOciHookTimeoutMax = 24 * 3600;  // seconds

// `bundle` is the bundle directory (absolute, normalized): root.path is relative to it.
SpawnSpec parse_oci_config(std::string_view json, const std::string& bundle);

// What a front end applies itself, on top of the launcher: the OCI runtime runs the hooks, places
// the container in linux.cgroupsPath and applies linux.resources (core/kernel/cgroup_resources).
struct OciFrontEndHandles {
    bool hooks = false;
    bool cgroups = false;  // linux.cgroupsPath and linux.resources
};

// The config.json field (e.g. "hooks") `spec` sets that neither the launcher nor the front end
// (`handles`) applies; nullopt if all of it is applied.
std::optional<std::string> oci_unapplied_field(const SpawnSpec& spec, OciFrontEndHandles handles = {});

// The UTS, IPC and PID namespaces of a container (linux.namespaces): spawn creates them unless the
// config leaves one out (the runtime's own is kept: kubelet's hostNetwork pods have no UTS
// namespace, hostIPC pods no IPC one, hostPID pods no PID one) or names one by path (a CRI
// container joins its pod sandbox's IPC/UTS, and its PID namespace with shareProcessNamespace).
// `clone_flags` are the ones of these the launcher's clone creates; `join` the (CLONE_NEWUTS or
// CLONE_NEWIPC, path) pairs the init enters with setns(2); `pid_path` the PID namespace the
// launcher enters for its clone (the init is then not its PID 1); `set_hostname`: whether the init
// sets the host name (a joined UTS namespace keeps its owner's unless config.json names one, as
// runc). spawn's own specs (no config.json): all new, hostname set.
struct OciNamespacePlan {
    unsigned long clone_flags = 0;
    std::vector<std::pair<int, std::string>> join;
    std::string pid_path;
    bool set_hostname = true;
};
OciNamespacePlan plan_oci_namespaces(const SpawnSpec& spec);

// Whether the launcher mounts its own API file system at `destination` for a config.json mount of
// `type` there (/proc, /dev, /sys, /run, /tmp...): the config's entry then names the same thing,
// and its options are not applied (tmpcopyup on /run and /tmp is).
bool oci_api_mount(const std::string& destination, const std::string& type);

// Whether a container may set sysctl `name` ("a.b.c" or "a/b/c"): only the namespaced ones, and
// only when it has that namespace of its own (runc's rule): IPC's kernel.msg*/sem/shm* and
// fs.mqueue.*, net.*, and kernel.hostname/domainname. Anything else would change the host.
bool oci_sysctl_allowed(std::string_view name, bool own_ipc, bool own_network, bool own_uts);

// Parses a "linux.resources" object alone (the OCI runtime's `update --resources`). Same errors.
OciResources parse_oci_resources(std::string_view json);

// Parses a "process" object alone (the OCI runtime's `exec --process`) into `spec` (argv, setenv,
// chdir, console, rlimits, capabilities, no_new_privileges, oom_score_adjust and spec.oci's process
// fields). Same errors.
void parse_oci_process(std::string_view json, SpawnSpec& spec);

}  // namespace mk::core
