"""nspawn's remaining options in spawn (issue 17 §6), each asserted from inside a real container:
--rlimit, --oom-score-adjust, --cpu-affinity, --personality, --suppress-sync, --ambient-capability,
--set-credential/--load-credential, --pivot-root, and the clear refusals of what cannot work here
(dm-verity without device-mapper, SELinux labels without SELinux). Root only."""
import os
import pathlib
import shutil
import socket
import subprocess
import threading

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def sh(spawn_bin, tree, cmd, *args, timeout=60):
    argv = [spawn_bin, "-q", "-P", "-D", str(tree), *args, "--", "/bin/sh", "-c", cmd]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def spawn(spawn_bin, *args, timeout=60):
    return subprocess.run([spawn_bin, "-q", "-P", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def assert_one_line_error(r, *needles):
    assert r.returncode != 0
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err


# ---- resources --------------------------------------------------------------------------------------

def test_rlimit_applies_inside(spawn_bin, tree):
    r = sh(spawn_bin, tree, "grep -E 'Max (open files|core file size)' /proc/self/limits",
           "--rlimit=NOFILE=1234:2345", "--rlimit=RLIMIT_CORE=infinity")
    assert r.returncode == 0, r.stderr
    lines = {" ".join(l.split()[:-3]): l.split()[-3:-1] for l in r.stdout.splitlines()}
    assert lines["Max open files"] == ["1234", "2345"]
    assert lines["Max core file size"] == ["unlimited", "unlimited"]


def test_rlimit_bad_values_are_one_line_errors(spawn_bin, tree):
    assert_one_line_error(sh(spawn_bin, tree, "true", "--rlimit=NOFILES=1"), "--rlimit=", "unknown resource limit")
    assert_one_line_error(sh(spawn_bin, tree, "true", "--rlimit=NOFILE=10:5"), "soft limit is above the hard limit")
    assert_one_line_error(sh(spawn_bin, tree, "true", "--rlimit=NOFILE"), "NAME=LIMIT")


def test_oom_score_adjust_applies_inside(spawn_bin, tree):
    r = sh(spawn_bin, tree, "cat /proc/self/oom_score_adj", "--oom-score-adjust=500")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "500"
    assert_one_line_error(sh(spawn_bin, tree, "true", "--oom-score-adjust=1001"), "--oom-score-adjust=")


def test_cpu_affinity_applies_inside(spawn_bin, tree):
    cpus = sorted(os.sched_getaffinity(0))
    want = cpus[-1]
    r = sh(spawn_bin, tree, "grep Cpus_allowed_list /proc/self/status", f"--cpu-affinity={want}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == str(want)
    assert_one_line_error(sh(spawn_bin, tree, "true", "--cpu-affinity=3-1"), "--cpu-affinity=")


def test_personality_x86_shows_i686(spawn_bin, tree):
    if os.uname().machine != "x86_64":
        pytest.skip("x86-64 host only")
    r = sh(spawn_bin, tree, "uname -m", "--personality=x86")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "i686"
    r = sh(spawn_bin, tree, "uname -m", "--personality=x86-64")
    assert r.stdout.strip() == "x86_64"
    assert_one_line_error(sh(spawn_bin, tree, "true", "--personality=sparc"), "--personality=")


def test_personality_from_a_settings_file(spawn_bin, tree):
    if os.uname().machine != "x86_64":
        pytest.skip("x86-64 host only")
    # A file next to the tree is untrusted, but Personality= is not a privileged key.
    (tree.parent / "bbtree.nspawn").write_text("[Exec]\nPersonality=x86\n")
    r = sh(spawn_bin, tree, "uname -m")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "i686"


# ---- sync suppression (needs a real libc program: perl from the Debian fixture) -----------------------

FSYNC_AND_OSYNC = (
    "perl -MFcntl -e '"
    "$r = syscall(74, 999); print \"fsync=$r\\n\"; "  # 74: fsync on x86-64; fd 999 is not open
    "if (sysopen(F, \"/tmp/osync\", O_WRONLY|O_CREAT|O_SYNC)) { print \"osync=ok\\n\" } "
    "else { print \"osync=\", $!+0, \"\\n\" }'"
)


def test_suppress_sync_turns_sync_calls_into_noops(spawn_bin, debian_tree):
    if os.uname().machine != "x86_64":
        pytest.skip("x86-64 syscall numbers")
    base = [spawn_bin, "-q", "-P", "-x", "-D", str(debian_tree)]
    on = subprocess.run(base + ["--suppress-sync=yes", "--", "/bin/sh", "-c", FSYNC_AND_OSYNC],
                        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert on.returncode == 0, on.stderr
    assert "fsync=0" in on.stdout, on.stdout  # no EBADF: the call never reached the kernel
    assert "osync=22" in on.stdout, on.stdout  # EINVAL, as nspawn's seccomp_suppress_sync()
    off = subprocess.run(base + ["--suppress-sync=no", "--", "/bin/sh", "-c", FSYNC_AND_OSYNC],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert off.returncode == 0, off.stderr
    assert "fsync=-1" in off.stdout and "osync=ok" in off.stdout, off.stdout


# ---- capabilities -----------------------------------------------------------------------------------

def cap_field(text, name):
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(text)


def test_ambient_capability_reaches_a_non_root_command(spawn_bin, tree):
    r = sh(spawn_bin, tree, "id -u; grep -E '^Cap(Amb|Eff)' /proc/self/status", "-u", "user",
           "--ambient-capability=CAP_NET_BIND_SERVICE,CAP_NET_RAW")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "1000"
    want = (1 << 10) | (1 << 13)
    assert cap_field(r.stdout, "CapAmb") == want
    assert cap_field(r.stdout, "CapEff") == want
    r = sh(spawn_bin, tree, "grep -E '^CapAmb' /proc/self/status", "-u", "user")
    assert cap_field(r.stdout, "CapAmb") == 0


def test_ambient_capability_refusals(spawn_bin, tree):
    assert_one_line_error(sh(spawn_bin, tree, "true", "--ambient-capability=CAP_SYS_MODULE"),
                          "not covered by the container's capabilities")
    assert_one_line_error(spawn(spawn_bin, "-D", str(tree), "-b", "--ambient-capability=CAP_NET_RAW"), "--boot")
    assert_one_line_error(sh(spawn_bin, tree, "true", "--ambient-capability=all"), "all")


# ---- credentials ------------------------------------------------------------------------------------

def test_credentials_in_run_host_credentials(spawn_bin, tree, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"from-a-file\0with-nul")
    r = sh(spawn_bin, tree,
           "echo dir=$CREDENTIALS_DIRECTORY; cd /run/host/credentials; "
           "printf 'lit=%s\\n' \"$(cat literal)\"; od -An -c file | tr -d ' \\n'; echo; "
           "stat -c '%n %a %u' . literal file; grep ' /run/host/credentials ' /proc/self/mountinfo; "
           "echo x > literal 2>/dev/null && echo writable || echo refused",
           "--set-credential=literal:two\\nlines", f"--load-credential=file:{secret}")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "dir=/run/host/credentials" in out
    assert "lit=two\nlines" in out
    assert "from-a-file\\0with-nul" in out
    assert ". 500 0" in out and "literal 400 0" in out and "file 400 0" in out
    mi = [l for l in out.splitlines() if "/run/host/credentials" in l and " - " in l][0]
    opts, fstype = mi.split()[5], mi.split(" - ")[1].split()[0]
    assert fstype == "ramfs"
    assert set(opts.split(",")) >= {"ro", "nosuid", "nodev", "noexec"}
    assert "refused" in out


def test_no_credentials_no_directory(spawn_bin, tree):
    r = sh(spawn_bin, tree, "echo dir=${CREDENTIALS_DIRECTORY:-unset}; ls /run/host")
    assert r.returncode == 0, r.stderr
    assert "dir=unset" in r.stdout and "credentials" not in r.stdout


def test_load_credential_from_a_socket_and_from_our_own_credentials(spawn_bin, tree, tmp_path):
    path = str(tmp_path / "cred.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def serve():
        c, _ = srv.accept()
        c.sendall(b"socket-secret")
        c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    mine = tmp_path / "mycreds"
    mine.mkdir()
    (mine / "passed").write_text("handed-down")
    argv = [spawn_bin, "-q", "-P", "-D", str(tree), f"--load-credential=sock:{path}",
            "--load-credential=down:passed", "--", "/bin/sh", "-c",
            "cat /run/host/credentials/sock; echo; cat /run/host/credentials/down"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                       env={**os.environ, "CREDENTIALS_DIRECTORY": str(mine)})
    t.join(10)
    srv.close()
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["socket-secret", "handed-down"]


def test_credentials_belong_to_the_containers_root_with_userns(spawn_bin, tree):
    r = sh(spawn_bin, tree, "stat -c '%u %a' /run/host/credentials/k; cat /run/host/credentials/k",
           "--private-users=pick", "--private-users-ownership=chown", "--set-credential=k:v")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "400", "v"]


def test_credential_refusals(spawn_bin, tree, tmp_path):
    assert_one_line_error(sh(spawn_bin, tree, "true", "--set-credential=a:1", "--set-credential=a:2"),
                          "duplicate credential 'a'")
    assert_one_line_error(sh(spawn_bin, tree, "true", "--set-credential=a/b:1"), "not valid")
    assert_one_line_error(sh(spawn_bin, tree, "true", "--set-credential=novalue"), "ID:VALUE")
    assert_one_line_error(sh(spawn_bin, tree, "true", "--set-credential=a:\\q"), "unknown escape")
    assert_one_line_error(sh(spawn_bin, tree, "true", f"--load-credential=a:{tmp_path}/missing"), "cannot read")
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    r = subprocess.run([spawn_bin, "-q", "-P", "-D", str(tree), "--load-credential=a:rel", "--", "/bin/true"],
                       capture_output=True, text=True, timeout=30, env=env, stdin=subprocess.DEVNULL)
    assert_one_line_error(r, "no credentials were passed to spawn")


# ---- --pivot-root -----------------------------------------------------------------------------------

def test_pivot_root_with_and_without_the_old_root(spawn_bin, tree, busybox_tree_template):
    shutil.copytree(busybox_tree_template, tree / "sysroot", symlinks=True)
    (tree / "outer-marker").write_text("outer\n")
    (tree / "sysroot" / "inner-marker").write_text("inner\n")
    r = sh(spawn_bin, tree, "cat /inner-marker; cat /oldroot/outer-marker; ls /proc/1 >/dev/null && echo proc",
           "--pivot-root=/sysroot:/oldroot")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["inner", "outer", "proc"]
    r = sh(spawn_bin, tree, "cat /inner-marker; ls /oldroot/outer-marker 2>/dev/null || echo no-old; "
           "ls /outer-marker 2>/dev/null || echo no-outer", "--pivot-root=/sysroot")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["inner", "no-old", "no-outer"]
    assert_one_line_error(sh(spawn_bin, tree, "true", "--pivot-root=/nonexistent"), "--pivot-root=/nonexistent")


# ---- what this host cannot do: one clear error each ---------------------------------------------------

def test_root_hash_is_refused_with_the_reason(spawn_bin, tmp_path):
    img = tmp_path / "img.raw"
    img.write_bytes(b"\0" * 4096)
    h = "ab" * 32
    r = spawn(spawn_bin, "-i", str(img), f"--root-hash={h}")
    with open("/proc/devices") as f:
        has_dm = " device-mapper\n" in f.read()
    assert_one_line_error(r, "--root-hash=")
    if not has_dm:
        assert "device-mapper" in r.stderr
    assert_one_line_error(spawn(spawn_bin, "-D", str(tmp_path), "-M", "verity-t", f"--root-hash={h}"), "add -i IMAGE")
    assert_one_line_error(spawn(spawn_bin, "-i", str(img), "--root-hash=abc"), "--root-hash=")
    assert_one_line_error(spawn(spawn_bin, "-i", str(img), "--root-hash-sig=relative"), "--root-hash-sig=")


def test_selinux_labels_need_selinux(spawn_bin, tree):
    if os.path.exists("/sys/fs/selinux/enforce"):
        pytest.skip("SELinux is enabled here")
    assert_one_line_error(sh(spawn_bin, tree, "true", "-Z", "system_u:system_r:container_t:s0"), "SELinux")
    assert_one_line_error(sh(spawn_bin, tree, "true", "-L", "system_u:object_r:container_file_t:s0"), "SELinux")


def test_no_pager_is_accepted(spawn_bin, tree):
    r = sh(spawn_bin, tree, "echo ok", "--no-pager")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def oci_config(**process):
    import json
    cfg = {
        "ociVersion": "1.0.0",
        "root": {"path": "rootfs"},
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "cwd": "/tmp",
                    "args": ["/bin/sh", "-c", "hostname; pwd; echo $GREETING; grep 'Max open files' /proc/self/limits; "
                             "cat /data/file; ls /masked | wc -l; cat /proc/self/oom_score_adj"],
                    "env": ["PATH=/bin:/sbin", "GREETING=hello-oci"],
                    "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 777, "hard": 888}],
                    "oomScoreAdj": 300, **process},
        "hostname": "oci-box",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/data", "type": "bind", "source": "SRC", "options": ["rbind", "ro"]}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"},
                                 {"type": "network"}],
                  "maskedPaths": ["/masked"]},
    }
    return cfg


def test_oci_bundle_runs_config_json(spawn_bin, tree, tmp_path):
    import json
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    tree.rename(bundle / "rootfs")
    (bundle / "rootfs" / "masked").mkdir()
    (bundle / "rootfs" / "masked" / "secret").write_text("s\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "file").write_text("bound-in\n")
    cfg = oci_config()
    cfg["mounts"][1]["source"] = str(data)
    (bundle / "config.json").write_text(json.dumps(cfg))
    r = spawn(spawn_bin, f"--oci-bundle={bundle}", "-M", "oci-t")
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0:3] == ["oci-box", "/tmp", "hello-oci"]
    assert out[3].split()[3:5] == ["777", "888"]
    assert out[4] == "bound-in"
    assert out[5].strip() == "0"  # masked: nspawn's --inaccessible
    assert out[6] == "300"


def test_oci_bundle_refusals(spawn_bin, tree, tmp_path):
    import json
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    assert_one_line_error(spawn(spawn_bin, f"--oci-bundle={bundle}"), "config.json")
    cfg = oci_config()
    del cfg["mounts"][1]
    cfg["linux"]["cgroupsPath"] = "/mk-oci-refused"
    (bundle / "config.json").write_text(json.dumps(cfg))
    assert_one_line_error(spawn(spawn_bin, f"--oci-bundle={bundle}"), "'linux.cgroupsPath' is not supported")
    cfg["ociVersion"] = "2.0.0"
    (bundle / "config.json").write_text(json.dumps(cfg))
    assert_one_line_error(spawn(spawn_bin, f"--oci-bundle={bundle}"), "ociVersion")
    assert_one_line_error(spawn(spawn_bin, f"--oci-bundle={bundle}", "-D", str(tree)), "cannot be combined with -D")


# ---- --bind-user ------------------------------------------------------------------------------------

@pytest.fixture
def host_user(tmp_path):
    """A throw-away host user with a private group and a home holding one file; removed afterwards."""
    name = "mkbu%d" % (os.getpid() % 100000)
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run(["useradd", "--user-group", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/false",
                    name], check=True)
    try:
        import pwd
        pw = pwd.getpwnam(name)
        (home / "hello").write_text("from-the-host\n")
        os.chown(home, pw.pw_uid, pw.pw_gid)
        os.chown(home / "hello", pw.pw_uid, pw.pw_gid)
        os.chmod(tmp_path, 0o755)
        yield pw
    finally:
        subprocess.run(["userdel", name], check=False)
        subprocess.run(["groupdel", name], check=False, stderr=subprocess.DEVNULL)


def test_bind_user_maps_the_host_user_in(spawn_bin, tree, host_user):
    name = host_user.pw_name
    r = sh(spawn_bin, tree,
           f"cat /run/host/userdb/{name}.user /run/host/userdb/{name}.group; "
           "readlink /run/host/userdb/60514.user; readlink /run/host/userdb/60514.group; "
           f"stat -c '%u %g' /run/host/home/{name} /run/host/home/{name}/hello; cat /run/host/home/{name}/hello; "
           "awk '$1 == 60514' /proc/self/uid_map; awk '$1 == 60514' /proc/self/gid_map; "
           f"echo x > /run/host/home/{name}/new && echo home-writable",
           "--private-users=pick", "--private-users-ownership=chown", f"--bind-user={name}")
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == ('{"userName":"%s","uid":60514,"gid":60514,"homeDirectory":"/run/host/home/%s",'
                      '"service":"io.systemd.NSpawn"}' % (name, name))
    assert out[1] == '{"groupName":"%s","gid":60514,"service":"io.systemd.NSpawn"}' % name
    assert out[2:4] == [f"{name}.user", f"{name}.group"]
    assert out[4:6] == ["60514 60514", "60514 60514"]
    assert out[6] == "from-the-host"
    assert out[7].split() == ["60514", str(host_user.pw_uid), "1"]
    assert out[8].split() == ["60514", str(host_user.pw_gid), "1"]
    # The container's root may write there (its CAP_DAC_OVERRIDE covers the mapped owner); what it
    # creates belongs to the container's root, i.e. to the picked range on the host.
    assert out[9] == "home-writable"
    assert (pathlib.Path(host_user.pw_dir) / "new").stat().st_uid >= 0x80000


def test_bind_user_refusals(spawn_bin, tree, host_user):
    assert_one_line_error(sh(spawn_bin, tree, "true", f"--bind-user={host_user.pw_name}"), "needs a user namespace")
    assert_one_line_error(sh(spawn_bin, tree, "true", "-U", "--bind-user=root"), "root")
    assert_one_line_error(sh(spawn_bin, tree, "true", "-U", "--bind-user=mk-no-such-user"), "no such user on the host")
    assert_one_line_error(sh(spawn_bin, tree, "true", "-U", "--bind-user=user"), "no such user on the host")
