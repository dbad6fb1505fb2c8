"""io.machkit.Manager1, machd's extension interface (docs/dbus-api.md), on the wire: introspection
matches dbus/io.machkit.Manager1.xml, error names, root-only, and that machined's own interface is
untouched by it. Root only."""
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from conftest import DEST, MANAGER, create, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXT = "io.machkit.Manager1"


def error_name(bus, method, *args, user=None):
    cmd = ["dbus-send", "--bus=%s" % bus.address, "--print-reply", "--dest=" + DEST, MANAGER, EXT + "." + method] + list(args)
    if user is not None:
        cmd = ["setpriv", "--reuid=%d" % user, "--regid=%d" % user, "--clear-groups"] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if r.returncode == 0:
        return None
    line = r.stderr.strip().splitlines()[0]
    return line.split()[1].rstrip(":") if line.startswith("Error ") else line


def members(xml_text, iface):
    root = ET.fromstring(xml_text)
    for i in root.iter("interface"):
        if i.get("name") == iface:
            return {m.get("name"): [(a.get("type"), a.get("direction", "in")) for a in m.iter("arg")]
                    for m in i.iter("method")}
    return None


def test_introspection_matches_the_xml(bus, machd):
    live = bus.busctl("introspect", "--xml-interface", DEST, MANAGER).stdout
    assert members(live, EXT) == members((ROOT / "dbus" / (EXT + ".xml")).read_text(), EXT)
    # machined's interface is still exactly its own (test_introspection checks the details).
    assert "ExecMachine" not in str(members(live, "org.freedesktop.machine1.Manager"))


def test_errors(bus, machd, leaders):
    assert error_name(bus, "PauseMachine", "string:nope") == "org.freedesktop.machine1.NoSuchMachine"
    assert error_name(bus, "GetMachineFreezerState", "string:nope") == "org.freedesktop.machine1.NoSuchMachine"
    assert error_name(bus, "StartMachine", "string:../x") == "org.freedesktop.DBus.Error.InvalidArgs"
    assert error_name(bus, "PauseMachine", "string:.host") == "org.freedesktop.DBus.Error.NotSupported"
    p = leaders.spawn()
    create(bus, "ext1", p.pid)
    assert error_name(bus, "GetMachineFreezerState", "string:ext1") is None
    r = bus.busctl("call", DEST, MANAGER, EXT, "GetMachineFreezerState", "s", "ext1")
    assert r.stdout.strip() == 's "running"'
    assert bus.busctl("call", DEST, MANAGER, EXT, "PauseMachine", "s", "ext1").returncode == 0
    assert bus.busctl("call", DEST, MANAGER, EXT, "GetMachineFreezerState", "s", "ext1").stdout.strip() == 's "frozen"'
    assert bus.busctl("call", DEST, MANAGER, EXT, "ResumeMachine", "s", "ext1").returncode == 0
    # ExecMachine takes file descriptors, which busctl 252 cannot send: tests/bus/test_machctl.py
    # drives it through machctl (exit codes, pty, pipes, errors).


def test_root_only(bus, machd, leaders):
    p = leaders.spawn()
    create(bus, "ext2", p.pid)
    for method in ("PauseMachine", "ResumeMachine", "GetMachineFreezerState", "StartMachine"):
        assert error_name(bus, method, "string:ext2", user=65534) == "org.freedesktop.DBus.Error.AccessDenied", method


def test_machine_ready(bus, machd, leaders):
    # The leader is our child, so processes we start (busctl) are children of its parent: what
    # machd accepts from the spawn that runs a machine (it calls through a helper child).
    p = leaders.spawn()
    create(bus, "ext3", p.pid)
    assert error_name(bus, "GetMachineReady", "string:nope") == "org.freedesktop.machine1.NoSuchMachine"
    assert error_name(bus, "SetMachineReady", "string:nope") == "org.freedesktop.machine1.NoSuchMachine"
    assert bus.busctl("call", DEST, MANAGER, EXT, "GetMachineReady", "s", "ext3").stdout.strip() == "b false"
    # Readable by anyone (the bus policy allows it), settable only by root ...
    r = bus.busctl("call", DEST, MANAGER, EXT, "GetMachineReady", "s", "ext3", user=65534)
    assert r.stdout.strip() == "b false"
    assert error_name(bus, "SetMachineReady", "string:ext3", user=65534) == "org.freedesktop.DBus.Error.AccessDenied"
    # ... and, as root, only by the machine's supervisor: a grandchild of ours is not one.
    r = subprocess.run(["sh", "-c", 'dbus-send --bus="$0" --print-reply --dest=%s %s %s.SetMachineReady string:ext3; '
                        'exit $?' % (DEST, MANAGER, EXT), bus.address], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0, r.stdout
    assert r.stderr.startswith("Error org.freedesktop.DBus.Error.AccessDenied: Only the process running machine ext3")
    assert bus.busctl("call", DEST, MANAGER, EXT, "GetMachineReady", "s", "ext3").stdout.strip() == "b false"

    monitor = subprocess.Popen(["dbus-monitor", "--address", bus.address,
                                "type='signal',interface='%s',member='MachineReady'" % EXT],
                               stdout=subprocess.PIPE, text=True)
    try:
        monitor.stdout.readline()  # the monitor's own NameAcquired: its match is in place
        bus.busctl("call", DEST, MANAGER, EXT, "SetMachineReady", "s", "ext3")
        bus.busctl("call", DEST, MANAGER, EXT, "SetMachineReady", "s", "ext3")  # idempotent
        assert bus.busctl("call", DEST, MANAGER, EXT, "GetMachineReady", "s", "ext3").stdout.strip() == "b true"
        out = ""
        while "/org/freedesktop/machine1/machine/ext3" not in out:
            line = monitor.stdout.readline()
            assert line, out
            out += line
        assert "member=MachineReady" in out and 'string "ext3"' in out
    finally:
        monitor.terminate()
        monitor.wait()
    assert error_name(bus, "SetMachineReady", "string:.host") == "org.freedesktop.DBus.Error.AccessDenied"
    # A restarted machd re-adopts the machine as ready (machctl wait must not hang on it); the mark
    # is hidden from machined's readers, the state file unchanged.
    machd.stop()
    names = set(os.listdir(machd.state_dir))
    assert {".ready:ext3", "ext3"} <= names and all(n.startswith("unit:") for n in names - {".ready:ext3", "ext3"})
    machd.start()
    assert bus.busctl("call", DEST, MANAGER, EXT, "GetMachineReady", "s", "ext3").stdout.strip() == "b true"
    bus.call("TerminateMachine", "s", "ext3")
    assert wait_for(lambda: not os.path.exists(os.path.join(machd.state_dir, ".ready:ext3")))
