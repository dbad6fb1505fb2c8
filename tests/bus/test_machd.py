"""machd on a private bus: registration, lifecycle, errors, credentials, re-adoption."""
import json
import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
import shutil

from conftest import (CGROUP_ROOT, DEST, IFACE, MANAGER, Machd, create, machine_cgroups, machine_path, register,
                      scope_of, wait_for)

MACHINE_IFACE = "org.freedesktop.machine1.Machine"


def state_file(machd, name):
    return machd.state_dir / name


def props(bus, name):
    r = bus.busctl("--json=short", "call", DEST, machine_path(name), "org.freedesktop.DBus.Properties", "GetAll", "s",
                   MACHINE_IFACE)
    return {k: v["data"] for k, v in json.loads(r.stdout)["data"][0].items()}


class Monitor:
    """busctl monitor for MachineNew/MachineRemoved on the private bus."""

    def __init__(self, bus):
        self.proc = subprocess.Popen(["busctl", "--address=%s" % bus.address, "--json=short", "monitor",
                                      "--match=type='signal',interface='%s'" % IFACE], stdout=subprocess.PIPE,
                                     text=True)
        self.events = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        time.sleep(0.3)

    def _read(self):
        for line in self.proc.stdout:
            try:
                m = json.loads(line)
            except ValueError:
                continue
            if m.get("type") == "signal":
                self.events.append((m["member"], m["payload"]["data"][0]))

    def close(self):
        self.proc.terminate()
        self.proc.wait()


# ------------------------------------------------------------------------------------------------ create


def test_create_machine_scope_state_and_properties(bus, machd, leaders):
    p = leaders.spawn()
    out = create(bus, "foo-bar", p.pid, root="/var/lib/machines/foo bar",
                 props=[("DeviceAllow", "a(ss)", 1, "/dev/null", "rw"), ("TasksMax", "t", 77)])
    assert out.stdout.strip() == 'o "%s"' % machine_path("foo-bar")

    rows = bus.call_json("ListMachines")[0]
    assert ["foo-bar", "container", "test", machine_path("foo-bar")] in rows

    pr = props(bus, "foo-bar")
    assert pr["Name"] == "foo-bar"
    assert pr["Id"] == list(range(1, 17))
    assert pr["Service"] == "test"
    assert pr["Class"] == "container"
    assert pr["Leader"] == p.pid
    assert pr["RootDirectory"] == "/var/lib/machines/foo bar"
    assert pr["Unit"] == "machine-foo\\x2dbar.scope"
    assert pr["State"] == "running"
    assert pr["NetworkInterfaces"] == []
    assert pr["Timestamp"] > 0 and pr["TimestampMonotonic"] > 0

    text = state_file(machd, "foo-bar").read_text()
    assert text == ("# This is private data. Do not parse.\nNAME=foo-bar\nSCOPE=machine-foo\\\\x2dbar.scope\n"
                    "SERVICE=test\nROOT=/var/lib/machines/foo bar\nID=0102030405060708090a0b0c0d0e0f10\n"
                    "LEADER=%d\nCLASS=container\nREALTIME=%d\nMONOTONIC=%d\n"
                    % (p.pid, pr["Timestamp"], pr["TimestampMonotonic"]))
    assert os.readlink(machd.state_dir / ("unit:" + scope_of("foo-bar"))) == "foo-bar"

    unified, named, memory, pids, cpu, devices = machine_cgroups("foo-bar")
    for cg in (unified, named, pids, devices):
        assert str(p.pid) in (cg / "cgroup.procs").read_text().split(), cg
    assert not memory.exists() and not cpu.exists()  # no limits asked for there
    assert (pids / "pids.max").read_text().strip() == "77"
    assert "c 1:3 rw" in (devices / "devices.list").read_text()
    assert "0::/machine.slice/machine-foo\\x2dbar.scope" in Path("/proc/%d/cgroup" % p.pid).read_text()

    assert bus.call("GetMachineByPID", "u", p.pid).stdout.strip() == 'o "%s"' % machine_path("foo-bar")
    assert bus.call("GetMachine", "s", "foo-bar").stdout.strip() == 'o "%s"' % machine_path("foo-bar")


