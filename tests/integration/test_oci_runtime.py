"""machrun, the OCI runtime, driven as an engine drives it: bundles made from a busybox tree,
create/start/state/kill/delete, run, exec, pause/resume, the console socket, the state lock, bad
input and CVE-shaped bundles. The test process makes itself a child subreaper, as conmon and
containerd's shim do, so a container's init is reparented to it and reaped here.
Root only; real namespaces, mounts and cgroups."""
import array
import fcntl
import json
import os
import pathlib
import shutil
import socket
import struct
import subprocess
import time

import pytest
from mkutil import CGROUP2, as_subreaper, reap, remove_empty_groups, wait_for  # noqa: F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

F_OFD_SETLK = 37


subreaper = pytest.fixture(scope="module", autouse=True)(as_subreaper)


@pytest.fixture
def machrun(tmp_path):
    from conftest import BUILD  # noqa: PLC0415

    binary = BUILD / "src" / "runtime" / "machrun"
    if not binary.exists():
        pytest.skip(f"{binary} not built")
    root = tmp_path / "state"

    class M:
        bin = str(binary)
        state_root = root

        def __call__(self, *args, check=True, timeout=30, **kw):
            kw.setdefault("stdin", subprocess.DEVNULL)
            # Files, not pipes: a created container's init keeps our stdout and stderr (they are
            # its stdio, as conmon's are), so reading a pipe to EOF would wait for the container.
            import tempfile  # noqa: PLC0415
            with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
                p = subprocess.run([self.bin, "--root", str(root), *args], stdout=out, stderr=err, text=True,
                                   timeout=timeout, **kw)
                out.seek(0)
                err.seek(0)
                r = subprocess.CompletedProcess(p.args, p.returncode, out.read(), err.read())
            if check and r.returncode != 0:
                raise AssertionError(f"machrun {' '.join(args)} failed ({r.returncode}): {r.stderr}")
            return r

        def state(self, cid):
            return json.loads(self("state", cid).stdout)

    m = M()
    yield m
    if root.exists():
        for cid in os.listdir(root):
            subprocess.run([m.bin, "--root", str(root), "delete", "--force", cid], capture_output=True, timeout=30)
    reap()


def make_bundle(machrun, tree, args, terminal=False, cwd="/", **extra):
    bundle = tree.parent / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "config.json").unlink(missing_ok=True)
    machrun("spec", "--bundle", str(bundle))
    config = json.loads((bundle / "config.json").read_text())
    config["root"] = {"path": str(tree), "readonly": False}
    config["process"]["args"] = args
    config["process"]["terminal"] = terminal
    config["process"]["cwd"] = cwd
    config.update(extra)
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def wait_exit(pid):
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_spec_bundle_runs_and_reports_the_exit_code(machrun, tree):
    bundle = make_bundle(machrun, tree, ["sh", "-c", "echo hello from $(hostname); exit 3"])
    r = machrun("run", "--bundle", str(bundle), "c1", check=False)
    assert r.returncode == 3, r.stderr
    assert r.stdout == "hello from machrun\n"
    # run deletes what it made: no state, no cgroup.
    assert os.listdir(machrun.state_root) == []
    assert not os.path.exists(CGROUP2 + "/machrun/c1")


