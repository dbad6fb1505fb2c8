// The OCI runtime-spec 1.2 (Linux) fields of config.json that have no nspawn option, as plain data.
// Filled only by parse_oci_config() (core/spawn/oci_config.hpp); SpawnSpec::oci holds them.
// Fields that do map onto an nspawn option (args, env, cwd, rlimits, hostname, binds, tmpfs,
// maskedPaths, network namespace, personality...) are set in SpawnSpec's own members instead, so
// the launcher applies them through one path whichever front end produced the spec.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mk::core {

struct OciIdMapping {
    uint32_t container_id = 0;
    uint32_t host_id = 0;
    uint32_t size = 0;
};

// One entry of "mounts", options decoded as runc does (mount(8) names).
struct OciMount {
    std::string destination;
    std::string type;  // "" for binds without a type
    std::string source;
    std::vector<std::string> options;  // verbatim, for the runtime's state and error messages
    unsigned long flags = 0;           // MS_* to set (MS_BIND, MS_REC, MS_RDONLY, MS_NOSUID, ...)
    unsigned long clear_flags = 0;     // MS_* named by the negative options (rw, suid, dev, exec, ...)
    unsigned long propagation = 0;     // MS_PRIVATE/MS_SHARED/MS_SLAVE/MS_UNBINDABLE, | MS_REC for r*
    uint64_t attr_set = 0;             // MOUNT_ATTR_* applied recursively (rro, rnosuid, ...)
    uint64_t attr_clr = 0;             // MOUNT_ATTR_* cleared recursively (rrw, rsuid, ...)
    bool idmap = false;                // "idmap" / "ridmap" (recursive when ridmap)
    bool idmap_recursive = false;
    bool copy_up = false;  // "tmpcopyup" (crun's): a tmpfs starts with the tree's content at its destination
    std::string data;      // file-system options passed to mount(2) ("size=1m,mode=755")
    std::vector<OciIdMapping> uid_mappings;  // idmapped mount
    std::vector<OciIdMapping> gid_mappings;
    bool bind() const noexcept;
};

struct OciHook {
    std::string path;  // absolute, on the host
    std::vector<std::string> args;
    std::vector<std::string> env;
    std::optional<int> timeout;  // seconds, > 0
};

struct OciHooks {
    std::vector<OciHook> prestart;  // deprecated, still run (after createRuntime's namespaces exist)
    std::vector<OciHook> create_runtime;
    std::vector<OciHook> create_container;
    std::vector<OciHook> start_container;
    std::vector<OciHook> poststart;
    std::vector<OciHook> poststop;
    bool empty() const noexcept;
};

struct OciNamespace {
    std::string type;  // pid network mount ipc uts user cgroup time
    std::string path;  // join this namespace ("" = create a new one)
};

struct OciDevice {
    std::string path;  // inside the container
    char type = 'c';   // 'c' (also 'u'), 'b', 'p'
    int64_t major = 0;
    int64_t minor = 0;
    std::optional<uint32_t> file_mode;  // permission bits only
    std::optional<uint32_t> uid;
    std::optional<uint32_t> gid;
};

// linux.resources.devices[]: a cgroup device rule. Unset major/minor: any ("*").
struct OciDeviceRule {
    bool allow = false;
    char type = 'a';  // 'a', 'c', 'b'
    std::optional<int64_t> major;
    std::optional<int64_t> minor;
    std::string access;  // subset of "rwm"; "" = "rwm"
};

struct OciBlockDeviceValue {
    int64_t major = 0;
    int64_t minor = 0;
    uint64_t value = 0;  // weight (10..1000) or rate
};

