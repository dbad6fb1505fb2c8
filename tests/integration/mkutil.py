"""Small helpers shared by the integration tests (imported by name: conftest.py is not importable
as a module once several test directories have one)."""


def host_mounts():
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split()[4] for line in f)
