#!/usr/bin/python3
"""Running a pulled OCI image as a layer stack (issue 18): start-to-exit time of `/bin/true` in a
3-layer busybox image, each engine from its own store, in one run:

  ours-stack     spawn -D NAME.mstack (the launcher mounts the overlay of the shared layers)
  ours-stack-U   the same with -U: the layers are idmapped into the overlay, never chowned
  machrun-stack  machrun run of a bundle whose root.path is the stack
  podman         podman run --rm from its overlay store (imported with podman pull oci:)
  podman-uidmap  the same with --uidmap 0:RANGE:65536 (podman's answer to -U)

Prints the median of REPS runs and ratios (peer time / ours: > 1 means we are faster).

usage: bench/oci_stack_run.py BUILD_DIR [REPS]   (root)
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
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]  # podman 4.3 on this host


def timed(argv):
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL)
    dt = time.monotonic() - t0
    if r.returncode:
        raise SystemExit(f"{' '.join(argv)} failed: {r.stderr.decode(errors='replace')[-2000:]}")
    return dt


def main():
    if len(sys.argv) < 2 or os.geteuid() != 0:
        raise SystemExit(__doc__)
    build = pathlib.Path(sys.argv[1]).resolve()
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    os.environ["MK_BUILD_DIR"] = str(build)
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    from test_oci_images import CONFIG, app_layers, build_layout  # noqa: PLC0415

    spawn = build / "src" / "spawn" / "spawn"
    transfer = build / "src" / "transfer" / "machd-transfer"
    machrun = build / "src" / "runtime" / "machrun"
    work = pathlib.Path(tempfile.mkdtemp(prefix="images-bench-"))
    os.chmod(work, 0o700)
    # crun refuses this hybrid-cgroup host: podman runs runc, as the tests do.
    podman = ["podman", "--root", f"{work}/proot", "--runroot", f"{work}/prun", "--storage-driver", "overlay",
              "--runtime", "runc"]
    try:
        tree = work / "tree"
        subprocess.run([str(REPO / "tests" / "helpers" / "busybox-tree.sh"), str(tree)], check=True)
        layout = build_layout(work / "layout", app_layers(tree), CONFIG)
        pool = work / "pool"
        pool.mkdir(mode=0o700)
        timed([str(transfer), "import-oci", f"--pool={pool}", "--registries-dir=/nonexistent", str(layout), "app"])
        timed([*podman, "pull", "-q", f"oci:{layout}:latest"])  # fails loudly, with podman's words
        img = subprocess.run([*podman, "images", "-q"], check=True, capture_output=True, text=True).stdout.split()[0]
        bundle = work / "bundle"
        bundle.mkdir()
        subprocess.run([str(machrun), "--root", f"{work}/mrstate", "spec", "--bundle", str(bundle)], check=True)
        cfg = json.loads((bundle / "config.json").read_text())
        cfg["root"] = {"path": str(pool / "app.mstack"), "readonly": False}
        cfg["process"]["args"] = ["/bin/true"]
        cfg["process"]["terminal"] = False
        (bundle / "config.json").write_text(json.dumps(cfg))
        stack = str(pool / "app.mstack")
        runs = {
            "ours-stack": [str(spawn), "-q", "-M", "images-bench", "-D", stack, "-P", "--", "/bin/true"],
            "ours-stack-U": [str(spawn), "-q", "-U", "-M", "images-bench", "-D", stack, "-P", "--", "/bin/true"],
            "machrun-stack": [str(machrun), "--root", f"{work}/mrstate", "run", "--bundle", str(bundle), "images-bench"],
            "podman": [*podman, "run", "--rm", "--network=none", *ULIMITS, img, "/bin/true"],
            "podman-uidmap": [*podman, "run", "--rm", "--network=none", *ULIMITS, "--uidmap", "0:1000000:65536",
                              "--gidmap", "0:1000000:65536", img, "/bin/true"],
        }
        for argv in runs.values():  # warm caches (and podman's per-mapping image copy)
            timed(argv)
        times = {k: [] for k in runs}
        for _ in range(reps):
            for k, argv in runs.items():
                times[k].append(timed(argv))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"3-layer busybox image, /bin/true, median of {reps}:")
        for k, v in med.items():
            print(f"  {k:14s} {v * 1000:7.1f} ms")
        print("ratios (peer / ours; > 1: ours faster):")
        print(f"  podman        / ours-stack     {med['podman'] / med['ours-stack']:.2f}x")
        print(f"  podman        / machrun-stack  {med['podman'] / med['machrun-stack']:.2f}x")
        print(f"  podman-uidmap / ours-stack-U   {med['podman-uidmap'] / med['ours-stack-U']:.2f}x")
    finally:
        subprocess.run([*podman, "rm", "-af"], capture_output=True)
        subprocess.run([*podman, "rmi", "-af"], capture_output=True)
        with open("/proc/self/mountinfo") as f:
            for mp in sorted((l.split()[4] for l in f if str(work) in l), key=len, reverse=True):
                subprocess.run(["umount", "-l", mp], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
