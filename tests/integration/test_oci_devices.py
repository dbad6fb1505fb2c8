"""linux.resources.devices enforced by machrun: on a pure cgroup2 host as a BPF device program on
the container's cgroup2 group, on this hybrid host through the v1 devices controller (as runc's
fs manager; no program there). This host is hybrid, so the cgroup2 case runs machrun in a private
mount namespace whose /sys/fs/cgroup is a plain cgroup2 mount (issue 13's wrapper): machrun then
sees a unified host, and its groups are this host's /sys/fs/cgroup/unified ones. What the rules
allow is checked from inside the container (open, mknod); the attached program through bpf(2).
Root only."""
import ctypes
import shutil
import subprocess
import tempfile
import json
import os
import pathlib
import struct

import pytest
from test_oci_runtime import CGROUP2, CTL_LOOP, machrun, make_bundle, reap, run_inside, subreaper, wait_for  # noqa: F401

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

SYS_BPF = 321  # x86_64
BPF_PROG_GET_FD_BY_ID, BPF_PROG_QUERY, BPF_CGROUP_DEVICE = 13, 16, 6
_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    r = _libc.syscall(SYS_BPF, cmd, buf, 128)
    return r, ctypes.get_errno(), buf.raw


def device_programs(group):
    """The ids of the device programs attached to the cgroup2 group itself."""
    fd = os.open(group, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ids = (ctypes.c_uint32 * 64)()
        attr = struct.pack("=IIIIQI", fd, BPF_CGROUP_DEVICE, 0, 0, ctypes.addressof(ids), 64)
        r, err, raw = _bpf(BPF_PROG_QUERY, attr)
        assert r == 0, os.strerror(err)
        count = struct.unpack_from("=I", raw, 24)[0]
        return list(ids[:count])
    finally:
        os.close(fd)


def program_exists(prog_id):
    r, err, _ = _bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("=I", prog_id))
    if r >= 0:
        os.close(r)
        return True
    assert err == 2, os.strerror(err)  # ENOENT: freed
    return False


@pytest.fixture
def cg2(machrun, tmp_path):
    """machrun as it runs on a pure cgroup2 host: each call in its own wrapper namespace."""
    script = tmp_path / "machrun-cgroup2"
    script.write_text("#!/bin/sh\nexec unshare -m --propagation private sh -c "
                      "'umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec \"$0\" \"$@\"' "
                      f"{machrun.bin} \"$@\"\n")
    script.chmod(0o755)
    real = machrun.bin
    machrun.bin = str(script)
    yield machrun
    machrun.bin = real


NODES = [{"type": "b", "path": "/dev/loop0", "major": 7, "minor": 0, "fileMode": 0o660},
         {"type": "b", "path": "/dev/loop1", "major": 7, "minor": 1, "fileMode": 0o660}]
# Each line: the device and what opening it for reading gave.
PROBE = ("for d in null zero full urandom loop0 loop1; do head -c1 /dev/$d >/dev/null 2>/tmp/err && echo $d=ok "
         "|| echo $d=$(cat /tmp/err); done; echo w > /dev/null && echo null-write=ok; "
         ": < /dev/ptmx && echo ptmx=ok; (: < /dev/tty) 2>/tmp/err || echo tty=$(cat /tmp/err); "
         "rm -f /dev/null2; mknod /dev/null2 c 1 3 && echo x > /dev/null2 && echo mknod=ok")


def probe(tree):
    return run_inside(tree, PROBE)


def start(machrun, tree, tmp_path, cid, rules):
    bundle = make_bundle(machrun, tree, ["sh", "-c", CTL_LOOP])
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["devices"] = NODES
    config["linux"]["resources"] = {"devices": rules}
    # mknod needs the capability as well as the rules' `m`.
    for kind in ("bounding", "effective", "permitted"):
        config["process"]["capabilities"][kind].append("CAP_MKNOD")
    (bundle / "config.json").write_text(json.dumps(config))
    machrun("create", "--bundle", str(bundle), "--pid-file", str(tmp_path / "pid"), cid)
    machrun("start", cid)
    return int((tmp_path / "pid").read_text())


