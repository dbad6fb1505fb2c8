#!/usr/bin/env python3
"""Boot benchmark: the same Debian tree booted with spawn -b and with systemd-nspawn -b, in
alternation. Measures time to "Reached target ... multi-user.target" on the console and time from
SIGTERM to exit (the getty's "login: " prompt stands in when systemd holds its status line back),
and (spawn only) spawn's own time until it exec'd the guest's init.

usage: bench/boot.py BUILD_DIR TREE [REPS [SID_TREE]]   (root; the trees are booted in place: pass
scratch copies). SID_TREE, a systemd >= 258 guest, gets a second table next to the first.
MK_BENCH_BEFORE=OTHER_BUILD_DIR adds that build's spawn to the first table, in the same alternation
(to check that a change left the boot time unchanged).
"""
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import time

ANSI = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]")


def boot_once(argv, env=None):
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = b""
    err = b""
    marks = {}
    deadline = t0 + 60
    while True:
        r, _, _ = select.select([p.stdout, p.stderr], [], [], 0.5)
        now = time.monotonic()
        for f in r:
            data = os.read(f.fileno(), 65536)
            if f is p.stdout:
                out += ANSI.sub(b"", data)
            else:
                err += data
        # systemd >= 256 holds back its status lines while a getty owns the console, so the
        # line may never come: the getty's prompt (slightly later) marks multi-user then.
        if "multi_user" not in marks and re.search(rb"Reached target [^\n]*multi-user\.target|login: ", out):
            marks["multi_user"] = now - t0
            marks["sigterm"] = time.monotonic()
            p.send_signal(signal.SIGTERM)
        if p.poll() is not None:
            break
        if now > deadline:
            p.kill()
            break
    p.wait()
    marks["shutdown"] = time.monotonic() - marks.get("sigterm", t0)
    marks["rc"] = p.returncode
    m = re.search(rb"payload exec'd ([0-9.]+) ms", err)
    if m:
        marks["pre_exec_ms"] = float(m.group(1))
    return marks


def run_table(title, runs, reps):
    """Boots each entry of `runs` (name -> (argv, env)) reps times in alternation; prints medians."""
    results = {k: [] for k in runs}
    for _ in range(reps):
        for name, (argv, e) in runs.items():
            time.sleep(1.0)  # isolated starts: nothing left warm from the previous run
            m = boot_once(argv, e)
            if "multi_user" not in m:
                print(f"{name}: did not reach multi-user (rc {m['rc']})", file=sys.stderr)
                continue
            results[name].append(m)
    med = {}
    print(f"{title}, median of {reps} runs each:")
    for name, rows in results.items():
        if not rows:
            continue
        mu = statistics.median(r["multi_user"] for r in rows) * 1e3
        sd = statistics.median(r["shutdown"] for r in rows) * 1e3
        pre = [r["pre_exec_ms"] for r in rows if "pre_exec_ms" in r]
        med[name] = (mu, sd)
        extra = f", spawn's own work before exec'ing init {statistics.median(pre):.1f} ms" if pre else ""
        print(f"  {name:30s} multi-user {mu:7.1f} ms   SIGTERM->exit {sd:7.1f} ms{extra}")
    peer = next((n for n in med if n.startswith("nspawn")), None)
    if peer:
        for name in med:
            if name == peer:
                continue
            print(f"  {peer}/{name}: multi-user {med[peer][0] / med[name][0]:.2f}x, "
                  f"shutdown {med[peer][1] / med[name][1]:.2f}x")
    return med


def main():
    build, tree = sys.argv[1], sys.argv[2]
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    sid = sys.argv[4] if len(sys.argv) > 4 else None
    spawn = os.path.join(build, "src", "spawn", "spawn")
    env = dict(os.environ, MK_SPAWN_TIMING="1")
    env.pop("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", None)
    env_unified = dict(env, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
    # The bookworm guest (systemd 252, which runs on either layout): spawn's default for it (the
    # host's layout, hybrid here), the cgroup2 view with the override, and nspawn 252 (hybrid here).
    runs = {
        "spawn": ([spawn, "-q", "-b", "-D", tree, "-M", "benchboot"], env),
        "spawn (cgroup2 view, =1)": ([spawn, "-q", "-b", "-D", tree, "-M", "benchboot"], env_unified),
        "nspawn": (["systemd-nspawn", "--register=no", "--keep-unit", "-q", "-b", "-D", tree, "-M", "benchboot"], env),
    }
    if os.environ.get("MK_BENCH_BEFORE"):
        before = os.path.join(os.environ["MK_BENCH_BEFORE"], "src", "spawn", "spawn")
        runs["spawn (before)"] = ([before, "-q", "-b", "-D", tree, "-M", "benchboot"], env)
    bookworm = run_table(f"boot of {tree} (systemd 252)", runs, reps)
    if "spawn" in bookworm and "spawn (before)" in bookworm:
        print(f"spawn / spawn (before): multi-user {bookworm['spawn'][0] / bookworm['spawn (before)'][0]:.3f}x, "
              f"shutdown {bookworm['spawn'][1] / bookworm['spawn (before)'][1]:.3f}x")
    if not sid:
        return
    # The sid guest (systemd 262: cgroup2 only). nspawn 252 boots it only with the override.
    sidm = run_table(f"boot of {sid} (systemd 262)", {
        "spawn": ([spawn, "-q", "-b", "-D", sid, "-M", "benchsid"], env),
        "nspawn (=1)": (["systemd-nspawn", "--register=no", "--keep-unit", "-q", "-b", "-D", sid, "-M", "benchsid"],
                        env_unified),
    }, reps)
    if "spawn" in bookworm and "spawn" in sidm:
        print(f"spawn: sid/bookworm time to multi-user {sidm['spawn'][0] / bookworm['spawn'][0]:.2f}x")


if __name__ == "__main__":
    main()
