"""Real engines driving machrun: podman 4.3 (through conmon) and containerd 1.6 (through ctr and
its runc v2 shim), both from Debian 12, on an image made offline from the busybox tree.

podman runs with a private storage root and run root (vfs driver, cgroupfs manager, file events)
and --network=none, so host podman state and host networking are untouched. containerd is a
private daemon (own config, root, state and socket in a tmp dir, CRI disabled), stopped by pid.
Root only; real namespaces, mounts and cgroups."""
import os
import pathlib
import shutil
import signal
import subprocess

import pytest
from mkutil import containerd_config, end_process, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

CGROUP = pathlib.Path("/sys/fs/cgroup")
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
IMAGE = "localhost/podmanh-bb:latest"


def machrun_bin():
    from conftest import BUILD  # noqa: PLC0415

    binary = BUILD / "src" / "runtime" / "machrun"
    if not binary.exists():
        pytest.skip(f"{binary} not built")
    return str(binary)


def hierarchies():
    """Every cgroup hierarchy's root on this host (v1 controllers and cgroup2)."""
    out = []
    for d in sorted(CGROUP.iterdir()):
        if d.is_dir() and not d.is_symlink():
            out.append(d)
    if (CGROUP / "cgroup.controllers").exists():
        out = [CGROUP]
    return out


def groups_named(name):
    """Groups called `name` anywhere in any hierarchy (shallow: engines nest one or two deep)."""
    found = []
    for h in hierarchies():
        for depth in ("*", "*/*", "*/*/*"):
            found += [str(p) for p in h.glob(depth) if p.name == name and p.is_dir()]
    return found


def mounts_mentioning(text):
    return [line for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines() if text in line]


# ---- podman -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def podman(busybox_tree_template, tmp_path_factory):
    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    machrun = machrun_bin()
    base = tmp_path_factory.mktemp("podmanh")
    store = [
        "--root", str(base / "root"), "--runroot", str(base / "runroot"), "--storage-driver", "vfs",
        "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--tmpdir", str(base / "tmp"),
    ]

    class P:
        dir = base
        argv = ["podman", *store, "--runtime", machrun]

        def __call__(self, *args, check=True, timeout=60, runtime=machrun, **kw):
            kw.setdefault("stdin", subprocess.DEVNULL)
            r = subprocess.run(["podman", *store, "--runtime", runtime, *args], capture_output=True, text=True,
                               timeout=timeout, **kw)
            if check and r.returncode != 0:
                raise AssertionError(f"podman {' '.join(args)} failed ({r.returncode}): {r.stderr}")
            return r

    p = P()
    tar = base / "bb.tar"
    subprocess.run(["tar", "-C", str(busybox_tree_template), "-cf", str(tar), "."], check=True)
    p("import", str(tar), IMAGE)
    yield p
    p("rm", "-af", "-t", "0", check=False)
    p("rmi", "-af", check=False)
    subprocess.run(["podman", *store, "system", "reset", "-f"], capture_output=True, timeout=120)
    shutil.rmtree(base, ignore_errors=True)


def run_flags(*extra):
    return ["run", "--network=none", *ULIMITS, *extra]


def container_id(podman, name):
    return podman("inspect", "--format", "{{.Id}}", name).stdout.strip()


def status_of(podman, name):
    return podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()


def test_podman_run_prints_output_and_propagates_the_exit_code(podman):
    r = podman(*run_flags("--rm"), IMAGE, "sh", "-c", "echo hello from $(hostname); exit 3", check=False)
    assert r.returncode == 3, r.stderr
    assert r.stdout.startswith("hello from ")
    ok = podman(*run_flags("--rm"), IMAGE, "true", check=False)
    assert ok.returncode == 0, ok.stderr


def test_podman_memory_and_pids_limits_are_read_back_inside(podman):
    # On this hybrid host memory and pids are v1 controllers: machrun makes the container's v1
    # groups from cgroupsPath, and podman's "cgroup" mount shows them read-only inside.
    r = podman(*run_flags("--rm", "--memory", "64m", "--pids-limit", "33"), IMAGE, "sh", "-c",
               "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; "
               "touch /sys/fs/cgroup/pids/x 2>/dev/null && echo writable || echo read-only")
    assert r.stdout.split() == ["67108864", "33", "read-only"], r.stderr


