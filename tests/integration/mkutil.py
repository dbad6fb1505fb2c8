"""Small helpers shared by the integration tests (imported by name: conftest.py is not importable
as a module once several test directories have one)."""


def host_mounts():
    """The host's mount points, for before/after comparisons. Network namespaces pinned under
    /run/netns belong to other tests running at the same time, not to what is being checked."""
    with open("/proc/self/mountinfo") as f:
        return sorted(p for p in (line.split()[4] for line in f) if not p.startswith("/run/netns/"))
