"""mk::bus::register_client (spawn's side of registration) against machd, through a small probe."""
import os
import subprocess

from conftest import BUILD, create, machine_cgroups, wait_for

PROBE = BUILD / "tests" / "bus" / "register-probe"


def probe(env, *args):
    r = subprocess.run([str(PROBE)] + [str(a) for a in args], env=env, capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout.strip()


def test_create_register_terminate_unregister(bus, machd, leaders):
    p = leaders.spawn()
    rc, out = probe(bus.env(), "create", "cli", p.pid, "TasksMax=50", "MemoryMax=64M", "CPUQuota=50%")
    assert (rc, out) == (0, "/org/freedesktop/machine1/machine/cli"), out
    assert bus.get_property("/org/freedesktop/machine1/machine/cli", "org.freedesktop.machine1.Machine",
                            "Service") == "machkit-spawn"
    unified, named, memory, pids, cpu, devices = machine_cgroups("cli")
    assert (pids / "pids.max").read_text().strip() == "50"
    assert int((memory / "memory.limit_in_bytes").read_text()) == 64 << 20
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert "c 10:200 rwm" in (devices / "devices.list").read_text()  # /dev/net/tun as nspawn asks
    rc, out = probe(bus.env(), "terminate", "cli")
    assert (rc, out) == (0, "ok")
    assert wait_for(lambda: p.poll() is not None)

    q, unit = leaders.spawn_in_scope()
    rc, out = probe(bus.env(), "register", "cli2", q.pid)
    assert rc == 0, out
    rc, out = probe(bus.env(), "unregister", "cli2")
    assert (rc, out) == (0, "ok")
    rc, out = probe(bus.env(), "unregister", "cli2")  # already gone: fine, as nspawn ignores it
    assert (rc, out) == (0, "ok")


def test_refused_has_the_dbus_name(bus, machd, leaders):
    p = leaders.spawn()
    create(bus, "taken", p.pid)
    q = leaders.spawn()
    rc, out = probe(bus.env(), "create", "taken", q.pid)
    assert rc == 1 and out.startswith("error refused org.freedesktop.machine1.MachineExists:"), out
    rc, out = probe(bus.env(), "create", "bad_name", q.pid)
    assert rc == 1 and out.startswith("error refused org.freedesktop.DBus.Error.InvalidArgs:"), out
    rc, out = probe(bus.env(), "create", "x", q.pid, "Bogus=1")
    assert rc == 1 and out.startswith("error bad_request"), out


def test_no_daemon_and_no_bus(bus, leaders):
    p = leaders.spawn()
    rc, out = probe(bus.env(), "create", "x", p.pid)  # bus up, machd not running
    assert rc == 1 and out.startswith("error no_daemon"), out
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS="unix:path=/nonexistent/socket")
    rc, out = probe(env, "create", "x", p.pid)
    assert rc == 1 and out.startswith("error no_bus"), out
