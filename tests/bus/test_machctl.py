"""machctl against machd on a private bus, with real containers: busybox trees started by the real
`spawn` (registered in machd, as test_spawn_register.py). Every verb, JSON output parsed, exit
codes checked, errors for unknown names, non-root callers and a missing machd. Root only."""
import json
import re
import os
import pathlib
import pty
import select
import signal
import shutil
import subprocess
import time

import pytest

from conftest import BUILD, machine_cgroups, wait_for

SPAWN = BUILD / "src" / "spawn" / "spawn"
MACHCTL = BUILD / "src" / "machctl" / "machctl"
HELPERS = pathlib.Path(__file__).resolve().parents[1] / "helpers"

pytestmark = pytest.mark.skipif(not MACHCTL.exists(), reason="machctl not built")


def machctl(bus, *args, check=None, user=None, input=None, env=None, timeout=60):
    cmd = [str(MACHCTL)] + [str(a) for a in args]
    if user is not None:
        cmd = ["setpriv", "--reuid=%d" % user, "--regid=%d" % user, "--clear-groups"] + cmd
    e = bus.env()
    if env:
        e.update(env)
    r = subprocess.run(cmd, capture_output=True, text=True, env=e, input=input, timeout=timeout,
                       stdin=None if input is not None else subprocess.DEVNULL)
    if check is not None:
        assert r.returncode == check, "machctl %s -> %d\nstdout: %s\nstderr: %s" % (" ".join(cmd[1:]), r.returncode,
                                                                                    r.stdout, r.stderr)
    return r


def ok(bus, *args, **kw):
    return machctl(bus, *args, check=0, **kw)


@pytest.fixture
def tree(tmp_path):
    d = tmp_path / "mctree"
    subprocess.run([str(HELPERS / "busybox-tree.sh"), str(d)], check=True)
    return d


