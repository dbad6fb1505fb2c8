#!/usr/bin/python3
"""Side-by-side: machd and systemd-machined 252 on private buses, N machines registered with
RegisterMachine (each leader a `sleep` in its own *.scope on the cgroup2 hierarchy, which machined
needs), then ListMachines / GetMachine latency from the same in-process client, registrations per
second, and each daemon's RSS. For machd also io.systemd.Machine.List over Varlink (the same
machines, the same client process type), set against ListMachines through dbus-daemon.
Root only; cleans up its processes and cgroups.

    MK_BUILD_DIR=build /usr/bin/python3 bench/machd_vs_machined.py [N]
"""
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "bus"))
import conftest  # noqa: E402  (private bus, cleanup helpers)

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
CLIENT = conftest.BUILD / "bench" / "machine1-bench"
SLICE = conftest.CGROUP_ROOT / "unified" / "mkbench.slice"


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def cpu_usec(pid):
    """utime+stime of `pid`, in µs."""
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) * 1e6 / os.sysconf("SC_CLK_TCK")


def run(bus, *args):
    r = subprocess.run([str(CLIENT)] + [str(a) for a in args], env=bus.env(), capture_output=True, text=True,
                       check=True)
    return r.stdout.strip()


def leaders(n):
    procs = []
    SLICE.mkdir(exist_ok=True)
    for i in range(n):
        p = subprocess.Popen(["sleep", "100000"])
        cg = SLICE / ("l%d.scope" % i)
        cg.mkdir()
        (cg / "cgroup.procs").write_text(str(p.pid))
        procs.append(p)
    return procs


def bench(name, bus, pid, procs, varlink_socket=None):
    out = {"daemon": name}
    out["register"] = run(bus, "register", "m", *[p.pid for p in procs])
    out["ping"] = run(bus, "ping", 2000)
    c0, b0 = cpu_usec(pid), cpu_usec(bus.proc.pid)
    out["list"] = run(bus, "list", 1000)
    # Where a ListMachines call's time goes: the daemon's own CPU, dbus-daemon's (it validates
    # and relays the ~70 KB reply); the rest is the client's parsing and the wake-ups.
    out["list"] += " daemon_cpu_us=%.0f bus_cpu_us=%.0f" % ((cpu_usec(pid) - c0) / 1000, (cpu_usec(bus.proc.pid) - b0) / 1000)
    out["get"] = run(bus, "get", "m%d" % (len(procs) // 2), 2000)
    if varlink_socket:
        c0 = cpu_usec(pid)
        out["varlink_list"] = run(bus, "varlink-list", varlink_socket, 1000)
        out["varlink_list"] += " daemon_cpu_us=%.0f" % ((cpu_usec(pid) - c0) / 1000)
        out["varlink_frames"] = run(bus, "varlink-frames", varlink_socket, 1000)
        r = subprocess.run([str(CLIENT), "varlink-list-rapidjson", str(varlink_socket), "1000"], capture_output=True,
                           text=True)
        if r.returncode == 0:  # 3: the client was built without RapidJSON
            out["varlink_list_rapidjson"] = r.stdout.strip()
    out["rss_kib"] = rss_kib(pid)
    return out


def main():
    procs = leaders(N)
    results = []
    stack = contextlib.ExitStack()  # daemons, buses and state dirs go even when a run fails
    try:
        # machd
        bus = conftest.Bus()
        stack.callback(bus.close)
        # State files on tmpfs, as /run/systemd/machines is (and as machined writes them here).
        state = Path(tempfile.mkdtemp(prefix="mk-bench-", dir="/dev/shm"))
        stack.callback(shutil.rmtree, state, True)
        d = conftest.Machd(bus, state / "machines").start()
        stack.callback(d.stop)
        results.append(bench("machd", bus, d.proc.pid, procs, d.varlink_dir / "io.systemd.Machine"))
        stack.close()
        # machined 252 in a private mount namespace (tmpfs /run/systemd)
        bus = conftest.Bus()
        stack.callback(bus.close)
        m = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                              "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && "
                              "exec /lib/systemd/systemd-machined"], env=bus.env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(lambda: (m.terminate(), m.wait()))
        assert conftest.wait_for(lambda: bus.busctl("status", conftest.DEST, check=False).returncode == 0, 10)
        results.append(bench("systemd-machined 252", bus, m.pid, procs))
    finally:
        stack.close()
        for p in procs:
            p.kill()
            p.wait()
        conftest.remove_cgroup(SLICE)
        conftest.cleanup_machine_cgroups()
    for r in results:
        print("== %s (N=%d)" % (r["daemon"], N))
        for k in ("register", "ping", "list", "get", "varlink_list", "varlink_list_rapidjson", "varlink_frames"):
            if k in r:
                print("  " + r[k].replace("\n", " "))
        print("  rss=%.1f MiB" % (r["rss_kib"] / 1024))
    if len(results) == 2:
        def fields(r, k):
            return {f.split("=")[0]: float(f.split("=")[1]) for f in r[k].split() if "=" in f}
        ours, theirs = results
        ratio = lambda k, f: fields(theirs, k)[f] / fields(ours, k)[f]  # >1: machd better
        print("== machd vs systemd-machined 252 (>1 = machd better)")
        print("  ListMachines p50 %.2fx  daemon CPU per ListMachines %.2fx  GetMachine p50 %.2fx  "
              "registrations/s %.2fx  RSS %.2fx" % (
                  ratio("list", "p50_us"), ratio("list", "daemon_cpu_us"), ratio("get", "p50_us"),
                  1 / ratio("register", "per_second"), theirs["rss_kib"] / ours["rss_kib"]))
        # What no daemon can beat: machd's p50 without machd's own CPU (dbus-daemon, the client, wake-ups).
        floor = fields(ours, "list")["p50_us"] - fields(ours, "list")["daemon_cpu_us"]
        print("  ListMachines bound: a daemon using no CPU would answer in ~%.0f us, %.2fx machined's p50"
              % (floor, fields(theirs, "list")["p50_us"] / floor))
        vl = fields(ours, "varlink_list")["p50_us"]
        print("== Varlink io.systemd.Machine.List (machd) vs D-Bus ListMachines through dbus-daemon, N=%d (>1 = Varlink faster)" % N)
        print("  vs machd's ListMachines p50 %.2fx  vs systemd-machined 252's ListMachines p50 %.2fx" % (
            fields(ours, "list")["p50_us"] / vl, fields(theirs, "list")["p50_us"] / vl))
        if "varlink_list_rapidjson" in ours:
            vr = fields(ours, "varlink_list_rapidjson")["p50_us"]
            print("  parsed by RapidJSON: vs machd's ListMachines p50 %.2fx  vs systemd-machined 252's %.2fx" % (
                fields(ours, "list")["p50_us"] / vr, fields(theirs, "list")["p50_us"] / vr))
        # Without the client's JSON parse: what the socket and machd alone cost.
        vf = fields(ours, "varlink_frames")["p50_us"]
        print("  transport floor (replies framed, not parsed) vs machd's ListMachines p50 %.2fx" % (
            fields(ours, "list")["p50_us"] / vf))

if __name__ == "__main__":
    main()
