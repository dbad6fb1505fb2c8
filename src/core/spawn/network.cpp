#include "core/spawn/network.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <spawn.h>
#include <dirent.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <ctime>
#include <cstdio>
#include <cstring>

#include "core/base/error.hpp"
#include "core/base/fs_at.hpp"
#include "core/base/io.hpp"
#include "core/base/run_lock.hpp"
#include "core/kernel/nft.hpp"

extern char** environ;

namespace mk::core {
namespace {

#ifndef MK_LIBEXECDIR
#define MK_LIBEXECDIR "/usr/local/libexec"
#endif

constexpr const char* kRunDir = "/run/machkit";
constexpr const char* kLockPath = "/run/machkit/network.lock";
constexpr const char* kNftLockPath = "/run/machkit/nft.lock";

// Serialises zone bridge creation/removal between spawns: a memberless vz-* bridge seen under the
// lock is stale (its last member's spawn died), not one another spawn is about to use.
UniqueFd take_network_lock() {
    if (mkdir(kRunDir, 0755) < 0 && errno != EEXIST) throw_last_error(std::string("cannot create ") + kRunDir);
    UniqueFd fd(open(kLockPath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) throw_last_error(std::string("cannot open ") + kLockPath);
    if (retry_eintr([&] { return flock(fd.get(), LOCK_EX); }) < 0) throw_last_error("flock");
    return fd;
}

std::pair<std::string, std::string> split_pair(const std::string& s) {
    size_t colon = s.find(':');
    if (colon == std::string::npos) return {s, s};
    return {s.substr(0, colon), s.substr(colon + 1)};
}

// Is some other network manager configuring ve-*/vz-* links here? systemd-networkd ships
// 80-container-ve.network and 80-container-vz.network for exactly that.
bool host_side_managed() {
    const char* e = getenv("MACHKIT_NETWORK_AUTO");
    if (e && (!strcmp(e, "no") || !strcmp(e, "0") || !strcmp(e, "false"))) return true;
    // Only a running networkd counts (its directories outlive it): is anyone behind its socket?
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return false;
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, "/run/systemd/netif/io.systemd.Network", sizeof sa.sun_path - 1);
    return connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
}

std::vector<Subnet4> taken_subnets(Netlink& nl) {
    std::vector<Subnet4> out;
    for (const auto& a : nl.list_addresses()) {
        if (a.family != AF_INET) continue;
        in_addr ia{};
        if (inet_pton(AF_INET, a.address.c_str(), &ia) != 1) continue;
        uint32_t host = ntohl(ia.s_addr);
        uint8_t p = a.prefixlen > 32 ? 32 : a.prefixlen;
        uint32_t mask = p == 0 ? 0 : ~uint32_t{0} << (32 - p);
        out.push_back({host & mask, p});
    }
    return out;
}

void write_sysctl(const char* path, const char* value) {
    UniqueFd fd(open(path, O_WRONLY | O_CLOEXEC));
    if (!fd || write(fd.get(), value, strlen(value)) < 0) throw_last_error(std::string("cannot write ") + path);
}

std::string nft_helper_path() {
    if (const char* e = getenv("MACHKIT_NFT_HELPER"); e && *e) return e;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = 0;
        std::string dir(self);
        dir.resize(dir.rfind('/'));
        // Installed next to spawn, or the build tree (build/src/spawn/spawn, build/src/nft/machkit-nft).
        for (std::string c : {dir + "/machkit-nft", dir + "/../nft/machkit-nft"})
            if (access(c.c_str(), X_OK) == 0) return c;
    }
    return std::string(MK_LIBEXECDIR) + "/machkit-nft";
}

void retire_stale_veth(Netlink& nl, const std::string& name) {
    for (const auto& l : nl.list_links()) {
        if (l.name != name) continue;
        if (l.kind != "veth") throw_errno(EEXIST, "cannot create veth " + name + ": an interface of that name exists");
        uint64_t rnd = 0;
        if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd) rnd = static_cast<uint64_t>(getpid()) << 20 ^ l.index;
        char dead[IFNAMSIZ];
        snprintf(dead, sizeof dead, "vx-%012llx", static_cast<unsigned long long>(rnd & 0xffffffffffffULL));
        try {
            nl.set_up(l.index, false);
            nl.rename(l.index, dead);
        } catch (const std::system_error& e) {
            if (e.code().value() == ENODEV) return;  // the kernel just took it
            try {
                nl.delete_link(l.index);  // slow, but correct
            } catch (const std::system_error& e2) {
                if (e2.code().value() != ENODEV) throw;
            }
        }
    }
}