def test_leader_sigkill_removes_machine_cgroup_and_state(bus, machd, leaders):
    mon = Monitor(bus)
    try:
        p = leaders.spawn()
        create(bus, "victim", p.pid)
        assert state_file(machd, "victim").exists()
        p.kill()
        p.wait()
        assert wait_for(lambda: ("MachineRemoved", "victim") in mon.events), mon.events
        assert ("MachineNew", "victim") in mon.events
    finally:
        mon.close()
    assert not state_file(machd, "victim").exists()
    assert not (machd.state_dir / ("unit:" + scope_of("victim"))).is_symlink()
    for cg in machine_cgroups("victim"):
        assert not cg.exists(), cg
    assert bus.error_name("GetMachine", "string:victim") == "org.freedesktop.machine1.NoSuchMachine"


def test_terminate_machine(bus, machd, leaders):
    p = leaders.spawn()
    create(bus, "term", p.pid)
    bus.call("TerminateMachine", "s", "term")
    assert wait_for(lambda: p.poll() is not None)
    assert p.returncode == -signal.SIGTERM
    assert wait_for(lambda: not state_file(machd, "term").exists())
    for cg in machine_cgroups("term"):
        assert wait_for(lambda: not cg.exists()), cg


def test_terminate_uses_kill_signal_property(bus, machd, leaders):
    p = leaders.spawn()
    create(bus, "ks", p.pid, props=[("KillSignal", "i", int(signal.SIGUSR1)), ("KillMode", "s", "mixed")])
    bus.busctl("call", DEST, machine_path("ks"), MACHINE_IFACE, "Terminate")
    assert wait_for(lambda: p.poll() is not None)
    assert p.returncode == -signal.SIGUSR1


def test_kill_machine_leader_and_all(bus, machd, leaders):
    p = leaders.spawn()
    create(bus, "kl", p.pid)
    # A second process inside the scope: "all" reaches it, "leader" does not.
    other = leaders.spawn()
    (machine_cgroups("kl")[0] / "cgroup.procs").write_text(str(other.pid))
    # D-03.2: a process of the machine that is not its leader maps to the machine through its unit.
    assert bus.call("GetMachineByPID", "u", other.pid).stdout.strip() == 'o "%s"' % machine_path("kl")
    bus.call("KillMachine", "ssi", "kl", "all", int(signal.SIGSTOP))
    assert wait_for(lambda: "T" in Path("/proc/%d/stat" % other.pid).read_text().split()[2])
    bus.call("KillMachine", "ssi", "kl", "", int(signal.SIGCONT))
    bus.call("KillMachine", "ssi", "kl", "leader", int(signal.SIGKILL))
    assert wait_for(lambda: p.poll() is not None)
    assert p.returncode == -signal.SIGKILL
    # The scope's remaining process is killed when the machine ends.
    assert wait_for(lambda: other.poll() is not None)
    assert bus.error_name("KillMachine", "string:nope", "string:all", "int32:9") == \
        "org.freedesktop.machine1.NoSuchMachine"


def test_kill_argument_errors(bus, machd, leaders):
    p = leaders.spawn()
    create(bus, "ka", p.pid)
    assert bus.error_name("KillMachine", "string:ka", "string:bogus", "int32:1") == \
        "org.freedesktop.DBus.Error.InvalidArgs"
    assert bus.error_name("KillMachine", "string:ka", "string:all", "int32:999") == \
        "org.freedesktop.DBus.Error.InvalidArgs"
    assert p.poll() is None


# ---------------------------------------------------------------------------------------------- register


