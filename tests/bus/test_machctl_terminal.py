"""`machctl shell` on the caller's own descriptors (pipe mode: stdout not a terminal) hands the
command the user's terminal as stdin. Container root must not type into it (issue 19 A, T-22):
machd's exec helper installs the TIOCSTI/TIOCLINUX refusal before the command runs. Root only."""
import pathlib
import shutil
import sys

import pytest

from conftest import BUILD
from test_machctl import Containers, MACHCTL, tree  # noqa: F401  (tree is a fixture)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "helpers"))
from hostile import build_probe, in_script, injection_line  # noqa: E402

pytestmark = pytest.mark.skipif(not MACHCTL.exists(), reason="machctl not built")


@pytest.fixture
def probe_tree(tree, tmp_path):
    shutil.copy2(build_probe(tmp_path), tree / "probe")
    return tree


@pytest.mark.parametrize("high", ["", "123"])
def test_machctl_shell_in_pipe_mode_cannot_type_into_the_host_terminal(bus, machd, probe_tree, tmp_path, high):
    c = Containers(bus, probe_tree)
    try:
        c.start("mc-tiocsti")
        probe = tmp_path / "probe"
        # `| cat`: stdout is a pipe, so machctl runs the command on its own descriptors and stdin is
        # script's terminal.
        cmd = f"{MACHCTL} shell mc-tiocsti /probe tiocsti 'echo INJECTED\\n' {high} | cat"
        out = in_script(injection_line(cmd, probe), env=bus.env())
        assert "TIOCSTI errno=1" in out, out
        assert "HOSTGOT=[SENTINEL]" in out, out
        # The control, on the host: the same probe and harness do inject.
        out = in_script(injection_line(f"{probe} tiocsti 'echo INJECTED\\n' {high} | cat", probe))
        assert "HOSTGOT=[echo INJECTED]" in out, out
    finally:
        c.cleanup()
