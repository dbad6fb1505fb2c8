"""machrun checkpoint / restore (docs/criu.md, "The OCI runtime"), driven as an engine drives runc:
create + start a bundle made from a busybox tree, `checkpoint --image-path`, `restore --detach
--bundle`, with the sid fixture's criu 4.2 run through that tree's loader (`--criu`; Debian 12's
criu 3.17 cannot run on this kernel). The test process is a child subreaper, as conmon and
containerd's shim are, so restored inits are reparented to it and reaped here.

Root only; real namespaces, cgroups and criu. Skipped, with the reason, when the sid fixture
cannot be made (tests/helpers/sid-fixture.sh)."""
import array
import json
import os
import pathlib
import select
import socket
import subprocess
import time

import pytest
from mkutil import CGROUP2, as_subreaper, reap, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

HELPERS = pathlib.Path(__file__).resolve().parents[1] / "helpers"
COUNTER = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /count.new; mv /count.new /count; sleep 0.05; done"]


subreaper = pytest.fixture(scope="module", autouse=True)(as_subreaper)


@pytest.fixture
def machrun(tmp_path, criu_cmd):
    from conftest import BUILD  # noqa: PLC0415

    binary = BUILD / "src" / "runtime" / "machrun"
    if not binary.exists():
        pytest.skip(f"{binary} not built")
    root = tmp_path / "state"

    class M:
        bin = str(binary)
        state_root = root

        def start(self, *args):
            # Files, not pipes: a container's init keeps our stdout and stderr (they are its stdio).
            # Plain open()s: criu reopens an inherited stdio file through /proc/self/fd with the
            # flags it was dumped with, and tempfile's O_NOFOLLOW makes that fail (ELOOP).
            self.n = getattr(self, "n", 0) + 1
            out = open(tmp_path / f"out-{self.n}", "w+")
            err = open(tmp_path / f"err-{self.n}", "w+")
            p = subprocess.Popen([self.bin, "--root", str(root), "--criu", criu_cmd, *args], stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=err, text=True)
            return p, out, err

        def __call__(self, *args, check=True, timeout=60):
            p, out, err = self.start(*args)
            p.wait(timeout)
            out.seek(0)
            err.seek(0)
            r = subprocess.CompletedProcess(p.args, p.returncode, out.read(), err.read())
            if check and r.returncode != 0:
                raise AssertionError(f"machrun {' '.join(args)} failed ({r.returncode}): {r.stderr}")
            return r

        def ids(self):
            return self("list", "-q").stdout.split()

    m = M()
    yield m
    if root.exists():
        for cid in os.listdir(root):
            subprocess.run([m.bin, "--root", str(root), "delete", "--force", cid], capture_output=True, timeout=30)
    reap()


def make_bundle(tree, args, terminal=False):
    bundle = tree.parent / "bundle"
    bundle.mkdir(exist_ok=True)
    config = {
        "ociVersion": "1.0.0",
        "process": {"terminal": terminal, "user": {"uid": 0, "gid": 0}, "args": args, "cwd": "/",
                    "env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"]},
        "root": {"path": str(tree), "readonly": False},
        "hostname": "criu",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
                   {"destination": "/dev/pts", "type": "devpts", "source": "devpts"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                                 {"type": "mount"}]},
    }
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def count(tree):
    try:
        return int((tree / "count").read_text() or 0)
    except (OSError, ValueError):
        return 0


def test_counter_keeps_counting_across_checkpoint_and_restore(machrun, tree, tmp_path):
    bundle = make_bundle(tree, COUNTER)
    machrun("create", "--bundle", str(bundle), "criu-count")
    machrun("start", "criu-count")
    assert wait_for(lambda: count(tree) >= 5)
    img, work = tmp_path / "img", tmp_path / "work"
    img.mkdir()  # as podman does: an existing empty directory is taken
    work.mkdir()
    machrun("checkpoint", "--image-path", str(img), "--work-path", str(work), "criu-count")
    # criu stopped it; as with runc the container is gone (state, cgroup).
    dumped = count(tree)
    time.sleep(0.3)
    assert count(tree) == dumped
    assert "criu-count" not in machrun.ids()
    assert not os.path.exists(f"{CGROUP2}/machrun/criu-count")
    assert (img / "machkit-checkpoint.json").exists() and (work / "dump.log").exists()

    pid_file = tmp_path / "pid"
    machrun("restore", "--detach", "--bundle", str(bundle), "--image-path", str(img), "--work-path", str(work),
            "--pid-file", str(pid_file), "criu-count")
    pid = int(pid_file.read_text())
    state = json.loads(machrun("state", "criu-count").stdout)
    assert state["status"] == "running" and state["pid"] == pid
    # The count goes on from where it was: the shell's variable came back, not a fresh start.
    assert wait_for(lambda: count(tree) > dumped + 3)
    assert count(tree) > dumped
    # The whole restored tree is in the container's cgroup (ps, kill --all, pause see it).
    ps = json.loads(machrun("ps", "--format", "json", "criu-count").stdout)
    assert pid in ps
    machrun("pause", "criu-count")
    frozen = count(tree)
    time.sleep(0.3)
    assert count(tree) == frozen
    machrun("resume", "criu-count")
    machrun("kill", "criu-count", "KILL")
    assert wait_for(lambda: json.loads(machrun("state", "criu-count").stdout)["status"] == "stopped")
    machrun("delete", "criu-count")
    assert not os.path.exists(f"{CGROUP2}/machrun/criu-count")