def test_register_machine_uses_callers_unit(bus, machd, leaders):
    p, unit = leaders.spawn_in_scope()
    register(bus, "reg", p.pid, service="my svc", root="/srv/x", netif=(3, 7))
    pr = props(bus, "reg")
    assert pr["Unit"] == unit
    assert pr["NetworkInterfaces"] == [3, 7]
    assert pr["Id"] == []  # machined 252: empty when unset
    text = state_file(machd, "reg").read_text()
    assert "SCOPE=%s\n" % unit in text and "NETIF=3 7\n" in text and "SERVICE=my svc\n" in text
    assert "ID=" not in text
    assert os.readlink(machd.state_dir / ("unit:" + unit)) == "reg"
    # No machine.slice scope for registered machines.
    for cg in machine_cgroups("reg"):
        assert not cg.exists()
    bus.call("UnregisterMachine", "s", "reg")
    assert not state_file(machd, "reg").exists()
    assert p.poll() is None  # unregistering leaves a registered (foreign) unit alone


def test_register_without_unit_fails_like_machined(bus, machd, leaders):
    p = leaders.spawn()
    r = register.__wrapped__ if hasattr(register, "__wrapped__") else None
    assert bus.error_name("RegisterMachine", "string:nounit", "array:byte:", "string:", "string:container",
                          "uint32:%d" % p.pid, "string:") == "System.Error.ENXIO"


def test_duplicate_name_concurrently_exactly_one_wins(bus, machd, leaders):
    ps = [leaders.spawn() for _ in range(8)]
    results = [None] * len(ps)

    def go(i):
        results[i] = bus.error_name("CreateMachine", "string:dup", "array:byte:", "string:t", "string:container",
                                    "uint32:%d" % ps[i].pid, "string:", "array:struct:string:variant:")

    # dbus-send cannot express a(sv) literally; fall back to busctl per thread.
    def go_busctl(i):
        r = bus.call("CreateMachine", "sayssusa(sv)", "dup", 0, "t", "container", ps[i].pid, "", 0, check=False)
        results[i] = None if r.returncode == 0 else r.stderr.strip()

    threads = [threading.Thread(target=go_busctl, args=(i,)) for i in range(len(ps))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is None]
    losers = [r for r in results if r is not None]
    assert len(winners) == 1, results
    assert all("already exists" in r for r in losers), losers
    rows = [r for r in bus.call_json("ListMachines")[0] if r[0] == "dup"]
    assert len(rows) == 1


def test_duplicate_error_name(bus, machd, leaders):
    p, q = leaders.spawn(), leaders.spawn()
    create(bus, "twice", p.pid)
    r = bus.busctl("--verbose", "call", DEST, MANAGER, IFACE, "CreateMachine", "sayssusa(sv)", "twice", 0, "t",
                   "container", q.pid, "", 0, check=False)
    assert r.returncode != 0
    assert "Machine 'twice' already exists" in r.stderr
    # The loser's process was not moved anywhere.
    assert "machine.slice" not in Path("/proc/%d/cgroup" % q.pid).read_text()


B01 = ["", ".", "..", ".host", ".#foo", ".hidden", "-foo", "foo-", "foo.", ".foo", "foo..bar", "foo/bar", "../etc",
       "fööbar", "foo_bar", "a b", "$(id)", "\x1b[2J"]
B02 = ["y" * 65, "y" * 255, "y" * 256, "y" * 4096]


@pytest.mark.parametrize("name", B01 + B02, ids=lambda s: repr(s[:20]))
def test_invalid_names_are_invalid_args(bus, machd, leaders, name):
    p = leaders.spawn()
    r = bus.call("CreateMachine", "sayssusa(sv)", name, 0, "t", "container", p.pid, "", 0, check=False)
    assert r.returncode != 0
    assert "Invalid machine name" in r.stderr
    assert bus.error_name("GetMachine", "string:" + name) in (
        "org.freedesktop.machine1.NoSuchMachine", None) or name in (".host",)
    assert [m[0] for m in bus.call_json("ListMachines")[0]] == [".host"]
    assert list(machd.state_dir.iterdir()) == []


@pytest.mark.parametrize("name", ["y" * 63, "y" * 64, "a.b.c", "0abc", "Foo"])
def test_valid_edge_names(bus, machd, leaders, name):
    p = leaders.spawn()
    create(bus, name, p.pid)
    assert bus.call("GetMachine", "s", name).stdout.strip() == 'o "%s"' % machine_path(name)


