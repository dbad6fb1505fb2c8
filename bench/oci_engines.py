#!/usr/bin/python3
"""Engines over the runtime: `podman run --rm IMAGE true` and `ctr run --rm IMAGE ID true` with
machrun against the same with runc 1.1, side by side in one run (alternating, so both see the same
machine load), medians and ratios. The image is the busybox tree, imported offline into a private
podman store (vfs, cgroupfs, --network=none) and, as an OCI archive, into a private containerd
(its own root, state and socket, stopped by pid at the end). Root only.

  bench/oci_engines.py [BUILD_DIR] [--runs N]
"""
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
args = [a for a in sys.argv[1:] if not a.startswith("--") and not a.isdigit()]
BUILD = pathlib.Path(args[0] if args else REPO / "build").resolve()
RUNS = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 10
MACHRUN = str(BUILD / "src" / "runtime" / "machrun")
RUNC = shutil.which("runc") or "/usr/sbin/runc"
IMAGE = "localhost/bench-engines-bb:latest"
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def timed(argv):
    t = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t


def side_by_side(label, make_argv):
    times = {"machrun": [], "runc": []}
    for name in times:  # once each, untimed: page cache, seccomp cache
        timed(make_argv(name, "warm"))
    for i in range(RUNS):
        for name in ("machrun", "runc"):
            times[name].append(timed(make_argv(name, i + 1)))
    ours, runc = statistics.median(times["machrun"]), statistics.median(times["runc"])
    print(f"{label}, median of {RUNS} (ms)")
    print(f"  machrun {ours * 1e3:7.1f}   runc 1.1 {runc * 1e3:7.1f}   runc/machrun = {runc / ours:.2f}x")


def main():
    if os.geteuid() != 0:
        sys.exit("bench/oci_engines.py: run as root")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-engines-"))
    store = ["podman", "--root", str(tmp / "root"), "--runroot", str(tmp / "runroot"), "--storage-driver", "vfs",
             "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--tmpdir", str(tmp / "ptmp")]
    runtimes = {"machrun": MACHRUN, "runc": RUNC}
    daemon = None
    try:
        tree = tmp / "tree"
        subprocess.run([str(REPO / "tests/helpers/busybox-tree.sh"), str(tree)], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["tar", "-C", str(tree), "-cf", str(tmp / "bb.tar"), "."], check=True)
        subprocess.run([*store, "import", str(tmp / "bb.tar"), IMAGE], check=True, capture_output=True)

        def podman_run(name, i):
            return [*store, "--runtime", runtimes[name], "run", "--rm", "--network=none", *ULIMITS, IMAGE, "true"]

        side_by_side("podman 4.3 run --rm IMAGE true", podman_run)

        if shutil.which("containerd") and shutil.which("ctr"):
            sock = tmp / "c.sock"
            (tmp / "config.toml").write_text(f"""version = 2
root = "{tmp}/croot"
state = "{tmp}/cstate"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = "{tmp}/debug.sock"
[metrics]
  address = ""
""")
            log = open(tmp / "containerd.log", "w")
            daemon = subprocess.Popen(["containerd", "--config", str(tmp / "config.toml")], stdout=log, stderr=log)
            ctr = ["ctr", "-a", str(sock), "-n", "bench-engines"]
            for _ in range(200):
                if subprocess.run([*ctr, "version"], capture_output=True).returncode == 0:
                    break
                time.sleep(0.05)
            subprocess.run([*store, "save", "--format", "oci-archive", "-o", str(tmp / "bb-oci.tar"), IMAGE], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            subprocess.run([*ctr, "image", "import", str(tmp / "bb-oci.tar")], check=True, stdout=subprocess.DEVNULL)

            def ctr_run(name, i):
                return [*ctr, "run", "--rm", "--runc-binary", runtimes[name], IMAGE, f"bench-{name}-{i}", "true"]

            side_by_side("containerd 1.6 ctr run --rm IMAGE ID true", ctr_run)
            subprocess.run([*ctr, "image", "rm", IMAGE], capture_output=True)
    finally:
        if daemon:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        subprocess.run([*store, "rm", "-af", "-t", "0"], capture_output=True)
        subprocess.run([*store, "system", "reset", "-f"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree("/run/containerd/runc/bench-engines", ignore_errors=True)
        for h in pathlib.Path("/sys/fs/cgroup").iterdir():
            try:
                os.rmdir(h / "bench-engines")
            except OSError:
                pass


if __name__ == "__main__":
    main()
