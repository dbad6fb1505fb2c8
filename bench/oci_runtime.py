#!/usr/bin/python3
"""create + start + wait + delete of a busybox bundle: machrun against runc 1.1 and crun 1.8, side
by side in one run, with wall-time ratios and each runtime's peak RSS. crun refuses this hybrid
cgroup host, so the crun pair (and ours beside it) runs in a private mount namespace whose
/sys/fs/cgroup is a plain cgroup2 mount (issue 13's wrapper). Root only.

Each runtime command runs under GNU time (/usr/bin/time, ~1 MiB itself, the same for all three):
its wall time and its ru_maxrss from wait4() (the peak RSS of that process and of the children
it waited for: runc's `runc init` stages, our launcher's helpers) are this bench's numbers.
"peak" is the largest of the create, start, state and delete columns, each a median over the
runs. The five configurations run round robin, one cycle each per round, and the ratios are
medians of per-round ratios: this VM's load swings by 2x within a minute. In the wrapper machrun
always compiles, loads and attaches its cgroup2 device program (deny all + the defaults when
config.json has no rules, as runc's fs2 manager); the last line's bundle has a `deny a` rule of
its own, the same program: two samples of the same work. The floor row is four /bin/true under
time per round: no runtime's four commands can beat it.

  bench/oci_runtime.py [BUILD_DIR] [--runs N]
"""
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
args = [a for a in sys.argv[1:] if not a.startswith("--") and not a.isdigit()]
BUILD = pathlib.Path(args[0] if args else REPO / "build")
RUNS = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 20
MACHRUN = str(BUILD / "src" / "runtime" / "machrun")
VERBS = ("create", "start", "state", "delete")
WRAP = "umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec \"$@\""


def bundle(tmp, devices=False):
    tree = tmp / "rootfs"
    if not tree.exists():
        subprocess.run([str(REPO / "tests/helpers/busybox-tree.sh"), str(tree)], check=True)
    b = tmp / ("bundle-dev" if devices else "bundle")
    b.mkdir()
    subprocess.run([MACHRUN, "spec", "--bundle", str(b)], check=True)
    cfg = json.loads((b / "config.json").read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["/bin/true"]
    cfg["root"]["path"] = str(tree)
    if devices:
        cfg["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
    (b / "config.json").write_text(json.dumps(cfg))
    return b


def run(argv, capture=False):
    """Runs one command under GNU time; returns (seconds, peak RSS KiB, stdout if `capture`). The
    RSS is time's wait4() ru_maxrss of the command: forked from time (about 1 MiB), not from this
    Python (whose RSS a forked child's ru_maxrss would carry). Not captured, stdout is /dev/null: a
    created container's init keeps it (as conmon's), a pipe would never end."""
    with tempfile.NamedTemporaryFile("r", prefix="bench-rss-") as rss:
        t = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *argv], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE if capture else subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elapsed = time.perf_counter() - t
        if p.returncode != 0:
            raise SystemExit(f"failed: {' '.join(argv)}")
        return elapsed, int(rss.read().split()[-1]), p.stdout


def measure(runtime, b, runs):
    """In this process's mount namespace, `runs` cycles: each cycle's ms, `state` polls (until the
    payload had exited), and per command the ms and peak RSS (KiB) of each call."""
    root = tempfile.mkdtemp(prefix="bench-rt-")
    rt = runtime.split()
    out = {"cycle": [], "polls": [], "ms": {v: [] for v in VERBS}, "rss": {v: [] for v in VERBS}}

    def one(verb, argv, capture=False):
        dt, kib, text = run([*rt, "--root", root, *argv], capture)
        out["ms"][verb].append(dt * 1e3)
        out["rss"][verb].append(kib)
        return dt, text

    try:
        for i in range(runs):
            cid = f"b{i}"
            total = one("create", ["create", "--bundle", str(b), cid])[0] + one("start", ["start", cid])[0]
            n = 0
            while True:
                dt, text = one("state", ["state", cid], capture=True)
                total, n = total + dt, n + 1
                if json.loads(text)["status"] != "running":
                    break
            total += one("delete", ["delete", "--force", cid])[0]
            out["cycle"].append(total * 1e3)
            out["polls"].append(n)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def measure_in(runtime, b, wrap, runs):
    """measure() in a child: in issue 13's cgroup2 wrapper when `wrap`."""
    argv = [sys.executable, __file__, str(BUILD), "--runs", str(runs), "--inner", runtime, str(b)]
    if wrap:
        argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", WRAP, "sh", *argv]
    return json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)


