#!/usr/bin/python3
"""Side-by-side: a non-root caller's polkit-checked calls to machd and to systemd-machined 252, each
on a private bus with its own polkitd (tests/bus/test_polkit.py's set-up: a test user granted
org.freedesktop.machine1.manage-machines only). N calls each of KillMachine(m, "leader", SIGCONT)
(authorized) and OpenMachineShell(m) (denied by polkit) from one python-dbus client running as that
user; p50 and mean latency, and the ratio (>1 = machd faster). Root only; removes the test user,
its processes and cgroups.

    MK_BUILD_DIR=build /usr/bin/python3 bench/polkit_vs_machined.py [N]
"""
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "bus"))
sys.path.insert(0, str(HERE))
import conftest  # noqa: E402
from machd_vs_machined import SLICE, leaders  # noqa: E402
from test_polkit import POLKIT_BUS_POLICY, ROOT, Polkitd  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200

CLIENT = r"""
import sys, time, dbus
addr, n = sys.argv[1], int(sys.argv[2])
c = dbus.bus.BusConnection(addr)
def timed(method, args):
    out, last = [], ""
    for _ in range(n):
        t = time.perf_counter()
        try:
            c.call_blocking("org.freedesktop.machine1", "/org/freedesktop/machine1",
                            "org.freedesktop.machine1.Manager", method, None, args, timeout=60)
            last = "ok"
        except dbus.exceptions.DBusException as e:
            last = e.get_dbus_name()
        out.append((time.perf_counter() - t) * 1e6)
    out.sort()
    print("%s p50_us=%.0f mean_us=%.0f reply=%s" % (method, out[len(out) // 2], sum(out) / len(out), last))
timed("KillMachine", [dbus.String("pkb"), dbus.String("leader"), dbus.Int32(18)])
timed("OpenMachineShell", [dbus.String("pkb"), dbus.String(""), dbus.String("/bin/true"),
                           dbus.Array([], signature="s"), dbus.Array([], signature="s")])
"""


def measure(bus, uid):
    r = subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups", "/usr/bin/python3", "-c",
                        CLIENT, bus.address, str(N)], capture_output=True, text=True, timeout=3600, check=True)
    return {l.split()[0]: {f.split("=")[0]: f.split("=")[1] for f in l.split()[1:]} for l in r.stdout.splitlines()}


def main():
    user = "mkpkb%s" % uuid.uuid4().hex[:6]
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", user],
                   check=True, capture_output=True)
    uid = int(subprocess.run(["id", "-u", user], check=True, capture_output=True, text=True).stdout)
    procs = leaders(1)
    results = {}
    stack = contextlib.ExitStack()
    actions = [ROOT / "policy" / "io.machkit.machine1.policy"]
    try:
        for name in ("machd", "systemd-machined 252"):
            bus = conftest.Bus(extra_includes=[POLKIT_BUS_POLICY])
            stack.callback(bus.close)
            pk = Polkitd(bus, user, actions)
            stack.callback(pk.stop)
            if name == "machd":
                state = Path(tempfile.mkdtemp(prefix="mk-bench-", dir="/dev/shm"))
                stack.callback(shutil.rmtree, state, True)
                d = conftest.Machd(bus, state / "machines").start()
                stack.callback(d.stop)
            else:
                m = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                      "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && "
                                      "exec /lib/systemd/systemd-machined"], env=bus.env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                stack.callback(lambda m=m: (m.terminate(), m.wait()))
                assert conftest.wait_for(lambda: bus.busctl("status", conftest.DEST, check=False).returncode == 0, 10)
            bus.call("RegisterMachine", "sayssus", "pkb", 0, "bench", "container", procs[0].pid, "")
            results[name] = measure(bus, uid)
            stack.close()
    finally:
        stack.close()
        for p in procs:
            p.kill()
            p.wait()
        conftest.remove_cgroup(SLICE)
        conftest.cleanup_machine_cgroups(["pkb"])
        subprocess.run(["userdel", user], capture_output=True)
        if subprocess.run(["getent", "group", user], capture_output=True).returncode == 0:
            subprocess.run(["groupdel", user], capture_output=True)
    for name, r in results.items():
        print("== %s (N=%d, non-root caller, polkitd 122)" % (name, N))
        for method, f in r.items():
            print("  %-17s p50=%6s us  mean=%6s us  reply=%s" % (method, f["p50_us"], f["mean_us"], f["reply"]))
    if len(results) == 2:
        ours, theirs = results["machd"], results["systemd-machined 252"]
        print("== machd vs systemd-machined 252 (>1 = machd faster)")
        for method in ours:
            print("  %-17s p50 %.2fx  mean %.2fx" % (method, float(theirs[method]["p50_us"]) / float(ours[method]["p50_us"]),
                                                      float(theirs[method]["mean_us"]) / float(ours[method]["mean_us"])))


if __name__ == "__main__":
    main()
