"""machctl against a booted Debian guest (systemd as its PID 1): the cached Debian fixture booted with
`spawn -x -b` (ephemeral: the cache is never modified), registered in machd on the private bus.
wait, shell (exit codes, a pty, systemd inside), poweroff, reboot, login. Root only; skipped when
the fixture cannot be built (no debootstrap or no mirror)."""
import json
import os
import pathlib
import re
import select
import subprocess
import time

import pytest

from conftest import BUILD, machine_cgroups, wait_for

SPAWN = BUILD / "src" / "spawn" / "spawn"
MACHCTL = BUILD / "src" / "machctl" / "machctl"
HELPERS = pathlib.Path(__file__).resolve().parents[1] / "helpers"
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def debian_tree():
    r = subprocess.run([str(HELPERS / "debian-fixture.sh")], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        pytest.skip("Debian fixture unavailable: " + r.stderr.strip()[-200:])
    return r.stdout.strip()


def machctl(bus, *args, timeout=120):
    return subprocess.run([str(MACHCTL)] + [str(a) for a in args], capture_output=True, text=True, env=bus.env(),
                          stdin=subprocess.DEVNULL, timeout=timeout)


class Guest:
    def __init__(self, bus, tree, name):
        self.name = name
        self.p = subprocess.Popen([str(SPAWN), "-x", "-b", "-D", tree, "-M", name], env=bus.env(),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        os.set_blocking(self.p.stdout.fileno(), False)
        self.out = b""

    def pump(self, timeout=0.2):
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        if r:
            data = self.p.stdout.read()
            if data:
                self.out += ANSI.sub(b"", data).replace(b"\r", b"")

    def wait_for(self, pattern, timeout=90):
        rx = re.compile(pattern.encode())
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if rx.search(self.out):
                return True
            if self.p.poll() is not None:
                self.pump(0)
                return bool(rx.search(self.out))
            self.pump()
        return False

    def wait_exit(self, timeout=60):
        end = time.monotonic() + timeout
        while self.p.poll() is None and time.monotonic() < end:
            self.pump()
        self.pump(0)
        return self.p.poll()

    def text(self):
        return self.out.decode(errors="replace")

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


@pytest.fixture
def guests(bus, machd, debian_tree):
    started = []

    def boot(name):
        g = Guest(bus, debian_tree, name)
        started.append(g)
        return g

    yield boot
    for g in started:
        g.kill()


def test_wait_then_shell_into_systemd_guest(bus, guests):
    w = subprocess.Popen([str(MACHCTL), "wait", "--timeout=60", "deb-w"], env=bus.env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    g = guests("deb-w")
    assert w.wait(90) == 0, w.stderr.read()
    assert g.wait_for(r"Reached target [^\n]*multi-user\.target"), g.text()
    r = machctl(bus, "shell", "deb-w", "/bin/sh", "-c", "systemctl is-system-running --wait; exit 3")
    assert r.returncode == 3, r.stderr
    assert r.stdout.strip() in ("running", "degraded"), r.stdout
    assert machctl(bus, "shell", "deb-w", "ls", "/nonexistent").returncode == 2  # ls's own status
    st = machctl(bus, "status", "deb-w").stdout
    assert "OS: Debian GNU/Linux 12 (bookworm)" in st and "systemd" in st
    j = json.loads(machctl(bus, "list", "-o", "json").stdout)
    assert [(m["machine"], m["os"], m["version"]) for m in j] == [("deb-w", "debian", "12")]


def test_poweroff_a_systemd_guest(bus, guests):
    g = guests("deb-p")
    assert g.wait_for(r"Reached target [^\n]*multi-user\.target"), g.text()
    t0 = time.monotonic()
    r = machctl(bus, "poweroff", "--timeout=60", "deb-p")
    assert r.returncode == 0, r.stderr
    assert "did not power off" not in r.stderr, "the guest's systemd should have handled SIGRTMIN+4"
    assert time.monotonic() - t0 < 60
    assert g.wait_exit(30) == 0, g.text()
    assert "Power-Off" in g.text() or "power" in g.text().lower()
    assert wait_for(lambda: not any(c.exists() for c in machine_cgroups("deb-p")), 10)


def test_reboot_a_systemd_guest(bus, guests):
    g = guests("deb-r")
    assert g.wait_for(r"Reached target [^\n]*multi-user\.target"), g.text()
    first = json.loads(machctl(bus, "show", "-o", "json", "deb-r").stdout)["Leader"]
    assert machctl(bus, "reboot", "deb-r").returncode == 0
    assert g.wait_for(r"(?s)Reached target [^\n]*multi-user\.target.*Reached target [^\n]*multi-user\.target", 120), g.text()
    assert g.p.poll() is None, "a reboot restarts the container in place"
    assert machctl(bus, "wait", "--timeout=30", "deb-r").returncode == 0
    second = json.loads(machctl(bus, "show", "-o", "json", "deb-r").stdout)["Leader"]
    assert second != first
    assert machctl(bus, "stop", "--timeout=60", "deb-r").returncode == 0
    assert g.wait_exit(30) == 0


def test_login_says_it_is_not_implemented(bus, guests):
    g = guests("deb-l")
    assert g.wait_for(r"Reached target [^\n]*multi-user\.target"), g.text()
    r = machctl(bus, "login", "deb-l")
    if r.returncode == 0:
        return  # machd gained OpenMachineLogin
    assert r.returncode == 1 and r.stderr.strip() == "Failed to get login PTY: OpenMachineLogin is not implemented by machd"