// Runs `work` in a detached grandchild that keeps none of our fds (no lock, pty or name socket of
// ours outlives us in it; stdio is /dev/null) and is not in our session, so that slow kernel work
// does not delay spawn's exit. We wait for the intermediate child only, which exits at once.
// Returns false if it could not fork: the caller does the work itself then.
template <typename F>
bool in_background(F&& work) {
    pid_t child = fork();
    if (child < 0) return false;
    if (child == 0) {
        syscall(SYS_close_range, 0u, ~0u, 0u);
        int fd = open("/dev/null", O_RDWR | O_CLOEXEC);  // becomes 0
        if (fd == 0) {
            (void)!dup2(0, 1);
            (void)!dup2(0, 2);
        }
        setsid();
        if (fork() == 0) {
            try {
                work();
            } catch (...) {
            }
            _exit(0);
        }
        _exit(0);
    }
    int st;
    retry_eintr([&] { return waitpid(child, &st, 0); });
    return true;
}

}  // namespace

AddressPool address_pool_from_env() {
    AddressPool p;
    if (const char* e = getenv("MACHKIT_NETWORK_POOL"); e && *e) p.pool = parse_subnet4(e);
    if (p.veth_prefixlen < p.pool.prefixlen) p.veth_prefixlen = p.pool.prefixlen;
    if (p.zone_prefixlen < p.pool.prefixlen) p.zone_prefixlen = p.pool.prefixlen;
    return p;
}

bool ContainerNetwork::needed(const SpawnSpec& s) {
    return s.network_veth || !s.network_interfaces.empty() || !s.network_macvlan.empty() || !s.network_ipvlan.empty() ||
           !s.network_veth_extra.empty() || !s.network_bridge.empty() || !s.network_zone.empty() || !s.ports.empty();
}

Netlink& ContainerNetwork::guest(int netns_fd) {
    if (!guest_) guest_.emplace(Netlink::in_namespace(netns_fd));
    return *guest_;
}

