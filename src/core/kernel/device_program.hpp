// The thin step after device_filter.hpp: loads a compiled device program with bpf(2) and attaches
// it to a cgroup2 group (raw syscalls, no libbpf; runc's ebpf_linux.go and crun's ebpf.c do the
// same). Root only (CAP_BPF + CAP_SYS_ADMIN... in practice: the runtime's privileges).
//
// Lifetime: an attached program is held by the group; the fds here can be closed at once. When
// the group is removed (rmdir), the kernel detaches and frees its programs: nothing to undo.
// Side effects: every process of the group and of its descendants is checked by the program
// from the moment attach_device_program() returns.
#pragma once

#include <linux/bpf.h>

#include <cstdint>
#include <vector>

#include "core/base/unique_fd.hpp"

namespace mk::core {

// BPF_PROG_LOAD of a BPF_PROG_TYPE_CGROUP_DEVICE program; the fd is O_CLOEXEC (bpf(2) always
// makes it so). On failure loads once more with the verifier's log and throws std::system_error
// whose message ends with the verifier's reason (the log's last line before its statistics).
UniqueFd load_device_program(const std::vector<bpf_insn>& program);

// The ids of the device programs attached to the group itself (not inherited ones).
std::vector<uint32_t> attached_device_programs(int cgroup_dir_fd);

// Attaches `program_fd` with BPF_F_ALLOW_MULTI and detaches the device programs that were attached
// to the group before (a previous create's or update's): with exactly one, atomically through
// BPF_F_REPLACE; with several, after the new one is in (the group is never unfiltered; in
// between both programs must allow, which is never wider than either). Throws std::system_error.
void attach_device_program(int cgroup_dir_fd, int program_fd);

}  // namespace mk::core
