"""A guest whose systemd has no cgroup v1 support (Debian sid, systemd 262; tests/helpers/sid-fixture.sh)
booted with spawn on this hybrid host: it gets a cgroup2 view (a subtree of the host's cgroup2 under the
machine's scope), with -b, -U, -x and --volatile; on a host with no cgroup2 mounted (a private mount
namespace with /sys/fs/cgroup/unified unmounted) spawn mounts cgroup2 itself. Asserted from inside the
guest. The cache is only booted with -x/--volatile or copied. Root only."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from mkutil import host_mounts  # noqa: E402
from test_boot import Console, machine_cgroups, nsenter  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
# systemd 262 holds back its status lines while a getty owns the console, so "Reached target
# multi-user.target" may never reach it: wait for the console's login prompt, then ask systemd.
LOGIN = r"login: "
NOTICE = b"the guest gets a cgroup2 tree"


@pytest.fixture(scope="session")
def sid_tree():
    if os.environ.get("MK_SKIP_DEBIAN"):
        pytest.skip("MK_SKIP_DEBIAN is set")
    r = subprocess.run([str(REPO / "tests" / "helpers" / "sid-fixture.sh")], capture_output=True, text=True,
                       timeout=1800)
    if r.returncode != 0:
        pytest.skip("sid fixture unavailable: " + r.stderr.strip()[-200:])
    return pathlib.Path(r.stdout.strip())


@pytest.fixture
def boot(spawn_bin):
    consoles = []

    def start(argv, **kw):
        c = Console(argv, **kw)
        consoles.append(c)
        return c

    yield start
    for c in consoles:
        if c.p.poll() is None:
            c.p.kill()
            c.p.wait()


def assert_cgroup2_guest(c):
    """From inside: systemd 262 came up, on a cgroup2 /sys/fs/cgroup rooted at the guest's own group."""
    assert c.wait_for(LOGIN, 120), c.text()
    leader = c.leader()
    state = nsenter(leader, "systemctl", "is-system-running", "--wait", timeout=120).stdout.strip()
    assert nsenter(leader, "systemctl", "is-active", "multi-user.target").stdout.strip() == "active"
    failed = nsenter(leader, "systemctl", "--failed", "--no-legend", "--plain").stdout
    assert state in ("running", "degraded"), f"{state}\nfailed units:\n{failed}\n{c.text()}"
    assert nsenter(leader, "stat", "-f", "-c", "%T", "/sys/fs/cgroup").stdout.strip() == "cgroup2fs"
    assert "0::/init.scope" in nsenter(leader, "cat", "/proc/1/cgroup").stdout.split()
    assert "refusing" not in c.text()
    return leader


def test_sid_boots_on_a_hybrid_host(boot, spawn_bin, sid_tree):
    before = host_mounts()
    c = boot([spawn_bin, "-x", "-b", "-D", str(sid_tree), "-M", "sid-b"])
    assert_cgroup2_guest(c)
    scope = "machine-sid\\x2db.scope"
    # On the host: the machine's scope in the host's cgroup2 hierarchy, and no v1 placement.
    assert pathlib.Path(f"/sys/fs/cgroup/unified/machine.slice/{scope}/init.scope").is_dir()
    assert not pathlib.Path(f"/sys/fs/cgroup/systemd/machine.slice/{scope}").exists()
    assert c.err.count(NOTICE) == 1, c.err  # the missing controllers said once, in one line
    c.p.send_signal(signal.SIGTERM)
    assert c.wait_exit(90) == 0, c.text()
    assert machine_cgroups("sid-b") == []
    assert host_mounts() == before


def test_sid_boots_in_a_user_namespace(boot, spawn_bin, sid_tree, tmp_path):
    copy = tmp_path / "sid"
    subprocess.run(["cp", "-a", "--reflink=auto", str(sid_tree), str(copy)], check=True)
    c = boot([spawn_bin, "-b", "-U", "-D", str(copy), "-M", "sid-u"])
    leader = assert_cgroup2_guest(c)
    uid_map = pathlib.Path(f"/proc/{leader}/uid_map").read_text().split()
    assert uid_map[0] == "0" and int(uid_map[1]) >= 0x80000, uid_map
    # The guest's systemd manages its delegated subtree as root of its user namespace.
    r = nsenter(leader, "systemd-run", "--wait", "-q", "-p", "TasksMax=40", "/bin/true")
    assert r.returncode == 0, r.stderr
    c.p.send_signal(signal.SIGTERM)
    assert c.wait_exit(90) == 0, c.text()
    assert machine_cgroups("sid-u") == []