def test_cgroup2_device_program_allows_defaults_denies_the_rest_and_update_replaces_it(cg2, tree, tmp_path):
    cid = "dev-bpf1"
    group = f"{CGROUP2}/machrun/{cid}"
    deny_all = {"allow": False, "access": "rwm"}
    try:
        start(cg2, tree, tmp_path, cid, [deny_all, {"allow": True, "type": "b", "major": 7, "minor": 0, "access": "rw"}])
        progs = device_programs(group)
        assert len(progs) == 1, progs
        text = probe(tree)
        # The runtime's default devices open; tty-likes too (no controlling terminal: ENXIO, not EPERM).
        for line in ("null=ok", "zero=ok", "full=ok", "urandom=ok", "null-write=ok", "ptmx=ok", "loop0=ok"):
            assert line + "\n" in text, text
        assert "tty=" in text and "No such device or address" in text, text
        # A node made via linux.devices but not allowed fails with EPERM. mknod is allowed (runc's
        # defaults allow `m` of every device; our seccomp filter still refuses block nodes).
        assert "loop1=head: /dev/loop1: Operation not permitted" in text, text
        assert "mknod=ok\n" in text, text

        # update replaces the rules: loop1 now, loop0 no more; one program on the group, a new one.
        r = cg2("update", "--resources", "-", cid, stdin=None, check=False,
                input=json.dumps({"devices": [deny_all, {"allow": True, "type": "b", "major": 7, "minor": 1, "access": "r"}]}))
        assert r.returncode == 0, r.stderr
        after = device_programs(group)
        assert len(after) == 1 and after != progs, (progs, after)
        assert not program_exists(progs[0])  # the replaced one is freed
        text = probe(tree)
        assert "loop0=head: /dev/loop0: Operation not permitted" in text and "loop1=ok\n" in text, text
        assert "null=ok\n" in text and "null-write=ok\n" in text, text

        # A bad rule is refused in one line and changes nothing.
        r = cg2("update", "--resources", "-", cid, stdin=None, check=False,
                input=json.dumps({"devices": [{"allow": True, "type": "b", "major": 7, "minor": 0, "access": "rwx"}]}))
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and "access" in r.stderr, r.stderr
        assert device_programs(group) == after

        # delete removes the group; the kernel then detaches and frees the program.
        cg2("delete", "--force", cid)
        assert not os.path.exists(group)
        assert wait_for(lambda: not program_exists(after[0]), timeout=30)
    finally:
        cg2("delete", "--force", cid, check=False)
        reap()


def test_cgroup2_without_device_rules_denies_all_but_the_defaults(cg2, tree):
    # As runc's fs2 manager: no linux.resources at all still gets the program (deny all, then the
    # defaults), so a node from linux.devices is not reachable unless a rule allows it.
    bundle = make_bundle(cg2, tree, ["sh", "-c", "echo x > /dev/null && echo null=ok; head -c1 /dev/loop0"])
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["devices"] = NODES
    config["linux"].pop("resources", None)
    (bundle / "config.json").write_text(json.dumps(config))
    r = cg2("run", "--bundle", str(bundle), "dev-bpf0", check=False)
    assert r.stdout == "null=ok\n" and "head: /dev/loop0: Operation not permitted" in r.stderr, (r.stdout, r.stderr)
    assert not os.path.exists(f"{CGROUP2}/machrun/dev-bpf0")


