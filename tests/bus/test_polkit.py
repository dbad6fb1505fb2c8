"""polkit in machd (docs/machd.md, "Polkit"): a real polkitd (Debian's, 122) on the private bus, reading
only this project's .policy files and a .rules file made here that grants one test user
org.freedesktop.machine1.manage-machines and nothing else.

polkitd runs in a private mount namespace where /usr/share/polkit-1/actions, /etc/polkit-1/rules.d and
/usr/share/polkit-1/rules.d are bind mounts of temp dirs: the host's polkit configuration is never
touched. It starts as root and switches to the polkitd user itself, as under polkit.service.
The test user is created here and removed afterwards.

MK_ASAN_BUILD_DIR (a build dir with machd built with -Db_sanitize=address,undefined) runs the
disconnect test against that machd and fails on any sanitizer report, leaks included.
"""
import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

import conftest
from conftest import DEST, IFACE, MANAGER, Bus, create, machine_path, wait_for

HELPERS = Path(__file__).resolve().parent / "helpers"
PK_CALL = HELPERS / "pk_call.py"
POLKITD = Path("/usr/lib/polkit-1/polkitd")
POLKIT_BUS_POLICY = Path("/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf")
SYSTEMD_MACHINE1_POLICY = Path("/usr/share/polkit-1/actions/org.freedesktop.machine1.policy")
ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534
IMPORT = ("org.freedesktop.import1", "/org/freedesktop/import1", "org.freedesktop.import1.Manager")
MACHINE_IFACE = "org.freedesktop.machine1.Machine"
IMAGE_IFACE = "org.freedesktop.machine1.Image"
DENIED = ("org.freedesktop.DBus.Error.AccessDenied", "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired")

RULES = """// Made by tests/bus/test_polkit.py: %(user)s may manage machines, and nothing else.
polkit.addRule(function(action, subject) {
    polkit.log("mk-check " + action.id + " user=" + subject.user +
               " machine=" + action.lookup("machine") + " verb=" + action.lookup("verb") +
               " image=" + action.lookup("image"));
    if (subject.user == "%(user)s" && action.id == "org.freedesktop.machine1.manage-machines")
        return polkit.Result.YES;
});
"""


@pytest.fixture(autouse=True)
def asan_machd(monkeypatch):
    d = os.environ.get("MK_ASAN_BUILD_DIR")
    if d:
        monkeypatch.setattr(conftest, "MACHD", Path(d).resolve() / "src" / "machd" / "machd")


@pytest.fixture(scope="module")
def test_user():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    name = "mkpk%s" % uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
                   check=True, capture_output=True)
    try:
        uid = int(subprocess.run(["id", "-u", name], check=True, capture_output=True, text=True).stdout)
        yield name, uid
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        if subprocess.run(["getent", "group", name], capture_output=True).returncode == 0:
            subprocess.run(["groupdel", name], capture_output=True)


