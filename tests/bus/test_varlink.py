"""machd's Varlink API (io.systemd.Machine, io.systemd.MachineImage, org.varlink.service) against
systemd 262's own programs from the sid tree (tests/helpers/sid-fixture.sh): varlinkctl, and
machinectl 262 (which needs machd on D-Bus too, and from 261 on calls io.systemd.Machine.List before
poweroff/reboot/terminate). The sid programs run through the tree's loader; machinectl runs in a
private mount namespace with a tmpfs on /run/systemd, machd's Varlink directory bound to
/run/systemd/machine - the host's /run/systemd/machine is never touched."""
import contextlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import create, machine_path, wait_for

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def sid():
    r = subprocess.run([str(HERE.parent / "helpers" / "sid-fixture.sh")], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("no sid tree: %s" % r.stderr.strip()[-300:])
    tree = Path(r.stdout.strip().splitlines()[-1])
    if not (tree / "usr/bin/varlinkctl").exists():
        pytest.skip("the sid tree has no varlinkctl")
    return tree


def loader(tree):
    libs = ":".join(str(tree / d) for d in ("usr/lib/x86_64-linux-gnu/systemd", "usr/lib/x86_64-linux-gnu",
                                            "lib/x86_64-linux-gnu"))
    return [str(tree / "lib64/ld-linux-x86-64.so.2"), "--library-path", libs]


@contextlib.contextmanager
def everyone_reaches(path):
    """pytest's temp dirs are 0700: let an unprivileged client reach the 0666 sockets inside, for the
    call only. The modes are put back: spawn -U refuses trees that other users can reach, and later
    tests keep their trees under the same 0700 /tmp/pytest-of-root."""
    changed = []
    path = Path(path)
    while path not in (Path("/tmp"), Path("/")):
        mode = os.stat(path).st_mode
        changed.append((path, mode))
        os.chmod(path, mode | 0o011)
        path = path.parent
    try:
        yield
    finally:
        for p, mode in changed:
            os.chmod(p, mode & 0o7777)


def varlinkctl(tree, *args, check=True, user=None):
    cmd = loader(tree) + [str(tree / "usr/bin/varlinkctl")] + list(args)
    if user:
        cmd = ["setpriv", "--reuid=%d" % user, "--regid=%d" % user, "--clear-groups"] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError("varlinkctl %s: %s" % (" ".join(args), r.stderr))
    return r


def machinectl262(tree, bus, machd, *args, check=True):
    prog = " ".join("'%s'" % a for a in loader(tree) + [str(tree / "usr/bin/machinectl")])
    sh = ("mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system /run/systemd/machines /run/systemd/machine"
          " && mount --bind %s /run/systemd/machines && mount --bind %s /run/systemd/machine"
          ' && exec %s --no-pager "$@"' % (machd.state_dir, machd.varlink_dir, prog))
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", sh, "sh"] + list(args),
                       env=bus.env(), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError("machinectl 262 %s: %s" % (" ".join(args), r.stderr))
    return r


def machined_idl(tree, tmp_path, which):
    exe = tmp_path / "machined_idl"
    if not exe.exists():
        subprocess.run(["cc", "-o", str(exe), str(HERE.parent / "helpers" / "machined_idl.c"),
                        str(tree / "usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-262.so"),
                        "-Wl,--allow-shlib-undefined"], check=True)
    return subprocess.run(loader(tree) + [str(exe), which], capture_output=True, text=True, check=True).stdout


def records(out):
    """varlinkctl --more prints one JSON object per reply (as a JSON sequence: RS before each)."""
    return [json.loads(l.strip("\x1e")) for l in out.splitlines() if l.strip("\x1e").strip()]


def sock(machd, iface="io.systemd.Machine"):
    return str(machd.varlink_dir / iface)


def test_sockets_are_0666(machd):
    for iface in ("io.systemd.Machine", "io.systemd.MachineImage"):
        st = os.stat(sock(machd, iface))
        assert oct(st.st_mode & 0o7777) == "0o666"


def test_introspection_matches_machined_262(sid, machd, tmp_path):
    for iface, which in (("io.systemd.Machine", "Machine"), ("io.systemd.MachineImage", "MachineImage")):
        ours = varlinkctl(sid, "introspect", sock(machd, iface), iface).stdout
        theirs = machined_idl(sid, tmp_path, which)
        assert ours.strip() == theirs.strip(), iface
    info = json.loads(varlinkctl(sid, "info", "--json=short", sock(machd)).stdout)
    assert set(info.get("interfaces", info.get("Interfaces", []))) == {"org.varlink.service", "io.systemd.Machine", "io.systemd.MachineImage"}
    ours = varlinkctl(sid, "introspect", sock(machd), "org.varlink.service").stdout
    assert ours.strip() == machined_idl(sid, tmp_path, "service").strip()


def call(tree, machd, method, params, *flags, iface="io.systemd.Machine", check=True, user=None):
    with everyone_reaches(machd.varlink_dir) if user else contextlib.nullcontext():
        return varlinkctl(tree, "call", "--json=short", *flags, sock(machd, iface), method, json.dumps(params),
                          check=check, user=user)


def test_register_list_kill_terminate_over_varlink(sid, bus, machd, leaders):
    p = leaders.spawn()
    machd.created.add("vl-one")
    # A pidfdId that is not the process's pidfd inode names another process: refused.
    r = call(sid, machd, "io.systemd.Machine.Register", {"name": "vl-one", "class": "container",
                                                         "leaderProcessId": {"pid": p.pid, "pidfdId": 1}}, check=False)
    assert r.returncode != 0 and "ESRCH" in r.stdout
    r = call(sid, machd, "io.systemd.Machine.Register", {"name": "vl-one", "class": "container", "leader": p.pid,
                                                         "leaderProcessId": {"pid": p.pid + 1}}, check=False)
    assert json.loads(r.stdout) == {"parameter": "leaderProcessId"}
    r = call(sid, machd, "io.systemd.Machine.Register", {"name": "vl-one", "class": "container", "leader": p.pid,
                                                         "bogus": 1}, check=False)
    assert json.loads(r.stdout) == {"parameter": "bogus"}
    call(sid, machd, "io.systemd.Machine.Register",
         {"name": "vl-one", "class": "container", "service": "test", "leaderProcessId": {"pid": p.pid},
          "rootDirectory": "/srv/vl", "allocateUnit": True, "controlAddress": "unix:/nonexistent"})
    # The D-Bus side sees the same machine: one core.
    r = bus.busctl("--json=short", "call", "org.freedesktop.machine1", "/org/freedesktop/machine1",
                   "org.freedesktop.machine1.Manager", "GetMachine", "s", "vl-one")
    assert r.returncode == 0
    one = json.loads(call(sid, machd, "io.systemd.Machine.List", {"name": "vl-one"}).stdout)
    assert one["name"] == "vl-one" and one["class"] == "container" and one["leader"]["pid"] == p.pid
    assert one["rootDirectory"] == "/srv/vl" and one["controlAddress"] == "unix:/nonexistent"
    assert one["unit"] == "machine-vl\\x2done.scope"
    names = {m["name"] for m in records(call(sid, machd, "io.systemd.Machine.List", {}, "--more").stdout)}
    assert {"vl-one", ".host"} <= names
    # Without more, a full listing is refused as machined does.
    r = call(sid, machd, "io.systemd.Machine.List", {}, check=False)
    assert r.returncode != 0 and "called without 'more' flag" in r.stderr  # varlinkctl's text for ExpectedMore
    meta = json.loads(call(sid, machd, "io.systemd.Machine.List", {"name": ".host", "acquireMetadata": "yes"}).stdout)
    assert any(l.startswith("ID=") for l in meta["OSRelease"])
    r = call(sid, machd, "io.systemd.Machine.List", {"name": "nope-nope"}, check=False)
    assert "io.systemd.Machine.NoSuchMachine" in r.stderr
    r = call(sid, machd, "io.systemd.Machine.List", {"name": "bad/name"}, check=False)
    assert "Invalid argument" in r.stderr and json.loads(r.stdout) == {"parameter": "name"}  # InvalidParameter
    # Unprivileged callers may list but not kill.
    r = call(sid, machd, "io.systemd.Machine.Kill", {"name": "vl-one", "signal": 15}, check=False, user=65534)
    assert "Permission denied" in r.stderr and p.poll() is None
    call(sid, machd, "io.systemd.Machine.List", {"name": "vl-one"}, user=65534)
    call(sid, machd, "io.systemd.Machine.Kill", {"name": "vl-one", "whom": "leader", "signal": 10})
    assert wait_for(lambda: p.poll() is not None)
    assert wait_for(lambda: "NoSuchMachine" in call(sid, machd, "io.systemd.Machine.List", {"name": "vl-one"},
                                                     check=False).stderr)


def test_duplicate_register_is_machine_exists(sid, bus, machd, leaders):
    p = leaders.spawn()
    machd.created.add("vl-dup")
    params = {"name": "vl-dup", "class": "container", "leader": p.pid, "allocateUnit": True}
    call(sid, machd, "io.systemd.Machine.Register", params)
    r = call(sid, machd, "io.systemd.Machine.Register", params, check=False)
    assert "io.systemd.Machine.MachineExists" in r.stderr
    call(sid, machd, "io.systemd.Machine.Terminate", {"name": "vl-dup"})
    assert wait_for(lambda: p.poll() is not None)


def test_open_root_directory_passes_an_fd(sid, bus, machd, leaders, tmp_path):
    p = leaders.spawn()
    machd.created.add("vl-root")
    call(sid, machd, "io.systemd.Machine.Register",
         {"name": "vl-root", "class": "container", "leader": p.pid, "allocateUnit": True})
    # varlinkctl prints the reply; the fd itself arrives with SCM_RIGHTS (index 0).
    out = json.loads(call(sid, machd, "io.systemd.Machine.OpenRootDirectory", {"name": "vl-root"}).stdout)
    assert out == {"fileDescriptor": 0}
    call(sid, machd, "io.systemd.Machine.Unregister", {"name": "vl-root"})


def test_image_list_update_clone_remove(sid, bus, machd):
    pool = machd.pool
    (pool / "img-a" / "etc").mkdir(parents=True)
    (pool / "img-a" / "etc" / "hostname").write_text("alpha\n")
    (pool / "img-a" / "etc" / "os-release").write_text("ID=test\n")
    one = json.loads(call(sid, machd, "io.systemd.MachineImage.List", {"name": "img-a", "acquireMetadata": "yes"},
                          iface="io.systemd.MachineImage").stdout)
    assert one["name"] == "img-a" and one["type"] == "directory" and one["hostname"] == "alpha"
    assert one["OSRelease"] == ["ID=test"]
    call(sid, machd, "io.systemd.MachineImage.Clone", {"name": "img-a", "newName": "img-b"}, iface="io.systemd.MachineImage")
    call(sid, machd, "io.systemd.MachineImage.Update", {"name": "img-b", "newName": "img-c"}, iface="io.systemd.MachineImage")
    names = {i["name"] for i in records(call(sid, machd, "io.systemd.MachineImage.List", {}, "--more",
                                             iface="io.systemd.MachineImage").stdout)}
    assert names == {"img-a", "img-c"}
    call(sid, machd, "io.systemd.MachineImage.Remove", {"name": "img-c"}, iface="io.systemd.MachineImage")
    r = call(sid, machd, "io.systemd.MachineImage.Remove", {"name": "img-c"}, iface="io.systemd.MachineImage", check=False)
    assert "io.systemd.MachineImage.NoSuchImage" in r.stderr
    r = call(sid, machd, "io.systemd.MachineImage.Remove", {"name": "img-a"}, iface="io.systemd.MachineImage",
             check=False, user=65534)
    assert "Permission denied" in r.stderr and (pool / "img-a").exists()


# machinectl 262's verbs against machd (D-Bus plus the Varlink List it calls first from 261 on).
def test_machinectl_262_list_status_show(sid, bus, machd, leaders):
    p = leaders.spawn()
    create(bus, "vl-mc", p.pid, root="/srv/vl-mc")
    out = machinectl262(sid, bus, machd, "list").stdout
    assert "vl-mc" in out and "container" in out
    out = machinectl262(sid, bus, machd, "status", "vl-mc").stdout
    assert "Leader: %d" % p.pid in out
    show = machinectl262(sid, bus, machd, "show", "vl-mc").stdout
    assert "Name=vl-mc" in show and "Class=container" in show


@pytest.mark.parametrize("verb", ["terminate", "poweroff", "reboot"])
def test_machinectl_262_stop_verbs(sid, bus, machd, leaders, verb):
    p = leaders.spawn()
    create(bus, "vl-" + verb, p.pid)
    machinectl262(sid, bus, machd, verb, "vl-" + verb)
    # poweroff/reboot fall back (no controlAddress) to KillMachine with SIGRTMIN+4 / SIGINT, which
    # end the stand-in leader (sleep) as they would not a booted guest.
    assert wait_for(lambda: p.poll() is not None)


def test_machinectl_262_kill(sid, bus, machd, leaders):
    p = leaders.spawn()
    create(bus, "vl-kill", p.pid)
    machinectl262(sid, bus, machd, "kill", "--signal=SIGKILL", "vl-kill")
    assert wait_for(lambda: p.poll() is not None)


def test_machinectl_262_image_verbs(sid, bus, machd):
    (machd.pool / "vlimg" / "etc").mkdir(parents=True)
    out = machinectl262(sid, bus, machd, "list-images").stdout
    assert "vlimg" in out
    machinectl262(sid, bus, machd, "clone", "vlimg", "vlimg2")
    machinectl262(sid, bus, machd, "rename", "vlimg2", "vlimg3")
    machinectl262(sid, bus, machd, "read-only", "vlimg3")
    machinectl262(sid, bus, machd, "read-only", "vlimg3", "false")
    assert "vlimg3" in machinectl262(sid, bus, machd, "image-status", "vlimg3").stdout
    assert "Name=vlimg3" in machinectl262(sid, bus, machd, "show-image", "vlimg3").stdout
    machinectl262(sid, bus, machd, "remove", "vlimg3")
    assert not (machd.pool / "vlimg3").exists()
    # set-limit needs btrfs quota, as with machined: refused with the reason on other file systems.
    r = machinectl262(sid, bus, machd, "set-limit", "vlimg", "1G", check=False)
    assert r.returncode != 0 and "btrfs" in r.stderr
    machinectl262(sid, bus, machd, "clone", "vlimg", "vlimg-ro")
    machinectl262(sid, bus, machd, "read-only", "vlimg-ro")
    machinectl262(sid, bus, machd, "clean", "--all")
    assert not (machd.pool / "vlimg").exists() and (machd.pool / "vlimg-ro").exists()
    machinectl262(sid, bus, machd, "read-only", "vlimg-ro", "false")
    machinectl262(sid, bus, machd, "remove", "vlimg-ro")


def test_machinectl_262_sees_a_layer_stack(sid, bus, machd):
    """systemd 262's machinectl over our Varlink API: an OCI layer stack is the image NAME of
    type mstack (its own word for it), its OS comes from the merged layers, and remove takes the
    stack with the layer no other stack links."""
    layer = machd.pool / (".oci-sha256-" + "a" * 64)
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "os-release").write_text("ID=vlstackos\nPRETTY_NAME=\"Stack OS\"\n")
    st = machd.pool / "vlstack.mstack"
    (st / "rw").mkdir(parents=True)
    os.symlink("../" + layer.name, st / "layer@0")
    rows = [l.split() for l in machinectl262(sid, bus, machd, "list-images", "--no-legend").stdout.splitlines()]
    assert ["vlstack", "mstack"] in [r[:2] for r in rows], rows
    out = machinectl262(sid, bus, machd, "image-status", "vlstack").stdout
    assert "mstack" in out and "Stack OS" in out, out
    machinectl262(sid, bus, machd, "remove", "vlstack")
    assert not st.exists() and not layer.exists()