def main():
    if "--inner" in sys.argv:
        i = sys.argv.index("--inner")
        print(json.dumps(measure(sys.argv[i + 1], pathlib.Path(sys.argv[i + 2]), RUNS)))
        return
    if os.geteuid() != 0:
        sys.exit("needs root")
    med = statistics.median
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-oci-"))
    try:
        b, bd = bundle(tmp), bundle(tmp, devices=True)
        configs = [("machrun", "hybrid", MACHRUN, b, False), ("runc 1.1", "hybrid", "runc", b, False),
                   ("machrun", "cgroup2", MACHRUN, b, True),
                   ("crun 1.8", "cgroup2", "crun --cgroup-manager=disabled", b, True),
                   ("machrun, deny a", "cgroup2", MACHRUN, bd, True)]
        # Round robin, one cycle of each per round: this VM's load swings by 2x within a minute,
        # and a ratio is only fair between cycles run side by side. The floor, per round: four
        # /bin/true under time (no runtime's four commands can be faster).
        results = [{"cycle": [], "polls": [], "ms": {v: [] for v in VERBS}, "rss": {v: [] for v in VERBS}}
                   for _ in configs]
        floor = []
        for _ in range(RUNS):
            for res, (_, _, runtime, bun, wrap) in zip(results, configs):
                m = measure_in(runtime, bun, wrap, 1)
                res["cycle"] += m["cycle"]
                res["polls"] += m["polls"]
                for v in VERBS:
                    res["ms"][v] += m["ms"][v]
                    res["rss"][v] += m["rss"][v]
            floor.append(sum(run(["/bin/true"])[0] for _ in range(4)) * 1e3)
        print(f"create+start+state..+delete of /bin/true, {RUNS} rounds (one cycle of each per round), medians: "
              "wall ms (cycle and per command), peak RSS KiB per command")
        print(f"  {'runtime':16} {'host':8} {'cycle':>6} {'polls':>5} | {'create':>6} {'start':>6} {'state':>6} {'delete':>6} ms"
              f" | {'create':>6} {'start':>6} {'state':>6} {'delete':>6} {'peak':>6} KiB")
        peak = []
        for (name, host, *_), m in zip(configs, results):
            t = {v: med(x) for v, x in m["ms"].items()}
            r = {v: med(x) for v, x in m["rss"].items()}
            peak.append(max(r.values()))
            print(f"  {name:16} {host:8} {med(m['cycle']):6.1f} {med(m['polls']):5.0f} | {t['create']:6.1f} "
                  f"{t['start']:6.1f} {t['state']:6.1f} {t['delete']:6.1f}    | {r['create']:6.0f} {r['start']:6.0f} "
                  f"{r['state']:6.0f} {r['delete']:6.0f} {peak[-1]:6.0f}")
        print(f"  {'floor: 4 x true':25} {med(floor):6.1f}")
        ours, runc, ours_w, crun, ours_d = (m["cycle"] for m in results)

        def ratio(a, b):  # median of the per-round ratios a/b
            return med(x / y for x, y in zip(a, b))

        print(f"  time, per-round ratios: runc/machrun = {ratio(runc, ours):.2f}x (target >= 3x; "
              f"runc/floor = {ratio(runc, floor):.2f}x is the most this VM allows now); "
              f"crun/machrun = {ratio(crun, ours_w):.2f}x (target >= 1x); "
              f"machrun with a rule / without = {ratio(ours_d, ours_w):.2f}x")
        print(f"  peak RSS: machrun/runc = {peak[0] / peak[1]:.2f}; machrun/crun = {peak[2] / peak[3]:.2f} (target <= 1)")
        print("  (crun runs with --cgroup-manager=disabled: its cgroupfs manager needs CAP_SYS_RESOURCE "
              "for RLIMIT_MEMLOCK, which this sandbox lacks)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            os.rmdir("/sys/fs/cgroup/unified/machrun")
        except OSError:
            pass


main()
