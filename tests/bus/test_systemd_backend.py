"""machd's systemd scope backend against a stand-in for PID 1 on the private bus
(tests/bus/helpers/fake_systemd1): what StartTransientUnit receives, the deferred CreateMachine reply,
job failure, and StopUnit when the machine ends."""
import subprocess

import pytest

from conftest import BUILD, DEST, Machd, create, machine_cgroups, machine_path, wait_for

FAKE = BUILD / "tests" / "bus" / "fake-systemd1"


@pytest.fixture
def fake_systemd(bus):
    log = bus.tmp / "systemd1.log"
    p = subprocess.Popen([str(FAKE), "--log=%s" % log, "--fail=machine-broken.scope"], env=bus.env(),
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    yield log
    p.terminate()
    p.wait()


@pytest.fixture
def machd_systemd(bus, fake_systemd, tmp_path, leaders):
    import conftest
    d = Machd(bus, tmp_path / "machines", extra_args=["--scope-backend=systemd"]).start()
    yield d
    d.stop()
    leaders.cleanup()
    conftest.cleanup_machine_cgroups(list(d.created))


def test_create_machine_through_systemd(bus, fake_systemd, machd_systemd, leaders):
    assert "scope backend systemd" in machd_systemd.log.read_text()
    p = leaders.spawn()
    out = create(bus, "sd", p.pid, props=[("Slice", "s", "machine.slice"), ("CPUAccounting", "b", "true"),
                                          ("DevicePolicy", "s", "closed")])
    assert out.stdout.strip() == 'o "%s"' % machine_path("sd")
    log = fake_systemd.read_text()
    assert "Subscribe" in log
    start = log[log.index("StartTransientUnit machine-sd.scope fail"):].splitlines()
    props = [l.strip() for l in start[1:] if l.startswith("  ")]
    # machined 252's set in its order, then the caller's verbatim.
    assert props[:7] == ["Slice=machine.slice", "Description=Container sd", "PIDs=%d" % p.pid,
                         "Delegate=true", "CollectMode=inactive-or-failed", "AddRef=true", "TasksMax=16384"]
    assert props[7:10] == ["Slice=machine.slice", "CPUAccounting=true", "DevicePolicy=closed"]
    # The reply came after the job: the machine is running and the state file has no SCOPE_JOB.
    assert bus.get_property(machine_path("sd"), "org.freedesktop.machine1.Machine", "State") == "running"
    assert "SCOPE_JOB=" not in (machd_systemd.state_dir / "sd").read_text()
    assert str(p.pid) in (machine_cgroups("sd")[0] / "cgroup.procs").read_text().split()
    # The leader dies: machd stops and unrefs the unit.
    p.kill()
    p.wait()
    assert wait_for(lambda: "UnrefUnit machine-sd.scope" in fake_systemd.read_text())
    assert "StopUnit machine-sd.scope fail" in fake_systemd.read_text()
    assert not machine_cgroups("sd")[0].exists()
    assert not (machd_systemd.state_dir / "sd").exists()


def test_job_failure_is_job_failed(bus, fake_systemd, machd_systemd, leaders):
    p = leaders.spawn()
    r = bus.busctl("call", DEST, "/org/freedesktop/machine1", "org.freedesktop.machine1.Manager", "CreateMachine",
                   "sayssusa(sv)", "broken", 0, "t", "container", p.pid, "", 0, check=False)
    assert r.returncode != 0
    assert "Start job for unit machine-broken.scope failed with 'failed'" in r.stderr
    assert "broken" not in bus.call("ListMachines").stdout
    assert not (machd_systemd.state_dir / "broken").exists()
    assert p.poll() is None
