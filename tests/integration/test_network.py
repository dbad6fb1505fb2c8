"""spawn's networking: veth, zones, port forwarding, moved interfaces, --private-network.

Every test runs spawn inside a network namespace the test creates ("the host" from spawn's point
of view), so no link, address, sysctl or nftables rule of the real host is touched, and no packet
leaves the test's namespaces. After each test: nothing left in that namespace or on the real host.
Root only; busybox tree.
"""
import os
import pathlib
import subprocess
import sys
import textwrap
import uuid

import pytest
from mkutil import wait_for

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def sh(*argv, check=True, **kw):
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=60, **kw)


def host_links():
    return set(sh("ip", "-o", "link", "show").stdout.split("\n"))


def host_link_names():
    out = sh("ip", "-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.strip()}


def host_nft_tables():
    r = sh("nft", "list", "tables", check=False)
    return r.stdout


class Netns:
    """A network namespace standing in for the host: spawn runs in it, clients connect from it."""

    def __init__(self):
        self.name = "mkt-" + uuid.uuid4().hex[:10]
        sh("ip", "netns", "add", self.name)
        self.run("ip", "link", "set", "lo", "up")

    def argv(self, *argv):
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv, check=True, **kw):
        return sh(*self.argv(*argv), check=check, **kw)

    def popen(self, *argv, **kw):
        return subprocess.Popen(self.argv(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, **kw)

    def links(self):
        out = self.run("ip", "-o", "link", "show").stdout
        return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.strip()}

    def addr_of(self, ifname, family="-4"):
        out = self.run("ip", family, "-o", "addr", "show", "dev", ifname, check=False).stdout
        for line in out.splitlines():
            f = line.split()
            if "scope" in f and f[f.index("scope") + 1] == "global":
                return f[3]
        return None

    def nft(self):
        return self.run("nft", "list", "ruleset").stdout

    def delete(self):
        sh("ip", "netns", "delete", self.name, check=False)


# A TCP client run inside a namespace: prints what the server sent.
CLIENT = textwrap.dedent("""
    import socket, sys
    host, port = sys.argv[1], int(sys.argv[2])
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    for attempt in range(100):
        try:
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(3)
            s.connect((host, port))
            break
        except OSError:
            s.close()
            import time; time.sleep(0.1)
    else:
        sys.exit("cannot connect")
    s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    data = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        data += b
    sys.stdout.write(data.decode(errors="replace"))
""")


@pytest.fixture
def netns(spawn_bin):
    before_links = host_link_names()
    before_tables = host_nft_tables()
    ns = Netns()
    try:
        yield ns
        # Nothing left in the test's "host": only lo and what the test made itself (prefix "mkt"),
        # no nftables table; veths go with their containers' namespaces (asynchronously).
        assert wait_for(lambda: {l for l in ns.links() if not l.startswith("mkt")} == {"lo"}), ns.links()
        assert wait_for(lambda: "machkit" not in ns.nft()), ns.nft()
    finally:
        ns.delete()
    assert wait_for(lambda: ns.name not in sh("ip", "netns", "list").stdout)
    assert not {l for l in host_link_names() - before_links if l[:3] in ("ve-", "vb-", "vz-", "mkt")}
    assert host_nft_tables() == before_tables


def spawn_argv(spawn_bin, tree, machine, *opts, cmd):
    return [spawn_bin, "-q", "-P", "-D", str(tree), "-M", machine, *opts, "--", "/bin/sh", "-c", cmd]


