"""spawn running a command: isolation asserted from inside the container, exit codes, signals,
cleanup, options and bad input. Root only; real namespaces and mounts; busybox tree."""
import os
import pathlib
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from mkutil import host_mounts, wait_for  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def run(spawn_bin, tree, *args, cmd=None, timeout=30, **kw):
    argv = [spawn_bin, "-q", "-D", str(tree), *args]
    if cmd is not None:
        argv += ["--", "/bin/sh", "-c", cmd]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def sh(spawn_bin, tree, cmd, *args, **kw):
    r = run(spawn_bin, tree, "-P", *args, cmd=cmd, **kw)
    return r


def status_field(text, field):
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{field} not in {text!r}")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


# ---- identity and namespaces ---------------------------------------------------------------------

def test_payload_is_pid1_with_hostname_from_directory(spawn_bin, tree):
    r = sh(spawn_bin, tree, 'echo pid=$$; hostname; cat /proc/1/comm')
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert lines[0] == "pid=1"
    assert lines[1] == "bbtree"


def test_hostname_and_machine_options(spawn_bin, tree):
    r = sh(spawn_bin, tree, "hostname", "-M", "box1")
    assert r.stdout.strip() == "box1"
    r = sh(spawn_bin, tree, "hostname", "-M", "box1", "--hostname", "other.example")
    assert r.stdout.strip() == "other.example"


def test_namespaces_differ_from_host(spawn_bin, tree):
    r = sh(spawn_bin, tree, "for n in mnt pid uts ipc cgroup net; do readlink /proc/self/ns/$n; done")
    inside = r.stdout.split()
    host = [os.readlink(f"/proc/self/ns/{n}") for n in ("mnt", "pid", "uts", "ipc", "cgroup", "net")]
    for i, n in enumerate(("mnt", "pid", "uts", "ipc", "cgroup")):
        assert inside[i] != host[i], n
    assert inside[5] == host[5], "network is shared without --private-network"


def test_private_network_has_only_loopback_up(spawn_bin, tree):
    r = sh(spawn_bin, tree, "ls /sys/class/net; cat /sys/class/net/lo/operstate; ip -o link", "--private-network")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "lo"
    assert "LOOPBACK,UP" in r.stdout
    assert os.readlink("/proc/self/ns/net") not in r.stdout


# ---- masks and read-only mounts, asserted from inside --------------------------------------------

def test_proc_masks_are_empty_and_read_only(spawn_bin, tree):
    masked = [p for p in ("/proc/kallsyms", "/proc/kcore", "/proc/keys", "/proc/sysrq-trigger", "/proc/timer_list")
              if os.path.exists(p)]
    assert masked, "the host has none of the masked files"
    cmd = "; ".join(f'echo "{p} $(wc -c < {p})"; (echo c > {p}) 2>/dev/null && echo WROTE {p}' for p in masked)
    r = sh(spawn_bin, tree, cmd + "; true")
    assert r.returncode == 0, r.stderr
    for p in masked:
        assert f"{p} 0" in r.stdout, r.stdout
    assert "WROTE" not in r.stdout


def test_sysrq_trigger_cannot_be_written(spawn_bin, tree):
    r = sh(spawn_bin, tree, "echo h > /proc/sysrq-trigger && echo WROTE; echo done")
    assert "WROTE" not in r.stdout and "done" in r.stdout


def test_proc_sys_is_read_only(spawn_bin, tree):
    r = sh(spawn_bin, tree, "echo 4 > /proc/sys/kernel/printk && echo WROTE; "
                            "echo x > /proc/sys/kernel/core_pattern && echo WROTE2; "
                            "grep ' /proc/sys ' /proc/self/mountinfo")
    assert "WROTE" not in r.stdout
    assert "Read-only file system" in r.stderr
    line = [l for l in r.stdout.splitlines() if " /proc/sys " in l][0]
    assert " ro," in line or " ro " in line


def test_proc_sys_net_writable_only_with_private_network(spawn_bin, tree):
    probe = "echo 1 > /proc/sys/net/ipv4/ip_forward && echo WROTE"
    assert "WROTE" not in sh(spawn_bin, tree, probe).stdout
    assert "WROTE" in sh(spawn_bin, tree, probe, "--private-network").stdout


