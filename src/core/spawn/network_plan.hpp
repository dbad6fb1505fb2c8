// Pure parts of container networking: interface names as nspawn derives them, the address pool,
// and the nftables scripts. No I/O, so all of it is unit-tested.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/kernel/nft.hpp"
#include "core/spawn/spawn_spec.hpp"

namespace mk::core {

// SipHash-2-4 (what systemd's siphash24() computes), key of 16 bytes.
uint64_t siphash24(const void* data, size_t len, const uint8_t key[16]);

// nspawn's net_shorten_ifname() (naming scheme v250+): a name longer than 15 bytes keeps its first
// 11 bytes and gets 4 url-safe base64 characters of a SipHash of the whole name.
std::string shorten_ifname(std::string_view name);

// "ve-NAME" (plain veth), "vb-NAME" (veth on a bridge or zone), "vz-ZONE" (the zone's bridge).
std::string veth_host_name(std::string_view machine, bool bridged);
std::string zone_bridge_name(std::string_view zone);

// An IPv4 subnet, host byte order.
struct Subnet4 {
    uint32_t network = 0;
    uint8_t prefixlen = 0;
    bool contains(uint32_t a) const;
    bool overlaps(const Subnet4& o) const;
    uint32_t host(uint32_t n) const { return network + n; }  // n-th address of the subnet
};
std::string ip4_to_string(uint32_t a);
// "A.B.C.D/N" with host bits zero; throws UsageError otherwise.
Subnet4 parse_subnet4(std::string_view s);
std::string to_string(const Subnet4& s);

// The pool addresses come from, and the size of each machine's (or zone's) piece.
struct AddressPool {
    Subnet4 pool{0x0A000000, 8};           // 10.0.0.0/8, the first pool systemd-networkd allocates from
    uint8_t veth_prefixlen = 28;           // a plain veth: host .1, container .2
    uint8_t zone_prefixlen = 24;           // a zone: bridge .1, machines from .2 up
    std::string ula_prefix = "fd6d:6b00";  // IPv6: <ula_prefix>:<16 bits of the index>::/64 per piece
};

// Picks the piece of `prefixlen` for `key` (machine or zone name): a SipHash of the key says where
// to start, then the first piece that overlaps none of `taken` (the host's existing addresses).
// Throws std::system_error(EADDRNOTAVAIL) if the pool is full.
struct Allocation {
    Subnet4 subnet;
    uint32_t index = 0;  // which piece of the pool; also selects the IPv6 /64
};
Allocation allocate_subnet(const AddressPool& pool, std::string_view key, uint8_t prefixlen,
                           const std::vector<Subnet4>& taken);
// IPv6 /64 for a piece: "<ula_prefix>:<index hex>::" (no trailing host part), and its n-th host.
std::string ula_address(const AddressPool& pool, uint32_t index, unsigned host);
// A machine's host number on a zone (2..254 for a /24), from its name.
unsigned zone_member_host(std::string_view machine, uint8_t prefixlen);

// nftables: one table "inet machkit" (made once per network namespace by the machkit-nft helper)
// whose rules look up sets and maps; a machine is a few elements in them, tagged with its name:
//   masq4/masq6  the guest's addresses: masquerade what they send out (not to each other)
//   fwd4/fwd6    "proto . host port" -> "guest address . guest port", for connections to any of
//                the host's own addresses, from outside (prerouting) and from the host (output)
// Adding or removing elements registers no hooks, so it costs no RCU grace period (deleting a
// base chain costs ~30 ms here).
std::string nft_init_script();
std::vector<NftElement> nat_elements(std::string_view machine, std::string_view container4, std::string_view container6,
                                     const std::vector<PortForward>& ports);
// What a machine added, as text for its record file (one element per line: set key data, in hex),
// so that a later spawn can remove the elements of one that was SIGKILLed.
std::string encode_elements(const std::vector<NftElement>& e);
std::vector<NftElement> decode_elements(std::string_view text);

}  // namespace mk::core