namespace {

// libnftables is only a shared library on Debian and spawn is static: a small dynamically linked
// helper (machkit-nft) creates the table from a script, and removes it when no machine needs it.
pid_t run_nft_helper(const std::vector<std::string>& args, const std::string& script, bool wait) {
    std::string path = nft_helper_path();
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) throw_last_error("pipe");
    UniqueFd rd(pfd[0]), wr(pfd[1]);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, rd.get(), STDIN_FILENO);
    if (!wait) {
        // It outlives us: it must not hold our stdout/stderr (a `spawn ... | cat` would wait for it).
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    }
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);  // spawn blocks signals for its signalfd
    posix_spawnattr_setsigdefault(&attr, &all);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    if (!wait) flags |= POSIX_SPAWN_SETSID;  // outlives us: not in our session, not killed with it
    posix_spawnattr_setflags(&attr, flags);
    std::vector<const char*> argv{path.c_str()};
    for (const auto& a : args) argv.push_back(a.c_str());
    argv.push_back(nullptr);
    pid_t pid;
    int r = posix_spawn(&pid, path.c_str(), &fa, &attr, const_cast<char* const*>(argv.data()), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (r != 0) throw_errno(r, "cannot run " + path + " (needed for NAT and port forwarding)");
    rd.reset();
    // A failed write shows as the script's own failure below.
    (void)write_all(wr.get(), script);
    wr.reset();
    if (!wait) return pid;
    int st = 0;
    if (retry_eintr([&] { return waitpid(pid, &st, 0); }) < 0) throw_last_error("waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) throw_errno(EIO, "nftables: " + path + " " + args.at(0) + " failed");
    return pid;
}

// Records of which elements each running machine added, per network namespace (nftables state is
// per namespace). Whether a machine still runs is its name lock, which is host-wide.
std::string records_dir() {
    struct stat st;
    if (stat("/proc/self/ns/net", &st) < 0) throw_last_error("cannot stat our network namespace");
    return std::string(kRunDir) + "/network/" + std::to_string(st.st_ino);
}

// Whether the machine's spawn still holds its name lock (run_lock.hpp); when in doubt, yes: a
// record kept too long costs a stale element, one dropped too early breaks a running machine.
bool machine_running(const std::string& name) {
    try {
        return run_lock_held("machine/" + name);
    } catch (const std::exception&) {
        return true;
    }
}

void remove_elements(int sock, const std::vector<NftElement>& elems) {
    if (nft_apply_elements(sock, false, "machkit", elems) == 0) return;
    // Some are gone already (a batch is all-or-nothing): one by one.
    for (const auto& e : elems) (void)nft_apply_elements(sock, false, "machkit", {e});
}

UniqueFd take_nft_lock() {
    if (mkdir(kRunDir, 0755) < 0 && errno != EEXIST) throw_last_error(std::string("cannot create ") + kRunDir);
    UniqueFd fd(open(kNftLockPath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) throw_last_error(std::string("cannot open ") + kNftLockPath);
    if (retry_eintr([&] { return flock(fd.get(), LOCK_EX); }) < 0) throw_last_error("flock");
    return fd;
}

// The elements recorded by the other running machines of this namespace.
std::vector<NftElement> recorded_elements(const std::string& except) {
    std::vector<NftElement> out;
    std::string dir = records_dir();
    DIR* d = opendir(dir.c_str());
    if (!d) return out;
    while (dirent* de = readdir(d)) {
        std::string n = de->d_name;
        if (n == "." || n == ".." || n == except || !machine_running(n)) continue;
        if (auto text = read_host_file(dir + "/" + n, 1 << 20))
            for (auto& e : decode_elements(*text)) out.push_back(std::move(e));
    }
    closedir(d);
    return out;
}

}  // namespace

void ContainerNetwork::setup_nat(const std::vector<NftElement>& elems) {
    UniqueFd lock = take_nft_lock();
    // Kept open until teardown: closing it is what can be slow (see nft_close_in_background).
    nft_sock_ = nft_open_socket();
    if (!nft_sock_) throw_last_error("cannot open an nfnetlink socket");
    const int sock = nft_sock_.get();
    std::string dir = records_dir();
    mkdir((std::string(kRunDir) + "/network").c_str(), 0755);
    if (mkdir(dir.c_str(), 0755) < 0 && errno != EEXIST) throw_last_error("cannot create " + dir);
    try {
        record_nat(sock, dir, elems);
    } catch (...) {
        rmdir(dir.c_str());  // no record of ours in it: an empty one goes (one with others' stays)
        throw;
    }
}

void ContainerNetwork::record_nat(int sock, const std::string& dir, const std::vector<NftElement>& elems) {
    // Sweep: entries of machines whose spawn was killed (nothing ran their teardown), and one of
    // ours from a previous run (we hold the name now, so that run is over).
    if (DIR* d = opendir(dir.c_str())) {
        while (dirent* de = readdir(d)) {
            std::string n = de->d_name;
            if (n == "." || n == ".." || (n != machine_ && machine_running(n))) continue;
            if (auto text = read_host_file(dir + "/" + n, 1 << 20)) remove_elements(sock, decode_elements(*text));
            unlink((dir + "/" + n).c_str());
        }
        closedir(d);
    }
    int r = nft_apply_elements(sock, true, "machkit", elems);
    if (r == ENOENT) {
        // First machine in this namespace (or the table was collected): make the table.
        run_nft_helper({"init"}, nft_init_script(), true);
        r = nft_apply_elements(sock, true, "machkit", elems);
    }
    if (r) throw_errno(r, "cannot add the NAT and port forwarding entries to nftables table inet machkit");
    nat_elems_ = elems;
    nat_ = true;
    UniqueFd dfd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dfd) throw_last_error("cannot open " + dir);
    write_file_at(dfd.get(), machine_, encode_elements(elems), 0600);
}