def test_sys_is_read_only(spawn_bin, tree):
    target = "/sys/kernel/uevent_helper" if os.path.exists("/sys/kernel/uevent_helper") else "/sys/kernel/mm/ksm/run"
    r = sh(spawn_bin, tree, f"echo x > {target} && echo WROTE; mkdir /sys/foo && echo MADE; "
                            "grep ' /sys ' /proc/self/mountinfo")
    assert "WROTE" not in r.stdout and "MADE" not in r.stdout
    line = [l for l in r.stdout.splitlines() if " /sys " in l][0]
    assert " ro," in line


def test_no_host_proc_or_sysfs_remains_visible(spawn_bin, tree):
    # T-12: after pivot_root the old root is detached; every proc/sysfs belongs to the container.
    r = sh(spawn_bin, tree, "cat /proc/self/mountinfo")
    for line in r.stdout.splitlines():
        mountpoint = line.split()[4]
        assert mountpoint == "/" or not mountpoint.startswith(str(tree)), line
    points = [l.split()[4] for l in r.stdout.splitlines()]
    assert not any(p.startswith("/tmp/") or p.startswith("/work") for p in points), points


def test_dev_is_minimal(spawn_bin, tree):
    r = sh(spawn_bin, tree, "ls /dev; ls -l /dev/null /dev/ptmx; stat -c %t:%T /dev/null; "
                            "grep -E ' /dev(/pts|/shm|/mqueue)? ' /proc/self/mountinfo")
    names = set(r.stdout.split())
    for n in ("null", "zero", "full", "random", "urandom", "tty", "net", "pts", "shm", "mqueue", "ptmx"):
        assert n in names, n
    for host_only in ("sda", "vda", "kmsg", "mem", "port"):
        assert host_only not in names
    assert "1:3" in r.stdout
    assert "newinstance" not in r.stdout or "devpts" in r.stdout
    assert "ptmxmode=666" in r.stdout


def test_proc_and_dev_symlinks_in_tree_are_refused(spawn_bin, tree, tmp_path):
    # T-05 / T-08: API file system targets that are symlinks must not redirect our mounts.
    outside = tmp_path / "outside"
    outside.mkdir()
    (tree / "dev").rmdir()
    (tree / "dev").symlink_to(outside)
    before = host_mounts()
    r = sh(spawn_bin, tree, "true")
    assert r.returncode == 1
    assert "symlink" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert list(outside.iterdir()) == []
    assert host_mounts() == before


# ---- capabilities, seccomp, keyring, fds ---------------------------------------------------------

NSPAWN_CAPS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 18, 19, 21, 22, 23, 24, 26, 27, 28, 29, 30, 31]


def caps_mask(extra=()):
    with open("/proc/self/status") as f:
        host_prm = int(status_field(f.read(), "CapPrm"), 16)
    m = 0
    for c in list(NSPAWN_CAPS) + list(extra):
        m |= 1 << c
    return m & host_prm


def test_capabilities_are_nspawns_set(spawn_bin, tree):
    r = sh(spawn_bin, tree, "cat /proc/self/status")
    for field in ("CapBnd", "CapEff", "CapPrm"):
        assert int(status_field(r.stdout, field), 16) == caps_mask(), field
    assert int(status_field(r.stdout, "CapInh"), 16) == 0
    assert int(status_field(r.stdout, "CapAmb"), 16) == 0
    assert not int(status_field(r.stdout, "CapBnd"), 16) & (1 << 16), "CAP_SYS_MODULE must be gone"


def test_private_network_adds_net_admin(spawn_bin, tree):
    r = sh(spawn_bin, tree, "cat /proc/self/status", "--private-network")
    assert int(status_field(r.stdout, "CapBnd"), 16) == caps_mask([12])


def test_capability_options(spawn_bin, tree):
    r = sh(spawn_bin, tree, "cat /proc/self/status", "--capability=CAP_SYS_TIME", "--drop-capability=sys_admin,CAP_MKNOD")
    bnd = int(status_field(r.stdout, "CapBnd"), 16)
    assert bnd & (1 << 25) and not bnd & (1 << 21) and not bnd & (1 << 27)