struct OciResources {
    std::vector<OciDeviceRule> devices;
    struct Memory {
        std::optional<int64_t> limit;        // bytes; -1 = unlimited
        std::optional<int64_t> reservation;  // soft limit
        std::optional<int64_t> swap;         // memory + swap, as runc; -1 = unlimited
        std::optional<int64_t> kernel_tcp;
        std::optional<uint64_t> swappiness;  // 0..100
        std::optional<bool> disable_oom_killer;
        std::optional<bool> use_hierarchy;
        std::optional<bool> check_before_update;  // for `update`: refuse a limit below current usage
    } memory;
    struct Cpu {
        std::optional<uint64_t> shares;
        std::optional<int64_t> quota;  // µs; -1 = unlimited
        std::optional<uint64_t> burst;
        std::optional<uint64_t> period;
        std::optional<int64_t> realtime_runtime;
        std::optional<uint64_t> realtime_period;
        std::string cpus;  // cpuset list "0-1,3"
        std::string mems;
        std::optional<int64_t> idle;  // 0 or 1
    } cpu;
    std::optional<int64_t> pids_limit;  // <= 0: unlimited
    struct BlockIo {
        std::optional<uint16_t> weight;  // 10..1000
        std::vector<OciBlockDeviceValue> weight_device;
        std::vector<OciBlockDeviceValue> throttle_read_bps;
        std::vector<OciBlockDeviceValue> throttle_write_bps;
        std::vector<OciBlockDeviceValue> throttle_read_iops;
        std::vector<OciBlockDeviceValue> throttle_write_iops;
    } block_io;
    std::vector<std::pair<std::string, uint64_t>> hugepage_limits;  // ("2MB", bytes)
    struct Network {
        std::optional<uint32_t> class_id;
        std::vector<std::pair<std::string, uint32_t>> priorities;  // (interface, priority)
    } network;
    std::map<std::string, std::pair<std::optional<uint32_t>, std::optional<uint32_t>>> rdma;  // device -> (handles, objects)
    std::map<std::string, std::string> unified;                                               // cgroup2 file -> value
    bool present = false;                                                                     // linux.resources was given
};

struct OciSeccompArg {
    uint32_t index = 0;  // 0..5
    uint64_t value = 0;
    uint64_t value_two = 0;
    std::string op;  // SCMP_CMP_NE, _LT, _LE, _EQ, _GE, _GT, _MASKED_EQ
};

struct OciSeccompRule {
    std::vector<std::string> names;
    std::string action;  // SCMP_ACT_*
    std::optional<uint32_t> errno_ret;
    std::vector<OciSeccompArg> args;
};

struct OciSeccomp {
    std::string default_action;
    std::optional<uint32_t> default_errno_ret;
    std::vector<std::string> architectures;  // SCMP_ARCH_*
    std::vector<std::string> flags;          // SECCOMP_FILTER_FLAG_*
    std::vector<OciSeccompRule> syscalls;
};

struct OciTimeOffset {
    int64_t secs = 0;
    uint32_t nanosecs = 0;
};

struct OciSpec {
    bool present = false;  // the spec came from config.json
    std::string oci_version;

    // process
    uint32_t uid = 0;
    uint32_t gid = 0;
    std::vector<uint32_t> additional_gids;
    std::optional<uint32_t> umask;
    // All five sets as given (bit n = CAP_* n); unset sets are empty, as runc.
    uint64_t cap_bounding = 0, cap_effective = 0, cap_permitted = 0, cap_inheritable = 0, cap_ambient = 0;
    bool capabilities_given = false;
    std::optional<std::pair<unsigned, unsigned>> console_size;  // (height, width)
    struct IoPriority {
        int io_class = 0;  // IOPRIO_CLASS_RT/BE/IDLE
        int priority = 0;  // 0..7
    };
    std::optional<IoPriority> io_priority;
    struct Scheduler {
        int policy = 0;  // SCHED_*
        int nice = 0;
        int priority = 0;
        uint64_t flags = 0;                              // SCHED_FLAG_*
        uint64_t runtime = 0, deadline = 0, period = 0;  // ns, SCHED_DEADLINE
    };
    std::optional<Scheduler> scheduler;
    std::vector<unsigned> exec_cpu_affinity_initial;  // execCPUAffinity.initial
    std::vector<unsigned> exec_cpu_affinity_final;    // execCPUAffinity.final

    std::string domainname;
    std::vector<OciMount> mounts;
    std::map<std::string, std::string> annotations;
    OciHooks hooks;

    // linux
    std::vector<OciNamespace> namespaces;
    std::vector<OciIdMapping> uid_mappings;
    std::vector<OciIdMapping> gid_mappings;
    std::vector<OciDevice> devices;
    std::string cgroups_path;
    OciResources resources;
    std::map<std::string, std::string> sysctl;
    std::optional<OciSeccomp> seccomp;
    std::vector<std::string> masked_paths;
    std::vector<std::string> readonly_paths;
    unsigned long rootfs_propagation = 0;  // MS_* | MS_REC; 0 = unset
    std::optional<OciTimeOffset> time_monotonic;
    std::optional<OciTimeOffset> time_boottime;
};

}  // namespace mk::core
