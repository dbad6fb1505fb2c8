#!/usr/bin/python3
"""create + start + wait + delete of a busybox bundle: machrun against runc 1.1 and crun 1.8, side
by side in one run, with ratios and the runtimes' peak RSS. crun refuses this hybrid cgroup host,
so the crun pair (and ours beside it) runs in a private mount namespace whose /sys/fs/cgroup is a
plain cgroup2 mount (issue 13's wrapper). Root only.

  bench/oci_runtime.py [BUILD_DIR] [--runs N]
"""
import json
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
args = [a for a in sys.argv[1:] if not a.startswith("--")]
BUILD = pathlib.Path(args[0] if args else REPO / "build")
RUNS = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 20
MACHRUN = str(BUILD / "src" / "runtime" / "machrun")


def bundle(tmp):
    tree = tmp / "rootfs"
    subprocess.run([str(REPO / "tests/helpers/busybox-tree.sh"), str(tree)], check=True)
    subprocess.run([MACHRUN, "spec", "--bundle", str(tmp)], check=True)
    cfg = json.loads((tmp / "config.json").read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["/bin/true"]
    cfg["root"]["path"] = str(tree)
    (tmp / "config.json").write_text(json.dumps(cfg))
    return tmp


def cycle(runtime, root, b, cid, wrap=False):
    cmds = [[runtime, "--root", root, "create", "--bundle", str(b), cid], [runtime, "--root", root, "start", cid],
            [runtime, "--root", root, "delete", "--force", cid]]
    script = " && ".join(" ".join(c) for c in cmds[:2]) + f" && while {runtime} --root {root} state {cid} | grep -q running; do :; done; " + " ".join(cmds[2])
    if wrap:
        script = "umount -l /sys/fs/cgroup; mount -t cgroup2 none /sys/fs/cgroup; " + script
        argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
    else:
        argv = ["sh", "-c", script]
    t = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def measure(name, runtime, b, wrap=False, extra=()):
    root = tempfile.mkdtemp(prefix=f"bench-{name}-")
    rt = [runtime, *extra] if extra else [runtime]
    times = [cycle(" ".join(rt), root, b, f"b{i}", wrap) for i in range(RUNS)]
    shutil.rmtree(root, ignore_errors=True)
    return statistics.median(times)


def main():
    if os.geteuid() != 0:
        sys.exit("needs root")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-oci-"))
    try:
        b = bundle(tmp)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        ours = measure("machrun", MACHRUN, b)
        runc = measure("runc", "runc", b)
        ours_w = measure("machrun-w", MACHRUN, b, wrap=True)
        crun = measure("crun", "crun", b, wrap=True, extra=("--cgroup-manager=disabled",))
        print(f"create+start+wait+delete, median of {RUNS} (ms)")
        print(f"  machrun {ours*1e3:7.1f}   runc 1.1 {runc*1e3:7.1f}   runc/machrun = {runc/ours:.2f}x")
        print(f"  cgroup2 wrapper: machrun {ours_w*1e3:7.1f}   crun 1.8 {crun*1e3:7.1f}   crun/machrun = {crun/ours_w:.2f}x")
        for name, argv in (("machrun", [MACHRUN, "--version"]), ("runc", ["runc", "--version"]), ("crun", ["crun", "--version"])):
            r = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], capture_output=True, text=True)
            print(f"  peak RSS of `{name} --version`: {r.stderr.strip().splitlines()[-1]} KiB")
        del before
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            os.rmdir("/sys/fs/cgroup/unified/machrun")
        except OSError:
            pass


main()
