#include "core/kernel/device_program.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <string_view>

#include "core/base/error.hpp"
#include "core/kernel/device_filter.hpp"

namespace mk::core {
namespace {

long bpf(int cmd, bpf_attr& attr) {
    long r;
    do r = ::syscall(SYS_bpf, cmd, &attr, sizeof attr);
    while (r < 0 && errno == EINTR);
    return r;
}

uint64_t ptr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

// The verifier's reason is its log's last line before the statistics it always ends with
// ("processed N insns (limit ...) ...", "verification time ..."): e.g. "R0 !read_ok".
std::string verifier_reason(std::string_view log) {
    std::string reason;
    while (!log.empty()) {
        size_t nl = log.find('\n');
        std::string_view line = log.substr(0, nl);
        log = nl == std::string_view::npos ? std::string_view() : log.substr(nl + 1);
        if (line.empty() || line.starts_with("processed ") || line.starts_with("verification time")) continue;
        reason = line;
    }
    return reason;
}

long load(const std::vector<bpf_insn>& program, char* log, uint32_t log_size) {
    bpf_attr attr{};
    attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    attr.insns = ptr(program.data());
    attr.insn_cnt = static_cast<uint32_t>(program.size());
    attr.license = ptr(kDeviceFilterLicense);
    attr.log_buf = ptr(log);
    attr.log_size = log_size;
    attr.log_level = log ? 1 : 0;
    return bpf(BPF_PROG_LOAD, attr);
}

}  // namespace

UniqueFd load_device_program(const std::vector<bpf_insn>& program) {
    long fd = load(program, nullptr, 0);
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));
    int err = errno;
    if (err == EPERM) throw_errno(err, "cannot load the cgroup device program (needs CAP_BPF and CAP_SYS_ADMIN)");
    // Only now the log: it costs the verifier a second pass, and it is only for this message.
    std::string log(1 << 20, '\0');
    fd = load(program, log.data(), static_cast<uint32_t>(log.size()));
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));  // the first failure was transient
    err = errno;
    std::string reason = verifier_reason(log.c_str());
    throw_errno(err, "cannot load the cgroup device program of " + std::to_string(program.size()) + " instructions" +
                         (reason.empty() ? std::string() : " (verifier: " + reason + ")"));
}

std::vector<uint32_t> attached_device_programs(int cgroup_dir_fd) {
    std::vector<uint32_t> ids(16);
    for (;;) {
        bpf_attr attr{};
        attr.query.target_fd = static_cast<uint32_t>(cgroup_dir_fd);
        attr.query.attach_type = BPF_CGROUP_DEVICE;
        attr.query.prog_ids = ptr(ids.data());
        attr.query.prog_cnt = static_cast<uint32_t>(ids.size());
        if (bpf(BPF_PROG_QUERY, attr) == 0) {
            ids.resize(attr.query.prog_cnt);
            return ids;
        }
        // ENOSPC: more than fit; prog_cnt now says how many (bounded by the kernel's 64 per group).
        if (errno != ENOSPC || attr.query.prog_cnt <= ids.size())
            throw_last_error("cannot list the device programs of the cgroup");
        ids.resize(attr.query.prog_cnt);
    }
}

void attach_device_program(int cgroup_dir_fd, int program_fd) {
    std::vector<UniqueFd> old;
    for (uint32_t id : attached_device_programs(cgroup_dir_fd)) {
        bpf_attr attr{};
        attr.prog_id = id;
        long fd = bpf(BPF_PROG_GET_FD_BY_ID, attr);
        if (fd >= 0) old.emplace_back(static_cast<int>(fd));
        else if (errno != ENOENT) throw_last_error("cannot open the cgroup's device program " + std::to_string(id));
    }
    bpf_attr attr{};
    attr.target_fd = static_cast<uint32_t>(cgroup_dir_fd);
    attr.attach_bpf_fd = static_cast<uint32_t>(program_fd);
    attr.attach_type = BPF_CGROUP_DEVICE;
    attr.attach_flags = BPF_F_ALLOW_MULTI;
    if (old.size() == 1) {
        bpf_attr replace = attr;
        replace.attach_flags |= BPF_F_REPLACE;
        replace.replace_bpf_fd = static_cast<uint32_t>(old[0].get());
        if (bpf(BPF_PROG_ATTACH, replace) == 0) return;
        // EINVAL: the old one was attached without BPF_F_ALLOW_MULTI (not by us); it can only
        // be detached, below.
        if (errno != EINVAL) throw_last_error("cannot replace the cgroup's device program");
    }
    if (bpf(BPF_PROG_ATTACH, attr) < 0) throw_last_error("cannot attach the device program to the cgroup");
    for (const UniqueFd& fd : old) {
        bpf_attr detach{};
        detach.target_fd = static_cast<uint32_t>(cgroup_dir_fd);
        detach.attach_bpf_fd = static_cast<uint32_t>(fd.get());
        detach.attach_type = BPF_CGROUP_DEVICE;
        if (bpf(BPF_PROG_DETACH, detach) < 0 && errno != ENOENT)
            throw_last_error("cannot detach the cgroup's previous device program");
    }
}

}  // namespace mk::core
