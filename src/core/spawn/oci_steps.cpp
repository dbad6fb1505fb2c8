#include "core/spawn/oci_steps.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>

#include "core/base/error.hpp"
#include "core/base/unique_fd.hpp"

namespace mk::core {
namespace {

// <linux/sched/types.h>'s struct sched_attr (glibc 2.36 has no wrapper).
struct SchedAttr {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
};

constexpr int kIoprioWhoProcess = 1;
constexpr int kIoprioClassShift = 13;

}  // namespace

void apply_oci_sysctls(const OciSpec& oci) {
    for (const auto& [name, value] : oci.sysctl) {
        std::string path = "/proc/sys/" + name;
        std::replace(path.begin() + 10, path.end(), '.', '/');
        UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!fd) throw_last_error("cannot open sysctl " + name);
        ssize_t n = ::write(fd.get(), value.data(), value.size());
        if (n < 0) throw_last_error("cannot set sysctl " + name + " to '" + value + "'");
    }
}

void apply_oci_domainname(const OciSpec& oci) {
    if (oci.domainname.empty()) return;
    check(setdomainname(oci.domainname.data(), oci.domainname.size()), "setdomainname " + oci.domainname);
}

void apply_oci_process_attributes(const OciSpec& oci) {
    if (oci.umask) umask(static_cast<mode_t>(*oci.umask));
    if (oci.io_priority)
        check(static_cast<int>(syscall(SYS_ioprio_set, kIoprioWhoProcess, 0,
                                       (oci.io_priority->io_class << kIoprioClassShift) | oci.io_priority->priority)),
              "ioprio_set");
    if (oci.scheduler) {
        const auto& s = *oci.scheduler;
        SchedAttr a{};
        a.size = sizeof a;
        a.sched_policy = static_cast<uint32_t>(s.policy);
        a.sched_flags = s.flags;
        a.sched_nice = s.nice;
        a.sched_priority = static_cast<uint32_t>(s.priority);
        a.sched_runtime = s.runtime;
        a.sched_deadline = s.deadline;
        a.sched_period = s.period;
        check(static_cast<int>(syscall(SYS_sched_setattr, 0, &a, 0)), "sched_setattr");
    }
}

}  // namespace mk::core