def test_podman_cpu_limits_cap_drop_and_sysctl(podman):
    # cpu and cpuset are v1 here too; a new v1 cpuset group takes its parent's cpus and mems first.
    r = podman(*run_flags("--rm", "--cpus", "0.5", "--cpu-shares", "512", "--cpuset-cpus", "0", "--cap-drop", "ALL",
                          "--sysctl", "net.ipv4.ip_forward=1"), IMAGE, "sh", "-c",
               "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpuset/cpuset.cpus "
               "/proc/sys/net/ipv4/ip_forward; grep CapEff /proc/self/status")
    assert r.stdout.split() == ["50000", "512", "0", "1", "CapEff:", "0000000000000000"], r.stderr


def test_podman_user_runs_without_capabilities_within_the_bounding_set(podman):
    # podman's --user 1000: bounding set kept, effective, permitted, inheritable and ambient empty.
    r = podman(*run_flags("--rm", "--user", "1000:1000"), IMAGE, "sh", "-c",
               "id -u; id -g; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status; touch /etc/x 2>&1 || echo refused")
    out = r.stdout.split()
    assert out[:2] == ["1000", "1000"], (r.stdout, r.stderr)
    assert out[2:6] == ["CapPrm:", "0000000000000000", "CapEff:", "0000000000000000"], r.stdout
    assert out[6] == "CapBnd:" and int(out[7], 16) != 0 and out[-1] == "refused", r.stdout


def test_podman_default_network_in_a_network_namespace_of_the_test(podman, tmp_path):
    # podman's default network (netavark: the podman0 bridge, a veth, 10.88.0.0/16 and a namespace
    # it hands machrun by path), made inside a network namespace of the test's own so that no
    # address or rule reaches the host's. The payload reaches an HTTP server on the gateway.
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("hello over podman0\n")
    script = (
        "ip link set lo up && mount -t tmpfs tmpfs /run/netns && "
        f"busybox httpd -f -p 8080 -h {tmp_path / 'www'} & srv=$!; "
        '"$@"; rc=$?; kill $srv; exit $rc'
    )
    payload = "ip -4 -o addr show eth0; ip route; wget -qO- http://$(ip route | awk '/default/{print $3}'):8080/"
    r = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                        *podman.argv, "run", "--rm", *ULIMITS, IMAGE, "sh", "-c", payload],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert " inet 10.88." in r.stdout and "default via 10.88.0.1 dev eth0" in r.stdout, r.stdout
    assert r.stdout.endswith("hello over podman0\n"), r.stdout


def test_podman_devices_rule_keeps_the_standard_nodes(podman):
    # podman sends only "deny all"; runc's default rules follow it, so /dev/null works and a
    # device outside them (a new loop node, 7:200) cannot be opened.
    r = podman(*run_flags("--rm", "--cap-add", "MKNOD"), IMAGE, "sh", "-c",
               "echo x > /dev/null && head -c 4 /dev/urandom | wc -c; mknod /l b 7 200 && "
               "(head -c1 /l >/dev/null 2>&1 && echo opened || echo denied)")
    assert r.stdout.split() == ["4", "denied"], r.stderr