def container_pid(spawn_proc_pid):
    """The container's PID 1 (spawn's child; `ip netns exec` execs spawn in place)."""
    try:
        with open(f"/proc/{spawn_proc_pid}/task/{spawn_proc_pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return None
    return kids[0] if kids else None


def guest_addr(pid, family="-4"):
    out = sh("nsenter", "-t", str(pid), "-n", "ip", family, "-o", "addr", "show", "dev", "host0", check=False).stdout
    for line in out.splitlines():
        f = line.split()
        if "scope" in f and f[f.index("scope") + 1] == "global":
            return f[3].split("/")[0]
    return None


def stop(p):
    """SIGTERM to spawn (forwarded to the guest's PID 1, which a shell or httpd as PID 1 ignores),
    then SIGTERM again: spawn kills the container and tears its network down."""
    for _ in range(2):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(1)
            except subprocess.TimeoutExpired:
                pass
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    return p.communicate()


# ---- tests ---------------------------------------------------------------------------------------

def test_private_network_has_only_loopback(spawn_bin, tree, netns):
    r = netns.run(*spawn_argv(spawn_bin, tree, "pn", "--private-network", cmd="ip -o link show; ip -4 -o addr"), check=False)
    assert r.returncode == 0, r.stderr
    names = [l.split(":")[1].strip() for l in r.stdout.splitlines() if ": " in l and "link/" in l]
    assert names == ["lo"], r.stdout
    assert "127.0.0.1/8" in r.stdout


def test_veth_ping_and_tcp_both_ways(spawn_bin, tree, netns):
    cmd = ("ip -o link show host0 >/dev/null || exit 3; "
           "gw=$(ip route | awk '/^default/ {print $3}'); ping -c1 -W3 $gw >/dev/null || exit 4; "
           "mkdir -p /www; echo hello-from-guest > /www/index.html; exec httpd -f -p 80 -h /www")
    p = netns.popen(*spawn_argv(spawn_bin, tree, "vt", "--network-veth", cmd=cmd))
    try:
        assert wait_for(lambda: netns.addr_of("ve-vt") is not None or p.poll() is not None), "no address on ve-vt"
        assert p.poll() is None, stop(p)
        host4 = netns.addr_of("ve-vt")
        assert host4.endswith("/28") and host4.startswith("10."), host4
        assert wait_for(lambda: container_pid(p.pid) is not None)
        g4 = guest_addr(container_pid(p.pid))
        g6 = guest_addr(container_pid(p.pid), "-6")
        assert g4 and g6 and g6.startswith("fd6d:6b00:"), (g4, g6)
        # host -> guest: ping, TCP over IPv4 and IPv6
        assert netns.run("busybox", "ping", "-c1", "-W3", g4, check=False).returncode == 0
        r = netns.run("python3", "-c", CLIENT, g4, "80", check=False)
        assert "hello-from-guest" in r.stdout, r.stderr
        r = netns.run("python3", "-c", CLIENT, g6, "80", check=False)
        assert "hello-from-guest" in r.stdout, r.stderr
        # the guest's side: default route via ve-vt, masquerade rules for its subnet
        assert "masquerade" in netns.nft()
        assert netns.run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    finally:
        out, err = stop(p)
    assert p.returncode in (0, 137, 143), err


def test_veth_without_ipv6_on_the_host(spawn_bin, tree, netns):
    # IPv6 off in the test's "host" namespace only (these sysctls are per namespace).
    netns.run("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    r = netns.run(*spawn_argv(spawn_bin, tree, "v4only", "--network-veth",
                              cmd="gw=$(ip route | awk '/^default/ {print $3}'); ping -c1 -W3 $gw >/dev/null && echo ok"),
                  check=False)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_veth_without_the_nft_helper_warns_and_works(spawn_bin, tree, netns):
    env = dict(os.environ, MACHKIT_NFT_HELPER="/nonexistent/machkit-nft")
    argv = spawn_argv(spawn_bin, tree, "nohelper", "--network-veth",
                      cmd="gw=$(ip route | awk '/^default/ {print $3}'); ping -c1 -W3 $gw >/dev/null && echo ok")
    argv.remove("-q")
    r = netns.run(*argv, check=False, env=env)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
    assert "no NAT" in r.stderr
    # ports cannot do without it
    r = netns.run(spawn_bin, "-q", "-D", str(tree), "-n", "-p", "8080", "true", check=False, env=env)
    assert r.returncode != 0 and "machkit-nft" in r.stderr


