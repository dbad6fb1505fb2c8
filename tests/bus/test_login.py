"""OpenMachineLogin / Machine.OpenLogin: a pty in the machine plus container-getty@N.service started by
the guest's own systemd over the guest's own system bus (as systemd-machined 252 does). Against the
booted Debian fixture (`spawn -x -b`, see test_machctl_boot.py): the login prompt appears on the
returned pty master, logging in on it works and `tty` there is the returned path; systemd 252's
`machinectl login` against machd. A busybox container (no dbus) gets a named error and machd keeps no
fd or child; a guest symlink at the bus socket cannot lead to a host socket; non-root callers are
refused by the policy and by machd itself. Root only."""
import os
import pty
import re
import select
import shutil
import subprocess
import time

import dbus
import pytest

import conftest
from conftest import BUILD, DEST, IFACE, MANAGER, Machd, create, machine_path, wait_for
from test_conformance import FAKE_BOOTED
from test_machctl_boot import HELPERS, MACHCTL, SPAWN, Guest, debian_tree, guests  # noqa: F401 (fixtures)

MACHINE_IFACE = "org.freedesktop.machine1.Machine"
NOBODY = 65534


def manager(bus):
    conn = dbus.bus.BusConnection(bus.address)
    return dbus.Interface(conn.get_object(DEST, MANAGER), IFACE), conn


class Reader:
    """Collects what a pty master (or a pty.fork() child's terminal) prints; ANSI sequences and CRs dropped."""

    def __init__(self, fd):
        self.fd, self.out = fd, b""

    def expect(self, pattern, timeout=60):
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if rx.search(self.out):
                return True
            r, _, _ = select.select([self.fd], [], [], 0.2)
            if r:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:  # EIO: no slave open at the moment (the getty's vhangup)
                    time.sleep(0.05)
                    continue
                self.out += re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", data).replace(b"\r", b"")
        return bool(rx.search(self.out))


def machd_fds_and_children(machd):
    pid = machd.proc.pid
    fds = len(os.listdir("/proc/%d/fd" % pid))
    children = []
    for t in os.listdir("/proc/%d/task" % pid):
        children += open("/proc/%d/task/%s/children" % (pid, t)).read().split()
    return fds, children


def machd_settles_at(machd, expected, seconds=20):
    """machd's fds and children once it has handled the hang-ups still queued on its sockets: a
    client killed a moment ago is closed on machd's next loop iteration, not at once. Returns
    the last reading (equal to `expected` unless something really stayed)."""
    deadline = time.monotonic() + seconds
    while True:
        now = machd_fds_and_children(machd)
        if now == expected or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


def log_in_on(master, path):
    r = Reader(master)
    assert r.expect(rb"\S+ login: "), r.out  # the fixture's hostname, not the machine name
    os.write(master, b"root\n")
    assert r.expect(rb"root@\S+:~# "), r.out  # the fixture's root has an empty password
    os.write(master, b"echo LOGGED-$((6*7)); tty\n")
    assert r.expect(rb"LOGGED-42\n(/dev/pts/\d+)\n"), r.out
    assert re.search(rb"LOGGED-42\n(/dev/pts/\d+)\n", r.out).group(1).decode() == path, r.out