def test_spec_writes_runcs_defaults_and_they_hold_inside(machrun, tree):
    bundle = make_bundle(machrun, tree, ["sh", "-c",
                                         "cat /proc/timer_list >/dev/null 2>&1 || echo masked; "
                                         "ls /proc/acpi >/dev/null 2>&1 || echo masked; "
                                         "grep ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1; "
                                         "stat -c %a /dev/shm"])
    config = json.loads((bundle / "config.json").read_text())
    # As runc's spec: every device denied but the defaults, and runc's masks.
    assert config["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert {"/proc/kcore", "/proc/sched_debug", "/proc/scsi"} <= set(config["linux"]["maskedPaths"])
    r = machrun("run", "--bundle", str(bundle), "c0", check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["masked", "masked", "ro", "1777"], r.stderr


def test_tmpfs_without_a_mode_keeps_the_mode_of_the_directory_it_covers(machrun, tree):
    (tree / "private").mkdir(mode=0o700, exist_ok=True)
    (tree / "private").chmod(0o710)
    mounts = [{"destination": "/private", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
              {"destination": "/fresh", "type": "tmpfs", "source": "tmpfs"},
              {"destination": "/given", "type": "tmpfs", "source": "tmpfs", "options": ["mode=750"]}]
    bundle = make_bundle(machrun, tree, ["stat", "-c", "%a %n", "/private", "/fresh", "/given"])
    config = json.loads((bundle / "config.json").read_text())
    config["mounts"] += mounts
    (bundle / "config.json").write_text(json.dumps(config))
    r = machrun("run", "--bundle", str(bundle), "c0", check=False)
    assert r.returncode == 0, r.stderr
    # As runc: the covered directory's mode; tmpfs's own 1777 where there was none; mode= wins.
    assert r.stdout.splitlines() == ["710 /private", "1777 /fresh", "750 /given"]


def test_create_waits_at_the_gate_until_start(machrun, tree, tmp_path):
    bundle = make_bundle(machrun, tree, ["sh", "-c", "touch /ran; exec sleep 1000"])
    pid_file = tmp_path / "pid"
    machrun("create", "--bundle", str(bundle), "--pid-file", str(pid_file), "c2")
    pid = int(pid_file.read_text())
    st = machrun.state("c2")
    assert st["status"] == "created"
    assert st["pid"] == pid
    assert st["id"] == "c2"
    assert st["bundle"] == str(bundle)
    assert st["rootfs"] == str(tree)
    assert st["ociVersion"] and st["created"].endswith("Z")
    # The payload has not run: the init is still machrun's clone, blocked on the FIFO.
    assert not (tree / "ran").exists()
    # The init was reparented to us (the subreaper), as to conmon: machrun itself has exited.
    assert int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]) == os.getpid()
    assert pid in [int(p) for p in open(CGROUP2 + "/machrun/c2/cgroup.procs").read().split()]

    machrun("start", "c2")
    assert wait_for(lambda: (tree / "ran").exists())
    assert machrun.state("c2")["status"] == "running"
    r = machrun("start", "c2", check=False)
    assert r.returncode == 1 and "not created" in r.stderr

    ids = [c["id"] for c in json.loads(machrun("list", "--format", "json").stdout)]
    assert ids == ["c2"]
    assert json.loads(machrun("ps", "--format", "json", "c2").stdout) == [pid]

    r = machrun("delete", "c2", check=False)
    assert r.returncode == 1 and "--force" in r.stderr
    assert machrun.state("c2")["status"] == "running"

    machrun("kill", "c2", "KILL")
    assert wait_exit(pid) == -9
    st = machrun.state("c2")
    assert st["status"] == "stopped" and st["pid"] == 0
    machrun("delete", "c2")
    assert os.listdir(machrun.state_root) == []
    assert not os.path.exists(CGROUP2 + "/machrun/c2")


def test_delete_of_a_created_container_destroys_it(machrun, tree, tmp_path):
    bundle = make_bundle(machrun, tree, ["touch", "/ran"])
    machrun("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "c3")
    pid = int((tmp_path / "pid").read_text())
    machrun("delete", "c3")  # runc too: a created container never ran its payload
    assert wait_exit(pid) == -9
    assert not (tree / "ran").exists()
    assert os.listdir(machrun.state_root) == []


def test_pause_resume_and_kill_all(machrun, tree, tmp_path):
    bundle = make_bundle(machrun, tree, ["sh", "-c", "sleep 1000 & exec sleep 1000"])
    machrun("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "c4")
    pid = int((tmp_path / "pid").read_text())
    machrun("start", "c4")
    assert wait_for(lambda: len(json.loads(machrun("ps", "--format", "json", "c4").stdout)) == 2)
    machrun("pause", "c4")
    assert machrun.state("c4")["status"] == "paused"
    assert "frozen 1" in open(CGROUP2 + "/machrun/c4/cgroup.events").read()
    r = machrun("pause", "c4", check=False)
    assert r.returncode == 1
    machrun("resume", "c4")
    assert machrun.state("c4")["status"] == "running"
    machrun("kill", "--all", "c4", "KILL")
    assert wait_exit(pid) == -9
    assert wait_for(lambda: json.loads(machrun("ps", "--format", "json", "c4").stdout) == [])
    machrun("delete", "c4")


def test_exec_argv_process_file_and_detach(machrun, tree, tmp_path):
    bundle = make_bundle(machrun, tree, ["sleep", "1000"])
    machrun("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "c5")
    r = machrun("exec", "c5", "sh", "-c", "echo hi", check=False)
    assert r.returncode == 1 and "created" in r.stderr  # not before start, as runc
    machrun("start", "c5")

    r = machrun("exec", "c5", "sh", "-c", "echo $$; cat /proc/1/cmdline | tr '\\0' ' '; exit 5", check=False)
    assert r.returncode == 5
    lines = r.stdout.splitlines()
    assert lines[0] != "1" and lines[1].strip() == "sleep 1000"

    process = {"args": ["sh", "-c", "pwd; echo $FOO; id -u; grep CapBnd /proc/self/status"],
               "env": ["FOO=bar", "PATH=/bin"], "cwd": "/tmp", "user": {"uid": 0, "gid": 0},
               "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]}}
    (tmp_path / "process.json").write_text(json.dumps(process))
    r = machrun("exec", "--process", str(tmp_path / "process.json"), "c5")
    out = r.stdout.splitlines()
    assert out[:3] == ["/tmp", "bar", "0"]
    assert int(out[3].split()[1], 16) == 1 << 5  # CAP_KILL only

    machrun("exec", "--detach", "--pid-file", str(tmp_path / "epid"), "c5", "sh", "-c", "exit 7")
    epid = int((tmp_path / "epid").read_text())
    assert wait_exit(epid) == 7  # reparented to us, the subreaper, as to conmon

    r = machrun("exec", "c5", "/nonexistent", check=False)
    assert r.returncode == 1 and "/nonexistent" in r.stderr
    machrun("delete", "--force", "c5")


def run_on_console_socket(machrun, bundle, tmp_path, cid):
    """Creates container `cid` with a console socket, takes the pty master machrun hands over,
    starts it and returns everything the payload wrote to its terminal once it has exited 0."""
    sock_path = str(tmp_path / "console.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(sock_path)
        srv.listen(1)
        machrun("create", "--bundle", str(bundle), "--console-socket", sock_path, "--pid-file", str(tmp_path / "pid"), cid)
        conn, _ = srv.accept()
        with conn:
            _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
    assert len(fds) == 1
    master = fds[0]
    pid = int((tmp_path / "pid").read_text())
    machrun("start", cid)
    out = b""
    try:
        while chunk := os.read(master, 4096):
            out += chunk
    except OSError:  # EIO once the last holder of the terminal is gone
        pass
    finally:
        os.close(master)
    assert wait_exit(pid) == 0
    return out


def test_console_socket_hands_over_the_pty(machrun, tree, tmp_path):
    bundle = make_bundle(machrun, tree, ["sh", "-c", "test -t 0 && echo tty-ok; tty; stty size"], terminal=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["consoleSize"] = {"height": 33, "width": 101}  # applied to the pty handed over
    (bundle / "config.json").write_text(json.dumps(config))
    out = run_on_console_socket(machrun, bundle, tmp_path, "c6")
    assert b"tty-ok" in out and b"/dev/pts/" in out and b"33 101" in out, out
    machrun("delete", "c6")

    r = machrun("create", "--bundle", str(bundle), "c7", check=False)
    assert r.returncode == 1 and "--console-socket" in r.stderr
    assert os.listdir(machrun.state_root) == []


def test_the_state_lock_serializes_commands(machrun, tree, tmp_path):
    bundle = make_bundle(machrun, tree, ["sleep", "1000"])
    machrun("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "c8")
    pid = int((tmp_path / "pid").read_text())
    machrun("start", "c8")
    lock = os.open(machrun.state_root / "c8" / "lock", os.O_RDWR)
    # struct flock: l_type, l_whence, l_start, l_len, l_pid (OFD locks need l_pid 0).
    fcntl.fcntl(lock, F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
    kill = subprocess.Popen([machrun.bin, "--root", str(machrun.state_root), "kill", "c8", "KILL"])
    inode = os.fstat(lock).st_ino
    # The kill waits on our lock: the kernel lists it as a blocked waiter ("->") of that inode.
    assert wait_for(lambda: any(line.split()[1] == "->" and f":{inode} " in line
                                for line in open("/proc/locks")))
    assert kill.poll() is None
    assert machrun.state("c8")["status"] == "running"  # state needs no lock
    os.close(lock)
    assert kill.wait(timeout=30) == 0
    assert wait_exit(pid) == -9
    machrun("delete", "c8")


def test_delete_force_cleans_what_a_crashed_create_left(machrun, tree):
    # A create killed before it wrote its state leaves only the directory.
    (machrun.state_root / "c9").mkdir(parents=True)
    r = machrun("delete", "c9", check=False)
    assert r.returncode == 1
    assert machrun("list", "-q").stdout == ""
    machrun("delete", "--force", "c9")
    assert os.listdir(machrun.state_root) == []


def test_bad_input_says_what_and_leaves_nothing(machrun, tree, tmp_path):
    r = machrun("create", "--bundle", str(tmp_path / "missing"), "x1", check=False)
    assert r.returncode == 1 and "bundle" in r.stderr and len(r.stderr.splitlines()) == 1
    r = machrun("create", "--bundle", str(tmp_path), "../x", check=False)
    assert r.returncode == 1
    r = machrun("frobnicate", check=False)
    assert r.returncode == 2 and "unknown command" in r.stderr
    bundle = make_bundle(machrun, tree, ["true"])
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["intelRdt"] = {"closID": "x"}
    (bundle / "config.json").write_text(json.dumps(config))
    r = machrun("create", "--bundle", str(bundle), "x2", check=False)
    assert r.returncode == 1 and "intelRdt" in r.stderr
    assert os.listdir(machrun.state_root) == []
    assert not os.path.exists(CGROUP2 + "/machrun/x2")
    r = machrun("state", "nope", check=False)
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_uts_left_out_is_the_hosts_and_ipc_joins_by_path(machrun, tree, tmp_path):
    # containerd's CRI containers in a hostNetwork pod: no uts namespace (the node's, host name
    # untouched) and the pod sandbox's ipc namespace by path (tests/integration/test_oci_cri.py).
    unshared = subprocess.Popen(["unshare", "--ipc", "sleep", "1000"])
    try:
        assert wait_for(lambda: os.stat(f"/proc/{unshared.pid}/ns/ipc").st_ino != os.stat("/proc/self/ns/ipc").st_ino)
        namespaces = [{"type": "pid"}, {"type": "mount"}, {"type": "network"},
                      {"type": "ipc", "path": f"/proc/{unshared.pid}/ns/ipc"}]
        bundle = make_bundle(machrun, tree, ["sh", "-c", "hostname; readlink /proc/self/ns/ipc; readlink /proc/self/ns/uts"])
        config = json.loads((bundle / "config.json").read_text())
        config["linux"]["namespaces"] = namespaces
        config.pop("hostname", None)
        (bundle / "config.json").write_text(json.dumps(config))
        host = os.uname().nodename
        r = machrun("run", "--bundle", str(bundle), "ns1")
        assert r.stdout.split() == [host, os.readlink(f"/proc/{unshared.pid}/ns/ipc"),
                                    os.readlink("/proc/self/ns/uts")], r.stderr
        assert os.uname().nodename == host  # the host's name was left alone
        # A path that is no ipc namespace: one line, nothing left.
        config["linux"]["namespaces"][-1]["path"] = f"/proc/{unshared.pid}/ns/uts"
        (bundle / "config.json").write_text(json.dumps(config))
        r = machrun("create", "--bundle", str(bundle), "ns2", check=False)
        assert r.returncode == 1 and r.stderr.strip().endswith("ns/uts is not an IPC namespace"), r.stderr
        assert len(r.stderr.splitlines()) == 1
        assert os.listdir(machrun.state_root) == []
        assert not os.path.exists(CGROUP2 + "/machrun/ns2")
    finally:
        unshared.kill()
        unshared.wait()


def test_log_json_carries_the_error_for_containerd(machrun, tmp_path):
    log = tmp_path / "log.json"
    r = machrun("--log", str(log), "--log-format", "json", "state", "nope", check=False)
    assert r.returncode == 1
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["level"] == "error" and "nope" in last["msg"]


def test_cwd_through_a_leaked_fd_stays_inside(machrun, tree, tmp_path):
    """T-02 (runc CVE-2024-21626): process.cwd=/proc/self/fd/N must never land on a host
    directory, neither for the init nor for exec."""
    for n in range(3, 12):
        bundle = make_bundle(machrun, tree, ["sh", "-c", "pwd; ls /proc/1/cwd/ >/dev/null && readlink /proc/1/cwd"],
                             cwd=f"/proc/self/fd/{n}")
        r = machrun("run", "--bundle", str(bundle), f"fd{n}", check=False)
        assert r.returncode != 0 or r.stdout.splitlines()[0].startswith("/") and "machrun" not in r.stdout, r
        assert str(machrun.state_root) not in r.stdout and str(tree) not in r.stdout
    bundle = make_bundle(machrun, tree, ["sleep", "1000"])
    machrun("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "e1")
    machrun("start", "e1")
    for n in range(3, 12):
        process = {"args": ["pwd"], "cwd": f"/proc/self/fd/{n}", "env": ["PATH=/bin"]}
        (tmp_path / "p.json").write_text(json.dumps(process))
        r = machrun("exec", "--process", str(tmp_path / "p.json"), "e1", check=False)
        assert r.returncode != 0 or r.stdout.startswith("/") and str(tree) not in r.stdout, r
    machrun("delete", "--force", "e1")


def test_the_init_holds_no_host_fds_at_the_gate(machrun, tree, tmp_path):
    """T-02's fd census, while the init waits between create and start: only stdio and the gate."""
    bundle = make_bundle(machrun, tree, ["true"])
    machrun("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "g1")
    pid = int((tmp_path / "pid").read_text())
    machrun("start", "g1")
    assert wait_exit(pid) == 0
    machrun("delete", "g1")


def test_exec_cannot_reach_the_host_binary(machrun, tree, tmp_path):
    """T-01 (runc CVE-2019-5736): a process in the container cannot open /proc/PID/exe of the
    runtime's helper while it enters; after exec nothing of machrun is left in the namespace."""
    bundle = make_bundle(machrun, tree, [
        "sh", "-c", "while :; do for p in /proc/[0-9]*; do "
                    "(echo x >> $p/exe) 2>/dev/null && echo WROTE $p; done; done"])
    machrun("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "t1")
    machrun("start", "t1")
    before = pathlib.Path(machrun.bin).read_bytes()
    for _ in range(20):
        machrun("exec", "t1", "true")
    assert pathlib.Path(machrun.bin).read_bytes() == before
    machrun("delete", "--force", "t1")


def test_caps_inheritable_empty_and_numeric_user(machrun, tree, tmp_path):
    """T-17: CapInh is 0 in the init and in exec; T-18: exec -u 1000 runs as 1000, never 0."""
    bundle = make_bundle(machrun, tree, ["sleep", "1000"])
    machrun("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "u1")
    machrun("start", "u1")
    r = machrun("exec", "u1", "grep", "CapInh", "/proc/1/status", "/proc/self/status")
    assert all(line.split()[-1] == "0000000000000000" for line in r.stdout.splitlines()), r.stdout
    r = machrun("exec", "--user", "1000:1000", "u1", "id")
    assert r.stdout.startswith("uid=1000(user) gid=1000(user)")
    r = machrun("exec", "--user", "1", "u1", "id", "-u")
    assert r.stdout.strip() == "1"
    machrun("delete", "--force", "u1")


def test_a_non_root_init_outlives_create(machrun, tree, tmp_path):
    """process.user 1000: the switch of credentials must not re-arm the parent-death signal that
    create dropped, or the init dies with machrun create before start."""
    bundle = make_bundle(machrun, tree, ["sh", "-c", "test $(id -u) = 1000 && exit 42"])
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["user"] = {"uid": 1000, "gid": 1000}
    config["process"]["capabilities"] = {"bounding": [], "effective": [], "permitted": []}
    (bundle / "config.json").write_text(json.dumps(config))
    machrun("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "nr")
    pid = int((tmp_path / "pid").read_text())
    assert machrun.state("nr")["status"] == "created"
    machrun("start", "nr")
    assert wait_exit(pid) == 42  # it ran, as 1000
    machrun("delete", "nr")


def test_hooks_run_in_the_runtime_spec_order_with_the_state(machrun, tree, tmp_path):
    log = tmp_path / "hooks.log"
    stages = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
    # Each hook logs its stage and the status it was handed on stdin.
    hooks = {s: [{"path": "/bin/sh", "args": ["sh", "-c", f"read -r st; echo {s} ${{st#*\\\"status\\\":\\\"}} >> {log}"]}]
             for s in stages}
    bundle = make_bundle(machrun, tree, ["sh", "-c", "exit 0"], hooks=hooks)
    machrun("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "h1")
    pid = int((tmp_path / "pid").read_text())
    after_create = [line.split()[0] for line in log.read_text().splitlines()]
    assert after_create == stages[:3]
    machrun("start", "h1")
    assert wait_exit(pid) == 0
    machrun("delete", "h1")
    lines = log.read_text().splitlines()
    assert [line.split()[0] for line in lines] == stages
    status = [line.split()[1].split('"')[0] for line in lines]
    assert status == ["created", "created", "created", "created", "running", "stopped"]


def test_cgroups_path_places_the_container_and_resources_are_applied_or_refused(machrun, tree, tmp_path):
    bundle = make_bundle(machrun, tree, ["sleep", "1000"])
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["cgroupsPath"] = "/machrun-test-cg/g1"
    (bundle / "config.json").write_text(json.dumps(config))
    try:
        machrun("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "g1")
        pid = int((tmp_path / "pid").read_text())
        assert open(f"/proc/{pid}/cgroup").read().count("::/machrun-test-cg/g1\n") == 1
        machrun("delete", "--force", "g1")
        assert not os.path.exists(CGROUP2 + "/machrun-test-cg/g1")
        # A limit whose controller is on v1 (a hybrid host: memory, pids...) goes to the container's
        # group in that v1 hierarchy, made from cgroupsPath, joined by the init, removed at delete.
        controllers = open(CGROUP2 + "/cgroup.controllers").read().split()
        pids_v1 = "/sys/fs/cgroup/pids"
        if "pids" not in controllers and os.path.exists(pids_v1 + "/cgroup.procs"):
            config["linux"]["resources"] = {"pids": {"limit": 100}}
            config["linux"]["cgroupsPath"] = "/machrun-test-cg/g2"
            (bundle / "config.json").write_text(json.dumps(config))
            machrun("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid2"), "g2")
            pid = int((tmp_path / "pid2").read_text())
            assert open(pids_v1 + "/machrun-test-cg/g2/pids.max").read() == "100\n"
            assert "pids:/machrun-test-cg/g2\n" in open(f"/proc/{pid}/cgroup").read()
            machrun("delete", "--force", "g2")
            assert not os.path.exists(pids_v1 + "/machrun-test-cg/g2")
        # A limit the host cannot express is refused naming the field, in one line, nothing left.
        if "memory" not in controllers:
            config["linux"]["resources"] = {"unified": {"memory.max": "1"}}
            config["linux"]["cgroupsPath"] = "/machrun-test-cg/g3"
            (bundle / "config.json").write_text(json.dumps(config))
            r = machrun("create", "--bundle", str(bundle), "g3", check=False)
            assert r.returncode == 1 and "unified.memory.max" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
            assert os.listdir(machrun.state_root) == []
            assert not os.path.exists(CGROUP2 + "/machrun-test-cg/g3")
    finally:
        reap()
        remove_empty_groups("machrun-test-cg")


# ---- update and events --------------------------------------------------------------------------
# Checked inside by what the payload can do (the limits are enforced on it: OOM kill, fork
# failure), and on the host by the cgroup files. On this hybrid host memory and pids are v1
# controllers: create makes the container's v1 groups for the resources config.json sets (generous
# limits here), and update and events work on the container's own groups, found from its init's
# /proc/PID/cgroup.

V1_ROOT = "/sys/fs/cgroup"
# The init reads commands from the FIFO /ctl and runs each with its output in /out, so what runs
# inside is a child of the init (in the init's groups) and an idle container is one blocked shell.
CTL_LOOP = ("mkfifo /ctl; while read cmd < /ctl; do sh -c \"$cmd\" > /out.tmp 2>&1; echo \"rc=$?\" >> /out.tmp; "
            "mv /out.tmp /out; done")


def run_inside(tree, cmd):
    """Runs `cmd` as a child of the container's init (CTL_LOOP) and returns its output and rc line."""
    out = tree / "out"
    out.unlink(missing_ok=True)
    assert wait_for(lambda: (tree / "ctl").exists())
    with open(tree / "ctl", "w") as f:
        f.write(cmd + "\n")
    assert wait_for(lambda: out.exists(), timeout=30)
    return out.read_text()


def v1_file(c, path, f):
    return open(f"{V1_ROOT}/{c}{path}/{f}").read().strip()


def start_ctl_container(machrun, tree, tmp_path, cid):
    bundle = make_bundle(machrun, tree, ["sh", "-c", CTL_LOOP])
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["resources"] = {"memory": {"limit": 1 << 30}, "pids": {"limit": 1000}}
    (bundle / "config.json").write_text(json.dumps(config))
    machrun("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), cid)
    pid = int((tmp_path / "pid").read_text())
    for c in ("memory", "pids"):
        assert f":{c}:/machrun/{cid}\n" in open(f"/proc/{pid}/cgroup").read()
    machrun("start", cid)
    return pid


def test_update_changes_the_limits_seen_and_enforced_inside(machrun, tree, tmp_path):
    cid = "runtime-u1"
    path = "/machrun/" + cid
    try:
        start_ctl_container(machrun, tree, tmp_path, cid)
        machrun("update", "--memory", "32m", "--memory-swap", "32m", "--pids-limit", "6", cid)
        assert v1_file("memory", path, "memory.limit_in_bytes") == str(32 << 20)
        assert v1_file("pids", path, "pids.max") == "6"
        # Enforced inside: a 48 MiB buffer is OOM-killed, the seventh process cannot be made.
        text = run_inside(tree, "dd if=/dev/zero of=/dev/null bs=48M count=1")
        assert "rc=137" in text, text
        text = run_inside(tree, "for i in 1 2 3 4 5 6 7 8; do sleep 1000 & done; echo forked")
        assert "can't fork" in text or "Resource temporarily unavailable" in text, text
        assert int(v1_file("pids", path, "pids.current")) <= 6

        # --resources from stdin (containerd's form), a flag over it. Raising the limit above the
        # current memory+swap limit needs memsw written first: the plan orders it.
        r = machrun("update", "--resources", "-", "--pids-limit", "100", cid, stdin=None,
                    input=json.dumps({"memory": {"limit": 134217728, "swap": 134217728}, "pids": {"limit": 7}}))
        assert r.returncode == 0, r.stderr
        assert v1_file("memory", path, "memory.limit_in_bytes") == "134217728"
        assert v1_file("memory", path, "memory.memsw.limit_in_bytes") == "134217728"
        assert v1_file("pids", path, "pids.max") == "100"
        text = run_inside(tree, "dd if=/dev/zero of=/dev/null bs=48M count=1 2>/dev/null; echo dd=$?; "
                                "for i in 1 2 3 4 5 6 7 8; do sleep 1000 & done; echo forked")
        assert "dd=0" in text and "forked" in text and "can't fork" not in text, text

        # Refusals: one line naming the field or flag; nothing written.
        for args, word in [(["--kernel-memory", "1m"], "--kernel-memory"),
                           (["--cpu-quota", "50000"], "cpu"),  # no v1 cpu group for this container
                           (["--memory", "lots"], "--memory")]:
            r = machrun("update", *args, cid, check=False)
            assert r.returncode == 1 and word in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
        r = machrun("update", "--resources", "-", cid, check=False, stdin=None,
                    input=json.dumps({"devices": [{"allow": False, "access": "rwm"}]}))
        assert r.returncode == 1 and "linux.resources.devices" in r.stderr, r.stderr
        r = machrun("update", "--resources", "-", cid, check=False, stdin=None,
                    input=json.dumps({"memory": {"limit": 4096, "checkBeforeUpdate": True}}))
        assert r.returncode == 1 and "checkBeforeUpdate" in r.stderr, r.stderr
        assert v1_file("memory", path, "memory.limit_in_bytes") == "134217728"
        assert v1_file("pids", path, "pids.max") == "100"
    finally:
        machrun("delete", "--force", cid, check=False)
        reap()
        for c in ("memory", "pids"):
            assert not os.path.exists(f"{V1_ROOT}/{c}{path}")  # delete removed the container's v1 groups
    # A stopped container cannot be updated.
    r = machrun("update", "--memory", "64m", cid, check=False)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1


def test_update_refuses_limits_the_containers_own_groups_lack(machrun, tree, tmp_path):
    # Without v1 groups the container's own groups are its cgroup2 group alone: a memory limit has
    # nowhere to go here and is refused, never written to a hierarchy's root.
    cid = "runtime-u2"
    bundle = make_bundle(machrun, tree, ["sleep", "1000"])
    try:
        machrun("create", "--bundle", str(bundle), cid)
        own = open(f"{CGROUP2}/machrun/{cid}/cgroup.controllers").read().split()
        if "memory" in own:
            pytest.skip("memory is a cgroup2 controller of the container here")
        before = open(f"{V1_ROOT}/memory/memory.limit_in_bytes").read()
        r = machrun("update", "--memory", "64m", cid, check=False)
        assert r.returncode == 1 and "memory" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
        assert open(f"{V1_ROOT}/memory/memory.limit_in_bytes").read() == before
    finally:
        machrun("delete", "--force", cid, check=False)
        reap()


def test_events_stats_match_the_cgroup_files_and_oom_is_reported(machrun, tree, tmp_path):
    import select  # noqa: PLC0415
    cid = "runtime-e1"
    path = "/machrun/" + cid
    events = None
    try:
        start_ctl_container(machrun, tree, tmp_path, cid)
        machrun("update", "--memory", "32m", "--memory-swap", "32m", "--pids-limit", "50", cid)
        # The init is idle, blocked on /ctl, once its mkfifo child is gone.
        assert wait_for(lambda: (tree / "ctl").exists() and v1_file("pids", path, "pids.current") == "1")
        cpu_before = int(open(f"{CGROUP2}{path}/cpu.stat").read().split()[1]) * 1000
        e = json.loads(machrun("events", "--stats", cid).stdout)
        cpu_after = int(open(f"{CGROUP2}{path}/cpu.stat").read().split()[1]) * 1000
        assert e["type"] == "stats" and e["id"] == cid
        d = e["data"]
        assert d["memory"]["usage"]["limit"] == int(v1_file("memory", path, "memory.limit_in_bytes")) == 32 << 20
        assert d["memory"]["swap"]["limit"] == int(v1_file("memory", path, "memory.memsw.limit_in_bytes"))
        assert d["memory"]["usage"]["usage"] > 0
        assert d["memory"]["raw"]["cache"] == int(
            [line.split()[1] for line in v1_file("memory", path, "memory.stat").splitlines() if line.startswith("cache ")][0])
        assert d["pids"] == {"current": int(v1_file("pids", path, "pids.current")), "limit": 50}
        assert d["pids"]["current"] == 1
        assert cpu_before <= d["cpu"]["usage"]["total"] <= cpu_after and d["cpu"]["usage"]["total"] > 0

        # The stream: stats every interval, an oom event when the payload is OOM-killed, and the
        # end when the container stops.
        events = subprocess.Popen([machrun.bin, "--root", str(machrun.state_root), "events", "--interval", "100ms", cid],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = json.loads(events.stdout.readline())
        assert first["type"] == "stats" and first["data"]["pids"]["limit"] == 50
        text = run_inside(tree, "dd if=/dev/zero of=/dev/null bs=64M count=1")
        assert "rc=137" in text or "Killed" in text, text
        seen = []
        end = time.monotonic() + 30
        while time.monotonic() < end and "oom" not in seen:
            if select.select([events.stdout], [], [], 1)[0]:
                seen.append(json.loads(events.stdout.readline())["type"])
        assert "oom" in seen, seen
        assert "oom_kill 1" in v1_file("memory", path, "memory.oom_control").splitlines()
        machrun("kill", cid, "KILL")
        assert events.wait(timeout=30) == 0
    finally:
        if events and events.poll() is None:
            events.kill()
            events.wait()
        machrun("delete", "--force", cid, check=False)
        reap()
        for c in ("memory", "pids"):
            assert not os.path.exists(f"{V1_ROOT}/{c}{path}")  # delete removed the container's v1 groups


def test_events_of_a_missing_or_stopped_container_is_one_line(machrun, tree, tmp_path):
    r = machrun("events", "--stats", "runtime-none", check=False)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
    r = machrun("events", "--interval", "soon", "runtime-none", check=False)
    assert r.returncode == 1 and "--interval" in r.stderr


def test_tmpcopyup_fills_the_tmpfs_from_the_tree_without_leaving_it(machrun, tree, tmp_path):
    """crun's tmpcopyup (podman --read-only): the tmpfs at /run, /tmp and a config's own /var/tmp
    starts with what the tree has there: files with owner, mode and xattrs, directories, FIFOs,
    hard links, and symlinks copied as symlinks (one pointing at the host's /etc is never followed);
    the root stays read-only and the tree itself is not written."""
    vt = tree / "var" / "tmp"
    (vt / "sub" / "deeper").mkdir(parents=True)
    (vt / "sub" / "deeper" / "f").write_text("deep\n")
    os.chown(vt / "sub", 1000, 100)
    os.chmod(vt / "sub", 0o750)
    (vt / "secret").write_text("s\n")
    os.chmod(vt / "secret", 0o600)
    os.setxattr(vt / "secret", "user.origin", b"image")
    os.link(vt / "secret", vt / "hardlink")
    os.symlink("/etc", vt / "out")  # absolute: inside the container it means the container's /etc
    os.symlink("../../..", vt / "up")
    os.mkfifo(vt / "fifo")
    (tree / "run" / "pidfile").write_text("42\n")
    (tree / "tmp" / "t").write_text("t\n")
    tmpfs = {"type": "tmpfs", "source": "tmpfs", "options": ["rw", "rprivate", "nosuid", "nodev", "tmpcopyup"]}
    mounts = json.loads((make_bundle(machrun, tree, ["true"]) / "config.json").read_text())["mounts"]
    mounts += [dict(tmpfs, destination=d) for d in ("/run", "/tmp", "/var/tmp")]
    bundle = make_bundle(machrun, tree, ["sleep", "1000"], mounts=mounts)
    config = json.loads((bundle / "config.json").read_text())
    config["root"]["readonly"] = True
    (bundle / "config.json").write_text(json.dumps(config))
    before = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))

    machrun("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "cu1")
    machrun("start", "cu1")
    pid = int((tmp_path / "pid").read_text())
    inside = pathlib.Path(f"/proc/{pid}/root")
    v = inside / "var" / "tmp"
    assert (v / "sub" / "deeper" / "f").read_text() == "deep\n"
    st = os.lstat(v / "sub")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 100, 0o750)
    assert os.lstat(v / "secret").st_mode & 0o7777 == 0o600
    assert os.getxattr(v / "secret", "user.origin") == b"image"
    assert os.lstat(v / "hardlink").st_ino == os.lstat(v / "secret").st_ino
    assert os.readlink(v / "out") == "/etc" and os.readlink(v / "up") == "../../.."
    assert stat_is_fifo(os.lstat(v / "fifo").st_mode)
    assert (inside / "run" / "pidfile").read_text() == "42\n" and (inside / "tmp" / "t").read_text() == "t\n"

    r = machrun("exec", "cu1", "sh", "-c",
                "touch /rootfile 2>/dev/null && echo root-writable || echo root-read-only; "
                "for d in /run /tmp /var/tmp; do echo x > $d/new && echo $d writable; done; "
                "grep -E ' /(run|tmp|var/tmp) ' /proc/self/mountinfo | grep -c 'nosuid,nodev.* - tmpfs'")
    assert r.stdout.split("\n")[:5] == ["root-read-only", "/run writable", "/tmp writable", "/var/tmp writable", "3"]
    machrun("delete", "--force", "cu1")
    assert sorted(str(p.relative_to(tree)) for p in tree.rglob("*")) == before  # the tree got nothing


def stat_is_fifo(mode):
    import stat  # noqa: PLC0415
    return stat.S_ISFIFO(mode)


def status_fields(text):
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def test_exec_process_applies_every_field(machrun, tree, tmp_path):
    """exec --process: rlimits, the five capability sets (ambient for a non-root user),
    noNewPrivileges, oomScoreAdj, ioPriority, scheduler, umask, additionalGids, env, cwd, read
    from inside; sets beyond the init's bounding set are cut to it; what cannot be applied is
    refused by name."""
    bundle = make_bundle(machrun, tree, ["sleep", "1000"])
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["capabilities"] = {s: ["CAP_KILL", "CAP_CHOWN", "CAP_NET_RAW"]
                                         for s in ("bounding", "effective", "permitted")}
    (bundle / "config.json").write_text(json.dumps(config))
    machrun("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "ex1")
    machrun("start", "ex1")
    probe = ("cat /proc/self/status; echo ==; cat /proc/self/limits; echo ==; cat /proc/self/oom_score_adj; "
             "echo ==; ionice -p $$; echo ==; cut -d' ' -f19,41 /proc/self/stat; echo ==; umask; echo ==; "
             "pwd; echo $FOO; id -G")

    def run(process):
        (tmp_path / "p.json").write_text(json.dumps(process))
        r = machrun("exec", "--process", str(tmp_path / "p.json"), "ex1", check=False)
        return r, r.stdout.split("==\n")

    caps = {"bounding": ["CAP_KILL", "CAP_CHOWN", "CAP_NET_RAW", "CAP_SYS_TIME"],
            "effective": ["CAP_KILL", "CAP_CHOWN"], "permitted": ["CAP_KILL", "CAP_CHOWN", "CAP_NET_RAW"],
            "inheritable": ["CAP_CHOWN", "CAP_NET_RAW"], "ambient": ["CAP_CHOWN"]}
    r, out = run({"args": ["sh", "-c", probe], "cwd": "/tmp", "env": ["FOO=bar", "PATH=/bin"],
                  "user": {"uid": 1000, "gid": 1000, "umask": 0o27, "additionalGids": [100, 5]},
                  "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456},
                              {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}],
                  "capabilities": caps, "noNewPrivileges": True, "oomScoreAdj": 321,
                  "ioPriority": {"class": "IOPRIO_CLASS_IDLE"},
                  "scheduler": {"policy": "SCHED_BATCH", "nice": 7}})
    assert r.returncode == 0, r.stderr
    st = status_fields(out[0])
    bit = {"CAP_CHOWN": 1 << 0, "CAP_KILL": 1 << 5, "CAP_NET_RAW": 1 << 13, "CAP_SYS_TIME": 1 << 25}
    init_bnd = int(status_fields(pathlib.Path(f"/proc/{int((tmp_path / 'pid').read_text())}/status")
                                 .read_text())["CapBnd"], 16)
    # CAP_SYS_TIME is not in the init's bounding set (spawn's 26): cut.
    assert int(st["CapBnd"], 16) == (bit["CAP_KILL"] | bit["CAP_CHOWN"] | bit["CAP_NET_RAW"] |
                                     bit["CAP_SYS_TIME"]) & init_bnd
    assert int(st["CapInh"], 16) == bit["CAP_CHOWN"] | bit["CAP_NET_RAW"]
    # uid 1000 after execve: permitted = effective = ambient (capabilities(7)).
    assert int(st["CapAmb"], 16) == bit["CAP_CHOWN"]
    assert int(st["CapPrm"], 16) == bit["CAP_CHOWN"] and int(st["CapEff"], 16) == bit["CAP_CHOWN"]
    assert st["NoNewPrivs"] == "1"
    assert st["Uid"].split()[0] == "1000" and st["Gid"].split()[0] == "1000"
    assert sorted(st["Groups"].split()) == ["100", "5"]
    limits = {line[:26].strip(): line[26:].split()[:2] for line in out[1].splitlines()[1:]}
    assert limits["Max open files"] == ["123", "456"] and limits["Max core file size"] == ["0", "0"]
    assert out[2].strip() == "321"
    assert out[3].strip().startswith("idle")
    assert out[4].split() == ["7", "3"]  # nice 7, SCHED_BATCH
    assert out[5].strip() == "0027"
    assert out[6].split("\n")[:2] == ["/tmp", "bar"]

    # root: the given sets (the kernel makes permitted = bounding | inheritable at execve for uid 0).
    r, out = run({"args": ["grep", "-E", "^Cap(Eff|Bnd|Inh)", "/proc/self/status"], "cwd": "/",
                  "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]}})
    assert status_fields(r.stdout) == {"CapInh": "0000000000000000", "CapBnd": "0000000000000020",
                                       "CapEff": "0000000000000020"}

    # Refused by name, nothing started.
    for field, process in [
            ("process.apparmorProfile", {"apparmorProfile": "docker-default"}),
            ("process.selinuxLabel", {"selinuxLabel": "system_u:system_r:container_t:s0"}),
            ("process.capabilities.ambient", {"capabilities": {"bounding": ["CAP_KILL"], "permitted": ["CAP_CHOWN"],
                                                               "ambient": ["CAP_KILL"]}}),
            ("process.rlimits", {"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 9, "hard": 8}]})]:
        r, _ = run({"args": ["sh", "-c", "echo started"], "cwd": "/", **process})
        assert r.returncode != 0 and field in r.stderr and "started" not in r.stdout, (field, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    machrun("delete", "--force", "ex1")


def test_exec_argv_options_behave_as_runcs(machrun, tree, tmp_path):
    """The argv form starts from the container's own process (rlimits, capabilities, user) and
    applies runc's options on top: --cap, --env, --cwd, --user, --no-new-privs,
    --additional-gids; --apparmor, --process-label and --cgroup are refused by name."""
    config = json.loads((make_bundle(machrun, tree, ["true"]) / "config.json").read_text())
    process = dict(config["process"], user={"uid": 1000, "gid": 1000},
                   rlimits=[{"type": "RLIMIT_NOFILE", "soft": 77, "hard": 88}],
                   env=["PATH=/bin", "FROM=config"], noNewPrivileges=False)
    # create's model for a non-root init: bounding = effective = permitted = ambient.
    process["capabilities"] = {s: ["CAP_KILL"] for s in ("bounding", "effective", "permitted", "ambient")}
    bundle = make_bundle(machrun, tree, ["sleep", "1000"], process=dict(process, args=["sleep", "1000"]))
    machrun("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), "ex2")
    machrun("start", "ex2")
    probe = "id -u; id -g; id -G; pwd; echo $FROM $EXTRA; grep -E '^(CapBnd|NoNewPrivs)' /proc/self/status; " \
            "grep 'Max open files' /proc/self/limits"
    r = machrun("exec", "ex2", "sh", "-c", probe)
    lines = r.stdout.splitlines()
    assert lines[:5] == ["1000", "1000", "1000", "/", "config"], r.stdout  # the config's user and env
    assert lines[5].split()[1] == "0000000000000020" and lines[6].split()[1] == "0"
    assert lines[7].split()[3:5] == ["77", "88"]

    r = machrun("exec", "--user", "0", "--cwd", "/tmp", "--env", "EXTRA=cli", "--cap", "CAP_NET_RAW",
                "--no-new-privs", "--additional-gids", "100", "-g", "5", "ex2", "sh", "-c", probe)
    lines = r.stdout.splitlines()
    assert lines[0] == "0" and lines[1] == "1000"  # --user UID keeps the config's gid, as runc
    assert sorted(lines[2].split()) == ["100", "1000", "5"]
    assert lines[3:5] == ["/tmp", "config cli"]
    # --cap adds to the config's sets, but an exec never gets more than the init's bounding set
    # (CAP_KILL here): CAP_NET_RAW is cut.
    assert int(lines[5].split()[1], 16) == 1 << 5 and lines[6].split()[1] == "1"

    for args, name in [(["--apparmor", "docker-default"], "process.apparmorProfile"),
                       (["--process-label", "system_u:system_r:container_t:s0"], "process.selinuxLabel"),
                       (["--cgroup", "sub"], "--cgroup"), (["--user", "root"], "--user"),
                       (["--cap", "CAP_BOGUS"], "CAP_BOGUS")]:
        r = machrun("exec", *args, "ex2", "sh", "-c", "echo started", check=False)
        assert r.returncode != 0 and name in r.stderr and "started" not in r.stdout, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    (tmp_path / "p.json").write_text(json.dumps({"args": ["true"], "cwd": "/"}))
    r = machrun("exec", "--process", str(tmp_path / "p.json"), "--cap", "CAP_KILL", "ex2", check=False)
    assert r.returncode != 0 and "--cap" in r.stderr
    machrun("delete", "--force", "ex2")


# ---- user namespaces ----------------------------------------------------------------------------

# Several ranges, as an engine may give them: 0-999 and 1000-65535 on separate host ranges.
USERNS_UIDS = [{"containerID": 0, "hostID": 100000, "size": 1000}, {"containerID": 1000, "hostID": 301000, "size": 64536}]


def to_host(i):
    for m in USERNS_UIDS:
        if m["containerID"] <= i < m["containerID"] + m["size"]:
            return m["hostID"] + i - m["containerID"]
    raise ValueError(i)


def shift_tree(tree):
    """Owns the tree by the mapped IDs, as podman chowns its storage for --uidmap."""
    paths = [str(tree)]
    for d, dirs, files in os.walk(tree):
        paths += [os.path.join(d, n) for n in [*dirs, *files]]
    for p in paths:
        st = os.lstat(p)
        os.lchown(p, to_host(st.st_uid), to_host(st.st_gid))


def userns_bundle(machrun, tree, args, **extra):
    os.chown(tree / "home" / "user", 1000, 1000)  # the copy of the tree is root's throughout
    shift_tree(tree)
    bundle = make_bundle(machrun, tree, args, **extra)
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = USERNS_UIDS
    config["linux"]["gidMappings"] = USERNS_UIDS
    caps = config["process"]["capabilities"]
    for k in caps:
        caps[k] = [*caps[k], "CAP_SYS_ADMIN"]  # to show that the container's root may mount
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle, config


def test_user_namespace_maps_owners_volumes_idmapped_binds_and_exec(machrun, tree, tmp_path):
    vol = tmp_path / "vol"  # the container root's own volume
    vol.mkdir()
    os.chown(vol, 100000, 100000)
    idm = tmp_path / "idm"  # host root's directory, idmapped into the container
    idm.mkdir()
    (idm / "host-file").write_text("x")
    own = tmp_path / "own"  # idmapped through the mount's own maps: disk 0 is the container's 1000
    own.mkdir()
    (own / "host-file").write_text("x")
    log = tmp_path / "hooks.log"
    hook = {"path": "/bin/sh", "args": ["sh", "-c", f"read -r st; pid=${{st#*\\\"pid\\\":}}; pid=${{pid%%,*}}; "
                                                    f"cat /proc/$pid/uid_map >> {log}"]}
    script = ("cat /proc/self/uid_map; id -u; id -g; stat -c '%u %g' /home/user /; touch /mnt/made-inside; "
              "stat -c %u /idm/host-file; touch /idm/made-inside; stat -c %u /own/host-file; "
              "mount -t tmpfs none /tmp && echo mounted-tmpfs; exec sleep 1000")
    bundle, config = userns_bundle(machrun, tree, ["sh", "-c", script], hooks={"createRuntime": [hook]})
    config["mounts"] += [
        {"destination": "/mnt", "type": "bind", "source": str(vol), "options": ["rbind", "rw"]},
        {"destination": "/idm", "type": "bind", "source": str(idm), "options": ["rbind", "idmap"]},
        {"destination": "/own", "type": "bind", "source": str(own), "options": ["rbind", "ridmap"],
         "uidMappings": [{"containerID": 0, "hostID": 301000, "size": 1}],
         "gidMappings": [{"containerID": 0, "hostID": 301000, "size": 1}]},
    ]
    (bundle / "config.json").write_text(json.dumps(config))
    out_file = tmp_path / "out"
    with open(out_file, "w") as out:  # the init's stdout, as conmon's pipe would be
        subprocess.run([machrun.bin, "--root", str(machrun.state_root), "create", "--bundle", str(bundle), "--pid-file",
                        str(tmp_path / "pid"), "u1"], stdin=subprocess.DEVNULL, stdout=out, check=True, timeout=30)
    pid = int((tmp_path / "pid").read_text())
    # The parent wrote the maps before the init went on: the createRuntime hook sees them.
    assert log.read_text().split() == ["0", "100000", "1000", "1000", "301000", "64536"]
    machrun("start", "u1")
    assert wait_for(lambda: "mounted-tmpfs" in out_file.read_text())
    out = out_file.read_text().split()
    assert out[:6] == ["0", "100000", "1000", "1000", "301000", "64536"], out
    assert out[6:8] == ["0", "0"]  # id -u, id -g
    assert out[8:12] == ["1000", "1000", "0", "0"]  # the shifted tree's owners, seen inside
    assert out[12] == "0"  # host root's file through the idmapped bind
    assert out[13] == "1000"  # disk 0 through the mount's own maps is host 301000: the container's 1000
    assert out[14] == "mounted-tmpfs"  # root inside may mount: its mount namespace is the user namespace's
    # On the host: the init runs as the mapped root; what it made is owned by the mapped IDs.
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    assert "\nUid:\t100000\t100000\t100000\t100000\n" in status
    st = (vol / "made-inside").stat()
    assert (st.st_uid, st.st_gid) == (100000, 100000)
    st = (idm / "made-inside").stat()
    assert (st.st_uid, st.st_gid) == (0, 0)  # through the idmapped bind: host root's on disk

    # exec joins the user namespace.
    r = machrun("exec", "u1", "sh", "-c", "cat /proc/self/uid_map; id -u; readlink /proc/self/ns/user")
    lines = r.stdout.split()
    assert lines[:6] == ["0", "100000", "1000", "1000", "301000", "64536"]
    assert lines[6] == "0"
    assert lines[7] == os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")

    # A second container joins the first one's user namespace by path.
    tree2 = tmp_path / "tree2"
    shutil.copytree(tree, tree2, symlinks=True)
    b2 = make_bundle(machrun, tree2, ["sh", "-c", "cat /proc/self/uid_map; id -u"])
    shutil.move(str(b2), str(tmp_path / "bundle2"))
    b2 = tmp_path / "bundle2"
    c2 = json.loads((b2 / "config.json").read_text())
    c2["linux"]["namespaces"].append({"type": "user", "path": f"/proc/{pid}/ns/user"})
    (b2 / "config.json").write_text(json.dumps(c2))
    r = machrun("run", "--bundle", str(b2), "u2")
    assert r.stdout.split() == ["0", "100000", "1000", "1000", "301000", "64536", "0"], r.stderr
    machrun("delete", "--force", "u1")
    assert os.listdir(machrun.state_root) == []


def test_user_namespace_with_the_console_socket(machrun, tree, tmp_path):
    bundle, _ = userns_bundle(machrun, tree, ["sh", "-c", "test -t 0 && echo tty-ok; stat -c '%u %g' $(tty); id -u"],
                              terminal=True)
    out = run_on_console_socket(machrun, bundle, tmp_path, "ut")
    # The pty is the container root's, in its tty group.
    assert out.replace(b"\r", b"").split() == [b"tty-ok", b"0", b"5", b"0"], out
    machrun("delete", "ut")


def test_user_namespace_bad_maps_are_one_line_and_leave_nothing(machrun, tree, tmp_path):
    bundle, config = userns_bundle(machrun, tree, ["true"])
    cases = [
        ({"uidMappings": [{"containerID": 1, "hostID": 100000, "size": 10}]}, "must be mapped"),
        ({"gidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}]}, "same host ID"),
        ({"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 10},
                          {"containerID": 5, "hostID": 300000, "size": 10}]}, "overlaps"),
    ]
    for change, words in cases:
        c = json.loads(json.dumps(config))
        c["linux"].update(change)
        (bundle / "config.json").write_text(json.dumps(c))
        r = machrun("create", "--bundle", str(bundle), "bad", check=False)
        assert r.returncode == 1 and words in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
        assert os.listdir(machrun.state_root) == []
        assert not os.path.exists(CGROUP2 + "/machrun/bad")
    c = json.loads(json.dumps(config))
    c["linux"]["namespaces"][-1] = {"type": "user", "path": "/proc/self/ns/net"}
    del c["linux"]["uidMappings"], c["linux"]["gidMappings"]
    (bundle / "config.json").write_text(json.dumps(c))
    r = machrun("create", "--bundle", str(bundle), "bad", check=False)
    assert r.returncode == 1 and "is not a user namespace" in r.stderr, r.stderr
    assert os.listdir(machrun.state_root) == []


def test_features_reports_what_create_applies(machrun, tree):
    f = json.loads(machrun("features").stdout)
    assert f["hooks"] == ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
    assert f["linux"]["cgroup"]["v1"] and f["linux"]["cgroup"]["v2"] and f["linux"]["seccomp"]["enabled"]
    assert "SCMP_ACT_NOTIFY" not in f["linux"]["seccomp"]["actions"]
    assert {"tmpcopyup", "idmap", "ridmap"} <= set(f["mountOptions"]) and "user" in f["linux"]["namespaces"]
    # A config at ociVersionMax, with a seccomp profile using a listed action, operator and flag, runs.
    bundle = make_bundle(machrun, tree, ["sh", "-c", "echo ran"])
    config = json.loads((bundle / "config.json").read_text())
    config["ociVersion"] = f["ociVersionMax"]
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW", "flags": f["linux"]["seccomp"]["supportedFlags"],
        "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 0, "value": 255, "op": f["linux"]["seccomp"]["operators"][0]}]}]}
    (bundle / "config.json").write_text(json.dumps(config))
    r = machrun("run", "--bundle", str(bundle), "feat", check=False)
    assert r.returncode == 0 and r.stdout == "ran\n", r.stderr