@pytest.mark.parametrize("args,message", [
    (("x", 3, 1, 2, 3, "t", "container", "PID", "", 0), "Invalid machine ID parameter"),
    (("x", 0, "t", "bogus", "PID", "", 0), "Invalid machine class parameter"),
    (("x", 0, "t", "host", "PID", "", 0), "Invalid machine class parameter"),
    (("x", 0, "t", "", "PID", "", 0), "Machine class must be"),
    (("x", 0, "t", "container", 1, "", 0), "Invalid leader PID"),
    (("x", 0, "t", "container", 2, "", 0), "Invalid leader PID"),
    (("x", 0, "t", "container", "PID", "relative/dir", 0), "Root directory must be empty or an absolute path"),
    (("x", 0, "t", "container", "PID", "", 1, "Bogus", "s", "v"), "unknown property"),
    (("x", 0, "t", "container", "PID", "", 1, "TasksMax", "s", "v"), "expects type"),
    (("x", 0, "t", "container", "PID", "", 1, "Slice", "s", "../x.slice"), "Invalid slice"),
])
def test_create_argument_errors(bus, machd, leaders, args, message):
    p = leaders.spawn()
    args = [p.pid if a == "PID" else a for a in args]
    sig = "sayssusa(sv)" if args[1] == 0 else "sayssusa(sv)"
    r = bus.call("CreateMachine", sig, *args, check=False)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert p.poll() is None
    assert "machine.slice" not in Path("/proc/%d/cgroup" % p.pid).read_text()


def test_leader_zero_is_the_caller_and_self_pid_refused(bus, machd):
    # busctl itself would become the leader and exit at once: the call still validates.
    r = bus.call("CreateMachine", "sayssusa(sv)", "zero", 0, "t", "container", machd.proc.pid, "", 0, check=False)
    assert "Invalid leader PID" in r.stderr


def test_lookup_errors(bus, machd):
    assert bus.error_name("GetMachine", "string:nope") == "org.freedesktop.machine1.NoSuchMachine"
    assert bus.error_name("GetMachineByPID", "uint32:1") == "org.freedesktop.machine1.NoMachineForPID"
    assert bus.error_name("TerminateMachine", "string:nope") == "org.freedesktop.machine1.NoSuchMachine"
    assert bus.error_name("UnregisterMachine", "string:nope") == "org.freedesktop.machine1.NoSuchMachine"


def test_login_on_the_host_is_not_supported(bus, machd):
    # machined 252 serves .host through the host's systemd; machd enters containers only.
    for method, args in [("OpenMachineLogin", ["string:.host"])]:
        assert bus.error_name(method, *args) == "org.freedesktop.DBus.Error.NotSupported", method


def test_pool_properties(bus, machd, tmp_path):
    assert bus.get_property(MANAGER, IFACE, "PoolPath") == str(tmp_path / "pool")
    assert bus.get_property(MANAGER, IFACE, "PoolUsage") == 2**64 - 1
    assert bus.get_property(MANAGER, IFACE, "PoolLimit") == 2**64 - 1


def test_os_release_and_uid_shift(bus, machd, leaders):
    p = leaders.spawn()
    create(bus, "osr", p.pid)
    data = bus.call_json("GetMachineOSRelease", "s", "osr")[0]
    assert data["ID"] == "debian"
    assert bus.call_json("GetMachineUIDShift", "s", "osr")[0] == 0
    # Same network namespace as the host: machined's NoPrivateNetworking.
    assert bus.error_name("GetMachineAddresses", "string:osr") == "org.freedesktop.machine1.NoPrivateNetworking"


def test_addresses_from_private_netns(bus, machd, leaders):
    p = subprocess.Popen(["unshare", "--net", "sh", "-c",
                          "ip link set lo up; ip addr add 10.9.8.7/32 dev lo; exec sleep 1000"])
    leaders.procs.append(p)
    time.sleep(0.3)
    create(bus, "net", p.pid)
    addrs = bus.call_json("GetMachineAddresses", "s", "net")[0]
    assert [2, [10, 9, 8, 7]] in addrs
    assert [2, [127, 0, 0, 1]] not in addrs


