// ContainerNetwork: the links, addresses and nftables rules of one running container.
//
// The launcher calls setup() in spawn's parent right after clone, while the child (already in its
// own network namespace) waits for a byte; teardown() (also run by the destructor) after the child
// is gone. Owns: the names of what it created or moved, an fd of the child's network namespace
// only while moved interfaces must go back. Side effects on the host's network namespace (links,
// addresses, the "inet machkit" nftables table, net.ipv4.ip_forward when it sets up NAT) — see
// docs/networking.md. Thread-hostile: Netlink::in_namespace() switches the calling thread's netns
// for an instant. No std::function: plain data and member functions.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "core/base/unique_fd.hpp"
#include "core/kernel/netlink.hpp"
#include "core/kernel/nft.hpp"
#include "core/spawn/network_plan.hpp"
#include "core/spawn/spawn_spec.hpp"

namespace mk::core {

class ContainerNetwork {
public:
    // Any option that needs work from the host side (and so implies a private network namespace).
    static bool needed(const SpawnSpec& spec);

    ContainerNetwork() = default;
    ContainerNetwork(const ContainerNetwork&) = delete;
    ContainerNetwork& operator=(const ContainerNetwork&) = delete;
    ~ContainerNetwork() { teardown(); }

    // Creates and configures everything for `child_pid`, whose network namespace is new and empty
    // but for lo. Throws on failure; what was done so far is undone by teardown().
    void setup(const SpawnSpec& spec, pid_t child_pid);
    // Undoes setup(). Never deletes the container's veths synchronously (~20 ms each): they go with
    // the container's network namespace. Best effort, noexcept; errors are printed.
    void teardown() noexcept;

    // The guest's IPv4/IPv6 addresses that spawn assigned (empty when the host side is managed
    // by someone else).
    const std::vector<std::string>& container_addresses() const { return container_addresses_; }

private:
    struct MovedLink {
        std::string host_name;       // its name on the host, to get back
        std::string container_name;  // its name inside
    };
    void setup_veth(const SpawnSpec& spec, Netlink& host, int netns_fd, bool managed);
    Netlink& guest(int netns_fd);
    void setup_nat(const std::vector<NftElement>& elems);
    // setup_nat's body once the records directory exists: sweep dead machines' entries, add ours, record them.
    void record_nat(int sock, const std::string& dir, const std::vector<NftElement>& elems);
    void teardown_nat();

    std::string machine_;
    std::vector<MovedLink> moved_;
    UniqueFd netns_;  // the child's namespace, held while moved_ must go back
    std::string zone_bridge_;
    std::string veth_host_;
    bool nat_ = false;
    std::vector<std::string> container_addresses_;
    std::optional<Netlink> guest_;
    std::vector<NftElement> nat_elems_;
    UniqueFd nft_sock_;  // nfnetlink, from setup to teardown
};

// Settings that do not come from the command line (see docs/networking.md):
// MACHKIT_NETWORK_POOL (IPv4 CIDR, default 10.0.0.0/8), MACHKIT_NETWORK_AUTO=no (no addresses, NAT).
AddressPool address_pool_from_env();

}  // namespace mk::core
