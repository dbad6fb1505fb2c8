#include "core/spawn/network_plan.hpp"

#include <net/if.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/base/error.hpp"

namespace mk::core {
namespace {

// systemd's SHORTEN_IFNAME_HASH_KEY (src/shared/netif-util.c), so that names match nspawn's.
constexpr uint8_t kShortenKey[16] = {0xe1, 0x90, 0xa4, 0x04, 0xa8, 0xef, 0x4b, 0x51,
                                     0x8c, 0xcc, 0xc3, 0x3a, 0x9f, 0x11, 0xfc, 0xa2};
// Our own key for spreading names over the address pool (any fixed value does).
constexpr uint8_t kPoolKey[16] = {0x6d, 0x61, 0x63, 0x68, 0x6b, 0x69, 0x74, 0x2d,
                                  0x61, 0x64, 0x64, 0x72, 0x70, 0x6f, 0x6f, 0x6c};

uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

uint64_t load_le64(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

char urlsafe_base64char(uint64_t x) {
    static const char table[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    return table[x & 63];
}

}  // namespace

uint64_t siphash24(const void* data, size_t len, const uint8_t key[16]) {
    const auto* in = static_cast<const uint8_t*>(data);
    uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    auto round = [&] {
        v0 += v1, v1 = rotl(v1, 13), v1 ^= v0, v0 = rotl(v0, 32);
        v2 += v3, v3 = rotl(v3, 16), v3 ^= v2;
        v0 += v3, v3 = rotl(v3, 21), v3 ^= v0;
        v2 += v1, v1 = rotl(v1, 17), v1 ^= v2, v2 = rotl(v2, 32);
    };
    size_t full = len - len % 8;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = load_le64(in + i);
        v3 ^= m;
        round(), round();
        v0 ^= m;
    }
    uint64_t b = static_cast<uint64_t>(len) << 56;
    for (size_t i = 0; i < len % 8; i++) b |= static_cast<uint64_t>(in[full + i]) << (8 * i);
    v3 ^= b;
    round(), round();
    v0 ^= b;
    v2 ^= 0xff;
    round(), round(), round(), round();
    return v0 ^ v1 ^ v2 ^ v3;
}

std::string shorten_ifname(std::string_view name) {
    if (name.size() < IFNAMSIZ) return std::string(name);
    uint64_t h = siphash24(name.data(), name.size(), kShortenKey);
    std::string out(name.substr(0, IFNAMSIZ - 5));
    out += urlsafe_base64char(h >> 18);
    out += urlsafe_base64char(h >> 12);
    out += urlsafe_base64char(h >> 6);
    out += urlsafe_base64char(h);
    return out;
}

std::string veth_host_name(std::string_view machine, bool bridged) {
    return shorten_ifname(std::string(bridged ? "vb-" : "ve-") + std::string(machine));
}

std::string zone_bridge_name(std::string_view zone) { return shorten_ifname("vz-" + std::string(zone)); }

// ---- IPv4 subnets -------------------------------------------------------------------------------

namespace {
uint32_t mask_of(uint8_t prefixlen) { return prefixlen == 0 ? 0 : ~uint32_t{0} << (32 - prefixlen); }
}  // namespace

bool Subnet4::contains(uint32_t a) const { return (a & mask_of(prefixlen)) == network; }

bool Subnet4::overlaps(const Subnet4& o) const {
    uint8_t p = prefixlen < o.prefixlen ? prefixlen : o.prefixlen;
    return (network & mask_of(p)) == (o.network & mask_of(p));
}

std::string ip4_to_string(uint32_t a) {
    char b[16];
    snprintf(b, sizeof b, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
    return b;
}

std::string to_string(const Subnet4& s) { return ip4_to_string(s.network) + "/" + std::to_string(s.prefixlen); }

Subnet4 parse_subnet4(std::string_view s) {
    unsigned a, b, c, d, n;
    char tail;
    std::string t(s);
    if (sscanf(t.c_str(), "%u.%u.%u.%u/%u%c", &a, &b, &c, &d, &n, &tail) != 5 || a > 255 || b > 255 || c > 255 ||
        d > 255 || n > 30)
        throw UsageError("invalid IPv4 subnet '" + t + "': expected A.B.C.D/N with N at most 30");
    Subnet4 r{a << 24 | b << 16 | c << 8 | d, static_cast<uint8_t>(n)};
    if (r.network & ~mask_of(r.prefixlen)) throw UsageError("invalid IPv4 subnet '" + t + "': host bits are set");
    return r;
}

Allocation allocate_subnet(const AddressPool& pool, std::string_view key, uint8_t prefixlen,
                           const std::vector<Subnet4>& taken) {
    if (prefixlen < pool.pool.prefixlen || prefixlen > 30) throw_errno(EINVAL, "subnet size does not fit the address pool");
    uint64_t count = uint64_t{1} << (prefixlen - pool.pool.prefixlen);
    uint64_t start = siphash24(key.data(), key.size(), kPoolKey) % count;
    // Bounded: at most 65536 probes, whatever the pool (a /8 has 2^20 /28s; the first free one
    // after the hashed start is found long before that in any sane setup).
    uint64_t limit = count < 65536 ? count : 65536;
    for (uint64_t i = 0; i < limit; i++) {
        uint64_t idx = (start + i) % count;
        Subnet4 cand{pool.pool.network + static_cast<uint32_t>(idx << (32 - prefixlen)), prefixlen};
        bool busy = false;
        for (const auto& t : taken) busy = busy || cand.overlaps(t);
        if (!busy) return {cand, static_cast<uint32_t>(idx)};
    }
    throw_errno(EADDRNOTAVAIL, "no free subnet left in the address pool " + to_string(pool.pool));
}

std::string ula_address(const AddressPool& pool, uint32_t index, unsigned host) {
    char b[64];
    snprintf(b, sizeof b, "%s:%x::%x", pool.ula_prefix.c_str(), index & 0xffff, host);
    return b;
}

unsigned zone_member_host(std::string_view machine, uint8_t prefixlen) {
    uint32_t hosts = (uint32_t{1} << (32 - prefixlen)) - 3;  // minus network, broadcast and the bridge's .1
    return 2 + static_cast<unsigned>(siphash24(machine.data(), machine.size(), kPoolKey) % hosts);
}

// ---- nftables -----------------------------------------------------------------------------------

std::string nft_chain_prefix(std::string_view machine) { return "m-" + std::string(machine) + "-"; }

std::string nft_setup_script(const NatPlan& p) {
    const std::string c = "inet machkit " + nft_chain_prefix(p.machine);
    std::string s = "add table inet machkit\n";
    // dstnat = -100, srcnat = 100: the numbers, so older nft parsers accept them in every family.
    s += "add chain " + c + "pre { type nat hook prerouting priority -100; policy accept; }\n";
    s += "add chain " + c + "out { type nat hook output priority -100; policy accept; }\n";
    s += "add chain " + c + "post { type nat hook postrouting priority 100; policy accept; }\n";
    // A spawn that was SIGKILLed may have left chains of this name: start them empty.
    for (const char* ch : {"pre", "out", "post"}) s += "flush chain " + c + ch + "\n";
    if (!p.subnet4.empty())
        s += "add rule " + c + "post meta nfproto ipv4 ip saddr " + p.subnet4 + " ip daddr != " + p.subnet4 + " masquerade\n";
    if (!p.subnet6.empty())
        s += "add rule " + c + "post meta nfproto ipv6 ip6 saddr " + p.subnet6 + " ip6 daddr != " + p.subnet6 + " masquerade\n";
    for (const auto& f : p.ports) {
        std::string proto = f.protocol == PortProtocol::Udp ? "udp" : "tcp";
        std::string match = proto + " dport " + std::to_string(f.host_port);
        std::string cport = std::to_string(f.container_port);
        // Connections to any of the host's own addresses: from outside (prerouting) and from the
        // host itself (output). Loopback is left alone: DNAT of 127.0.0.0/8 needs route_localnet.
        if (!p.container4.empty()) {
            std::string to = " dnat ip to " + p.container4 + ":" + cport + "\n";
            s += "add rule " + c + "pre meta nfproto ipv4 fib daddr type local " + match + to;
            s += "add rule " + c + "out meta nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr type local " + match + to;
        }
        if (!p.container6.empty()) {
            std::string to = " dnat ip6 to [" + p.container6 + "]:" + cport + "\n";
            s += "add rule " + c + "pre meta nfproto ipv6 fib daddr type local " + match + to;
            s += "add rule " + c + "out meta nfproto ipv6 ip6 daddr != ::1 fib daddr type local " + match + to;
        }
    }
    return s;
}

std::string nft_teardown_script(std::string_view machine) {
    const std::string c = "inet machkit " + nft_chain_prefix(machine);
    std::string s;
    for (const char* ch : {"pre", "out", "post"}) s += "flush chain " + c + ch + "\ndelete chain " + c + ch + "\n";
    return s;
}

}  // namespace mk::core
