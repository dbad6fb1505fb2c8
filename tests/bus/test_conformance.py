"""systemd 252's own clients against machd: machinectl list/status/show/kill/terminate and
systemd-nspawn --register=yes (with and without --keep-unit) registering into machd.

machinectl refuses to run unless systemd is booted, so it runs in a private mount namespace with a
tmpfs on /run/systemd holding an empty system/ directory (and the state dir at machines/)."""
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import conftest

from conftest import CGROUP_ROOT, DEST, create, machine_cgroups, machine_path, wait_for

pytestmark = pytest.mark.skipif(not shutil.which("machinectl") or not shutil.which("systemd-nspawn"),
                                reason="systemd-container (machinectl, systemd-nspawn) not installed")

FAKE_BOOTED = "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system /run/systemd/machines"


def machinectl(bus, machd, *args, check=True):
    sh = FAKE_BOOTED + ' && mount --bind %s /run/systemd/machines && exec machinectl --no-pager "$@"' % machd.state_dir
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", sh, "sh"] + list(args),
                       env=bus.env(), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError("machinectl %s: %s" % (" ".join(args), r.stderr))
    return r


def test_machinectl_list_status_show(bus, machd, leaders, tmp_path):
    p = leaders.spawn()
    create(bus, "foo-bar", p.pid, root="/srv/foo")
    out = machinectl(bus, machd, "list").stdout
    assert "foo-bar container test" in out and "1 machines listed." in out
    assert ".host" not in out
    out = machinectl(bus, machd, "list", "--all").stdout
    assert ".host" in out and "2 machines listed." in out

    out = machinectl(bus, machd, "status", "foo-bar").stdout
    assert "foo-bar(0102030405060708090a0b0c0d0e0f10)" in out
    assert "Leader: %d (sleep)" % p.pid in out
    assert "Service: test; class container" in out
    assert "Root: /srv/foo" in out
    assert "Unit: machine-foo\\x2dbar.scope" in out
    assert "OS: Debian" in out

    show = dict(l.split("=", 1) for l in machinectl(bus, machd, "show", "foo-bar").stdout.splitlines() if "=" in l)
    assert show["Name"] == "foo-bar"
    assert show["Leader"] == str(p.pid)
    assert show["Class"] == "container"
    assert show["State"] == "running"
    assert show["Unit"] == "machine-foo\\x2dbar.scope"
    pool = machinectl(bus, machd, "show").stdout
    assert "PoolPath=%s" % (tmp_path / "pool") in pool


def test_machinectl_kill_and_terminate(bus, machd, leaders):
    p = leaders.spawn()
    create(bus, "mk", p.pid)
    machinectl(bus, machd, "kill", "--signal=SIGSTOP", "mk")
    assert wait_for(lambda: open("/proc/%d/stat" % p.pid).read().split()[2] == "T")
    machinectl(bus, machd, "kill", "--signal=SIGCONT", "mk")
    machinectl(bus, machd, "terminate", "mk")
    assert wait_for(lambda: p.poll() is not None)
    assert p.returncode == -signal.SIGTERM
    assert wait_for(lambda: "No machines." in machinectl(bus, machd, "list").stdout)
    r = machinectl(bus, machd, "terminate", "nope", check=False)
    assert r.returncode != 0 and "No machine 'nope' known" in r.stderr


def test_machinectl_show_unknown(bus, machd):
    r = machinectl(bus, machd, "status", "nope", check=False)
    assert r.returncode != 0 and "No machine 'nope' known" in r.stderr


def make_tree(path):
    """A tiny OS tree: busybox-static with sh/sleep and an os-release."""
    busybox = shutil.which("busybox")
    if not busybox:
        pytest.skip("busybox-static not installed")
    (path / "bin").mkdir(parents=True)
    (path / "etc").mkdir()
    (path / "usr/lib").mkdir(parents=True)
    shutil.copy(busybox, path / "bin/busybox")
    for n in ("sh", "sleep", "cat"):
        os.symlink("busybox", path / "bin" / n)
    (path / "etc/os-release").write_text('ID=mktest\nVERSION_ID=1\nPRETTY_NAME="machkit test tree"\n')
    return path


