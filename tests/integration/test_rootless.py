"""Rootless spawn (issue 16): an ordinary user, with subordinate ranges in /etc/subuid and
/etc/subgid, runs a container from a tree in its home. The harness (root) creates the user and
removes it afterwards, also on failure; everything the user touches lives in its home (a 0700
pytest directory of root's would be out of its reach)."""
import fcntl
import os
import pathlib
import pwd
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from mkutil import host_mounts  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (creates a test user)")

HELPERS = pathlib.Path(__file__).resolve().parent.parent / "helpers"


def ranges(path, name):
    out = []
    for line in pathlib.Path(path).read_text().splitlines():
        f = line.split(":")
        if len(f) == 3 and f[0] == name:
            out.append((int(f[1]), int(f[2])))
    return out


class User:
    def __init__(self, name):
        pw = pwd.getpwnam(name)
        self.name, self.uid, self.gid, self.home = name, pw.pw_uid, pw.pw_gid, pathlib.Path(pw.pw_dir)
        self.runtime = self.home / "run"

    def env(self, extra=None):
        env = {"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(self.runtime), "HOME": str(self.home)}
        env.update(extra or {})
        return env

    def as_user(self):
        # setpriv execs in place (runuser would stay as a parent): the pid we start is the user's program.
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups"]

    def run(self, argv, wrap=(), timeout=60, env=None, **kw):
        """argv as the user, with the environment given here."""
        return subprocess.run([*wrap, *self.as_user(), *argv], env=self.env(env),
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)

    def own(self, path):
        subprocess.run(["chown", "-R", f"{self.uid}:{self.gid}", str(path)], check=True)


def remove_user(name):
    """userdel -r (it drops the user's /etc/subuid and /etc/subgid lines too). userdel refuses while a
    process of the user still runs (a machd, a bus or a guest still exiting): the test's own user's
    leftovers are killed and the removal tried again, so no test user outlives the run."""
    for _ in range(100):
        subprocess.run(["userdel", "-r", name], capture_output=True)
        if subprocess.run(["getent", "passwd", name], capture_output=True).returncode != 0:
            break
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        time.sleep(0.1)
    shutil.rmtree(f"/home/{name}", ignore_errors=True)


@pytest.fixture(scope="module")
def user(request):
    # Short and unique per run; useradd gives it the next free subordinate ranges (SUB_UID_*).
    name = f"mkrl{os.getpid() % 100000}"
    subprocess.run(["useradd", "-m", "-d", f"/home/{name}", "-s", "/bin/sh", name], check=True)
    request.addfinalizer(lambda: remove_user(name))
    u = User(name)
    assert ranges("/etc/subuid", name) and ranges("/etc/subgid", name), "useradd gave no subordinate ranges"
    u.runtime.mkdir(mode=0o700)
    u.own(u.runtime)
    return u


@pytest.fixture(scope="module")
def plain_user(request):
    """A second user, without subordinate ranges."""
    name = f"mkrp{os.getpid() % 100000}"
    subprocess.run(["useradd", "-m", "-d", f"/home/{name}", "-s", "/bin/sh", "-K", "SUB_UID_COUNT=0",
                    "-K", "SUB_GID_COUNT=0", name], check=True)
    request.addfinalizer(lambda: remove_user(name))
    u = User(name)
    assert not ranges("/etc/subuid", name)
    u.runtime.mkdir(mode=0o700)
    u.own(u.runtime)
    return u


@pytest.fixture(scope="module")
def utree_template(user):
    d = user.home / "tree-template"
    subprocess.run([str(HELPERS / "busybox-tree.sh"), str(d)], check=True)
    user.own(d)
    return d


@pytest.fixture
def utree(user, utree_template, request):
    """A busybox tree in the user's home, owned by the user: root inside, as podman unshare makes it."""
    d = user.home / ("tree-" + request.node.name[:40])
    subprocess.run(["cp", "-a", str(utree_template), str(d)], check=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def sh(user, spawn_bin, tree, cmd, *opts, wrap=()):
    return user.run([spawn_bin, "-q", "-P", "-D", str(tree), *opts, "--", "/bin/sh", "-c", cmd], wrap=wrap)


def test_root_inside_is_the_user_outside(user, spawn_bin, utree):
    shared = user.home / "shared"
    shared.mkdir()
    user.own(shared)
    r = sh(user, spawn_bin, utree, "id -u; cat /proc/self/uid_map; touch /mnt/made /root/made",
           f"--bind={shared}:/mnt")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "0"
    assert (shared / "made").stat().st_uid == user.uid, "root's file in a bound dir is the user's outside"
    assert (utree / "root" / "made").stat().st_uid == user.uid


def test_a_layer_stack_is_refused_rootless_with_one_line(user, spawn_bin, utree):
    """An OCI layer stack (NAME.mstack) needs root to mount its overlay of shared layers: a
    rootless spawn says so, points at --flatten, and mounts nothing."""
    layer = user.home / (".oci-sha256-" + "a" * 64)
    stack = user.home / "rl.mstack"
    (stack / "rw").mkdir(parents=True)
    os.symlink("../" + layer.name, stack / "layer@0")
    subprocess.run(["cp", "-a", str(utree), str(layer)], check=True)
    for p in (stack, stack / "rw", stack / "layer@0"):
        os.lchown(p, user.uid, user.uid)
    try:
        r = sh(user, spawn_bin, stack, "true")
        assert r.returncode != 0
        last = r.stderr.strip().splitlines()[-1]
        assert "layer stack runs as root only" in last and "--flatten" in last, r.stderr
        with open("/proc/self/mountinfo") as f:
            assert str(stack) not in f.read()
    finally:
        shutil.rmtree(stack, ignore_errors=True)
        shutil.rmtree(layer, ignore_errors=True)


def test_map_is_own_uid_then_subordinate_range(user, spawn_bin, utree):
    p = subprocess.Popen([*user.as_user(), spawn_bin, "-q", "-P", "-D", str(utree), "--",
                          "/bin/sh", "-c", "echo up; exec sleep 100"],
                         env=user.env(), stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "up"
        spawn_pid = p.pid
        kid = int(pathlib.Path(f"/proc/{spawn_pid}/task/{spawn_pid}/children").read_text().split()[0])
        rows = [list(map(int, l.split())) for l in pathlib.Path(f"/proc/{kid}/uid_map").read_text().splitlines()]
        # Seen from the host: the nested namespace's lines, mapped through the outer one.
        start, _ = ranges("/etc/subuid", user.name)[0]
        assert rows == [[0, user.uid, 1], [1, start, 65535]]
        status = pathlib.Path(f"/proc/{kid}/status").read_text()
        assert [l for l in status.splitlines() if l.startswith("Uid:")][0].split()[1:] == [str(user.uid)] * 4
        # SIGKILL of spawn: the container dies with it and nothing stays mounted on the host.
        before = host_mounts()
        os.kill(spawn_pid, signal.SIGKILL)
        p.wait(timeout=30)
        pidfd = None
        try:
            pidfd = os.pidfd_open(kid)
        except ProcessLookupError:
            pass
        if pidfd is not None:
            import select
            assert select.select([pidfd], [], [], 30)[0], "the container outlived spawn"
            os.close(pidfd)
        assert host_mounts() == before
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    # The name is free again for the same user (the lock went with the process).
    r = sh(user, spawn_bin, utree, "true")
    assert r.returncode == 0, r.stderr


def test_mounts_are_locked_for_root_inside(user, spawn_bin, utree):
    r = sh(user, spawn_bin, utree,
           "umount /proc/kallsyms && echo UNMASKED; umount -l /proc/sys && echo UNMOUNTED; "
           "mount -o remount,rw /sys && echo RW; touch /sys/x 2>/dev/null && echo WROTE; "
           "test -c /dev/null && echo > /dev/null && echo NULL_OK")
    assert r.returncode == 0, r.stderr
    for bad in ("UNMASKED", "UNMOUNTED", "RW", "WROTE"):
        assert bad not in r.stdout
    assert "NULL_OK" in r.stdout


def test_private_network_is_loopback_only(user, spawn_bin, utree):
    r = sh(user, spawn_bin, utree, "ls /sys/class/net; mount | grep ' /sys '", "--private-network")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0].split() == ["lo"]
    assert "sysfs on /sys type sysfs (ro" in r.stdout


def test_ephemeral_leaves_the_tree_unchanged(user, spawn_bin, utree):
    before = sorted(p.name for p in utree.iterdir())
    r = sh(user, spawn_bin, utree, "touch /made; rm /etc/os-release", "-x")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in utree.iterdir()) == before
    assert (utree / "etc" / "os-release").exists()


def refused(r, *words):
    assert r.returncode != 0
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    return err


def test_unreadable_tree_is_refused(user, spawn_bin, utree):
    os.chown(utree, 0, 0)
    os.chmod(utree, 0o700)
    refused(sh(user, spawn_bin, utree, "true"), "cannot read", str(utree))


def test_what_needs_root_is_refused(user, spawn_bin, utree):
    refused(sh(user, spawn_bin, utree, "true", "-U"), "/etc/subuid")
    before = sorted((str(p), p.lstat().st_uid, p.lstat().st_gid) for p in utree.rglob("*"))
    refused(sh(user, spawn_bin, utree, "true", "--private-users-ownership=map"), "needs root", "drop the option")
    assert sorted((str(p), p.lstat().st_uid, p.lstat().st_gid) for p in utree.rglob("*")) == before


def tree_state(tree):
    """(path, uid, gid, ctime) of every file in the tree, its root included. A chown changes every
    ctime; spawn's own writes (the guest's /etc files, new entries in directories) are left out of
    the ctimes: directories and /etc."""
    def ctime(p):
        st = p.lstat()
        return 0 if stat.S_ISDIR(st.st_mode) or p.relative_to(tree).parts[:1] == ("etc",) else st.st_ctime_ns
    return sorted((str(p), p.lstat().st_uid, p.lstat().st_gid, ctime(p)) for p in [tree, *tree.rglob("*")])


def test_chown_shifts_a_users_tree_into_the_range_once(user, spawn_bin, utree):
    """--private-users-ownership=chown: the user's own files move to the first subordinate uid, the
    podman layout's range files one up (inside k stays inside k), once; the guest then runs with the
    range alone (the user's uid not mapped), and a later run, with or without the flag, uses that map
    without touching the tree."""
    (sub, _), = ranges("/etc/subuid", user.name)[:1]
    (subg, _), = ranges("/etc/subgid", user.name)[:1]
    # A file of podman's inside 1 (the first subordinate ids), as podman unshare would leave it, and a
    # hard link, which must move once.
    svc = utree / "home" / "svc"
    svc.mkdir(parents=True, exist_ok=True)
    (svc / "data").write_text("x")
    os.link(svc / "data", utree / "home" / "data-link")
    os.lchown(svc / "data", sub, subg)
    os.lchown(svc, user.uid, user.gid)
    os.chmod(utree / "bin" / "busybox", 0o4755)  # setuid survives the chown
    # An ACL naming the user (ACL_USER entry) and file capabilities whose root is the user's uid (as a
    # rootless unpack writes them): both follow the owners.
    acl_file, caps_file = utree / "home" / "acl", utree / "home" / "caps"
    for f in (acl_file, caps_file):
        f.write_text("x")
        os.lchown(f, user.uid, user.gid)
    os.setxattr(acl_file, "system.posix_acl_access", struct.pack(
        "<I" + "HHI" * 5, 2, 0x01, 6, 0xFFFFFFFF, 0x02, 4, user.uid, 0x04, 4, 0xFFFFFFFF,
        0x10, 4, 0xFFFFFFFF, 0x20, 4, 0xFFFFFFFF))
    os.setxattr(caps_file, "security.capability", struct.pack("<IIIIII", 0x03000001, 1 << 13, 0, 0, 0, user.uid))
    shared = user.home / "shared-chown"
    shared.mkdir()
    os.chmod(shared, 0o777)
    try:
        cmd = ("id -u; id -g; cat /proc/self/uid_map; stat -c '%u %g' / /bin/busybox /home/svc/data "
               "/home/data-link; touch /mnt/made /root/made")
        r = sh(user, spawn_bin, utree, cmd, "--private-users-ownership=chown", f"--bind={shared}:/mnt")
        assert r.returncode == 0, r.stderr
        out = r.stdout.splitlines()
        assert out[:2] == ["0", "0"], r.stdout
        # Seen from inside U1's child namespace: one line, the range only.
        assert out[2].split() == ["0", "0", "65536"], r.stdout
        stats = [l for l in out if len(l.split()) == 2]
        assert stats == ["0 0", "0 0", "1 1", "1 1"], r.stdout
        # Outside: the pure range. The user's own uid owns nothing in the tree any more.
        assert utree.stat().st_uid == sub and utree.stat().st_gid == subg
        assert (utree / "bin" / "busybox").lstat().st_uid == sub
        assert (utree / "bin" / "busybox").lstat().st_mode & 0o4000, "setuid bit kept"
        assert (svc / "data").stat().st_uid == sub + 1 and (svc / "data").stat().st_gid == subg + 1
        assert (utree / "root" / "made").stat().st_uid == sub
        assert not [p for p in utree.rglob("*") if p.lstat().st_uid == user.uid]
        acl = os.getxattr(acl_file, "system.posix_acl_access")
        assert struct.unpack_from("<HHI", acl, 4 + 8) == (0x02, 4, sub), acl
        caps = os.getxattr(caps_file, "security.capability")
        assert struct.unpack("<IIIIII", caps) == (0x03000001, 1 << 13, 0, 0, 0, sub), caps
        # A file the guest's root makes in a bound directory is a subordinate uid's, not the user's.
        assert (shared / "made").stat().st_uid == sub
        # One line said what that means, once.
        notes = [l for l in r.stderr.splitlines() if "subordinate range" in l]
        assert len(notes) == 1 and "once" in notes[0] and "podman unshare" in notes[0], r.stderr

        # The guest's root cannot touch the user's own files: its uid is not mapped.
        mine = user.home / "mine"
        mine.mkdir()
        user.own(mine)
        os.chmod(mine, 0o755)
        r = sh(user, spawn_bin, utree, "stat -c %u /m; touch /m/x && echo WROTE; true",
               f"--bind={mine}:/m")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0] == "65534" and "WROTE" not in r.stdout, r.stdout

        # Second run with the flag, third without: no chown (no ctime changes), the same map.
        before = tree_state(utree)
        r = sh(user, spawn_bin, utree, "id -u; stat -c %u /bin/busybox", "--private-users-ownership=chown")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["0", "0"] and "subordinate range" not in r.stderr
        assert tree_state(utree) == before
        r = user.run([spawn_bin, "-P", "-D", str(utree), "--", "/bin/sh", "-c", "stat -c %u /home/svc/data"])
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["1"]
        notes = [l for l in r.stderr.splitlines() if "subordinate range" in l]
        assert len(notes) == 1 and "your own uid not mapped" in notes[0], r.stderr
        assert tree_state(utree) == before
        # -x on the shifted tree: runs with the range, leaves it unchanged.
        r = sh(user, spawn_bin, utree, "touch /made; stat -c %u /bin/busybox", "-x")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["0"]
        assert tree_state(utree) == before
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        shutil.rmtree(user.home / "mine", ignore_errors=True)