def open_and_read(machd, params, read=True):
    """Calls io.systemd.Machine.Open as a plain Varlink client; returns what the pty shows until it
    closes (or, with read=False, the ptyPath)."""
    import array
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock(machd))
        s.sendall(json.dumps({"method": "io.systemd.Machine.Open", "parameters": params}).encode() + b"\0")
        data, fds = b"", []
        while not data.endswith(b"\0"):
            msg, anc, _, _ = s.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
            assert msg, "machd closed the connection"
            data += msg
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += array.array("i", payload[:len(payload) - len(payload) % 4]).tolist()
    reply = json.loads(data[:-1])
    assert "error" not in reply, reply
    assert reply["parameters"]["ptyFileDescriptor"] == 0 and len(fds) == 1
    try:
        if not read:
            return reply["parameters"]["ptyPath"]
        import select
        out = b""
        while select.select([fds[0]], [], [], 30)[0]:  # bounded: a stuck pty fails the assert below
            try:
                chunk = os.read(fds[0], 4096)
            except OSError:  # EIO: the shell exited and closed the pty
                break
            if not chunk:
                break
            out += chunk
        return out.decode(errors="replace")
    finally:
        os.close(fds[0])


def nspawn262(tree, bus, machd, os_tree, name, cgroup):
    """systemd-nspawn 262 --keep-unit in `cgroup`. It refuses a v1/hybrid host, so its private
    mount namespace shows the host's cgroup2 hierarchy at /sys/fs/cgroup (as on a unified host)."""
    prog = " ".join("'%s'" % a for a in loader(tree) + [str(tree / "usr/bin/systemd-nspawn")])
    sh = ("echo $$ > %s/cgroup.procs && mount -t tmpfs tmpfs /run/systemd"
          " && mkdir /run/systemd/system /run/systemd/machines /run/systemd/machine"
          " && mount --bind /sys/fs/cgroup/unified /sys/fs/cgroup && mount --bind %s /run/systemd/machine"
          " && exec %s --quiet --register=yes --keep-unit -D %s -M %s --console=pipe /bin/sh -c 'sleep 1000'"
          % (cgroup, machd.varlink_dir, prog, os_tree, name))
    machd.created.add(name)
    return subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", sh], env=bus.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_nspawn_262_registers_over_varlink_and_machinectl_262_enters(sid, bus, machd, leaders):
    import test_conformance
    import uuid
    from conftest import CGROUP_ROOT
    tree = test_conformance.make_tree(bus.tmp / "tree")
    os.symlink("busybox", tree / "bin/touch")
    cg = CGROUP_ROOT / "unified" / "mktest.slice" / ("mktest-%s.scope" % uuid.uuid4().hex[:8])
    cg.mkdir(parents=True)
    leaders.cgroups.append(cg)
    p = nspawn262(sid, bus, machd, tree, "vl-nsp", cg)
    leaders.procs.append(p)
    assert wait_for(lambda: "vl-nsp" in call(sid, machd, "io.systemd.Machine.List", {"name": "vl-nsp"},
                                             check=False).stdout, timeout=15), p.stderr.read() if p.poll() else ""
    m = json.loads(call(sid, machd, "io.systemd.Machine.List", {"name": "vl-nsp"}).stdout)
    assert m["service"] == "systemd-nspawn" and m["class"] == "container" and m["rootDirectory"] == str(tree)
    # Only io.systemd.Machine.Register records a supervisor: nspawn 262 took the Varlink road.
    assert m["supervisor"]["pid"] > 0

    # machinectl 262's verbs that enter the machine.
    r = machinectl262(sid, bus, machd, "shell", "vl-nsp", "/bin/sh", "-c", "echo hello-$(cat /etc/os-release | head -1)")
    assert "hello-ID=mktest" in r.stdout
    src = bus.tmp / "shared"
    src.mkdir()
    (src / "file").write_text("from-host\n")
    machinectl262(sid, bus, machd, "bind", "--mkdir", "vl-nsp", str(src), "/mnt/shared")
    assert "from-host" in machinectl262(sid, bus, machd, "shell", "vl-nsp", "/bin/cat", "/mnt/shared/file").stdout
    (bus.tmp / "in.txt").write_text("to-guest\n")
    machinectl262(sid, bus, machd, "copy-to", "vl-nsp", str(bus.tmp / "in.txt"), "/in.txt")
    assert "to-guest" in machinectl262(sid, bus, machd, "shell", "vl-nsp", "/bin/cat", "/in.txt").stdout
    machinectl262(sid, bus, machd, "copy-from", "vl-nsp", "/etc/os-release", str(bus.tmp / "os-release"))
    assert "ID=mktest" in (bus.tmp / "os-release").read_text()

    # The same over Varlink directly: CopyTo, CopyFrom (replace), BindMount.
    (bus.tmp / "vl.txt").write_text("by-varlink\n")
    call(sid, machd, "io.systemd.Machine.CopyTo", {"name": "vl-nsp", "source": str(bus.tmp / "vl.txt"),
                                                   "destination": "/vl.txt"})
    r = call(sid, machd, "io.systemd.Machine.CopyTo", {"name": "vl-nsp", "source": str(bus.tmp / "vl.txt"),
                                                       "destination": "/vl.txt"}, check=False)
    assert r.returncode != 0 and "EEXIST" in r.stdout  # io.systemd.System {errno, errnoName}
    call(sid, machd, "io.systemd.Machine.CopyFrom", {"name": "vl-nsp", "source": "/vl.txt",
                                                     "destination": str(bus.tmp / "back.txt")})
    assert (bus.tmp / "back.txt").read_text() == "by-varlink\n"
    call(sid, machd, "io.systemd.Machine.CopyFrom", {"name": "vl-nsp", "source": "/vl.txt",
                                                     "destination": str(bus.tmp / "back.txt"), "replace": True})
    call(sid, machd, "io.systemd.Machine.BindMount", {"name": "vl-nsp", "source": str(src), "destination": "/mnt/vl",
                                                      "mkdir": True, "readOnly": True})
    assert "from-host" in machinectl262(sid, bus, machd, "shell", "vl-nsp", "/bin/cat", "/mnt/vl/file").stdout
    r = call(sid, machd, "io.systemd.Machine.CopyTo", {"name": "vl-nsp", "source": str(src / "file")},
             check=False, user=65534)
    assert "Permission denied" in r.stderr
    r = call(sid, machd, "io.systemd.Machine.MapTo", {"uid": 1000}, check=False)
    assert "io.systemd.Machine.UserInHostRange" in r.stderr
    # No user namespace: the container's map is the identity, so it owns every host ID (as on D-Bus).
    out = json.loads(call(sid, machd, "io.systemd.Machine.MapTo", {"gid": 0x7fff0000}).stdout)
    assert out == {"gid": 0x7fff0000, "machineName": "vl-nsp"}
    assert json.loads(call(sid, machd, "io.systemd.Machine.MapFrom", {"name": "vl-nsp", "uid": 0}).stdout) == {"uid": 0}

    # io.systemd.Machine.Open: the pty master arrives with SCM_RIGHTS.
    out = open_and_read(machd, {"name": "vl-nsp", "mode": "shell", "path": "/bin/sh",
                                "args": ["/bin/sh", "-c", "echo opened-$(cat /etc/os-release | head -1)"]})
    assert "opened-ID=mktest" in out
    tty = open_and_read(machd, {"name": "vl-nsp", "mode": "tty"}, read=False)
    assert tty.startswith("/dev/pts/")
    # login needs the guest's systemd on its bus: this guest has none, NoIPC says so.
    r = call(sid, machd, "io.systemd.Machine.Open", {"name": "vl-nsp", "mode": "login"}, check=False)
    assert r.returncode != 0 and "io.systemd.Machine.NoIPC" in r.stderr
    r = call(sid, machd, "io.systemd.Machine.Open", {"name": "vl-nsp", "mode": "tty", "user": "root"}, check=False)
    assert json.loads(r.stdout) == {"parameter": "user"}

    machinectl262(sid, bus, machd, "terminate", "vl-nsp")
    p.wait(15)
    # nspawn unregisters when its container ends.
    assert wait_for(lambda: "NoSuchMachine" in call(sid, machd, "io.systemd.Machine.List", {"name": "vl-nsp"},
                                                     check=False).stderr, timeout=5)


