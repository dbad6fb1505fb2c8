#!/usr/bin/env python3
"""Rootless benchmark (issue 16), side by side in one run, in alternation:

  1. `spawn -D TREE /bin/true` as an ordinary user  vs  root's `spawn -U -D TREE /bin/true`;
  2. `spawn -bD BOOKWORM` as the user (to multi-user, then SIGTERM)  vs  root's `spawn -bD`;
  3. `podman run --rm --network none IMAGE true` as the same user (offline image made from the same
     busybox tree with `podman import`, storage of its own in the user's home)  vs  the user's
     `spawn -D TREE /bin/true`.

Targets: rootless start <= 1.3x root -U; >= 10x faster than podman rootless.

Row 1 is timed twice for the user: with `machd --user` running (on a session bus of the user's, in a
runtime directory of its own), whose kept user namespace the start joins instead of running
newuidmap/newgidmap (docs/rootless.md, "The kept user namespace"; the start is not registered: it
runs in no delegated group), and without it (another runtime directory), as every start was before.

Starts are timed by a small timer process (TIMER below) that already runs as the user (or as root),
so neither setpriv's nor Python's start is counted: the figure is the command's own exec-to-reap
time. Every row prints its median; the summary at the end has all three rows of the issue with their
ratios, from this one run. The start row takes 4 x REPS pairs: a start costs tens of milliseconds,
and on a shared 2-core machine the median of a few moves by as much as the target.

usage: bench/rootless.py BUILD_DIR [REPS] [--start-only]     (root: it creates a user with subordinate
ranges and removes it, its home (with podman's storage), its bus and machd and its delegated cgroup
at the end; --start-only: row 1 alone)
"""
import os
import pathlib
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from boot import boot_once  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
HELPERS = REPO / "tests" / "helpers"


# The timer: runs ARGV once and prints its exec-to-reap time in seconds. It is started as the user
# (or root) before the clock starts, so the user switch and the interpreter's start are not counted.
TIMER = """
import subprocess, sys, time
t0 = time.monotonic()
r = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
dt = time.monotonic() - t0
sys.stderr.buffer.write(r.stderr)
print(dt)
sys.exit(r.returncode)
"""


def timed(prefix, argv, env=None, cwd=None):
    """Seconds ARGV takes, timed by a timer process started through PREFIX (e.g. setpriv)."""
    r = subprocess.run([*prefix, "/usr/bin/python3", "-c", TIMER, *argv], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                       capture_output=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(argv)}\n{r.stderr.decode(errors='replace')}")
    return float(r.stdout.decode().strip().splitlines()[-1])


