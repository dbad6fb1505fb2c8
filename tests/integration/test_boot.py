"""spawn -b: a real Debian bookworm tree (debootstrap, cached outside the repository) booted with
its own systemd as PID 1, and a busybox init; shutdown, reboot, ephemeral runs and settings files.
Root only. The Debian tree is always booted with --ephemeral, so the cache is never modified."""
import os
import pathlib
import re
import select
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from mkutil import host_mounts  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
ANSI = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]")


class Console:
    """spawn's output, read as it comes, with a wait for a pattern."""

    def __init__(self, argv, **kw):
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
        os.set_blocking(self.p.stdout.fileno(), False)
        os.set_blocking(self.p.stderr.fileno(), False)
        self.out = b""
        self.err = b""

    def pump(self, timeout):
        r, _, _ = select.select([self.p.stdout, self.p.stderr], [], [], timeout)
        for f in r:
            data = f.read()
            if data:
                if f is self.p.stdout:
                    self.out += ANSI.sub(b"", data).replace(b"\r", b"")
                else:
                    self.err += data

    def wait_for(self, pattern, timeout=60):
        end = time.monotonic() + timeout
        rx = re.compile(pattern.encode())
        while time.monotonic() < end:
            if rx.search(self.out):
                return True
            if self.p.poll() is not None:
                self.pump(0.1)
                return bool(rx.search(self.out))
            self.pump(0.2)
        return False

    def wait_exit(self, timeout=60):
        end = time.monotonic() + timeout
        while self.p.poll() is None and time.monotonic() < end:
            self.pump(0.2)
        self.pump(0)
        try:
            return self.p.wait(1)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError("spawn did not exit; output:\n" + self.text())

    def text(self):
        return self.out.decode(errors="replace") + "\n--- stderr ---\n" + self.err.decode(errors="replace")

    def leader(self):
        """The container's PID 1: spawn's child that is not its cgroup reaper."""
        with open(f"/proc/{self.p.pid}/task/{self.p.pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
        for k in kids:
            with open(f"/proc/{k}/comm") as f:
                if f.read().strip() != "spawn-reaper":
                    return k
        raise AssertionError(f"no container process among {kids}")


def nsenter(leader, *cmd, timeout=60):
    return subprocess.run(["nsenter", "-t", str(leader), "-a", "-r", "-w", *cmd],
                          capture_output=True, text=True, timeout=timeout)


def machine_cgroups(name):
    base = pathlib.Path("/sys/fs/cgroup")
    scope = "machine-" + name.replace("-", "\\x2d") + ".scope"
    return [p for p in base.glob(f"*/machine.slice/{scope}")] + [p for p in base.glob(f"machine.slice/{scope}")]


@pytest.fixture
def debian(spawn_bin, debian_tree):
    consoles = []

    def boot(name, *extra):
        c = Console([spawn_bin, "-x", "-b", "-D", str(debian_tree), "-M", name, *extra])
        consoles.append(c)
        return c

    yield boot
    for c in consoles:
        if c.p.poll() is None:
            c.p.kill()
            c.p.wait()


def test_debian_boots_to_multi_user_and_powers_off_on_sigterm(debian, debian_tree):
    before = host_mounts()
    c = debian("deb1")
    assert c.wait_for(r"Reached target [^\n]*multi-user\.target", 90), c.text()
    assert c.wait_for(r"login: ", 30), "no login prompt on the console:\n" + c.text()
    leader = c.leader()
    state = nsenter(leader, "systemctl", "is-system-running", "--wait")
    failed = nsenter(leader, "systemctl", "--failed", "--no-legend", "--plain").stdout
    assert state.stdout.strip() == "running", f"{state.stdout}\nfailed units:\n{failed}\n{c.text()}"
    # The guest sees its own cgroup tree, the hybrid layout nspawn gives it.
    cg = nsenter(leader, "cat", "/proc/1/cgroup").stdout
    assert "0::/init.scope" in cg and "name=systemd:/init.scope" in cg, cg
    mounts = nsenter(leader, "cat", "/proc/self/mountinfo").stdout
    assert re.search(r" /sys/fs/cgroup/systemd rw,.* - cgroup ", mounts), mounts
    assert re.search(r" /sys/fs/cgroup/memory ro,", mounts), mounts
    assert re.search(r" /sys/fs/cgroup ro,", mounts)
    env = nsenter(leader, "cat", "/proc/1/environ").stdout
    assert "container=systemd-nspawn" in env and "NOTIFY_SOCKET=/run/host/notify" in env
    assert nsenter(leader, "cat", "/run/host/container-manager").stdout.strip() == "systemd-nspawn"
    assert machine_cgroups("deb1"), "the machine's scope exists while it runs"

    c.p.send_signal(signal.SIGTERM)
    assert c.wait_exit(60) == 0, c.text()
    assert "Reached target" in c.text() and "shut down" in c.text()
    assert not os.path.exists(f"/proc/{leader}")
    assert host_mounts() == before
    end = time.monotonic() + 10
    while machine_cgroups("bbtree") and time.monotonic() < end:
        time.sleep(0.05)
    assert machine_cgroups("bbtree") == [], "a killed spawn's cgroups are removed by its reaper"
    assert machine_cgroups("deb1") == [], "cgroups left behind"


def test_debian_boots_with_a_unified_cgroup_view(debian):
    # nspawn's $SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1: a pure cgroup2 guest on a hybrid host.
    os.environ["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
    try:
        c = debian("deb3")
    finally:
        del os.environ["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"]
    assert c.wait_for(r"Reached target [^\n]*multi-user\.target", 90), c.text()
    leader = c.leader()
    state = nsenter(leader, "systemctl", "is-system-running", "--wait")
    failed = nsenter(leader, "systemctl", "--failed", "--no-legend", "--plain").stdout
    assert state.stdout.strip() == "running", f"{state.stdout}\nfailed units:\n{failed}"
    assert "0::/init.scope" in nsenter(leader, "cat", "/proc/1/cgroup").stdout.split()
    assert nsenter(leader, "stat", "-f", "-c", "%T", "/sys/fs/cgroup").stdout.strip() == "cgroup2fs"
    c.p.send_signal(signal.SIGTERM)
    assert c.wait_exit(60) == 0, c.text()
    assert machine_cgroups("deb3") == []


def test_guest_poweroff_and_reboot(debian):
    c = debian("deb2")
    assert c.wait_for(r"Reached target [^\n]*multi-user\.target", 90), c.text()
    first = c.leader()
    nsenter(first, "systemctl", "reboot")
    assert c.wait_for(r"(?s)Reached target [^\n]*multi-user\.target.*Reached target [^\n]*multi-user\.target", 90), c.text()
    assert b"is being rebooted" in c.err
    assert c.p.poll() is None, "a guest reboot restarts the container in place"
    second = c.leader()
    assert second != first
    nsenter(second, "systemctl", "poweroff")
    assert c.wait_exit(60) == 0, c.text()
    assert machine_cgroups("deb2") == []


def test_ephemeral_leaves_the_tree_unchanged(spawn_bin, tree):
    r = subprocess.run([spawn_bin, "-q", "-P", "-x", "-D", str(tree), "--", "/bin/sh", "-c",
                        "echo new > /etc/new && rm /etc/os-release && echo $(hostname)"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("bbtree-"), "an ephemeral machine gets a random name suffix"
    assert not (tree / "etc" / "new").exists()
    assert (tree / "etc" / "os-release").exists()


def busybox_init_tree(tree):
    (tree / "sbin" / "init").unlink(missing_ok=True)
    (tree / "sbin" / "init").symlink_to("/bin/busybox")
    (tree / "etc" / "inittab").write_text(
        "::sysinit:/bin/echo BUSYBOX-INIT-UP\n"
        "::respawn:/bin/sh -c 'echo $$ > /run/respawned; exec sleep 1000'\n"
        "::shutdown:/bin/echo BUSYBOX-SHUTDOWN\n")


def test_busybox_init_boot_and_poweroff(spawn_bin, tree):
    busybox_init_tree(tree)
    # busybox init powers off on SIGUSR2; it has no SIGRTMIN+3 handler.
    c = Console([spawn_bin, "-b", "-D", str(tree), "--kill-signal=SIGUSR2"])
    try:
        assert c.wait_for("BUSYBOX-INIT-UP", 20), c.text()
        time.sleep(0.3)
        c.p.send_signal(signal.SIGTERM)
        assert c.wait_exit(30) == 0, c.text()
        assert "BUSYBOX-SHUTDOWN" in c.text()
    finally:
        if c.p.poll() is None:
            c.p.kill()


def test_busybox_init_reboot_restarts(spawn_bin, tree):
    busybox_init_tree(tree)
    c = Console([spawn_bin, "-b", "-D", str(tree), "--kill-signal=SIGUSR2"])
    try:
        assert c.wait_for("BUSYBOX-INIT-UP", 20), c.text()
        first = c.leader()
        time.sleep(0.3)
        os.kill(first, signal.SIGTERM)  # busybox init reboots on SIGTERM
        assert c.wait_for("(?s)BUSYBOX-INIT-UP.*BUSYBOX-INIT-UP", 20), c.text()
        assert b"is being rebooted" in c.err
        c.p.send_signal(signal.SIGTERM)
        assert c.wait_exit(30) == 0, c.text()
    finally:
        if c.p.poll() is None:
            c.p.kill()


def test_untrusted_settings_keys_are_ignored(spawn_bin, tree, tmp_path):
    # A .nspawn file next to the tree is the image's word, not the administrator's.
    (tree.parent / "bbtree.nspawn").write_text(
        "[Exec]\nEnvironment=FROM_FILE=1\nCapability=CAP_SYS_MODULE\nBogus=1\n"
        "[Files]\nBind=/etc:/hostetc\n")
    r = subprocess.run([spawn_bin, "-P", "-D", str(tree), "--", "/bin/sh", "-c",
                        "echo env=$FROM_FILE; ls -d /hostetc 2>&1; grep CapBnd /proc/self/status"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "env=1" in r.stdout
    assert "No such file" in r.stdout
    bnd = int(r.stdout.split("CapBnd:")[1].split()[0], 16)
    assert not bnd & (1 << 16)
    assert "Bind=" in r.stderr and "Capability=" in r.stderr
    # Each warning names its file once (issue 19: it used to be "FILE: FILE: ignoring ...").
    nspawn_file = str(tree.parent / "bbtree.nspawn")
    warnings = [l for l in r.stderr.splitlines() if "ignoring" in l or "Bogus" in l]
    assert len(warnings) >= 3, r.stderr
    for line in warnings:
        assert line.count(nspawn_file) == 1, line
    r = subprocess.run([spawn_bin, "-P", "--settings=trusted", "-D", str(tree), "--", "/bin/sh", "-c",
                        "ls -d /hostetc"], capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "/hostetc", r.stderr


def test_sigkill_of_booting_spawn_kills_the_guest(spawn_bin, tree):
    busybox_init_tree(tree)
    before = host_mounts()
    c = Console([spawn_bin, "-b", "-D", str(tree)])
    assert c.wait_for("BUSYBOX-INIT-UP", 20), c.text()
    leader = c.leader()
    c.p.kill()
    c.p.wait()
    end = time.monotonic() + 10
    while os.path.exists(f"/proc/{leader}") and time.monotonic() < end:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{leader}")
    assert host_mounts() == before
    end = time.monotonic() + 10
    while machine_cgroups("bbtree") and time.monotonic() < end:
        time.sleep(0.05)
    assert machine_cgroups("bbtree") == [], "a killed spawn's cgroups are removed by its reaper"


def test_readiness_is_relayed_to_our_manager(spawn_bin, debian_tree, tmp_path):
    # spawn speaks sd_notify to whoever started it: READY=1 at once, or with --notify-ready=yes only
    # when the guest's PID 1 says READY=1 (what Type=notify units such as spawn@.service rely on).
    import socket
    for notify_ready in ("no", "yes"):
        sock_path = tmp_path / f"notify-{notify_ready}"
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(str(sock_path))
        env = dict(os.environ, NOTIFY_SOCKET=str(sock_path))
        c = Console([spawn_bin, "-x", "-b", "-D", str(debian_tree), "-M", f"notify-{notify_ready}",
                     f"--notify-ready={notify_ready}"], env=env)
        try:
            s.settimeout(60)
            msgs = []
            while not any("READY=1" in m for m in msgs):
                msgs.append(s.recv(4096).decode())
            ready = [m for m in msgs if "READY=1" in m][0]
            assert f"X_NSPAWN_LEADER_PID={c.leader()}" in ready
            if notify_ready == "yes":
                c.pump(0.5)
                assert re.search(rb"Reached target [^\n]*(basic|sysinit)\.target", c.out), "READY came before the guest booted"
            # A systemd that has not installed its handlers yet ignores SIGRTMIN+3, as under nspawn.
            assert c.wait_for(r"Reached target [^\n]*multi-user\.target", 90), c.text()
            c.p.send_signal(signal.SIGTERM)
            assert c.wait_exit(60) == 0
        finally:
            s.close()
            if c.p.poll() is None:
                c.p.kill()
                c.p.wait()