def test_zone_members_reach_each_other(spawn_bin, tree, netns):
    server = netns.popen(*spawn_argv(spawn_bin, tree, "zb", "--network-zone=mktz",
                                     cmd="mkdir -p /www; echo hello-from-b > /www/index.html; exec httpd -f -p 80 -h /www"))
    try:
        assert wait_for(lambda: "vz-mktz" in netns.links() and container_pid(server.pid) is not None)
        assert wait_for(lambda: guest_addr(container_pid(server.pid)) is not None)
        b_addr = guest_addr(container_pid(server.pid))
        assert netns.addr_of("vz-mktz").endswith("/24")
        assert "vb-zb" in netns.links()
        # A second machine on the same tree: read-only, since a writable tree has one user at a time.
        r = netns.run(*spawn_argv(spawn_bin, tree, "za", "--network-zone=mktz", "--read-only",
                                  cmd=f"ping -c1 -W3 {b_addr} >/dev/null && wget -q -O - http://{b_addr}/"), check=False)
        assert r.returncode == 0, r.stderr
        assert "hello-from-b" in r.stdout
        assert "vz-mktz" in netns.links()  # b still runs: the zone stays
    finally:
        stop(server)
    # The last member went: so did the zone's bridge.
    assert wait_for(lambda: "vz-mktz" not in netns.links()), netns.links()


def test_zone_members_whose_names_hash_alike_get_distinct_addresses(spawn_bin, tree, netns):
    # "zc5" and "zc26" hash to the same host number in a /24 (see zone_member_host).
    first = netns.popen(*spawn_argv(spawn_bin, tree, "zc5", "--network-zone=mktc", cmd="exec sleep 30"))
    try:
        assert wait_for(lambda: container_pid(first.pid) is not None and guest_addr(container_pid(first.pid)))
        a = guest_addr(container_pid(first.pid))
        r = netns.run(*spawn_argv(spawn_bin, tree, "zc26", "--network-zone=mktc", "--read-only",
                                  cmd=f"ip -4 -o addr show host0; ping -c1 -W3 {a} >/dev/null && echo reached"), check=False)
        assert r.returncode == 0, r.stderr
        assert f" {a}/" not in r.stdout and "reached" in r.stdout, (a, r.stdout)
    finally:
        stop(first)


def test_port_forward_to_guest_via_host_addresses(spawn_bin, tree, netns):
    # The host's "own" addresses (documentation prefixes) on a veth whose other end is in a client
    # namespace: connections from the client go through prerouting, from the host through output.
    client = Netns()
    try:
        netns.run("ip", "link", "add", "mktd0", "type", "veth", "peer", "name", "mktd1", "netns", client.name)
        netns.run("ip", "addr", "add", "192.0.2.1/24", "dev", "mktd0")
        netns.run("ip", "addr", "add", "2001:db8::1/64", "dev", "mktd0", "nodad")
        netns.run("ip", "link", "set", "mktd0", "up")
        client.run("ip", "addr", "add", "192.0.2.2/24", "dev", "mktd1")
        client.run("ip", "addr", "add", "2001:db8::2/64", "dev", "mktd1", "nodad")
        client.run("ip", "link", "set", "mktd1", "up")
        p = netns.popen(*spawn_argv(spawn_bin, tree, "pf", "--network-veth", "-p", "8080:80", "--port=tcp:8081",
                                    cmd="mkdir -p /www; echo hello-forwarded > /www/index.html; "
                                        "httpd -p 8081 -h /www; exec httpd -f -p 80 -h /www"))
        try:
            assert wait_for(lambda: "machkit" in netns.nft() or p.poll() is not None)
            assert p.poll() is None, stop(p)
            for ns, target, port in ((netns, "192.0.2.1", "8080"), (netns, "2001:db8::1", "8080"),
                                     (netns, "192.0.2.1", "8081"), (client, "192.0.2.1", "8080"),
                                     (client, "2001:db8::1", "8080"), (client, "192.0.2.1", "8081")):
                r = ns.run("python3", "-c", CLIENT, target, port, check=False)
                assert "hello-forwarded" in r.stdout, (ns.name, target, port, r.stderr, netns.nft())
            # the host side of the veth is one of the host's addresses too
            ve = netns.addr_of("ve-pf").split("/")[0]
            r = netns.run("python3", "-c", CLIENT, ve, "8080", check=False)
            assert "hello-forwarded" in r.stdout, r.stderr
        finally:
            stop(p)
        assert wait_for(lambda: "machkit" not in netns.nft()), netns.nft()
        netns.run("ip", "link", "del", "mktd0")
    finally:
        client.delete()