from test_machctl_boot import debian_tree, guests  # noqa: E402,F401 (fixtures: a booted Debian 12 guest)


def test_machinectl_262_login_and_varlink_open_login(sid, bus, machd, guests):
    """machinectl 262 login (D-Bus OpenMachineLogin) and io.systemd.Machine.Open mode=login, both
    against a booted guest whose systemd starts the getty on the new pty."""
    from test_login import TerminalSession, log_in_on
    g = guests("vl-login")
    assert g.wait_for(r"Reached target [^\n]*multi-user\.target"), g.text()
    prog = " ".join("'%s'" % a for a in loader(sid) + [str(sid / "usr/bin/machinectl")])
    sh = ("mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system /run/systemd/machines /run/systemd/machine"
          " && mount --bind %s /run/systemd/machines && mount --bind %s /run/systemd/machine && exec %s login vl-login"
          % (machd.state_dir, machd.varlink_dir, prog))
    with TerminalSession(bus, ["unshare", "-m", "--propagation", "private", "sh", "-c", sh]) as t:
        t.expect(rb"Connected to machine vl-login")
        t.log_in_as_root()
        os.write(t.fd, b"echo LOGGED-$((6*7)); tty\n")
        t.expect(rb"LOGGED-42\n/dev/pts/\d+\n")
        # ^] three times: machinectl 262 leaves the session and exits 0.
        os.write(t.fd, b"\x1d\x1d\x1d")
        _, status = os.waitpid(t.pid, 0)
        t.pid = None
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (status, t.r.out[-300:])

    import array
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock(machd))
        s.sendall(json.dumps({"method": "io.systemd.Machine.Open",
                              "parameters": {"name": "vl-login", "mode": "login"}}).encode() + b"\0")
        data, fds = b"", []
        while not data.endswith(b"\0"):
            msg, anc, _, _ = s.recvmsg(65536, socket.CMSG_SPACE(4))
            assert msg
            data += msg
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += array.array("i", payload[:4]).tolist()
    reply = json.loads(data[:-1])
    assert "error" not in reply, reply
    try:
        log_in_on(fds[0], reply["parameters"]["ptyPath"])
    finally:
        os.close(fds[0])


