#!/usr/bin/python3
"""Listing a pool of OCI layer stacks (issue 18): `machctl list-images` through machd on a private
bus, with N stacks of 3 layers each (a busybox tree, a layer of 2000 small files unique to the
image, a small top layer), in one run:

  walked   every layer's usage computed by walking it, as every listing did before the usage was
           stored (the stored values are removed before each call; the walk is the same code).
           The shared busybox layer is walked once per listing here; before, it was walked once
           per stack that links it, so the old cost was higher still.
  stored   the usage a transfer stored on each layer when it unpacked it (user.machkit.usage)

Prints the median of REPS listings each (interleaved) and the ratio walked / stored.

usage: MK_BUILD_DIR=build bench/oci_list_images.py [N] [REPS]   (root)
"""
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "bus"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import conftest  # noqa: E402  (private bus, machd)
from test_oci_images import CONFIG, build_layout, tar_of, ti, tree_tar  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 40
REPS = int(sys.argv[2]) if len(sys.argv) > 2 else 7
XATTR = "user.machkit.usage"
MACHCTL = conftest.BUILD / "src" / "machctl" / "machctl"


def main():
    if os.geteuid() != 0:
        raise SystemExit(__doc__)
    stack = contextlib.ExitStack()
    with stack:
        tmp = Path(tempfile.mkdtemp(prefix="mk-bench-list-"))
        stack.callback(shutil.rmtree, tmp, True)
        bb = tmp / "bb"
        subprocess.run([str(ROOT / "tests" / "helpers" / "busybox-tree.sh"), str(bb)], check=True)
        base = tree_tar(bb)
        pool = tmp / "pool"
        pool.mkdir(mode=0o700)
        for i in range(N):
            many = tar_of([ti("many", tarfile.DIRTYPE)] +
                          [ti(f"many/f{j}", data=b"image %d file %d\n" % (i, j)) for j in range(2000)])
            top = tar_of([ti("id", data=b"%d\n" % i)])
            lay = build_layout(tmp / f"lay{i}", [base, many, top], CONFIG)
            r = subprocess.run([str(conftest.TRANSFER), "import-oci", f"--pool={pool}", "--registries-dir=/nonexistent",
                                str(lay), f"img{i}"], capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(r.stderr)
            shutil.rmtree(lay)
        layers = [pool / e for e in os.listdir(pool) if e.startswith(".oci-sha256-")]
        files = sum(1 for l in layers for _ in l.rglob("*"))

        bus = conftest.Bus()
        stack.callback(bus.close)
        d = conftest.Machd(bus, tmp / "machines", pool=pool).start()
        stack.callback(d.stop)

        def listing():
            t0 = time.monotonic()
            r = subprocess.run([str(MACHCTL), "list-images", "--no-legend"], env=bus.env(),
                               capture_output=True, text=True)
            dt = time.monotonic() - t0
            if r.returncode or len(r.stdout.splitlines()) != N:
                raise SystemExit("list-images failed: " + r.stderr + r.stdout[:500])
            return dt, r.stdout

        times = {"walked": [], "stored": []}
        outs = {}
        listing()  # warm the caches of both modes alike
        for _ in range(REPS):
            for mode in times:
                if mode == "walked":
                    for l in layers:
                        with contextlib.suppress(OSError):
                            os.removexattr(l, XATTR)
                dt, out = listing()
                times[mode].append(dt)
                outs[mode] = out
        if outs["walked"] != outs["stored"]:
            raise SystemExit("the listings differ:\n" + outs["walked"] + "\n---\n" + outs["stored"])
        med = {m: statistics.median(v) * 1000 for m, v in times.items()}
        print(f"== machctl list-images, {N} stacks of 3 layers ({len(layers)} layers, {files} files in them), "
              f"median of {REPS}")
        print(f"  walked (every layer walked per listing): {med['walked']:8.1f} ms")
        print(f"  stored (usage read from each layer):     {med['stored']:8.1f} ms")
        print(f"  walked / stored: {med['walked'] / med['stored']:.1f}x (same output)")


if __name__ == "__main__":
    main()