def end_all(procs):
    """SIGTERM to each Popen still running, last started first; SIGKILL after 10 s."""
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def empty_cgroup(cg):
    """Ends what is left in the bench's own group `cg` (by pid) and waits until it is empty: a boot
    that failed leaves its guest dying (spawn was SIGKILLed; the guest follows by PDEATHSIG)."""
    for _ in range(100):
        pids = [int(x) for f in cg.rglob("cgroup.procs") for x in f.read_text().split()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def table(title, runs, reps, measure):
    res = {k: [] for k in runs}
    for _ in range(reps):
        for k, v in runs.items():
            res[k].append(measure(v))
    print(f"\n{title} (median of {reps}, ms)")
    med = {k: statistics.median(v) * 1000 for k, v in res.items()}
    for k, m in med.items():
        print(f"  {k:<34} {m:9.1f}")
    return med


def main():
    if os.geteuid() != 0:
        sys.exit("bench/rootless.py: run as root (it creates a test user)")
    args = [a for a in sys.argv[1:] if a != "--start-only"]
    start_only = len(args) != len(sys.argv) - 1
    build = pathlib.Path(args[0]).resolve()
    reps = int(args[1]) if len(args) > 1 else 10
    spawn = str(build / "src" / "spawn" / "spawn")
    name = f"mkrb{os.getpid() % 100000}"
    subprocess.run(["useradd", "-m", "-d", f"/home/{name}", "-s", "/bin/sh", name], check=True)
    pw = pwd.getpwnam(name)
    home = pathlib.Path(pw.pw_dir)
    unified = pathlib.Path("/sys/fs/cgroup/unified")
    cg = (unified if (unified / "cgroup.procs").exists() else pathlib.Path("/sys/fs/cgroup")) / f"{name}.bench"
    procs = []
    root_tmp = pathlib.Path(subprocess.run(["mktemp", "-d", "/var/tmp/mkrb.XXXXXX"], capture_output=True,
                                           text=True, check=True).stdout.strip())
    try:
        run = home / "run"
        run.mkdir(mode=0o700)
        env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(home), "XDG_RUNTIME_DIR": str(run)}
        as_user = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"]
        utree = home / "bb"
        subprocess.run([str(HELPERS / "busybox-tree.sh"), str(utree)], check=True)
        subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", str(home)], check=True)
        rtree = root_tmp / "bb"
        subprocess.run([str(HELPERS / "busybox-tree.sh"), str(rtree)], check=True)

        # The user's machd, in a runtime directory of its own: starts with that one join its kept
        # user namespace; starts with `run` find none and map their own.
        krun = home / "run-machd"
        krun.mkdir(mode=0o700)
        os.chown(krun, pw.pw_uid, pw.pw_gid)
        kenv = {**env, "XDG_RUNTIME_DIR": str(krun), "DBUS_SESSION_BUS_ADDRESS": f"unix:path={krun}/bus"}
        procs.append(subprocess.Popen([*as_user, "dbus-daemon", "--session", "--nofork", "--nosyslog",
                                       f"--address={kenv['DBUS_SESSION_BUS_ADDRESS']}"], env=kenv,
                                      stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(200):
            if (krun / "bus").exists():
                break
            time.sleep(0.05)
        procs.append(subprocess.Popen([*as_user, str(build / "src" / "machd" / "machd"), "--user"], env=kenv,
                                      stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(200):
            if (krun / "machkit" / "userns").exists():
                break
            time.sleep(0.05)
        if not (krun / "machkit" / "userns").exists():
            sys.exit("machd --user kept no user namespace")

        # 1. command start. Each side is timed by a timer running as its own user (see TIMER).
        def start(run_spec):
            who, argv, e = run_spec
            return timed(who, argv, e)

        t1 = table("start: /bin/true", {
            "rootless spawn -D, machd --user": (as_user, [spawn, "-q", "-P", "-D", str(utree), "/bin/true"], kenv),
            "rootless spawn -D": (as_user, [spawn, "-q", "-P", "-D", str(utree), "/bin/true"], env),
            "root spawn -U -D": ([], [spawn, "-q", "-P", "-U", "-D", str(rtree), "/bin/true"], env),
        }, 4 * reps, start)  # cheap, and noisy on a shared machine: four times as many
        kept_ratio = t1["rootless spawn -D, machd --user"] / t1["root spawn -U -D"]
        print(f"  ratio rootless (kept user namespace) / root -U: {kept_ratio:.2f}x (target <= 1.3x)")
        print(f"  ratio rootless (own user namespace) / root -U: {t1['rootless spawn -D'] / t1['root spawn -U -D']:.2f}x")
        if start_only:
            return

        # 3. podman rootless, same user, offline image of the same tree, with storage of its own in
        # the user's home (graph root and run root), removed with the home at the end.
        tar = home / "bb.tar"
        subprocess.run(["tar", "-C", str(utree), "-cf", str(tar), "."], check=True)
        os.chown(tar, pw.pw_uid, pw.pw_gid)
        pm_root, pm_run = home / "podman" / "storage", run / "podman"
        # crun 1.8 refuses rootless containers on this hybrid host ("cgroups in hybrid mode not
        # supported"); runc runs them without cgroups, as our rootless start does here.
        podman = ["podman", "--root", str(pm_root), "--runroot", str(pm_run), "--events-backend=file",
                  "--cgroup-manager=cgroupfs", "--runtime=runc"]
        subprocess.run([*as_user, *podman, "import", str(tar), "localhost/mkbench:latest"], env=env, check=True,
                       capture_output=True, cwd=str(home))
        podman_run = [*podman, "run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit",
                      "nproc=1024:1024", "localhost/mkbench", "/bin/true"]
        timed(as_user, podman_run, env, cwd=str(home))  # warm storage and podman's pause process
        t3 = table("start: podman rootless vs spawn rootless", {
            "podman run --rm (rootless)": (as_user, podman_run, env),
            "rootless spawn -D": (as_user, [spawn, "-q", "-P", "-D", str(utree), "/bin/true"], env),
        }, max(3, reps // 3), start)
        print(f"  podman rootless / spawn rootless: {t3['podman run --rm (rootless)'] / t3['rootless spawn -D']:.1f}x "
              "(target >= 10x)")

        # 2. boot: the bookworm fixture, unpacked by the user as root inside; root boots a copy of its own
        fixture = subprocess.run([str(HELPERS / "debian-fixture.sh")], capture_output=True, text=True,
                                 check=True).stdout.strip()
        ubook = home / "bookworm"
        ubook.mkdir()
        os.chown(ubook, pw.pw_uid, pw.pw_gid)
        pack = subprocess.Popen(["tar", "-C", fixture, "--numeric-owner", "--exclude=./dev/*", "-cf", "-", "."],
                                stdout=subprocess.PIPE)
        subprocess.run([*as_user, "unshare", "--user", "--map-auto", "--map-root-user", "tar", "-C", str(ubook),
                        "--numeric-owner", "-xpf", "-"], stdin=pack.stdout, env=env, check=True)
        pack.stdout.close()
        pack.wait()
        rbook = root_tmp / "bookworm"
        subprocess.run(["cp", "-a", fixture, str(rbook)], check=True)
        (cg / "spawn").mkdir(parents=True)
        for f in (cg, cg / "cgroup.procs", cg / "cgroup.subtree_control", cg / "cgroup.threads", cg / "spawn",
                  cg / "spawn" / "cgroup.procs"):
            os.chown(f, pw.pw_uid, pw.pw_gid)
        enter = f'echo $$ > {cg}/spawn/cgroup.procs && exec "$@"'
        runs = {
            "rootless spawn -bD": ["sh", "-c", enter, "sh", *as_user, spawn, "-bD", str(ubook), "--console=read-only"],
            "root spawn -bD": [spawn, "-bD", str(rbook), "--console=read-only", "-M", "mkrb-root"],
        }
        res = {k: [] for k in runs}
        failed = {k: 0 for k in runs}
        breps = max(3, reps // 3)
        for _ in range(breps):
            for k, a in runs.items():
                m = boot_once(a, env=env)
                if m.get("rc") != 0 or "multi_user" not in m:
                    # Said, not hidden: a boot or its shutdown failed; not counted in the median.
                    print(f"boot failed: {k}: {m}", file=sys.stderr)
                    failed[k] += 1
                    empty_cgroup(cg)
                    continue
                res[k].append(m["multi_user"])
        if not all(res.values()):
            sys.exit(f"no boot to multi-user succeeded: {failed}")
        print(f"\nboot to multi-user (median of {breps}, ms; failed: {failed})")
        med = {k: statistics.median(v) * 1000 for k, v in res.items()}
        for k, m in med.items():
            print(f"  {k:<34} {m:9.1f}")
        print(f"  ratio rootless / root: {med['rootless spawn -bD'] / med['root spawn -bD']:.2f}x")

        print("\nsummary (issue 16's three rows, medians in ms, this run)")
        rows = [
            ("rootless start vs root -U", t1["rootless spawn -D, machd --user"], t1["root spawn -U -D"], "<= 1.3x"),
            ("  (no machd --user)", t1["rootless spawn -D"], t1["root spawn -U -D"], ""),
            ("rootless boot vs root boot", med["rootless spawn -bD"], med["root spawn -bD"], ""),
            ("podman rootless vs ours", t3["podman run --rm (rootless)"], t3["rootless spawn -D"], ">= 10x"),
        ]
        print(f"  {'row':<28} {'A':>9} {'B':>9} {'A/B':>7}  target")
        for title, x, y, target in rows:
            print(f"  {title:<28} {x:9.1f} {y:9.1f} {x / y:6.2f}x  {target}")
    finally:
        end_all(procs)  # machd --user (its holder goes with it), then its bus
        # Rootless podman keeps a pause process holding its user namespace: ours to end, by its pid.
        pause = home / "run" / "libpod" / "tmp" / "pause.pid"
        if pause.exists():
            try:
                os.kill(int(pause.read_text().strip()), signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass
        if cg.exists():
            empty_cgroup(cg)
            for sub in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                try:
                    sub.rmdir()
                except OSError:
                    pass
            try:
                cg.rmdir()
            except OSError as e:
                print(f"could not remove {cg}: {e}", file=sys.stderr)
        r = subprocess.run(["userdel", "-r", name], capture_output=True, text=True)
        if r.returncode not in (0, 12):  # 12: home already gone
            print(f"userdel {name} failed: {r.stderr.strip()}", file=sys.stderr)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(root_tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
