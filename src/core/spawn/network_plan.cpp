#include "core/spawn/network_plan.hpp"

#include <arpa/inet.h>
#include <net/if.h>
#include <sys/socket.h>

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
    if (sscanf(t.c_str(), "%u.%u.%u.%u/%u%c", &a, &b, &c, &d, &n, &tail) != 5 || a > 255 || b > 255 || c > 255 || d > 255 ||
        n > 30)
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

std::string nft_init_script() {
    // Priorities as numbers (dstnat = -100, srcnat = 100), which every nft version accepts.
    return R"(table inet machkit {
  set masq4 { type ipv4_addr; }
  set masq6 { type ipv6_addr; }
  map fwd4 { type inet_proto . inet_service : ipv4_addr . inet_service; }
  map fwd6 { type inet_proto . inet_service : ipv6_addr . inet_service; }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    meta l4proto { tcp, udp } fib daddr type local meta nfproto ipv4 dnat ip addr . port to meta l4proto . th dport map @fwd4
    meta l4proto { tcp, udp } fib daddr type local meta nfproto ipv6 dnat ip6 addr . port to meta l4proto . th dport map @fwd6
  }
  chain output {
    type nat hook output priority -100; policy accept;
    meta l4proto { tcp, udp } meta nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr type local dnat ip addr . port to meta l4proto . th dport map @fwd4
    meta l4proto { tcp, udp } meta nfproto ipv6 ip6 daddr != ::1 fib daddr type local dnat ip6 addr . port to meta l4proto . th dport map @fwd6
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    ip saddr @masq4 ip daddr != @masq4 masquerade
    ip6 saddr @masq6 ip6 daddr != @masq6 masquerade
  }
}
)";
}

namespace {
// Register layout: every field of a concatenation starts on a 4-byte boundary.
void put_field(std::vector<uint8_t>& v, const uint8_t* p, size_t n) {
    v.insert(v.end(), p, p + n);
    while (v.size() % 4) v.push_back(0);
}
std::vector<uint8_t> proto_port(PortProtocol proto, uint16_t port) {
    std::vector<uint8_t> v;
    uint8_t pr = proto == PortProtocol::Udp ? 17 : 6;
    put_field(v, &pr, 1);
    uint8_t be[2] = {static_cast<uint8_t>(port >> 8), static_cast<uint8_t>(port & 255)};
    put_field(v, be, 2);
    return v;
}
std::vector<uint8_t> ip_bytes(int family, std::string_view text) {
    std::string t(text);
    std::vector<uint8_t> out(family == AF_INET ? 4 : 16);
    if (inet_pton(family, t.c_str(), out.data()) != 1) throw_errno(EINVAL, "invalid address " + t);
    return out;
}
}  // namespace

std::vector<NftElement> nat_elements(std::string_view machine, std::string_view container4, std::string_view container6,
                                     const std::vector<PortForward>& ports) {
    std::vector<NftElement> out;
    std::string tag(machine);
    struct Fam {
        int family;
        std::string_view addr;
        const char* masq;
        const char* fwd;
    };
    for (const Fam& f : {Fam{AF_INET, container4, "masq4", "fwd4"}, Fam{AF_INET6, container6, "masq6", "fwd6"}}) {
        if (f.addr.empty()) continue;
        auto a = ip_bytes(f.family, f.addr);
        out.push_back({f.masq, a, {}, tag});
        for (const auto& p : ports) {
            std::vector<uint8_t> data;
            put_field(data, a.data(), a.size());
            uint8_t be[2] = {static_cast<uint8_t>(p.container_port >> 8), static_cast<uint8_t>(p.container_port & 255)};
            put_field(data, be, 2);
            out.push_back({f.fwd, proto_port(p.protocol, p.host_port), data, tag});
        }
    }
    return out;
}

std::string encode_elements(const std::vector<NftElement>& elems) {
    static const char* hex = "0123456789abcdef";
    auto h = [](const std::vector<uint8_t>& v) {
        std::string s;
        for (uint8_t b : v) s += hex[b >> 4], s += hex[b & 15];
        return s.empty() ? std::string("-") : s;
    };
    std::string out;
    for (const auto& e : elems) out += e.set + " " + h(e.key) + " " + h(e.data) + "\n";
    return out;
}

std::vector<NftElement> decode_elements(std::string_view text) {
    std::vector<NftElement> out;
    auto unhex = [](std::string_view s, std::vector<uint8_t>& v) {
        if (s == "-") return true;
        if (s.size() % 2 || s.size() > 64) return false;
        for (size_t i = 0; i < s.size(); i += 2) {
            auto d = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; };
            int hi = d(s[i]), lo = d(s[i + 1]);
            if (hi < 0 || lo < 0) return false;
            v.push_back(static_cast<uint8_t>(hi << 4 | lo));
        }
        return true;
    };
    size_t i = 0;
    while (i < text.size() && out.size() < 4096) {
        size_t j = text.find('\n', i);
        if (j == std::string_view::npos) j = text.size();
        std::string_view line = text.substr(i, j - i);
        i = j + 1;
        size_t a = line.find(' '), b = a == std::string_view::npos ? a : line.find(' ', a + 1);
        if (b == std::string_view::npos) continue;
        NftElement e;
        e.set = std::string(line.substr(0, a));
        if (e.set != "masq4" && e.set != "masq6" && e.set != "fwd4" && e.set != "fwd6") continue;
        if (!unhex(line.substr(a + 1, b - a - 1), e.key) || !unhex(line.substr(b + 1), e.data) || e.key.empty()) continue;
        out.push_back(std::move(e));
    }
    return out;
}

}  // namespace mk::core