def nspawn(bus, tree, name, keep_unit, cgroup=None):
    conftest._record(name)
    cmd = "exec systemd-nspawn --quiet --register=yes %s -D %s -M %s --console=pipe /bin/sh -c 'sleep 1000'" % (
        "--keep-unit" if keep_unit else "", tree, name)
    if cgroup:
        cmd = "echo $$ > %s/cgroup.procs && " % cgroup + cmd
    return subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", FAKE_BOOTED + " && " + cmd],
                            env=bus.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_nspawn_create_machine_into_machd(bus, machd, leaders):
    tree = make_tree(bus.tmp / "tree")
    p = nspawn(bus, tree, "nsp", keep_unit=False)
    leaders.procs.append(p)
    assert wait_for(lambda: "nsp" in bus.call("ListMachines").stdout, timeout=10), p.stderr.read() if p.poll() else ""
    assert "nsp" in machinectl(bus, machd, "list").stdout
    unit = bus.get_property(machine_path("nsp"), "org.freedesktop.machine1.Machine", "Unit")
    assert unit == "machine-nsp.scope"
    assert bus.get_property(machine_path("nsp"), "org.freedesktop.machine1.Machine", "Service") == "systemd-nspawn"
    assert bus.call_json("GetMachineOSRelease", "s", "nsp")[0]["ID"] == "mktest"
    # nspawn's scope properties became a closed device policy with /dev/net/tun and pts allowed.
    devices = (machine_cgroups("nsp")[5] / "devices.list").read_text()
    assert "c 10:200 rwm" in devices and "c 136:* rw" in devices
    leader = bus.get_property(machine_path("nsp"), "org.freedesktop.machine1.Machine", "Leader")
    assert "/machine.slice/machine-nsp.scope" in open("/proc/%d/cgroup" % leader).read()
    # The container's PID 1 ignores SIGTERM: terminate escalates to SIGKILL after --stop-timeout.
    machinectl(bus, machd, "terminate", "nsp")
    p.wait(15)
    assert wait_for(lambda: "nsp" not in bus.call("ListMachines").stdout, timeout=5)
    for cg in machine_cgroups("nsp"):
        assert wait_for(lambda: not cg.exists()), cg


def test_nspawn_keep_unit_registers_into_machd(bus, machd, leaders):
    tree = make_tree(bus.tmp / "tree")
    unit = "mktest-%s.scope" % uuid.uuid4().hex[:8]
    cg = CGROUP_ROOT / "unified" / "mktest.slice" / unit
    cg.mkdir(parents=True)
    leaders.cgroups.append(cg)
    p = nspawn(bus, tree, "nspk", keep_unit=True, cgroup=cg)
    leaders.procs.append(p)
    assert wait_for(lambda: "nspk" in bus.call("ListMachines").stdout, timeout=10)
    assert bus.get_property(machine_path("nspk"), "org.freedesktop.machine1.Machine", "Unit") == unit
    assert "nspk" in machinectl(bus, machd, "list").stdout
    assert (machd.state_dir / "nspk").exists()
    for c in machine_cgroups("nspk"):
        assert not c.exists()  # --keep-unit: no scope of ours
    machinectl(bus, machd, "terminate", "nspk")
    p.wait(15)
    # nspawn unregisters on exit (and the leader's death would remove it anyway).
    assert wait_for(lambda: "nspk" not in bus.call("ListMachines").stdout, timeout=5)
    assert not (machd.state_dir / "nspk").exists()


