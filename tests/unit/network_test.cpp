#include <gtest/gtest.h>

#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <fcntl.h>
#include <linux/veth.h>
#include <sys/socket.h>

#include <cstring>
#include <set>
#include <string>

#include "core/base/error.hpp"
#include "core/kernel/netlink.hpp"
#include "core/spawn/network_plan.hpp"

using namespace mk::core;

TEST(SipHash, ReferenceVector) {
    // The SipHash paper's test vector: key 00..0f, message 00..0e.
    uint8_t key[16], msg[15];
    for (int i = 0; i < 16; i++) key[i] = static_cast<uint8_t>(i);
    for (int i = 0; i < 15; i++) msg[i] = static_cast<uint8_t>(i);
    EXPECT_EQ(siphash24(msg, sizeof msg, key), 0xa129ca6149be45e5ULL);
    EXPECT_EQ(siphash24(msg, 0, key), 0x726fdb47dd0e0e31ULL);
}

TEST(InterfaceNames, AsNspawn) {
    EXPECT_EQ(veth_host_name("foo", false), "ve-foo");
    EXPECT_EQ(veth_host_name("foo", true), "vb-foo");
    EXPECT_EQ(zone_bridge_name("lab"), "vz-lab");
    EXPECT_EQ(veth_host_name("twelve-chars", false), "ve-twelve-chars");  // 15: fits
    // Measured with systemd-nspawn 252 here: --network-veth -M averyveryverylongname.
    EXPECT_EQ(veth_host_name("averyveryverylongname", false), "ve-averyverUARo");
    for (const char* n : {"a-very-long-machine-name", "averyveryverylongname", "x.y.z.example.com"}) {
        std::string s = veth_host_name(n, false);
        EXPECT_LE(s.size(), 15u) << n;
        EXPECT_TRUE(s.starts_with("ve-")) << n;
    }
    EXPECT_NE(veth_host_name("a-very-long-machine-name-1", false), veth_host_name("a-very-long-machine-name-2", false));
}

TEST(AddressPool, Subnets) {
    Subnet4 s = parse_subnet4("10.1.2.0/24");
    EXPECT_EQ(to_string(s), "10.1.2.0/24");
    EXPECT_TRUE(s.contains(0x0A010203));
    EXPECT_FALSE(s.contains(0x0A010303));
    EXPECT_TRUE(s.overlaps(parse_subnet4("10.0.0.0/8")));
    EXPECT_TRUE(s.overlaps(parse_subnet4("10.1.2.16/28")));
    EXPECT_FALSE(s.overlaps(parse_subnet4("10.1.3.0/28")));
    EXPECT_THROW(parse_subnet4("10.1.2.1/24"), UsageError);
    EXPECT_THROW(parse_subnet4("10.1.2.0"), UsageError);
    EXPECT_THROW(parse_subnet4("300.1.2.0/24"), UsageError);
    EXPECT_THROW(parse_subnet4("10.0.0.0/31"), UsageError);
}

TEST(AddressPool, DeterministicAndCollisionChecked) {
    AddressPool pool;
    Allocation a = allocate_subnet(pool, "web", 28, {});
    EXPECT_EQ(a.subnet.prefixlen, 28);
    EXPECT_TRUE(pool.pool.contains(a.subnet.network));
    EXPECT_EQ(a.subnet.network & 15u, 0u);
    Allocation again = allocate_subnet(pool, "web", 28, {});
    EXPECT_EQ(a.subnet.network, again.subnet.network);
    // Taken by an address on the host: the next free piece.
    Allocation moved = allocate_subnet(pool, "web", 28, {Subnet4{a.subnet.network, 24 + 4}});
    EXPECT_NE(moved.subnet.network, a.subnet.network);
    Allocation moved2 = allocate_subnet(pool, "web", 28, {Subnet4{a.subnet.network & 0xffffff00u, 24}});
    EXPECT_FALSE(Subnet4(Subnet4{a.subnet.network & 0xffffff00u, 24}).overlaps(moved2.subnet));
    // A small pool fills up.
    AddressPool small;
    small.pool = parse_subnet4("192.168.7.0/27");
    std::vector<Subnet4> taken;
    for (int i = 0; i < 2; i++) taken.push_back(allocate_subnet(small, "m" + std::to_string(i), 28, taken).subnet);
    EXPECT_NE(taken[0].network, taken[1].network);
    try {
        allocate_subnet(small, "m3", 28, taken);
        FAIL();
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), EADDRNOTAVAIL);
    }
    EXPECT_EQ(ula_address(pool, 0x1234, 2), "fd6d:6b00:1234::2");
    unsigned h = zone_member_host("web", 24);
    EXPECT_GE(h, 2u);
    EXPECT_LE(h, 254u);
}

TEST(Nft, InitScript) {
    std::string s = nft_init_script();
    EXPECT_TRUE(s.starts_with("table inet machkit {"));
    for (const char* w :
         {"set masq4 { type ipv4_addr; }", "map fwd4 { type inet_proto . inet_service : ipv4_addr . inet_service; }",
          "type nat hook prerouting priority -100", "type nat hook output priority -100",
          "ip daddr != 127.0.0.0/8 fib daddr type local dnat ip addr . port to meta l4proto . th dport map @fwd4",
          "ip saddr @masq4 ip daddr != @masq4 masquerade", "dnat ip6 addr . port to meta l4proto . th dport map @fwd6"})
        EXPECT_NE(s.find(w), std::string::npos) << w;
}

