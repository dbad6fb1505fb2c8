"""machd's helpers that enter a machine (T-03): once inside the machine's PID namespace they are
visible to container root, who holds CAP_SYS_PTRACE there even under -U. They make themselves
non-dumpable before joining, so the guest can neither trace them nor read their /proc files
(their fds are machd's until they close them). Asserted from inside a -U container. Root only."""
import pathlib
import shutil
import sys

import pytest

from test_machctl import Containers, MACHCTL, machctl, tree  # noqa: F401  (tree is a fixture)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "helpers"))
from hostile import build_probe  # noqa: E402

pytestmark = pytest.mark.skipif(not MACHCTL.exists(), reason="machctl not built")


def test_guest_root_cannot_trace_or_read_the_exec_helper(bus, machd, tree, tmp_path):
    shutil.copy2(build_probe(tmp_path), tree / "probe")
    c = Containers(bus, tree)
    try:
        c.start("mc-ptrace", extra=("-U",))
        # The command's parent is machd's waiter, which joined the machine's namespaces. The guest's
        # own processes stay traceable (the control: the probe traces a sleep of its own).
        script = ("sleep 100 & own=$!; /probe ptrace $own; kill $own; "
                  "/probe ptrace $PPID; ls /proc/$PPID/fd >/dev/null 2>&1 && echo FD_READ; "
                  "cat /proc/$PPID/environ >/dev/null 2>&1 && echo ENVIRON_READ; id -u")
        r = machctl(bus, "shell", "mc-ptrace", "/bin/sh", "-c", script)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.split("\n")
        assert lines[0] == "SEIZED", r.stdout
        assert lines[1] == "ptrace errno=1", r.stdout  # EPERM
        assert "FD_READ" not in r.stdout and "ENVIRON_READ" not in r.stdout, r.stdout
        assert lines[2] == "0", "the command runs as root inside"
    finally:
        c.cleanup()


def host_mountinfo():
    return pathlib.Path("/proc/self/mountinfo").read_text().splitlines()


def test_machctl_bind_destination_swapped_to_a_symlink_stays_inside(bus, machd, tree, tmp_path):
    # The guest swaps the destination's parent between a directory and a symlink to a host path
    # while machd binds into it: the helper resolves the path in the machine's own mount
    # namespace and root, so whatever wins the race, the host's directory and mount table stay
    # untouched. (machd refuses bind under -U, as machined: this runs without -U.)
    victim = tmp_path / "victim"
    victim.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_text("bound\n")
    c = Containers(bus, tree)
    try:
        # The symlink's target exists inside too, so that a bind through it can succeed there.
        swap = (f"mkdir -p {victim}; while :; do rm -rf /mnt/sw; mkdir -p /mnt/sw; rm -rf /mnt/sw; "
                f"ln -s {victim} /mnt/sw; done")
        c.start("mc-bindrace", script=f"( {swap} ) >/dev/null 2>&1 & wait")
        outcomes = set()
        for _ in range(60):
            r = machctl(bus, "bind", "--mkdir", "mc-bindrace", src, "/mnt/sw/x")
            outcomes.add(r.returncode)
        assert list(victim.iterdir()) == [], "nothing was created in the host's directory"
        # (Other tests may mount meanwhile: only ours count.)
        assert not any(str(tmp_path) in line for line in host_mountinfo()), "no mount appeared on the host"
        # Some of the binds landed (inside the machine, wherever the race put them).
        assert 0 in outcomes, outcomes
    finally:
        c.cleanup()
