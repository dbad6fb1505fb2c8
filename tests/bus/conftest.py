"""Fixtures for machd bus tests: a private dbus-daemon using the project's real policy file, machd
from the build dir with a temp state dir and the real /sys/fs/cgroup, sleeping leaders, and the
cleanup of every process and cgroup a test made (also on failure).

Needs root (cgroups, bus policy as root) and: dbus-daemon, busctl, setpriv, systemd-container
(machinectl 252) for the conformance tests. MK_BUILD_DIR points at the meson build dir (./build).
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "integration"))  # also for the benches importing us
import mkutil  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MK_BUILD_DIR", ROOT / "build")).resolve()
MACHD = BUILD / "src" / "machd" / "machd"
POLICY = ROOT / "policy" / "org.freedesktop.machine1.conf"
IMPORT_POLICY = ROOT / "policy" / "org.freedesktop.import1.conf"
TRANSFER = BUILD / "src" / "transfer" / "machd-transfer"
CGROUP_ROOT = Path("/sys/fs/cgroup")
DEST = "org.freedesktop.machine1"
MANAGER = "/org/freedesktop/machine1"
IFACE = "org.freedesktop.machine1.Manager"

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path={socket}</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
    <!-- for tests/bus/helpers/fake_systemd1 (the systemd scope backend tests) -->
    <allow own="org.freedesktop.systemd1"/>
    <allow send_destination="org.freedesktop.systemd1"/>
  </policy>
  <include>{policy}</include>
  <include>{import_policy}</include>
{extra}</busconfig>
"""


def machine_path(name):
    """bus_label_escape() as systemd does it."""
    out = []
    for i, ch in enumerate(name.encode()):
        c = chr(ch)
        if c.isascii() and (c.isalpha() or (c.isdigit() and i > 0)):
            out.append(c)
        else:
            out.append("_%02x" % ch)
    return MANAGER + "/machine/" + ("".join(out) or "_")


def unit_escape(name):
    out = []
    for i, ch in enumerate(name.encode()):
        c = chr(ch)
        if c.isascii() and (c.isalnum() or c in ":_" or (c == "." and i > 0)):
            out.append(c)
        else:
            out.append("\\x%02x" % ch)
    return "".join(out)


def scope_of(name):
    return "machine-%s.scope" % unit_escape(name)