TEST(Nft, ElementsInRegisterLayout) {
    auto e =
        nat_elements("web", "10.1.2.2", "fd6d:6b00:12::2", {{PortProtocol::Tcp, 8080, 80}, {PortProtocol::Udp, 53, 5353}});
    ASSERT_EQ(e.size(), 6u);
    EXPECT_EQ(e[0].set, "masq4");
    EXPECT_EQ(e[0].key, (std::vector<uint8_t>{10, 1, 2, 2}));
    EXPECT_EQ(e[0].comment, "web");
    EXPECT_EQ(e[1].set, "fwd4");
    EXPECT_EQ(e[1].key, (std::vector<uint8_t>{6, 0, 0, 0, 0x1f, 0x90, 0, 0}));  // tcp . 8080
    EXPECT_EQ(e[1].data, (std::vector<uint8_t>{10, 1, 2, 2, 0, 80, 0, 0}));     // 10.1.2.2 . 80
    EXPECT_EQ(e[2].key, (std::vector<uint8_t>{17, 0, 0, 0, 0, 53, 0, 0}));      // udp . 53
    EXPECT_EQ(e[3].set, "masq6");
    EXPECT_EQ(e[3].key.size(), 16u);
    EXPECT_EQ(e[4].set, "fwd6");
    EXPECT_EQ(e[4].data.size(), 20u);
    // The record file round-trips; junk lines are ignored.
    auto back = decode_elements(encode_elements(e) + "bogus 00 00\nfwd4 zz -\n");
    ASSERT_EQ(back.size(), e.size());
    for (size_t i = 0; i < e.size(); i++) {
        EXPECT_EQ(back[i].set, e[i].set);
        EXPECT_EQ(back[i].key, e[i].key);
        EXPECT_EQ(back[i].data, e[i].data);
    }
    EXPECT_TRUE(nat_elements("x", "", "", {}).empty());
}

TEST(Nft, ElementBatch) {
    auto e = nat_elements("web", "10.1.2.2", "", {});
    auto b = nft_element_batch(true, "machkit", e, 1);
    // BEGIN, one NEWSETELEM, END; each a complete, aligned netlink message.
    size_t off = 0;
    std::vector<uint16_t> types;
    while (off < b.size()) {
        auto* h = reinterpret_cast<const nlmsghdr*>(b.data() + off);
        ASSERT_GE(h->nlmsg_len, NLMSG_HDRLEN);
        ASSERT_EQ(h->nlmsg_len % 4, 0u);
        types.push_back(h->nlmsg_type);
        off += h->nlmsg_len;
    }
    EXPECT_EQ(off, b.size());
    ASSERT_EQ(types.size(), 3u);
    EXPECT_EQ(types[0], NLMSG_MIN_TYPE);      // NFNL_MSG_BATCH_BEGIN
    EXPECT_EQ(types[1], (10 << 8) | 12);      // NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWSETELEM
    EXPECT_EQ(types[2], NLMSG_MIN_TYPE + 1);  // NFNL_MSG_BATCH_END
}

TEST(NlMessage, VethRequestLayout) {
    NlMessage m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    m.put_header<ifinfomsg>();
    m.put_string(IFLA_IFNAME, "ve-x");
    size_t li = m.begin_nest(IFLA_LINKINFO);
    m.put_string(IFLA_INFO_KIND, "veth");
    m.end_nest(li);
    m.set_seq(7);
    auto* h = reinterpret_cast<const nlmsghdr*>(m.data());
    EXPECT_EQ(h->nlmsg_len, m.size());
    EXPECT_EQ(h->nlmsg_type, RTM_NEWLINK);
    EXPECT_EQ(h->nlmsg_seq, 7u);
    EXPECT_TRUE(h->nlmsg_flags & NLM_F_REQUEST);
    EXPECT_EQ(m.size() % 4, 0u);
    auto* a = reinterpret_cast<const rtattr*>(m.data() + NLMSG_LENGTH(sizeof(ifinfomsg)));
    EXPECT_EQ(a->rta_type, IFLA_IFNAME);
    EXPECT_EQ(a->rta_len, RTA_LENGTH(5));
    EXPECT_STREQ(static_cast<const char*>(RTA_DATA(a)), "ve-x");
    auto* nest = reinterpret_cast<const rtattr*>(reinterpret_cast<const char*>(a) + RTA_ALIGN(a->rta_len));
    EXPECT_EQ(nest->rta_type, IFLA_LINKINFO);
    EXPECT_EQ(nest->rta_len, RTA_LENGTH(RTA_ALIGN(RTA_LENGTH(5))));
    auto* kind = static_cast<const rtattr*>(RTA_DATA(nest));
    EXPECT_EQ(kind->rta_type, IFLA_INFO_KIND);
    EXPECT_STREQ(static_cast<const char*>(RTA_DATA(kind)), "veth");
}