void ContainerNetwork::teardown_nat() {
    UniqueFd lock = take_nft_lock();
    if (!nft_sock_) nft_sock_ = nft_open_socket();
    remove_elements(nft_sock_.get(), nat_elems_);
    nat_elems_.clear();
    nft_close_in_background(std::move(nft_sock_));
    std::string dir = records_dir();
    unlink((dir + "/" + machine_).c_str());
    // Last one out: collect the table, a little later (deleting it waits for RCU, ~30 ms, and the
    // next start would have to make it again). One collector at a time, marked by a file.
    if (rmdir(dir.c_str()) == 0 || errno == ENOENT) {
        std::string marker = dir + ".gc";
        UniqueFd m(open(marker.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        struct stat st;
        if (!m && errno == EEXIST && stat(marker.c_str(), &st) == 0 && st.st_mtime + 300 < time(nullptr)) {
            // A collector that died before its time (killed, say): its marker must not stop them all.
            unlink(marker.c_str());
            m.reset(open(marker.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        }
        if (m) {
            try {
                run_nft_helper({"gc", dir, marker}, "", false);
            } catch (...) {
                unlink(marker.c_str());
                throw;
            }
        }
    }
}

void ContainerNetwork::setup_veth(const SpawnSpec& spec, Netlink& host, int ns, bool managed) {
    const bool bridged = !spec.network_bridge.empty() || !spec.network_zone.empty();
    UniqueFd zone_lock;
    veth_host_ = veth_host_name(spec.machine_name, bridged);
    int user_bridge = 0;
    if (!spec.network_bridge.empty()) {
        user_bridge = host.link_index(spec.network_bridge);
        if (!user_bridge) throw_errno(ENODEV, "--network-bridge: there is no bridge " + spec.network_bridge);
    }
    try {
        host.create_veth(veth_host_, "host0", ns);
    } catch (const std::system_error& e) {
        if (e.code().value() != EEXIST) throw;
        // The previous run of this machine (we hold its name lock, so it is gone) left its veth to
        // its dying namespace, and the kernel has not got round to it yet. Deleting it would cost
        // ~20 ms; renaming it out of the way costs nothing and it still dies with that namespace.
        retire_stale_veth(host, veth_host_);
        host.create_veth(veth_host_, "host0", ns);
    }
    int hidx = host.link_index(veth_host_);
    if (!hidx) throw_errno(ENODEV, "veth " + veth_host_ + " vanished");
    AddressPool pool = address_pool_from_env();
    std::string c4, c6, gw4, gw6;
    // IPv6 is best effort: a host may have it disabled (disable_ipv6, ipv6.disable=1).
    bool v6 = true;
    auto try6 = [&](auto&& f) {
        if (!v6) return;
        try {
            f();
        } catch (const std::system_error&) {
            v6 = false;
            c6.clear();
        }
    };
    uint8_t plen = pool.veth_prefixlen;

    if (!spec.network_bridge.empty()) {
        host.set_master(hidx, user_bridge);
        managed = false;  // the bridge's owner hands out addresses (DHCP or static inside the guest)
    } else if (!spec.network_zone.empty()) {
        // Held until this function returns, i.e. until our record (with our address) is written.
        zone_lock = take_network_lock();
        std::string br = zone_bridge_name(spec.network_zone);
        std::vector<LinkInfo> links = host.list_links();
        // Stale zone bridges (their spawns were killed): no members left.
        for (const auto& l : links) {
            if (l.kind != "bridge" || !l.name.starts_with("vz-") || l.name == br) continue;
            bool members = false;
            for (const auto& m : links) members = members || m.master == l.index;
            if (!members) {
                try {
                    host.delete_link(l.index);
                } catch (const std::exception&) {
                }
            }
        }
        int bidx = host.link_index(br);
        plen = pool.zone_prefixlen;
        Allocation al;
        if (managed)
            al = allocate_subnet(pool, "zone:" + spec.network_zone, plen,
                                 bidx ? std::vector<Subnet4>{} : taken_subnets(host));
        if (!bidx) {
            host.create_bridge(br);
            bidx = host.link_index(br);
            if (managed) {
                host.add_address(bidx, AF_INET, ip4_to_string(al.subnet.host(1)), plen);
                try6([&] { host.add_address(bidx, AF_INET6, ula_address(pool, al.index, 1), 64); });
            }
            host.set_up(bidx);
        } else if (managed) {
            // The bridge exists: use the subnet it has (the pool may have been probed past the hash).
            bool has4 = false;
            for (const auto& a : host.list_addresses())
                if (a.ifindex == bidx && a.family == AF_INET && !has4) {
                    has4 = true;
                    in_addr ia{};
                    inet_pton(AF_INET, a.address.c_str(), &ia);
                    uint32_t h = ntohl(ia.s_addr);
                    al.subnet = {h & (a.prefixlen ? ~uint32_t{0} << (32 - a.prefixlen) : 0), a.prefixlen};
                    plen = a.prefixlen;
                    al.index = (al.subnet.network - pool.pool.network) >> (32 - plen);
                }
            if (has4 && plen > 29)
                throw_errno(EADDRNOTAVAIL,
                            "the subnet of " + br + " (/" + std::to_string(plen) + ") has no room for machines");
            if (!has4) {  // made without addresses (MACHKIT_NETWORK_AUTO=no, or by someone else)
                al = allocate_subnet(pool, "zone:" + spec.network_zone, plen, taken_subnets(host));
                host.add_address(bidx, AF_INET, ip4_to_string(al.subnet.host(1)), plen);
                try6([&] { host.add_address(bidx, AF_INET6, ula_address(pool, al.index, 1), 64); });
            }
        }
        zone_bridge_ = br;
        host.set_master(hidx, bidx);
        if (managed) {
            // Members' addresses: hashed from their names, then probed past those that running
            // machines' records hold (their masq4 entries are their addresses).
            std::vector<uint32_t> used;
            for (const auto& e : recorded_elements(machine_))
                if (e.set == "masq4" && e.key.size() == 4)
                    used.push_back(uint32_t{e.key[0]} << 24 | uint32_t{e.key[1]} << 16 | uint32_t{e.key[2]} << 8 | e.key[3]);
            unsigned me = zone_member_host(spec.machine_name, plen);
            const unsigned hosts = (1u << (32 - plen)) - 3;
            for (unsigned i = 0; i < hosts; i++) {
                unsigned cand = 2 + (me - 2 + i) % hosts;
                if (std::find(used.begin(), used.end(), al.subnet.host(cand)) == used.end()) {
                    me = cand;
                    break;
                }
            }
            gw4 = ip4_to_string(al.subnet.host(1));
            c4 = ip4_to_string(al.subnet.host(me));
            gw6 = ula_address(pool, al.index, 1);
            c6 = ula_address(pool, al.index, me);
            if (!v6) c6.clear();
        }
    } else if (managed) {
        Allocation al = allocate_subnet(pool, spec.machine_name, plen, taken_subnets(host));
        gw4 = ip4_to_string(al.subnet.host(1));
        c4 = ip4_to_string(al.subnet.host(2));
        gw6 = ula_address(pool, al.index, 1);
        c6 = ula_address(pool, al.index, 2);
        host.add_address(hidx, AF_INET, gw4, plen);
        try6([&] { host.add_address(hidx, AF_INET6, gw6, 64); });
    }
    host.set_up(hidx);

    Netlink& g = guest(ns);
    int cidx = g.link_index("host0");
    if (!cidx) throw_errno(ENODEV, "host0 did not arrive in the container");
    if (managed) {
        g.add_address(cidx, AF_INET, c4, plen);
        try6([&] { g.add_address(cidx, AF_INET6, c6, 64); });
    }
    g.set_up(cidx);
    if (managed) {
        g.add_default_route(AF_INET, gw4, cidx);
        try6([&] { g.add_default_route(AF_INET6, gw6, cidx); });
        container_addresses_ = {c4};
        if (!c6.empty()) container_addresses_.push_back(c6);
        // Forwarding is host-global state; like systemd-networkd's IPMasquerade=, turn it on only
        // because NAT was asked for (docs/networking.md). IPv6 forwarding also turns off accepting
        // router advertisements on interfaces without accept_ra=2, so only IPv4 unless ports want v6.
        // Without ports, NAT is a convenience: the host <-> guest link works without it, so a
        // failure here (no machkit-nft installed, no nf_tables, read-only /proc/sys) is a warning.
        const bool required = !spec.ports.empty();
        try {
            write_sysctl("/proc/sys/net/ipv4/ip_forward", "1");
            if (required) {
                try {
                    write_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1");
                } catch (const std::exception&) {
                    // No IPv6 on this host: the IPv4 rules still work.
                }
            }
            setup_nat(nat_elements(spec.machine_name, c4, c6, spec.ports));
        } catch (const std::exception& e) {
            if (required) throw;
            if (!nat_) nft_sock_.reset();  // else elements were added: teardown removes them
            if (!spec.quiet)
                fprintf(stderr, "spawn: no NAT for %s (the container reaches only this host): %s\n",
                        spec.machine_name.c_str(), e.what());
        }
    }
}

void ContainerNetwork::setup(const SpawnSpec& spec, pid_t child_pid) {
    machine_ = spec.machine_name;
    UniqueFd ns(open(("/proc/" + std::to_string(child_pid) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns) throw_last_error("cannot open the container's network namespace");
    Netlink host;
    const bool managed = !host_side_managed();
    // The forwarding target is the address spawn gives the container.
    if (!spec.ports.empty() &&
        (!managed || !spec.network_bridge.empty() || (!spec.network_veth && spec.network_zone.empty())))
        throw UsageError(
            "--port= needs --network-veth or --network-zone with spawn's own addressing "
            "(not --network-bridge=, not with a network manager or MACHKIT_NETWORK_AUTO=no)");

    if (spec.network_veth || !spec.network_bridge.empty() || !spec.network_zone.empty())
        setup_veth(spec, host, ns.get(), managed);

    for (const auto& e : spec.network_veth_extra) {
        auto [h, c] = split_pair(e);
        host.create_veth(h, c, ns.get());
        host.set_up(host.link_index(h));
    }
    for (const auto& e : spec.network_interfaces) {
        auto [h, c] = split_pair(e);
        int idx = host.link_index(h);
        if (!idx) throw_errno(ENODEV, "--network-interface: there is no interface " + h);
        host.move_to_netns(idx, ns.get(), c != h ? c : std::string());
        moved_.push_back({h, c});
    }
    for (const auto& e : spec.network_macvlan) {
        auto [h, c] = split_pair(e);
        int idx = host.link_index(h);
        if (!idx) throw_errno(ENODEV, "--network-macvlan: there is no interface " + h);
        host.create_macvlan(c != h ? c : shorten_ifname("mv-" + h), idx, ns.get());
    }
    for (const auto& e : spec.network_ipvlan) {
        auto [h, c] = split_pair(e);
        int idx = host.link_index(h);
        if (!idx) throw_errno(ENODEV, "--network-ipvlan: there is no interface " + h);
        host.create_ipvlan(c != h ? c : shorten_ifname("iv-" + h), idx, ns.get());
    }
    // The guest socket pins the namespace: drop it, so the namespace dies with the container and
    // takes the veths with it. Keep an fd only while moved interfaces must come back.
    guest_.reset();
    if (!moved_.empty()) netns_ = std::move(ns);
}

void ContainerNetwork::teardown() noexcept {
    auto warn = [&](const char* what, const std::exception& e) {
        fprintf(stderr, "spawn: %s of %s: %s\n", what, machine_.c_str(), e.what());
    };
    guest_.reset();
    if (!moved_.empty() && netns_) {
        // Physical interfaces would return to the initial namespace by themselves when the
        // container's namespace dies, virtual ones (veth, dummy, ...) would be destroyed, and neither
        // would get its name back: move every one back explicitly while we still hold the namespace.
        try {
            UniqueFd self(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
            if (!self) throw_last_error("cannot open our network namespace");
            Netlink g = Netlink::in_namespace(netns_.get());
            for (const auto& m : moved_) {
                int idx = g.link_index(m.container_name);
                if (!idx) continue;
                try {
                    g.set_up(idx, false);
                    g.move_to_netns(idx, self.get(), m.container_name != m.host_name ? m.host_name : std::string());
                } catch (const std::exception& e) {
                    warn("moving back an interface", e);
                }
            }
        } catch (const std::exception& e) {
            warn("moving back interfaces", e);
        }
    }
    moved_.clear();
    netns_.reset();
    if (nat_) {
        nat_ = false;
        try {
            teardown_nat();
        } catch (const std::exception& e) {
            warn("removing the nftables rules", e);
        }
    }
    if (!zone_bridge_.empty()) {
        // The zone's bridge goes with its last member. Ours (vb-NAME) may still hang on it until the
        // kernel finishes destroying the container's namespace: it does not count. Deleting a
        // bridge waits for RCU (~20 ms): done in the background, under the zone lock, re-checked there.
        auto remove_if_unused = [br = zone_bridge_, mine = veth_host_] {
            UniqueFd lock = take_network_lock();
            Netlink host;
            auto links = host.list_links();
            int bidx = 0;
            for (const auto& l : links)
                if (l.name == br) bidx = l.index;
            bool others = false;
            for (const auto& l : links) others = others || (bidx && l.master == bidx && l.name != mine);
            if (bidx && !others) host.delete_link(bidx);
        };
        try {
            if (!in_background(remove_if_unused)) remove_if_unused();
        } catch (const std::exception& e) {
            warn("removing the zone bridge", e);
        }
        zone_bridge_.clear();
    }
}

}  // namespace mk::core
