"""spawn registering its containers with machd on a private bus: CreateMachine from the real spawn,
the scope machd makes, and machinectl (systemd 252) seeing the machine. Root only."""
import os
import pathlib
import signal
import subprocess
import time

import pytest

import conftest
from conftest import BUILD, CGROUP_ROOT, machine_cgroups, wait_for
from test_conformance import machinectl

SPAWN = BUILD / "src" / "spawn" / "spawn"
HELPERS = pathlib.Path(__file__).resolve().parents[1] / "helpers"


@pytest.fixture
def tree(tmp_path):
    d = tmp_path / "regtree"
    subprocess.run([str(HELPERS / "busybox-tree.sh"), str(d)], check=True)
    return d


def children(pid):
    try:
        return [int(x) for x in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def start(bus, tree, name, *extra):
    p = subprocess.Popen([str(SPAWN), "-q", "-P", "-D", str(tree), "-M", name, *extra, "--",
                          "/bin/sh", "-c", "cat /proc/self/cgroup; echo ready; exec sleep 1000"],
                         env=bus.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    while True:
        line = p.stdout.readline()
        if not line:
            raise AssertionError("spawn ended: " + p.stderr.read())
        if line.strip() == "ready":
            return p, lines
        lines.append(line.strip())


def test_spawn_creates_its_machine_in_machd(bus, machd, tree):
    p, cgroup_lines = start(bus, tree, "reg1")
    try:
        leader = children(p.pid)[0]
        names = [m[0] for m in bus.call_json("ListMachines")[0]]
        assert "reg1" in names
        path = bus.call_json("GetMachine", "s", "reg1")[0]
        assert bus.get_property(path, "org.freedesktop.machine1.Machine", "Leader") == leader
        assert bus.get_property(path, "org.freedesktop.machine1.Machine", "Class") == "container"
        assert bus.get_property(path, "org.freedesktop.machine1.Machine", "Service") == "systemd-nspawn"
        assert bus.get_property(path, "org.freedesktop.machine1.Machine", "RootDirectory") == str(tree)
        unified = machine_cgroups("reg1")[0]
        assert str(leader) in (unified / "cgroup.procs").read_text().split()
        # The container's cgroup namespace is rooted at the scope machd made.
        assert "0::/" in cgroup_lines
        out = machinectl(bus, machd, "list").stdout
        assert "reg1" in out and "container" in out
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert wait_for(lambda: "reg1" not in [m[0] for m in bus.call_json("ListMachines")[0]])
    assert wait_for(lambda: not any(c.exists() for c in machine_cgroups("reg1")))


def test_booted_guest_lands_in_machds_scope(bus, machd, tree):
    (tree / "sbin" / "init").unlink(missing_ok=True)
    (tree / "sbin" / "init").symlink_to("/bin/busybox")
    (tree / "etc" / "inittab").write_text("::sysinit:/bin/sh -c 'cat /proc/1/cgroup; echo BOOTED'\n"
                                          "::respawn:/bin/sleep 1000\n")
    p = subprocess.Popen([str(SPAWN), "-q", "-b", "-D", str(tree), "-M", "regboot", "--kill-signal=SIGUSR2"],
                         env=bus.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        out = b""
        end = time.monotonic() + 20
        while b"BOOTED" not in out and time.monotonic() < end and p.poll() is None:
            out += os.read(p.stdout.fileno(), 4096)
        assert b"BOOTED" in out, out + p.stderr.read()
        assert b"0::/" in out and b"name=systemd:/" in out, out
        leader = children(p.pid)[0]
        assert str(leader) in (machine_cgroups("regboot")[0] / "cgroup.procs").read_text().split()
        assert str(leader) in (machine_cgroups("regboot")[1] / "cgroup.procs").read_text().split()
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert wait_for(lambda: not any(c.exists() for c in machine_cgroups("regboot")))


def test_register_yes_without_machd_is_one_line_error(bus, tree):
    r = subprocess.run([str(SPAWN), "-q", "-P", "-D", str(tree), "--register=yes", "--", "/bin/true"],
                       env=bus.env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "machd" in lines[0], r.stderr


def test_default_registration_without_machd_just_runs(bus, tree):
    r = subprocess.run([str(SPAWN), "-q", "-P", "-D", str(tree), "--", "/bin/sh", "-c", "echo ran"],
                       env=bus.env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "ran", r.stderr


def test_duplicate_name_is_refused_by_machd(bus, machd, tree, tmp_path):
    p, _ = start(bus, tree, "dup1")
    try:
        other = tmp_path / "other"
        subprocess.run([str(HELPERS / "busybox-tree.sh"), str(other)], check=True)
        # Another spawn process (a different tree, so not our own name lock) with the same name.
        env = bus.env()
        r = subprocess.run(["unshare", "--net", str(SPAWN), "-q", "-P", "-D", str(other), "-M", "dup1", "--", "/bin/true"],
                           env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 1
        assert "dup1" in r.stderr
    finally:
        p.kill()
        p.wait()


def test_machd_restart_readopts_twenty_running_containers(bus, machd, tree):
    # Reliability (issue 8): machd restarted while 20 containers run; all are re-adopted, then
    # each is dropped when its container ends.
    procs = []
    try:
        for i in range(20):
            p = subprocess.Popen([str(SPAWN), "-q", "-P", "--read-only", "-D", str(tree), "-M", f"ra{i}", "--",
                                  "/bin/sh", "-c", "echo ready; exec sleep 1000"],
                                 env=bus.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        before = {m[0]: m for m in bus.call_json("ListMachines")[0] if m[0].startswith("ra")}
        assert len(before) == 20
        leaders = {n: bus.get_property(bus.call_json("GetMachine", "s", n)[0], "org.freedesktop.machine1.Machine", "Leader")
                   for n in before}
        machd.stop()
        machd.start()
        after = {m[0] for m in bus.call_json("ListMachines")[0] if m[0].startswith("ra")}
        assert after == set(before)
        for n, leader in leaders.items():
            path = bus.call_json("GetMachine", "s", n)[0]
            assert bus.get_property(path, "org.freedesktop.machine1.Machine", "Leader") == leader
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert wait_for(lambda: not [m for m in bus.call_json("ListMachines")[0] if m[0].startswith("ra")], timeout=20)
    assert wait_for(lambda: not any(c.exists() for i in range(20) for c in machine_cgroups(f"ra{i}")), timeout=20)


def test_machctl_status_shows_the_guests_veth_address(bus, machd, tree):
    # Issue 7: GetMachineAddresses and machctl status show the guest's addresses. The "host" side
    # is a network namespace of the test's own (unshare --net), never the real host's.
    machctl = BUILD / "src" / "machctl" / "machctl"
    p = subprocess.Popen(["unshare", "--net", "sh", "-c",
                          f"ip link set lo up; exec {SPAWN} -q -P -n -D {tree} -M vethaddr -- "
                          "/bin/sh -c 'while ! ip -4 -o addr show host0 | grep -q inet; do sleep 0.05; done; "
                          "echo ready; exec sleep 100'"],
                         env=bus.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        r = subprocess.run([str(machctl), "status", "vethaddr"], env=bus.env(), capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        addr_lines = [l for l in r.stdout.splitlines() if "Address:" in l]
        assert addr_lines and addr_lines[0].split("Address:")[1].strip().startswith("10."), r.stdout
        r = subprocess.run([str(machctl), "list", "-o", "json"], env=bus.env(), capture_output=True, text=True)
        import json
        m = [x for x in json.loads(r.stdout) if x["machine"] == "vethaddr"][0]
        assert any(a.startswith("10.") for a in m["addresses"].split("\n")), m  # newline-joined, as 252
    finally:
        # Two SIGTERMs (the second kills), so that spawn removes its network records itself.
        p.terminate()
        time.sleep(0.2)
        if p.poll() is None:
            p.terminate()
        p.wait()
