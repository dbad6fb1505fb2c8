// criu's RPC messages (criu_req / criu_resp of criu/rpc.proto, the protocol of `criu swrk`), as
// plain structs with an encoder for requests and a decoder for replies. Field numbers follow
// /usr/include/criu/rpc.proto (criu 3.17; unchanged in 4.2 for every field used here).
//
// decode_response() parses bytes criu sent: it throws std::runtime_error on malformed input and
// bounds what it keeps (strings are cut at kMaxRpcString). Pure; no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mk::core::criu {

enum class ReqType : int32_t {
    Empty = 0,
    Dump = 1,
    Restore = 2,
    Check = 3,
    PreDump = 4,
    PageServer = 5,
    Notify = 6,
    CpuinfoDump = 7,
    CpuinfoCheck = 8,
    FeatureCheck = 9,
    Version = 10,
    WaitPid = 11,
};

// criu_cg_mode
enum class CgroupMode : int32_t { Ignore = 0, None = 1, Props = 2, Soft = 3, Full = 4, Strict = 5, Default = 6 };

std::string_view to_string(CgroupMode mode) noexcept;
std::optional<CgroupMode> cgroup_mode_from_string(std::string_view name) noexcept;

struct JoinNamespace {
    std::string ns;       // "net", "pid", ...
    std::string ns_file;  // /proc/PID/ns/net or a bind-mounted namespace file
};

struct Options {
    int images_dir_fd = -1;  // required; a fd number valid in criu's process
    std::optional<int32_t> pid;
    bool leave_running = false;
    bool ext_unix_sk = false;
    bool tcp_established = false;
    bool shell_job = false;
    bool file_locks = false;
    int32_t log_level = 2;
    std::string log_file;  // relative to the work dir
    bool notify_scripts = false;
    std::string root;
    std::optional<int> work_dir_fd;
    bool rst_sibling = false;
    std::vector<std::pair<std::string, std::string>> ext_mnt;  // key -> value
    std::vector<std::pair<std::string, int>> inherit_fd;       // key -> fd number in criu
    std::optional<CgroupMode> manage_cgroups_mode;
    std::vector<std::string> external;
    std::vector<JoinNamespace> join_ns;
    std::string freeze_cgroup;
    bool orphan_pts_master = false;
    std::optional<uint32_t> timeout;
};

struct Version {
    int32_t major = 0;
    int32_t minor = 0;
    int32_t sublevel = 0;
    std::string gitid;
};

struct Features {
    std::optional<bool> mem_track;
    std::optional<bool> lazy_pages;
    std::optional<bool> pidfd_store;
};

struct Request {
    ReqType type = ReqType::Empty;
    std::optional<Options> opts;
    std::optional<bool> notify_success;  // the reply to a notify message
    bool keep_open = false;
    std::optional<Features> features;  // FeatureCheck: the features asked about (set them true)
};

struct Response {
    ReqType type = ReqType::Empty;
    bool success = false;
    std::optional<bool> restored;        // dump: true when the tree was restored after a dump
    std::optional<int32_t> restore_pid;  // restore: the root task's pid
    std::string notify_script;           // notify: "setup-namespaces", "post-restore", ...
    std::optional<int32_t> notify_pid;
    std::optional<int32_t> cr_errno;
    std::string cr_errmsg;
    std::optional<Version> version;
    std::optional<Features> features;
};

inline constexpr size_t kMaxRpcString = 4096;

std::string encode_request(const Request& req);
Response decode_response(std::string_view bytes);

// "4.2.1" style; the sublevel only when non-zero, as `criu --version` prints it.
std::string to_string(const Version& v);

}  // namespace mk::core::criu