def test_podman_detached_exec_ps_pause_stop(podman):
    podman(*run_flags("-d", "--name", "podmanh-d"), IMAGE, "sh", "-c",
           "trap 'exit 7' TERM; sleep 1000 & wait")
    try:
        assert status_of(podman, "podmanh-d") == "running"
        ps = podman("ps", "--format", "{{.Names}} {{.Status}}").stdout
        assert "podmanh-d Up" in ps
        ex = podman("exec", "podmanh-d", "sh", "-c", "echo in-exec; cat /sys/fs/cgroup/pids/pids.max; exit 4",
                    check=False)
        assert ex.returncode == 4, ex.stderr
        assert ex.stdout.split() == ["in-exec", "2048"]  # the exec is in the container's v1 pids group
        # podman exec --user: the process.json user (and umask) are applied, not dropped.
        assert podman("exec", "--user", "1000:1000", "podmanh-d", "sh", "-c", "id -u; id -g; umask").stdout.split() == [
            "1000", "1000", "0022"]
        podman("pause", "podmanh-d")
        assert status_of(podman, "podmanh-d") == "paused"
        assert "podmanh-d Paused" in podman("ps", "-a", "--format", "{{.Names}} {{.Status}}").stdout
        podman("unpause", "podmanh-d")
        assert status_of(podman, "podmanh-d") == "running"
        podman("stop", "-t", "10", "podmanh-d")
        assert status_of(podman, "podmanh-d") == "exited"
        assert podman("inspect", "--format", "{{.State.ExitCode}}", "podmanh-d").stdout.strip() == "7"
    finally:
        podman("rm", "-f", "podmanh-d", check=False)


def test_podman_kill(podman):
    podman(*run_flags("-d", "--name", "podmanh-k"), IMAGE, "sleep", "1000")
    try:
        podman("kill", "-s", "KILL", "podmanh-k")
        assert wait_for(lambda: status_of(podman, "podmanh-k") == "exited", timeout=20)
        assert podman("inspect", "--format", "{{.State.ExitCode}}", "podmanh-k").stdout.strip() == "137"
    finally:
        podman("rm", "-f", "podmanh-k", check=False)


def test_podman_tty_through_the_console_socket(podman):
    r = podman(*run_flags("--rm", "-t"), IMAGE, "sh", "-c", "tty; test -t 1 && echo is-a-tty")
    lines = r.stdout.replace("\r", "").split()
    assert lines == ["/dev/pts/0", "is-a-tty"], r.stderr


def test_podman_rm_f_leaves_no_cgroups_mounts_or_state(podman):
    podman(*run_flags("-d", "--name", "podmanh-rm", "--memory", "32m"), IMAGE, "sleep", "1000")
    cid = container_id(podman, "podmanh-rm")
    group = "libpod-" + cid
    made = groups_named(group)
    # The container's group in cgroup2 and in the v1 hierarchies its limits need.
    assert any("/memory/" in g for g in made) and any("/pids/" in g for g in made), made
    podman("rm", "-f", "podmanh-rm")
    assert groups_named(group) == []
    assert not os.path.exists(f"/run/machrun/{cid}")
    assert mounts_mentioning(cid) == []


def test_podman_exec_applies_the_process_podman_sends(podman):
    """podman exec sends a process file (--process) with its capability sets, rlimits, user and
    additional groups; machrun applies them all. --privileged asks for every capability: the exec
    gets the container's bounding set, never more (podman 4.3's exec has no --cap-add)."""
    podman(*run_flags("-d", "--name", "podmanh-x"), IMAGE, "sleep", "1000")
    try:
        probe = ["sh", "-c", "grep -E '^(CapBnd|CapEff|CapPrm|Uid|Gid|Groups):' /proc/self/status; "
                             "grep 'Max open files' /proc/self/limits; pwd; echo $X"]

        def fields(r):
            lines = r.stdout.splitlines()
            out = {k: v.split() for k, _, v in (line.partition(":") for line in lines[:6])}
            out["nofile"] = lines[6].split()[3:5]
            out["rest"] = lines[7:]
            return out

        init = fields(podman("exec", "podmanh-x", *probe))
        assert init["CapEff"] == init["CapBnd"] and init["Uid"][0] == "0"
        assert int(init["CapBnd"][0], 16) != 0
        assert init["nofile"] == ["1024", "1024"]  # process.rlimits, from --ulimit

        priv = fields(podman("exec", "--privileged", "podmanh-x", *probe))
        assert priv["CapBnd"] == init["CapBnd"] and priv["CapEff"] == init["CapBnd"]

        user = fields(podman("exec", "--user", "1000", "--workdir", "/tmp", "--env", "X=1", "podmanh-x", *probe))
        assert user["Uid"][0] == "1000" and user["Gid"][0] == "1000"
        assert "100" in user["Groups"]  # the image's /etc/group, as podman resolves it
        assert user["CapEff"] == ["0000000000000000"] and user["CapBnd"] == init["CapBnd"]
        assert user["rest"] == ["/tmp", "1"]
    finally:
        podman("rm", "-f", "-t", "0", "podmanh-x", check=False)