class Polkitd:
    def __init__(self, bus, user, actions):
        self.dir = bus.tmp / "polkit"
        for sub in ("actions", "rules", "empty"):
            (self.dir / sub).mkdir(parents=True)
            os.chmod(self.dir / sub, 0o755)
        os.chmod(self.dir, 0o755)
        for f in actions:
            (self.dir / "actions" / f.name).write_bytes(f.read_bytes())
        (self.dir / "rules" / "50-machkit-test.rules").write_text(RULES % {"user": user})
        self.log = self.dir / "polkitd.log"
        script = ("mount --make-rprivate / && "
                  "mount --bind {d}/actions /usr/share/polkit-1/actions && "
                  "mount --bind {d}/rules /etc/polkit-1/rules.d && "
                  "mount --bind {d}/empty /usr/share/polkit-1/rules.d && "
                  "exec {polkitd}").format(d=self.dir, polkitd=POLKITD)
        with open(self.log, "wb") as logf:
            # unshare and sh exec: this pid is polkitd's.
            self.proc = subprocess.Popen(["unshare", "--mount", "sh", "-c", script], env=bus.env(), stdout=logf,
                                         stderr=subprocess.STDOUT)
        if not wait_for(lambda: bus.busctl("status", "org.freedesktop.PolicyKit1", check=False).returncode == 0
                        or self.proc.poll() is not None, timeout=30):
            raise AssertionError("polkitd did not start: %s" % self.log.read_text())
        assert self.proc.poll() is None, self.log.read_text()

    def checks(self):
        """polkitd's rule log: one "mk-check ACTION user=U machine=M verb=V image=I" line per check."""
        return [l[l.index("mk-check "):] for l in self.log.read_text().splitlines() if "mk-check " in l]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def bus(test_user):
    """conftest's bus, plus polkitd's bus policy and a running polkitd; conftest's machd uses it.
    Both policy files declaring machine1's action IDs are installed (machkit's and systemd-container's,
    when present), as on a host with both packages."""
    if not POLKITD.exists():
        pytest.skip("polkitd not installed (Debian package polkitd)")
    if not conftest.MACHD.exists():
        pytest.skip("machd not built")
    b = Bus(extra_includes=[POLKIT_BUS_POLICY])
    actions = [ROOT / "policy" / "io.machkit.machine1.policy", ROOT / "policy" / "io.machkit.import1.policy"]
    if SYSTEMD_MACHINE1_POLICY.exists():
        actions.append(SYSTEMD_MACHINE1_POLICY)
    pk = Polkitd(b, test_user[0], actions)
    b.polkitd = pk
    yield b
    pk.stop()
    b.close()


@pytest.fixture
def scene(bus, machd, leaders, tmp_path):
    """A registered machine "pkweb" (a sleeping leader) and a directory image "pkimg" in machd's pool."""
    leader = leaders.spawn()
    create(bus, "pkweb", leader.pid)
    img = machd.pool / "pkimg"
    (img / "etc").mkdir(parents=True)
    (img / "etc" / "os-release").write_text("ID=pktest\n")
    return leader, img


def call_as(bus, uid, dest, path, iface, method, *args):
    """("ok" | error name, message) of one call made by `uid` through python-dbus."""
    r = subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups", "/usr/bin/python3",
                        str(PK_CALL), bus.address, "call", dest, path, iface, method, json.dumps(list(args))],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip()
    return (out, "") if out == "ok" else tuple(out.split(" ", 1))


def machine_call(bus, uid, method, *args):
    return call_as(bus, uid, DEST, MANAGER, IFACE, method, *args)


def outcome(result):
    """What polkit decided, as seen by the caller: "denied" or "authorized" (the method ran; it may
    still have failed for its own reasons, e.g. NotSupported)."""
    return "denied" if result[0] in DENIED else "authorized"


# action, the call made as the test user, expected outcome (the rule grants manage-machines only)
def per_action_calls(leader_pid):
    return [
        ("org.freedesktop.machine1.manage-machines", "KillMachine(pkweb, leader, SIGCONT)",
         ("KillMachine", ["s", "pkweb"], ["s", "leader"], ["i", int(signal.SIGCONT)]), "authorized"),
        ("org.freedesktop.machine1.manage-machines", "SetPoolLimit",
         ("SetPoolLimit", ), "authorized"),
        ("org.freedesktop.machine1.shell", "OpenMachineShell(pkweb)",
         ("OpenMachineShell", ["s", "pkweb"], ["s", ""], ["s", ""], ["as", []], ["as", []]), "denied"),
        ("org.freedesktop.machine1.host-shell", "OpenMachineShell(.host)",
         ("OpenMachineShell", ["s", ".host"], ["s", ""], ["s", ""], ["as", []], ["as", []]), "denied"),
        ("org.freedesktop.machine1.login", "OpenMachineLogin(pkweb)", ("OpenMachineLogin", ["s", "pkweb"]), "denied"),
        ("org.freedesktop.machine1.host-login", "OpenMachineLogin(.host)", ("OpenMachineLogin", ["s", ".host"]), "denied"),
        ("org.freedesktop.machine1.open-pty", "OpenMachinePTY(pkweb)", ("OpenMachinePTY", ["s", "pkweb"]), "denied"),
        ("org.freedesktop.machine1.host-open-pty", "OpenMachinePTY(.host)", ("OpenMachinePTY", ["s", ".host"]), "denied"),
        ("org.freedesktop.machine1.manage-images", "RemoveImage(pkimg)", ("RemoveImage", ["s", "pkimg"]), "denied"),
        ("org.freedesktop.machine1.manage-images", "MarkImageReadOnly(pkimg)",
         ("MarkImageReadOnly", ["s", "pkimg"], ["b", True]), "denied"),
    ]


