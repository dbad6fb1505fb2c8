"""Helpers for the hostile-container tests (issue 19): the probe (probe.c) built static, and a
terminal of our own for it to try typing into."""
import os
import pathlib
import select
import subprocess
import time

HERE = pathlib.Path(__file__).resolve().parent


def build_probe(directory):
    out = pathlib.Path(directory) / "probe"
    subprocess.run(["cc", "-static", "-O2", "-o", str(out), str(HERE / "probe.c")], check=True)
    return out


def in_script(command, timeout=60, env=None):
    """Runs a shell command line on a fresh pseudo-terminal (script(1)): the terminal is the one
    the container may try to type into; returns everything written to it. script's own stdin stays
    an open, silent pipe: at EOF script would type ^D into the terminal."""
    p = subprocess.Popen(["script", "-qec", command, "/dev/null"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            out += chunk
    finally:
        p.stdin.close()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return out.decode(errors="replace").replace("\r", "")


def injection_line(cmd, probe_bin):
    """After cmd, the host's own probe pushes "SENTINEL\\n" (root on the host may), so the read
    ends at once: the line shows whether the container got anything in first."""
    return (f"{cmd}; {probe_bin} tiocsti 'SENTINEL\\n' >/dev/null; read l; echo \"HOSTGOT=[$l]\"")