def test_chown_refusals_change_nothing(user, plain_user, spawn_bin, utree, utree_template):
    before = tree_state(utree)
    refused(sh(user, spawn_bin, utree, "true", "--private-users-ownership=chown", "-x"),
            "shift it once without them")
    os.setxattr(utree, "user.machkit.shifting", b"1")
    refused(sh(user, spawn_bin, utree, "true", "--private-users-ownership=chown"), "interrupted", "unpack the tree again")
    os.removexattr(utree, "user.machkit.shifting")
    os.chown(utree, 0, 0)
    refused(sh(user, spawn_bin, utree, "true", "--private-users-ownership=chown"), "belongs to uid 0", "drop the option")
    os.chown(utree, user.uid, user.gid)
    assert tree_state(utree) == before
    # Without subordinate ranges there is no range to move into.
    tree = plain_user.home / "tree-chown"
    subprocess.run(["cp", "-a", str(utree_template), str(tree)], check=True)
    plain_user.own(tree)
    try:
        before = tree_state(tree)
        r = plain_user.run([spawn_bin, "-q", "-P", "-D", str(tree), "--private-users-ownership=chown", "--", "/bin/true"])
        refused(r, "/etc/subuid", "usermod --add-subuids")
        assert tree_state(tree) == before
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def test_missing_newuidmap_is_refused(user, spawn_bin, utree):
    # In a private mount namespace (root's), with an empty /usr/bin: newuidmap is gone for this run
    # only. setpriv is run from a copy, as /usr/bin is empty by then.
    tool = user.home / "setpriv"
    shutil.copy2("/usr/bin/setpriv", tool)
    argv = [str(tool), *user.as_user()[1:], spawn_bin, "-q", "-P", "-D", str(utree), "--", "/bin/true"]
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        'mount -t tmpfs none /usr/bin && exec "$@"', "sh", *argv],
                       env=user.env(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    refused(r, "/usr/bin/newuidmap is missing", "apt-get install uidmap")


def test_range_holding_own_uid_is_refused(user, spawn_bin, utree, tmp_path):
    fake = user.home / "subuid.fake"
    fake.write_text(f"{user.name}:{user.uid - 5}:100\n")
    wrap = ("unshare", "-m", "--propagation", "private", "sh", "-c",
            f'mount --bind {fake} /etc/subuid && exec "$@"', "sh")
    refused(sh(user, spawn_bin, utree, "true", wrap=wrap), "/etc/subuid gives", f"its own uid {user.uid}")


def test_no_unprivileged_user_namespaces_is_refused(user, spawn_bin, utree):
    # A user namespace of the user's own whose limit for further ones is 0; spawn runs in it as an
    # ordinary uid (1000 there) and must say why it cannot go on.
    inner = user.home / "inner-run"
    script = (f"mkdir -p {inner} && chown 1000:1000 {inner} && "
              "echo 0 > /proc/sys/user/max_user_namespaces && "
              f"exec setpriv --reuid=1000 --regid=1000 --clear-groups env XDG_RUNTIME_DIR={inner} "
              f"{spawn_bin} -q -P -D {utree} -- /bin/true")
    r = user.run(["unshare", "--user", "--map-auto", "--map-root-user", "sh", "-c", script])
    err = refused(r, "user.max_user_namespaces is 0")
    assert "administrator" in err


@pytest.fixture(scope="module")
def delegated_cgroup(user):
    """A cgroup2 subtree delegated to the user, as a systemd user session's user@.service is: the
    directory and its cgroup.procs are the user's, and a "spawn" group below holds the caller."""
    unified = pathlib.Path("/sys/fs/cgroup/unified")
    base = unified if (unified / "cgroup.procs").exists() else pathlib.Path("/sys/fs/cgroup")
    d = base / f"{user.name}.machkit-test"
    (d / "spawn").mkdir(parents=True)
    for f in (d, d / "cgroup.procs", d / "cgroup.subtree_control", d / "cgroup.threads", d / "spawn",
              d / "spawn" / "cgroup.procs"):
        os.chown(f, user.uid, user.gid)
    yield d
    for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            sub.rmdir()
        except OSError:
            pass
    d.rmdir()


def unpack_as_user(user, fixture, name):
    """`fixture` unpacked by the user as root inside (what podman unshare does): tar through a user
    namespace with the same map as spawn's (own uid as 0, the first range after it). Device nodes
    are left out: nobody but host root may make them, and spawn gives /dev its own."""
    dst = user.home / name
    dst.mkdir()
    user.own(dst)
    pack = subprocess.Popen(["tar", "-C", str(fixture), "--numeric-owner", "--exclude=./dev/*", "-cf", "-", "."],
                            stdout=subprocess.PIPE)
    unpack = subprocess.run([*user.as_user(), "unshare", "--user", "--map-auto", "--map-root-user",
                             "tar", "-C", str(dst), "--numeric-owner", "-xpf", "-"],
                            stdin=pack.stdout, env=user.env(), capture_output=True, text=True, timeout=300)
    pack.stdout.close()
    assert pack.wait() == 0 and unpack.returncode == 0, unpack.stderr
    return dst


@pytest.fixture(scope="module")
def bookworm_tree(user, debian_tree):
    return unpack_as_user(user, debian_tree, "bookworm")


@pytest.fixture(scope="module")
def sid_tree(user):
    if os.environ.get("MK_SKIP_DEBIAN"):
        pytest.skip("MK_SKIP_DEBIAN is set")
    out = subprocess.run([str(HELPERS / "sid-fixture.sh")], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("no sid fixture: " + out.stderr.strip()[-200:])
    return unpack_as_user(user, out.stdout.strip().splitlines()[-1], "sid")


def boot_and_power_off(user, spawn_bin, tree, cgroup, *opts, owner=None):
    from test_boot import Console
    assert (tree / "etc" / "passwd").stat().st_uid == (owner if owner is not None else user.uid)
    # The caller in the delegated subtree, as in a user session; then the user's own spawn.
    enter = f'echo $$ > {cgroup}/spawn/cgroup.procs && exec "$@"'
    c = Console(["sh", "-c", enter, "sh", *user.as_user(), spawn_bin, "-bD", str(tree), "--console=read-only", *opts],
                env=user.env())
    try:
        assert c.wait_for(r"Reached target .*Multi-User System", 120), c.out.decode(errors="replace")[-3000:] + c.err.decode(errors="replace")[-3000:]
        assert c.wait_for(r"login:", 60)
        scope = cgroup / f"machine-{tree.name}.scope"
        assert (scope / "init.scope").is_dir(), "the guest's systemd manages its own cgroup2 subtree"
        # As under root: SIGTERM to spawn asks the guest to power off; spawn then exits 0.
        c.p.send_signal(signal.SIGTERM)
        assert c.wait_exit(90) == 0, c.err.decode(errors="replace")
        assert not scope.exists(), "spawn removes the machine's group"
    finally:
        if c.p.poll() is None:
            c.p.kill()
            c.p.wait()
    assert b"without cgroup limits" not in c.err


def test_bookworm_boots_rootless_and_powers_off(user, spawn_bin, bookworm_tree, delegated_cgroup):
    boot_and_power_off(user, spawn_bin, bookworm_tree, delegated_cgroup)


def test_shifted_bookworm_boots_with_the_range_alone(user, spawn_bin, bookworm_tree, delegated_cgroup):
    """The unpacked tree shifted by --private-users-ownership=chown boots with the range map: the
    machine's group, made by the user, is handed to the range's root so the guest's systemd can
    manage it; a second boot (without the flag) does not shift again."""
    tree = user.home / "bookwormshifted"  # no "-": the scope name would escape it
    subprocess.run(["cp", "-a", str(bookworm_tree), str(tree)], check=True)
    try:
        (sub, _), = ranges("/etc/subuid", user.name)[:1]
        r = user.run([spawn_bin, "-q", "-P", "-D", str(tree), "--private-users-ownership=chown", "--",
                      "/bin/sh", "-c", "stat -c %u /etc/passwd /usr/bin/passwd"], timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["0", "0"]
        boot_and_power_off(user, spawn_bin, tree, delegated_cgroup, owner=sub)
        # The guest's subgroups are the range's: the reaper of a SIGKILLed spawn removes them too.
        sigkill_booted_leaves_nothing(user, spawn_bin, tree, delegated_cgroup)
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def test_sigterm_while_the_guest_starts_still_powers_it_off(user, spawn_bin, bookworm_tree, delegated_cgroup):
    """A SIGTERM that reaches spawn before the guest's init has exec'd (or has blocked its signals)
    must not be lost: PID 1 of a PID namespace drops a signal it neither blocks nor catches, so
    spawn holds the halt request until the init takes it. The guest then boots no further than it
    must and powers off; spawn exits 0 (before the fix it waited for a second SIGTERM)."""
    enter = f'echo $$ > {delegated_cgroup}/spawn/cgroup.procs && exec "$@"'
    p = subprocess.Popen(["sh", "-c", enter, "sh", *user.as_user(), spawn_bin, "-bD", str(bookworm_tree),
                          "--console=read-only", "-M", "early"], env=user.env(),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # As soon as the container's init exists (still spawn's code, its set-up under way): the
        # child in a PID namespace of its own. The cgroup reaper, forked before it (and before spawn
        # blocks SIGTERM), does not count.
        children = pathlib.Path(f"/proc/{p.pid}/task/{p.pid}/children")

        def init_started():
            try:
                own = os.readlink(f"/proc/{p.pid}/ns/pid")
                for k in children.read_text().split():
                    if os.readlink(f"/proc/{k}/ns/pid") != own:
                        return True
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass
            return False
        while p.poll() is None and not init_started():
            time.sleep(0.001)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(120)
        assert rc == 0, p.stderr.read().decode(errors="replace")
        assert not (delegated_cgroup / "machine-early.scope").exists()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_sid_boots_rootless_on_a_cgroup2_view(user, spawn_bin, sid_tree, delegated_cgroup):
    # systemd 262 refuses every v1 layout: the delegated cgroup2 group is its whole view.
    boot_and_power_off(user, spawn_bin, sid_tree, delegated_cgroup)


def test_boot_without_a_delegated_cgroup_says_so(user, spawn_bin, bookworm_tree):
    r = user.run([spawn_bin, "-bD", str(bookworm_tree), "--console=pipe"], timeout=120)
    assert r.returncode != 0
    assert "spawn: no delegated cgroup2 subtree" in r.stderr
    assert r.stderr.count("without cgroup limits") == 1


# /dev/net/tun is mode 0600 on some hosts (this VM has no udev to make it 0666): pasta, running as
# the user, could not open it. The network tests run spawn in a private mount namespace of the
# test's where /dev/net/tun is a 0666 node of the same device; the host's stays as it is.
TUN_WRAP = ("unshare", "-m", "--propagation", "private", "sh", "-c",
            'd=$(mktemp -d) && mount -t tmpfs -o mode=755 none "$d" && mknod -m 666 "$d/tun" c 10 200 && '
            'mount --bind "$d/tun" /dev/net/tun && umount -l "$d" && rmdir "$d" && exec "$@"', "sh")


class LoopbackServer:
    """A one-shot HTTP answer on the host's 127.0.0.1, in a thread."""

    def __init__(self, body):
        import socket
        import threading
        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        self.s.listen(1)
        self.port = self.s.getsockname()[1]
        self.body = body
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        self.s.settimeout(60)
        try:
            c, _ = self.s.accept()
            c.recv(4096)
            c.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + self.body)
            c.close()
        except OSError:
            pass

    def close(self):
        self.s.close()
        self.t.join(5)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pasta_outbound_and_loopback_only_port_forward(user, spawn_bin, utree):
    import urllib.request
    server = LoopbackServer(b"from-host\n")
    port = free_port()
    (utree / "www").mkdir()
    (utree / "www" / "index.html").write_text("from-guest\n")
    user.own(utree / "www")
    # The guest fetches from the host's loopback server through the gateway address (pasta maps it
    # to the host), then serves on port 80 until the host has fetched from it.
    guest = ("gw=$(ip route | awk '/default/{print $3}'); wget -q -O /www/fetched http://$gw:%d/ || exit 3; "
             "httpd -f -p 80 -h /www & while [ ! -e /www/done ]; do sleep 0.1; done" % server.port)
    p = subprocess.Popen([*TUN_WRAP, *user.as_user(), spawn_bin, "-q", "-P", "-D", str(utree), "-n",
                          f"-p{port}:80", "--", "/bin/sh", "-c", guest],
                         env=user.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        body = None
        import time
        deadline = time.monotonic() + 60
        while body is None and p.poll() is None and time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5).read()
            except OSError:
                time.sleep(0.2)
        assert body == b"from-guest\n", p.stderr.read() if p.poll() is not None else "no answer"
        assert (utree / "www" / "fetched").read_text() == "from-host\n"
        # Forwarded from 127.0.0.1 only, never from the host's other addresses.
        addrs = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True,
                               text=True).stdout.split()
        for a in [x.split("/")[0] for x in addrs if "/" in x and x[0].isdigit()]:
            with pytest.raises(OSError):
                urllib.request.urlopen(f"http://{a}:{port}/index.html", timeout=5)
        (utree / "www" / "done").touch()
        assert p.wait(60) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        server.close()
    # pasta went with spawn: the port is free again.
    import socket
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # our own client side may be in TIME_WAIT
        s.bind(("127.0.0.1", port))
        s.listen(1)


def test_pasta_dies_with_a_killed_spawn(user, spawn_bin, utree):
    port = free_port()
    p = subprocess.Popen([*TUN_WRAP, *user.as_user(), spawn_bin, "-q", "-P", "-D", str(utree), "-n",
                          f"-p{port}:80", "--", "/bin/sh", "-c", "echo up; exec sleep 100"],
                         env=user.env(), stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "up"
        kids = [int(k) for k in pathlib.Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()]
        comms = {k: pathlib.Path(f"/proc/{k}/comm").read_text().strip() for k in kids}
        pasta = [k for k, c in comms.items() if c.startswith(("pasta", "passt"))]
        assert pasta, f"pasta runs as spawn's child: {comms}"
        fd = os.pidfd_open(pasta[0])
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
        import select
        assert select.select([fd], [], [], 30)[0], "pasta outlived spawn"
        os.close(fd)
        assert not list((user.runtime / "machkit").glob("pasta-*")), "no FIFO left"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_private_network_needs_no_pasta_and_unusable_tun_is_refused(user, spawn_bin, utree):
    if os.access("/dev/net/tun", os.R_OK | os.W_OK, effective_ids=False) and os.stat("/dev/net/tun").st_mode & 0o006:
        pytest.skip("/dev/net/tun is usable by everyone on this host")
    r = sh(user, spawn_bin, utree, "true", "-n")
    refused(r, "/dev/net/tun is not usable by you", "--private-network")
    r = sh(user, spawn_bin, utree, "ls /sys/class/net", "--private-network")
    assert r.returncode == 0 and r.stdout.split() == ["lo"], r.stderr


def test_without_ranges_only_root_is_mapped_and_spawn_says_what_that_limits(plain_user, spawn_bin, utree_template):
    tree = plain_user.home / "tree"
    subprocess.run(["cp", "-a", str(utree_template), str(tree)], check=True)
    plain_user.own(tree)
    r = plain_user.run([spawn_bin, "-P", "-D", str(tree), "--", "/bin/sh", "-c",
                        "id -u; cat /proc/self/uid_map; touch /root/made"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "0"
    assert lines[1].split() == ["0", "0", "1"]
    assert (tree / "root" / "made").stat().st_uid == plain_user.uid
    limits = [l for l in r.stderr.splitlines() if "no subordinate uids" in l]
    assert len(limits) == 1 and "usermod --add-subuids" in limits[0], r.stderr


def test_another_users_tree_is_refused(user, plain_user, spawn_bin, utree_template):
    tree = plain_user.home / "private-tree"
    subprocess.run(["cp", "-a", str(utree_template), str(tree)], check=True)
    plain_user.own(tree)
    os.chmod(plain_user.home, 0o700)
    err = refused(sh(user, spawn_bin, tree, "true"), str(tree))
    assert "cannot read" in err or "Permission denied" in err, err


def test_sigkill_of_a_booted_rootless_spawn_leaves_nothing(user, spawn_bin, bookworm_tree, delegated_cgroup):
    sigkill_booted_leaves_nothing(user, spawn_bin, bookworm_tree, delegated_cgroup)


def sigkill_booted_leaves_nothing(user, spawn_bin, tree, delegated_cgroup):
    import select
    from test_boot import Console
    enter = f'echo $$ > {delegated_cgroup}/spawn/cgroup.procs && exec "$@"'
    c = Console(["sh", "-c", enter, "sh", *user.as_user(), spawn_bin, "-bD", str(tree),
                 "--console=read-only", "-M", "killed"], env=user.env())
    try:
        assert c.wait_for(r"login:", 120), c.out.decode(errors="replace")[-2000:]
        kids = [int(k) for k in pathlib.Path(f"/proc/{c.p.pid}/task/{c.p.pid}/children").read_text().split()]
        reaper = [k for k in kids if pathlib.Path(f"/proc/{k}/comm").read_text().strip() == "spawn-reaper"]
        assert reaper, "the cgroup reaper runs beside spawn"
        fds = [os.pidfd_open(k) for k in kids]
        os.kill(c.p.pid, signal.SIGKILL)
        c.p.wait(30)
        for fd in fds:  # the guest's init and the reaper, which removes the groups and exits
            assert select.select([fd], [], [], 60)[0]
            os.close(fd)
        assert not (delegated_cgroup / "machine-killed.scope").exists()
    finally:
        if c.p.poll() is None:
            c.p.kill()
            c.p.wait()


# machd --user (issue 16): the user's own machine manager on its session bus.

class UserManager:
    """A session bus (dbus-daemon --session, as a user session has) and `machd --user` on it, both
    run as the user; stop() ends both (by pid) and removes the socket."""

    def __init__(self, user, spawn_bin):
        build = pathlib.Path(spawn_bin).resolve().parents[2]
        self.user = user
        self.machd_bin = build / "src" / "machd" / "machd"
        self.machctl_bin = build / "src" / "machctl" / "machctl"
        self.socket = user.runtime / "bus"
        self.address = f"unix:path={self.socket}"
        self.bus = subprocess.Popen([*user.as_user(), "dbus-daemon", "--session", "--nofork", "--nosyslog",
                                     f"--address={self.address}"], env=user.env(), stdin=subprocess.DEVNULL)
        self.machd = None
        for _ in range(200):
            if self.socket.exists() or self.bus.poll() is not None:
                break
            time.sleep(0.05)
        assert self.socket.exists(), "dbus-daemon --session did not come up"
        self.machd = subprocess.Popen([*user.as_user(), str(self.machd_bin), "--user"], env=user.env(self.env()),
                                      stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(200):
            if self.machctl("list").returncode == 0:
                break
            assert self.machd.poll() is None, self.machd.stderr.read()
            time.sleep(0.05)
        assert self.machctl("list").returncode == 0

    def env(self, extra=None):
        return {"DBUS_SESSION_BUS_ADDRESS": self.address, **(extra or {})}

    def machctl(self, *args, user=None, timeout=60):
        return (user or self.user).run([str(self.machctl_bin), "--user", "--no-pager", *args], env=self.env(),
                                       timeout=timeout)

    def stop(self):
        for p in (self.machd, self.bus):
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if self.socket.exists():
            self.socket.unlink()


def login_as(user, machctl_argv, env):
    """machctl login on a pseudo-terminal, run as `user`: the getty's prompt, root's shell, exit."""
    import pty
    import re
    import select
    pid, fd = pty.fork()
    if pid == 0:
        os.setgroups([])
        os.setgid(user.gid)
        os.setuid(user.uid)
        os.execve(machctl_argv[0], machctl_argv, {**user.env(env), "TERM": "dumb"})
    out = b""

    def expect(pattern, timeout=30):
        nonlocal out
        end = time.time() + timeout
        while time.time() < end:
            if re.search(pattern, out):
                return True
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    return bool(re.search(pattern, out))
        return False

    try:
        assert expect(rb"login: "), out
        os.write(fd, b"root\n")
        assert expect(rb"# $|#\s*$|root@"), out  # the fixture's root has an empty password
        os.write(fd, b"echo LOGGED-$((6*7)); id -u; exit\n")
        assert expect(rb"LOGGED-42"), out
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0, out
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
    return out


def test_user_machd_login_and_poweroff(user, plain_user, spawn_bin, bookworm_tree, delegated_cgroup):
    from test_boot import Console
    mgr = UserManager(user, spawn_bin)
    c = None
    try:
        enter = f'echo $$ > {delegated_cgroup}/spawn/cgroup.procs && exec "$@"'
        c = Console(["sh", "-c", enter, "sh", *user.as_user(), spawn_bin, "-bD", str(bookworm_tree),
                     "--console=read-only"], env=user.env(mgr.env()))
        assert c.wait_for(r"login:", 180), c.out.decode(errors="replace")[-3000:] + c.err.decode(errors="replace")
        # Registered with the user's machd, under the user's state directory, not the system's.
        r = mgr.machctl("list", "--no-legend")
        assert r.returncode == 0 and "bookworm" in r.stdout, r.stderr
        assert (user.runtime / "machkit" / "machines" / "bookworm").exists()
        assert not pathlib.Path("/run/systemd/machines/bookworm").exists()
        r = mgr.machctl("status", "bookworm")
        assert r.returncode == 0 and "Leader:" in r.stdout, r.stdout + r.stderr
        r = mgr.machctl("shell", "bookworm", "/bin/sh", "-c", "echo SHELL-$((6*7)); id -u")
        assert r.returncode == 0 and "SHELL-42" in r.stdout, r.stdout + r.stderr
        out = login_as(user, [str(mgr.machctl_bin), "--user", "login", "bookworm"], mgr.env())
        assert b"Connection to machine bookworm terminated" in out or b"LOGGED-42" in out
        # Another user cannot reach this user's machd at all: its session bus refuses the connection.
        for verb in (["list"], ["terminate", "bookworm"], ["shell", "bookworm", "/bin/true"]):
            r = mgr.machctl(*verb, user=plain_user)
            assert r.returncode == 1 and "session bus" in r.stderr, r.stderr
        # Nor does the system's bus know the machine (root's machd takes root's registrations only).
        assert mgr.machctl("poweroff", "bookworm").returncode == 0
        assert c.wait_exit(90) == 0, c.err.decode(errors="replace")
        for _ in range(100):
            if "bookworm" not in mgr.machctl("list", "--no-legend").stdout:
                break
            time.sleep(0.1)
        assert "bookworm" not in mgr.machctl("list", "--no-legend").stdout
        assert not (user.runtime / "machkit" / "machines" / "bookworm").exists()
    finally:
        if c and c.p.poll() is None:
            c.p.kill()
            c.p.wait()
        mgr.stop()


def test_user_machd_without_runtime_dir_says_what_to_set(user, spawn_bin):
    machd = pathlib.Path(spawn_bin).resolve().parents[2] / "src" / "machd" / "machd"
    r = subprocess.run([*user.as_user(), str(machd), "--user"], env={"PATH": "/usr/bin:/bin", "HOME": str(user.home)},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "XDG_RUNTIME_DIR" in r.stderr, r.stderr


def test_machctl_user_without_session_bus_says_so(user, spawn_bin):
    machctl = pathlib.Path(spawn_bin).resolve().parents[2] / "src" / "machctl" / "machctl"
    r = user.run([str(machctl), "--user", "list"], env={"DBUS_SESSION_BUS_ADDRESS": f"unix:path={user.home}/nobus"})
    assert r.returncode == 1 and "session bus" in r.stderr, r.stderr
    r = user.run([str(machctl), "--user", "-M", "foo", "list"])
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "local host only" in r.stderr, r.stderr


def test_user_machd_terminate_readopt_and_images(user, spawn_bin, utree, delegated_cgroup):
    mgr = UserManager(user, spawn_bin)
    c = None
    try:
        pool = user.home / ".local" / "share" / "machines"
        assert pool.is_dir(), "machd --user makes the user's pool"
        (pool / "userimg").mkdir()
        user.own(pool / "userimg")
        r = mgr.machctl("list-images", "--no-legend")
        assert r.returncode == 0 and "userimg" in r.stdout, r.stdout + r.stderr
        enter = f'echo $$ > {delegated_cgroup}/spawn/cgroup.procs && exec "$@"'
        c = subprocess.Popen(["sh", "-c", enter, "sh", *user.as_user(), spawn_bin, "-q", "-D", str(utree),
                              "-M", "rlterm", "--", "/bin/sh", "-c", "echo up; exec sleep 1000"],
                             env=user.env(mgr.env()), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert c.stdout.readline().strip() == "up", c.stderr.read()
        r = mgr.machctl("list", "--no-legend")
        assert r.returncode == 0 and "rlterm" in r.stdout, r.stdout + r.stderr
        # A restarted machd re-adopts the machine from its state file in the user's runtime directory.
        mgr.machd.terminate()
        assert mgr.machd.wait(10) == 0
        mgr.machd = subprocess.Popen([*user.as_user(), str(mgr.machd_bin), "--user"], env=user.env(mgr.env()),
                                     stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(200):
            r = mgr.machctl("list", "--no-legend")
            if r.returncode == 0:
                break
            time.sleep(0.05)
        assert "rlterm" in r.stdout, r.stdout + r.stderr
        assert mgr.machctl("terminate", "rlterm").returncode == 0
        c.wait(30)  # spawn ends with its terminated payload
        for _ in range(100):
            if "rlterm" not in mgr.machctl("list", "--no-legend").stdout:
                break
            time.sleep(0.1)
        assert "rlterm" not in mgr.machctl("list", "--no-legend").stdout
        assert not (delegated_cgroup / "machine-rlterm.scope").exists()
    finally:
        if c and c.poll() is None:
            c.kill()
            c.wait()
        mgr.stop()


def test_user_cannot_see_stop_or_enter_roots_machines(user, spawn_bin, tmp_path):
    """Root's machine, registered with root's machd on a private system bus, is not in the user's
    machd; the system's machd refuses the user's terminate and shell (as for any non-root caller)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "mk_bus_fixtures", pathlib.Path(__file__).resolve().parents[1] / "bus" / "conftest.py")
    fx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fx)
    bus = fx.Bus()
    leaders = fx.Leaders()
    machd = fx.Machd(bus, tmp_path / "machines", pool=tmp_path / "pool")
    mgr = None
    try:
        machd.start()
        p, _ = leaders.spawn_in_scope()
        fx.register(bus, "rlroot", p.pid)
        mgr = UserManager(user, spawn_bin)
        r = mgr.machctl("list", "--no-legend")
        assert r.returncode == 0 and "rlroot" not in r.stdout, r.stdout
        for verb in (["status", "rlroot"], ["terminate", "rlroot"], ["shell", "rlroot", "/bin/true"]):
            r = mgr.machctl(*verb)
            assert r.returncode == 1 and "No machine 'rlroot' known" in r.stderr, (verb, r.stderr)
        # Through the system bus the user reaches root's machd, which refuses it.
        for verb in (["terminate", "rlroot"], ["shell", "rlroot", "/bin/true"], ["poweroff", "rlroot"]):
            r = user.run([str(mgr.machctl_bin), "--no-pager", *verb], env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address})
            assert r.returncode == 1 and "denied" in r.stderr.lower(), (verb, r.stderr)
        assert p.poll() is None, "root's machine lives on"
        # Root enters it (a leader sharing every namespace with machd: only the mount one is joined).
        r = subprocess.run([str(mgr.machctl_bin), "--no-pager", "shell", "rlroot", "/bin/echo", "ROOT-IN"],
                           env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus.address}, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and "ROOT-IN" in r.stdout, r.stderr
    finally:
        if mgr:
            mgr.stop()
        machd.stop()
        leaders.cleanup()
        fx.cleanup_machine_cgroups(["rlroot"])
        bus.close()


# The user namespace machd --user keeps mapped (docs/rootless.md, "The kept user namespace"): a
# rootless start joins it instead of running newuidmap/newgidmap, and makes its namespaces there.

NS_GET_PARENT = 0xB702  # _IO(0xb7, 0x2), linux/nsfs.h


def userns_ino(pid):
    return os.stat(f"/proc/{pid}/ns/user").st_ino


def userns_parent_ino(pid):
    fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    try:
        parent = fcntl.ioctl(fd, NS_GET_PARENT)
        try:
            return os.fstat(parent).st_ino
        finally:
            os.close(parent)
    finally:
        os.close(fd)


def pid_in_userns(ino):
    """A process whose user namespace is the one with inode `ino`."""
    for d in pathlib.Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.stat(d / "ns" / "user").st_ino == ino:
                    return int(d.name)
            except OSError:
                pass
    return None


def user_pids(user):
    out = []
    for d in pathlib.Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if d.stat().st_uid == user.uid:
                    out.append(int(d.name))
            except OSError:
                pass
    return set(out)


# The guest says who it is, its map, its user namespace (inode), makes a file in the bound dir, then
# waits for the end of its input: "up" means all of it is done and it still runs in that namespace.
GUEST = "id -u; cat /proc/self/uid_map; readlink /proc/self/ns/user; touch /mnt/made; echo up; read x; true"


def start_guest(user, spawn_bin, tree, shared, env=None):
    c = subprocess.Popen([*user.as_user(), spawn_bin, "-q", "-P", "-D", str(tree), f"--bind={shared}:/mnt", "--",
                          "/bin/sh", "-c", GUEST], env=user.env(env), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in c.stdout:
        if line.strip() == "up":
            break
        lines.append(line.strip())
    else:
        c.wait()
        pytest.fail(f"the guest did not come up: {lines} {c.stderr.read()}")
    ino = int(lines[-1].split("[")[1].rstrip("]"))
    pid = pid_in_userns(ino)
    assert pid, f"no process in the guest's user namespace {ino}"
    return c, lines, pid


def stop_guest(c):
    """Ends the guest's input: it exits, and spawn with it."""
    if c.poll() is None:
        c.stdin.close()
        try:
            c.wait(30)
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()


def kept_record(user):
    pid, start, ino = (int(x) for x in (user.runtime / "machkit" / "userns").read_text().split())
    return pid, start, ino


def check_guest_view(user, lines, shared):
    start, count = ranges("/etc/subuid", user.name)[0]
    assert lines[0] == "0", lines
    assert [l.split() for l in lines[1:3]] == [["0", "0", "1"], ["1", "1", str(min(count, 65536) - 1)]], lines
    assert (shared / "made").stat().st_uid == user.uid, "root's file in a bound dir is the user's outside"


def test_kept_userns_is_joined_with_machd_user(user, spawn_bin, utree):
    mgr = UserManager(user, spawn_bin)
    c = None
    try:
        holder, start, ino = kept_record(user)
        assert userns_ino(holder) == ino
        assert os.stat(f"/proc/{holder}").st_uid == user.uid
        start_sub, count = ranges("/etc/subuid", user.name)[0]
        assert pathlib.Path(f"/proc/{holder}/uid_map").read_text().split() == \
            ["0", str(user.uid), "1", "1", str(start_sub), str(min(count, 65536) - 1)]
        shared = user.home / "kept-shared"
        shared.mkdir()
        user.own(shared)
        c, lines, guest = start_guest(user, spawn_bin, utree, shared, mgr.env())
        # The guest runs in the machine's own nested namespace (every mount below it locked), made
        # inside the kept one: no new namespace was mapped for this start.
        assert userns_ino(guest) != ino
        assert userns_parent_ino(guest) == ino, "the start did not join the kept user namespace"
        check_guest_view(user, lines, shared)
        stop_guest(c)
        assert c.returncode == 0, c.stderr.read()
        # machd --user's end takes the holder and the record with it.
        mgr.machd.terminate()
        assert mgr.machd.wait(10) == 0
        assert not (user.runtime / "machkit" / "userns").exists()
        for _ in range(100):
            if not os.path.exists(f"/proc/{holder}"):
                break
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{holder}")
    finally:
        if c:
            stop_guest(c)
        mgr.stop()
        shutil.rmtree(user.home / "kept-shared", ignore_errors=True)


def test_kept_userns_leaves_nothing_after_spawn_is_killed(user, spawn_bin, utree):
    mgr = UserManager(user, spawn_bin)
    c = None
    try:
        holder, _, ino = kept_record(user)
        before = user_pids(user)
        shared = user.home / "kill-shared"
        shared.mkdir()
        user.own(shared)
        c, _, guest = start_guest(user, spawn_bin, utree, shared, mgr.env())
        assert userns_parent_ino(guest) == ino
        c.kill()
        c.wait()
        for _ in range(200):
            if user_pids(user) <= before:
                break
            time.sleep(0.05)
        assert user_pids(user) <= before, "a process of the start outlived spawn's SIGKILL"
        assert os.path.exists(f"/proc/{holder}") and userns_ino(holder) == ino, "the holder outlives a start"
        # And the next start joins it again.
        c, lines, guest = start_guest(user, spawn_bin, utree, shared, mgr.env())
        assert userns_parent_ino(guest) == ino
        check_guest_view(user, lines, shared)
    finally:
        if c:
            stop_guest(c)
        mgr.stop()
        shutil.rmtree(user.home / "kill-shared", ignore_errors=True)


def forge_record(user, pid):
    d = user.runtime / "machkit"
    d.mkdir(exist_ok=True)
    user.own(d)
    start = int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    rec = d / "userns"
    rec.write_text(f"{pid} {start} {userns_ino(pid)}\n")
    user.own(rec)
    return rec


# Run as root of a namespace with the user's whole map: a child namespace mapping the same IDs to
# themselves, line for line (a line may not span two of the parent's), then sleep in it.
NESTED_SAME_MAP = """
import ctypes, os
r, w = os.pipe()
r2, w2 = os.pipe()
pid = os.fork()
if pid == 0:
    if ctypes.CDLL(None, use_errno=True).unshare(0x10000000) != 0:
        os._exit(1)
    os.write(w, b"x")
    os.read(r2, 1)
    os.execvp("sleep", ["sleep", "1000"])
os.read(r, 1)
for f in ("uid_map", "gid_map"):
    lines = "".join(f"{a} {a} {n}\\n" for a, _, n in (l.split() for l in open(f"/proc/self/{f}")))
    with open(f"/proc/{pid}/{f}", "w") as m:
        m.write(lines)
os.write(w2, b"x")
os.waitpid(pid, 0)
"""


def test_forged_or_mismatched_kept_userns_is_not_joined(user, plain_user, spawn_bin, utree):
    """A record naming another user's namespace, or the user's own namespace with another map, or a
    process that is gone: spawn maps a namespace of its own, as without machd --user."""
    shared = user.home / "forged-shared"
    shared.mkdir()
    user.own(shared)
    others = []
    rec = None
    try:
        # The same ranges, but another user's namespace (newuidmap would not even give it this map).
        others.append(subprocess.Popen([*plain_user.as_user(), "unshare", "--user", "--map-root-user", "sleep",
                                        "1000"], env=plain_user.env(), stdout=subprocess.PIPE, text=True))
        # The user's own namespace, with only its own ID mapped.
        others.append(subprocess.Popen([*user.as_user(), "unshare", "--user", "--map-root-user", "sleep", "1000"],
                                       env=user.env(), stdout=subprocess.PIPE, text=True))
        # The user's own namespace with the whole map, one level too deep (its map reads the same
        # from here): a namespace made inside another one of the user's.
        others.append(subprocess.Popen([*user.as_user(), "unshare", "--user", "--map-auto", "--map-root-user",
                                        sys.executable, "-c", NESTED_SAME_MAP], env=user.env(), text=True))
        for p in others:
            for _ in range(200):
                kids = pathlib.Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
                target = int(kids[0]) if kids else p.pid
                if pathlib.Path(f"/proc/{target}/comm").read_text().strip() == "sleep" and \
                        userns_ino(target) != userns_ino(os.getpid()):
                    break
                time.sleep(0.05)
            rec = forge_record(user, target)
            c, lines, guest = start_guest(user, spawn_bin, utree, shared)
            try:
                assert userns_parent_ino(guest) != userns_ino(target), f"joined {rec.read_text()}"
                check_guest_view(user, lines, shared)
            finally:
                stop_guest(c)
            (shared / "made").unlink()
        # A record of a process that is gone.
        gone = others[1]
        gone.kill()
        gone.wait()
        rec.write_text(f"{gone.pid} 1 1\n")
        c, lines, guest = start_guest(user, spawn_bin, utree, shared)
        stop_guest(c)
        check_guest_view(user, lines, shared)
    finally:
        for p in others:
            if p.poll() is None:
                p.kill()
                p.wait()
        if rec and rec.exists():
            rec.unlink()
        shutil.rmtree(shared, ignore_errors=True)
