#!/usr/bin/python3
"""Side-by-side: machd and systemd-machined 252 on private buses, N machines registered with
RegisterMachine (each leader a `sleep` in its own *.scope on the cgroup2 hierarchy, which machined
needs), then ListMachines / GetMachine latency from the same in-process client, registrations per
second, and each daemon's RSS. Then io.systemd.Machine.List over Varlink from machd (the same
machines, the same client process type), set against both daemons' ListMachines through
dbus-daemon in interleaved rounds.
Root only; cleans up its processes and cgroups.

    MK_BUILD_DIR=build /usr/bin/python3 bench/machd_vs_machined.py [N]
"""
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "bus"))
import conftest  # noqa: E402  (private bus, cleanup helpers)

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
ROUNDS = int(os.environ.get("MK_BENCH_ROUNDS", "5"))
CALLS = 400  # per round and side
CLIENT = conftest.BUILD / "bench" / "machine1-bench"
SLICE = conftest.CGROUP_ROOT / "unified" / "mkbench.slice"


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def cpu_usec(pid):
    """CPU time of all of `pid`'s threads, in us (schedstat: ns, not clock ticks)."""
    total = 0
    for t in os.listdir("/proc/%d/task" % pid):
        with contextlib.suppress(FileNotFoundError):
            total += int(open("/proc/%d/task/%s/schedstat" % (pid, t)).read().split()[0])
    return total / 1000


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


