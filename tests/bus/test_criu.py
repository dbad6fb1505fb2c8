"""Checkpoint and restore with criu (docs/criu.md): machctl checkpoint / restore against machd on a
private bus, real spawn containers (busybox trees) and the sid fixture's criu 4.2 run through that
tree's own loader (Debian 12's criu 3.17 cannot run on this kernel). Root only.

Skipped, with the reason, when the sid fixture cannot be made (tests/helpers/sid-fixture.sh)."""
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import BUILD, cleanup_machine_cgroups, wait_for

SPAWN = BUILD / "src" / "spawn" / "spawn"
MACHCTL = BUILD / "src" / "machctl" / "machctl"
HELPERS = pathlib.Path(__file__).resolve().parents[1] / "helpers"

pytestmark = pytest.mark.skipif(not MACHCTL.exists(), reason="machctl not built")


@pytest.fixture
def criu_machd(bus, tmp_path, leaders, criu_cmd, monkeypatch):
    """machd with MK_CRIU set (it runs the dumps and starts the restoring spawns)."""
    from conftest import Machd
    monkeypatch.setenv("MK_CRIU", criu_cmd)
    d = Machd(bus, tmp_path / "machines", pool=tmp_path / "pool", extra_args=["--spawn-path=%s" % SPAWN, "--log-dir=%s" % (tmp_path / "logs")])
    d.start()
    yield d
    names = []
    r = bus.busctl("--json=short", "call", "org.freedesktop.machine1", "/org/freedesktop/machine1",
                   "org.freedesktop.machine1.Manager", "ListMachines", check=False)
    if r.returncode == 0:
        names = [m[0] for m in json.loads(r.stdout)["data"][0] if m[0] != ".host"]
    for n in names:
        bus.busctl("call", "org.freedesktop.machine1", "/org/freedesktop/machine1",
                   "org.freedesktop.machine1.Manager", "KillMachine", "sss", n, "all", "9", check=False)
    d.stop()
    cleanup_machine_cgroups(names + list(d.created))


def machctl(bus, *args, check=None):
    r = subprocess.run([str(MACHCTL)] + [str(a) for a in args], capture_output=True, text=True, env=bus.env(),
                       stdin=subprocess.DEVNULL, timeout=120)
    if check is not None:
        assert r.returncode == check, "machctl %s -> %d\n%s%s" % (" ".join(map(str, args)), r.returncode, r.stdout, r.stderr)
    return r


@pytest.fixture
def tree(tmp_path):
    d = tmp_path / "crtree"
    subprocess.run([str(HELPERS / "busybox-tree.sh"), str(d)], check=True)
    return d


class Containers:
    def __init__(self, bus):
        self.bus, self.procs = bus, []

    def start(self, tree, name, script, extra=()):
        # stdin a pipe, as a supervisor gives it: criu recreates pipes (a host /dev/null is an
        # external file, also handled; see test_stdio_devnull).
        p = subprocess.Popen([str(SPAWN), "-q", "-P", "-D", str(tree), "-M", name, *extra, "--",
                              "/bin/sh", "-c", "echo ready; " + script],
                             env=self.bus.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.PIPE)
        self.procs.append(p)
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        return p

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


@pytest.fixture
def containers(bus, criu_machd):
    c = Containers(bus)
    yield c
    c.cleanup()


def names(bus):
    return [m["machine"] for m in json.loads(machctl(bus, "list", "-o", "json", check=0).stdout)]


def shell(bus, name, cmd):
    return machctl(bus, "shell", name, "/bin/sh", "-c", cmd, check=0).stdout


COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /run/count; sleep 0.05; done"


def test_counter_keeps_its_count(bus, containers, tree, tmp_path):
    p = containers.start(tree, "cr-count", COUNTER)
    assert wait_for(lambda: int(shell(bus, "cr-count", "cat /run/count") or 0) >= 3)
    img = tmp_path / "img"
    machctl(bus, "checkpoint", "cr-count", img, check=0)
    assert p.wait(10) != 0  # criu stopped the container: spawn saw its PID 1 die
    assert wait_for(lambda: "cr-count" not in names(bus))
    dumped = int(json.loads((img / "machkit-checkpoint.json").read_text())["format"])
    assert dumped == 1
    machctl(bus, "restore", img, check=0)
    assert "cr-count" in names(bus)
    # /run is the container's tmpfs: the count lives only in the restored processes' world.
    first = int(shell(bus, "cr-count", "cat /run/count"))
    assert first >= 3
    assert wait_for(lambda: int(shell(bus, "cr-count", "cat /run/count")) > first)


