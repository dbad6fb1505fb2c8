#include "core/machine/inspect.hpp"

#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "core/base/error.hpp"
#include "core/base/io.hpp"
#include "core/base/unique_fd.hpp"
#include "core/machine/machine_error.hpp"

namespace mk::core {
namespace {

constexpr size_t kOsReleaseMax = 64 * 1024;

void require_container(const Machine& m) {
    if (m.klass == MachineClass::vm)
        throw_machine_error(MachineErrc::not_supported, "Requesting this from a VM is not supported");
}

void require_alive(const Machine& m) {
    if (::syscall(SYS_pidfd_send_signal, m.leader_pidfd.get(), 0, nullptr, 0) < 0)
        throw_errno(ESRCH, "Leader of machine " + m.name + " has exited");
}

}  // namespace

std::map<std::string, std::string> machine_os_release(const Machine& m) {
    require_container(m);
    std::string root = m.klass == MachineClass::host ? "/" : "/proc/" + std::to_string(m.leader) + "/root";
    UniqueFd root_fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root_fd) throw_last_error("open " + root);
    if (m.klass != MachineClass::host) require_alive(m);
    for (const char* p : {"etc/os-release", "usr/lib/os-release"}) {
        // O_PATH first: opening a guest-planted FIFO or device node for reading could block or
        // have side effects. Only a regular file is then reopened for reading.
        open_how how{};
        how.flags = O_PATH | O_CLOEXEC;
        how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
        UniqueFd path_fd(static_cast<int>(::syscall(SYS_openat2, root_fd.get(), p, &how, sizeof how)));
        if (!path_fd) continue;
        struct stat st {};
        if (::fstat(path_fd.get(), &st) < 0 || !S_ISREG(st.st_mode)) continue;
        UniqueFd fd(::open(("/proc/self/fd/" + std::to_string(path_fd.get())).c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
        if (!fd) throw_last_error("reopen os-release of machine " + m.name);
        return parse_os_release(read_all(fd.get(), kOsReleaseMax, "os-release"));
    }
    throw_errno(ENOENT, "Machine " + m.name + " has no os-release file");
}

std::vector<MachineAddress> machine_addresses(const Machine& m) {
    require_container(m);
    auto collect = [] {
        std::vector<MachineAddress> out;
        ifaddrs* ifa = nullptr;
        if (::getifaddrs(&ifa) < 0) return out;
        for (ifaddrs* i = ifa; i; i = i->ifa_next) {
            // machined skips host-scope addresses (127.0.0.0/8, ::1), not whole loopback devices.
            if (!i->ifa_addr) continue;
            if (i->ifa_addr->sa_family == AF_INET) {
                auto* a = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
                auto* b = reinterpret_cast<uint8_t*>(&a->sin_addr);
                if (b[0] == 127) continue;
                out.push_back({AF_INET, {b, b + 4}});
            } else if (i->ifa_addr->sa_family == AF_INET6) {
                auto* a = reinterpret_cast<sockaddr_in6*>(i->ifa_addr);
                auto* b = reinterpret_cast<uint8_t*>(&a->sin6_addr);
                if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr)) continue;
                out.push_back({AF_INET6, {b, b + 16}});
            }
        }
        ::freeifaddrs(ifa);
        return out;
    };
    if (m.klass == MachineClass::host) return collect();

