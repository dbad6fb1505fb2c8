#!/usr/bin/python3
"""create + start + wait + delete of a busybox bundle: machrun against runc 1.1 and crun 1.8, side
by side in one run, with wall-time ratios and each runtime's peak RSS. crun refuses this hybrid
cgroup host, so the crun pair (and ours beside it) runs in a private mount namespace whose
/sys/fs/cgroup is a plain cgroup2 mount (issue 13's wrapper). Root only.

Each runtime command runs under GNU time (/usr/bin/time, ~1 MiB itself, the same for all three):
its wall time and its ru_maxrss from wait4() (the peak RSS of that process and of the children
it waited for: runc's `runc init` stages, our launcher's helpers) are this bench's numbers. "peak RSS" is the largest over create, start,
state and delete, the median over the runs. A second machrun line in the wrapper uses a bundle
with device rules (deny all + the defaults: the cgroup2 BPF device program is loaded and attached
at create): what issue 13's device program costs.

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
    """In this process's mount namespace: median cycle ms, and per command the median ms and peak
    RSS (KiB); `polls`: median number of `state` calls until the payload had exited."""
    root = tempfile.mkdtemp(prefix="bench-rt-")
    rt = runtime.split()
    verbs = ("create", "start", "state", "delete")
    times, polls = [], []
    ms, rss = {v: [] for v in verbs}, {v: [] for v in verbs}

    def one(verb, argv, capture=False):
        dt, kib, out = run([*rt, "--root", root, *argv], capture)
        ms[verb].append(dt * 1e3)
        rss[verb].append(kib)
        return dt, out

    try:
        for i in range(runs):
            cid = f"b{i}"
            total = one("create", ["create", "--bundle", str(b), cid])[0] + one("start", ["start", cid])[0]
            n = 0
            while True:  # until the payload (/bin/true) has exited
                dt, out = one("state", ["state", cid], capture=True)
                total, n = total + dt, n + 1
                if json.loads(out)["status"] != "running":
                    break
            total += one("delete", ["delete", "--force", cid])[0]
            times.append(total)
            polls.append(n)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    med = statistics.median
    return {"ms": med(times) * 1e3, "polls": med(polls), "verb_ms": {v: med(x) for v, x in ms.items()},
            "rss": {v: med(x) for v, x in rss.items()}}


def measure_in(runtime, b, wrap):
    """measure() in a child: in issue 13's cgroup2 wrapper when `wrap`."""
    argv = [sys.executable, __file__, str(BUILD), "--runs", str(RUNS), "--inner", runtime, str(b)]
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
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-oci-"))
    try:
        b, bd = bundle(tmp), bundle(tmp, devices=True)
        rows = [
            ("machrun", "hybrid", measure_in(MACHRUN, b, False)),
            ("runc 1.1", "hybrid", measure_in("runc", b, False)),
            ("machrun", "cgroup2", measure_in(MACHRUN, b, True)),
            ("crun 1.8", "cgroup2", measure_in("crun --cgroup-manager=disabled", b, True)),
            ("machrun+devices", "cgroup2", measure_in(MACHRUN, bd, True)),
        ]
        print(f"create+start+state..+delete of /bin/true, median of {RUNS}: wall ms (cycle and per command), "
              "peak RSS KiB per command")
        print(f"  {'runtime':16} {'host':8} {'cycle':>6} {'polls':>5} | {'create':>6} {'start':>6} {'state':>6} {'delete':>6} ms"
              f" | {'create':>6} {'start':>6} {'state':>6} {'delete':>6} {'peak':>6} KiB")
        for name, host, m in rows:
            t, r = m["verb_ms"], m["rss"]
            print(f"  {name:16} {host:8} {m['ms']:6.1f} {m['polls']:5.0f} | {t['create']:6.1f} {t['start']:6.1f} "
                  f"{t['state']:6.1f} {t['delete']:6.1f}    | {r['create']:6.0f} {r['start']:6.0f} {r['state']:6.0f} "
                  f"{r['delete']:6.0f} {max(r.values()):6.0f}")
        ours, runc, ours_w, crun, ours_d = (m for _, _, m in rows)
        peak = {id(m): max(m["rss"].values()) for m in (ours, runc, ours_w, crun, ours_d)}
        print(f"  time: runc/machrun = {runc['ms'] / ours['ms']:.2f}x (target >= 3x); "
              f"crun/machrun = {crun['ms'] / ours_w['ms']:.2f}x (target >= 1x); "
              f"device program: {ours_d['ms'] / ours_w['ms']:.2f}x of machrun without")
        print(f"  peak RSS: machrun/runc = {peak[id(ours)] / peak[id(runc)]:.2f}; "
              f"machrun/crun = {peak[id(ours_w)] / peak[id(crun)]:.2f} (target <= 1)")
        print("  (crun runs with --cgroup-manager=disabled: its cgroupfs manager needs CAP_SYS_RESOURCE "
              "for RLIMIT_MEMLOCK, which this sandbox lacks)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            os.rmdir("/sys/fs/cgroup/unified/machrun")
        except OSError:
            pass


main()
