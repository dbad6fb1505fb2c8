"""machd under a real systemd: the Debian fixture booted with spawn -b, machd installed into it as
a systemd service with the project's unit and bus policy, and a container started in there with
spawn. It must land in machine.slice/machine-NAME.scope through systemd (machd's systemd scope
backend) and vanish with its container. Root only."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_boot import Console, nsenter  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def guest(leader, script, timeout=60):
    return nsenter(leader, "/bin/sh", "-c", script, timeout=timeout)


def test_machine_in_a_systemd_guest_gets_a_scope(spawn_bin, debian_tree, busybox_tree_template):
    build = pathlib.Path(spawn_bin).parents[2]
    machd = build / "src" / "machd" / "machd"
    if not machd.exists():
        pytest.skip("machd not built")
    c = Console([spawn_bin, "-x", "-b", "-D", str(debian_tree), "-M", "sysd",
                 f"--bind-ro={build}:/opt/mk", f"--bind-ro={busybox_tree_template}:/srv/bb",
                 "--bind-ro=/usr/lib/x86_64-linux-gnu:/opt/hostlib",
                 f"--bind-ro={REPO}/policy/org.freedesktop.machine1.conf:/etc/dbus-1/system.d/org.freedesktop.machine1.conf"])
    inner = None
    try:
        assert c.wait_for(r"Reached target [^\n]*multi-user\.target", 90), c.text()
        leader = c.leader()
        assert nsenter(leader, "systemctl", "is-system-running", "--wait").stdout.strip() == "running"
        # The project's unit, pointed at the build tree; libsdbus-c++ comes from the host.
        unit = (build / "units" / "machd.service").read_text()
        unit = "\n".join(l for l in unit.splitlines() if not l.startswith("ExecStart="))
        unit = unit.replace("[Service]", "[Service]\nExecStart=/opt/mk/src/machd/machd\n"
                                         "Environment=LD_LIBRARY_PATH=/opt/hostlib", 1)
        r = subprocess.run(["nsenter", "-t", str(leader), "-a", "-r", "-w", "/bin/sh", "-c",
                            "cat > /etc/systemd/system/machd.service && systemctl daemon-reload "
                            "&& systemctl start machd && systemctl is-active machd"],
                           input=unit + "\n", capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr + guest(leader, "journalctl -u machd --no-pager | tail -20").stdout
        # busctl talks to machd like any machine1 client.
        r = guest(leader, "busctl call org.freedesktop.machine1 /org/freedesktop/machine1 "
                          "org.freedesktop.machine1.Manager ListMachines")
        assert r.returncode == 0, r.stderr

        inner = subprocess.Popen(["nsenter", "-t", str(leader), "-a", "-r", "-w", "env",
                                  "LD_LIBRARY_PATH=/opt/hostlib", "/opt/mk/src/spawn/spawn", "-q", "-P", "--read-only",
                                  "-D", "/srv/bb", "-M", "inner", "--", "/bin/sh", "-c", "echo ready; exec sleep 1000"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = inner.stdout.readline()
        assert line.strip() == "ready", inner.stderr.read() if inner.poll() is not None else line
        r = guest(leader, "systemctl is-active machine-inner.scope; "
                          "systemctl show -p ControlGroup -p Slice -p Delegate machine-inner.scope; "
                          "busctl call org.freedesktop.machine1 /org/freedesktop/machine1 "
                          "org.freedesktop.machine1.Manager GetMachine s inner")
        assert r.returncode == 0, r.stdout + r.stderr
        out = r.stdout
        assert out.splitlines()[0] == "active", out
        assert "ControlGroup=/machine.slice/machine-inner.scope" in out
        assert "Slice=machine.slice" in out and "Delegate=yes" in out
        assert "/org/freedesktop/machine1/machine/inner" in out
        procs = guest(leader, "cat /sys/fs/cgroup/unified/machine.slice/machine-inner.scope/cgroup.procs").stdout.split()
        assert procs, "the container's PID 1 sits in the scope"

        # The container ends: machd drops it and systemd's scope goes.
        spawn_pid = int(pathlib.Path(f"/proc/{inner.pid}/task/{inner.pid}/children").read_text().split()[0])
        os.kill(spawn_pid, signal.SIGKILL)
        inner.wait(20)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            state = guest(leader, "systemctl is-active machine-inner.scope").stdout.strip()
            if state != "active":
                break
            time.sleep(0.2)
        assert state in ("inactive", "failed", "unknown"), state
        r = guest(leader, "busctl call org.freedesktop.machine1 /org/freedesktop/machine1 "
                          "org.freedesktop.machine1.Manager GetMachine s inner")
        assert r.returncode != 0 and "No machine" in r.stderr, r.stdout + r.stderr

        c.p.send_signal(signal.SIGTERM)
        assert c.wait_exit(60) == 0, c.text()
    finally:
        if inner and inner.poll() is None:
            inner.kill()
        if c.p.poll() is None:
            c.p.kill()
            c.p.wait()