TEST(Netlink, ParseIp) {
    EXPECT_EQ(parse_ip(AF_INET, "10.0.0.1")->size(), 4u);
    EXPECT_EQ(parse_ip(AF_INET6, "fd00::1")->size(), 16u);
    EXPECT_FALSE(parse_ip(AF_INET, "fd00::1"));
    EXPECT_FALSE(parse_ip(AF_INET, "10.0.0"));
}

#include "spawn/options.hpp"

TEST(SpawnOptions, NetworkOptionsImplyPrivateNetwork) {
    auto parse = [](std::vector<std::string> a) {
        a.insert(a.begin(), {"spawn", "-D", "/srv/m"});
        return mk::spawn::parse_options(a, false, false).spec;
    };
    auto s = parse({"-n"});
    EXPECT_TRUE(s.network_veth && s.private_network);
    s = parse({"--network-zone=lab", "-p", "udp:53", "--port=8080:80"});
    EXPECT_EQ(s.network_zone, "lab");
    EXPECT_TRUE(s.network_veth && s.private_network);
    ASSERT_EQ(s.ports.size(), 2u);
    EXPECT_EQ(s.ports[0].protocol, PortProtocol::Udp);
    EXPECT_EQ(s.ports[1].host_port, 8080);
    EXPECT_EQ(s.ports[1].container_port, 80);
    s = parse({"--network-interface=eth1:inside", "--network-macvlan=eth0", "--network-ipvlan=eth2",
               "--network-veth-extra=x0:y0", "--network-bridge=br0"});
    EXPECT_EQ(s.network_interfaces.at(0), "eth1:inside");
    EXPECT_EQ(s.network_macvlan.at(0), "eth0");
    EXPECT_EQ(s.network_ipvlan.at(0), "eth2");
    EXPECT_EQ(s.network_veth_extra.at(0), "x0:y0");
    EXPECT_EQ(s.network_bridge, "br0");
    EXPECT_TRUE(s.private_network);
    EXPECT_THROW(parse({"--network-zone=thirteenchars"}), UsageError);
    EXPECT_THROW(parse({"--network-bridge=a/b"}), UsageError);
    EXPECT_THROW(parse({"-p", "70000"}), UsageError);
    EXPECT_EQ(parse({"--network-namespace-path=/run/netns/x"}).network_namespace_path, "/run/netns/x");
    EXPECT_THROW(parse({"--network-namespace-path=/run/netns/x", "-n"}), UsageError);
}

#include <sched.h>
#include <unistd.h>

#include <thread>

// Against the real kernel, in a network namespace of its own (a thread's: unshare(CLONE_NEWNET)
// affects the calling thread only). Root only; skipped otherwise.
TEST(NetlinkKernel, LinksAddressesRoutesInAPrivateNamespace) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    std::string failure;
    std::thread t([&] {
        try {
            if (unshare(CLONE_NEWNET) < 0) throw_last_error("unshare");
            UniqueFd self(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
            Netlink nl;
            nl.set_up(nl.link_index("lo"));
            EXPECT_EQ(nl.link_index("nope0"), 0);
            nl.create_veth("mkt-a", "mkt-b", self.get());
            int a = nl.link_index("mkt-a"), b = nl.link_index("mkt-b");
            ASSERT_GT(a, 0);
            ASSERT_GT(b, 0);
            nl.create_bridge("mkt-br");
            int br = nl.link_index("mkt-br");
            nl.set_master(b, br);
            nl.set_up(a);
            nl.set_up(br);
            nl.add_address(a, AF_INET, "192.0.2.1", 24);
            nl.add_address(a, AF_INET6, "2001:db8::1", 64);
            nl.add_default_route(AF_INET, "192.0.2.254", a);
            try {
                nl.add_address(a, AF_INET, "192.0.2.1", 24);
                ADD_FAILURE() << "a duplicate address was accepted";
            } catch (const std::system_error& e) {
                EXPECT_EQ(e.code().value(), EEXIST);
            }
            bool v4 = false, v6 = false;
            for (const auto& ad : nl.list_addresses()) {
                v4 = v4 || (ad.ifname == "mkt-a" && ad.address == "192.0.2.1" && ad.prefixlen == 24);
                v6 = v6 || (ad.ifname == "mkt-a" && ad.address == "2001:db8::1");
            }
            EXPECT_TRUE(v4);
            EXPECT_TRUE(v6);
            bool enslaved = false;
            for (const auto& l : nl.list_links()) {
                if (l.name == "mkt-b") enslaved = l.master == br && l.kind == "veth";
                if (l.name == "mkt-br") {
                    EXPECT_EQ(l.kind, "bridge");
                }
            }
            EXPECT_TRUE(enslaved);
            nl.set_up(a, false);
            nl.rename(a, "mkt-c");
            EXPECT_EQ(nl.link_index("mkt-c"), a);
            // Everything here goes with the namespace when the thread ends.
        } catch (const std::exception& e) {
            failure = e.what();
        }
    });
    t.join();
    EXPECT_EQ(failure, "");
}