IMPORT_CALLS = [
    ("org.freedesktop.import1.import", "ImportTar", ("ImportTar", ["h", "/dev/null"], ["s", "pknew"], ["b", False],
                                                      ["b", False]), "denied"),
    ("org.freedesktop.import1.export", "ExportTar", ("ExportTar", ["s", "pkimg"], ["h", "/dev/null"], ["s", ""]),
     "denied"),
    ("org.freedesktop.import1.pull", "PullTar", ("PullTar", ["s", "http://127.0.0.1:1/x.tar"], ["s", "pkpull"],
                                                  ["s", "no"], ["b", False]), "denied"),
    ("org.freedesktop.import1.pull", "CancelTransfer", ("CancelTransfer", ["u", 1]), "denied"),
]


def test_outcome_per_action(bus, machd, scene, test_user):
    leader, img = scene
    _, uid = test_user
    table = []
    for action, label, (method, *args), expected in per_action_calls(leader.pid):
        if method == "SetPoolLimit":
            result = machine_call_t(bus, uid, method, 1 << 40)
        else:
            result = machine_call(bus, uid, method, *args)
        table.append((action, label, outcome(result), result[0]))
    for action, label, (method, *args), expected in IMPORT_CALLS:
        result = call_as(bus, uid, *IMPORT, method, *args)
        table.append((action, label, outcome(result), result[0]))
    expected = {(a, l): e for a, l, _, e in per_action_calls(leader.pid)} | {(a, l): e for a, l, _, e in IMPORT_CALLS}
    print("\naction | call | outcome | reply")
    for row in table:
        print(" | ".join(row))
    assert {(a, l): o for a, l, o, _ in table} == expected
    # Nothing that was denied ran: the machine and its leader are there, the image unchanged, no
    # transfer started.
    assert leader.poll() is None
    assert [m[0] for m in bus.call_json("ListMachines")[0]] == [".host", "pkweb"]
    assert img.is_dir() and os.access(img, os.W_OK)
    assert bus.get_property(bus.call_json("GetImage", "s", "pkimg")[0], IMAGE_IFACE, "ReadOnly") is False
    assert bus.busctl("--json=short", "call", *IMPORT, "ListTransfers").stdout.count("pknew") == 0
    assert not (machd.pool / "pknew").exists() and not (machd.pool / "pkpull").exists()
    # polkit was asked with machined's details.
    checks = bus.polkitd.checks()
    assert "mk-check org.freedesktop.machine1.shell user=%s machine=pkweb verb=shell image=undefined" % test_user[0] \
        in checks, checks
    assert "mk-check org.freedesktop.machine1.manage-images user=%s machine=undefined verb=remove image=pkimg" % \
        test_user[0] in checks, checks


def machine_call_t(bus, uid, method, value):
    """A Manager method taking one uint64 (python-dbus: dbus.UInt64)."""
    code = ("import dbus,sys; c=dbus.bus.BusConnection(sys.argv[1]);\n"
            "try:\n c.call_blocking('%s','%s','%s','%s','t',[dbus.UInt64(%d)]); print('ok')\n"
            "except dbus.exceptions.DBusException as e: print(e.get_dbus_name(), e.get_dbus_message())"
            % (DEST, MANAGER, IFACE, method, value))
    r = subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups", "/usr/bin/python3",
                        "-c", code, bus.address], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip()
    return (out, "") if out == "ok" else tuple(out.split(" ", 1))