def test_podman_read_only_copies_the_images_run_and_tmp_up(podman, busybox_tree_template, tmp_path):
    """--read-only: podman asks for tmpcopyup tmpfs mounts on /run, /tmp and /var/tmp (crun's
    extension); the root is read-only inside, those three are writable and keep the image's files."""
    tree = tmp_path / "rotree"
    shutil.copytree(busybox_tree_template, tree, symlinks=True)
    (tree / "run" / "img").mkdir(parents=True)
    (tree / "run" / "img" / "marker").write_text("from-the-image-run\n")
    (tree / "tmp" / "marker").write_text("from-the-image-tmp\n")
    os.chown(tree / "tmp" / "marker", 1000, 1000)
    os.chmod(tree / "tmp" / "marker", 0o640)
    (tree / "var" / "tmp").mkdir(parents=True, exist_ok=True)
    (tree / "var" / "tmp" / "vt").write_text("from-the-image-var-tmp\n")
    tar = tmp_path / "ro.tar"
    subprocess.run(["tar", "-C", str(tree), "-cf", str(tar), "."], check=True)
    podman("import", str(tar), "localhost/podmanh-ro:latest")
    try:
        r = podman(*run_flags("--rm", "--read-only"), "localhost/podmanh-ro:latest", "sh", "-c",
                   "touch /rootfile 2>/dev/null && echo root-writable || echo root-read-only; "
                   "for d in /run /tmp /var/tmp; do touch $d/new && echo $d writable; done; "
                   "cat /run/img/marker /tmp/marker /var/tmp/vt; stat -c '%u:%g %a' /tmp/marker; "
                   "grep -c ' / .* ro,' /proc/self/mountinfo")
        lines = r.stdout.splitlines()
        assert lines[:4] == ["root-read-only", "/run writable", "/tmp writable", "/var/tmp writable"], r.stdout
        assert lines[4:8] == ["from-the-image-run", "from-the-image-tmp", "from-the-image-var-tmp", "1000:1000 640"]
        assert int(lines[8]) >= 1  # the root mount is read-only
        assert podman("ps", "-aq").stdout.strip() == ""
    finally:
        podman("rmi", "-f", "localhost/podmanh-ro:latest", check=False)


def test_podman_uidmap_maps_root_volume_files_and_exec(podman, tmp_path):
    """--uidmap: config.json's user namespace with podman's maps; podman chowns its (vfs) copy of
    the image into the range. Inside, root is 0 and the map is podman's; a file made in a volume
    is owned by the mapped root on the host; podman exec joins the same user namespace."""
    vol = tmp_path / "vol"
    vol.mkdir()
    os.chown(vol, 100000, 100000)  # the container's root owns the volume, as `-v DIR:/mnt:U` would make it
    podman(*run_flags("-d", "--name", "podmanh-u", "--uidmap", "0:100000:65536", "-v", f"{vol}:/mnt"), IMAGE,
           "sh", "-c", "touch /mnt/made-inside; sleep 1000")
    try:
        assert wait_for(lambda: (vol / "made-inside").exists())
        st = (vol / "made-inside").stat()
        assert (st.st_uid, st.st_gid) == (100000, 100000)
        pid = int(podman("inspect", "--format", "{{.State.Pid}}", "podmanh-u").stdout)
        assert pathlib.Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", "100000", "65536"]
        r = podman("exec", "podmanh-u", "sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; "
                   "ls -ln /mnt/made-inside")
        out = r.stdout.split()
        assert out[:8] == ["0", "100000", "65536", "0", "100000", "65536", "0", "0"], r.stdout
        assert out[10:12] == ["0", "0"], r.stdout  # owner and group of the file, seen inside
        exec_user_ns = podman("exec", "podmanh-u", "readlink", "/proc/self/ns/user").stdout.strip()
        assert exec_user_ns == os.readlink(f"/proc/{pid}/ns/user")
        assert exec_user_ns != os.readlink("/proc/self/ns/user")
    finally:
        podman("rm", "-f", "podmanh-u", check=False)
    assert podman("ps", "-aq").stdout.strip() == ""