def test_machinectl_262_machine_instance_verbs_say_what_machined_says(sid, bus, machd, leaders):
    """pause, resume and bind-volume go only through the machine's own io.systemd.MachineInstance
    socket (List's controlAddress): for a machine that has none, machinectl 262 says so, as with
    systemd-machined and an nspawn container."""
    p = leaders.spawn()
    create(bus, "vl-mi", p.pid)
    for args in (["pause", "vl-mi"], ["resume", "vl-mi"], ["bind-volume", "vl-mi", "x:y"]):
        r = machinectl262(sid, bus, machd, *args, check=False)
        assert r.returncode != 0 and "does not expose a varlink control socket" in r.stderr, (args, r.stderr)
    assert p.poll() is None


from test_systemd_backend import fake_systemd, machd_systemd  # noqa: E402,F401 (fixtures)


def test_register_waits_for_the_systemd_scope_job(sid, bus, fake_systemd, machd_systemd, leaders):
    """With the systemd scope backend, Register with allocateUnit answers when the scope's start job
    has ended (as CreateMachine does on D-Bus), and a failed job is an error, the machine gone."""
    p = leaders.spawn()
    machd_systemd.created.add("vl-sd")
    call(sid, machd_systemd, "io.systemd.Machine.Register",
         {"name": "vl-sd", "class": "container", "leader": p.pid, "allocateUnit": True})
    assert "StartTransientUnit machine-vl\\x2dsd.scope" in fake_systemd.read_text()
    # The reply came after the job: the machine is running.
    assert bus.get_property(machine_path("vl-sd"), "org.freedesktop.machine1.Machine", "State") == "running"
    q = leaders.spawn()
    machd_systemd.created.add("broken")
    r = call(sid, machd_systemd, "io.systemd.Machine.Register",
             {"name": "broken", "class": "container", "leader": q.pid, "allocateUnit": True}, check=False)
    assert r.returncode != 0 and "EIO" in r.stdout
    assert "NoSuchMachine" in call(sid, machd_systemd, "io.systemd.Machine.List", {"name": "broken"}, check=False).stderr