# ------------------------------------------------------------------------------------------- credentials


NOBODY = 65534


def test_non_root_can_read_but_not_mutate(bus, machd, leaders):
    p = leaders.spawn()
    create(bus, "cred", p.pid)
    assert bus.busctl("call", DEST, MANAGER, IFACE, "ListMachines", user=NOBODY).returncode == 0
    assert bus.busctl("call", DEST, MANAGER, IFACE, "GetMachine", "s", "cred", user=NOBODY).returncode == 0
    assert bus.busctl("introspect", DEST, MANAGER, user=NOBODY).returncode == 0
    assert bus.busctl("get-property", DEST, machine_path("cred"), MACHINE_IFACE, "Leader",
                      user=NOBODY).returncode == 0
    for method, args in [("TerminateMachine", ["string:cred"]),
                         ("KillMachine", ["string:cred", "string:all", "int32:9"]),
                         ("UnregisterMachine", ["string:cred"]),
                         ("RegisterMachine", ["string:evil", "array:byte:", "string:", "string:container",
                                              "uint32:%d" % p.pid, "string:"])]:
        assert bus.error_name(method, *args, user=NOBODY) == "org.freedesktop.DBus.Error.AccessDenied", method
    r = bus.busctl("call", DEST, machine_path("cred"), MACHINE_IFACE, "Kill", "si", "all", 9, user=NOBODY,
                   check=False)
    assert r.returncode != 0 and "denied" in r.stderr.lower()
    # dbus-send cannot express a(sv): busctl prints the message, not the error name.
    r = bus.busctl("call", DEST, MANAGER, IFACE, "CreateMachine", "sayssusa(sv)", "evil", 0, "", "container", p.pid,
                   "", 0, user=NOBODY, check=False)
    assert r.returncode != 0 and "denied" in r.stderr.lower(), r.stderr
    assert p.poll() is None
    assert [m[0] for m in bus.call_json("ListMachines")[0]] == [".host", "cred"]


def test_daemon_checks_credentials_even_if_policy_allowed(bus, tmp_path, leaders):
    """With a permissive bus policy (no policy file), machd itself refuses non-root callers."""
    import conftest
    permissive = tmp_path / "permissive.conf"
    permissive.write_text("""<busconfig><policy context="default">
      <allow send_destination="org.freedesktop.machine1"/></policy>
      <policy user="root"><allow own="org.freedesktop.machine1"/></policy></busconfig>""")
    bus.close()
    orig = conftest.POLICY
    conftest.POLICY = permissive
    try:
        b2 = conftest.Bus()
        d = Machd(b2, tmp_path / "m2").start()
        try:
            p = leaders.spawn()
            b2.call("CreateMachine", "sayssusa(sv)", "pp", 0, "t", "container", p.pid, "", 0)
            assert b2.error_name("TerminateMachine", "string:pp", user=NOBODY) == \
                "org.freedesktop.DBus.Error.AccessDenied"
            assert b2.error_name("KillMachine", "string:pp", "string:all", "int32:9", user=NOBODY) == \
                "org.freedesktop.DBus.Error.AccessDenied"
            assert b2.error_name("UnregisterMachine", "string:pp", user=NOBODY) == \
                "org.freedesktop.DBus.Error.AccessDenied"
            assert p.poll() is None
        finally:
            d.stop()
            b2.close()
            leaders.cleanup()
            conftest.cleanup_machine_cgroups(["pp"])
    finally:
        conftest.POLICY = orig


# -------------------------------------------------------------------------------------------- restart


def test_restart_readopts_running_machines(bus, machd, leaders):
    a, b, c = leaders.spawn(), leaders.spawn(), leaders.spawn()
    create(bus, "ra", a.pid)
    create(bus, "rb", b.pid)
    create(bus, "rc", c.pid)
    assert machd.stop() == 0
    # Machines keep running, state files stay.
    assert a.poll() is None and (machd.state_dir / "ra").exists()
    assert machine_cgroups("ra")[0].exists()
    c.kill()
    c.wait()
    machd.start()
    names = [m[0] for m in bus.call_json("ListMachines")[0]]
    assert names == [".host", "ra", "rb"]
    assert props(bus, "ra")["Leader"] == a.pid
    # rc died while machd was away: cleaned up at start.
    assert not (machd.state_dir / "rc").exists()
    for cg in machine_cgroups("rc"):
        assert not cg.exists()
    # Re-adopted machines are watched again.
    a.kill()
    a.wait()
    assert wait_for(lambda: not (machd.state_dir / "ra").exists())
    for cg in machine_cgroups("ra"):
        assert wait_for(lambda: not cg.exists())