def test_outbound_nat(spawn_bin, tree, netns):
    # An "upstream" namespace that knows no route to the pool: only a masqueraded reply comes back.
    up = Netns()
    try:
        netns.run("ip", "link", "add", "mktu0", "type", "veth", "peer", "name", "mktu1", "netns", up.name)
        netns.run("ip", "addr", "add", "198.51.100.1/24", "dev", "mktu0")
        netns.run("ip", "link", "set", "mktu0", "up")
        up.run("ip", "addr", "add", "198.51.100.2/24", "dev", "mktu1")
        up.run("ip", "link", "set", "mktu1", "up")
        r = netns.run(*spawn_argv(spawn_bin, tree, "out", "--network-veth",
                                  cmd="ping -c1 -W3 198.51.100.2 >/dev/null && echo reached"), check=False)
        assert r.returncode == 0 and "reached" in r.stdout, r.stderr
        netns.run("ip", "link", "del", "mktu0")
    finally:
        up.delete()


def test_interface_moved_in_and_back(spawn_bin, tree, netns):
    # veths: virtual links, which the kernel would destroy with the container's namespace
    netns.run("ip", "link", "add", "mktif0", "type", "veth", "peer", "name", "mktif0p")
    netns.run("ip", "link", "add", "mktif1", "type", "veth", "peer", "name", "mktif1p")
    r = netns.run(*spawn_argv(spawn_bin, tree, "mv", "--network-interface=mktif0", "--network-interface=mktif1:eth7",
                              cmd="ip -o link show"), check=False)
    assert r.returncode == 0, r.stderr
    assert "mktif0" in r.stdout and "eth7" in r.stdout and "mktif1" not in r.stdout
    links = netns.links()
    assert "mktif0" in links and "mktif1" in links, links  # back, under their own names
    netns.run("ip", "link", "del", "mktif0")
    netns.run("ip", "link", "del", "mktif1")


def kernel_has(kind):
    ns = Netns()
    try:
        return ns.run("ip", "link", "add", "mktk0", "type", kind, check=False).returncode == 0 or \
            ns.run("ip", "link", "add", "mktk0", "link", "lo", "type", kind, check=False).returncode == 0
    finally:
        ns.delete()


def test_veth_extra_and_macvlan(spawn_bin, tree, netns):
    netns.run("ip", "link", "add", "mktm0", "type", "veth", "peer", "name", "mktm1")
    netns.run("ip", "link", "set", "mktm0", "up")
    opts, names = ["--network-veth-extra=mktx0:inner0", "--network-macvlan=mktm0"], ["inner0", "mv-mktm0"]
    if kernel_has("ipvlan"):
        opts.append("--network-ipvlan=mktm0:ipv0")
        names.append("ipv0")
    r = netns.run(*spawn_argv(spawn_bin, tree, "vx", *opts, cmd="ip -o link show"), check=False)
    assert r.returncode == 0, r.stderr
    for name in names:
        assert name in r.stdout, r.stdout
    # The extra veth's host side (mktx0) went with the container's namespace (checked by the fixture).
    netns.run("ip", "link", "del", "mktm0")