def test_user_can_terminate_but_not_enter(bus, machd, scene, test_user):
    leader, _ = scene
    user, uid = test_user
    # Entering: refused, through the Manager and through the Machine object.
    assert machine_call(bus, uid, "OpenMachineShell", ["s", "pkweb"], ["s", ""], ["s", "/bin/true"], ["as", []],
                        ["as", []])[0] in DENIED
    assert call_as(bus, uid, DEST, machine_path("pkweb"), MACHINE_IFACE, "OpenLogin")[0] in DENIED
    assert leader.poll() is None
    # A user without the rule may not terminate either (polkit's default: auth_admin).
    assert machine_call(bus, NOBODY, "TerminateMachine", ["s", "pkweb"])[0] in DENIED
    assert leader.poll() is None
    # machinectl's way: busctl sets ALLOW_INTERACTIVE_AUTHORIZATION; with no agent polkit still says no.
    r = bus.busctl("call", DEST, MANAGER, IFACE, "OpenMachineLogin", "s", "pkweb", user=uid, check=False)
    assert r.returncode != 0 and "Interactive authentication required" in r.stderr, r.stderr
    # Terminating: allowed by the rule, and it happens.
    assert call_as(bus, uid, DEST, machine_path("pkweb"), MACHINE_IFACE, "Terminate") == ("ok", "")
    assert wait_for(lambda: leader.poll() is not None, timeout=30)
    assert wait_for(lambda: [m[0] for m in bus.call_json("ListMachines")[0]] == [".host"], timeout=30)
    checks = bus.polkitd.checks()
    assert "mk-check org.freedesktop.machine1.manage-machines user=%s machine=pkweb verb=terminate image=undefined" \
        % user in checks, checks


def test_root_never_asks(bus, machd, scene):
    leader, img = scene
    before = len(bus.polkitd.checks())
    bus.call("MarkImageReadOnly", "sb", "pkimg", "false")
    bus.call("KillMachine", "ssi", "pkweb", "leader", int(signal.SIGCONT))
    bus.call("TerminateMachine", "s", "pkweb")
    assert wait_for(lambda: leader.poll() is not None, timeout=30)
    assert len(bus.polkitd.checks()) == before


