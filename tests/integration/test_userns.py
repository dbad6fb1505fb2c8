"""User namespaces (-U, --private-users=): the mapping, idmapped ownership, and that the mounts
spawn made are locked for root inside (T-10, T-11, T-13, T-14). Root only; asserted from inside."""
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_boot import Console, nsenter  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def sh(spawn_bin, tree, cmd, *args):
    return subprocess.run([spawn_bin, "-q", "-P", "-D", str(tree), *args, "--", "/bin/sh", "-c", cmd],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def uid_map(text):
    return [int(x) for x in text.split()[:3]]


def test_private_users_pick_maps_root_and_keeps_owners(spawn_bin, tree):
    r = sh(spawn_bin, tree, "cat /proc/self/uid_map; id -u; stat -c %u /etc/passwd; touch /root/made; "
                            "grep CapEff /proc/self/status", "-U")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    inside, outside, count = uid_map(lines[0])
    assert inside == 0 and count == 65536 and outside >= 0x80000 and outside % 65536 == 0
    assert lines[1] == "0" and lines[2] == "0", "the tree's root-owned files are root's inside (idmapped)"
    assert (tree / "root" / "made").stat().st_uid == 0, "files root makes inside are root's on disk"
    # T-14: not the identity map of the whole range.
    assert lines[0].split() != ["0", "0", "4294967295"]
    # Deterministic per machine name.
    again = sh(spawn_bin, tree, "cat /proc/self/uid_map", "-U")
    assert uid_map(again.stdout) == [inside, outside, count]


def test_container_processes_run_under_the_shifted_uid(spawn_bin, tree):
    p = subprocess.Popen([spawn_bin, "-q", "-P", "-U", "-D", str(tree), "--", "/bin/sh", "-c",
                          "cat /proc/self/uid_map; exec sleep 100"], stdout=subprocess.PIPE, text=True)
    try:
        shift = uid_map(p.stdout.readline())[1]
        kids = pathlib.Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
        status = pathlib.Path(f"/proc/{kids[0]}/status").read_text()
        uid_line = [l for l in status.splitlines() if l.startswith("Uid:")][0].split()
        assert uid_line[1:] == [str(shift)] * 4
    finally:
        p.kill()
        p.wait()


def test_mounts_are_locked_inside_the_user_namespace(spawn_bin, tree):
    # T-10: masks and read-only mounts cannot be taken off by root inside.
    r = sh(spawn_bin, tree, "mkdir -p /tmp/m; umount -l /proc/sys && echo UNMOUNTED_SYS; "
                            "umount /proc/kallsyms && echo UNMOUNTED_MASK; "
                            "echo 4 > /proc/sys/kernel/printk && echo WROTE; cat /proc/kallsyms | wc -c; "
                            "mount -t cgroup -o rdma cgroup /tmp/m && echo CGV1; "
                            "mount -t proc proc /tmp/m && echo PROC; "
                            "mount -t tmpfs tmpfs /tmp/m && echo TMPFS; true", "-U")
    assert r.returncode == 0, r.stderr
    # T-13: no new cgroup v1 hierarchy; T-12: no fresh procfs to get around the masks.
    for bad in ("UNMOUNTED_SYS", "UNMOUNTED_MASK", "WROTE", "CGV1", "PROC"):
        assert bad not in r.stdout, (bad, r.stdout, r.stderr)
    assert r.stdout.splitlines()[0].strip() == "0", "the kallsyms mask reads nothing (EACCES or empty)"
    # Root inside may still mount what a user namespace owns (systemd needs that).
    assert "TMPFS" in r.stdout
    # (binfmt_misc is per user namespace since Linux 6.7, so mounting it there reaches no host state.)


MQ_C = r"""
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
int main(void) {
    mqd_t q = mq_open("/mk-queue", O_CREAT | O_RDWR, 0600, NULL);
    puts(q == (mqd_t)-1 ? "MQ_FAILED" : "MQ_OPEN");
    return 0;
}
"""


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc (a static mq_open probe)")
def test_dev_is_built_inside_the_user_namespace(spawn_bin, tree, tmp_path):
    # /dev is made by the user namespace's root after pivot_root (docs/criu.md, "-U"): its device
    # nodes are binds of the host's (nothing there may mknod), its mqueue is the one of the IPC
    # namespace the payload runs in (it used to be mounted before that namespace was unshared, so
    # a queue did not show up in /dev/mqueue), and the masks made from the host stay locked.
    (tmp_path / "mq.c").write_text(MQ_C)
    subprocess.run(["gcc", "-O2", "-static", "-o", str(tree / "mq"), str(tmp_path / "mq.c"), "-lrt"], check=True)
    r = sh(spawn_bin, tree, "/mq; ls /dev/mqueue; grep -c ' /dev/null .* - devtmpfs ' /proc/self/mountinfo; "
                            "echo x > /dev/null && head -c 3 /dev/zero | wc -c; umount -l /proc/sys && echo UNMOUNTED_SYS; "
                            "true", "-U")
    assert r.returncode == 0, r.stderr
    out = r.stdout.split()
    assert out[:4] == ["MQ_OPEN", "mk-queue", "1", "3"], r.stdout + r.stderr
    assert "UNMOUNTED_SYS" not in r.stdout


def test_identity_and_fixed_ranges(spawn_bin, tree):
    r = sh(spawn_bin, tree, "cat /proc/self/uid_map", "--private-users=identity")
    assert uid_map(r.stdout) == [0, 0, 65536]
    r = sh(spawn_bin, tree, "cat /proc/self/uid_map; stat -c %u /etc/passwd",
           "--private-users=1048576:65536", "--private-users-ownership=off")
    lines = r.stdout.splitlines()
    assert uid_map(lines[0]) == [0, 1048576, 65536]
    assert lines[1] == "65534", "without idmapping the host's root files belong to nobody inside"


def test_a_range_in_use_is_refused(spawn_bin, tree, tmp_path):
    p = subprocess.Popen([spawn_bin, "-q", "-P", "-U", "-D", str(tree), "-M", "holder", "--", "/bin/sh", "-c",
                          "cat /proc/self/uid_map; exec sleep 100"], stdout=subprocess.PIPE, text=True)
    try:
        shift = uid_map(p.stdout.readline())[1]
        other = tmp_path / "other"
        shutil.copytree(tree, other, symlinks=True)
        r = sh(spawn_bin, other, "true", f"--private-users={shift}")
        assert r.returncode == 1 and "in use" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        # pick skips it: a machine whose first candidate is taken gets another range.
        r = sh(spawn_bin, other, "cat /proc/self/uid_map", "-U", "-M", "holder2")
        assert uid_map(r.stdout)[1] != shift
    finally:
        p.kill()
        p.wait()



def test_debian_boots_in_a_user_namespace(spawn_bin, debian_tree, tmp_path):
    copy = tmp_path / "deb"
    subprocess.run(["cp", "-a", "--reflink=auto", str(debian_tree), str(copy)], check=True)
    c = Console([spawn_bin, "-b", "-U", "-D", str(copy), "-M", "udeb"])
    try:
        assert c.wait_for(r"Reached target [^\n]*multi-user\.target", 90), c.text()
        leader = c.leader()
        state = nsenter(leader, "systemctl", "is-system-running", "--wait")
        failed = nsenter(leader, "systemctl", "--failed", "--no-legend", "--plain").stdout
        assert state.stdout.strip() == "running", f"{state.stdout}\n{failed}\n{c.text()}"
        assert uid_map(pathlib.Path(f"/proc/{leader}/uid_map").read_text())[1] >= 0x80000
        c.p.send_signal(signal.SIGTERM)
        assert c.wait_exit(60) == 0, c.text()
    finally:
        if c.p.poll() is None:
            c.p.kill()
            c.p.wait()


def test_ownership_chown_shifts_the_tree_and_back(spawn_bin, tree):
    os.chown(tree / "home" / "user", 1000, 1000)
    r = sh(spawn_bin, tree, "cat /proc/self/uid_map; stat -c %u /etc/passwd /home/user; touch /root/made",
           "-U", "--private-users-ownership=chown")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    shift = int(lines[1])
    assert lines[3:5] == ["0", "1000"], "inside, the owners are what they were"
    assert (tree / "etc" / "passwd").stat().st_uid == shift
    assert (tree / "home" / "user").stat().st_uid == shift + 1000
    assert (tree / "root" / "made").stat().st_uid == shift
    # Again with the same range: nothing to do; then back to the identity range.
    assert sh(spawn_bin, tree, "true", "-U", "--private-users-ownership=chown").returncode == 0
    r = sh(spawn_bin, tree, "stat -c %u /etc/passwd", "--private-users=identity", "--private-users-ownership=chown")
    assert r.stdout.strip() == "0"
    assert (tree / "etc" / "passwd").stat().st_uid == 0
    assert (tree / "home" / "user").stat().st_uid == 1000


def test_bind_mounts_with_and_without_idmap(spawn_bin, tree, tmp_path):
    # --bind=…:idmap maps the source's owners into the container's range (host root is root
    # inside); a plain bind shows host-owned files as nobody. Targets are created even though the
    # tree itself is an idmapped mount.
    src = tmp_path / "shared"
    src.mkdir()
    (src / "f").write_text("hi\n")
    r = sh(spawn_bin, tree, "stat -c %u /mnt/i/f /mnt/n/f; echo more >> /mnt/i/f && echo WROTE",
           "-U", f"--bind={src}:/mnt/i:idmap", f"--bind-ro={src}:/mnt/n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "65534", "WROTE"]
    assert (src / "f").read_text() == "hi\nmore\n" and (src / "f").stat().st_uid == 0
    r = sh(spawn_bin, tree, "true", f"--bind={src}:/mnt/i:idmap")
    assert r.returncode == 1 and "user namespace" in r.stderr