class TerminalSession:
    """`argv` on a new pty with the private bus in its environment (TERM=dumb); killed at the end if
    it is still running."""

    def __init__(self, bus, argv):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.environ.update(bus.env())
            os.environ["TERM"] = "dumb"
            os.execvp(argv[0], argv)
        self.r = Reader(self.fd)

    def __enter__(self):
        return self

    def expect(self, pattern):
        assert self.r.expect(pattern), self.r.out

    def log_in_as_root(self):
        self.expect(rb"\S+ login: ")
        os.write(self.fd, b"root\n")
        self.expect(rb"root@\S+:~# ")  # the fixture's root has an empty password

    def leave(self, name):
        """^] three times: the client leaves the session and exits 0."""
        os.write(self.fd, b"\x1d\x1d\x1d")
        self.expect(b"Connection to machine %s terminated" % name.encode())
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, self.r.out)

    def __exit__(self, *exc):
        if self.pid:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def test_open_machine_login_and_machine_open_login(bus, machd, guests):
    g = guests("deb-gl")
    assert g.wait_for(r"Reached target [^\n]*multi-user\.target"), g.text()
    mgr, conn = manager(bus)
    masters = []
    try:
        fd, path = mgr.OpenMachineLogin("deb-gl")
        masters.append(fd.take())
        assert re.fullmatch(r"/dev/pts/\d+", str(path)), path
        log_in_on(masters[0], str(path))
        # The same through the machine's object: a second pty (the first still open), a second getty.
        obj = dbus.Interface(conn.get_object(DEST, machine_path("deb-gl")), MACHINE_IFACE)
        fd2, path2 = obj.OpenLogin()
        masters.append(fd2.take())
        assert str(path2) != str(path) and re.fullmatch(r"/dev/pts/\d+", str(path2)), path2
        log_in_on(masters[1], str(path2))
        n = str(path2).rsplit("/", 1)[1]
        r = subprocess.run([str(MACHCTL), "shell", "deb-gl", "/bin/systemctl", "is-active",
                            "container-getty@%s.service" % n], capture_output=True, text=True, env=bus.env(),
                           stdin=subprocess.DEVNULL, timeout=60)
        assert r.stdout.strip() == "active", r
    finally:
        for m in masters:
            os.close(m)
    with pytest.raises(dbus.exceptions.DBusException) as e:
        mgr.OpenMachineLogin("nope")
    assert e.value.get_dbus_name() == "org.freedesktop.machine1.NoSuchMachine"
    conn.close()


def test_systemd_machinectl_login_against_machd(bus, machd, guests):
    if not shutil.which("machinectl"):
        pytest.skip("systemd-container (machinectl) not installed")
    g = guests("deb-ml")
    assert g.wait_for(r"Reached target [^\n]*multi-user\.target"), g.text()
    sh = FAKE_BOOTED + ' && mount --bind %s /run/systemd/machines && exec machinectl login deb-ml' % machd.state_dir
    with TerminalSession(bus, ["unshare", "-m", "--propagation", "private", "sh", "-c", sh]) as t:
        t.expect(rb"Connected to machine deb-ml")
        t.log_in_as_root()
        os.write(t.fd, b"echo LOGGED-$((6*7)); tty\n")
        t.expect(rb"LOGGED-42\n/dev/pts/\d+\n")
        t.leave("deb-ml")


def busybox_container(bus, tmp_path, name):
    tree = tmp_path / name
    subprocess.run([str(HELPERS / "busybox-tree.sh"), str(tree)], check=True, capture_output=True)
    p = subprocess.Popen([str(SPAWN), "-q", "-P", "-D", str(tree), "-M", name, "--", "/bin/sh", "-c",
                          "echo ready; exec sleep 1000"], env=bus.env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    assert p.stdout.readline().strip() == "ready", p.stderr.read()
    return p


def test_guest_without_dbus_gets_a_named_error_and_nothing_stays(bus, machd, tmp_path):
    p = busybox_container(bus, tmp_path, "bb-nodbus")
    try:
        before = machd_fds_and_children(machd)
        for _ in range(3):
            r = bus.busctl("call", DEST, MANAGER, IFACE, "OpenMachineLogin", "s", "bb-nodbus", check=False)
            assert r.returncode != 0 and "has no system bus (is dbus installed and running in it?)" in r.stderr, r
            assert bus.error_name("OpenMachineLogin", "string:bb-nodbus") == "org.freedesktop.DBus.Error.FileNotFound"
            r = bus.busctl("call", DEST, machine_path("bb-nodbus"), MACHINE_IFACE, "OpenLogin", check=False)
            assert r.returncode != 0 and "has no system bus" in r.stderr, r
        assert machd_settles_at(machd, before) == before
        # The container itself is untouched and OpenMachinePTY still works.
        assert p.poll() is None
        assert bus.call("OpenMachinePTY", "s", "bb-nodbus").stdout.startswith("hs ")
    finally:
        p.kill()
        p.wait()


def test_guest_symlink_to_a_host_bus_is_not_followed(bus, machd, leaders, tmp_path):
    """The socket path is resolved inside the machine's root: a guest symlink pointing at a host bus
    socket (here the test's own bus, where a connection would get ServiceUnknown) finds nothing."""
    from test_machd import chrooted_leader
    tree = tmp_path / "tree"
    p = chrooted_leader(leaders, tree)
    (tree / "run/dbus").mkdir(parents=True)
    os.symlink(str(bus.socket), tree / "run/dbus/system_bus_socket")
    create(bus, "esc-bus", p.pid)
    assert bus.error_name("OpenMachineLogin", "string:esc-bus") == "org.freedesktop.DBus.Error.FileNotFound"
    # A socket in the guest's tree that nobody serves: refused, also a named error.
    os.unlink(tree / "run/dbus/system_bus_socket")
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(tree / "run/dbus/system_bus_socket"))
    s.close()
    r = bus.busctl("call", DEST, MANAGER, IFACE, "OpenMachineLogin", "s", "esc-bus", check=False)
    assert r.returncode != 0 and "has no system bus" in r.stderr, r
    assert p.poll() is None