def test_policy_files_with_the_same_action_ids_coexist(bus):
    """polkitd reads machkit's and systemd-container's files side by side: each action ID is known
    once, with machined 252's defaults (identical in both files)."""
    r = subprocess.run(["pkaction", "--verbose", "--action-id", "org.freedesktop.machine1.shell"], env=bus.env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "implicit any:      auth_admin" in r.stdout and "implicit active:   auth_admin_keep" in r.stdout, r.stdout
    ids = subprocess.run(["pkaction"], env=bus.env(), capture_output=True, text=True, timeout=60).stdout.split()
    ours = [a for a in ids if a.startswith(("org.freedesktop.machine1.", "org.freedesktop.import1."))]
    assert sorted(ours) == sorted(set(ours)) == sorted([
        "org.freedesktop.machine1." + a for a in ("login", "host-login", "shell", "host-shell", "open-pty",
                                                  "host-open-pty", "manage-machines", "manage-images")
    ] + ["org.freedesktop.import1." + a for a in ("import", "export", "pull")])
    assert "Error" not in bus.polkitd.log.read_text()


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_disconnect_during_authorization(bus, machd, scene, test_user, tmp_path):
    """T-37/T-38: 1,000 callers per case send a call and disconnect while polkit decides (or before
    machd read their credentials). Nothing denied runs, machd keeps serving, and it holds no more fds
    than before (no query or message left)."""
    leader, img = scene
    user, uid = test_user
    pid = machd.proc.pid
    base_fds = fd_count(pid)
    n = int(os.environ.get("MK_PK_ITERATIONS", "1000"))
    shell = [["s", "pkweb"], ["s", ""], ["s", "/bin/true"], ["as", []], ["as", []]]
    # "ping-disconnect": the caller pings machd after its call and disconnects once answered, i.e.
    # after machd has asked polkit (T-37); "disconnect": it exits at once, often before machd has
    # even read its credentials (T-38).
    runs = [
        ("ping-disconnect", uid, "OpenMachineShell", shell),
        ("ping-disconnect", uid, "RemoveImage", [["s", "pkimg"]]),
        ("ping-disconnect", NOBODY, "TerminateMachine", [["s", "pkweb"]]),
        ("disconnect", uid, "OpenMachineShell", shell),
        ("disconnect", NOBODY, "TerminateMachine", [["s", "pkweb"]]),
        # Authorized for the test user: exercises the path where the call is queued again after
        # polkit said yes (harmless if it runs).
        ("ping-disconnect", uid, "KillMachine", [["s", "pkweb"], ["s", "leader"], ["i", int(signal.SIGCONT)]]),
    ]
    # Counts machd's CheckAuthorization calls (root may monitor the private bus).
    monitor_log = tmp_path / "monitor.txt"
    with open(monitor_log, "w") as out:
        monitor = subprocess.Popen(["dbus-monitor", "--address", bus.address,
                                    "type='method_call',interface='org.freedesktop.PolicyKit1.Authority'",
                                    # its own NameLost, when it has become a monitor: the readiness line
                                    "type='signal',interface='org.freedesktop.DBus',member='NameLost'"],
                                   stdout=out, stderr=subprocess.STDOUT)
    assert wait_for(lambda: monitor_log.stat().st_size > 0 or monitor.poll() is not None, timeout=30)
    for mode, who, method, args in runs:
        r = subprocess.run(["setpriv", "--reuid=%d" % who, "--regid=%d" % who, "--clear-groups", "/usr/bin/python3",
                            str(PK_CALL), bus.address, mode, str(n), DEST, MANAGER, IFACE, method,
                            json.dumps(args)], capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0 and r.stdout.strip() == str(n), r.stderr
    # Nothing denied ran, and machd answers.
    assert machd.proc.poll() is None
    assert [m[0] for m in bus.call_json("ListMachines")[0]] == [".host", "pkweb"]
    assert leader.poll() is None
    assert img.is_dir()
    cg = [c for c in conftest.machine_cgroups("pkweb") if (c / "cgroup.procs").exists()]
    procs = set()
    for c in cg:
        procs |= set((c / "cgroup.procs").read_text().split())
    assert procs == {str(leader.pid)}, procs  # no shell was started
    # It still serves polkit-authorized calls (polkitd answers in order: the earlier queries are done).
    assert machine_call(bus, uid, "TerminateMachine", ["s", "pkweb"]) == ("ok", "")
    assert wait_for(lambda: leader.poll() is not None, timeout=30)
    # machd asked polkit while callers went away (polkitd then finds the name gone: an error, so a
    # deny); the callers that left at once were mostly denied before asking (credentials gone).
    monitor.terminate()
    monitor.wait()
    asked = monitor_log.read_text().count("member=CheckAuthorization")
    print("\n%s: %d calls, %d CheckAuthorization" % (conftest.MACHD, len(runs) * n, asked))
    assert asked >= 4 * n  # every ping-disconnect call (and the final one) was held for polkit
    # No held call or fd is left behind.
    assert wait_for(lambda: fd_count(pid) <= base_fds, timeout=120), (fd_count(pid), base_fds)
    rc = machd.stop()
    log = machd.log.read_text(errors="replace")
    assert rc == 0, log
    assert "Sanitizer" not in log and "runtime error" not in log, log


def test_without_polkitd_non_root_is_denied(tmp_path, leaders):
    """No polkitd on the bus: a failed lookup is a deny (T-37/T-38), and root is unaffected."""
    b = Bus()
    d = conftest.Machd(b, tmp_path / "machines", pool=tmp_path / "pool")
    d.start()
    try:
        p = leaders.spawn()
        create(b, "pknopk", p.pid)
        r = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups", "dbus-send",
                            "--bus=%s" % b.address, "--print-reply", "--dest=" + DEST, MANAGER,
                            IFACE + ".TerminateMachine", "string:pknopk"], capture_output=True, text=True, timeout=60)
        assert "org.freedesktop.DBus.Error.AccessDenied: Access denied: polkit is not running." in r.stderr, r.stderr
        assert p.poll() is None
        b.call("TerminateMachine", "s", "pknopk")
        assert wait_for(lambda: p.poll() is not None, timeout=30)
    finally:
        d.stop()
        b.close()
        leaders.cleanup()
        conftest.cleanup_machine_cgroups(["pknopk"])