def bench(name, bus, pid, procs):
    out = {"daemon": name}
    out["register"] = run(bus, "register", "m", *[p.pid for p in procs])
    out["ping"] = run(bus, "ping", 2000)
    c0, b0 = cpu_usec(pid), cpu_usec(bus.proc.pid)
    out["list"] = run(bus, "list", 1000)
    # Where a ListMachines call's time goes: the daemon's own CPU, dbus-daemon's (it validates
    # and relays the ~70 KB reply); the rest is the client's parsing and the wake-ups.
    out["list"] += " daemon_cpu_us=%.0f bus_cpu_us=%.0f" % ((cpu_usec(pid) - c0) / 1000, (cpu_usec(bus.proc.pid) - b0) / 1000)
    out["get"] = run(bus, "get", "m%d" % (len(procs) // 2), 2000)
    out["rss_kib"] = rss_kib(pid)
    return out


def fields(line):
    return {f.split("=")[0]: float(f.split("=")[1]) for f in line.split() if "=" in f}


def listing_rounds(machd, machined, socket):
    """Varlink List against both daemons' ListMachines, interleaved in ROUNDS rounds of CALLS calls
    each, so that all three see the same VM (its load drifts by several times within minutes)."""
    rounds = []
    for _ in range(ROUNDS):
        r = {}
        c0, b0 = cpu_usec(machd[1]), cpu_usec(machd[0].proc.pid)
        r["dbus_machd"] = fields(run(machd[0], "list", CALLS))
        r["dbus_machd"]["daemon_cpu_us"] = (cpu_usec(machd[1]) - c0) / CALLS
        r["dbus_machd"]["bus_cpu_us"] = (cpu_usec(machd[0].proc.pid) - b0) / CALLS
        r["dbus_machined"] = fields(run(machined[0], "list", CALLS))
        c0 = cpu_usec(machd[1])
        r["varlink"] = fields(run(machd[0], "varlink-list", socket, CALLS))
        r["varlink"]["daemon_cpu_us"] = (cpu_usec(machd[1]) - c0) / CALLS
        r["frames"] = fields(run(machd[0], "varlink-frames", socket, CALLS))
        rounds.append(r)
    return rounds


def report_rounds(rounds):
    med = lambda xs: statistics.median(xs)
    print("== Varlink io.systemd.Machine.List (machd) vs D-Bus ListMachines through dbus-daemon, N=%d, "
          "%d interleaved rounds of %d calls (>1 = Varlink faster)" % (N, len(rounds), CALLS))
    print("  both clients parse every field of every row into a struct; us per call")
    print("  round  Varlink p50/p90  machd D-Bus p50/p90  machined D-Bus p50/p90  frames p50  ratio p50 machd/machined  ratio p90 machd/machined")
    for i, r in enumerate(rounds):
        v, d, m, f = r["varlink"], r["dbus_machd"], r["dbus_machined"], r["frames"]
        print("  %5d  %7.0f/%-7.0f  %8.0f/%-8.0f  %10.0f/%-10.0f  %10.0f  %6.2fx/%-6.2fx  %6.2fx/%-6.2fx" % (
            i + 1, v["p50_us"], v["p90_us"], d["p50_us"], d["p90_us"], m["p50_us"], m["p90_us"], f["p50_us"],
            d["p50_us"] / v["p50_us"], m["p50_us"] / v["p50_us"], d["p90_us"] / v["p90_us"], m["p90_us"] / v["p90_us"]))
    for p in ("p50_us", "p90_us"):
        print("  median over rounds, %s: vs machd's ListMachines %.2fx  vs systemd-machined 252's %.2fx" % (
            p[:3], med([r["dbus_machd"][p] / r["varlink"][p] for r in rounds]),
            med([r["dbus_machined"][p] / r["varlink"][p] for r in rounds])))
    print("  machd's CPU per listing (median): Varlink %.0f us, D-Bus %.0f us (dbus-daemon %.0f us more)" % (
        med([r["varlink"]["daemon_cpu_us"] for r in rounds]), med([r["dbus_machd"]["daemon_cpu_us"] for r in rounds]),
        med([r["dbus_machd"]["bus_cpu_us"] for r in rounds])))
    print("  one Varlink listing: %d records, %d bytes" % (rounds[-1]["varlink"]["rows"], rounds[-1]["varlink"]["bytes"]))
    print("  transport floor (replies framed, not parsed): p50 %.0f us, %.2fx machd's ListMachines" % (
        med([r["frames"]["p50_us"] for r in rounds]),
        med([r["dbus_machd"]["p50_us"] / r["frames"]["p50_us"] for r in rounds])))


def main():
    procs = leaders(N)
    results = []
    stack = contextlib.ExitStack()  # daemons, buses and state dirs go even when a run fails
    rounds = []
    try:
        # Both daemons run side by side (machd's bench first, then machined's), then the listing
        # rounds alternate between them.
        bus = conftest.Bus()
        stack.callback(bus.close)
        # State files on tmpfs, as /run/systemd/machines is (and as machined writes them here).
        state = Path(tempfile.mkdtemp(prefix="mk-bench-", dir="/dev/shm"))
        stack.callback(shutil.rmtree, state, True)
        d = conftest.Machd(bus, state / "machines").start()
        stack.callback(d.stop)
        results.append(bench("machd", bus, d.proc.pid, procs))
        # machined 252 in a private mount namespace (tmpfs /run/systemd)
        mbus = conftest.Bus()
        stack.callback(mbus.close)
        m = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                              "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && "
                              "exec /lib/systemd/systemd-machined"], env=mbus.env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(lambda: (m.terminate(), m.wait()))
        assert conftest.wait_for(lambda: mbus.busctl("status", conftest.DEST, check=False).returncode == 0, 10)
        results.append(bench("systemd-machined 252", mbus, m.pid, procs))
        rounds = listing_rounds((bus, d.proc.pid), (mbus, m.pid), d.varlink_dir / "io.systemd.Machine")
    finally:
        stack.close()
        for p in procs:
            p.kill()
            p.wait()
        conftest.remove_cgroup(SLICE)
        conftest.cleanup_machine_cgroups()
    for r in results:
        print("== %s (N=%d)" % (r["daemon"], N))
        for k in ("register", "ping", "list", "get"):
            if k in r:
                print("  " + r[k].replace("\n", " "))
        print("  rss=%.1f MiB" % (r["rss_kib"] / 1024))
    if len(results) == 2:
        ours, theirs = results
        ratio = lambda k, f: fields(theirs[k])[f] / fields(ours[k])[f]  # >1: machd better
        print("== machd vs systemd-machined 252 (>1 = machd better)")
        print("  ListMachines p50 %.2fx  daemon CPU per ListMachines %.2fx  GetMachine p50 %.2fx  "
              "registrations/s %.2fx  RSS %.2fx" % (
                  ratio("list", "p50_us"), ratio("list", "daemon_cpu_us"), ratio("get", "p50_us"),
                  1 / ratio("register", "per_second"), theirs["rss_kib"] / ours["rss_kib"]))
        # What no daemon can beat: machd's p50 without machd's own CPU (dbus-daemon, the client, wake-ups).
        floor = fields(ours["list"])["p50_us"] - fields(ours["list"])["daemon_cpu_us"]
        print("  ListMachines bound: a daemon using no CPU would answer in ~%.0f us, %.2fx machined's p50"
              % (floor, fields(theirs["list"])["p50_us"] / floor))
    if rounds:
        report_rounds(rounds)


if __name__ == "__main__":
    main()
