// A small rtnetlink client: links, addresses and routes of the network namespace the socket was
// opened in. Requests wait for the kernel's ACK; a NACK becomes std::system_error carrying the
// kernel's errno (and its extended-ack text when there is one).
//
// Why not libmnl: spawn is linked statically and Debian ships libmnl (and libnftables) only as
// shared objects. The wire format is a handful of TLVs; NlMessage builds them and is unit-tested.
//
// Thread-compatible: one Netlink object per thread. Owns its socket. The socket pins the network
// namespace it was created in until it is closed: close it before relying on that namespace dying.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/unique_fd.hpp"

namespace mk::core {

// One netlink message under construction: header, family header, attributes (nestable).
class NlMessage {
public:
    NlMessage(uint16_t type, uint16_t flags);
    // Appends the fixed family header (ifinfomsg, ifaddrmsg, rtmsg...).
    template <typename T>
    T& put_header() {
        size_t off = reserve(sizeof(T));
        return *reinterpret_cast<T*>(buf_.data() + off);
    }
    void put(uint16_t type, const void* data, size_t len);
    void put_u32(uint16_t type, uint32_t v) { put(type, &v, sizeof v); }
    void put_string(uint16_t type, std::string_view s);  // NUL-terminated
    // Nests: begin returns a cookie for end; attributes in between belong to the nest.
    size_t begin_nest(uint16_t type);
    void end_nest(size_t cookie);
    // A bare ifinfomsg inside a nest (VETH_INFO_PEER carries one before its attributes).
    void put_raw_zeroes(size_t len) { reserve(len); }

    void set_seq(uint32_t seq);
    const uint8_t* data() const { return buf_.data(); }
    size_t size() const { return buf_.size(); }

private:
    size_t reserve(size_t len);  // 4-aligned; returns the offset of the new bytes (zeroed)
    void fix_len();
    std::vector<uint8_t> buf_;
};

struct LinkInfo {
    int index = 0;
    std::string name;
    unsigned flags = 0;  // IFF_*
    int master = 0;      // ifindex of the bridge, 0 if none
    std::string kind;    // "veth", "bridge", ... ("" for physical)
};

struct Address {
    int family = 0;  // AF_INET, AF_INET6
    int ifindex = 0;
    uint8_t prefixlen = 0;
    uint8_t scope = 0;
    std::string ifname;   // filled by list_addresses
    std::string address;  // textual (inet_ntop)
};

class Netlink {
public:
    // A NETLINK_ROUTE socket in the calling thread's current network namespace.
    Netlink();
    // A socket in the network namespace of `netns_fd` (an nsfs fd or a pidfd). Switches the calling
    // thread into that namespace and back; side effect: thread-hostile for that instant.
    static Netlink in_namespace(int netns_fd);

    // Links.
    int link_index(std::string_view name);  // 0 if there is no such link
    std::vector<LinkInfo> list_links();
    // veth pair `name` here, peer `peer_name` created directly in the namespace of `peer_netns_fd`
    // (one message: no move, no rename).
    void create_veth(std::string_view name, std::string_view peer_name, int peer_netns_fd);
    void create_bridge(std::string_view name);
    // macvlan (bridge mode) / ipvlan (L2) on top of `parent_index`, created in `netns_fd`'s namespace.
    void create_macvlan(std::string_view name, int parent_index, int netns_fd);
    void create_ipvlan(std::string_view name, int parent_index, int netns_fd);
    void set_up(int index, bool up = true);
    void set_master(int index, int master_index);
    // Renames a link (it must be down on kernels that refuse renaming running devices).
    void rename(int index, std::string_view new_name);
    // Moves the link into `netns_fd`'s namespace, renaming it there when new_name is not empty.
    void move_to_netns(int index, int netns_fd, std::string_view new_name = {});
    // RTM_DELLINK waits for RCU grace periods (~20 ms for a veth): keep off fast paths.
    void delete_link(int index);

    // Addresses and routes (address in textual form).
    void add_address(int index, int family, std::string_view address, uint8_t prefixlen);
    void add_default_route(int family, std::string_view gateway, int index);
    std::vector<Address> list_addresses();

    int fd() const { return fd_.get(); }

private:
    explicit Netlink(UniqueFd fd);
    void request(NlMessage& m);  // sends, waits for the ACK, throws the NACK
    template <typename F>
    void dump(NlMessage& m, F&& each);
    void create_link_on(std::string_view name, std::string_view kind, int parent_index, int netns_fd, uint16_t mode_attr,
                        uint32_t mode);

    UniqueFd fd_;
    uint32_t seq_ = 0;
};

// The addresses of the network namespace of `netns_fd` (an nsfs fd, e.g. /proc/PID/ns/net, or a
// pidfd): what machd's GetMachineAddresses reports. Same thread caveat as Netlink::in_namespace.
std::vector<Address> list_addresses_in(int netns_fd);

// Parses "1.2.3.4" or "fd00::1" into network-order bytes (4 or 16); nullopt if neither.
std::optional<std::vector<uint8_t>> parse_ip(int family, std::string_view text);

}  // namespace mk::core
