"""What a hostile container could do to the host through spawn (issue 19): type into the user's
terminal with TIOCSTI in pipe mode (A), leave a setuid-root file in an idmapped tree other users can
reach (B), block a machine name on the host through an abstract socket (C). Root only; the probe
(tests/helpers/probe.c) is built static at test time and copied into the container's tree."""
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "helpers"))
from hostile import build_probe, in_script, injection_line  # noqa: E402

LOCKS = pathlib.Path("/run/machkit/locks")
NOTICE = "Console mode 'pipe' selected"


@pytest.fixture(scope="session")
def probe_bin(tmp_path_factory):
    return build_probe(tmp_path_factory.mktemp("probe"))


@pytest.fixture
def ptree(tree, probe_bin):
    """The busybox tree with /probe in it."""
    shutil.copy2(probe_bin, tree / "probe")
    return tree


# ---- A: TIOCSTI / TIOCLINUX into the host terminal ----------------------------------------------

def test_the_harness_sees_an_injection(probe_bin):
    # The control: on the host (no filter), the probe's keystrokes do reach the shell's read.
    out = in_script(injection_line(f"{probe_bin} tiocsti 'echo INJECTED\\n'", probe_bin))
    assert "HOSTGOT=[echo INJECTED]" in out, out


@pytest.mark.parametrize("high", ["", "123", "ffffffff"])
def test_pipe_mode_payload_cannot_type_into_the_host_terminal(spawn_bin, ptree, probe_bin, high):
    # The reproduction of issue 19 A, and the CVE-2019-10063 variant with bits above 32 set, which
    # the kernel drops (it reads the request as unsigned int).
    spawn = (f"{spawn_bin} -D {ptree} -M tiocsti-pipe --register=no --console=pipe "
             f"/probe tiocsti 'echo INJECTED\\n' {high}")
    out = in_script(injection_line(spawn, probe_bin))
    assert "TIOCSTI errno=1" in out, out  # EPERM, from the filter
    assert "HOSTGOT=[SENTINEL]" in out, out
    assert "INJECTED" not in out.replace("'echo INJECTED", ""), out


def test_tioclinux_is_refused_too(spawn_bin, ptree, probe_bin):
    out = in_script(f"{spawn_bin} -q -D {ptree} -M tioclinux --register=no --console=pipe /probe tioclinux")
    assert "TIOCLINUX errno=1" in out, out


def test_pipe_mode_on_a_terminal_prints_one_notice(spawn_bin, ptree):
    out = in_script(f"{spawn_bin} -D {ptree} -M pipe-notice --register=no --console=pipe /bin/true")
    assert out.count(NOTICE) == 1, out
    assert len([l for l in out.splitlines() if NOTICE in l]) == 1
    # Quiet, or not a terminal: no notice.
    out = in_script(f"{spawn_bin} -q -D {ptree} -M pipe-notice --register=no --console=pipe /bin/true")
    assert NOTICE not in out, out
    r = subprocess.run([spawn_bin, "-D", str(ptree), "-M", "pipe-notice", "--register=no", "--console=pipe",
                        "/bin/true"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and NOTICE not in r.stderr, r.stderr


# ---- B: idmapped trees other users can reach ----------------------------------------------------

@pytest.fixture
def open_parent(ptree):
    """A copy of the tree in a directory every user can walk into (/tmp/x 0755)."""
    parent = pathlib.Path(tempfile.mkdtemp(prefix="mk-reachable-"))
    os.chmod(parent, 0o755)
    copy = parent / "tree"
    shutil.copytree(ptree, copy, symlinks=True)
    yield copy
    shutil.rmtree(parent, ignore_errors=True)


SUID = "cp /probe /suid && chown 0:0 /suid && chmod 4755 /suid && echo MADE"


def run_as_nobody(path):
    # Through a shell: setpriv itself keeps its capabilities up to its own execve (PR_SET_KEEPCAPS),
    # so a path it executes directly is looked up as if by root.
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c",
                           'exec "$0" whoami', str(path)], capture_output=True, text=True, timeout=30)