@pytest.fixture
def subid_containers():
    """A "containers" range in /etc/subuid and /etc/subgid (podman's --userns=auto takes its IDs
    from it), restored byte for byte afterwards."""
    saved = {}
    for f in ("/etc/subuid", "/etc/subgid"):
        p = pathlib.Path(f)
        saved[f] = (p.read_bytes(), p.stat()) if p.exists() else None
        text = p.read_text() if p.exists() else ""
        if text and not text.endswith("\n"):
            text += "\n"
        p.write_text(text + "containers:2147483647:2147483648\n")
    yield
    for f, old in saved.items():
        p = pathlib.Path(f)
        if old is None:
            p.unlink()
        else:
            p.write_bytes(old[0])
            os.chmod(p, old[1].st_mode & 0o7777)
            os.chown(p, old[1].st_uid, old[1].st_gid)


def test_podman_userns_auto_runs_in_a_range_of_its_own(podman, subid_containers):
    r = podman(*run_flags("--rm", "--userns=auto"), IMAGE, "sh", "-c", "cat /proc/self/uid_map; id -u; touch /ok && echo wrote",
               timeout=120)
    out = r.stdout.split()
    # One range from 0, on a host ID out of the containers range, with root 0 inside.
    assert out[0] == "0" and int(out[1]) >= 2147483647 and int(out[2]) >= 1024, r.stdout
    assert out[-2:] == ["0", "wrote"], r.stdout + r.stderr
    assert podman("ps", "-aq").stdout.strip() == ""


