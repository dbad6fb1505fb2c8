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


@pytest.fixture(scope="module")
def criu_cmd():
    r = subprocess.run([str(HELPERS / "sid-fixture.sh")], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("no Debian sid fixture (criu 4.2): " + r.stderr.strip()[-200:])
    t = r.stdout.strip()
    if not os.path.exists(t + "/usr/sbin/criu"):
        pytest.skip("the sid fixture has no criu")
    return (f"{t}/lib64/ld-linux-x86-64.so.2 --library-path {t}/usr/lib/x86_64-linux-gnu:{t}/lib/x86_64-linux-gnu "
            f"{t}/usr/sbin/criu")


@pytest.fixture
def criu_machd(bus, tmp_path, leaders, criu_cmd, monkeypatch):
    """machd with MK_CRIU set (it runs the dumps and starts the restoring spawns)."""
    from conftest import Machd
    monkeypatch.setenv("MK_CRIU", criu_cmd)
    d = Machd(bus, tmp_path / "machines", pool=tmp_path / "pool", extra_args=["--spawn-path=%s" % SPAWN])
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