class Containers:
    def __init__(self, bus, tree):
        self.bus, self.tree, self.procs = bus, tree, []

    def start(self, name, script="exec sleep 1000", wait=True, extra=(), setup=""):
        # The script is the container's PID 1 and the machine's leader; `setup` runs before "ready".
        # A writable tree serves one running container: the second and later get their own copy.
        tree = self.tree
        if any(p.poll() is None for p in self.procs):
            tree = self.tree.parent / ("mctree-" + name)
            if not tree.exists():
                shutil.copytree(self.tree, tree, symlinks=True)
        p = subprocess.Popen([str(SPAWN), "-q", "-P", "-D", str(tree), "-M", name, *extra, "--",
                              "/bin/sh", "-c", (setup + "; " if setup else "") + "echo ready; " + script],
                             env=self.bus.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
        self.procs.append(p)
        if wait:
            line = p.stdout.readline()
            assert line.strip() == "ready", p.stderr.read()
        return p

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


@pytest.fixture
def containers(bus, machd, tree):
    c = Containers(bus, tree)
    yield c
    c.cleanup()


def names(bus):
    return [m["machine"] for m in json.loads(ok(bus, "list", "-a", "-o", "json").stdout)]


def leader_of(p):
    return int(pathlib.Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()[0])


# ---------------------------------------------------------------------------------------- list

def test_list_table_and_json(bus, containers):
    containers.start("mc-a")
    containers.start("mc-b")
    out = ok(bus, "list").stdout
    lines = out.splitlines()
    assert lines[0].split() == ["MACHINE", "CLASS", "SERVICE", "OS", "VERSION", "ADDRESSES"]
    assert any(l.split()[:4] == ["mc-a", "container", "systemd-nspawn", "busybox"] for l in lines)
    assert lines[-1] == "2 machines listed." and lines[-2] == ""
    assert ".host" not in out
    assert ".host" in ok(bus, "list", "--all").stdout

    plain = ok(bus, "list", "--no-legend").stdout.splitlines()
    assert len(plain) == 2 and all(not l.startswith("MACHINE") for l in plain)

    data = json.loads(ok(bus, "list", "-o", "json").stdout)
    assert {m["machine"] for m in data} == {"mc-a", "mc-b"}
    m = next(x for x in data if x["machine"] == "mc-a")
    assert m["class"] == "container" and m["os"] == "busybox" and m["version"] is None
    assert m["addresses"] is None  # as machinectl 252: newline-joined addresses, or null
    assert list(m) == ["machine", "class", "service", "os", "version", "addresses"]  # column order
    pretty = ok(bus, "list", "--output=json-pretty").stdout
    assert json.loads(pretty) == data and "\n\t\t\"machine\" : " in pretty
    seq = ok(bus, "list", "-o", "json-seq").stdout
    records = [json.loads(r) for r in seq.split("\x1e") if r.strip()]
    assert len(records) == 1 and sorted(r["machine"] for r in records[0]) == ["mc-a", "mc-b"]


def test_list_empty_is_valid_json(bus, machd):
    assert json.loads(ok(bus, "list", "-o", "json").stdout) == []
    assert ok(bus, "list").stdout.strip() == "No machines."
    assert ok(bus, "list", "--no-legend").stdout == ""


def test_max_addresses_zero_hides_the_column(bus, containers):
    containers.start("mc-addr")
    assert "ADDRESSES" not in ok(bus, "list", "--max-addresses=0").stdout


# ------------------------------------------------------------------------------ status / show

def test_status(bus, containers, tree):
    p = containers.start("mc-st")
    leader = leader_of(p)
    out = ok(bus, "status", "mc-st").stdout
    assert out.startswith("mc-st(")
    assert "Leader: %d (" % leader in out
    assert "Service: systemd-nspawn; class container" in out
    assert "Root: %s" % tree in out
    assert "OS: BusyBox test tree" in out
    assert "Unit: machine-mc\\x2dst.scope" in out
    assert "─%d " % leader in out
    j = json.loads(ok(bus, "status", "mc-st", "-o", "json").stdout)
    assert j["Name"] == "mc-st" and j["Leader"] == leader and j["OS"]["ID"] == "busybox"
    assert any(x["pid"] == leader for x in j["Processes"])


def test_show(bus, containers, tmp_path):
    p = containers.start("mc-sh")
    props = dict(l.split("=", 1) for l in ok(bus, "show", "mc-sh").stdout.splitlines())
    assert props["Name"] == "mc-sh" and props["Leader"] == str(leader_of(p)) and props["State"] == "running"
    assert props["Class"] == "container" and len(props["Id"]) == 32
    assert "NetworkInterfaces" not in props  # empty: only with --all
    keys = list(props)
    assert keys == ["Name", "Id", "Timestamp", "TimestampMonotonic", "Service", "Unit", "Leader", "Class",
                    "RootDirectory", "State"], "machined 252's introspection order, as machinectl prints it"
    assert "NetworkInterfaces=" in ok(bus, "show", "--all", "mc-sh").stdout
    assert ok(bus, "show", "-p", "Leader", "--value", "mc-sh").stdout.strip() == str(leader_of(p))
    assert ok(bus, "show", "--property=Name,Class", "mc-sh").stdout.splitlines() == ["Name=mc-sh", "Class=container"]
    j = json.loads(ok(bus, "show", "-o", "json", "mc-sh").stdout)
    assert j["Name"] == "mc-sh" and j["Leader"] == leader_of(p) and isinstance(j["NetworkInterfaces"], list)
    manager = ok(bus, "show").stdout
    assert "PoolPath=%s" % (tmp_path / "pool") in manager
    assert json.loads(ok(bus, "show", "-o", "json").stdout)["PoolPath"] == str(tmp_path / "pool")


def test_show_matches_machinectl(bus, machd, containers):
    from test_conformance import machinectl
    import shutil
    if not shutil.which("machinectl"):
        pytest.skip("no machinectl")
    containers.start("mc-cmp")
    # machinectl prints GetAll's order, which is machd's (alphabetical); machctl machined's order.
    ours = ok(bus, "show", "mc-cmp").stdout
    theirs = machinectl(bus, machd, "show", "mc-cmp").stdout
    assert sorted(ours.splitlines()) == sorted(theirs.splitlines())
    assert sorted(ok(bus, "show").stdout.splitlines()) == sorted(machinectl(bus, machd, "show").stdout.splitlines())
    assert ok(bus, "list", "--no-legend").stdout.split() == machinectl(bus, machd, "list", "--no-legend").stdout.split()


# --------------------------------------------------------------------------------------- shell

def test_shell_exit_code_and_output_pipes(bus, containers):
    containers.start("mc-shell")
    r = machctl(bus, "shell", "mc-shell", "/bin/sh", "-c", "echo out; echo err >&2; exit 7")
    assert r.returncode == 7, r.stderr
    assert r.stdout == "out\n" and r.stderr == "err\n"
    assert machctl(bus, "shell", "mc-shell", "/bin/false").returncode == 1
    assert machctl(bus, "shell", "mc-shell", "/bin/true").returncode == 0
    # Killed by a signal: 128 + signal, as a shell reports it.
    assert machctl(bus, "shell", "mc-shell", "/bin/sh", "-c", "kill -9 $$").returncode == 137
    # stdin reaches the command; options after NAME belong to it.
    r = machctl(bus, "shell", "mc-shell", "/bin/cat", "-n", input="a\nb\n")
    assert r.returncode == 0 and r.stdout.split() == ["1", "a", "2", "b"]
    # Closed stdin: the command sees /dev/null.
    r = subprocess.run(["sh", "-c", '"$0" shell mc-shell /bin/cat <&-; echo "rc=$?"', str(MACHCTL)],
                       capture_output=True, text=True, env=bus.env(), timeout=30)
    assert r.stdout == "rc=0\n", r.stderr
    # A command name without a path is looked up on the guest's PATH.
    assert ok(bus, "shell", "mc-shell", "basename", "/x/y").stdout == "y\n"


def test_shell_user_env_and_errors(bus, containers):
    containers.start("mc-user")
    assert ok(bus, "shell", "user@mc-user", "/bin/id", "-u").stdout.strip() == "1000"
    assert ok(bus, "--uid=user", "shell", "mc-user", "/bin/id", "-u").stdout.strip() == "1000"
    out = ok(bus, "-E", "FOO=bar", "--setenv=X=1 2", "shell", "mc-user", "/bin/sh", "-c", 'echo "$FOO/$X/$HOME"').stdout
    assert out == "bar/1 2//root\n"
    r = machctl(bus, "shell", "ghost@mc-user", "/bin/true")
    assert r.returncode == 1 and "ghost" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = machctl(bus, "shell", "mc-user", "/nonexistent")
    assert r.returncode == 1 and "/nonexistent" in r.stderr


def test_shell_with_a_terminal(bus, containers):
    containers.start("mc-pty")
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(bus.env())
        os.environ["TERM"] = "xterm-test"
        os.execv(str(MACHCTL), [str(MACHCTL), "-q", "shell", "mc-pty", "/bin/sh", "-c",
                                'tty; echo "term=$TERM"; [ -t 0 ] && echo isatty; read x; echo "got $x"; exit 5'])
    out = b""
    sent = False
    end = time.time() + 20
    status = None
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if not data:
                break
            out += data
        if not sent and b"isatty" in out:
            os.write(fd, b"hello\n")
            sent = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = out.decode(errors="replace")
    assert "/dev/pts/" in text and "term=xterm-test" in text and "isatty" in text, text
    assert "got hello" in text, text
    assert os.WEXITSTATUS(status) == 5, text


def test_terminal_escape_leaves_the_session(bus, containers):
    containers.start("mc-esc")
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(bus.env())
        os.execv(str(MACHCTL), [str(MACHCTL), "shell", "mc-esc", "/bin/sh", "-c", "echo started; exec sleep 100"])
    out = b""
    end = time.time() + 20
    while time.time() < end and b"started" not in out:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            out += os.read(fd, 4096)
    assert b"Press ^] three times" in out and b"started" in out, out
    os.write(fd, b"\x1d\x1d\x1d")
    t0 = time.time()
    _, status = os.waitpid(pid, 0)
    assert time.time() - t0 < 5
    assert os.WEXITSTATUS(status) == 255  # the command's status is unknown: it still runs
    os.close(fd)


def test_sigterm_restores_the_terminal(bus, containers):
    import termios
    containers.start("mc-term")
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(bus.env())
        os.execv(str(MACHCTL), [str(MACHCTL), "shell", "mc-term", "/bin/sh", "-c", "echo started; exec sleep 100"])
    before = termios.tcgetattr(fd)[3]
    out = b""
    end = time.time() + 20
    while time.time() < end and b"started" not in out:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            out += os.read(fd, 4096)
    assert not termios.tcgetattr(fd)[3] & termios.ICANON, "raw mode while relaying"
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    assert termios.tcgetattr(fd)[3] == before
    assert os.WEXITSTATUS(status) == 255
    os.close(fd)


# ------------------------------------------------------------------- kill, terminate, poweroff

def test_kill_leader_and_terminate(bus, containers):
    p = containers.start("mc-k1")
    ok(bus, "kill", "--kill-whom=leader", "-s", "KILL", "mc-k1")
    assert p.wait(20) != 0
    assert wait_for(lambda: "mc-k1" not in names(bus), 10)

    p = containers.start("mc-k2")
    ok(bus, "terminate", "mc-k2")
    p.wait(20)
    assert wait_for(lambda: "mc-k2" not in names(bus), 10)
    assert wait_for(lambda: not any(c.exists() for c in machine_cgroups("mc-k2")), 10)


def test_kill_with_signal_reaches_the_payload(bus, containers, tree):
    containers.start("mc-sig", "while :; do sleep 0.1; done", setup="trap 'echo usr1 > /var/got' USR1")
    ok(bus, "kill", "--signal=SIGUSR1", "--kill-whom=leader", "mc-sig")
    assert wait_for(lambda: (tree / "var" / "got").exists(), 10)


def test_reboot_sends_sigint_to_the_leader(bus, containers, tree):
    containers.start("mc-rb", "while :; do sleep 0.1; done", setup="trap 'echo int > /var/int' INT")
    ok(bus, "reboot", "mc-rb")
    assert wait_for(lambda: (tree / "var" / "int").exists(), 10)


def test_poweroff_escalates_when_the_guest_ignores_it(bus, containers):
    # A payload that ignores SIGRTMIN+4 (busybox sh traps it): poweroff must still end it, and say so.
    p = containers.start("mc-po", "while :; do sleep 0.1; done", setup="trap '' 38")
    t0 = time.time()
    r = ok(bus, "poweroff", "--timeout=1", "mc-po")
    assert "did not power off" in r.stderr
    assert time.time() - t0 < 25
    assert "mc-po" not in names(bus)
    p.wait(10)


def test_poweroff_is_held_until_the_init_takes_it(bus, containers, tree):
    # The PID 1 of a namespace drops a signal it neither blocks nor catches, so a poweroff sent
    # while a systemd starts was lost (machctl then waited its timeout and terminated it). This
    # init, a systemd by name, catches SIGRTMIN+4 a second after it says ready: machd holds the
    # request until then, and the guest powers off by itself.
    init = tree / "usr" / "lib" / "systemd" / "systemd"
    init.parent.mkdir(parents=True, exist_ok=True)
    init.write_text("#!/bin/sh\necho ready\nsleep 1\n"
                    "trap 'echo powered-off > /var/po; exit 0' 38\nwhile :; do sleep 0.1; done\n")
    init.chmod(0o755)
    p = subprocess.Popen([str(SPAWN), "-q", "-P", "-D", str(tree), "-M", "mc-early", "--", "/usr/lib/systemd/systemd"],
                         env=bus.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL)
    containers.procs.append(p)
    assert p.stdout.readline().strip() == "ready", p.stderr.read()
    r = ok(bus, "poweroff", "--timeout=20", "mc-early")
    assert "did not power off" not in r.stderr
    assert p.wait(10) == 0
    assert (tree / "var" / "po").read_text() == "powered-off\n"


def test_stop_is_poweroff_and_quiet(bus, containers):
    containers.start("mc-stop", "while :; do sleep 0.1; done", setup="trap '' 38")
    r = ok(bus, "stop", "-q", "--timeout=0.5", "mc-stop")
    assert r.stderr == ""
    assert "mc-stop" not in names(bus)


# ------------------------------------------------------------------------------ pause / resume

def test_pause_and_resume(bus, containers):
    containers.start("mc-frz")
    events = machine_cgroups("mc-frz")[0] / "cgroup.events"
    ok(bus, "pause", "mc-frz")
    assert "frozen 1" in events.read_text()
    r = machctl(bus, "shell", "mc-frz", "/bin/true")
    assert r.returncode == 1 and "paused" in r.stderr
    ok(bus, "resume", "mc-frz")
    assert "frozen 0" in events.read_text()
    assert ok(bus, "shell", "mc-frz", "/bin/echo", "alive").stdout == "alive\n"


# ----------------------------------------------------------------------------------------- wait

def test_wait(bus, containers):
    w = subprocess.Popen([str(MACHCTL), "wait", "--timeout=20", "mc-late"], env=bus.env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    assert w.poll() is None
    containers.start("mc-late")
    assert w.wait(20) == 0, w.stderr.read()
    r = machctl(bus, "wait", "--timeout=0.3", "mc-never")
    assert r.returncode == 1 and "Timed out" in r.stderr and "mc-never" in r.stderr


def test_wait_for_ready(bus, machd, leaders):
    from conftest import DEST, MANAGER, create
    r = machctl(bus, "wait", "--timeout=5", "bad/name")
    assert r.returncode == 1 and r.stderr == "Invalid machine name: bad/name\n", r.stderr
    # Registered by a client that never reports readiness (as systemd-nspawn): never ready.
    p = leaders.spawn()
    create(bus, "mc-nr", p.pid)
    r = machctl(bus, "wait", "--timeout=0.5", "mc-nr")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "Timed out after 500ms waiting for machine mc-nr: it runs, but never reported READY=1" in r.stderr
    # The report comes later (we are the leader's parent, as spawn is): a waiter returns.
    w = subprocess.Popen([str(MACHCTL), "wait", "mc-nr"], env=bus.env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    bus.busctl("call", DEST, MANAGER, "io.machkit.Manager1", "SetMachineReady", "s", "mc-nr")
    assert w.wait(20) == 0, w.stderr.read()
    ok(bus, "wait", "--timeout=1", "mc-nr", user=65534)  # reading readiness needs no privilege


def test_wait_for_booted_busybox(bus, machd, tmp_path):
    # spawn -b on busybox init: ready at the start, unless --notify-ready=yes promises a READY=1
    # that busybox never sends.
    procs = []
    try:
        for name, extra in (("mc-bb", []), ("mc-bbn", ["--notify-ready=yes"])):
            busybox_bootable(tmp_path / name)
            p = subprocess.Popen([str(SPAWN), "-q", "-b", *extra, "-D", str(tmp_path / name), "-M", name],
                                 env=bus.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 stdin=subprocess.DEVNULL)
            procs.append(p)
            assert p.stdout.readline().strip() == "booted", p.stderr.read()
        ok(bus, "wait", "--timeout=20", "mc-bb")
        assert "mc-bbn" in names(bus)
        r = machctl(bus, "wait", "--timeout=1", "mc-bbn")
        assert r.returncode == 1 and "mc-bbn: it runs, but never reported READY=1" in r.stderr, r.stderr
    finally:
        for p in procs:
            p.kill()
            p.wait()


# ---------------------------------------------------------------------------------- bind, copy

def test_bind(bus, containers, tmp_path):
    containers.start("mc-bind")
    src = tmp_path / "shared"
    src.mkdir()
    (src / "file").write_text("from host\n")
    ok(bus, "bind", "--mkdir", "--read-only", "mc-bind", src, "/mnt/shared")
    assert ok(bus, "shell", "mc-bind", "/bin/cat", "/mnt/shared/file").stdout == "from host\n"
    r = machctl(bus, "shell", "mc-bind", "/bin/sh", "-c", "echo x > /mnt/shared/new")
    assert r.returncode != 0, "read-only bind mount is writable"


def test_copy_to_and_from(bus, containers, tmp_path):
    containers.start("mc-copy")
    f = tmp_path / "f"
    f.write_text("payload\n")
    ok(bus, "copy-to", "mc-copy", f, "/tmp/f")
    assert ok(bus, "shell", "mc-copy", "/bin/cat", "/tmp/f").stdout == "payload\n"
    back = tmp_path / "back"
    ok(bus, "copy-from", "mc-copy", "/tmp/f", back)
    assert back.read_text() == "payload\n"
    r = machctl(bus, "copy-from", "mc-copy", "/nonexistent", tmp_path / "x")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


# -------------------------------------------------------------------------------------- images

def test_image_verbs_against_machd(bus, machd, tmp_path):
    pool = tmp_path / "pool"
    r = machctl(bus, "list-images")
    assert r.returncode == 0 and "No images" in r.stdout + r.stderr
    (pool / "img" / "etc").mkdir(parents=True)
    (pool / "img" / "etc" / "os-release").write_text("ID=testos\n")
    r = ok(bus, "list-images")
    assert "img" in r.stdout and "directory" in r.stdout
    r = ok(bus, "image-status", "img")
    assert str(pool / "img") in r.stdout
    ok(bus, "clone", "img", "img2")
    assert (pool / "img2" / "etc" / "os-release").read_text() == "ID=testos\n"
    ok(bus, "remove", "img2")
    assert not (pool / "img2").exists()
    for args in [["image-status", "x"], ["remove", "x"], ["set-limit", "img", "1G"]]:
        r = machctl(bus, *args)
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert r.stdout == ""


# --------------------------------------------------------------------------------------- errors

def test_unknown_machine(bus, machd):
    for verb in ("status", "show", "terminate", "kill", "poweroff", "reboot", "pause", "resume"):
        r = machctl(bus, verb, "nope")
        assert r.returncode == 1, verb
        assert r.stderr.strip().endswith("No machine 'nope' known"), (verb, r.stderr)
    r = machctl(bus, "shell", "nope", "/bin/true")
    assert r.returncode == 1 and "No machine 'nope' known" in r.stderr


def test_non_root(bus, containers):
    containers.start("mc-nr")
    assert "mc-nr" in ok(bus, "list", user=65534).stdout
    assert "Name=mc-nr" in ok(bus, "show", "mc-nr", user=65534).stdout
    for args in (["terminate", "mc-nr"], ["kill", "mc-nr"], ["shell", "mc-nr", "/bin/true"], ["pause", "mc-nr"]):
        r = machctl(bus, *args, user=65534)
        assert r.returncode == 1, args
        assert "denied" in r.stderr.lower() and "root" in r.stderr, r.stderr
    assert "mc-nr" in names(bus)


def test_no_machd(bus):
    r = machctl(bus, "list")
    assert r.returncode == 1
    assert r.stderr.strip() == "machd is not running: start it with 'machd' (or systemctl start machd)."
    r = machctl(bus, "list", env={"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent/bus"})
    assert r.returncode == 1 and "system bus" in r.stderr


def test_usage_errors(bus):
    for args in (["frobnicate"], ["status"], ["list", "--bogus"], ["-o", "yaml", "list"], ["bind", "x"],
                 ["kill", "-s", "SIGNOPE", "x"], ["--kill-whom=everyone", "kill", "x"], ["--timeout=soon", "wait", "x"],
                 ["read-only", "x", "maybe"], ["set-limit", "lots"], ["--max-addresses=some", "list"],
                 ["--verify=bogus", "pull-tar", "http://127.0.0.1/x.tar"], ["--format=rar", "export-tar", "x"],
                 ["-E", "=x", "shell"], ["list", "-o"], ["--help=x"], ["list", "extra"]):
        r = machctl(bus, *args)
        assert r.returncode == 1, (args, r.stderr)  # as machinectl
        assert r.stderr.startswith("machctl: "), r.stderr


def test_help_version_completion(bus):
    h = ok(bus, "--help").stdout
    for verb in ("list", "shell", "pause", "wait", "list-images", "--kill-whom", "--output"):
        assert verb in h
    assert ok(bus, "--version").stdout.startswith("machctl ")
    comp = BUILD / "shell-completion" / "machctl"
    assert comp.exists()
    subprocess.run(["bash", "-n", str(comp)], check=True)
    # The completion offers the verbs of the table.
    r = subprocess.run(["bash", "-c", 'source "$1"; COMP_WORDS=(machctl pa); COMP_CWORD=1; _machctl; echo "${COMPREPLY[@]}"',
                        "bash", str(comp)], capture_output=True, text=True)
    assert r.stdout.split() == ["pause"], r.stderr


# ------------------------------------------------------------------------- enable / disable / start

def test_enable_disable(bus, machd, tmp_path):
    env = {"MACHCTL_ROOT": str(tmp_path)}
    # As machinectl: enabling a machine without an image is refused, and nothing is written.
    r = machctl(bus, "enable", "deb", env=env)
    assert r.returncode == 1 and "No image 'deb' known" in r.stderr, r.stderr
    assert not (tmp_path / "etc").exists()
    (machd.pool / "deb").mkdir(parents=True)
    ok(bus, "enable", "deb", env=env)
    link = tmp_path / "etc/systemd/system/machines.target.wants/spawn@deb.service"
    assert link.is_symlink() and os.readlink(link).endswith("/spawn@.service")
    assert (tmp_path / "etc/systemd/system/multi-user.target.wants/machines.target").is_symlink()
    ok(bus, "disable", "deb", env=env)
    assert not link.exists() and not link.is_symlink()
    assert machctl(bus, "enable", "../x", env=env).returncode == 1


def test_enable_now_and_disable_now(bus, pool_machd, tmp_path):
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("host runs systemd")
    busybox_bootable(pool_machd.pool / "bbnow")
    env = {"MACHCTL_ROOT": str(tmp_path / "root")}
    ok(bus, "enable", "--now", "--timeout=20", "bbnow", env=env)
    assert "bbnow" in names(bus)
    ok(bus, "disable", "--now", "-s", "SIGUSR2", "--timeout=20", "bbnow", env=env)
    assert "bbnow" not in names(bus)
    ok(bus, "disable", "--now", "bbnow", env=env)  # not running: nothing to stop


FAKE_SYSTEMD = BUILD / "tests" / "bus" / "fake-systemd1"


def test_enable_disable_through_systemd(bus, machd, tmp_path):
    """Where systemd runs, enable/disable go through its EnableUnitFiles/DisableUnitFiles and Reload
    (as machinectl), against a stand-in for PID 1 on the private bus; machctl writes no links."""
    log = tmp_path / "systemd1.log"
    fake = subprocess.Popen([str(FAKE_SYSTEMD), "--log=%s" % log], env=bus.env(), stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout.readline().strip() == "ready"
        (machd.pool / "sdimg").mkdir(parents=True)

        def booted(*args):
            # /run/systemd/system makes machctl believe systemd is PID 1: only in a private namespace.
            sh = 'mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && exec "$@"'
            return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", sh, "sh", str(MACHCTL),
                                   *args], env=bus.env(), capture_output=True, text=True, timeout=60)
        r = booted("enable", "sdimg")
        assert r.returncode == 0, r.stderr
        assert ("Created symlink /etc/systemd/system/machines.target.wants/spawn@sdimg.service → "
                "/lib/systemd/system/spawn@.service.") in r.stderr
        calls = log.read_text().splitlines()
        assert calls == ["EnableUnitFiles machines.target spawn@sdimg.service runtime=0 force=0", "Reload"]
        r = booted("enable", "nosuchimg")
        assert r.returncode == 1 and "No image 'nosuchimg' known" in r.stderr
        assert len(log.read_text().splitlines()) == 2  # nothing asked of systemd
        r = booted("disable", "sdimg")
        assert r.returncode == 0, r.stderr
        assert 'Removed "/etc/systemd/system/machines.target.wants/spawn@sdimg.service".' in r.stderr
        assert log.read_text().splitlines()[2:] == ["DisableUnitFiles spawn@sdimg.service runtime=0", "Reload"]
    finally:
        fake.terminate()
        fake.wait()


def test_start_boots_from_the_pool(bus, tmp_path, leaders):
    """StartMachine boots from machd's --pool (where import/pull/clone put images) when no
    --machines-dir is given."""
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("host runs systemd: start goes to spawn@.service")
    from conftest import Machd, cleanup_machine_cgroups
    pool = tmp_path / "onlypool"
    pool.mkdir()
    d = Machd(bus, tmp_path / "machines", pool=pool,
              extra_args=["--spawn-path=%s" % SPAWN, "--log-dir=%s" % (tmp_path / "logs")]).start()
    try:
        busybox_bootable(pool / "bbpool")
        r = ok(bus, "start", "--timeout=20", "bbpool")
        assert "Started machine bbpool" in r.stderr
        assert ok(bus, "show", "-p", "RootDirectory", "--value", "bbpool").stdout.strip() == str(pool / "bbpool")
        ok(bus, "poweroff", "-s", "SIGUSR2", "--timeout=20", "bbpool")
    finally:
        d.stop()
        cleanup_machine_cgroups(["bbpool"])


def test_restart_is_reboot(bus, containers, tree):
    containers.start("mc-rs", "while :; do sleep 0.1; done", setup="trap 'echo int > /var/int' INT")
    ok(bus, "restart", "mc-rs")
    assert wait_for(lambda: (tree / "var" / "int").exists(), 10)


@pytest.fixture
def pool_machd(bus, tmp_path, leaders):
    """machd that boots machines from tmp_path/pool with the built spawn (StartMachine)."""
    from conftest import Machd, cleanup_machine_cgroups
    pool = tmp_path / "pool"
    pool.mkdir()
    d = Machd(bus, tmp_path / "machines", extra_args=["--spawn-path=%s" % SPAWN, "--machines-dir=%s" % pool,
                                                      "--log-dir=%s" % (tmp_path / "logs")])
    d.start()
    d.pool = pool
    d.logs = tmp_path / "logs"
    yield d
    d.stop()
    state = tmp_path / "machines"
    names = [f.name for f in state.iterdir() if not f.name.startswith((".", "unit:"))] if state.exists() else []
    for n in names:  # spawn processes are not our children: end them through their scopes
        cleanup_machine_cgroups([n])


def busybox_bootable(dst):
    subprocess.run([str(HELPERS / "busybox-tree.sh"), str(dst)], check=True)
    (dst / "sbin" / "init").unlink(missing_ok=True)
    (dst / "sbin" / "init").symlink_to("/bin/busybox")
    (dst / "etc" / "inittab").write_text("::sysinit:/bin/echo booted\n::respawn:/bin/sleep 1000\n")


def test_start_without_systemd_through_machd(bus, pool_machd):
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("host runs systemd: start goes to spawn@.service")
    busybox_bootable(pool_machd.pool / "bbstart")
    r = ok(bus, "start", "--timeout=20", "bbstart")
    assert "Started machine bbstart" in r.stderr
    # busybox init never sends READY=1: spawn reports it ready once it has started.
    ok(bus, "wait", "--timeout=20", "bbstart")
    m = json.loads(ok(bus, "list", "-o", "json").stdout)
    assert [x["machine"] for x in m] == ["bbstart"]
    assert ok(bus, "shell", "bbstart", "/bin/cat", "/etc/inittab").stdout.startswith("::sysinit")
    # Machines machd starts run in a user namespace (T-14).
    leader = int(ok(bus, "show", "-p", "Leader", "--value", "bbstart").stdout)
    inside, outside, count = (int(x) for x in pathlib.Path(f"/proc/{leader}/uid_map").read_text().split()[:3])
    assert inside == 0 and outside >= 0x80000 and count == 65536
    # Starting it twice is refused by machd.
    r = machctl(bus, "start", "bbstart")
    assert r.returncode == 1 and "already exists" in r.stderr
    # busybox init powers off on SIGUSR2 (poweroff -s), spawn exits, the machine goes.
    ok(bus, "poweroff", "-s", "SIGUSR2", "--timeout=20", "bbstart")
    assert "bbstart" not in names(bus)
    assert (pool_machd.logs / "bbstart.log").exists()


def test_start_errors(bus, pool_machd):
    r = machctl(bus, "start", "missing")
    assert r.returncode == 1 and "No image directory" in r.stderr, r.stderr
    (pool_machd.pool / "broken").mkdir()  # no init inside: spawn fails
    r = machctl(bus, "start", "--timeout=20", "broken")
    assert r.returncode == 1 and "failed to start; spawn exited" in r.stderr, r.stderr
    r = machctl(bus, "start", "bad/name")
    assert r.returncode == 1
    r = machctl(bus, "start", "x", user=65534)
    assert r.returncode == 1 and "denied" in r.stderr.lower()


def test_entering_helpers_leak_no_host_fds(bus, containers):
    # T-03: while machctl shell enters the machine, root inside lists every fd of every process it
    # can see; no host path may show up among them.
    census = ("end=$(( $(date +%s) + 3 )); while [ $(date +%s) -lt $end ]; do "
              "for p in /proc/[0-9]*; do ls -l $p/fd/ 2>/dev/null; done; done > /tmp/census; echo done > /tmp/census.done")
    containers.start("mc-census", script="exec sleep 1000", setup=f"({census}) & true")
    leader = int(ok(bus, "show", "-p", "Leader", "--value", "mc-census").stdout)
    for _ in range(10):
        ok(bus, "shell", "mc-census", "/bin/true")
    root = pathlib.Path(f"/proc/{leader}/root")
    assert wait_for(lambda: (root / "tmp" / "census.done").exists(), timeout=15)
    targets = [l.split(" -> ", 1)[1] for l in (root / "tmp" / "census").read_text().splitlines() if " -> " in l]
    assert targets, "the census saw fds"
    host_like = [t for t in targets if t.startswith(("/work", "/var/cache", "/home/", "/usr/lib/x86_64-linux-gnu"))
                 or "pytest" in t or "mk-bus" in t]
    assert host_like == [], sorted(set(host_like))[:10]


def run_on_terminal(bus, args, columns=80, env=None):
    """machctl with stdout (and stderr) on a pty of `columns` columns; its output as text."""
    import fcntl
    import struct
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    e = bus.env()
    e.pop("COLUMNS", None)
    e["TERM"] = "xterm"
    e["LANG"] = "C.UTF-8"
    e.update(env or {})
    p = subprocess.Popen([str(MACHCTL), *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=e)
    os.close(slave)
    out = b""
    while True:
        try:
            r, _, _ = select.select([master], [], [], 30)
            if not r:
                break
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
    p.wait(30)
    os.close(master)
    return out.decode(errors="replace").replace("\r\n", "\n")


def test_tables_on_a_terminal_fit_and_page(bus, machd, leaders, tmp_path):
    """On a terminal: libsmartcols fits the table to the width (a 49-character name is ellipsized
    instead of wrapping every row), the header is underlined, and the output goes through the pager
    ($SYSTEMD_PAGER, with LESS=FRSXMK) unless --no-pager. Piped output stays machinectl's."""
    from conftest import create
    long = "a-very-long-machine-name-that-goes-on-and-on-4949"
    assert len(long) == 49
    p = leaders.spawn()
    create(bus, long, p.pid)
    out = run_on_terminal(bus, ["list", "--no-pager", "--max-addresses=0"], columns=50)
    lines = [l for l in out.splitlines() if l.strip()]
    visible = [re.sub(r"\x1b\[[0-9;]*m", "", l) for l in lines]
    assert all(len(l) <= 50 for l in visible), visible
    row = next(l for l in visible if l.startswith("a-very"))
    assert "…" in row and "container" in row, visible
    assert "\x1b[4m" in lines[0], lines[0]  # underlined header
    plain = run_on_terminal(bus, ["list", "--no-pager", "--max-addresses=0"], columns=50, env={"NO_COLOR": "1", "LANG": "C"})
    assert "\x1b[" not in plain and "a-very-long-ma... container" in plain, plain  # no UTF-8: "..."
    # Piped: the whole name, as machinectl.
    assert long in ok(bus, "list").stdout
    # The pager: SYSTEMD_PAGER wins over PAGER, sees LESS=FRSXMK and gets the table.
    seen = tmp_path / "paged"
    pager = "sh -c 'echo LESS=$LESS > %s; cat >> %s'" % (seen, seen)
    run_on_terminal(bus, ["list"], env={"SYSTEMD_PAGER": pager, "PAGER": "false"})
    text = seen.read_text()
    assert text.startswith("LESS=FRSXMK\n") and "MACHINE" in text and "machines listed." in text, text
    seen.unlink()
    run_on_terminal(bus, ["list", "--no-pager"], env={"SYSTEMD_PAGER": pager})
    assert not seen.exists()
    r = machctl(bus, "list", env={"SYSTEMD_PAGER": pager})  # not a terminal: no pager
    assert r.returncode == 0 and not seen.exists()