def count_of(bus, name):
    out = shell(bus, name, "cat /run/count 2>/dev/null").strip()
    return int(out) if out else 0


def test_leave_running_then_restore_under_another_name_is_refused_while_the_original_runs(bus, containers, tree,
                                                                                          tmp_path):
    p = containers.start(tree, "cr-keep", COUNTER)
    assert wait_for(lambda: count_of(bus, "cr-keep") >= 2)
    img = tmp_path / "img"
    machctl(bus, "checkpoint", "--leave-running", "cr-keep", img, check=0)
    assert p.poll() is None and "cr-keep" in names(bus)
    before = count_of(bus, "cr-keep")
    assert wait_for(lambda: count_of(bus, "cr-keep") > before)  # still counting
    # Same name: taken. Another name: the tree is still the original's.
    r = machctl(bus, "restore", img)
    assert r.returncode != 0 and "already exists" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = machctl(bus, "restore", img, "cr-keep2")
    assert r.returncode != 0 and "in use by a running container" in r.stderr, r.stderr
    assert "cr-keep2" not in names(bus) and p.poll() is None
    # Once the original is gone, the copy comes back at the dumped count (or later), not from 0.
    p.kill()
    p.wait()
    assert wait_for(lambda: "cr-keep" not in names(bus))
    machctl(bus, "restore", img, "cr-keep2", check=0)
    assert count_of(bus, "cr-keep2") >= 2


def test_bad_directories_are_refused_and_leave_nothing(bus, containers, tree, tmp_path):
    r = machctl(bus, "restore", tmp_path / "missing")
    assert r.returncode != 0 and "does not exist" in r.stderr, r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = machctl(bus, "restore", empty)
    assert r.returncode != 0 and "not a machkit checkpoint" in r.stderr, r.stderr

    p = containers.start(tree, "cr-bad", COUNTER)
    img = tmp_path / "img"
    exists = tmp_path / "exists"
    exists.mkdir()
    r = machctl(bus, "checkpoint", "cr-bad", exists)
    assert r.returncode != 0 and "already exists" in r.stderr, r.stderr
    # This kernel has no soft-dirty tracking (/proc/config.gz): pre-dump is refused in one line.
    r = machctl(bus, "checkpoint", "--pre-dump", "cr-bad", img)
    assert r.returncode != 0 and "CONFIG_MEM_SOFT_DIRTY" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not img.exists() and p.poll() is None
    r = machctl(bus, "checkpoint", "cr-nope", img)
    assert r.returncode != 0 and not img.exists()
    machctl(bus, "checkpoint", "cr-bad", img, check=0)
    p.wait(10)
    assert wait_for(lambda: "cr-bad" not in names(bus))

    partial = tmp_path / "partial"
    shutil.copytree(img, partial)
    next(partial.glob("core-*.img")).unlink()
    r = machctl(bus, "restore", partial)
    assert r.returncode != 0 and "is incomplete" in r.stderr, r.stderr

    tampered = tmp_path / "tampered"
    shutil.copytree(img, tampered)
    core = next(tampered.glob("core-*.img"))
    data = bytearray(core.read_bytes())
    data[len(data) // 2] ^= 0xff
    core.write_bytes(bytes(data))
    r = machctl(bus, "restore", tampered)
    assert r.returncode != 0 and "is damaged" in r.stderr and core.name in r.stderr, r.stderr

    bad_json = tmp_path / "badjson"
    shutil.copytree(img, bad_json)
    (bad_json / "machkit-checkpoint.json").write_text("{")
    r = machctl(bus, "restore", bad_json)
    assert r.returncode != 0 and "not a usable machkit checkpoint" in r.stderr, r.stderr
    assert names(bus) == []
    # The good copy still restores after all that.
    machctl(bus, "restore", img, check=0)
    assert count_of(bus, "cr-bad") > 0


def test_tcp_connection_survives_with_tcp_established(bus, containers, tree, tmp_path):
    # The listener reads a pipe that never ends: nc stops at EOF on its stdin (a background job's is /dev/null).
    script = ("sleep 100000 | nc -l -p 5000 > /run/got & sleep 0.2; "
              "(i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done) | nc 127.0.0.1 5000 & "
              "wait")
    p = containers.start(tree, "cr-tcp", script, extra=["--private-network"])
    lines = lambda: len(shell(bus, "cr-tcp", "cat /run/got").split())
    assert wait_for(lambda: lines() >= 3)
    # Without the flag criu refuses the established connection, and the machine runs on.
    r = machctl(bus, "checkpoint", "cr-tcp", tmp_path / "no")
    assert r.returncode != 0 and "runs on" in r.stderr and not (tmp_path / "no").exists(), r.stderr
    assert p.poll() is None
    img = tmp_path / "img"
    machctl(bus, "checkpoint", "--tcp-established", "cr-tcp", img, check=0)
    p.wait(10)
    assert wait_for(lambda: "cr-tcp" not in names(bus))
    machctl(bus, "restore", img, check=0)
    seen = lines()
    assert wait_for(lambda: lines() > seen + 2)  # the same connection carries on
    assert shell(bus, "cr-tcp", "pidof nc | wc -w").strip() == "2"


def reach(addr, port=7000):
    """The host talks to the container's server (one "hi" per connection)."""
    with socket.create_connection((addr, port), timeout=5) as c:
        return c.recv(16)


def test_veth_container_restores_with_its_address(bus, containers, tree, tmp_path):
    p = containers.start(tree, "cr-veth", "while true; do echo hi | nc -l -p 7000; done", extra=["--network-veth"])
    addrs = json.loads(machctl(bus, "list", "-o", "json", "--max-addresses=all", check=0).stdout)
    addr = next(m for m in addrs if m["machine"] == "cr-veth")["addresses"].split("\n")[0]
    assert wait_for(lambda: shell(bus, "cr-veth", "netstat -ltn | grep -c :7000").strip() == "1")
    assert reach(addr) == b"hi\n"
    img = tmp_path / "img"
    machctl(bus, "checkpoint", "cr-veth", img, check=0)
    p.wait(10)
    assert wait_for(lambda: "cr-veth" not in names(bus))
    assert subprocess.run(["ip", "link", "show", "ve-cr-veth"], capture_output=True).returncode != 0
    machctl(bus, "restore", img, check=0)
    assert addr in shell(bus, "cr-veth", "ip -4 addr show host0")
    assert wait_for(lambda: shell(bus, "cr-veth", "netstat -ltn | grep -c :7000").strip() == "1")
    assert reach(addr) == b"hi\n"
    # systemd 252's machinectl lists the restored machine too (machined's wire format).
    # (in a mount namespace whose /run/systemd looks booted, as tests/bus/test_conformance.py does).
    if shutil.which("machinectl"):
        sh = ("mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system /run/systemd/machines && "
              "mount --bind %s /run/systemd/machines && exec machinectl --no-pager list" % (tmp_path / "machines"))
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", sh], capture_output=True,
                           text=True, env=bus.env())
        assert any(l.split()[:2] == ["cr-veth", "container"] for l in r.stdout.splitlines()), r.stdout + r.stderr