def test_leave_running_and_restore_under_a_taken_id(machrun, tree, tmp_path):
    bundle = make_bundle(tree, COUNTER)
    machrun("create", "--bundle", str(bundle), "criu-leave")
    machrun("start", "criu-leave")
    assert wait_for(lambda: count(tree) >= 3)
    img = tmp_path / "img"
    machrun("checkpoint", "--leave-running", "--image-path", str(img), "criu-leave")
    assert json.loads(machrun("state", "criu-leave").stdout)["status"] == "running"
    before = count(tree)
    assert wait_for(lambda: count(tree) > before)
    r = machrun("restore", "--detach", "--bundle", str(bundle), "--image-path", str(img), "criu-leave", check=False)
    assert r.returncode != 0 and "already exists" in r.stderr
    assert json.loads(machrun("state", "criu-leave").stdout)["status"] == "running"


def recv_master(listener, timeout=30):
    assert select.select([listener], [], [], timeout)[0], "nothing connected to the console socket"
    conn, _ = listener.accept()
    fds = array.array("i")
    msg, anc, _, _ = conn.recvmsg(256, socket.CMSG_LEN(4))
    conn.close()
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:4])
    assert len(fds) == 1, "no fd in the console socket message"
    return msg, fds[0]


def talk(master, line):
    os.write(master, (line + "\n").encode())
    buf = b""
    end = time.monotonic() + 10
    while b"got:" + line.encode() not in buf and time.monotonic() < end:
        if select.select([master], [], [], 0.5)[0]:
            buf += os.read(master, 1024)
    return buf


