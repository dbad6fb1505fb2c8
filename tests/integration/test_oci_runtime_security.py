"""The OCI runtime's threat rows (shared/reference/security.md T-05-T-08, T-13, T-22) through
machrun, each with a bundle crafted the way that CVE's attack was, or a hostile container
process, and asserted from inside the container and on the host. docs/security.md names these
tests. Root only; real namespaces, mounts and cgroups."""
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from test_oci_runtime import CGROUP2, machrun, make_bundle, reap, subreaper, userns_bundle  # noqa: F401

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "helpers"))
from hostile import build_probe, in_script, injection_line  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture(scope="module")
def probe_bin(tmp_path_factory):
    return build_probe(tmp_path_factory.mktemp("probe"))


def sha(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def mount_roots():
    """The (root, mount point) of every mount in our mount namespace."""
    out = set()
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        out.add((f[3], f[4]))
    return out


def assert_nothing_left(machrun, cid):
    assert os.listdir(machrun.state_root) == []
    assert not os.path.exists(f"{CGROUP2}/machrun/{cid}")


# ---- T-05: /proc or /sys a symlink in the rootfs (CVE-2019-16884, CVE-2019-19921) -----------------

@pytest.mark.parametrize("api", ["proc", "sys"])
def test_t05_proc_or_sys_symlink_in_the_rootfs_is_refused(machrun, tree, tmp_path, api):
    target = tmp_path / "host-target"
    target.mkdir()
    shutil.rmtree(tree / api, ignore_errors=True)
    (tree / api).unlink(missing_ok=True)
    os.symlink(str(target), tree / api)
    bundle = make_bundle(machrun, tree, ["true"])
    cid = f"runtime-t05-{api}"
    r = machrun("run", "--bundle", str(bundle), cid, check=False)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert os.listdir(target) == []
    assert not any(mp == str(target) for _, mp in mount_roots())
    assert_nothing_left(machrun, cid)


# ---- T-06: bind destinations through symlinks and swapped by another container (CVE-2021-30465) ---

def test_t06_bind_destination_through_a_symlink_stays_inside(machrun, tree, tmp_path):
    import json  # noqa: PLC0415
    src = tmp_path / "src"
    src.mkdir()
    (src / "marker").write_text("from the bind source\n")
    # /x -> /runtime-t06-inner: inside the rootfs that is the image's own directory; followed on the
    # host it would be a new directory in the host's root.
    (tree / "runtime-t06-inner").mkdir()
    os.symlink("/runtime-t06-inner", tree / "x")
    bundle = make_bundle(machrun, tree, ["sh", "-c", "cat /x/y/marker; cat /runtime-t06-inner/y/marker"])
    config = json.loads((bundle / "config.json").read_text())
    config["mounts"].append({"destination": "/x/y", "type": "bind", "source": str(src), "options": ["rbind"]})
    (bundle / "config.json").write_text(json.dumps(config))
    r = machrun("run", "--bundle", str(bundle), "runtime-t06a", check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "from the bind source\n" * 2
    assert not os.path.exists("/runtime-t06-inner")
    assert not any(root == str(src) for root, _ in mount_roots())
    # /x -> a host directory that the rootfs lacks: refused with one line, or kept inside; the host
    # directory stays empty either way.
    outside = tmp_path / "outside"
    outside.mkdir()
    (tree / "x").unlink()
    os.symlink(str(outside), tree / "x")
    r = machrun("run", "--bundle", str(bundle), "runtime-t06b", check=False)
    if r.returncode != 0:
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert os.listdir(outside) == []
    assert not any(root == str(src) for root, _ in mount_roots())
    assert_nothing_left(machrun, "runtime-t06b")


def test_t06_bind_destination_swapped_by_another_container_stays_inside(machrun, tree, tmp_path):
    import json  # noqa: PLC0415
    shared = tmp_path / "shared"
    (shared / "d").mkdir(parents=True)
    src = tmp_path / "src-runtime-t06"
    src.mkdir()
    (src / "runtime-t06-marker").write_text("x")
    # Container B has the shared volume and swaps d between a directory and a symlink to / .
    racer = make_bundle(machrun, tree, ["sh", "-c", "cd /shared; while :; do mv d d.tmp; ln -s / d; rm d; mv d.tmp d; done"])
    config = json.loads((racer / "config.json").read_text())
    config["mounts"].append({"destination": "/shared", "type": "bind", "source": str(shared), "options": ["rbind"]})
    (racer / "config.json").write_text(json.dumps(config))
    # Container A mounts the shared volume and then a bind below it, through d.
    tree_a = tmp_path / "a" / "tree"
    shutil.copytree(tree, tree_a, symlinks=True)
    victim = make_bundle(machrun, tree_a, ["true"])
    config = json.loads((victim / "config.json").read_text())
    config["mounts"] += [{"destination": "/vol", "type": "bind", "source": str(shared), "options": ["rbind"]},
                         {"destination": "/vol/d", "type": "bind", "source": str(src), "options": ["rbind"]}]
    (victim / "config.json").write_text(json.dumps(config))
    host_root = set(os.listdir("/"))
    try:
        machrun("create", "--bundle", str(racer), "runtime-t06-racer")
        machrun("start", "runtime-t06-racer")
        for i in range(40):
            machrun("run", "--bundle", str(victim), f"runtime-t06-{i}", check=False)
            assert not any(root == str(src) for root, _ in mount_roots())
    finally:
        machrun("delete", "--force", "runtime-t06-racer", check=False)
        reap()
    assert not os.path.exists("/runtime-t06-marker")
    assert not (set(os.listdir("/")) - host_root)
    assert os.listdir(src) == ["runtime-t06-marker"]


# ---- T-07: /dev/null and /dev/console symlinks (CVE-2025-31133, CVE-2025-52565, CVE-2025-52881) ----

def test_t07_dev_null_and_console_symlinks_in_the_image_are_not_used(machrun, tree):
    os.makedirs(tree / "dev", exist_ok=True)
    for name, target in [("null", "/proc/sys/kernel/core_pattern"), ("console", "/etc/passwd")]:
        (tree / "dev" / name).unlink(missing_ok=True)
        os.symlink(target, tree / "dev" / name)
    core_pattern = open("/proc/sys/kernel/core_pattern").read()
    passwd = sha("/etc/passwd")
    tree_passwd = sha(tree / "etc" / "passwd")
    script = ("stat -c 'null=%F %t:%T' /dev/null; "
              "echo 'x' > /dev/null && echo NULLWRITE; "
              "echo '|/tmp/pwn' > /proc/sys/kernel/core_pattern && echo COREWROTE; "
              "echo KALLSYMS=$(cat /proc/kallsyms 2>/dev/null | wc -c); "
              "echo KEYS=$(cat /proc/keys 2>/dev/null | wc -c); "
              "echo c > /proc/sysrq-trigger && echo SYSRQ; "
              "ls -l /dev/console 2>&1 | head -1")
    bundle = make_bundle(machrun, tree, ["sh", "-c", script])
    import json  # noqa: PLC0415
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["maskedPaths"].append("/proc/kallsyms")
    (bundle / "config.json").write_text(json.dumps(config))
    r = machrun("run", "--bundle", str(bundle), "runtime-t07", check=False)
    out = r.stdout
    # Start succeeded with the runtime's own /dev: a real null device (1:3), the masks from a real
    # null device (reads empty), procfs writes refused.
    assert r.returncode == 0, r.stderr
    assert "null=character special file 1:3" in out, out
    assert "NULLWRITE" in out
    assert "COREWROTE" not in out and "SYSRQ" not in out, out
    assert "KALLSYMS=0" in out and "KEYS=0" in out, out
    assert open("/proc/sys/kernel/core_pattern").read() == core_pattern
    assert sha("/etc/passwd") == passwd
    assert sha(tree / "etc" / "passwd") == tree_passwd
    assert os.path.islink(tree / "dev" / "null")  # the image's /dev was never written to


# ---- T-08: /dev a symlink to a host directory (runc CVE-2026-41579, crun CVE-2026-47766) ----------

def test_t08_dev_symlink_to_a_host_dir_is_not_populated(machrun, tree, tmp_path):
    outside = tmp_path / "host-dev"
    outside.mkdir()
    (outside / "ptmx").write_text("marker\n")
    shutil.rmtree(tree / "dev", ignore_errors=True)
    (tree / "dev").unlink(missing_ok=True)
    os.symlink(str(outside), tree / "dev")
    bundle = make_bundle(machrun, tree, ["sh", "-c", "ls /dev"])
    r = machrun("run", "--bundle", str(bundle), "runtime-t08", check=False)
    # Refused with one line, or run with the runtime's own /dev: either way the host directory is
    # untouched and nothing is mounted on it.
    if r.returncode != 0:
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert os.listdir(outside) == ["ptmx"]
    assert (outside / "ptmx").read_text() == "marker\n"
    assert not any(mp == str(outside) for _, mp in mount_roots())
    assert_nothing_left(machrun, "runtime-t08")


# ---- T-13: cgroup v1 release_agent, writable host cgroup files (CVE-2022-0492, CVE-2023-25809) ----

def test_t13_container_cannot_mount_cgroup_v1_or_write_host_cgroup_files(machrun, tree):
    import json  # noqa: PLC0415
    agents = {p: open(p).read() for p in pathlib.Path("/sys/fs/cgroup").glob("*/release_agent")}
    script = ("mkdir -p /mnt; mount -t cgroup -o rdma cgroup /mnt 2>/dev/null && echo MOUNTED; "
              "unshare -Urm mount -t cgroup -o rdma cgroup /mnt 2>/dev/null && echo USERNS-MOUNTED; "
              "for f in /sys/fs/cgroup/*/release_agent /sys/fs/cgroup/*/cgroup.procs /sys/fs/cgroup/unified/cgroup.procs; do "
              "[ -e $f ] && echo 1 > $f 2>/dev/null && echo WROTE $f; done; "
              "grep ' /sys/fs/cgroup' /proc/self/mountinfo; true")
    bundle = make_bundle(machrun, tree, ["sh", "-c", script])
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["namespaces"].append({"type": "cgroup"})
    # As engines ask for it (podman, containerd): /sys/fs/cgroup, read-only.
    config["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})
    (bundle / "config.json").write_text(json.dumps(config))
    r = machrun("run", "--bundle", str(bundle), "runtime-t13", check=False)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "MOUNTED" not in out and "WROTE" not in out, out
    # Whatever cgroup file systems the container sees are read-only (today machrun gives it none).
    cgroup_mounts = [line.split() for line in out.splitlines() if " - cgroup" in line]
    for f in cgroup_mounts:
        assert "ro" in f[5].split(","), f
    assert {p: open(p).read() for p in agents} == agents


# ---- T-10, T-11, T-13 in a user namespace: root inside, with CAP_SYS_ADMIN there -----------------

def test_t10_t11_t13_userns_root_cannot_unmount_protections_or_mount_host_reaching_fs(machrun, tree):
    """config.json's user namespace, with CAP_SYS_ADMIN in the bounding set (the most an engine
    hands a container root): the masks and read-only mounts made outside are locked (MNT_LOCKED),
    cgroup v1 cannot be mounted, binfmt_misc only as the container's own instance, host tunables and
    cgroup files stay unwritable."""
    import json  # noqa: PLC0415
    agents = {p: open(p).read() for p in pathlib.Path("/sys/fs/cgroup").glob("*/release_agent")}
    core_pattern = open("/proc/sys/kernel/core_pattern").read()
    script = ("mkdir -p /mnt; "
              "umount -l /proc/sys 2>/dev/null && echo UNMOUNTED-PROC-SYS; "
              "umount -l /proc/kcore 2>/dev/null && echo UNMOUNTED-KCORE; "
              "umount -l /sys/fs/cgroup 2>/dev/null && echo UNMOUNTED-CGROUP; "
              "head -c1 /proc/kcore 2>/dev/null | grep -q . && echo READ-KCORE; "
              "echo 3 > /proc/sys/kernel/printk 2>/dev/null && echo WROTE-PRINTK; "
              "echo '|/x' > /proc/sys/kernel/core_pattern 2>/dev/null && echo WROTE-CORE-PATTERN; "
              # binfmt_misc is per user namespace since Linux 6.7: the container's own instance.
              "mount -t binfmt_misc none /mnt 2>/dev/null && "
              "echo ':mkuserns:E::mkx::/bin/true:' > /mnt/register 2>/dev/null; umount /mnt 2>/dev/null; "
              "mount -t cgroup -o rdma cgroup /mnt 2>/dev/null && echo MOUNTED-CGROUP1; "
              "mount -o remount,rw /sys 2>/dev/null && echo REMOUNTED-SYS; "
              "for f in /sys/fs/cgroup/*/release_agent /sys/fs/cgroup/*/cgroup.procs; do "
              "[ -e $f ] && echo 1 > $f 2>/dev/null && echo WROTE $f; done; "
              "mount -t tmpfs none /mnt && echo CAN-MOUNT-TMPFS; id -u")
    bundle, config = userns_bundle(machrun, tree, ["sh", "-c", script])
    config["linux"]["namespaces"].append({"type": "cgroup"})
    config["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})
    (bundle / "config.json").write_text(json.dumps(config))
    r = machrun("run", "--bundle", str(bundle), "runtime-userns-sec", check=False)
    assert r.returncode == 0, r.stderr
    # Root inside has its powers in its own namespaces (a tmpfs mounts), and no more.
    assert r.stdout.split() == ["CAN-MOUNT-TMPFS", "0"], r.stdout
    assert {p: open(p).read() for p in agents} == agents
    assert open("/proc/sys/kernel/core_pattern").read() == core_pattern
    # The host's binfmt_misc (looked at in a private mount namespace) got no interpreter.
    host_binfmt = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t binfmt_misc none /proc/sys/fs/binfmt_misc && "
                                  "ls /proc/sys/fs/binfmt_misc"], capture_output=True, text=True, check=True).stdout
    assert "mkuserns" not in host_binfmt.split()
    assert_nothing_left(machrun, "runtime-userns-sec")


# ---- T-22: TIOCSTI into the caller's terminal (CVE-2016-9016 class, CVE-2019-10063) ----------------

@pytest.mark.parametrize("high,seccomp", [("", None), ("123", None), ("", "allow-all")])
def test_t22_payload_cannot_type_into_the_callers_terminal(machrun, tree, tmp_path, probe_bin, high, seccomp):
    # terminal=false: the payload's stdio is the caller's terminal (as with `runc run` from a
    # shell). Two layers: without linux.seccomp the default filter refuses TIOCSTI whatever the
    # upper bits (CVE-2019-10063); with an engine's profile that allows it, the payload is still in
    # a session of its own (setsid), so that terminal is not its controlling terminal, and it lacks
    # CAP_SYS_ADMIN, which TIOCSTI on any other terminal needs: EPERM either way.
    import json  # noqa: PLC0415
    shutil.copy2(probe_bin, tree / "probe")
    bundle = make_bundle(machrun, tree, ["/probe", "tiocsti", "echo INJECTED\\n", *([high] if high else [])])
    if seccomp:
        config = json.loads((bundle / "config.json").read_text())
        config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW"}
        (bundle / "config.json").write_text(json.dumps(config))
    cmd = f"{machrun.bin} --root {machrun.state_root} run --bundle {bundle} runtime-t22"
    out = in_script(injection_line(cmd, probe_bin))
    assert "TIOCSTI errno=1" in out, out
    assert "HOSTGOT=[SENTINEL]" in out, out
    assert "INJECTED" not in out.replace("INJECTED\\n", ""), out
    assert_nothing_left(machrun, "runtime-t22")
