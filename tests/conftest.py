"""Shared fixtures for the root-only test tiers (integration, bus).

Everything runs against the real kernel as root: real namespaces, mounts and cgroups.
MK_BUILD_DIR points at the meson build directory (default: ./build at the repository root).
"""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
BUILD = pathlib.Path(os.environ.get("MK_BUILD_DIR", REPO / "build")).resolve()
HELPERS = REPO / "tests" / "helpers"
sys.path.append(str(REPO / "tests" / "integration"))  # mkutil, for the hooks below and the bus tests


def _binary(name, sub):
    path = BUILD / "src" / sub / name
    if not path.exists():
        pytest.skip(f"{path} not built")
    return str(path)


@pytest.fixture(scope="session")
def spawn_bin():
    return _binary("spawn", "spawn")


@pytest.fixture(scope="session")
def criu_cmd():
    """criu 4.2 from the cached Debian sid fixture, run through that tree's loader (Debian 12's criu
    3.17 cannot run on this kernel): a command line for MK_CRIU / machrun --criu."""
    r = subprocess.run([str(HELPERS / "sid-fixture.sh")], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("no Debian sid fixture (criu 4.2): " + r.stderr.strip()[-200:])
    t = r.stdout.strip()
    if not os.path.exists(t + "/usr/sbin/criu"):
        pytest.skip("the sid fixture has no criu")
    return (f"{t}/lib64/ld-linux-x86-64.so.2 --library-path {t}/usr/lib/x86_64-linux-gnu:{t}/lib/x86_64-linux-gnu "
            f"{t}/usr/sbin/criu")


@pytest.fixture(scope="session")
def busybox_tree_template(tmp_path_factory):
    d = tmp_path_factory.mktemp("bbtemplate") / "tree"
    subprocess.run([str(HELPERS / "busybox-tree.sh"), str(d)], check=True)
    return d


@pytest.fixture
def tree(busybox_tree_template, tmp_path):
    """A fresh copy of the busybox tree per test, named after the test (the machine name)."""
    d = tmp_path / "bbtree"
    shutil.copytree(busybox_tree_template, d, symlinks=True)
    return d


@pytest.fixture(scope="session")
def debian_tree():
    if os.environ.get("MK_SKIP_DEBIAN"):
        pytest.skip("MK_SKIP_DEBIAN is set")
    out = subprocess.run([str(HELPERS / "debian-fixture.sh")], check=True, capture_output=True, text=True)
    return pathlib.Path(out.stdout.strip())


@pytest.fixture(autouse=True)
def private_basetemp(request, tmp_path_factory):
    """pytest's temp dirs stay 0700: spawn -U refuses a tree other users can reach, and every test
    keeps its trees below them. A test that widens them (to let an unprivileged client in) must
    put them back; one that does not is named here and the modes are set back for the next."""
    import stat  # noqa: PLC0415
    import warnings  # noqa: PLC0415

    base = tmp_path_factory.getbasetemp()
    yield
    # Only pytest's own directories (/tmp/pytest-of-USER and its runs): a --basetemp given on the
    # command line may sit right in /tmp, which must stay 1777.
    for d in [p for p in (base.parent, base) if p.name.startswith("pytest-") or p.parent.name.startswith("pytest-of-")]:
        mode = stat.S_IMODE(os.stat(d).st_mode)
        if mode != 0o700:
            os.chmod(d, 0o700)
            warnings.warn(f"{request.node.nodeid} left {d} with mode {mode:o}; set back to 0700")



# A spawn, machrun or machctl that a test body started and left running outlives the test: it holds
# its machine name, mounts and cgroups, and the tests after it fail on them (a Popen whose wait timed
# out is not killed). Such processes are ended after the test's teardown, and the test is named.
_LAUNCHERS = {"spawn", "machrun", "machctl"}
_started_in_body = None
_popen_init = subprocess.Popen.__init__


def _tracking_popen_init(self, *args, **kwargs):
    _popen_init(self, *args, **kwargs)
    if _started_in_body is not None:
        argv = self.args if isinstance(self.args, (list, tuple)) else str(self.args).split()
        if argv and os.path.basename(str(argv[0])) in _LAUNCHERS:
            _started_in_body.append(self)


subprocess.Popen.__init__ = _tracking_popen_init


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    global _started_in_body
    item._mk_started = _started_in_body = []
    try:
        yield
    finally:
        _started_in_body = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    import warnings  # noqa: PLC0415

    from mkutil import end_process  # noqa: PLC0415

    for p in getattr(item, "_mk_started", []):
        if p.poll() is not None:
            continue
        end_process(p, grace=5)
        warnings.warn(f"{item.nodeid} left {os.path.basename(str(p.args[0]))} (pid {p.pid}) running; ended it")