def test_stale_entries_of_a_killed_spawn_are_swept(spawn_bin, tree, netns):
    p = netns.popen(*spawn_argv(spawn_bin, tree, "kl", "--network-veth", "-p", "8090", cmd="exec sleep 100"))
    assert wait_for(lambda: "comment \"kl\"" in netns.nft())
    p.kill()  # SIGKILL: no teardown ran
    p.wait()
    assert wait_for(lambda: "ve-kl" not in netns.links())  # the veth went with the namespace
    assert "8090" in netns.nft()
    # The next start of any machine sweeps what belongs to machines that no longer run.
    r = netns.run(*spawn_argv(spawn_bin, tree, "other", "--network-veth", cmd="true"), check=False)
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: "machkit" not in netns.nft()), netns.nft()


def test_network_namespace_path(spawn_bin, tree, netns):
    other = Netns()
    try:
        other.run("ip", "link", "add", "mktj0", "type", "veth", "peer", "name", "mktj1")
        r = netns.run(*spawn_argv(spawn_bin, tree, "nsp", f"--network-namespace-path=/run/netns/{other.name}",
                                  cmd="ip -o link show"), check=False)
        assert r.returncode == 0, r.stderr
        assert "mktj0" in r.stdout and "mktj1" in r.stdout
        r = netns.run(spawn_bin, "-q", "-D", str(tree), "--network-namespace-path=/etc/hostname", "true", check=False)
        assert r.returncode != 0 and "not a network namespace" in r.stderr
    finally:
        other.delete()


def test_zone_bridge_of_a_killed_spawn_is_swept(spawn_bin, tree, netns):
    p = netns.popen(*spawn_argv(spawn_bin, tree, "zk", "--network-zone=mktk", cmd="exec sleep 100"))
    assert wait_for(lambda: "vz-mktk" in netns.links() and "vb-zk" in netns.links())
    p.kill()  # SIGKILL: no teardown ran
    p.wait()
    assert wait_for(lambda: "vb-zk" not in netns.links())  # the member went with its namespace
    assert "vz-mktk" in netns.links()
    r = netns.run(*spawn_argv(spawn_bin, tree, "zo", "--network-zone=mkto", cmd="true"), check=False)
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: not {"vz-mktk", "vz-mkto"} & netns.links()), netns.links()


def test_bad_network_options(spawn_bin, tree, netns):
    for opt, word in (("--network-zone=waytoolongzone", "zone"), ("--network-interface=a/b", "interface"),
                      ("--port=0", "port"), ("--port=sctp:5", "port")):
        r = netns.run(spawn_bin, "-q", "-D", str(tree), opt, "true", check=False)
        assert r.returncode != 0 and word in r.stderr.lower(), (opt, r.stderr)
    r = netns.run(spawn_bin, "-q", "-D", str(tree), "--network-bridge=mktnobr", "true", check=False)
    assert r.returncode != 0 and "mktnobr" in r.stderr
    r = netns.run(spawn_bin, "-q", "-D", str(tree), "--network-bridge=mktnobr", "-p", "80", "true", check=False)
    assert r.returncode != 0 and "--port" in r.stderr
    r = netns.run(spawn_bin, "-q", "-D", str(tree), "--network-interface=mktnone", "true", check=False)
    assert r.returncode != 0 and "mktnone" in r.stderr


def test_failed_nat_setup_leaves_no_records_dir(spawn_bin, tree, netns):
    # Bad environment: the nftables helper cannot run, so the first machine of this namespace cannot
    # make its table. spawn fails with a clear error and leaves no bookkeeping directory behind.
    records = "/run/machkit/network/%d" % os.stat("/run/netns/" + netns.name).st_ino
    env = dict(os.environ, MACHKIT_NFT_HELPER="/nonexistent/machkit-nft")
    r = netns.run(*spawn_argv(spawn_bin, tree, "nonat", "--network-veth", "--port=tcp:8080:80", cmd="true"),
                  check=False, env=env)
    assert r.returncode != 0 and "machkit-nft" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not os.path.exists(records)