def test_block_device_mknod_fails(spawn_bin, tree):
    r = sh(spawn_bin, tree, "mknod /tmp/blk b 8 0 && echo MADE; mknod /tmp/chr c 1 3 && echo CHR")
    assert "MADE" not in r.stdout
    assert "Operation not permitted" in r.stderr
    assert "CHR" in r.stdout


def test_seccomp_filter_is_active(spawn_bin, tree):
    r = sh(spawn_bin, tree, "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status")
    assert status_field(r.stdout, "Seccomp") == "2"
    assert status_field(r.stdout, "NoNewPrivs") == "0"


def test_system_call_filter_deny(spawn_bin, tree):
    r = sh(spawn_bin, tree, "mkdir /tmp/x && echo MADE", "--system-call-filter=~mkdir mkdirat")
    assert "MADE" not in r.stdout and "Operation not permitted" in r.stderr


def test_no_new_privileges(spawn_bin, tree):
    r = sh(spawn_bin, tree, "grep NoNewPrivs /proc/self/status", "--no-new-privileges=yes")
    assert status_field(r.stdout, "NoNewPrivs") == "1"


def test_only_stdio_fds_reach_the_payload(spawn_bin, tree):
    # T-02: no host fd leaks into the container.
    r = sh(spawn_bin, tree, "ls /proc/self/fd")
    assert sorted(r.stdout.split()) == ["0", "1", "2", "3"]  # 3 is ls's own directory fd
    r = sh(spawn_bin, tree, "readlink /proc/1/cwd; readlink /proc/1/root")
    assert r.stdout.split() == ["/root", "/"]


def test_fresh_session_keyring(spawn_bin, tree):
    with open("/proc/self/status") as f:
        f.read()
    r = sh(spawn_bin, tree, "cat /proc/keys | wc -c")
    assert r.stdout.strip() == "0"


# ---- exit codes and signals ----------------------------------------------------------------------

def test_exit_code_propagates(spawn_bin, tree):
    assert sh(spawn_bin, tree, "exit 42").returncode == 42
    assert sh(spawn_bin, tree, "true").returncode == 0