def uid_map_of(bus, name):
    return " ".join(shell(bus, name, "cat /proc/self/uid_map").split())


def test_private_user_namespace_container_keeps_its_count_and_map(bus, containers, tree, tmp_path):
    # -U (docs/criu.md, "-U"): spawn builds /dev from inside the user namespace, so its mounts are
    # not locked there and criu binds /dev alone to archive it; its device nodes are binds of the
    # host's, external to criu. On the host's network the restore binds a fresh sysfs made outside
    # (root in the user namespace may not mount one). The image directory is lent to the
    # container's root during the restore and is host root's again afterwards.
    name = "cr-userns"
    p = containers.start(tree, name, COUNTER, extra=["-U"])
    assert wait_for(lambda: count_of(bus, name) >= 3)
    uid_map = uid_map_of(bus, name)
    assert uid_map.split()[0] == "0" and uid_map.split()[1] != "0", uid_map
    img = tmp_path / "img"
    machctl(bus, "checkpoint", name, img, check=0)
    p.wait(10)
    assert wait_for(lambda: name not in names(bus))
    # criu remakes the mounts inside the user namespace, unlocked: refused unless accepted, in one
    # line, before anything runs.
    r = machctl(bus, "restore", img)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--unlocked-mounts" in r.stderr and "user namespace of its own (-U)" in r.stderr, r.stderr
    assert name not in names(bus)
    machctl(bus, "restore", "--unlocked-mounts", img, check=0)
    assert name in names(bus)
    st = os.stat(img)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o700), st
    assert [f.name for f in img.iterdir() if os.stat(f).st_uid != 0] == []
    first = count_of(bus, name)
    assert first >= 3
    assert wait_for(lambda: count_of(bus, name) > first)
    assert uid_map_of(bus, name) == uid_map
    # The masks and read-only mounts are back in place, and the device nodes work.
    assert shell(bus, name, "cat /proc/kallsyms | wc -c").strip() == "0"
    assert "Read-only" in shell(bus, name, "{ echo 1 > /proc/sys/kernel/domainname; } 2>&1; true")
    assert shell(bus, name, "echo x > /dev/null && head -c 4 /dev/urandom | wc -c").strip() == "4"
    # What --unlocked-mounts accepts, measured: root inside may now unmount them.
    out = shell(bus, name, "umount -l /proc/sys && echo unmounted; true")
    assert out.strip() == "unmounted", out