@pytest.mark.parametrize("mode", ["yes", "state", "overlay"])
def test_sid_boots_volatile(boot, spawn_bin, sid_tree, mode):
    # --volatile=yes starts with an empty /etc, a first boot: systemd-firstboot would ask for a time
    # zone on the console (under nspawn too). PID 1's arguments are a container's kernel command line.
    c = boot([spawn_bin, "-b", f"--volatile={mode}", "-D", str(sid_tree), "-M", f"sid-v{mode[0]}",
              "systemd.firstboot=off"])
    leader = assert_cgroup2_guest(c)
    where, expect = {"yes": ("/", "tmpfs"), "state": ("/var", "tmpfs"), "overlay": ("/", "overlayfs")}[mode]
    assert nsenter(leader, "stat", "-f", "-c", "%T", where).stdout.strip() == expect
    c.p.send_signal(signal.SIGTERM)
    assert c.wait_exit(90) == 0, c.text()
    assert machine_cgroups(f"sid-v{mode[0]}") == []


def test_sid_guest_reboot_and_poweroff_from_inside(boot, spawn_bin, sid_tree):
    c = boot([spawn_bin, "-x", "-b", "-D", str(sid_tree), "-M", "sid-r"])
    first = assert_cgroup2_guest(c)
    nsenter(first, "systemctl", "reboot")
    assert c.wait_for(f"(?s){LOGIN}.*{LOGIN}", 120), c.text()
    assert c.p.poll() is None, "a guest reboot restarts the container in place"
    second = c.leader()
    assert second != first
    assert nsenter(second, "stat", "-f", "-c", "%T", "/sys/fs/cgroup").stdout.strip() == "cgroup2fs"
    nsenter(second, "systemctl", "poweroff")
    assert c.wait_exit(90) == 0, c.text()
    assert machine_cgroups("sid-r") == []


def test_v1_override_is_refused_for_sid(spawn_bin, sid_tree):
    before = host_mounts()
    env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="0")
    r = subprocess.run([spawn_bin, "-x", "-b", "-D", str(sid_tree), "-M", "sid-0"], env=env,
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "systemd 262" in lines[0] and "unset it" in lines[0], r.stderr
    assert machine_cgroups("sid-0") == [] and host_mounts() == before
    env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "maybe"
    r = subprocess.run([spawn_bin, "-x", "-b", "-D", str(sid_tree), "-M", "sid-0"], env=env,
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode != 0 and "is not a boolean" in r.stderr, r.stderr


def test_sid_on_a_host_without_cgroup2(boot, spawn_bin, sid_tree):
    """A pure v1 host: in a private mount namespace whose /sys/fs/cgroup/unified is unmounted, spawn
    mounts cgroup2 itself (detached, attached nowhere). The hierarchy is the kernel's one cgroup2
    tree, so the host's own mount shows the machine's group while it runs."""
    script = f"umount /sys/fs/cgroup/unified && grep -q ' /sys/fs/cgroup/unified ' /proc/self/mountinfo && exit 99; " \
             f"exec {spawn_bin} -x -b -D {sid_tree} -M sid-v1host"
    c = boot(["unshare", "-m", "--propagation", "private", "sh", "-c", script])
    assert_cgroup2_guest(c)
    assert pathlib.Path("/sys/fs/cgroup/unified/machine.slice/machine-sid\\x2dv1host.scope/init.scope").is_dir()
    mounts = pathlib.Path(f"/proc/{c.p.pid}/mountinfo").read_text()
    assert " - cgroup2 " not in mounts, "spawn's cgroup2 mount is attached nowhere"
    assert c.err.count(NOTICE) == 1, c.err
    c.p.send_signal(signal.SIGTERM)
    assert c.wait_exit(90) == 0, c.text()
    end = time.monotonic() + 10
    while machine_cgroups("sid-v1host") and time.monotonic() < end:
        time.sleep(0.1)
    assert machine_cgroups("sid-v1host") == []


def test_override_zero_keeps_bookworm_on_the_hybrid_view(boot, spawn_bin, debian_tree):
    # systemd 252 still runs on the hybrid layout (its default here): =0 is accepted for it.
    c = boot([spawn_bin, "-x", "-b", "-D", str(debian_tree), "-M", "deb-hy"],
             env=dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="0"))
    assert c.wait_for(r"Reached target [^\n]*multi-user\.target", 90), c.text()
    leader = c.leader()
    assert nsenter(leader, "systemctl", "is-system-running", "--wait").stdout.strip() == "running"
    cg = nsenter(leader, "cat", "/proc/1/cgroup").stdout
    assert "0::/init.scope" in cg and "name=systemd:/init.scope" in cg, cg
    assert nsenter(leader, "stat", "-f", "-c", "%T", "/sys/fs/cgroup").stdout.strip() == "tmpfs"
    assert NOTICE not in c.err
    c.p.send_signal(signal.SIGTERM)
    assert c.wait_exit(60) == 0, c.text()
    assert machine_cgroups("deb-hy") == []
