#include "core/kernel/netlink.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <sched.h>
#include <sys/socket.h>

#include <cstring>

#include "core/base/error.hpp"
#include "core/base/io.hpp"

namespace mk::core {

// ---- NlMessage --------------------------------------------------------------------------------

NlMessage::NlMessage(uint16_t type, uint16_t flags) {
    buf_.resize(NLMSG_HDRLEN);
    auto* h = reinterpret_cast<nlmsghdr*>(buf_.data());
    h->nlmsg_type = type;
    h->nlmsg_flags = static_cast<uint16_t>(flags | NLM_F_REQUEST);
    fix_len();
}

size_t NlMessage::reserve(size_t len) {
    size_t off = buf_.size();
    buf_.resize(off + NLMSG_ALIGN(len), 0);
    fix_len();
    return off;
}

void NlMessage::fix_len() { reinterpret_cast<nlmsghdr*>(buf_.data())->nlmsg_len = static_cast<uint32_t>(buf_.size()); }

void NlMessage::put(uint16_t type, const void* data, size_t len) {
    size_t off = reserve(RTA_LENGTH(len));
    auto* a = reinterpret_cast<rtattr*>(buf_.data() + off);
    a->rta_type = type;
    a->rta_len = static_cast<unsigned short>(RTA_LENGTH(len));
    if (len) std::memcpy(RTA_DATA(a), data, len);
}

void NlMessage::put_string(uint16_t type, std::string_view s) {
    std::string z(s);
    put(type, z.c_str(), z.size() + 1);
}

size_t NlMessage::begin_nest(uint16_t type) {
    size_t off = reserve(RTA_LENGTH(0));
    reinterpret_cast<rtattr*>(buf_.data() + off)->rta_type = type;
    return off;
}

void NlMessage::end_nest(size_t cookie) {
    reinterpret_cast<rtattr*>(buf_.data() + cookie)->rta_len = static_cast<unsigned short>(buf_.size() - cookie);
}

void NlMessage::set_seq(uint32_t seq) { reinterpret_cast<nlmsghdr*>(buf_.data())->nlmsg_seq = seq; }

// ---- helpers ----------------------------------------------------------------------------------

std::optional<std::vector<uint8_t>> parse_ip(int family, std::string_view text) {
    std::string t(text);
    std::vector<uint8_t> out(family == AF_INET ? 4 : 16);
    if (family != AF_INET && family != AF_INET6) return std::nullopt;
    if (inet_pton(family, t.c_str(), out.data()) != 1) return std::nullopt;
    return out;
}

namespace {

std::vector<uint8_t> ip_or_throw(int family, std::string_view text) {
    auto b = parse_ip(family, text);
    if (!b) throw_errno(EINVAL, "invalid IP address '" + std::string(text) + "'");
    return *b;
}

// Walks the attributes after a family header of `hdr_len` bytes.
template <typename F>
void for_each_attr(const nlmsghdr* h, size_t hdr_len, F&& f) {
    auto len = static_cast<int>(h->nlmsg_len) - static_cast<int>(NLMSG_LENGTH(hdr_len));
    auto* a = reinterpret_cast<const rtattr*>(reinterpret_cast<const char*>(NLMSG_DATA(h)) + NLMSG_ALIGN(hdr_len));
    for (; len > 0 && RTA_OK(a, len); a = RTA_NEXT(a, len)) f(a);
}

template <typename F>
void for_each_nested(const rtattr* nest, F&& f) {
    auto len = static_cast<int>(RTA_PAYLOAD(nest));
    auto* a = reinterpret_cast<const rtattr*>(RTA_DATA(nest));
    for (; len > 0 && RTA_OK(a, len); a = RTA_NEXT(a, len)) f(a);
}

std::string attr_string(const rtattr* a) {
    const char* s = static_cast<const char*>(RTA_DATA(a));
    return std::string(s, strnlen(s, RTA_PAYLOAD(a)));
}

}  // namespace

// ---- Netlink ----------------------------------------------------------------------------------

Netlink::Netlink(UniqueFd fd) : fd_(std::move(fd)) {}

Netlink::Netlink() {
    fd_.reset(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!fd_) throw_last_error("cannot open an rtnetlink socket");
    int one = 1;
    // Extended acks: the kernel says which attribute it did not like. Optional.
    (void)setsockopt(fd_.get(), SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
    (void)setsockopt(fd_.get(), SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
    sockaddr_nl sa{};
    sa.nl_family = AF_NETLINK;
    if (bind(fd_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0)
        throw_last_error("cannot bind an rtnetlink socket");
}

Netlink Netlink::in_namespace(int netns_fd) {
    // A socket belongs to the namespace it was created in, for its whole life: step in, create,
    // step back. Cheaper than a helper process and needs no thread.
    UniqueFd self(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!self) throw_last_error("cannot open our network namespace");
    if (setns(netns_fd, CLONE_NEWNET) < 0) throw_last_error("cannot enter the container's network namespace");
    std::optional<Netlink> nl;
    int err = 0;
    try {
        nl.emplace();
    } catch (const std::system_error& e) {
        err = e.code().value();
    }
    if (setns(self.get(), CLONE_NEWNET) < 0) throw_last_error("cannot return to our network namespace");
    if (!nl) throw_errno(err ? err : EIO, "cannot open an rtnetlink socket in the container");
    return std::move(*nl);
}

void Netlink::request(NlMessage& m) {
    uint32_t seq = ++seq_;
    m.set_seq(seq);
    auto* h = reinterpret_cast<nlmsghdr*>(const_cast<uint8_t*>(m.data()));
    h->nlmsg_flags |= NLM_F_ACK;
    sockaddr_nl sa{};
    sa.nl_family = AF_NETLINK;
    if (sendto(fd_.get(), m.data(), m.size(), 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0)
        throw_last_error("netlink send");
    alignas(nlmsghdr) char buf[8192];
    for (;;) {
        ssize_t n = retry_eintr([&] { return recv(fd_.get(), buf, sizeof buf, 0); });
        if (n < 0) throw_last_error("netlink receive");
        int len = static_cast<int>(n);
        for (auto* r = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(r, len); r = NLMSG_NEXT(r, len)) {
            if (r->nlmsg_seq != seq || r->nlmsg_type != NLMSG_ERROR) continue;
            auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(r));
            if (e->error == 0) return;
            std::string text;
            if (r->nlmsg_flags & NLM_F_ACK_TLVS) {
                // With NETLINK_CAP_ACK the original request is not echoed back: TLVs follow nlmsgerr.
                size_t hl = sizeof(nlmsgerr) - sizeof(nlmsghdr) + NLMSG_HDRLEN;
                if (!(r->nlmsg_flags & NLM_F_CAPPED)) hl = sizeof(nlmsgerr) - sizeof(nlmsghdr) + e->msg.nlmsg_len;
                auto tl = static_cast<int>(r->nlmsg_len) - static_cast<int>(NLMSG_HDRLEN + NLMSG_ALIGN(hl));
                auto* a = reinterpret_cast<const rtattr*>(reinterpret_cast<const char*>(e) + NLMSG_ALIGN(hl));
                for (; tl > 0 && RTA_OK(a, tl); a = RTA_NEXT(a, tl))
                    if (a->rta_type == NLMSGERR_ATTR_MSG) text = attr_string(a);
            }
            throw_errno(-e->error, text.empty() ? "netlink request" : "netlink request (" + text + ")");
        }
    }
}

template <typename F>
void Netlink::dump(NlMessage& m, F&& each) {
    uint32_t seq = ++seq_;
    m.set_seq(seq);
    if (send(fd_.get(), m.data(), m.size(), 0) < 0) throw_last_error("netlink send");
    alignas(nlmsghdr) static thread_local char buf[32768];
    for (;;) {
        ssize_t n = retry_eintr([&] { return recv(fd_.get(), buf, sizeof buf, 0); });
        if (n < 0) throw_last_error("netlink receive");
        int len = static_cast<int>(n);
        for (auto* r = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(r, len); r = NLMSG_NEXT(r, len)) {
            if (r->nlmsg_seq != seq) continue;
            if (r->nlmsg_type == NLMSG_DONE) return;
            if (r->nlmsg_type == NLMSG_ERROR) {
                int err = -static_cast<nlmsgerr*>(NLMSG_DATA(r))->error;
                if (err) throw_errno(err, "netlink dump");
                return;
            }
            each(r);
        }
    }
}

int Netlink::link_index(std::string_view name) {
    // if_nametoindex() uses an ioctl on an AF_INET socket of the *current* namespace; ask this one,
    // for this name only (a dump costs as much as the host has links).
    NlMessage m(RTM_GETLINK, NLM_F_ACK);
    m.put_header<ifinfomsg>().ifi_family = AF_UNSPEC;
    m.put_string(IFLA_IFNAME, name);
    m.put_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    uint32_t seq = ++seq_;
    m.set_seq(seq);
    if (send(fd_.get(), m.data(), m.size(), 0) < 0) throw_last_error("netlink send");
    alignas(nlmsghdr) char buf[16384];
    int found = 0;
    for (;;) {
        ssize_t n = retry_eintr([&] { return recv(fd_.get(), buf, sizeof buf, 0); });
        if (n < 0) throw_last_error("netlink receive");
        int len = static_cast<int>(n);
        for (auto* r = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(r, len); r = NLMSG_NEXT(r, len)) {
            if (r->nlmsg_seq != seq) continue;
            if (r->nlmsg_type == RTM_NEWLINK) {
                found = static_cast<const ifinfomsg*>(NLMSG_DATA(r))->ifi_index;
            } else if (r->nlmsg_type == NLMSG_ERROR) {
                int err = -static_cast<nlmsgerr*>(NLMSG_DATA(r))->error;
                if (err == ENODEV) return 0;
                if (err) throw_errno(err, "cannot look up interface " + std::string(name));
                return found;  // the ACK follows the answer
            }
        }
    }
}

std::vector<LinkInfo> Netlink::list_links() {
    NlMessage m(RTM_GETLINK, NLM_F_DUMP);
    m.put_header<ifinfomsg>().ifi_family = AF_UNSPEC;
    std::vector<LinkInfo> out;
    dump(m, [&](const nlmsghdr* h) {
        if (h->nlmsg_type != RTM_NEWLINK) return;
        auto* ifi = static_cast<const ifinfomsg*>(NLMSG_DATA(h));
        LinkInfo l;
        l.index = ifi->ifi_index;
        l.flags = ifi->ifi_flags;
        for_each_attr(h, sizeof(ifinfomsg), [&](const rtattr* a) {
            if (a->rta_type == IFLA_IFNAME) l.name = attr_string(a);
            else if (a->rta_type == IFLA_MASTER) std::memcpy(&l.master, RTA_DATA(a), sizeof(int));
            else if (a->rta_type == IFLA_LINKINFO)
                for_each_nested(a, [&](const rtattr* b) {
                    if (b->rta_type == IFLA_INFO_KIND) l.kind = attr_string(b);
                });
        });
        out.push_back(std::move(l));
    });
    return out;
}

void Netlink::create_veth(std::string_view name, std::string_view peer_name, int peer_netns_fd) {
    NlMessage m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    m.put_header<ifinfomsg>();
    m.put_string(IFLA_IFNAME, name);
    size_t li = m.begin_nest(IFLA_LINKINFO);
    m.put_string(IFLA_INFO_KIND, "veth");
    size_t data = m.begin_nest(IFLA_INFO_DATA);
    size_t peer = m.begin_nest(VETH_INFO_PEER);
    m.put_raw_zeroes(sizeof(ifinfomsg));
    m.put_string(IFLA_IFNAME, peer_name);
    if (peer_netns_fd >= 0) m.put_u32(IFLA_NET_NS_FD, static_cast<uint32_t>(peer_netns_fd));
    m.end_nest(peer);
    m.end_nest(data);
    m.end_nest(li);
    try {
        request(m);
    } catch (const std::system_error& e) {
        throw_errno(e.code().value(), "cannot create veth " + std::string(name) + " / " + std::string(peer_name));
    }
}

void Netlink::create_bridge(std::string_view name) {
    NlMessage m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    m.put_header<ifinfomsg>();
    m.put_string(IFLA_IFNAME, name);
    size_t li = m.begin_nest(IFLA_LINKINFO);
    m.put_string(IFLA_INFO_KIND, "bridge");
    m.end_nest(li);
    request(m);
}

void Netlink::create_link_on(std::string_view name, std::string_view kind, int parent_index, int netns_fd,
                             uint16_t mode_attr, uint32_t mode) {
    NlMessage m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    m.put_header<ifinfomsg>();
    m.put_string(IFLA_IFNAME, name);
    m.put_u32(IFLA_LINK, static_cast<uint32_t>(parent_index));
    if (netns_fd >= 0) m.put_u32(IFLA_NET_NS_FD, static_cast<uint32_t>(netns_fd));
    size_t li = m.begin_nest(IFLA_LINKINFO);
    m.put_string(IFLA_INFO_KIND, kind);
    size_t data = m.begin_nest(IFLA_INFO_DATA);
    if (kind == "ipvlan") {  // IFLA_IPVLAN_MODE is a u16 (and has the same number as IFLA_MACVLAN_MODE)
        uint16_t v = static_cast<uint16_t>(mode);
        m.put(mode_attr, &v, sizeof v);
    } else {
        m.put_u32(mode_attr, mode);
    }
    m.end_nest(data);
    m.end_nest(li);
    try {
        request(m);
    } catch (const std::system_error& e) {
        throw_errno(e.code().value(), "cannot create " + std::string(kind) + " " + std::string(name));
    }
}

void Netlink::create_macvlan(std::string_view name, int parent_index, int netns_fd) {
    create_link_on(name, "macvlan", parent_index, netns_fd, IFLA_MACVLAN_MODE, MACVLAN_MODE_BRIDGE);
}

void Netlink::create_ipvlan(std::string_view name, int parent_index, int netns_fd) {
    create_link_on(name, "ipvlan", parent_index, netns_fd, IFLA_IPVLAN_MODE, IPVLAN_MODE_L2);
}

void Netlink::set_up(int index, bool up) {
    NlMessage m(RTM_NEWLINK, 0);
    auto& ifi = m.put_header<ifinfomsg>();
    ifi.ifi_index = index;
    ifi.ifi_change = IFF_UP;
    ifi.ifi_flags = up ? IFF_UP : 0;
    request(m);
}

void Netlink::set_master(int index, int master_index) {
    NlMessage m(RTM_NEWLINK, 0);
    m.put_header<ifinfomsg>().ifi_index = index;
    m.put_u32(IFLA_MASTER, static_cast<uint32_t>(master_index));
    request(m);
}

void Netlink::rename(int index, std::string_view new_name) {
    NlMessage m(RTM_NEWLINK, 0);
    m.put_header<ifinfomsg>().ifi_index = index;
    m.put_string(IFLA_IFNAME, new_name);
    request(m);
}

void Netlink::move_to_netns(int index, int netns_fd, std::string_view new_name) {
    NlMessage m(RTM_NEWLINK, 0);
    m.put_header<ifinfomsg>().ifi_index = index;
    m.put_u32(IFLA_NET_NS_FD, static_cast<uint32_t>(netns_fd));
    if (!new_name.empty()) m.put_string(IFLA_IFNAME, new_name);
    request(m);
}

void Netlink::delete_link(int index) {
    NlMessage m(RTM_DELLINK, 0);
    m.put_header<ifinfomsg>().ifi_index = index;
    request(m);
}

void Netlink::add_address(int index, int family, std::string_view address, uint8_t prefixlen) {
    auto bytes = ip_or_throw(family, address);
    NlMessage m(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
    auto& ifa = m.put_header<ifaddrmsg>();
    ifa.ifa_family = static_cast<uint8_t>(family);
    ifa.ifa_prefixlen = prefixlen;
    ifa.ifa_index = static_cast<uint32_t>(index);
    m.put(IFA_LOCAL, bytes.data(), bytes.size());
    m.put(IFA_ADDRESS, bytes.data(), bytes.size());
    if (family == AF_INET6) {
        // No duplicate address detection: the link is a point-to-point veth we just made, and DAD
        // would keep the address "tentative" (unusable) for a second or more.
        m.put_u32(IFA_FLAGS, IFA_F_NODAD);
    }
    try {
        request(m);
    } catch (const std::system_error& e) {
        throw_errno(e.code().value(), "cannot add address " + std::string(address));
    }
}

void Netlink::add_default_route(int family, std::string_view gateway, int index) {
    auto gw = ip_or_throw(family, gateway);
    NlMessage m(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
    auto& rt = m.put_header<rtmsg>();
    rt.rtm_family = static_cast<uint8_t>(family);
    rt.rtm_table = RT_TABLE_MAIN;
    rt.rtm_protocol = RTPROT_STATIC;
    rt.rtm_scope = RT_SCOPE_UNIVERSE;
    rt.rtm_type = RTN_UNICAST;
    m.put(RTA_GATEWAY, gw.data(), gw.size());
    m.put_u32(RTA_OIF, static_cast<uint32_t>(index));
    try {
        request(m);
    } catch (const std::system_error& e) {
        throw_errno(e.code().value(), "cannot add the default route via " + std::string(gateway));
    }
}

std::vector<Address> Netlink::list_addresses() {
    std::vector<LinkInfo> links = list_links();
    NlMessage m(RTM_GETADDR, NLM_F_DUMP);
    m.put_header<ifaddrmsg>().ifa_family = AF_UNSPEC;
    std::vector<Address> out;
    dump(m, [&](const nlmsghdr* h) {
        if (h->nlmsg_type != RTM_NEWADDR) return;
        auto* ifa = static_cast<const ifaddrmsg*>(NLMSG_DATA(h));
        Address a;
        a.family = ifa->ifa_family;
        a.ifindex = static_cast<int>(ifa->ifa_index);
        a.prefixlen = ifa->ifa_prefixlen;
        a.scope = ifa->ifa_scope;
        const rtattr* local = nullptr;
        const rtattr* addr = nullptr;
        for_each_attr(h, sizeof(ifaddrmsg), [&](const rtattr* x) {
            if (x->rta_type == IFA_LOCAL) local = x;
            else if (x->rta_type == IFA_ADDRESS) addr = x;
        });
        const rtattr* use = local ? local : addr;
        if (!use) return;
        char text[INET6_ADDRSTRLEN] = {};
        if (!inet_ntop(a.family, RTA_DATA(use), text, sizeof text)) return;
        a.address = text;
        for (const auto& l : links)
            if (l.index == a.ifindex) a.ifname = l.name;
        out.push_back(std::move(a));
    });
    return out;
}

std::vector<Address> list_addresses_in(int netns_fd) { return Netlink::in_namespace(netns_fd).list_addresses(); }

}  // namespace mk::core
