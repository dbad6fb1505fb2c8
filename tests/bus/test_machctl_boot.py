"""machctl against a booted Debian guest (systemd as its PID 1): the cached Debian fixture booted with
`spawn -x -b` (ephemeral: the cache is never modified), registered in machd on the private bus.
wait, shell (exit codes, a pty, systemd inside), poweroff, reboot, login (the guest's login(1)). Root only; skipped when
the fixture cannot be built (no debootstrap or no mirror)."""
import json
import os
import pathlib
import re
import select
import shutil
import subprocess
import time

import pytest

from conftest import BUILD, Machd, cleanup_machine_cgroups, machine_cgroups, wait_for

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
    def __init__(self, bus, tree, name, *extra, ephemeral=True):
        self.name = name
        self.p = subprocess.Popen([str(SPAWN), *(["-x"] if ephemeral else []), "-b", "-D", tree, "-M", name, *extra],
                                  env=bus.env(),
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

    def boot(name, *extra, tree=None):
        g = Guest(bus, tree or debian_tree, name, *extra, ephemeral=tree is None)
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
    # wait returned on the guest's READY=1, which systemd sends once start-up has finished: it no
    # longer says "starting" (no --wait here).
    r = machctl(bus, "shell", "deb-w", "/bin/systemctl", "is-system-running")
    assert r.stdout.strip() in ("running", "degraded"), (r.stdout, r.stderr)
    assert g.wait_for(r"Reached target [^\n]*multi-user\.target"), g.text()
    r = machctl(bus, "shell", "deb-w", "/bin/sh", "-c", "systemctl is-system-running --wait; exit 3")
    assert r.returncode == 3, r.stderr
    assert r.stdout.strip() in ("running", "degraded"), r.stdout
    assert machctl(bus, "shell", "deb-w", "ls", "/nonexistent").returncode == 2  # ls's own status
    st = machctl(bus, "status", "deb-w").stdout
    assert "OS: Debian GNU/Linux 12 (bookworm)" in st and "systemd" in st
    j = json.loads(machctl(bus, "list", "-o", "json").stdout)
    assert [(m["machine"], m["os"], m["version"]) for m in j] == [("deb-w", "debian", "12")]


def test_wait_for_a_guest_machd_started(bus, debian_tree, tmp_path):
    """StartMachine (no systemd on the host): machd runs spawn -b -U on a pool copy of the fixture;
    machctl wait, subscribed before the machine even exists, returns once the guest's systemd has
    sent READY=1 (relayed by spawn to machd's SetMachineReady)."""
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("host runs systemd: start goes to spawn@.service")
    pool = tmp_path / "pool"
    pool.mkdir()
    # A copy: -U may take the tree's ownership into the machine's range; the cache stays as it is.
    subprocess.run(["cp", "-a", "--reflink=auto", debian_tree, str(pool / "deb-sm")], check=True)
    d = Machd(bus, tmp_path / "machines", extra_args=["--spawn-path=%s" % SPAWN, "--machines-dir=%s" % pool,
                                                      "--log-dir=%s" % (tmp_path / "logs")])
    d.start()
    w = None
    try:
        w = subprocess.Popen([str(MACHCTL), "wait", "--timeout=150", "deb-sm"], env=bus.env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        r = machctl(bus, "start", "--timeout=60", "deb-sm")
        assert r.returncode == 0, r.stderr
        assert w.wait(180) == 0, w.stderr.read()
        r = machctl(bus, "shell", "deb-sm", "/bin/systemctl", "is-system-running")
        assert r.stdout.strip() in ("running", "degraded"), (r.stdout, r.stderr)
        # Ready stays ready, for any later caller, also an unprivileged one.
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(MACHCTL), "wait",
                            "--timeout=10", "deb-sm"], capture_output=True, text=True, env=bus.env(), timeout=30)
        assert r.returncode == 0, r.stderr
        r = machctl(bus, "poweroff", "--timeout=60", "deb-sm")
        assert r.returncode == 0, r.stderr
    finally:
        if w and w.poll() is None:
            w.kill()
            w.wait()
        d.stop()
        cleanup_machine_cgroups(["deb-sm"])  # spawn is not our child: its scope ends it if still there
        shutil.rmtree(pool / "deb-sm", ignore_errors=True)


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