def test_introspection_matches_a_running_machined_262(sid, machd, spawn_bin):
    """The same diff against systemd-machined 262 itself: the sid tree booted by spawn (a throw-away
    overlay, not registered), whose systemd-machined.socket activates machined 262 when the guest's
    own varlinkctl asks it for its interfaces. No difference is allowed."""
    import sys
    sys.path.insert(0, str(HERE.parent / "integration"))
    from test_boot import Console, nsenter  # noqa: E402
    c = Console([spawn_bin, "-x", "-b", "-D", str(sid), "-M", "vl-machined262", "--register=no"])
    try:
        assert c.wait_for(r"login: ", 180), c.text()
        leader = c.leader()
        for iface in ("io.systemd.Machine", "io.systemd.MachineImage"):
            r = nsenter(leader, "varlinkctl", "introspect", "/run/systemd/machine/" + iface, iface, timeout=60)
            assert r.returncode == 0, r.stderr
            ours = varlinkctl(sid, "introspect", sock(machd, iface), iface).stdout
            assert ours.strip() == r.stdout.strip(), iface
        r = nsenter(leader, "varlinkctl", "introspect", "/run/systemd/machine/io.systemd.Machine", "org.varlink.service",
                    timeout=60)
        assert r.returncode == 0, r.stderr
        assert varlinkctl(sid, "introspect", sock(machd), "org.varlink.service").stdout.strip() == r.stdout.strip()
    finally:
        c.p.send_signal(15)
        c.wait_exit(90)
