"""machctl -M/--machine and -H/--host, as machinectl's bus transports (issue 17 §6).

-M joins a running container's namespaces and talks to the system bus *inside* it: here a
container whose /run/dbus/system_bus_socket is a second private bus served by a second machd,
with a pool of its own, so what machctl lists tells which bus answered.
-H goes through `ssh -xT HOST systemd-stdio-bridge`: a fake `ssh` on PATH runs the real
systemd-stdio-bridge locally against the private bus (no network at all). Root only."""
import os
import pathlib
import stat
import subprocess

import pytest

from conftest import BUILD, Bus, Machd

SPAWN = BUILD / "src" / "spawn" / "spawn"
MACHCTL = BUILD / "src" / "machctl" / "machctl"
HELPERS = pathlib.Path(__file__).resolve().parents[1] / "helpers"

pytestmark = pytest.mark.skipif(not MACHCTL.exists(), reason="machctl not built")


def run(cmd, env, timeout=60):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def images(stdout):
    return sorted(l.split()[0] for l in stdout.splitlines() if l.strip())


@pytest.fixture
def inner(tmp_path):
    """A second bus with its own machd and pool: what the guest's /run/dbus/system_bus_socket serves."""
    b = Bus()
    pool = tmp_path / "inner-pool"
    (pool / "inner-img").mkdir(parents=True)
    d = Machd(b, tmp_path / "inner-machines", pool=pool)
    d.start()
    yield b
    d.stop()
    b.close()


@pytest.fixture
def guest(bus, machd, tmp_path, inner):
    (machd.pool / "outer-img").mkdir(parents=True, exist_ok=True)
    tree = tmp_path / "mttree"
    subprocess.run([str(HELPERS / "busybox-tree.sh"), str(tree)], check=True)
    # sd-bus 252 connects to /var/run/dbus/system_bus_socket inside; Debian has /var/run -> /run.
    (tree / "var" / "run").symlink_to("../run")
    p = subprocess.Popen([str(SPAWN), "-q", "-P", "-D", str(tree), "-M", "mt-guest",
                          f"--bind={inner.socket}:/run/dbus/system_bus_socket",
                          "--", "/bin/sh", "-c", "echo ready; exec sleep 1000"],
                         env=bus.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL)
    line = p.stdout.readline()
    assert line.strip() == "ready", p.stderr.read()
    yield machd
    p.kill()
    p.wait()


def in_machine_namespace(state_dir, *machctl_args):
    """machctl as it runs on a host whose machine manager keeps its state in /run/systemd/machines
    (sd-bus reads the leader from there): machd's test state dir is bound over it, privately."""
    q = " ".join("'%s'" % a for a in [MACHCTL, *machctl_args])
    return ["unshare", "-m", "sh", "-c",
            f"mount --make-rprivate / && mount --bind '{state_dir}' /run/systemd/machines && exec {q}"]


def test_machine_transport_talks_to_the_bus_inside_the_container(bus, guest):
    local = run([MACHCTL, "list-images", "--no-legend"], bus.env())
    assert local.returncode == 0, local.stderr
    assert images(local.stdout) == ["outer-img"]
    r = run(in_machine_namespace(guest.state_dir, "-M", "mt-guest", "list-images", "--no-legend"), bus.env())
    assert r.returncode == 0, r.stderr
    assert images(r.stdout) == ["inner-img"]
    r = run(in_machine_namespace(guest.state_dir, "--machine=mt-guest", "shell"), bus.env())
    assert r.returncode == 1 and r.stderr.strip() == "Shell only supported on local machines.", r.stderr


def test_machine_transport_errors(bus, machd):
    r = run(in_machine_namespace(machd.state_dir, "-M", "mt-nosuch", "list"), bus.env())
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "container mt-nosuch" in r.stderr, r.stderr
    r = run([MACHCTL, "-M", "bad/name", "list"], bus.env())
    assert r.returncode != 0 and "Invalid --machine= value" in r.stderr


def fake_ssh(tmp_path, address):
    d = tmp_path / "fakebin"
    d.mkdir()
    log = tmp_path / "ssh.args"
    ssh = d / "ssh"
    # Records how it was called, then plays the remote side: systemd-stdio-bridge on the private bus.
    ssh.write_text(f"""#!/bin/sh
printf '%s\\n' "$*" > '{log}'
shift $(($# - 1))
exec systemd-stdio-bridge --bus-path='{address}'
""")
    ssh.chmod(ssh.stat().st_mode | stat.S_IXUSR)
    return d, log


def test_host_transport_through_ssh_and_stdio_bridge(bus, machd, tmp_path):
    (machd.pool / "remote-img").mkdir(parents=True, exist_ok=True)
    bindir, log = fake_ssh(tmp_path, bus.address)
    env = dict(os.environ)
    env["PATH"] = f"{bindir}:{env['PATH']}"
    env["DBUS_SYSTEM_BUS_ADDRESS"] = "unix:path=/nonexistent/bus"  # -H must not use the local bus
    r = run([MACHCTL, "-H", "tester@far.example", "list-images", "--no-legend"], env)
    assert r.returncode == 0, r.stderr
    assert images(r.stdout) == ["remote-img"]
    assert log.read_text().split() == ["-xT", "--", "tester@far.example", "systemd-stdio-bridge"]
    r = run([MACHCTL, "--host=tester@far.example", "login", "x"], env)
    assert r.returncode == 1 and r.stderr.strip() == "Login only supported on local machines.", r.stderr
    r = run([MACHCTL, "-H", "-oProxyCommand=x", "list"], env)
    assert r.returncode != 0 and "Invalid --host= value" in r.stderr


def test_last_transport_option_wins(bus, machd, tmp_path):
    (machd.pool / "local-img").mkdir(parents=True, exist_ok=True)
    r = run([MACHCTL, "-H", "nowhere", "-M", ".host", "-H", "x", "--help"], bus.env())
    assert r.returncode == 0
    bindir, log = fake_ssh(tmp_path, bus.address)
    env = bus.env()
    env["PATH"] = f"{bindir}:{env['PATH']}"
    r = run([MACHCTL, "-M", "somewhere", "-H", "h", "list-images", "--no-legend"], env)
    assert r.returncode == 0, r.stderr
    assert images(r.stdout) == ["local-img"] and log.read_text().split()[2] == "h"
