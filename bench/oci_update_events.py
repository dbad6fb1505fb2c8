#!/usr/bin/python3
"""`update --memory --pids-limit` and `events --stats` of a running busybox container: machrun
against runc 1.1, side by side in one run, with ratios and each command's peak RSS. Both
containers have v1 memory and pids groups: config.json sets generous limits, so each runtime's
create makes them. Root only.

  bench/oci_update_events.py [BUILD_DIR] [--runs N]
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
args = [a for a in sys.argv[1:] if not a.startswith("--")]
BUILD = pathlib.Path(args[0] if args else REPO / "build")
RUNS = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 30
MACHRUN = str(BUILD / "src" / "runtime" / "machrun")


def bundle(tmp):
    tree = tmp / "rootfs"
    subprocess.run([str(REPO / "tests/helpers/busybox-tree.sh"), str(tree)], check=True)
    subprocess.run([MACHRUN, "spec", "--bundle", str(tmp)], check=True)
    cfg = json.loads((tmp / "config.json").read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["sleep", "1000"]
    cfg["root"]["path"] = str(tree)
    cfg["linux"]["resources"] = {"memory": {"limit": 1 << 30}, "pids": {"limit": 1000}}
    (tmp / "config.json").write_text(json.dumps(cfg))
    return tmp


def timed(argv):
    t = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t


def peak_rss(argv):
    r = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], capture_output=True, text=True, check=True)
    return int(r.stderr.strip().splitlines()[-1])


def main():
    if os.geteuid() != 0:
        sys.exit("needs root")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-oci-update-"))
    roots = {"machrun": str(tmp / "machrun-state"), "runc": str(tmp / "runc-state")}
    cid = "bench-update-1"
    try:
        b = bundle(tmp)
        for rt in ("machrun", "runc"):
            binary = MACHRUN if rt == "machrun" else "runc"
            subprocess.run([binary, "--root", roots[rt], "create", "--bundle", str(b), "--pid-file", str(tmp / f"{rt}.pid"),
                            f"{cid}-{rt}"], check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            subprocess.run([binary, "--root", roots[rt], "start", f"{cid}-{rt}"], check=True)
        res = {}
        for rt in ("machrun", "runc"):
            binary = MACHRUN if rt == "machrun" else "runc"
            base = [binary, "--root", roots[rt]]
            up = [timed([*base, "update", "--memory", f"{64 + i % 2}m", "--pids-limit", str(100 + i % 2), f"{cid}-{rt}"])
                  for i in range(RUNS)]
            ev = [timed([*base, "events", "--stats", f"{cid}-{rt}"]) for _ in range(RUNS)]
            res[rt] = (statistics.median(up), statistics.median(ev),
                       peak_rss([*base, "update", "--memory", "64m", f"{cid}-{rt}"]),
                       peak_rss([*base, "events", "--stats", f"{cid}-{rt}"]))
        m, r = res["machrun"], res["runc"]
        print(f"running busybox container, median of {RUNS} (ms), peak RSS (KiB)")
        print(f"  update --memory --pids-limit: machrun {m[0]*1e3:6.2f}  runc 1.1 {r[0]*1e3:6.2f}  runc/machrun = {r[0]/m[0]:.2f}x"
              f"   RSS {m[2]} vs {r[2]}")
        print(f"  events --stats:               machrun {m[1]*1e3:6.2f}  runc 1.1 {r[1]*1e3:6.2f}  runc/machrun = {r[1]/m[1]:.2f}x"
              f"   RSS {m[3]} vs {r[3]}")
    finally:
        for rt in ("machrun", "runc"):
            binary = MACHRUN if rt == "machrun" else "runc"
            subprocess.run([binary, "--root", roots[rt], "delete", "--force", f"{cid}-{rt}"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