def test_sigterm_exit_is_clean(bus, machd):
    assert machd.stop(signal.SIGTERM) == 0
    assert "exiting" in machd.log.read_text()


def chrooted_leader(leaders, tree):
    busybox = shutil.which("busybox")
    if not busybox:
        pytest.skip("busybox-static not installed")
    (tree / "bin").mkdir(parents=True)
    (tree / "etc").mkdir()
    (tree / "usr/lib").mkdir(parents=True)
    shutil.copy(busybox, tree / "bin/busybox")
    os.symlink("busybox", tree / "bin/sleep")
    p = subprocess.Popen(["chroot", str(tree), "/bin/sleep", "1000"])
    leaders.procs.append(p)
    assert wait_for(lambda: os.readlink("/proc/%d/root" % p.pid) == str(tree))
    return p


def test_os_release_symlink_cannot_escape_the_machine(bus, machd, leaders):
    tree = bus.tmp / "tree"
    p = chrooted_leader(leaders, tree)
    # Absolute and ../ symlinks resolve inside the machine's root, never to the host's files.
    os.symlink("/../../../../etc/os-release", tree / "etc/os-release")
    os.symlink("../../../../../../usr/lib/os-release", tree / "usr/lib/os-release")
    create(bus, "esc", p.pid)
    assert bus.error_name("GetMachineOSRelease", "string:esc") == "org.freedesktop.DBus.Error.FileNotFound"
    (tree / "usr/lib/os-release").unlink()
    (tree / "usr/lib/os-release").write_text("ID=inside\n")
    assert bus.call_json("GetMachineOSRelease", "s", "esc")[0] == {"ID": "inside"}


def test_os_release_fifo_does_not_block(bus, machd, leaders):
    tree = bus.tmp / "tree"
    p = chrooted_leader(leaders, tree)
    os.mkfifo(tree / "etc/os-release")
    (tree / "usr/lib/os-release").write_text("ID=fallback\n")
    create(bus, "fifo", p.pid)
    assert bus.call_json("GetMachineOSRelease", "s", "fifo", timeout=10)[0] == {"ID": "fallback"}
    assert bus.call("ListMachines").returncode == 0  # machd still answers


def test_machd_sigkilled_then_restarted_readopts(bus, machd, leaders):
    """A crash (SIGKILL) leaves the same state as a clean stop: everything comes back."""
    a = leaders.spawn()
    q, unit = leaders.spawn_in_scope()
    create(bus, "crash-a", a.pid)
    register(bus, "crash-r", q.pid)
    machd.stop(signal.SIGKILL)
    machd.start()
    rows = {m[0]: m for m in bus.call_json("ListMachines")[0]}
    assert set(rows) == {".host", "crash-a", "crash-r"}
    assert props(bus, "crash-r")["Unit"] == unit
    # A registered machine's foreign unit is not ours to remove when its leader dies.
    q.kill()
    q.wait()
    assert wait_for(lambda: "crash-r" not in [m[0] for m in bus.call_json("ListMachines")[0]])
    assert (CGROUP_ROOT / "unified" / "mktest.slice" / unit).exists()


def test_get_machine_by_pid_zero_is_the_caller(bus, machd, leaders):
    p = leaders.spawn()
    create(bus, "caller", p.pid)
    scope = machine_cgroups("caller")[0]
    # busctl inside the machine's scope asks "which machine am I in?"
    r = subprocess.run(["sh", "-c", 'echo $$ > "%s/cgroup.procs" && exec busctl --address=%s call %s %s %s '
                        'GetMachineByPID u 0' % (scope, bus.address, DEST, MANAGER, IFACE)],
                       capture_output=True, text=True, timeout=20)
    assert r.stdout.strip() == 'o "%s"' % machine_path("caller"), r.stderr
    assert bus.error_name("GetMachineByPID", "uint32:0") == "org.freedesktop.machine1.NoMachineForPID"