def test_death_by_signal_gives_128_plus_n(spawn_bin, tree):
    assert sh(spawn_bin, tree, "kill -SEGV $$", "--as-pid2").returncode == 128 + signal.SIGSEGV
    p = subprocess.Popen([spawn_bin, "-q", "-P", "-D", str(tree), "--", "/bin/sleep", "100"])
    assert wait_for(lambda: children(p.pid))
    os.kill(children(p.pid)[0], signal.SIGKILL)
    assert p.wait(10) == 128 + signal.SIGKILL


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_are_forwarded(spawn_bin, tree, sig):
    script = f"trap 'exit 7' {sig.name[3:]}; echo ready; while :; do sleep 0.05; done"
    for extra in ([], ["--as-pid2"]):
        p = subprocess.Popen([spawn_bin, "-q", "-P", "-D", str(tree), *extra, "--", "/bin/sh", "-c", script],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        os.kill(p.pid, sig)
        assert p.wait(10) == 7, extra


def test_signals_ignored_by_the_caller_are_not_inherited(spawn_bin, tree):
    # Started under nohup (SIGHUP ignored) or as a background job (SIGINT ignored): the payload
    # still starts with the default actions, so its own trap works and the signal reaches it.
    def ignore():
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    p = subprocess.Popen([spawn_bin, "-q", "-P", "-D", str(tree), "--", "/bin/sh", "-c",
                          "grep SigIgn /proc/self/status; trap 'exit 7' HUP; echo ready; while :; do sleep 0.05; done"],
                         stdout=subprocess.PIPE, text=True, preexec_fn=ignore)
    ignored = int(p.stdout.readline().split()[1], 16)
    assert ignored & (1 << (signal.SIGHUP - 1) | 1 << (signal.SIGINT - 1)) == 0, hex(ignored)
    assert p.stdout.readline().strip() == "ready"
    os.kill(p.pid, signal.SIGHUP)
    assert p.wait(10) == 7


def test_sigterm_at_any_moment_of_the_start_ends_spawn_itself_and_leaves_nothing(spawn_bin, tree):
    # Before spawn blocked its stop signals, a SIGTERM during option parsing or while it prepared
    # the container killed it outright, with what it had made (locks, scratch directories) left.
    # Now it either stops the start in one line or hands the signal to the guest: either way spawn
    # exits by itself, and leaves nothing.
    import random  # noqa: PLC0415

    def blocks(pid, sig):
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigBlk:"):
                return int(line.split()[1], 16) & (1 << (sig - 1)) != 0
        return False

    before = host_mounts()
    rng = random.Random(16)
    outcomes = set()
    for i in range(25):
        name = f"early-term-{i}"
        p = subprocess.Popen([spawn_bin, "-q", "-P", "--volatile=overlay", "--as-pid2", "-D", str(tree),
                              "-M", name, "--register=no", "--", "/bin/sh", "-c", "while :; do sleep 0.05; done"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        # From spawn's first step on (the dynamic loader before it cannot hold a signal).
        assert wait_for(lambda: blocks(p.pid, signal.SIGTERM), 10, interval=0.0005)
        time.sleep(rng.uniform(0, 0.025))
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
        assert p.returncode >= 0, f"spawn was killed by signal {-p.returncode} ({i})"
        if p.returncode == 1:
            assert err.strip() == "spawn: stopped by SIGTERM before the container started; nothing of it is left"
        else:
            assert p.returncode == 128 + signal.SIGTERM, err  # the payload's end, the stub init's report
        outcomes.add(p.returncode)
        assert not os.path.exists(f"/run/machkit/locks/machine.{name}")
    assert host_mounts() == before
    assert sorted(os.listdir(tree.parent)) == ["bbtree"]  # no scratch directory next to the tree


def test_second_sigterm_kills(spawn_bin, tree):
    p = subprocess.Popen([spawn_bin, "-q", "-P", "-D", str(tree), "--", "/bin/sh", "-c",
                          "trap '' TERM; echo ready; while :; do sleep 0.05; done"], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    os.kill(p.pid, signal.SIGTERM)
    time.sleep(0.2)
    assert p.poll() is None
    os.kill(p.pid, signal.SIGTERM)
    assert p.wait(10) == 128 + signal.SIGKILL


def test_sigkill_of_spawn_leaves_nothing_behind(spawn_bin, tree):
    before = host_mounts()
    p = subprocess.Popen([spawn_bin, "-q", "-P", "-D", str(tree), "--as-pid2", "--tmpfs=/mnt/x",
                          "--", "/bin/sh", "-c", "sleep 1000 & echo ready; wait"], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    init = children(p.pid)[0]
    descendants = []
    todo = [init]
    while todo:
        x = todo.pop()
        descendants.append(x)
        todo += children(x)
    assert len(descendants) >= 3
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)
    assert wait_for(lambda: not any(os.path.exists(f"/proc/{d}") for d in descendants)), "container processes survive"
    assert host_mounts() == before
    assert not os.path.exists(tree / "mnt" / "x" / "anything")


# ---- options ------------------------------------------------------------------------------------

def test_user_option_uses_the_containers_passwd(spawn_bin, tree):
    r = sh(spawn_bin, tree, "id -u; id -g; id -G; echo $HOME $USER; pwd; grep CapEff /proc/self/status", "-u", "user")
    out = r.stdout.split()
    assert out[:2] == ["1000", "1000"]
    assert "100" in out[2:4]
    assert "/home/user" in out and "user" in out
    assert status_field(r.stdout, "CapEff") == "0000000000000000"
    r = sh(spawn_bin, tree, "id -u", "--user=1")
    assert r.stdout.strip() == "1"
    r = sh(spawn_bin, tree, "true", "-u", "nosuchuser")
    assert r.returncode == 1 and "nosuchuser" in r.stderr


def test_environment_and_chdir(spawn_bin, tree):
    r = sh(spawn_bin, tree, "echo $FOO; echo $container; echo $container_uuid; pwd; echo $PATH",
           "-E", "FOO=bar baz", "--chdir=/tmp", "--uuid=0123456789abcdef0123456789abcdef")
    lines = r.stdout.splitlines()
    assert lines[0] == "bar baz"
    assert lines[1] == "systemd-nspawn"
    assert lines[2] == "01234567-89ab-cdef-0123-456789abcdef"
    assert lines[3] == "/tmp"
    assert "/usr/bin" in lines[4]


def test_bind_mounts(spawn_bin, tree, tmp_path):
    src = tmp_path / "shared"
    src.mkdir()
    (src / "hello").write_text("hi\n")
    r = sh(spawn_bin, tree, "cat /mnt/rw/hello; echo new > /mnt/rw/new; echo x > /mnt/ro/hello2 || echo RO",
           f"--bind={src}:/mnt/rw", f"--bind-ro={src}:/mnt/ro")
    assert r.returncode == 0, r.stderr
    assert "hi" in r.stdout and "RO" in r.stdout
    assert (src / "new").read_text() == "new\n"
    assert not (src / "hello2").exists()


def test_bind_destination_symlink_stays_inside(spawn_bin, tree, tmp_path):
    # T-06: a destination that is a symlink out of the tree resolves inside the tree.
    src = tmp_path / "src"
    src.mkdir()
    (tree / "escape").symlink_to("/")
    victim = tmp_path / "victim"
    r = sh(spawn_bin, tree, "ls /escape/inside", f"--bind={src}:/escape/inside")
    assert r.returncode == 0, r.stderr
    assert (tree / "inside").is_dir()
    assert not pathlib.Path("/inside").exists()
    assert not victim.exists()


def test_tmpfs_and_read_only(spawn_bin, tree):
    r = sh(spawn_bin, tree, "touch /etc/x && echo WROTE; touch /tmp/ok && echo TMP; touch /scratch/a && echo SCRATCH",
           "--read-only", "--tmpfs=/scratch:mode=0700")
    assert "WROTE" not in r.stdout
    assert "TMP" in r.stdout and "SCRATCH" in r.stdout
    assert not (tree / "etc" / "x").exists()


def test_inaccessible(spawn_bin, tree):
    (tree / "secret").write_text("s3cret")
    r = sh(spawn_bin, tree, "cat /secret; echo; ls -ld /etc | cut -c1", "--inaccessible=/secret")
    assert "s3cret" not in r.stdout


def test_resolv_conf_and_timezone(spawn_bin, tree):
    (tree / "etc" / "resolv.conf").unlink(missing_ok=True)
    r = sh(spawn_bin, tree, "cat /etc/resolv.conf")
    assert r.stdout == open("/etc/resolv.conf").read()
    (tree / "etc" / "resolv.conf").unlink()
    sh(spawn_bin, tree, "true", "--resolv-conf=off")
    assert not (tree / "etc" / "resolv.conf").exists()
    r = sh(spawn_bin, tree, "cat /run/host/os-release; cat /run/host/container-manager")
    assert "ID=" in r.stdout and "systemd-nspawn" in r.stdout


def test_bind_onto_a_dangling_etc_symlink_says_so(spawn_bin, tree):
    # Issue 19: "No such file or directory" did not say that the tree's own file is the problem.
    etc = tree / "etc"
    (etc / "resolv.conf").unlink(missing_ok=True)
    (etc / "resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    (etc / "localtime").unlink(missing_ok=True)
    (etc / "localtime").symlink_to("/nowhere/zone")
    for opt, name, target in (("--resolv-conf=bind-host", "resolv.conf", "../run/systemd/resolve/stub-resolv.conf"),
                              ("--timezone=bind", "localtime", "/nowhere/zone")):
        line = one_line_error(run(spawn_bin, tree, "-P", opt, cmd="true"))
        assert f"{opt}: the tree's /etc/{name} is a dangling symlink (to '{target}')" in line, line
    # A read-only run picks bind-host for resolv.conf by itself: a tree that links its resolv.conf
    # elsewhere (resolved's stub) manages its own, and starts as it is.
    r = sh(spawn_bin, tree, "readlink /etc/resolv.conf", "--read-only")
    assert r.returncode == 0 and r.stdout.strip() == "../run/systemd/resolve/stub-resolv.conf", r.stderr


def test_console_read_only_mode_uses_a_pty(spawn_bin, tree):
    # Without a terminal and without -P, output comes through the container's console pty.
    r = subprocess.run([spawn_bin, "-q", "-D", str(tree), "--", "/bin/sh", "-c", "tty; ls -l /dev/console; echo done"],
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=20)
    assert r.returncode == 0, r.stderr
    assert b"/dev/pts/0" in r.stdout and b"done" in r.stdout
    assert b"\r\n" in r.stdout  # the pty's output processing


def test_interactive_console_and_escape(spawn_bin, tree):
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(spawn_bin, [spawn_bin, "-D", str(tree), "--", "/bin/sh", "-c", "echo READY; cat; echo END"])
    buf = b""
    end = time.monotonic() + 10
    while b"READY" not in buf and time.monotonic() < end:
        if select.select([fd], [], [], 0.5)[0]:
            buf += os.read(fd, 1024)
    assert b"READY" in buf
    os.write(fd, b"hello\n")
    while b"hello" not in buf.split(b"READY", 1)[1] and time.monotonic() < end:
        if select.select([fd], [], [], 0.5)[0]:
            buf += os.read(fd, 1024)
    os.write(fd, b"\x1d\x1d\x1d")
    _, status = os.waitpid(pid, 0)
    try:
        while select.select([fd], [], [], 0.2)[0]:
            buf += os.read(fd, 1024)
    except OSError:
        pass
    assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGKILL
    assert b"terminated by ^]^]^]" in buf


def test_as_pid2_runs_a_stub_init(spawn_bin, tree):
    r = sh(spawn_bin, tree, "echo $$; cat /proc/1/status | grep -E '^(CapEff|Name)'", "--as-pid2")
    assert r.stdout.split()[0] == "2"
    assert status_field(r.stdout, "CapEff") == "0000000000000000"


def test_default_command_is_roots_shell(spawn_bin, tree):
    r = subprocess.run([spawn_bin, "-q", "-P", "-D", str(tree)], input="echo $0; exit 3\n",
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 3
    assert r.stdout.strip() == "-sh"


# ---- bad input ----------------------------------------------------------------------------------

def one_line_error(r):
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spawn: "), r.stderr
    return lines[0]


def test_bad_input_gives_one_line_and_exit_1(spawn_bin, tree, tmp_path):
    before = host_mounts()
    msg = one_line_error(run(spawn_bin, tmp_path / "missing", cmd="true"))
    assert "does not exist" in msg
    empty = tmp_path / "empty"
    empty.mkdir()
    msg = one_line_error(subprocess.run([spawn_bin, "-D", str(empty)], capture_output=True, text=True))
    assert "no usable shell" in msg
    assert list(empty.iterdir()) == [], "nothing may be created in the tree"
    assert "invalid machine name" in one_line_error(run(spawn_bin, tree, "-M", "foo_bar", cmd="true"))
    assert "invalid machine name" in one_line_error(run(spawn_bin, tree, "-M", "x" * 65, cmd="true"))
    assert "unknown option" in one_line_error(run(spawn_bin, tree, "--frobnicate", cmd="true"))
    assert "--console" in one_line_error(run(spawn_bin, tree, "--console=loud", cmd="true"))
    assert "signal" in one_line_error(run(spawn_bin, tree, "--kill-signal=SIGFOO", cmd="true"))
    assert "capability" in one_line_error(run(spawn_bin, tree, "--capability=CAP_FLY", cmd="true"))
    assert "absolute" in one_line_error(run(spawn_bin, tree, "--bind=/tmp:relative", cmd="true"))
    assert "system call" in one_line_error(run(spawn_bin, tree, "--system-call-filter=nosuchcall", cmd="true"))
    assert "cannot find" in one_line_error(run(spawn_bin, tree, "-P", "--", "nosuchcommand"))
    msg = one_line_error(subprocess.run([spawn_bin, "-q"], capture_output=True, text=True))
    assert "-D" in msg
    assert host_mounts() == before


def test_not_root(spawn_bin, tree):
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", spawn_bin, "-D", str(tree), "true"],
                       capture_output=True, text=True)
    assert "root" in one_line_error(r)


def test_busy_machine_name(spawn_bin, tree, tmp_path):
    p = subprocess.Popen([spawn_bin, "-q", "-P", "-D", str(tree), "-M", "busy1", "--", "/bin/sh", "-c",
                          "echo ready; sleep 100"], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        r = run(spawn_bin, tree, "-M", "busy1", cmd="true")
        assert "already in use" in one_line_error(r)
    finally:
        p.kill()
        p.wait()
    assert run(spawn_bin, tree, "-P", "-M", "busy1", cmd="true").returncode == 0


def test_busy_tree(spawn_bin, tree):
    # one writable tree, one container; read-only and ephemeral runs may share it.
    p = subprocess.Popen([spawn_bin, "-q", "-P", "-D", str(tree), "-M", "w1", "--", "/bin/sh", "-c",
                          "echo ready; sleep 100"], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        r = run(spawn_bin, tree, "-M", "w2", cmd="true")
        assert "in use" in one_line_error(r)
        assert run(spawn_bin, tree, "-P", "-M", "w3", "--read-only", cmd="true").returncode == 0
        assert run(spawn_bin, tree, "-P", "-x", cmd="true").returncode == 0
    finally:
        p.kill()
        p.wait()


def test_help_and_version(spawn_bin):
    r = subprocess.run([spawn_bin, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--directory" in r.stdout
    r = subprocess.run([spawn_bin, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "machkit" in r.stdout


def test_overlay_mounts(spawn_bin, tree, tmp_path):
    for d in ("l1", "l2", "up"):
        (tmp_path / d).mkdir()
    (tmp_path / "l1" / "a").write_text("a")
    (tmp_path / "l2" / "b").write_text("b")
    r = sh(spawn_bin, tree, "ls /mnt/ov; echo c > /mnt/ov/c; ls /mnt/ro; echo x > /mnt/ro/x || echo RO",
           f"--overlay={tmp_path}/l1:{tmp_path}/l2:{tmp_path}/up:/mnt/ov",
           f"--overlay-ro={tmp_path}/l1:{tmp_path}/l2:/mnt/ro")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[:2] == ["a", "b"] and "RO" in r.stdout
    assert (tmp_path / "up" / "c").read_text() == "c\n"
    assert not (tmp_path / "l1" / "c").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bbtree", "l1", "l2", "up"], "the work directory is removed"


def test_volatile_state_keeps_the_tree_read_only(spawn_bin, tree):
    r = sh(spawn_bin, tree, "touch /etc/x || echo RO; touch /var/y && echo VAR", "--volatile=state")
    assert "RO" in r.stdout and "VAR" in r.stdout
    assert not (tree / "var" / "y").exists()


def test_chdir_cannot_reach_a_host_fd(spawn_bin, tree):
    # T-02 (runc CVE-2024-21626): --chdir=/proc/self/fd/N never lands outside the container.
    for n in range(3, 20):
        r = sh(spawn_bin, tree, "pwd", f"--chdir=/proc/self/fd/{n}")
        if r.returncode == 0:
            assert r.stdout.strip().startswith("/") and not r.stdout.startswith("/proc/self/fd"), (n, r.stdout)
        else:
            assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, (n, r.stderr)
    r = sh(spawn_bin, tree, "readlink /proc/1/cwd; ls /proc/1/fd")
    assert r.stdout.split()[0] == "/root"


def test_host_binary_cannot_be_overwritten_from_inside(spawn_bin, tree):
    # T-01 (runc CVE-2019-5736): with --as-pid2 the stub init is spawn's own binary; writing it
    # through /proc/1/exe must fail and the binary stays as it was.
    import hashlib
    before = hashlib.sha256(open(spawn_bin, "rb").read()).hexdigest()
    r = sh(spawn_bin, tree, "for p in /proc/[0-9]*; do (echo x >> $p/exe) 2>/dev/null && echo WROTE $p; done; "
                            "cat /proc/1/exe > /dev/null && echo READ; true", "--as-pid2")
    assert r.returncode == 0, r.stderr
    assert "WROTE" not in r.stdout
    assert hashlib.sha256(open(spawn_bin, "rb").read()).hexdigest() == before


def test_tree_dev_null_symlink_is_not_used(spawn_bin, tree, tmp_path):
    # T-07: the tree's own /dev is hidden under our tmpfs; a hostile /dev/null there changes nothing.
    (tree / "dev" / "null").symlink_to("/proc/sys/kernel/core_pattern")
    (tree / "dev" / "console").symlink_to("/etc/passwd")
    core = open("/proc/sys/kernel/core_pattern").read()
    r = sh(spawn_bin, tree, "echo x > /dev/null; stat -c %t:%T /dev/null; ls -l /dev/console || true")
    assert r.returncode == 0, r.stderr
    assert "1:3" in r.stdout
    assert open("/proc/sys/kernel/core_pattern").read() == core


def test_template_populates_a_missing_root(spawn_bin, tree, tmp_path):
    (tree / "etc" / "hardlinked").write_text("x")
    os.link(tree / "etc" / "hardlinked", tree / "etc" / "hardlinked2")
    os.setxattr(tree / "etc" / "os-release", "user.mk", b"kept")
    os.chown(tree / "home" / "user", 1000, 1000)
    new = tmp_path / "fromtemplate"
    r = subprocess.run([spawn_bin, "-q", "-P", f"--template={tree}", "-D", str(new), "--", "/bin/sh", "-c",
                        "stat -c %u /home/user; readlink /bin/sh"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1000", "busybox"]
    assert (new / "etc" / "hardlinked").stat().st_ino == (new / "etc" / "hardlinked2").stat().st_ino
    assert os.getxattr(new / "etc" / "os-release", "user.mk") == b"kept"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".#")], "no temporary copy left"
    # An existing root is used as it is.
    (tree / "etc" / "only-in-template").write_text("t")
    subprocess.run([spawn_bin, "-q", "-P", f"--template={tree}", "-D", str(new), "--", "/bin/true"], check=True)
    assert not (new / "etc" / "only-in-template").exists()
    r = subprocess.run([spawn_bin, "-q", "-P", f"--template={tmp_path}/nope", "-D", str(tmp_path / "x"), "--", "/bin/true"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "template" in r.stderr and not (tmp_path / "x").exists()


def test_console_is_the_containers_own_pty(spawn_bin, tree):
    # T-22 (TIOCSTI): the payload's terminal is a pty of the container's own devpts instance, in a
    # session of its own; the user's terminal is never one of its fds, so nothing typed into it
    # can reach the host.
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(spawn_bin, [spawn_bin, "-q", "-D", str(tree), "--", "/bin/sh", "-c",
                             "echo tty=$(readlink /proc/self/fd/0); stat -c dev=%D /proc/self/fd/0; "
                             "stat -c ptsdev=%d /dev/pts/ptmx; echo sid=$(cut -d' ' -f6 /proc/self/stat) pid=$$; "
                             "ls -l /proc/self/fd/ | grep -c pts"])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    text = out.decode(errors="replace").replace("\r", "")
    assert "tty=/dev/pts/0" in text, text
    host_pts_dev = os.stat("/dev/pts/ptmx").st_dev
    pts_dev = int(text.split("ptsdev=")[1].split()[0])
    assert pts_dev != host_pts_dev, "the container has its own devpts instance"
    sid = text.split("sid=")[1].split()[0]
    assert sid == text.split("pid=")[1].split()[0], "the payload leads its own session"


def test_bind_destination_swapped_to_a_symlink_stays_inside(spawn_bin, tree, tmp_path):
    # T-06: while spawn resolves a bind destination, another party keeps swapping a directory on
    # the way for a symlink to "/". Destinations are resolved inside the tree and mounted onto the
    # fd they resolved to, so nothing may ever be created or mounted outside it.
    import threading
    src = tmp_path / "src"
    src.mkdir()
    shared = tree / "shared"
    (shared / "d").mkdir(parents=True)
    marker = "mk-t06-escape"
    stop = threading.Event()

    def swapper():
        d, tmp = shared / "d", shared / "d.tmp"
        while not stop.is_set():
            try:
                d.rename(tmp)
                d.symlink_to("/")
                d.unlink()
                tmp.rename(d)
            except OSError:
                pass

    before = host_mounts()
    t = threading.Thread(target=swapper)
    t.start()
    try:
        for _ in range(150):
            subprocess.run([spawn_bin, "-q", "-P", "-D", str(tree), f"--bind={src}:/shared/d/{marker}", "--", "/bin/true"],
                           capture_output=True, timeout=30)
    finally:
        stop.set()
        t.join()
    assert not os.path.exists("/" + marker), "a directory was created outside the tree"
    assert host_mounts() == before
