#!/usr/bin/env python3
"""The user's machd (issue 16), side by side in one run, in alternation, all as one ordinary user in
a delegated cgroup2 group:

  1. start `/bin/true`: rootless spawn registering with `machd --user` on the user's session bus
     vs the same spawn with no session bus, and with a session bus but no machd on it, vs podman 4.3
     rootless `run --rm` (podman records its container in its own store: its registration);
  2. listing: `machctl --user list` vs `podman ps -a` (rootless).

usage: bench/user_machd.py BUILD_DIR [REPS]   (root: it creates a user with subordinate ranges, a
session dbus-daemon and machd --user for it, and removes all of them at the end)
"""
import os
import pathlib
import pwd
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from rootless import HELPERS, end_all, table, timed  # noqa: E402


def main():
    if os.geteuid() != 0:
        sys.exit("bench/user_machd.py: run as root (it creates a test user)")
    build = pathlib.Path(sys.argv[1]).resolve()
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    spawn = str(build / "src" / "spawn" / "spawn")
    machd = str(build / "src" / "machd" / "machd")
    machctl = str(build / "src" / "machctl" / "machctl")
    name = f"mkub{os.getpid() % 100000}"
    subprocess.run(["useradd", "-m", "-d", f"/home/{name}", "-s", "/bin/sh", name], check=True)
    pw = pwd.getpwnam(name)
    home = pathlib.Path(pw.pw_dir)
    unified = pathlib.Path("/sys/fs/cgroup/unified")
    cg = (unified if (unified / "cgroup.procs").exists() else pathlib.Path("/sys/fs/cgroup")) / f"{name}.bench"
    procs = []
    try:
        run = home / "run"
        run.mkdir(mode=0o700)
        env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(home), "XDG_RUNTIME_DIR": str(run)}
        bus_env = {**env, "DBUS_SESSION_BUS_ADDRESS": f"unix:path={run}/bus"}
        as_user = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"]
        utree = home / "bb"
        subprocess.run([str(HELPERS / "busybox-tree.sh"), str(utree)], check=True)
        subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", str(home)], check=True)
        (cg / "spawn").mkdir(parents=True)
        for f in (cg, cg / "cgroup.procs", cg / "cgroup.subtree_control", cg / "cgroup.threads", cg / "spawn",
                  cg / "spawn" / "cgroup.procs"):
            os.chown(f, pw.pw_uid, pw.pw_gid)
        enter = ["sh", "-c", f'echo $$ > {cg}/spawn/cgroup.procs && exec "$@"', "sh", *as_user]

        procs.append(subprocess.Popen([*as_user, "dbus-daemon", "--session", "--nofork", "--nosyslog",
                                       f"--address={bus_env['DBUS_SESSION_BUS_ADDRESS']}"], env=env,
                                      stderr=subprocess.DEVNULL))
        # A second session bus with no machd on it: what every rootless start on a desktop pays.
        # Its own runtime directory, as another login of the same user without machd --user would have.
        run2 = home / "run2"
        run2.mkdir(mode=0o700)
        os.chown(run2, pw.pw_uid, pw.pw_gid)
        idle_env = {**env, "XDG_RUNTIME_DIR": str(run2), "DBUS_SESSION_BUS_ADDRESS": f"unix:path={run2}/bus"}
        procs.append(subprocess.Popen([*as_user, "dbus-daemon", "--session", "--nofork", "--nosyslog",
                                       f"--address={idle_env['DBUS_SESSION_BUS_ADDRESS']}"], env=env,
                                      stderr=subprocess.DEVNULL))
        while not (run / "bus").exists() or not (run2 / "bus").exists():
            time.sleep(0.02)
        procs.append(subprocess.Popen([*as_user, machd, "--user"], env=bus_env, stderr=subprocess.DEVNULL))
        while subprocess.run([*as_user, machctl, "--user", "list"], env=bus_env, capture_output=True).returncode:
            time.sleep(0.05)

        tar = home / "bb.tar"
        subprocess.run(["tar", "-C", str(utree), "-cf", str(tar), "."], check=True)
        os.chown(tar, pw.pw_uid, pw.pw_gid)
        # crun 1.8 refuses rootless containers on this hybrid host; runc runs them (bench/rootless.py).
        # podman would ask the session bus for a systemd user manager there is none of: no bus for it.
        env = {**env, "DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent"}
        podman = [*as_user, "podman", "--events-backend=file", "--cgroup-manager=cgroupfs", "--runtime=runc"]
        subprocess.run([*podman, "import", str(tar), "localhost/mkbench:latest"], env=env, check=True,
                       capture_output=True, cwd=str(home))
        # warm storage
        timed(as_user, [*podman[len(as_user):], "run", "--rm", "--network", "none", "localhost/mkbench", "/bin/true"],
              env, cwd=str(home))

        def measure(v):  # each row's argv starts with its own way in (setpriv, the cgroup): no prefix
            argv, e = v
            return timed([], argv, e, cwd=str(home))

        t1 = table("start: /bin/true (rootless)", {
            "spawn + machd --user": ([*enter, spawn, "-q", "-P", "-D", str(utree), "/bin/true"], bus_env),
            "spawn, no manager": ([*enter, spawn, "-q", "-P", "-D", str(utree), "/bin/true"], env),
            "spawn, session bus, no machd": ([*enter, spawn, "-q", "-P", "-D", str(utree), "/bin/true"], idle_env),
            "podman run --rm": ([*enter, *podman[len(as_user):], "run", "--rm", "--network", "none",
                                 "localhost/mkbench", "/bin/true"], env),
        }, reps, measure)
        reg = t1["spawn + machd --user"]
        print(f"  registration costs {reg / t1['spawn, no manager']:.2f}x the unregistered start; "
              f"podman / registered spawn: {t1['podman run --rm'] / reg:.1f}x")

        t2 = table("list (rootless)", {
            "machctl --user list": ([*as_user, machctl, "--user", "--no-pager", "list"], bus_env),
            "podman ps -a": ([*podman, "ps", "-a"], env),
        }, reps, measure)
        print(f"  podman ps / machctl --user list: {t2['podman ps -a'] / t2['machctl --user list']:.1f}x")
    finally:
        end_all(procs)
        pause = home / "run" / "libpod" / "tmp" / "pause.pid"
        if pause.exists():
            try:
                os.kill(int(pause.read_text().strip()), signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass
        if cg.exists():
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
        if r.returncode not in (0, 12):
            print(f"userdel {name} failed: {r.stderr.strip()}", file=sys.stderr)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
