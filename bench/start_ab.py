#!/usr/bin/env python3
"""Start-to-exit of /bin/true with two builds of spawn, interleaved round by round so that a busy
machine weighs on both alike; nspawn and the unshare floor run in the same rounds. For checking that a
refactoring left the start time unchanged within noise (issue 15).

usage: bench/start_ab.py BUILD_BEFORE BUILD_AFTER [ROUNDS]   (root; needs busybox-static, systemd-container)
Prints medians of wall and CPU time (rusage of the whole process tree), the after/before ratio with its spread over 5 slices of the rounds, and both against nspawn.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))


def main():
    before, after = (os.path.abspath(a) for a in sys.argv[1:3])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    with tempfile.TemporaryDirectory(prefix="mk-bench-ab.") as work:
        tree = os.path.join(work, "tree")
        subprocess.run([os.path.join(here, "..", "tests", "helpers", "busybox-tree.sh"), tree], check=True,
                       stdout=subprocess.DEVNULL)
        cmds = {
            "before": [before + "/src/spawn/spawn", "-q", "-D", tree, "/bin/true"],
            "after": [after + "/src/spawn/spawn", "-q", "-D", tree, "/bin/true"],
            "before-private-network": [before + "/src/spawn/spawn", "-q", "--private-network", "-D", tree, "/bin/true"],
            "after-private-network": [after + "/src/spawn/spawn", "-q", "--private-network", "-D", tree, "/bin/true"],
            "nspawn": ["systemd-nspawn", "--register=no", "--keep-unit", "-q", "-D", tree, "/bin/true"],
            "floor-unshare": ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net", "--mount-proc",
                              "chroot", tree, "/bin/true"],
        }
        names = list(cmds)
        times = {n: [] for n in names}
        cpu = {n: [] for n in names}
        for r in range(rounds + 3):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                t0 = time.perf_counter()
                p = subprocess.Popen(cmds[n], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL if n == "nspawn" else None)
                _, status, ru = os.wait4(p.pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status)
                if p.returncode != 0:
                    sys.exit("%s failed with %d" % (n, p.returncode))
                if r >= 3:  # warm-up rounds
                    times[n].append((time.perf_counter() - t0) * 1e3)
                    cpu[n].append((ru.ru_utime + ru.ru_stime) * 1e3)
    med = {n: statistics.median(v) for n, v in times.items()}
    mcpu = {n: statistics.median(v) for n, v in cpu.items()}
    print("start-to-exit of /bin/true, median of %d interleaved rounds (wall ms, CPU ms of the whole tree):" % rounds)
    for n in names:
        print("  %-24s %7.2f ms  cpu %6.2f ms" % (n, med[n], mcpu[n]))

    def slices(a, b):
        k = max(1, rounds // 5)
        return [statistics.median(times[b][i:i + k]) / statistics.median(times[a][i:i + k])
                for i in range(0, rounds - k + 1, k)]

    for suffix in ("", "-private-network"):
        s = slices("before" + suffix, "after" + suffix)
        print("after / before%-18s %.3fx (slices %s)" % (suffix, med["after" + suffix] / med["before" + suffix],
                                                    " ".join("%.2f" % x for x in s)))
    for suffix in ("", "-private-network"):
        print("CPU after / before%-14s %.3fx" % (suffix, mcpu["after" + suffix] / mcpu["before" + suffix]))
    print("nspawn / after                   %.1fx (before: %.1fx)" % (med["nspawn"] / med["after"],
                                                                   med["nspawn"] / med["before"]))
    print("after / floor (unshare+chroot)   %.2fx (before: %.2fx)" % (med["after"] / med["floor-unshare"],
                                                                   med["before"] / med["floor-unshare"]))


if __name__ == "__main__":
    main()
