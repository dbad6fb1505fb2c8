"""machd under a real systemd PID 1: the cached Debian bookworm fixture is copied, machd, its unit and
policy are installed into the copy, the copy boots with spawn -b, and inside it a machine
created through machd lands in machine.slice/machine-NAME.scope (systemd's scope backend), survives a
machd restart (re-adoption), and is removed with its scope when its leader exits or on Terminate.

Root only. Needs the fixture under /var/cache/machkit/fixtures
(skips without). Commands run inside the guest with nsenter. The guest is powered off cleanly and
every cgroup made for it removed.

    MK_BUILD_DIR=build /usr/bin/python3 -m pytest -q tests/integration/test_machd_systemd.py
"""
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MK_BUILD_DIR", ROOT / "build")).resolve()
FIXTURES = sorted(glob.glob("/var/cache/machkit/fixtures/debian-bookworm-*/.complete"))
CG = Path("/sys/fs/cgroup")
MGR = ["org.freedesktop.machine1", "/org/freedesktop/machine1", "org.freedesktop.machine1.Manager"]

SPAWN = BUILD / "src/spawn/spawn"
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not FIXTURES or not SPAWN.exists(),
                                reason="needs root, spawn and the Debian fixture")


def remove_cgroup_tree(p):
    if not p.exists():
        return
    for c in [c for c in p.iterdir() if c.is_dir()]:
        remove_cgroup_tree(c)
    for _ in range(200):
        for pid in (p / "cgroup.procs").read_text().split() if (p / "cgroup.procs").exists() else []:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            p.rmdir()
            return
        except OSError:
            time.sleep(0.01)


class Guest:
    def __init__(self, tmp):
        self.tmp = tmp
        self.tree = tmp / "tree"
        subprocess.run(["cp", "-a", str(Path(FIXTURES[-1]).parent), str(self.tree)], check=True)
        lib = self.tree / "usr/lib/x86_64-linux-gnu"
        for so in glob.glob("/usr/lib/x86_64-linux-gnu/libsdbus-c++.so.1*"):
            subprocess.run(["cp", "-a", so, str(lib)], check=True)
        (self.tree / "usr/local/libexec").mkdir(parents=True, exist_ok=True)
        shutil.copy(BUILD / "src/machd/machd", self.tree / "usr/local/libexec/machd")
        shutil.copy(ROOT / "policy/org.freedesktop.machine1.conf", self.tree / "usr/share/dbus-1/system.d/")
        shutil.copy(BUILD / "units/machd.service", self.tree / "etc/systemd/system/machd.service")
        self.cgroups = []
        self.log = open(tmp / "console.log", "wb")
        self.proc = subprocess.Popen([str(SPAWN), "-q", "-b", "-D", str(self.tree), "-M", "mkguest", "--console=pipe"],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        self.init = None
        try:
            self._wait_booted()
        except BaseException:
            self.close()
            raise

    def _wait_booted(self):
        deadline = time.time() + 60
        while time.time() < deadline and self.init is None:
            kids = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
            pids = [int(l.split()[0]) for l in kids.stdout.splitlines() if l.split()[1:] != ["spawn-reaper"]]
            if pids:
                self.init = pids[0]
            time.sleep(0.1)
        assert self.init, (self.tmp / "console.log").read_text()
        state = ""
        while time.time() < deadline:
            # Until PID 1 has its private bus socket, systemctl cannot connect at all.
            r = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=60)
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        raise AssertionError("guest did not boot: " + state)

    def run(self, *cmd, check=True, timeout=30):
        r = subprocess.run(["nsenter", "-t", str(self.init), "-a"] + [str(c) for c in cmd], capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("%s: %s" % (" ".join(map(str, cmd)), r.stderr))
        return r

    def busctl(self, *args, check=True):
        return self.run("busctl", "call", *MGR, *args, check=check)

    def leader(self, unit):
        self.run("systemd-run", "--unit=" + unit, "--service-type=exec", "sleep", "1000")
        return int(self.run("systemctl", "show", "-p", "MainPID", "--value", unit).stdout)

    def close(self):
        if self.init and self.proc.poll() is None:
            os.kill(self.init, signal.SIGRTMIN + 4)  # systemd: poweroff
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for cg in self.cgroups:
            remove_cgroup_tree(cg)
            try:
                cg.parent.rmdir()
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def guest():
    g = Guest(Path(tempfile.mkdtemp(prefix="mk-guest-")))
    try:
        g.run("systemctl", "daemon-reload")
        g.run("systemctl", "start", "machd")
        yield g
    finally:
        g.close()


def test_machd_runs_hardened_with_the_systemd_backend(guest):
    assert guest.run("systemctl", "is-active", "machd").stdout.strip() == "active"
    assert "scope backend systemd" in guest.run("journalctl", "-u", "machd", "--no-pager").stdout
    # The hardened unit still lets machd make its Varlink sockets (mode 0666, as machined's).
    for iface in ("io.systemd.Machine", "io.systemd.MachineImage"):
        st = guest.run("stat", "-c", "%F %a", "/run/systemd/machine/" + iface).stdout.strip()
        assert st == "socket 666", (iface, st)
    assert "not serving Varlink" not in guest.run("journalctl", "-u", "machd", "--no-pager").stdout


def test_create_machine_lands_in_machine_slice_and_goes_with_its_leader(guest):
    pid = guest.leader("leader-a")
    out = guest.busctl("CreateMachine", "sayssusa(sv)", "real-a", 0, "test", "container", pid, "/srv", 1,
                       "TasksMax", "t", 99).stdout
    assert out.strip() == 'o "/org/freedesktop/machine1/machine/real_2da"'
    unit = "machine-real\\x2da.scope"
    show = guest.run("systemctl", "show", "-p", "ActiveState", "-p", "Slice", "-p", "Delegate", "-p", "TasksMax",
                     "-p", "Description", unit).stdout
    assert "ActiveState=active" in show and "Slice=machine.slice" in show and "Delegate=yes" in show
    assert "TasksMax=99" in show  # the caller's property wins over machined's default 16384
    assert "Description=Container real-a" in show
    assert "0::/machine.slice/%s" % unit in guest.run("cat", "/proc/%d/cgroup" % pid).stdout
    assert "LEADER=%d" % pid in guest.run("cat", "/run/systemd/machines/real-a").stdout
    guest.run("kill", pid)
    deadline = time.time() + 10
    while time.time() < deadline and "real-a" in guest.busctl("ListMachines").stdout:
        time.sleep(0.1)
    assert "real-a" not in guest.busctl("ListMachines").stdout
    assert guest.run("systemctl", "is-active", unit, check=False).stdout.strip() in ("inactive", "unknown", "failed")
    assert guest.run("test", "-e", "/run/systemd/machines/real-a", check=False).returncode != 0


def test_restart_readopts_then_terminate_stops_the_scope(guest):
    pid = guest.leader("leader-b")
    guest.busctl("CreateMachine", "sayssusa(sv)", "real-b", 0, "test", "container", pid, "", 0)
    guest.run("systemctl", "restart", "machd")
    assert "real-b" in guest.busctl("ListMachines").stdout
    assert "1 machine(s) re-adopted" in guest.run("journalctl", "-u", "machd", "--no-pager").stdout
    guest.busctl("TerminateMachine", "s", "real-b")
    deadline = time.time() + 10
    while time.time() < deadline and "real-b" in guest.busctl("ListMachines").stdout:
        time.sleep(0.1)
    assert "real-b" not in guest.busctl("ListMachines").stdout
    assert guest.run("kill", "-0", pid, check=False).returncode != 0
