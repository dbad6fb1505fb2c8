"""Small helpers shared by the integration tests (imported by name: conftest.py is not importable
as a module once several test directories have one)."""


def host_mounts():
    """The host's mount points, for before/after comparisons. Network namespaces pinned under
    /run/netns belong to other tests running at the same time, not to what is being checked."""
    with open("/proc/self/mountinfo") as f:
        return sorted(p for p in (line.split()[4] for line in f) if not p.startswith("/run/netns/"))


def wait_for(pred, timeout=10.0, interval=0.05):
    """Polls pred until it is true or timeout seconds have passed; returns its last value."""
    import time  # noqa: PLC0415

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def reap():
    """Collects the processes reparented to us while we are their subreaper (machrun's inits)."""
    import os  # noqa: PLC0415

    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


CGROUP2 = "/sys/fs/cgroup/unified" if __import__("os").path.exists("/sys/fs/cgroup/unified/cgroup.procs") \
    else "/sys/fs/cgroup"


def as_subreaper():
    """A module fixture's body (wrap it with pytest.fixture): the test process becomes the subreaper
    of what it starts, as conmon and containerd's shim are, so machrun's detached inits are
    reparented to it; afterwards machrun's default parent group is removed once empty."""
    import ctypes  # noqa: PLC0415
    import os  # noqa: PLC0415

    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0
    yield
    libc.prctl(pr_set_child_subreaper, 0, 0, 0, 0)
    remove_empty_groups("machrun")


def remove_empty_groups(name):
    """Removes the group `name` below the root of every cgroup hierarchy (cgroup2 and each v1 one)
    where it is left empty: the parent groups machrun makes for its containers' groups stay, as
    runc's do, and a test removes its own."""
    import glob  # noqa: PLC0415
    import os  # noqa: PLC0415

    for group in glob.glob(f"/sys/fs/cgroup/*/{name}") + [f"/sys/fs/cgroup/{name}"]:
        try:
            os.rmdir(group)
        except OSError:
            pass


def end_process(p, grace=20):
    """SIGTERM to a Popen, SIGKILL if it is still there after `grace` seconds; reaped either way."""
    import signal  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def containerd_config(base, sock, top=""):
    """A private containerd 1.6's config.toml up to its plugin tables: state under BASE, its API on
    SOCK. `top` adds top-level keys (they must come before the first table)."""
    return (f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n{top}'
            f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n'
            f'[debug]\n  address = "{base}/debug.sock"\n[metrics]\n  address = ""\n')