def test_restore_hands_a_working_terminal_to_the_console_socket(machrun, tree, tmp_path):
    bundle = make_bundle(tree, ["sh", "-c", "while read l; do echo got:$l; done"], terminal=True)
    sock_path = str(tmp_path / "console.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(1)
    try:
        p, _, _ = machrun.start("create", "--bundle", str(bundle), "--console-socket", sock_path, "criu-tty")
        _, master = recv_master(listener)
        assert p.wait(30) == 0
        machrun("start", "criu-tty")
        assert b"got:one" in talk(master, "one")
        img = tmp_path / "img"
        machrun("checkpoint", "--image-path", str(img), "criu-tty")
        os.close(master)  # the engine's old master: its pty is gone with the dumped tree
        p, _, err = machrun.start("restore", "--detach", "--bundle", str(bundle), "--image-path", str(img),
                                  "--console-socket", sock_path, "criu-tty")
        _, master = recv_master(listener)
        rc = p.wait(60)
        err.seek(0)
        assert rc == 0, err.read()
        # The new master drives the restored shell: same process, its read loop goes on.
        assert b"got:two" in talk(master, "two")
        os.close(master)
    finally:
        listener.close()


def test_bad_input_leaves_nothing(machrun, tree, tmp_path):
    bundle = make_bundle(tree, COUNTER)
    r = machrun("restore", "--detach", "--bundle", str(bundle), "--image-path", str(tmp_path / "nope"), "criu-bad",
                check=False)
    assert r.returncode != 0 and "does not exist" in r.stderr
    assert "criu-bad" not in machrun.ids()
    assert not os.path.exists(f"{CGROUP2}/machrun/criu-bad")
    empty = tmp_path / "empty"
    empty.mkdir()
    r = machrun("restore", "--detach", "--bundle", str(bundle), "--image-path", str(empty), "criu-bad", check=False)
    assert r.returncode != 0 and "not a machkit checkpoint" in r.stderr
    assert "criu-bad" not in machrun.ids()
    r = machrun("checkpoint", "--image-path", str(tmp_path / "img"), "criu-none", check=False)
    assert r.returncode != 0 and "criu-none" in r.stderr
    machrun("create", "--bundle", str(bundle), "criu-bad")
    r = machrun("checkpoint", "--image-path", str(tmp_path / "img"), "criu-bad", check=False)
    assert r.returncode != 0 and "not running" in r.stderr  # created, not started
    r = machrun("checkpoint", "--pre-dump", "--image-path", str(tmp_path / "img"), "criu-bad", check=False)
    assert r.returncode != 0 and "CONFIG_MEM_SOFT_DIRTY" in r.stderr
    assert not (tmp_path / "img").exists()
    # A --criu that is no criu: the version asked on the dump's own session fails, in one line,
    # before anything is dumped; the container runs on and no image directory is left.
    machrun("start", "criu-bad")
    r = subprocess.run([machrun.bin, "--root", str(machrun.state_root), "--criu", "/bin/true", "checkpoint",
                        "--image-path", str(tmp_path / "img"), "criu-bad"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "criu" in r.stderr, r.stderr
    assert not (tmp_path / "img").exists()
    assert json.loads(machrun("state", "criu-bad").stdout)["status"] == "running"


def test_joined_network_namespace_is_external_and_rejoined(machrun, tree, tmp_path):
    # linux.namespaces[].path: criu must not dump a namespace the container did not make; it is
    # declared external at dump and handed back (that path's fd) at restore, as runc does.
    ns = "criu-ns-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        bundle = make_bundle(tree, COUNTER)
        config = json.loads((bundle / "config.json").read_text())
        config["linux"]["namespaces"] = [n if n["type"] != "network" else {"type": "network",
                                                                            "path": f"/run/netns/{ns}"}
                                         for n in config["linux"]["namespaces"]]
        (bundle / "config.json").write_text(json.dumps(config))
        machrun("create", "--bundle", str(bundle), "criu-netns")
        machrun("start", "criu-netns")
        assert wait_for(lambda: count(tree) >= 3)
        want = os.stat(f"/run/netns/{ns}").st_ino
        pid = json.loads(machrun("state", "criu-netns").stdout)["pid"]
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == want
        img = tmp_path / "img"
        machrun("checkpoint", "--image-path", str(img), "criu-netns")
        dumped = count(tree)
        machrun("restore", "--detach", "--bundle", str(bundle), "--image-path", str(img), "criu-netns")
        pid = json.loads(machrun("state", "criu-netns").stdout)["pid"]
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == want
        assert wait_for(lambda: count(tree) > dumped)
        machrun("delete", "--force", "criu-netns")
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def test_restore_without_detach_waits_and_returns_the_exit_status(machrun, tree, tmp_path):
    bundle = make_bundle(tree, ["sh", "-c", "echo 1 > /count; sleep 3; exit 7"])
    machrun("create", "--bundle", str(bundle), "criu-wait")
    machrun("start", "criu-wait")
    assert wait_for(lambda: count(tree) == 1)
    img = tmp_path / "img"
    machrun("checkpoint", "--image-path", str(img), "criu-wait")
    r = machrun("restore", "--bundle", str(bundle), "--image-path", str(img), "criu-wait", check=False)
    assert r.returncode == 7, r.stderr
    assert "criu-wait" not in machrun.ids()
    assert not os.path.exists(f"{CGROUP2}/machrun/criu-wait")


def test_shared_uts_ipc_or_pid_namespace_is_refused_and_keeps_running(machrun, tree, tmp_path):
    # A CRI container (the pod's IPC namespace by path, the node's UTS): criu would restore a
    # private copy of what it shares, so the checkpoint is refused with one line and nothing changes.
    bundle = make_bundle(tree, COUNTER)
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] not in ("uts", "ipc")]
    config["linux"]["namespaces"].append({"type": "ipc", "path": "/proc/self/ns/ipc"})
    config.pop("hostname")
    (bundle / "config.json").write_text(json.dumps(config))
    machrun("create", "--bundle", str(bundle), "criu-shared")
    machrun("start", "criu-shared")
    assert wait_for(lambda: count(tree) >= 2)
    r = machrun("checkpoint", "--image-path", str(tmp_path / "img"), "criu-shared", check=False)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "shares the host's or another container's UTS, IPC or PID namespace" in r.stderr
    assert not (tmp_path / "img").exists()
    assert json.loads(machrun("state", "criu-shared").stdout)["status"] == "running"
    machrun("delete", "--force", "criu-shared")