class Bus:
    def __init__(self, extra_includes=()):
        """extra_includes: more bus policy files (e.g. polkitd's, for tests/bus/test_polkit.py)."""
        # Not under pytest's 0700 tmp dirs: the socket must be reachable by the unprivileged callers.
        self.tmp = Path(tempfile.mkdtemp(prefix="mk-bus-"))
        os.chmod(self.tmp, 0o755)
        self.socket = self.tmp / "bus.sock"
        self.address = "unix:path=%s" % self.socket
        conf = self.tmp / "bus.conf"
        extra = "".join("  <include>%s</include>\n" % f for f in extra_includes)
        conf.write_text(BUS_CONFIG.format(socket=self.socket, policy=POLICY, import_policy=IMPORT_POLICY, extra=extra))
        self.proc = subprocess.Popen(["dbus-daemon", "--config-file=%s" % conf, "--nofork", "--print-address"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.proc.stdout.readline()  # printed once the socket listens

    def env(self):
        e = dict(os.environ)
        e["DBUS_SYSTEM_BUS_ADDRESS"] = self.address
        return e

    def busctl(self, *args, check=True, user=None, timeout=20):
        args = [str(a) for a in args]
        if "call" in args:  # arguments like "-foo" are not options
            i = args.index("call")
            args = args[:i] + ["--"] + args[i:]
        cmd = ["busctl", "--address=%s" % self.address] + args
        if user is not None:
            cmd = ["setpriv", "--reuid=%d" % user, "--regid=%d" % user, "--clear-groups"] + cmd
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("%s failed: %s" % (" ".join(cmd), r.stderr.strip()))
        return r

    def call(self, method, signature="", *args, **kw):
        parts = ["call", DEST, MANAGER, IFACE, method]
        if signature:
            parts.append(signature)
        return self.busctl(*parts, *args, **kw)

    def call_json(self, method, signature="", *args, **kw):
        import json
        parts = ["--json=short", "call", DEST, MANAGER, IFACE, method]
        if signature:
            parts.append(signature)
        r = self.busctl(*parts, *args, **kw)
        return json.loads(r.stdout)["data"]

    def error_name(self, method, *args, user=None):
        """Calls `method` with dbus-send (which, unlike busctl, prints the error name); None on success."""
        cmd = ["dbus-send", "--bus=%s" % self.address, "--print-reply", "--dest=" + DEST, MANAGER,
               IFACE + "." + method] + list(args)
        if user is not None:
            cmd = ["setpriv", "--reuid=%d" % user, "--regid=%d" % user, "--clear-groups"] + cmd
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        if r.returncode == 0:
            return None
        # "Error org.freedesktop.machine1.NoSuchMachine: No machine 'x' known"
        line = r.stderr.strip().splitlines()[0] if r.stderr.strip() else ""
        return line.split()[1].rstrip(":") if line.startswith("Error ") else line

    def get_property(self, path, iface, prop):
        import json
        r = self.busctl("--json=short", "get-property", DEST, path, iface, prop)
        return json.loads(r.stdout)["data"]

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Machd:
    running = []  # the Machd instances of the current test (create()/register() record names in them)

    def __init__(self, bus, state_dir, cgroup_root=CGROUP_ROOT, stop_timeout=2, extra_args=(), pool=None):
        self.created = set()
        # The import1 transfers' image pool: never the host's /var/lib/machines.
        self.pool = Path(pool) if pool else Path(state_dir).parent / "pool"
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args)
        self.bus = bus
        self.state_dir = Path(state_dir)
        self.cgroup_root = cgroup_root
        self.proc = None
        self.log = bus.tmp / "machd.log"
        # The Varlink sockets: never the host's /run/systemd/machine.
        self.varlink_dir = Path(state_dir).parent / "varlink"

    def start(self):
        Machd.running.append(self)
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen([str(MACHD), "--state-dir=%s" % self.state_dir,
                                      "--cgroup-root=%s" % self.cgroup_root,
                                      "--stop-timeout=%s" % self.stop_timeout,
                                      "--pool=%s" % self.pool, "--transfer-path=%s" % TRANSFER,
                                      "--varlink-dir=%s" % self.varlink_dir] + self.extra_args,
                                     env=self.bus.env(), stdout=self.logf, stderr=self.logf)
        deadline = time.time() + 10
        while time.time() < deadline:
            r = self.bus.busctl("status", DEST, check=False)
            if r.returncode == 0:
                return self
            if self.proc.poll() is not None:
                raise AssertionError("machd exited: %s" % self.log.read_text())
            time.sleep(0.05)
        raise AssertionError("machd did not take its bus name: %s" % self.log.read_text())

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        if self in Machd.running:
            Machd.running.remove(self)
        return rc


class Leaders:
    """Sleeping processes standing in for container leaders; optional own *.scope cgroups for
    RegisterMachine (which needs the leader inside a unit)."""

    def __init__(self):
        self.procs = []
        self.cgroups = []

    def spawn(self):
        p = subprocess.Popen(["sleep", "1000"])
        self.procs.append(p)
        return p

    def spawn_in_scope(self, unit=None):
        p = self.spawn()
        unit = unit or "mktest-%s.scope" % uuid.uuid4().hex[:12]
        cg = CGROUP_ROOT / "unified" / "mktest.slice" / unit
        cg.mkdir(parents=True, exist_ok=True)
        self.cgroups.append(cg)
        (cg / "cgroup.procs").write_text(str(p.pid))
        return p, unit

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for cg in self.cgroups:
            remove_cgroup(cg)
            # nspawn --keep-unit mirrors its cgroup into the name=systemd hierarchy.
            remove_cgroup(CGROUP_ROOT / "systemd" / cg.relative_to(CGROUP_ROOT / "unified"))
        for h in ("unified", "systemd"):
            slice_dir = CGROUP_ROOT / h / "mktest.slice"
            if slice_dir.exists():
                try:
                    slice_dir.rmdir()
                except OSError:
                    pass


def remove_cgroup(cg):
    cg = Path(cg)
    if not cg.exists():
        return
    for child in [c for c in cg.iterdir() if c.is_dir()]:
        remove_cgroup(child)
    for _ in range(200):
        try:
            procs = (cg / "cgroup.procs").read_text().split()
        except OSError:
            procs = []
        for pid in procs:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            cg.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)


