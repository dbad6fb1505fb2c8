"""The org.freedesktop.machine1.Machine objects, which machd serves from one sd-bus fallback vtable
(src/bus/machine_nodes.cpp): every method called on /org/freedesktop/machine1/machine/NAME does what
its Manager twin (*Machine(NAME, ...)) does, against a real busybox container run by spawn (its own
mount namespace), with the same errors. Root only."""
import os
import subprocess

from conftest import DEST, MANAGER, IFACE, machine_path, wait_for
from test_login import busybox_container

MACHINE = "org.freedesktop.machine1.Machine"


def object_call(bus, name, method, signature="", *args, **kw):
    parts = ["call", DEST, machine_path(name), MACHINE, method]
    if signature:
        parts.append(signature)
    return bus.busctl(*parts, *args, **kw)


def object_error(bus, name, method, *args, user=None):
    """The D-Bus error name of a Machine object method call (dbus-send prints it; busctl does not)."""
    cmd = ["dbus-send", "--bus=%s" % bus.address, "--print-reply", "--dest=" + DEST, machine_path(name),
           MACHINE + "." + method] + list(args)
    if user is not None:
        cmd = ["setpriv", "--reuid=%d" % user, "--regid=%d" % user, "--clear-groups"] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    return None if r.returncode == 0 else r.stderr.split(":", 1)[0].removeprefix("Error ").strip()


def in_container(p, *argv):
    """Runs argv in the container's namespaces (the leader is spawn's child)."""
    leader = int(open("/proc/%d/task/%d/children" % (p.pid, p.pid)).read().split()[0])
    return subprocess.run(["nsenter", "-t", str(leader), "-m", "-u", "-i", "-n", "-p", "-r", "-w", *argv],
                          capture_output=True, text=True, timeout=20)


def test_machine_object_methods_match_the_manager(bus, machd, tmp_path):
    p = busybox_container(bus, tmp_path, "objm")
    try:
        # Read-only methods.
        assert object_call(bus, "objm", "GetUIDShift").stdout.strip() == "u 0"
        assert object_call(bus, "objm", "GetOSRelease").stdout == bus.call("GetMachineOSRelease", "s", "objm").stdout
        # No private network: the same named error both ways.
        assert object_error(bus, "objm", "GetAddresses") == "org.freedesktop.machine1.NoPrivateNetworking"
        assert bus.error_name("GetMachineAddresses", "string:objm") == "org.freedesktop.machine1.NoPrivateNetworking"

        # File descriptors.
        assert object_call(bus, "objm", "OpenPTY").stdout.startswith("hs ")
        assert object_call(bus, "objm", "OpenRootDirectory").stdout.startswith("h ")

        # OpenShell runs the command in the container (a pty is returned; the effect is checked inside).
        # The caller holds the pty master until then: a client that closes it at once (busctl) hangs
        # the shell up, and SIGHUP may end it before it ran.
        import dbus
        conn = dbus.bus.BusConnection(bus.address)
        try:
            master, pty = dbus.Interface(conn.get_object(DEST, machine_path("objm")), MACHINE).OpenShell(
                "root", "/bin/sh", ["sh", "-c", "echo shell-$((6*7)) > /tmp/objshell"], [])
            fd = master.take()
            try:
                assert fd >= 0 and str(pty).startswith("/dev/pts/"), pty
                assert wait_for(lambda: in_container(p, "cat", "/tmp/objshell").stdout == "shell-42\n")
            finally:
                os.close(fd)
        finally:
            conn.close()
        assert object_error(bus, "objm", "OpenShell", "string:nosuchuser", "string:/bin/sh", "array:string:",
                            "array:string:") == "org.freedesktop.DBus.Error.InvalidArgs"

        # Copies reply later (from machd's loop): to, existing target, replace flag, from.
        host = tmp_path / "host"
        host.mkdir()
        (host / "f").write_text("v1")
        object_call(bus, "objm", "CopyTo", "ss", host / "f", "/tmp/objf")
        assert in_container(p, "cat", "/tmp/objf").stdout == "v1"
        (host / "f").write_text("v2")
        assert object_error(bus, "objm", "CopyTo", "string:%s" % (host / "f"), "string:/tmp/objf") == \
            "org.freedesktop.DBus.Error.FileExists"
        object_call(bus, "objm", "CopyToWithFlags", "sst", host / "f", "/tmp/objf", 1)
        assert in_container(p, "cat", "/tmp/objf").stdout == "v2"
        object_call(bus, "objm", "CopyFrom", "ss", "/tmp/objf", host / "back")
        assert (host / "back").read_text() == "v2"
        object_call(bus, "objm", "CopyFromWithFlags", "sst", "/tmp/objshell", host / "back", 1)
        assert (host / "back").read_text() == "shell-42\n"
        assert object_error(bus, "objm", "CopyFrom", "string:relative", "string:/x") == \
            "org.freedesktop.DBus.Error.InvalidArgs"

        # BindMount into the container's own mount namespace, read-only, directory made on demand.
        (host / "shared").mkdir()
        (host / "shared" / "file").write_text("from-host")
        object_call(bus, "objm", "BindMount", "ssbb", host / "shared", "/mnt/objbind", "true", "true")
        assert in_container(p, "cat", "/mnt/objbind/file").stdout == "from-host"
        assert in_container(p, "touch", "/mnt/objbind/x").returncode != 0
        assert not (host / "shared" / "x").exists()
        assert not os.path.ismount("/mnt/objbind")  # the host's namespace is untouched

        # Not root: refused (the policy first; machd checks anyway, see test_login/test_policy).
        assert object_error(bus, "objm", "OpenPTY", user=65534) == "org.freedesktop.DBus.Error.AccessDenied"

        # Kill: SIGCONT to the leader is delivered and harmless; signal 0 is refused as by machined.
        object_call(bus, "objm", "Kill", "si", "leader", 18)
        assert p.poll() is None
        assert object_error(bus, "objm", "Kill", "string:leader", "int32:0") == "org.freedesktop.DBus.Error.InvalidArgs"
        object_call(bus, "objm", "Terminate")
        p.wait(20)
        assert wait_for(lambda: "objm" not in bus.call("ListMachines").stdout)
        assert object_error(bus, "objm", "GetUIDShift") == "org.freedesktop.DBus.Error.UnknownObject"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_manager_interface_is_whole_on_the_wire(bus, machd):
    """ListMachines comes from a plain sd-bus vtable next to the generated adaptor: one interface on
    the wire, with .host listed."""
    rows = bus.call_json("ListMachines")[0]
    assert [".host", "host", "", MANAGER + "/machine/_2ehost"] in rows
    xml = bus.busctl("introspect", "--xml-interface", DEST, MANAGER).stdout
    assert xml.count('<interface name="%s">' % IFACE) == 1 and '<method name="ListMachines">' in xml
