#!/usr/bin/env python3
"""Checkpoint/restore benchmark: one process holding 256 MiB of touched memory in a container,
checkpointed to a directory and restored, with machkit (machctl checkpoint/restore through machd
on a private bus, spawn --restore as the supervisor), with runc 1.1 (runc checkpoint / runc
restore -d) and with machrun (the same commands on runc's bundle), all driving the same criu: the sid fixture's 4.2 through its loader (MK_CRIU for
machkit; a wrapper script given to runc --criu). Prints per-run times, medians and ratios.

usage: bench/criu.py BUILD_DIR [REPS]   (root; needs runc, gcc, tests/helpers/sid-fixture.sh's tree)
"""
import ctypes
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import json

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "bus"))
from conftest import Bus, Machd, cleanup_machine_cgroups  # noqa: E402

HOG_C = r"""
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    size_t n = 256u << 20;
    char *p = malloc(n);
    for (size_t i = 0; i < n; i += 4096) p[i] = (char)(i >> 12) | 1;
    write(1, "ready\n", 6);
    for (;;) pause();
}
"""


def run(*a, **kw):
    return subprocess.run([str(x) for x in a], check=True, capture_output=True, text=True, **kw)


def reap():
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def main():
    build = pathlib.Path(sys.argv[1]).resolve()
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    sid = run(REPO / "tests/helpers/sid-fixture.sh").stdout.strip()
    criu = (f"{sid}/lib64/ld-linux-x86-64.so.2 --library-path {sid}/usr/lib/x86_64-linux-gnu:"
            f"{sid}/lib/x86_64-linux-gnu {sid}/usr/sbin/criu")
    work = pathlib.Path(tempfile.mkdtemp(prefix="mk-criu-bench-"))
    try:
        wrapper = work / "criu-wrapper"
        wrapper.write_text("#!/bin/sh\nexec %s \"$@\"\n" % criu)
        wrapper.chmod(0o755)
        tree = work / "tree"
        run(REPO / "tests/helpers/busybox-tree.sh", tree)
        (work / "hog.c").write_text(HOG_C)
        run("gcc", "-O2", "-static", "-o", tree / "hog", work / "hog.c")

        # runc bundle over the same tree (runc's default namespaces: new net, pid, ipc, uts, mount).
        bundle = work / "bundle"
        bundle.mkdir()
        run("runc", "spec", cwd=bundle)
        cfg = json.loads((bundle / "config.json").read_text())
        cfg["root"] = {"path": str(tree), "readonly": False}
        cfg["process"]["args"] = ["/hog"]
        cfg["process"]["terminal"] = False
        (bundle / "config.json").write_text(json.dumps(cfg))
        # machrun's: the same config without linux.resources (runc's template denies all devices
        # there, which machrun cannot apply on this hybrid host's cgroup2 group and refuses).
        mbundle = work / "machrun-bundle"
        mbundle.mkdir()
        cfg["linux"].pop("resources", None)
        # runc skips masked paths that do not exist (/proc/asound here); machrun refuses them.
        cfg["linux"]["maskedPaths"] = [m for m in cfg["linux"].get("maskedPaths", []) if os.path.exists(m)]
        (mbundle / "config.json").write_text(json.dumps(cfg))

        os.environ["MK_CRIU"] = criu
        bus = Bus()
        machd = Machd(bus, work / "machines", pool=work / "pool",
                      extra_args=["--spawn-path=%s" % (build / "src/spawn/spawn"), "--log-dir=%s" % (work / "logs")])
        machd.start()
        machctl = str(build / "src/machctl/machctl")
        ours, ours_u, theirs, oci = [], [], [], []
        # machrun's restored init is its child; once machrun leaves, ours (conmon is a subreaper too).
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)

        def machkit_cycle(name, spawn_args, restore_args, img):
            """Checkpoint and restore one spawn of /hog through machctl: (checkpoint s, restore s)."""
            p = subprocess.Popen([str(build / "src/spawn/spawn"), "-q", "-P", *spawn_args, "-D", str(tree),
                                  "-M", name, "/hog"], env=bus.env(), stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert p.stdout.readline() == b"ready\n"
            t0 = time.monotonic()
            run(machctl, "checkpoint", name, img, env=bus.env())
            t1 = time.monotonic()
            p.wait()
            run(machctl, "restore", *restore_args, img, env=bus.env())
            t2 = time.monotonic()
            run(machctl, "terminate", name, env=bus.env())
            deadline = time.time() + 10
            while time.time() < deadline and name in run(machctl, "list", env=bus.env()).stdout:
                time.sleep(0.05)
            shutil.rmtree(img)
            return t1 - t0, t2 - t1

        rid = "mk-criu-bench-%d" % os.getpid()  # runc's ids are host-wide: never touch another's
        try:
            for i in range(reps):
                # machkit, then machkit with -U (on the host's network: -U with a network of its own
                # is refused, docs/criu.md "-U"; its restore needs --unlocked-mounts)
                ours.append(machkit_cycle("bench", ["--private-network"], [], work / ("ours-%d" % i)))
                ours_u.append(machkit_cycle("bench-u", ["-U"], ["--unlocked-mounts"], work / ("ours-u-%d" % i)))

                # runc
                img = work / ("runc-%d" % i)
                r = subprocess.Popen(["runc", "--criu", str(wrapper), "run", "-d", "--bundle", str(bundle), rid],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                line = r.stdout.readline()
                assert line == b"ready\n", r.stderr.read()
                t0 = time.monotonic()
                run("runc", "--criu", wrapper, "checkpoint", "--image-path", img, rid)
                t1 = time.monotonic()
                # The restored process inherits runc's stdio: not our pipes, or run() would wait on them.
                subprocess.run(["runc", "--criu", str(wrapper), "restore", "-d", "--image-path", str(img), "--bundle",
                                str(bundle), rid], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, check=True, timeout=120)
                t2 = time.monotonic()
                subprocess.run(["runc", "kill", rid, "KILL"], capture_output=True)
                time.sleep(0.2)
                subprocess.run(["runc", "delete", "-f", rid], capture_output=True)
                r.kill()
                r.wait()
                theirs.append((t1 - t0, t2 - t1))
                shutil.rmtree(img)

                # machrun, the OCI runtime, on runc's very bundle and commands
                img = work / ("machrun-%d" % i)
                mr = [str(build / "src/runtime/machrun"), "--root", str(work / "machrun-state"), "--criu", criu]
                c = subprocess.Popen([*mr, "create", "--bundle", str(mbundle), rid], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                assert c.wait(60) == 0, c.stderr.read()
                run(*mr, "start", rid)
                line = c.stdout.readline()
                assert line == b"ready\n", c.stderr.read()
                t0 = time.monotonic()
                run(*mr, "checkpoint", "--image-path", img, rid)
                t1 = time.monotonic()
                subprocess.run([*mr, "restore", "-d", "--image-path", str(img), "--bundle", str(mbundle), rid],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               check=True, timeout=120)
                t2 = time.monotonic()
                subprocess.run([*mr, "delete", "-f", rid], capture_output=True)
                reap()
                oci.append((t1 - t0, t2 - t1))
                shutil.rmtree(img)
                print("run %d: machkit checkpoint %.3fs restore %.3fs | -U checkpoint %.3fs restore %.3fs"
                      " | runc checkpoint %.3fs restore %.3fs | machrun checkpoint %.3fs restore %.3fs"
                      % (i + 1, *ours[-1], *ours_u[-1], *theirs[-1], *oci[-1]), flush=True)
        finally:
            subprocess.run(["runc", "delete", "-f", rid], capture_output=True)
            subprocess.run([str(build / "src/runtime/machrun"), "--root", str(work / "machrun-state"), "delete", "-f",
                            rid], capture_output=True)
            machd.stop()
            bus.close()
            cleanup_machine_cgroups(["bench", "bench-u"])
        med = lambda xs, k: statistics.median(x[k] for x in xs)
        tot = lambda xs: statistics.median(a + b for a, b in xs)
        print("\nmedian of %d        machkit   runc     ratio (machkit/runc)" % reps)
        print("checkpoint          %.3fs    %.3fs   %.2fx" % (med(ours, 0), med(theirs, 0), med(ours, 0) / med(theirs, 0)))
        print("restore             %.3fs    %.3fs   %.2fx" % (med(ours, 1), med(theirs, 1), med(ours, 1) / med(theirs, 1)))
        print("total               %.3fs    %.3fs   %.2fx" % (tot(ours), tot(theirs), tot(ours) / tot(theirs)))
        print("\nmedian of %d        machkit -U runc    ratio (machkit -U/runc; -U on the host's network)" % reps)
        print("checkpoint          %.3fs    %.3fs   %.2fx" % (med(ours_u, 0), med(theirs, 0), med(ours_u, 0) / med(theirs, 0)))
        print("restore             %.3fs    %.3fs   %.2fx" % (med(ours_u, 1), med(theirs, 1), med(ours_u, 1) / med(theirs, 1)))
        print("total               %.3fs    %.3fs   %.2fx" % (tot(ours_u), tot(theirs), tot(ours_u) / tot(theirs)))
        print("\nmedian of %d        machrun   runc     ratio (machrun/runc, same bundle and commands)" % reps)
        print("checkpoint          %.3fs    %.3fs   %.2fx" % (med(oci, 0), med(theirs, 0), med(oci, 0) / med(theirs, 0)))
        print("restore             %.3fs    %.3fs   %.2fx" % (med(oci, 1), med(theirs, 1), med(oci, 1) / med(theirs, 1)))
        print("total               %.3fs    %.3fs   %.2fx" % (tot(oci), tot(theirs), tot(oci) / tot(theirs)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