def test_hybrid_host_keeps_the_v1_devices_controller(machrun, tree, tmp_path):
    if not os.path.exists("/sys/fs/cgroup/devices/devices.list") or not CGROUP2.endswith("/unified"):
        pytest.skip("not a hybrid host with the v1 devices controller")
    cid = "dev-v1"
    try:
        start(machrun, tree, tmp_path, cid, [{"allow": False, "access": "rwm"},
                                             {"allow": True, "type": "b", "major": 7, "minor": 0, "access": "rw"}])
        listed = open(f"/sys/fs/cgroup/devices/machrun/{cid}/devices.list").read().splitlines()
        assert "b 7:0 rw" in listed and "c 1:3 rwm" in listed and "a *:* rwm" not in listed, listed
        assert device_programs(f"{CGROUP2}/machrun/{cid}") == []  # as runc's fs manager: no program
        text = probe(tree)
        assert "loop0=ok\n" in text and "null=ok\n" in text, text
        assert "loop1=head: /dev/loop1: Operation not permitted" in text, text
        # v1 rules are create's: update refuses them, naming the field.
        r = machrun("update", "--resources", "-", cid, stdin=None, check=False,
                    input=json.dumps({"devices": [{"allow": True, "type": "a"}]}))
        assert r.returncode == 1 and "linux.resources.devices" in r.stderr, r.stderr
    finally:
        machrun("delete", "--force", cid, check=False)
        reap()
    assert not os.path.exists(f"/sys/fs/cgroup/devices/machrun/{cid}")
    # No rules in config.json at all: still a devices group of its own with deny all and the
    # defaults (runc's v1 manager does the same), so a node from linux.devices is not reachable.
    bundle = make_bundle(machrun, tree, ["sh", "-c", "echo x > /dev/null && echo null=ok; head -c1 /dev/loop0"])
    config = json.loads((bundle / "config.json").read_text())
    config["linux"]["devices"] = NODES
    config["linux"].pop("resources", None)
    (bundle / "config.json").write_text(json.dumps(config))
    r = machrun("run", "--bundle", str(bundle), "dev-v1-none", check=False)
    assert r.stdout == "null=ok\n" and "head: /dev/loop0: Operation not permitted" in r.stderr, (r.stdout, r.stderr)
    assert not os.path.exists("/sys/fs/cgroup/devices/machrun/dev-v1-none")
    try:
        os.rmdir("/sys/fs/cgroup/devices/machrun")  # the parent create made, once empty
    except OSError:
        pass


def test_podman_default_device_rules_on_cgroup2(busybox_tree_template):
    # podman 4.3 in the wrapper sees cgroup2 and sends "deny all" (runc's defaults follow it) plus
    # a pids limit, which this host's cgroup2 cannot take (pids is a v1 controller here): its
    # containers.conf sets none.
    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    from test_oci_engines import ULIMITS, machrun_bin  # noqa: PLC0415

    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="podbpf-"))  # podman: a run root under 50 characters
    conf = tmp_path / "containers.conf"
    conf.write_text("[containers]\npids_limit = 0\n")
    store = ["--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "runroot"), "--storage-driver", "vfs",
             "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--tmpdir", str(tmp_path / "tmp"),
             "--runtime", machrun_bin()]
    env = dict(os.environ, CONTAINERS_CONF=str(conf))

    def podman(*args, wrap=False):
        argv = ["podman", *store, *args]
        if wrap:
            argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                    "umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec \"$@\"", "sh", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)

    tar = tmp_path / "bb.tar"
    subprocess.run(["tar", "-C", str(busybox_tree_template), "-cf", str(tar), "."], check=True)
    try:
        assert podman("import", str(tar), "localhost/devbpf-bb:latest").returncode == 0
        r = podman("run", "--rm", "--network=none", *ULIMITS, "--cap-add", "MKNOD", "localhost/devbpf-bb:latest",
                   "sh", "-c", "echo x > /dev/null && head -c 4 /dev/urandom | wc -c; : < /dev/ptmx && echo ptmx; "
                   "mknod /l b 7 200 && head -c1 /l", wrap=True)
        assert r.stdout.split() == ["4", "ptmx"] and "head: /l: Operation not permitted" in r.stderr, (r.stdout, r.stderr)
    finally:
        podman("rm", "-af", "-t", "0")
        podman("rmi", "-af")
        podman("system", "reset", "-f")
        shutil.rmtree(tmp_path, ignore_errors=True)