def test_idmap_refuses_a_tree_other_users_can_reach(spawn_bin, open_parent):
    r = subprocess.run([spawn_bin, "-q", "-P", "-U", "-D", str(open_parent), "-M", "reach-refused", "--register=no",
                        "--", "/bin/sh", "-c", SUID], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert f"chmod 0700 {open_parent.parent}" in lines[0] and "--private-users-ownership=chown" in lines[0]
    assert "MADE" not in r.stdout and not (open_parent / "suid").exists()


def test_a_tree_right_in_a_shared_directory_is_not_told_to_close_it(spawn_bin, tree):
    # /tmp must stay 1777: the advice is to move the tree, never to chmod /tmp.
    shared = pathlib.Path(tempfile.mkdtemp(prefix="mk-shared-", dir="/var/tmp"))
    try:
        shared.chmod(0o1777)
        moved = shared / "tree"
        shutil.copytree(tree, moved, symlinks=True)
        r = subprocess.run([spawn_bin, "-q", "-P", "-U", "-D", str(moved), "-M", "reach-shared", "--register=no",
                            "--", "/bin/true"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert r.returncode == 1, r.stderr
        assert "move it into a directory only root can enter" in r.stderr and "chmod" not in r.stderr
        assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    finally:
        shutil.rmtree(shared)


def test_explicit_map_on_a_reachable_tree_warns_once(spawn_bin, open_parent):
    r = subprocess.run([spawn_bin, "-q", "-P", "-U", "--private-users-ownership=map", "-D", str(open_parent),
                        "-M", "reach-map", "--register=no", "--", "/bin/true"],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    warnings = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(warnings) == 1 and "can be reached by users other than root" in warnings[0], r.stderr


def test_read_only_runs_of_a_reachable_tree_are_fine(spawn_bin, open_parent):
    # Nothing container root makes reaches the disk (spawn does not take -U with -x/--volatile yet).
    for extra in (["--read-only"],):
        r = subprocess.run([spawn_bin, "-q", "-P", "-U", *extra, "-D", str(open_parent), "-M", "reach-tmp",
                            "--register=no", "--", "/bin/true"], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0 and r.stderr == "", (extra, r.stderr)


def test_chown_ownership_on_a_reachable_tree_grants_nothing(spawn_bin, open_parent):
    r = subprocess.run([spawn_bin, "-q", "-P", "-U", "--private-users-ownership=chown", "-D", str(open_parent),
                        "-M", "reach-chown", "--register=no", "--", "/bin/sh", "-c", SUID],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and "MADE" in r.stdout, r.stderr
    suid = open_parent / "suid"
    assert suid.stat().st_uid >= 0x80000 and suid.stat().st_mode & 0o4000
    out = run_as_nobody(suid)
    assert out.returncode == 0, out.stderr
    assert f"euid={suid.stat().st_uid} shadow=no" in out.stdout, out.stdout


def test_setuid_root_file_left_by_container_root_is_out_of_other_users_reach(spawn_bin, ptree):
    # The reproduction of issue 19 B on the default path: -U on a tree below a 0700 directory.
    # Through the idmapped mount the file is host root's and setuid on disk...
    os.chmod(ptree.parent, 0o700)
    r = subprocess.run([spawn_bin, "-q", "-P", "-U", "-D", str(ptree), "-M", "suid-default", "--register=no",
                        "--", "/bin/sh", "-c", SUID], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and "MADE" in r.stdout, r.stderr
    suid = ptree / "suid"
    assert suid.stat().st_uid == 0 and suid.stat().st_mode & 0o4000
    # ...but no other host user can reach it to run it.
    out = run_as_nobody(suid)
    assert out.returncode != 0 and "euid=0" not in out.stdout, out.stdout + out.stderr
    assert "Permission denied" in out.stderr, out.stderr


# ---- C: machine names cannot be blocked from inside a container ---------------------------------

def test_a_container_cannot_block_a_machine_name(spawn_bin, ptree, tmp_path):
    # The reproduction of issue 19 C: a -U container sharing the host's network binds the abstract
    # name the old lock used; a machine of that name still starts.
    other = tmp_path / "other"
    shutil.copytree(ptree, other, symlinks=True)
    p = subprocess.Popen([spawn_bin, "-q", "-P", "-U", "-D", str(ptree), "--register=no", "-M", "rtlock-squat",
                          "/probe", "bindabs", "machkit/spawn/victim-squat", "100"],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "BOUND"
        r = subprocess.run([spawn_bin, "-q", "-P", "-D", str(other), "--register=no", "-M", "victim-squat",
                            "--", "/bin/sh", "-c", "ls /run/machkit 2>&1; echo ran"],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[-1] == "ran"
        assert "No such file" in r.stdout, "the host's lock directory is not visible inside"
        # The squatter's own lock is a root-only file on the host.
        st = LOCKS.stat()
        assert st.st_uid == 0 and st.st_mode & 0o777 == 0o700
        assert (LOCKS / "machine.rtlock-squat").exists()
    finally:
        p.kill()
        p.wait()


def test_name_lock_file_lives_as_long_as_the_machine(spawn_bin, ptree):
    p = subprocess.Popen([spawn_bin, "-q", "-P", "-D", str(ptree), "--register=no", "-M", "lockfile-life",
                          "--", "/bin/sh", "-c", "echo ready; read x; exit 0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    lock = LOCKS / "machine.lockfile-life"
    try:
        assert p.stdout.readline().strip() == "ready"
        assert lock.exists()
        p.stdin.close()  # the payload's read ends, and with it the machine
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert not lock.exists(), "a clean exit removes its lock file"


def test_sigkilled_spawn_leaves_no_lock_held(spawn_bin, ptree):
    p = subprocess.Popen([spawn_bin, "-q", "-P", "-D", str(ptree), "--register=no", "-M", "lock-killed",
                          "--", "/bin/sh", "-c", "echo ready; exec sleep 100"], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.kill()
    p.wait()
    # The kernel dropped the lock with spawn; the same name (and tree) start again at once. The
    # container itself may take a moment to die, but it holds no lock of its own.
    r = subprocess.run([spawn_bin, "-q", "-P", "-x", "-D", str(ptree), "--register=no", "-M", "lock-killed",
                        "/bin/true"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert not (LOCKS / "machine.lock-killed").exists(), "the next start swept or removed the stale file"


# ---- D: what holds only under -U, and what --private-network adds (docs/security.md) ------------

def test_without_userns_container_root_can_undo_the_proc_and_sys_protections(spawn_bin, ptree):
    # docs/security.md T-10 to T-12 say these hold against container root only under -U, as with
    # nspawn: without it root inside holds CAP_SYS_ADMIN of the host. If this starts failing, the
    # rows can say more.
    script = ("mount -o remount,rw /proc/sys && echo PROCSYS_RW; umount /proc/kallsyms && echo MASK_GONE; "
              "mkdir -p /tmp/p; mount -t proc proc /tmp/p && echo FRESH_PROC; "
              "mount -o remount,rw /sys && echo SYS_RW; true")
    for extra, expect in (([], {"PROCSYS_RW", "MASK_GONE", "FRESH_PROC", "SYS_RW"}), (["-U"], set())):
        r = subprocess.run([spawn_bin, "-q", "-P", *extra, "-D", str(ptree), "-M", "undo-protections",
                            "--register=no", "--", "/bin/sh", "-c", script],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        assert set(r.stdout.split()) == expect, (extra, r.stdout)


def test_host_abstract_sockets_are_reachable_without_a_private_network(spawn_bin, ptree):
    # Documented next to --private-network (spawn.1, docs/networking.md), as nspawn's man page does.
    import socket
    name = f"mk-h19-abstract-{os.getpid()}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind("\0" + name)
    srv.listen(4)
    try:
        for extra, expect in (([], "CONNECTED"), (["-U"], "CONNECTED"), (["--private-network"], "connect errno=")):
            r = subprocess.run([spawn_bin, "-q", "-P", *extra, "-D", str(ptree), "-M", "abstract-reach",
                                "--register=no", "/probe", "connectabs", name],
                               capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
            assert r.stdout.startswith(expect), (extra, r.stdout, r.stderr)
    finally:
        srv.close()