    struct stat ours {
    }, theirs{};
    if (::stat("/proc/self/ns/net", &ours) < 0) throw_last_error("stat /proc/self/ns/net");
    if (::stat(("/proc/" + std::to_string(m.leader) + "/ns/net").c_str(), &theirs) < 0)
        throw_last_error("stat netns of machine " + m.name);
    require_alive(m);
    if (ours.st_ino == theirs.st_ino && ours.st_dev == theirs.st_dev)
        throw_machine_error(MachineErrc::no_private_networking, "Machine " + m.name + " does not use private networking");

    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) < 0) throw_last_error("pipe2");
    UniqueFd rd(pipefd[0]), wr(pipefd[1]);
    pid_t child = ::fork();
    if (child < 0) throw_last_error("fork");
    if (child == 0) {
        // Only async-signal-safe-ish work here: setns, getifaddrs, write. Never throw across fork.
        rd.reset();
        if (::setns(m.leader_pidfd.get(), CLONE_NEWNET) < 0) _exit(1);
        for (const auto& a : collect()) {
            uint8_t rec[18] = {static_cast<uint8_t>(a.family), static_cast<uint8_t>(a.bytes.size())};
            std::memcpy(rec + 2, a.bytes.data(), a.bytes.size());
            if (::write(wr.get(), rec, 2 + a.bytes.size()) < 0) _exit(1);
        }
        _exit(0);
    }
    wr.reset();
    std::string data;
    try {
        data = read_all(rd.get(), 1 << 20, "the container's reply");
    } catch (...) {
        ::waitpid(child, nullptr, 0);
        throw;
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw_errno(EIO, "Failed to read addresses of machine " + m.name);
    std::vector<MachineAddress> out;
    for (size_t i = 0; i + 2 <= data.size();) {
        size_t len = static_cast<uint8_t>(data[i + 1]);
        if (i + 2 + len > data.size()) break;
        out.push_back({static_cast<uint8_t>(data[i]),
                       {data.begin() + static_cast<long>(i + 2), data.begin() + static_cast<long>(i + 2 + len)}});
        i += 2 + len;
    }
    return out;
}

uint32_t machine_uid_shift(const Machine& m) {
    if (m.klass == MachineClass::host) return 0;
    require_container(m);
    auto read_map = [&](const char* which) {
        std::ifstream f("/proc/" + std::to_string(m.leader) + "/" + which);
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
    };
    std::string uid_map = read_map("uid_map"), gid_map = read_map("gid_map");
    require_alive(m);
    std::istringstream us(uid_map);
    uint64_t inner = 0, outer = 0, range = 0;
    if (!(us >> inner >> outer >> range)) throw_errno(EIO, "Failed to read UID map of machine " + m.name);
    if (inner == 0 && outer == 0 && range == 4294967295u) return 0;  // the initial user namespace
    uint64_t extra;
    if (inner != 0 || range < 65534 || (us >> extra) || uid_map != gid_map)
        throw_machine_error(MachineErrc::not_supported,
                            "Machine '" + m.name + "' uses a complex UID/GID mapping, cannot determine shift");
    return static_cast<uint32_t>(outer);
}

std::vector<IdRange> parse_id_map(std::string_view text) {
    std::vector<IdRange> out;
    std::istringstream in{std::string(text)};
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        uint64_t a, b, c;
        if (ls >> a >> b >> c && a <= UINT32_MAX && b <= UINT32_MAX && c <= UINT32_MAX && c > 0)
            out.push_back({static_cast<uint32_t>(a), static_cast<uint32_t>(b), static_cast<uint32_t>(c)});
    }
    return out;
}

namespace {

std::vector<IdRange> machine_id_map(const Machine& m, bool group) {
    std::ifstream f("/proc/" + std::to_string(m.leader) + (group ? "/gid_map" : "/uid_map"));
    std::stringstream ss;
    ss << f.rdbuf();
    require_alive(m);
    return parse_id_map(ss.str());
}

}  // namespace

uint32_t map_from_machine(const Machine& m, uint32_t inner, bool group) {
    if (m.klass != MachineClass::container)
        throw_machine_error(MachineErrc::not_supported, "Not supported for non-container machines.");
    for (const auto& r : machine_id_map(m, group))
        if (inner >= r.inner && inner - r.inner < r.count) return r.outer + (inner - r.inner);
    if (group)
        throw_machine_error(MachineErrc::no_such_group_mapping, "Machine '" + m.name + "' has no matching group mappings.");
    throw_machine_error(MachineErrc::no_such_user_mapping, "Machine '" + m.name + "' has no matching user mappings.");
}

std::optional<uint32_t> map_to_machine(const Machine& m, uint32_t outer, bool group) {
    if (m.klass != MachineClass::container) return std::nullopt;
    for (const auto& r : machine_id_map(m, group))
        if (outer >= r.outer && outer - r.outer < r.count) return r.inner + (outer - r.outer);
    return std::nullopt;
}

UniqueFd open_machine_root(const Machine& m) {
    if (m.klass != MachineClass::container)
        throw_machine_error(MachineErrc::not_supported,
                            "Opening the root directory is only supported on container machines.");
    UniqueFd fd(::open(("/proc/" + std::to_string(m.leader) + "/root").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) throw_last_error("open root directory of machine " + m.name);
    require_alive(m);  // opened before the check: a recycled PID never passes
    return fd;
}

}  // namespace mk::core