def test_private_user_namespace_veth_container_restores_with_its_address(bus, containers, tree, tmp_path):
    # -U with --network-veth (docs/criu.md, "-U"): criu cannot make the pair from inside the
    # restored user namespace, so machkit makes it on the host and criu's usernsd moves the
    # container's end in (netdev[]), with its name and index; criu restores the addresses inside,
    # machkit those of the host's end.
    name = "cr-userns-v"
    p = containers.start(tree, name, "while true; do echo hi | nc -l -p 7000; done & " + COUNTER,
                         extra=["-U", "--network-veth"])
    assert wait_for(lambda: count_of(bus, name) >= 3)
    addrs = json.loads(machctl(bus, "list", "-o", "json", "--max-addresses=all", check=0).stdout)
    addr = next(m for m in addrs if m["machine"] == name)["addresses"].split("\n")[0]
    assert wait_for(lambda: shell(bus, name, "netstat -ltn | grep -c :7000").strip() == "1")
    assert reach(addr) == b"hi\n"
    uid_map = uid_map_of(bus, name)
    img = tmp_path / "img"
    machctl(bus, "checkpoint", name, img, check=0)
    p.wait(10)
    assert wait_for(lambda: name not in names(bus))
    assert subprocess.run(["ip", "link", "show", "ve-" + name], capture_output=True).returncode != 0
    machctl(bus, "restore", "--unlocked-mounts", img, check=0)
    assert name in names(bus)
    first = count_of(bus, name)
    assert first >= 3
    assert wait_for(lambda: count_of(bus, name) > first)
    assert uid_map_of(bus, name) == uid_map
    assert addr in shell(bus, name, "ip -4 addr show host0")
    assert wait_for(lambda: shell(bus, name, "netstat -ltn | grep -c :7000").strip() == "1")
    assert reach(addr) == b"hi\n"
    # machkit's temporary end is gone: it is the container's host0 now.
    assert "mkrst-" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def test_private_user_namespace_with_a_private_network_keeps_its_count(bus, containers, tree, tmp_path):
    # -U with --private-network: the network namespace (the container's user namespace's) holds a
    # loopback only, which criu remakes inside.
    name = "cr-userns-p"
    p = containers.start(tree, name, COUNTER, extra=["-U", "--private-network"])
    assert wait_for(lambda: count_of(bus, name) >= 3)
    img = tmp_path / "img"
    machctl(bus, "checkpoint", name, img, check=0)
    p.wait(10)
    assert wait_for(lambda: name not in names(bus))
    machctl(bus, "restore", "--unlocked-mounts", img, check=0)
    first = count_of(bus, name)
    assert first >= 3
    assert wait_for(lambda: count_of(bus, name) > first)
    assert [l.split()[1] for l in shell(bus, name, "ip -o link").splitlines()] == ["lo:"]


def test_private_user_namespace_with_another_link_is_refused_and_runs_on(bus, containers, tree, tmp_path):
    # -U with a link other than the loopback and --network-veth's (here an extra veth) is not
    # measured: refused up front in one line, before criu runs: no directory, the machine runs on.
    name = "cr-userns-x"
    p = containers.start(tree, name, COUNTER, extra=["-U", "--network-veth", "--network-veth-extra=crux0:inner0"])
    assert wait_for(lambda: count_of(bus, name) >= 3)
    img = tmp_path / "img"
    r = machctl(bus, "checkpoint", name, img)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "user namespace of its own (-U) with a link inner0" in r.stderr and "runs on" in r.stderr, r.stderr
    assert not img.exists() and p.poll() is None
    before = count_of(bus, name)
    assert wait_for(lambda: count_of(bus, name) > before)


FORKER = ("i=0; while true; do i=$((i+1)); echo $i > /run/count; "
          "(sh -c 'echo $$ > /run/last' &) ; /bin/true; done")