def machine_cgroups(name):
    """Every place machd may create the scope of `name` on this host."""
    scope = scope_of(name)
    return [CGROUP_ROOT / h / "machine.slice" / scope for h in ("unified", "systemd", "memory", "pids", "cpu", "devices")]


def cleanup_machine_cgroups(names=()):
    """Removes the scopes of machines `names` and then machine.slice where it became empty."""
    for name in names:
        for cg in machine_cgroups(name):
            remove_cgroup(cg)
    for h in ("unified", "systemd", "memory", "pids", "cpu", "devices"):
        try:
            (CGROUP_ROOT / h / "machine.slice").rmdir()
        except OSError:
            pass


def wait_for(pred, timeout=5.0, interval=0.02):
    """mkutil's, with the bus tests' shorter defaults."""
    return mkutil.wait_for(pred, timeout, interval)


@pytest.fixture(scope="session", autouse=True)
def host_lock():
    """One bus-test session at a time per host: machine names (machine-NAME.scope) are host-global."""
    import fcntl
    # lockf (POSIX record lock) is per process: re-taking it from this process (a test module that
    # imported this fixture) cannot deadlock, while other test runs wait.
    with open("/tmp/machkit-bus-tests.lock", "w") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        yield


@pytest.fixture
def bus(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("bus tests need root")
    if not MACHD.exists():
        pytest.skip("machd not built at %s (set MK_BUILD_DIR)" % MACHD)
    b = Bus()
    yield b
    b.close()


@pytest.fixture
def leaders():
    l = Leaders()
    yield l
    l.cleanup()


@pytest.fixture
def machd(bus, tmp_path, leaders):
    # A private image pool: the image methods never see (or create) the host's /var/lib/machines.
    d = Machd(bus, tmp_path / "machines", pool=tmp_path / "pool")
    d.start()
    yield d
    # Machines registered by the test outlive machd by design: end them and exactly their cgroups
    # (never other machines': another test run may share this host).
    names = []
    if d.proc and d.proc.poll() is None:
        r = bus.busctl("--json=short", "call", DEST, MANAGER, IFACE, "ListMachines", check=False)
        if r.returncode == 0:
            import json
            names = [m[0] for m in json.loads(r.stdout)["data"][0] if m[0] != ".host"]
    d.stop()
    leaders.cleanup()
    cleanup_machine_cgroups(names + list(d.created))


def _record(name):
    for d in Machd.running:
        d.created.add(name)


def register(bus, name, pid, service="test", klass="container", root="", netif=()):
    _record(name)
    if netif:
        return bus.call("RegisterMachineWithNetwork", "sayssusai", name, 0, service, klass, pid, root,
                        len(netif), *netif)
    return bus.call("RegisterMachine", "sayssus", name, 0, service, klass, pid, root)


def create(bus, name, pid, service="test", klass="container", root="", props=(), check=True):
    """props: list of (name, signature, *values) busctl fragments."""
    _record(name)
    flat = []
    for p in props:
        flat += list(p)
    return bus.call("CreateMachine", "sayssusa(sv)", name, 16, *range(1, 17), service, klass, pid, root,
                    len(props), *flat, check=check)