def test_machinectl_shell_and_pty_in_a_container_without_systemd(bus, machd, leaders):
    tree = make_tree(bus.tmp / "tree")
    (tree / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
    os.symlink("busybox", tree / "bin/id")
    os.symlink("busybox", tree / "bin/head")
    p = nspawn(bus, tree, "sh1", keep_unit=False)
    leaders.procs.append(p)
    assert wait_for(lambda: "sh1" in bus.call("ListMachines").stdout, timeout=10)

    out = bus.call("OpenMachinePTY", "s", "sh1").stdout
    assert '"/dev/pts/' in out

    r = machinectl(bus, machd, "shell", "sh1", "/bin/sh", "-c",
                   "echo hello-$(head -1 /etc/os-release); echo pid=$$; head -1 /proc/self/cgroup")
    assert "hello-ID=mktest" in r.stdout
    # In the container's PID namespace and in its own cgroup (nspawn's payload: the cgroupns root).
    assert "pid=" in r.stdout and "pid=1\r" not in r.stdout
    assert ":/\r" in r.stdout or r.stdout.rstrip().endswith(":/")

    r = machinectl(bus, machd, "shell", "nobody@sh1", "/bin/id")
    assert "uid=65534" in r.stdout

    r = machinectl(bus, machd, "shell", "ghost@sh1", "/bin/id", check=False)
    assert r.returncode != 0 and "User 'ghost' does not exist" in r.stderr
    r = bus.call("OpenMachineShell", "sssasas", "sh1", "", "bin/sh", 0, 0, check=False)
    assert r.returncode != 0 and "is not absolute" in r.stderr
    r = bus.call("OpenMachineShell", "sssasas", "sh1", "", "/bin/sh", 0, 1, "NOEQUALS", check=False)
    assert r.returncode != 0 and "Invalid environment assignment" in r.stderr
    r = bus.busctl("call", DEST, "/org/freedesktop/machine1", "org.freedesktop.machine1.Manager", "OpenMachineShell",
                   "sssasas", "sh1", "", "/bin/sh", 0, 0, user=65534, check=False)
    assert r.returncode != 0 and "denied" in r.stderr.lower()

    machinectl(bus, machd, "terminate", "sh1")
    p.wait(15)


def test_machinectl_bind_into_container(bus, machd, leaders):
    tree = make_tree(bus.tmp / "tree")
    os.symlink("busybox", tree / "bin/touch")
    # A guest symlink pointing at a host path: the mount must land inside the guest, not on the host.
    os.symlink("/tmp", tree / "evil")
    p = nspawn(bus, tree, "bnd", keep_unit=False)
    leaders.procs.append(p)
    assert wait_for(lambda: "bnd" in bus.call("ListMachines").stdout, timeout=10)
    src = bus.tmp / "shared"
    src.mkdir()
    (src / "file").write_text("from-host\n")

    machinectl(bus, machd, "bind", "--mkdir", "bnd", str(src), "/mnt/shared")
    r = machinectl(bus, machd, "shell", "bnd", "/bin/cat", "/mnt/shared/file")
    assert "from-host" in r.stdout

    machinectl(bus, machd, "bind", "--mkdir", "--read-only", "bnd", str(src), "/mnt/ro")
    r = machinectl(bus, machd, "shell", "bnd", "/bin/sh", "-c", "touch /mnt/ro/x 2>&1; echo rc=$?")
    assert "rc=1" in r.stdout and not (src / "x").exists()

    machinectl(bus, machd, "bind", "--mkdir", "bnd", str(src), "/evil/escape")
    assert not Path("/tmp/escape").exists()
    assert (tree / "tmp/escape").is_dir() or "from-host" in machinectl(
        bus, machd, "shell", "bnd", "/bin/cat", "/evil/escape/file").stdout

    r = machinectl(bus, machd, "bind", "bnd", "relative", "/mnt/x", check=False)
    assert r.returncode != 0
    r = bus.call("BindMountMachine", "sssbb", "bnd", str(src), "/mnt/../etc", False, True, check=False)
    assert r.returncode != 0 and "normalized" in r.stderr
    machinectl(bus, machd, "terminate", "bnd")
    p.wait(15)


def test_machinectl_copy_to_and_from(bus, machd, leaders):
    tree = make_tree(bus.tmp / "tree")
    p = nspawn(bus, tree, "cpy", keep_unit=False)
    leaders.procs.append(p)
    assert wait_for(lambda: "cpy" in bus.call("ListMachines").stdout, timeout=10)
    src = bus.tmp / "in.txt"
    src.write_text("to-guest\n")
    machinectl(bus, machd, "copy-to", "cpy", str(src), "/in.txt")
    assert "to-guest" in machinectl(bus, machd, "shell", "cpy", "/bin/cat", "/in.txt").stdout
    r = machinectl(bus, machd, "copy-to", "cpy", str(src), "/in.txt", check=False)
    assert r.returncode != 0  # exists, no --force
    machinectl(bus, machd, "copy-to", "--force", "cpy", str(src), "/in.txt")
    machinectl(bus, machd, "copy-from", "cpy", "/etc/os-release", str(bus.tmp / "os-release"))
    assert "ID=mktest" in (bus.tmp / "os-release").read_text()
    machinectl(bus, machd, "terminate", "cpy")
    p.wait(15)


def test_machinectl_images_against_machd(bus, machd, tmp_path):
    pool = tmp_path / "pool"
    (pool / "conf-img" / "etc").mkdir(parents=True)
    (pool / "conf-img" / "etc" / "os-release").write_text("ID=confos\n")
    out = machinectl(bus, machd, "list-images").stdout
    assert "conf-img" in out and "directory" in out
    out = machinectl(bus, machd, "image-status", "conf-img").stdout
    assert str(pool / "conf-img") in out
    machinectl(bus, machd, "clone", "conf-img", "conf-img2")
    assert (pool / "conf-img2" / "etc" / "os-release").read_text() == "ID=confos\n"
    machinectl(bus, machd, "remove", "conf-img2")
    assert not (pool / "conf-img2").exists()


def test_image_status_lines_match_machinectl(bus, machd, tmp_path):
    """machctl image-status prints machinectl 252's lines, Machine ID: included (the time-relative
    Created/Modified lines aside)."""
    from test_machctl import MACHCTL
    pool = tmp_path / "pool"
    (pool / "idimg" / "etc").mkdir(parents=True)
    (pool / "idimg" / "etc" / "os-release").write_text('ID=confos\nPRETTY_NAME="Conf OS"\n')
    (pool / "idimg" / "etc" / "hostname").write_text("idhost\n")
    (pool / "idimg" / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")

    def stable(text):
        return [l for l in text.splitlines() if "Created:" not in l and "Modified:" not in l and "Usage:" not in l]
    theirs = stable(machinectl(bus, machd, "image-status", "idimg").stdout)
    ours = subprocess.run([str(MACHCTL), "image-status", "idimg"], env=bus.env(), capture_output=True, text=True)
    assert ours.returncode == 0, ours.stderr
    assert any("Machine ID: 0123456789abcdef0123456789abcdef" in l for l in theirs), theirs
    assert stable(ours.stdout) == theirs


def test_tables_and_json_byte_for_byte_with_machinectl(bus, machd, leaders, tmp_path):
    """list, list-images and list-transfers: machctl's output is machinectl 252's, byte for byte, in
    every output mode (addresses newline-joined or null, keys in column order, one json-seq record
    per table, list-transfers' table for -o json as 252 prints it)."""
    from test_machctl import MACHCTL
    from test_import1 import Handler
    import socketserver
    import threading
    p = leaders.spawn()
    create(bus, "cmp-m", p.pid, root="/srv/cmp")
    pool = tmp_path / "pool"
    (pool / "cmp-img" / "etc").mkdir(parents=True)
    (pool / "cmp-raw.raw").write_bytes(b"\0" * 4096)

    def both(*args):
        theirs = machinectl(bus, machd, *args, check=False)
        ours = subprocess.run([str(MACHCTL), *args], env=bus.env(), capture_output=True, text=True, timeout=30)
        assert ours.returncode == theirs.returncode, (args, ours.stderr, theirs.stderr)
        assert ours.stdout == theirs.stdout, args
        return ours.stdout
    for mode in ("short", "json", "json-pretty", "json-seq"):
        both("list", "--all", "-o", mode)
        both("list-images", "--all", "-o", mode)
    for extra in (["--max-addresses=0", "-o", "json"], ["--all", "--max-addresses=2"], ["--all", "-l"]):
        both("list", *extra)
    both("list", "--no-legend", "--all")
    both("list-images", "--no-legend")
    assert json.loads(both("list", "--all", "-o", "json"))[0]["machine"] == ".host"
    assert both("list-transfers") == "No transfers.\n"
    both("list-transfers", "-o", "json")

    class H(Handler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path), **kw)
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d/slow/" % srv.server_address[1]
    try:
        for n, kind in (("cmp-slow-a", "pull-tar"), ("cmp-slow-b", "pull-raw")):
            bus.busctl("call", "org.freedesktop.import1", "/org/freedesktop/import1", "org.freedesktop.import1.Manager",
                       "PullTar" if kind == "pull-tar" else "PullRaw", "sssb", url + n, n, "no", "false")
        out = both("list-transfers")
        assert "2 transfers listed." in out and "cmp-slow-b" in out
        both("list-transfers", "-o", "json")
        both("list-transfers", "--no-legend")
    finally:
        for t in json.loads(bus.busctl("--json=short", "call", "org.freedesktop.import1", "/org/freedesktop/import1",
                                       "org.freedesktop.import1.Manager", "ListTransfers").stdout)["data"][0]:
            bus.busctl("call", "org.freedesktop.import1", "/org/freedesktop/import1", "org.freedesktop.import1.Manager",
                       "CancelTransfer", "u", str(t[0]), check=False)
        srv.shutdown()
        srv.server_close()