def test_non_root_is_refused(bus, machd, leaders, tmp_path):
    p = leaders.spawn()
    create(bus, "lg", p.pid)
    # Without polkitd on the bus, machd denies them (the shipped policy lets the call reach machd,
    # which asks polkit as machined does; tests/bus/test_polkit.py has polkitd) ...
    assert bus.error_name("OpenMachineLogin", "string:lg", user=NOBODY) == "org.freedesktop.DBus.Error.AccessDenied"
    r = bus.busctl("call", DEST, machine_path("lg"), MACHINE_IFACE, "OpenLogin", user=NOBODY, check=False)
    assert r.returncode != 0 and "denied" in r.stderr.lower(), r.stderr
    # ... also under a permissive policy (machined 252's policy lets anyone call; polkit decides there).
    permissive = tmp_path / "permissive.conf"
    permissive.write_text("""<busconfig><policy context="default">
      <allow send_destination="org.freedesktop.machine1"/></policy>
      <policy user="root"><allow own="org.freedesktop.machine1"/></policy></busconfig>""")
    orig = conftest.POLICY
    conftest.POLICY = permissive
    try:
        b2 = conftest.Bus()
    finally:
        conftest.POLICY = orig
    try:
        d = Machd(b2, tmp_path / "m2").start()
        try:
            q = leaders.spawn()
            b2.call("CreateMachine", "sayssusa(sv)", "lg2", 0, "t", "container", q.pid, "", 0)
            conftest._record("lg2")  # the machd fixture removes its scope at the end
            assert b2.error_name("OpenMachineLogin", "string:lg2", user=NOBODY) == \
                "org.freedesktop.DBus.Error.AccessDenied"
            # busctl shortens every AccessDenied message to "Access denied": dbus-send shows machd's.
            r = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
                                "dbus-send", "--bus=%s" % b2.address, "--print-reply", "--dest=" + DEST,
                                machine_path("lg2"), MACHINE_IFACE + ".OpenLogin"],
                               capture_output=True, text=True, timeout=20)
            assert r.returncode != 0 and "AccessDenied: Access denied: polkit is not running." in r.stderr, \
                r.stderr
            assert q.poll() is None
        finally:
            d.stop()
    finally:
        b2.close()


MACHINED = "/lib/systemd/systemd-machined"