def test_login_gives_a_login_prompt(bus, guests):
    import pty
    g = guests("deb-l")
    assert g.wait_for(r"Reached target [^\n]*multi-user\.target"), g.text()
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(bus.env())
        os.environ["TERM"] = "dumb"
        os.execv(str(MACHCTL), [str(MACHCTL), "login", "deb-l"])
    out = b""

    def expect(pattern, timeout=30):
        nonlocal out
        end = time.time() + timeout
        while time.time() < end:
            if re.search(pattern, out):
                return True
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    return bool(re.search(pattern, out))
        return False

    try:
        assert expect(rb"login: "), out
        os.write(fd, b"root\n")
        assert expect(rb"# $|#\s*$|root@"), out  # the fixture's root has an empty password
        os.write(fd, b"echo LOGGED-$((6*7)); tty; exit\n")
        assert expect(rb"LOGGED-42"), out
        assert expect(rb"/dev/pts/\d+"), out
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
        assert b"Connection to machine deb-l terminated" in out or expect(rb"terminated", 5), out
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
    r = machctl(bus, "login", "deb-l")  # no terminal
    assert r.returncode == 1 and "needs a terminal" in r.stderr


class SystemdHost:
    """The booted Debian guest (systemd 252 as PID 1) as a systemd host: the build bound at /opt/mk,
    the project's bus policy and spawn@.service installed, machd started as a transient service (the
    systemd scope backend), `pool_entry` bound at /var/lib/machines/POOL_NAME. guest(...) runs a
    command there through machctl shell; kill() ends the guest."""

    MACHCTL = "/opt/mk/src/machctl/machctl"

    def __init__(self, bus, debian_tree, name, pool_name, pool_entry, machines_target=False):
        root = pathlib.Path(__file__).resolve().parents[2]
        sdbus = next(p for p in ("/lib/x86_64-linux-gnu/libsdbus-c++.so.1", "/usr/lib/x86_64-linux-gnu/libsdbus-c++.so.1")
                     if os.path.exists(p))
        self.bus, self.name = bus, name
        self.g = g = Guest.__new__(Guest)
        g.name, g.out = name, b""
        g.p = subprocess.Popen([str(SPAWN), "-x", "-b", "-D", debian_tree, "-M", name,
                                "--bind-ro=%s:/opt/mk" % BUILD, "--bind-ro=%s:/opt/mkpolicy" % (root / "policy"),
                                "--bind-ro=%s:/usr/lib/x86_64-linux-gnu/libsdbus-c++.so.1" % sdbus,
                                "--bind=%s:/var/lib/machines/%s" % (pool_entry, pool_name)],
                               env=bus.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        os.set_blocking(g.p.stdout.fileno(), False)
        try:
            assert g.wait_for(r"Reached target [^\n]*multi-user\.target"), g.text()
            self.guest("/bin/systemctl", "is-system-running", "--wait", check=False)
            self.guest("/bin/cp", "/opt/mkpolicy/org.freedesktop.machine1.conf", "/etc/dbus-1/system.d/")
            self.guest("/bin/systemctl", "reload", "dbus")
            unit = (root / "units" / "spawn@.service.in").read_text().replace("@bindir@", "/opt/mk/src/spawn")
            guest_root = pathlib.Path("/proc/%d/root" % json.loads(
                machctl(bus, "show", "-o", "json", name).stdout)["Leader"])
            (guest_root / "etc/systemd/system/spawn@.service").write_text(unit)
            if machines_target:
                (guest_root / "etc/systemd/system/machines.target").write_text(
                    (root / "units" / "machines.target").read_text())
            self.guest("/bin/systemctl", "daemon-reload")
            self.guest("/bin/systemd-run", "--unit=machd", "-p", "Type=dbus", "-p", "BusName=org.freedesktop.machine1",
                       "/opt/mk/src/machd/machd")
        except BaseException:
            g.kill()
            raise

    def guest(self, *cmd, check=True, timeout=180):
        r = subprocess.run([str(MACHCTL), "shell", self.name, *cmd], capture_output=True, text=True,
                           env=self.bus.env(), stdin=subprocess.DEVNULL, timeout=timeout)
        if check:
            assert r.returncode == 0, "%s: %s %s" % (cmd, r.stdout, r.stderr)
        return r

    def kill(self):
        self.g.kill()


def test_systemd_path_inside_a_booted_guest(bus, machd, debian_tree, tmp_path):
    """The systemd host path, with the booted Debian guest as the host: machd (systemd scope
    backend) and spawn@.service under the guest's real systemd; machctl start → StartUnit →
    spawn --keep-unit registers; list, shell, enable + machines.target, poweroff."""
    inner = tmp_path / "inner"
    subprocess.run([str(HELPERS / "busybox-tree.sh"), str(inner)], check=True)
    (inner / "sbin" / "init").unlink(missing_ok=True)
    (inner / "sbin" / "init").symlink_to("/bin/busybox")
    (inner / "etc" / "inittab").write_text("::sysinit:/bin/echo booted\n::respawn:/bin/sleep 1000\n")
    host = SystemdHost(bus, debian_tree, "deb-sd", "inner", inner, machines_target=True)
    guest = host.guest
    try:
        mc = "/opt/mk/src/machctl/machctl"

        r = guest(mc, "start", "--timeout=30", "inner")
        # spawn under the unit reports readiness to machd through its helper (busybox init: at the start).
        guest(mc, "wait", "--timeout=30", "inner")
        out = guest(mc, "list", "-o", "json").stdout
        assert [m["machine"] for m in json.loads(out)] == ["inner"], out
        show = guest(mc, "show", "inner").stdout
        assert "Unit=spawn@inner.service" in show, show
        assert guest(mc, "shell", "inner", "/bin/sh", "-c", "exit 4", check=False).returncode == 4
        guest(mc, "poweroff", "-s", "SIGUSR2", "--timeout=20", "inner")
        assert guest("/bin/systemctl", "is-active", "spawn@inner.service", check=False).stdout.strip() == "inactive"
        assert json.loads(guest(mc, "list", "-o", "json").stdout) == []

        # enable + machines.target: what boot would do.
        guest(mc, "enable", "inner")
        guest("/bin/systemctl", "daemon-reload")
        guest("/bin/systemctl", "start", "machines.target")
        guest(mc, "wait", "--timeout=30", "inner")
        guest(mc, "stop", "-s", "SIGUSR2", "--timeout=20", "inner")
        guest(mc, "disable", "inner")
        assert guest("/bin/test", "-e", "/etc/systemd/system/machines.target.wants/spawn@inner.service",
                     check=False).returncode == 1
    finally:
        host.kill()


def journal_has(directory, text):
    r = subprocess.run(["journalctl", "-D", str(directory), "-o", "cat", "--no-pager"], capture_output=True, text=True)
    return text in r.stdout


@pytest.mark.parametrize("mode", ["host", "try-guest", "nspawn-file"])
def test_link_journal_and_status_lines(bus, guests, debian_tree, tmp_path, mode):
    """--link-journal: the guest's journald writes where the host reads it (journalctl -D on the
    host's /var/log/journal/ID: a bind-mounted host directory, or guest mode's symlink into a copy of
    the tree), and machctl status shows the last -n entries, read with sd-journal."""
    import uuid
    mid = uuid.uuid4().hex
    host_dir = pathlib.Path("/var/log/journal") / mid
    name = "deb-j" + mode[:4].replace("-", "")
    g = None
    try:
        # A copy with its own machine ID (the journal directory's name); guest mode keeps the
        # journal in this tree.
        tree = tmp_path / "tree"
        subprocess.run(["cp", "-a", debian_tree, str(tree)], check=True)
        (tree / "etc" / "machine-id").write_text(mid + "\n")
        if mode == "nspawn-file":
            # LinkJournal= of a trusted .nspawn file (next to the tree, trusted by --settings=trusted).
            (tmp_path / (name + ".nspawn")).write_text("[Exec]\nLinkJournal=try-guest\n")
            g = guests(name, "--settings=trusted", tree=str(tree))
        else:
            g = guests(name, "--link-journal=" + mode, tree=str(tree))
        assert machctl(bus, "wait", "--timeout=90", name).returncode == 0, g.text()
        r = machctl(bus, "shell", name, "/bin/sh", "-c", "cat /etc/machine-id; logger -t mkjournal MARKER-" + mid)
        assert r.stdout.split()[0] == mid, r.stdout
        if mode == "host":
            assert host_dir.is_dir() and not host_dir.is_symlink()
        else:
            assert host_dir.is_symlink() and os.readlink(host_dir) == str(tmp_path / "tree" / "var/log/journal" / mid)
        assert wait_for(lambda: journal_has(host_dir, "MARKER-" + mid), 60), g.text()
        assert wait_for(lambda: "MARKER-" + mid in machctl(bus, "status", "-n", "50", name).stdout, 30)
        st = machctl(bus, "status", "--lines=3", name).stdout
        tail = st.split("\n\n")[-1].strip().splitlines()
        assert len(tail) == 3 and all(re.match(r"^\w{3} \d\d \d\d:\d\d:\d\d ", l) for l in tail), st
        assert "\n\n" not in machctl(bus, "status", "-n", "0", name).stdout.strip()
    finally:
        if g:
            g.kill()
        if host_dir.is_symlink():
            host_dir.unlink()
        else:
            shutil.rmtree(host_dir, ignore_errors=True)
