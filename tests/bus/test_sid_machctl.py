"""machctl with a guest whose systemd has no cgroup v1 support (Debian sid, systemd 262), on this
hybrid host: booted by machd's StartMachine (spawn -b -U on a pool copy), and booted by spawn -x -b
and registered; poweroff and reboot through machd. Asserted from inside. Root only; skipped when the
sid fixture cannot be built."""
import json
import os
import pathlib
import shutil
import subprocess

import pytest

from conftest import BUILD, Machd, cleanup_machine_cgroups, machine_cgroups, wait_for
from test_machctl_boot import HELPERS, MACHCTL, SPAWN, Guest, SystemdHost, debian_tree, machctl  # noqa: F401 (fixture)

# systemd 262 holds back its status lines while a getty owns the console: the login prompt says
# the guest is up; systemd itself is asked from inside.
LOGIN = r"login: "


@pytest.fixture(scope="module")
def sid_tree():
    if os.environ.get("MK_SKIP_DEBIAN"):
        pytest.skip("MK_SKIP_DEBIAN is set")
    r = subprocess.run([str(HELPERS / "sid-fixture.sh")], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        pytest.skip("sid fixture unavailable: " + r.stderr.strip()[-200:])
    return r.stdout.strip()


@pytest.fixture
def sid_guest(bus, machd, sid_tree):
    started = []

    def boot(name):
        g = Guest(bus, sid_tree, name)
        started.append(g)
        return g

    yield boot
    for g in started:
        g.kill()


def inside(bus, name, *cmd):
    return machctl(bus, "shell", name, *cmd)


def assert_cgroup2_systemd(bus, name):
    r = inside(bus, name, "/bin/systemctl", "is-system-running", "--wait")
    assert r.stdout.strip() in ("running", "degraded"), (r.stdout, r.stderr)
    assert inside(bus, name, "/bin/systemctl", "is-active", "multi-user.target").stdout.strip() == "active"
    assert inside(bus, name, "/usr/bin/stat", "-f", "-c", "%T", "/sys/fs/cgroup").stdout.strip() == "cgroup2fs"
    assert "0::/init.scope" in inside(bus, name, "/bin/cat", "/proc/1/cgroup").stdout.split()


def test_start_sid_through_machd(bus, sid_tree, tmp_path):
    """StartMachine (no systemd on the host): machd runs spawn -b -U on a pool copy of the sid tree."""
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("host runs systemd: start goes to spawn@.service")
    pool = tmp_path / "pool"
    pool.mkdir()
    subprocess.run(["cp", "-a", "--reflink=auto", sid_tree, str(pool / "sid-sm")], check=True)
    d = Machd(bus, tmp_path / "machines", extra_args=["--spawn-path=%s" % SPAWN, "--machines-dir=%s" % pool,
                                                      "--log-dir=%s" % (tmp_path / "logs")])
    d.start()
    try:
        r = machctl(bus, "start", "--timeout=60", "sid-sm")
        assert r.returncode == 0, r.stderr
        r = machctl(bus, "wait", "--timeout=150", "sid-sm")
        logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*")) \
            if (tmp_path / "logs").is_dir() else ""
        assert r.returncode == 0, r.stderr + logs
        assert_cgroup2_systemd(bus, "sid-sm")
        st = machctl(bus, "status", "sid-sm").stdout
        assert "Debian GNU/Linux" in st and "sid" in st, st
        # The scope machd made holds the guest in the host's cgroup2 hierarchy.
        assert pathlib.Path("/sys/fs/cgroup/unified/machine.slice/machine-sid\\x2dsm.scope/init.scope").is_dir()
        r = machctl(bus, "poweroff", "--timeout=60", "sid-sm")
        assert r.returncode == 0, r.stderr
        assert wait_for(lambda: json.loads(machctl(bus, "list", "-o", "json").stdout) == [], 60)
    finally:
        d.stop()
        cleanup_machine_cgroups(["sid-sm"])
        shutil.rmtree(pool / "sid-sm", ignore_errors=True)


def test_poweroff_sid(bus, sid_guest):
    g = sid_guest("sid-p")
    assert g.wait_for(LOGIN, 120), g.text()
    assert machctl(bus, "wait", "--timeout=60", "sid-p").returncode == 0
    assert_cgroup2_systemd(bus, "sid-p")
    r = machctl(bus, "poweroff", "--timeout=60", "sid-p")
    assert r.returncode == 0, r.stderr
    assert "did not power off" not in r.stderr, "systemd 262 should have handled SIGRTMIN+4"
    assert g.wait_exit(60) == 0, g.text()
    assert wait_for(lambda: not any(c.exists() for c in machine_cgroups("sid-p")), 10)


def test_reboot_sid(bus, sid_guest):
    g = sid_guest("sid-rb")
    assert g.wait_for(LOGIN, 120), g.text()
    first = json.loads(machctl(bus, "show", "-o", "json", "sid-rb").stdout)["Leader"]
    assert machctl(bus, "reboot", "sid-rb").returncode == 0
    assert g.wait_for(f"(?s){LOGIN}.*{LOGIN}", 150), g.text()
    assert g.p.poll() is None, "a reboot restarts the container in place"
    assert machctl(bus, "wait", "--timeout=60", "sid-rb").returncode == 0
    second = json.loads(machctl(bus, "show", "-o", "json", "sid-rb").stdout)["Leader"]
    assert second != first
    assert_cgroup2_systemd(bus, "sid-rb")
    assert machctl(bus, "stop", "--timeout=60", "sid-rb").returncode == 0
    assert g.wait_exit(60) == 0


def test_sid_under_spawn_at_service(bus, machd, debian_tree, sid_tree, tmp_path):
    """spawn@.service boots the sid guest under a real systemd on a hybrid host: the Debian 12 guest
    (hybrid cgroup view, systemd 252 as PID 1) runs machd and the project's spawn@.service, and
    `machctl start` there boots a copy of the sid tree with spawn --keep-unit -b -U. Its systemd 262
    gets the cgroup2 subtree of the unit's delegated group. Asserted from inside the inner guest."""
    inner = tmp_path / "inner"
    subprocess.run(["cp", "-a", "--reflink=auto", sid_tree, str(inner)], check=True)
    mc = SystemdHost.MACHCTL
    host = None
    try:
        host = SystemdHost(bus, debian_tree, "deb-sidsd", "sid", inner)
        guest = host.guest
        # The pool is root-only, as tmpfiles makes it on a real system (`Q /var/lib/machines 0700`):
        # spawn -U refuses an idmapped tree that other users can reach (docs/security.md T-14b).
        guest("/bin/chmod", "0700", "/var/lib/machines")
        guest(mc, "start", "--timeout=60", "sid")
        r = guest(mc, "wait", "--timeout=150", "sid", check=False)
        assert r.returncode == 0, r.stderr + guest("/bin/journalctl", "-u", "spawn@sid", "--no-pager", "-n", "60",
                                                   check=False).stdout
        show = guest(mc, "show", "sid").stdout
        assert "Unit=spawn@sid.service" in show, show
        state = guest(mc, "shell", "sid", "/bin/systemctl", "is-system-running", "--wait", check=False).stdout.strip()
        assert state in ("running", "degraded"), state
        assert guest(mc, "shell", "sid", "/usr/bin/stat", "-f", "-c", "%T", "/sys/fs/cgroup").stdout.strip() == "cgroup2fs"
        assert guest(mc, "shell", "sid", "/bin/systemctl", "is-active", "multi-user.target").stdout.strip() == "active"
        # In the Debian guest: the inner guest's cgroup2 tree is the unit's delegated payload group.
        assert guest("/bin/test", "-d", "/sys/fs/cgroup/unified/machine.slice/spawn@sid.service/payload/init.scope",
                     check=False).returncode == 0
        guest(mc, "poweroff", "--timeout=60", "sid")
        assert guest("/bin/systemctl", "is-active", "spawn@sid.service", check=False).stdout.strip() == "inactive"
    finally:
        if host:
            host.kill()
        shutil.rmtree(inner, ignore_errors=True)