# ---- containerd -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def containerd(podman, tmp_path_factory):
    if not shutil.which("containerd") or not shutil.which("ctr"):
        pytest.skip("containerd is not installed")
    machrun = machrun_bin()
    base = tmp_path_factory.mktemp("ctdh")
    sock = base / "c.sock"
    config = base / "config.toml"
    config.write_text(containerd_config(base, sock, top='disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'))
    log = open(base / "containerd.log", "w")
    daemon = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=log,
                              stdin=subprocess.DEVNULL)
    ns = "podmanh"

    class C:
        dir = base
        binary = machrun

        def __call__(self, *args, check=True, timeout=60):
            r = subprocess.run(["ctr", "-a", str(sock), "-n", ns, *args], capture_output=True, text=True,
                               timeout=timeout, stdin=subprocess.DEVNULL)
            if check and r.returncode != 0:
                raise AssertionError(f"ctr {' '.join(args)} failed ({r.returncode}): {r.stderr}")
            return r

    c = C()
    try:
        assert wait_for(lambda: c("version", check=False).returncode == 0, timeout=20), (base / "containerd.log").read_text()
        archive = base / "bb-oci.tar"
        podman("save", "--format", "oci-archive", "-o", str(archive), IMAGE)
        c("image", "import", str(archive))
        yield c
    finally:
        for task in c("task", "ls", "-q", check=False).stdout.split():
            c("task", "kill", "-s", "SIGKILL", task, check=False)
            c("task", "delete", "-f", task, check=False)
        for ctr in c("container", "ls", "-q", check=False).stdout.split():
            c("container", "delete", ctr, check=False)
        c("image", "rm", IMAGE, check=False)
        end_process(daemon)
        log.close()
        for m in reversed(mounts_mentioning(str(base))):
            subprocess.run(["umount", "-l", m.split()[4]], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(f"/run/containerd/runc/{ns}", ignore_errors=True)
        for h in hierarchies():
            try:
                os.rmdir(h / ns)  # the namespace's parent group, once empty
            except OSError:
                pass


def test_ctr_run_prints_output_and_propagates_the_exit_code(containerd):
    r = containerd("run", "--rm", "--runc-binary", containerd.binary, IMAGE, "podmanh-c1", "sh", "-c",
                   "echo hello-ctr; exit 5", check=False)
    assert r.returncode == 5, r.stderr
    assert r.stdout == "hello-ctr\n"
    assert groups_named("podmanh-c1") == []


def test_ctr_task_exec_kill_ls_and_limits(containerd):
    containerd("run", "-d", "--runc-binary", containerd.binary, "--memory-limit", "67108864", IMAGE,
               "podmanh-c3", "sleep", "1000")
    try:
        tasks = containerd("task", "ls").stdout
        assert any(line.split()[0] == "podmanh-c3" and line.split()[2] == "RUNNING"
                   for line in tasks.splitlines()[1:]), tasks
        memory = [g for g in groups_named("podmanh-c3") if "/memory/" in g]
        assert len(memory) == 1 and pathlib.Path(memory[0], "memory.limit_in_bytes").read_text().strip() == "67108864"
        ex = containerd("task", "exec", "--exec-id", "e1", "podmanh-c3", "sh", "-c", "echo in-exec; exit 4",
                        check=False)
        assert ex.returncode == 4, ex.stderr
        assert ex.stdout == "in-exec\n"
        containerd("task", "kill", "-s", "SIGKILL", "podmanh-c3")
        assert wait_for(lambda: "STOPPED" in containerd("task", "ls").stdout, timeout=20)
    finally:
        containerd("task", "delete", "-f", "podmanh-c3", check=False)
        containerd("container", "delete", "podmanh-c3", check=False)
    assert groups_named("podmanh-c3") == []
    assert not os.path.exists("/run/containerd/runc/podmanh/podmanh-c3")


def test_ctr_shows_machrun_json_error_line_on_a_failing_create(containerd):
    r = containerd("run", "--rm", "--runc-binary", containerd.binary, "--apparmor-profile", "podmanh-x", IMAGE,
                   "podmanh-c2", "true", check=False)
    assert r.returncode != 0
    # The shim read the last "level":"error" line of machrun's --log-format json log.
    assert "OCI runtime create failed: OCI config field 'process.apparmorProfile" in r.stderr, r.stderr
    containerd("container", "delete", "podmanh-c2", check=False)
    assert groups_named("podmanh-c2") == []


def test_podman_checkpoint_and_restore(podman, tmp_path, criu_cmd):
    # criu 4.2 (criu_cmd) first in PATH as `criu`: podman's own version check and machrun both find
    # it there.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "criu").write_text(f"#!/bin/sh\nexec {criu_cmd} \"$@\"\n")
    (bindir / "criu").chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")

    def count():
        r = podman("exec", "podmanh-cr", "cat", "/count", check=False)
        return int(r.stdout.strip()) if r.returncode == 0 and r.stdout.strip().isdigit() else 0

    podman(*run_flags("-d", "--name", "podmanh-cr"), IMAGE, "sh", "-c",
           "i=0; while true; do i=$((i+1)); echo $i > /count.new; mv /count.new /count; sleep 0.05; done")
    try:
        assert wait_for(lambda: count() >= 5, timeout=20)
        podman("container", "checkpoint", "podmanh-cr", env=env, timeout=180)
        assert status_of(podman, "podmanh-cr") == "exited"
        assert groups_named("libpod-" + container_id(podman, "podmanh-cr")) == []  # gone, as with runc
        podman("container", "restore", "podmanh-cr", env=env, timeout=180)
        assert status_of(podman, "podmanh-cr") == "running"
        after = count()
        assert after >= 5  # the count went on from its dumped value, not from 0
        assert wait_for(lambda: count() > after, timeout=20)
        # The restored container is in its v1 pids group again (podman's config has resources).
        assert podman("exec", "podmanh-cr", "cat", "/sys/fs/cgroup/pids/pids.max").stdout.strip() == "2048"
    finally:
        podman("rm", "-f", "-t", "0", "podmanh-cr", check=False)