@pytest.fixture
def machined_guest(bus, debian_tree, leaders):
    """systemd-machined 252 on the private bus (fake-booted /run/systemd, as machinectl needs) and the
    Debian guest registered in it: spawn --keep-unit in a *.scope of its own on the unified hierarchy,
    which is how machined finds a registering machine's unit without systemd."""
    if not os.path.exists(MACHINED):
        pytest.skip("systemd-container (systemd-machined 252) not installed")
    m = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          FAKE_BOOTED + " && exec " + MACHINED], env=bus.env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(lambda: bus.busctl("status", DEST, check=False).returncode == 0, 10)
    scope = conftest.CGROUP_ROOT / "unified" / "mktest.slice" / "mktest-mdl.scope"
    scope.mkdir(parents=True, exist_ok=True)
    leaders.cgroups.append(scope)
    g = Guest.__new__(Guest)
    g.name, g.out = "deb-mdl", b""
    g.p = subprocess.Popen(["sh", "-c", 'echo $$ > "%s/cgroup.procs" && exec %s -x -b --keep-unit -D %s -M deb-mdl'
                            % (scope, SPAWN, debian_tree)], env=bus.env(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.set_blocking(g.p.stdout.fileno(), False)
    try:
        assert g.wait_for(r"Reached target [^\n]*multi-user\.target"), g.text()
        assert bus.busctl("call", DEST, MANAGER, IFACE, "GetMachine", "s", "deb-mdl", check=False).returncode == 0
        yield g
    finally:
        g.kill()
        m.terminate()
        m.wait()
        cleanup_machine_cgroups_of_spawn(scope)


def cleanup_machine_cgroups_of_spawn(scope):
    """spawn --keep-unit made its payload cgroups below the test's scope; leaves first."""
    for h in ("unified", "systemd"):
        root = conftest.CGROUP_ROOT / h / "mktest.slice" / scope.name
        if root.exists():
            for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                conftest.remove_cgroup(d)


def test_machctl_login_against_machined_survives_the_gettys_hangups(bus, machined_guest):
    """machctl login on a manager without ExecMachine (systemd-machined): OpenMachineLogin's getty hangs
    its tty up when it starts and again after each logout; the relay stays until ^]^]^]."""
    with TerminalSession(bus, [str(MACHCTL), "login", "deb-mdl"]) as t:
        t.expect(rb"Connected to machine deb-mdl")
        t.log_in_as_root()
        os.write(t.fd, b"echo FIRST-$((6*7)); exit\n")
        t.expect(rb"FIRST-42\n")
        # The getty is restarted on the same pty: a second login prompt reaches us.
        t.r.out = b""
        t.log_in_as_root()
        os.write(t.fd, b"echo SECOND-$((6*7))\n")
        t.expect(rb"SECOND-42\n")
        t.leave("deb-mdl")


class MuteGuestBus:
    """A chrooted machine NAME whose /run/dbus/system_bus_socket accepts connections and never says a
    word, and an OpenMachineLogin call on it in flight (busctl, its own timeout well past machd's).
    On exit: the call and the socket are gone, and machd keeps no fd or child of it."""

    def __init__(self, bus, machd, leaders, tmp_path, name):
        import socket
        from test_machd import chrooted_leader
        self.machd = machd
        tree = tmp_path / name
        self.leader = chrooted_leader(leaders, tree)
        (tree / "run/dbus").mkdir(parents=True)
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(tree / "run/dbus/system_bus_socket"))
        self.srv.listen(4)
        self.srv.settimeout(30)
        create(bus, name, self.leader.pid)
        self.before = machd_fds_and_children(machd)
        self.login = subprocess.Popen(["busctl", "--address=%s" % bus.address, "--timeout=90", "call", DEST, MANAGER,
                                       IFACE, "OpenMachineLogin", "s", name],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.conn = None

    def __enter__(self):
        self.conn, _ = self.srv.accept()  # machd reached the guest's bus; the guest says nothing
        return self

    def hang_up(self):
        self.conn.close()
        self.conn = None

    def __exit__(self, exc_type, *exc):
        if self.login.poll() is None:
            self.login.kill()
            self.login.wait()
        if self.conn:
            self.conn.close()
        self.srv.close()
        if exc_type is None:
            assert machd_settles_at(self.machd, self.before) == self.before
            assert self.leader.poll() is None


def test_a_guest_bus_that_never_answers_does_not_stall_machd(bus, machd, leaders, tmp_path):
    """machd answers OpenMachineLogin from its loop: while a guest's "system bus" accepts and stays
    silent, every other client is still served; the login fails once that bus goes away, and nothing
    of it stays in machd. (machined blocks on the guest for up to 25 s.)"""
    with MuteGuestBus(bus, machd, leaders, tmp_path, "mute-bus") as g:
        assert "mute-bus" in [m[0] for m in bus.call_json("ListMachines")[0]]
        assert bus.call("GetMachine", "s", "mute-bus").stdout.strip() == 'o "%s"' % machine_path("mute-bus")
        assert bus.call("OpenMachinePTY", "s", "mute-bus").stdout.startswith("hs ")
        assert g.login.poll() is None, g.login.communicate()  # the login is still waiting for the guest
        g.hang_up()
        _, err = g.login.communicate(timeout=30)
        assert g.login.returncode != 0 and re.search(r"(Failed to start container-getty@\d+\.service in|Lost the "
                                                     r"system bus of) machine mute-bus", err), err


def test_a_guest_bus_that_never_answers_times_out(bus, machd, leaders, tmp_path):
    """The bound: 25 s after the call, the login fails with a timeout (kept open the whole time by
    the guest); machd served others meanwhile and keeps nothing of it."""
    with MuteGuestBus(bus, machd, leaders, tmp_path, "mute-to") as g:
        assert bus.call("GetMachine", "s", "mute-to").returncode == 0
        _, err = g.login.communicate(timeout=80)
        assert g.login.returncode != 0 and "Timed out waiting for the system bus of machine mute-to to start " \
            "container-getty@" in err, err