def test_machine_forking_in_a_loop_is_frozen_as_a_group_and_restored(bus, containers, tree, tmp_path):
    # machd passes criu the machine's cgroup2 group (freeze_cgroup, as runc): criu freezes the
    # group as a whole rather than seizing task by task while new ones are being forked. The dump
    # is consistent: the restored tree goes on counting and forking.
    p = containers.start(tree, "cr-fork", FORKER)
    assert wait_for(lambda: count_of(bus, "cr-fork") >= 20)
    img = tmp_path / "img"
    machctl(bus, "checkpoint", "cr-fork", img, check=0)
    p.wait(10)
    assert wait_for(lambda: "cr-fork" not in names(bus))
    machctl(bus, "restore", img, check=0)
    first = count_of(bus, "cr-fork")
    assert first >= 20
    assert wait_for(lambda: count_of(bus, "cr-fork") > first + 20)
    # The restored tree is in the machine's group, which criu did not leave frozen.
    scope = pathlib.Path("/sys/fs/cgroup/unified/machine.slice/machine-cr\\x2dfork.scope")
    if scope.exists():
        assert "frozen 0" in (scope / "cgroup.events").read_text()


@pytest.fixture(params=["bookworm", "sid"])
def guest_tree(request):
    helper = {"bookworm": "debian-fixture.sh", "sid": "sid-fixture.sh"}[request.param]
    r = subprocess.run([str(HELPERS / helper)], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        pytest.skip("Debian %s fixture unavailable: %s" % (request.param, r.stderr.strip()[-200:]))
    return r.stdout.strip()


def test_booted_guest_is_refused_up_front_and_runs_on(bus, criu_machd, guest_tree, tmp_path):
    # Measured with criu 4.2.1: the bookworm guest's services (systemd 252: logind, ...) run with
    # ProtectHostname=, i.e. UTS namespaces of their own, and criu cannot dump nested UTS namespaces
    # ("Can't dump nested uts namespace"); the sid guest (systemd >= 255, pidfds) the same. machd says
    # so before criu runs, naming a process; the guest runs on.
    p = subprocess.Popen([str(SPAWN), "-x", "-b", "-D", guest_tree, "-M", "cr-deb"], env=bus.env(),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def booted():
            r = machctl(bus, "shell", "cr-deb", "/bin/systemctl", "is-system-running")
            return r.stdout.strip() in ("running", "degraded")
        assert wait_for(booted, timeout=120, interval=0.5)
        img = tmp_path / "img"
        r = machctl(bus, "checkpoint", "cr-deb", img)
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "namespace of its own (nested namespaces" in r.stderr and "runs on" in r.stderr, r.stderr
        assert not img.exists()
        assert p.poll() is None and booted()
    finally:
        p.kill()
        p.wait()


def read_until(fd, needle, timeout=15):
    import select  # noqa: PLC0415
    buf = b""
    end = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < end:
        if select.select([fd], [], [], 0.5)[0]:
            try:
                buf += os.read(fd, 4096)
            except OSError:
                break
    return buf


def test_console_machine_gets_a_new_console_relayed_after_restore(bus, criu_machd, criu_cmd, tree, tmp_path):
    # --console=interactive: the console is a pty of the container's own devpts, its master spawn's.
    # criu dumps it with orphan_pts_master; `spawn --restore` gets the new master and relays it.
    import pty  # noqa: PLC0415
    m1, s1 = pty.openpty()
    p = subprocess.Popen([str(SPAWN), "-q", "--console=interactive", "-D", str(tree), "-M", "cr-tty", "--",
                          "/bin/sh", "-c", "while read l; do echo got:$l; done"], env=bus.env(), stdin=s1,
                         stdout=s1, stderr=subprocess.DEVNULL)
    os.close(s1)
    restored = None
    try:
        assert wait_for(lambda: "cr-tty" in names(bus))
        os.write(m1, b"one\n")
        assert b"got:one" in read_until(m1, b"got:one")
        img = tmp_path / "img"
        machctl(bus, "checkpoint", "cr-tty", img, check=0)
        assert p.wait(10) != 0
        assert json.loads((img / "machkit-checkpoint.json").read_text()).get("orphan_pty") is True
        m2, s2 = pty.openpty()
        restored = subprocess.Popen([str(SPAWN), "--restore=%s" % img, "-M", "cr-tty", "--register=no", "-q",
                                     "--criu=" + criu_cmd], env=bus.env(), stdin=s2, stdout=s2,
                                    stderr=subprocess.PIPE)
        os.close(s2)
        os.write(m2, b"two\n")
        out = read_until(m2, b"got:two", timeout=30)
        assert b"got:two" in out, (out, restored.poll())
        os.close(m2)
    finally:
        os.close(m1)
        for q in (p, restored):
            if q and q.poll() is None:
                q.send_signal(signal.SIGTERM)
                q.wait(10)