def test_machine_self_is_the_callers_machine(bus, machd, leaders):
    """/org/freedesktop/machine1/machine/self: the machine the sender runs in (as machined)."""
    p = leaders.spawn()
    create(bus, "selfish", p.pid)
    q = leaders.spawn()
    create(bus, "other", q.pid)
    scope = machine_cgroups("selfish")[0]
    self_path = MANAGER + "/machine/self"
    r = subprocess.run(["sh", "-c", 'echo $$ > "%s/cgroup.procs" && exec busctl --address=%s get-property %s %s '
                        'org.freedesktop.machine1.Machine Name Leader' % (scope, bus.address, DEST, self_path)],
                       capture_output=True, text=True, timeout=20)
    assert r.stdout.split() == ['s', '"selfish"', 'u', str(p.pid)], r.stderr
    # From the host, "self" is no machine.
    r = bus.busctl("get-property", DEST, self_path, "org.freedesktop.machine1.Machine", "Name", check=False)
    assert r.returncode != 0 and "Unknown object" in r.stderr, r.stderr


def test_machine_objects_are_enumerated(bus, machd, leaders):
    for name in ("enum-a", "enum-b"):
        create(bus, name, leaders.spawn().pid)
    tree = bus.busctl("tree", "--list", DEST).stdout.split()
    assert machine_path("enum-a") in tree and machine_path("enum-b") in tree
    bus.call("TerminateMachine", "s", "enum-a")
    assert wait_for(lambda: machine_path("enum-a") not in bus.busctl("tree", "--list", DEST).stdout.split())
    r = bus.busctl("introspect", DEST, machine_path("enum-a"), check=False)
    assert r.returncode != 0


def userns_leader(leaders):
    """A leader in its own user namespace with 0..65535 mapped to 655360.. (as nspawn -U picks)."""
    p = subprocess.Popen(["unshare", "--user", "sleep", "1000"])
    leaders.procs.append(p)
    assert wait_for(lambda: os.readlink("/proc/%d/ns/user" % p.pid) != os.readlink("/proc/self/ns/user"))
    for f in ("uid_map", "gid_map"):
        Path("/proc/%d/%s" % (p.pid, f)).write_text("0 655360 65536\n")
    return p


def test_uid_gid_mapping_methods(bus, machd, leaders):
    p = userns_leader(leaders)
    create(bus, "mapped", p.pid)
    assert bus.call_json("GetMachineUIDShift", "s", "mapped")[0] == 655360
    assert bus.call_json("MapFromMachineUser", "su", "mapped", 1000)[0] == 656360
    assert bus.call_json("MapFromMachineGroup", "su", "mapped", 0)[0] == 655360
    assert bus.call_json("MapToMachineUser", "u", 656361) == ["mapped", machine_path("mapped"), 1001]
    assert bus.call_json("MapToMachineGroup", "u", 655360) == ["mapped", machine_path("mapped"), 0]
    assert bus.error_name("MapFromMachineUser", "string:mapped", "uint32:70000") == \
        "org.freedesktop.machine1.NoSuchUserMapping"
    assert bus.error_name("MapToMachineUser", "uint32:5000000") == "org.freedesktop.machine1.NoSuchUserMapping"
    assert bus.error_name("MapToMachineGroup", "uint32:5000000") == "org.freedesktop.machine1.NoSuchGroupMapping"
    assert bus.error_name("MapToMachineUser", "uint32:1000") == "org.freedesktop.DBus.Error.InvalidArgs"
    assert bus.error_name("MapFromMachineUser", "string:.host", "uint32:0") == "org.freedesktop.DBus.Error.NotSupported"


def test_open_machine_root_directory(bus, machd, leaders):
    tree = bus.tmp / "tree"
    p = chrooted_leader(leaders, tree)
    create(bus, "rootdir", p.pid)
    out = bus.call("OpenMachineRootDirectory", "s", "rootdir").stdout
    assert out.startswith("h ")
    assert bus.error_name("OpenMachineRootDirectory", "string:.host") == "org.freedesktop.DBus.Error.NotSupported"
    assert bus.error_name("OpenMachineRootDirectory", "string:rootdir", user=65534) == \
        "org.freedesktop.DBus.Error.AccessDenied"


def test_copy_to_and_from_machine(bus, machd, leaders):
    tree = bus.tmp / "tree"
    p = chrooted_leader(leaders, tree)
    create(bus, "cp", p.pid)
    host = bus.tmp / "host"
    (host / "dir/sub").mkdir(parents=True)
    (host / "dir/sub/f").write_text("payload")
    os.symlink("/etc/shadow", host / "dir/link")

    bus.call("CopyToMachine", "sss", "cp", str(host / "dir"), "/copied")
    assert (tree / "copied/sub/f").read_text() == "payload"
    assert os.readlink(tree / "copied/link") == "/etc/shadow"
    # Existing file without the replace flag: FileExists; with it (flags=1): replaced.
    (host / "dir/sub/f").write_text("v2")
    assert bus.error_name("CopyToMachine", "string:cp", "string:%s" % (host / "dir/sub/f"),
                          "string:/copied/sub/f") == "org.freedesktop.DBus.Error.FileExists"
    bus.call("CopyToMachineWithFlags", "ssst", "cp", str(host / "dir/sub/f"), "/copied/sub/f", 1)
    assert (tree / "copied/sub/f").read_text() == "v2"
    assert bus.error_name("CopyToMachineWithFlags", "string:cp", "string:/x", "string:/y", "uint64:2") == \
        "org.freedesktop.DBus.Error.InvalidArgs"

    # Copy-from: a guest symlink in the *path* resolves inside the guest, never to host files.
    (tree / "etc").mkdir(exist_ok=True)
    os.symlink("/etc", tree / "hostetc")
    (tree / "etc/guestfile").write_text("guest")
    bus.call("CopyFromMachine", "sss", "cp", "/hostetc/guestfile", str(host / "out"))
    assert (host / "out").read_text() == "guest"
    assert bus.error_name("CopyFromMachine", "string:cp", "string:/hostetc/shadow", "string:%s" % (host / "shadow")) \
        == "org.freedesktop.DBus.Error.FileNotFound"
    assert not (host / "shadow").exists()
    # A FIFO in the guest is recreated, not read (the copy must not block).
    os.mkfifo(tree / "fifo")
    bus.call("CopyFromMachine", "sss", "cp", "/fifo", str(host / "fifo"), timeout=10)
    assert stat.S_ISFIFO(os.lstat(host / "fifo").st_mode)

    assert bus.error_name("CopyFromMachine", "string:cp", "string:relative", "string:/x") == \
        "org.freedesktop.DBus.Error.InvalidArgs"
    assert bus.error_name("CopyToMachine", "string:cp", "string:/etc/hostname", "string:/x", user=65534) == \
        "org.freedesktop.DBus.Error.AccessDenied"
    assert bus.error_name("CopyToMachine", "string:.host", "string:/a", "string:/b") == \
        "org.freedesktop.DBus.Error.NotSupported"
    assert bus.error_name("CopyToMachine", "string:nope", "string:/a", "string:/b") == \
        "org.freedesktop.machine1.NoSuchMachine"


def test_leader_of_another_machine_is_file_exists_like_machined(bus, machd, leaders):
    p = leaders.spawn()
    create(bus, "first", p.pid)
    assert bus.error_name("RegisterMachine", "string:second", "array:byte:", "string:", "string:container",
                          "uint32:%d" % p.pid, "string:") == "org.freedesktop.DBus.Error.FileExists"
    assert bus.error_name("RegisterMachine", "string:third", "array:byte:", "string:", "string:",
                          "uint32:%d" % p.pid, "string:") == "org.freedesktop.DBus.Error.NotSupported"
