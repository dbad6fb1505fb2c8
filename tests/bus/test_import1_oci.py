"""import1's PullOci/ImportOci in machd, driven by `machctl pull-oci` / `import-oci` (issue 18):
the registry, layouts and checks are those of tests/integration/test_oci_images.py."""
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import TRANSFER, wait_for

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "integration"))
from test_oci_images import (app_layout, check_app_tree, check_settings, check_stack, front,  # noqa: E402,F401
                             pushed, registry)
from test_import1 import MACHCTL, machctl, transfers_of  # noqa: E402

pytestmark = [pytest.mark.skipif(not TRANSFER.exists(), reason="machd-transfer not built"),
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def test_machctl_pull_oci_cancel_and_import_oci(bus, machd, app_layout, pushed, front):
    # A pull stuck on a stalling registry, cancelled: nothing of it stays in the pool.
    f = front("stall")
    p = subprocess.Popen([str(MACHCTL), "-q", "pull-oci", f"{f.addr}/test/app:v1", "slow"], env=bus.env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: transfers_of(bus) != [], timeout=10)
    t = transfers_of(bus)[0]
    assert t["type"] == "pull-oci" and t["local"] == "slow" and t["remote"] == f"{f.addr}/test/app:v1"
    # Cancel once the blob download is under way (some layer temporaries exist).
    assert wait_for(lambda: any(e.startswith(".#pull-oci-layer-") for e in os.listdir(machd.pool)), timeout=20)
    machctl(bus, "cancel-transfer", t["id"])
    assert p.wait(30) != 0
    assert "canceled" in p.stderr.read()
    assert wait_for(lambda: os.listdir(machd.pool) == [], timeout=10), os.listdir(machd.pool)

    machctl(bus, "import-oci", app_layout, "offline")
    check_stack(machd.pool, "offline")
    check_settings(machd.pool, "offline")
    r = machctl(bus, "pull-oci", "--flatten", f"{pushed}/test/app:v1")  # name from the reference: "app"
    assert "done" in r.stderr
    check_app_tree(machd.pool / "app")
    r = machctl(bus, "pull-oci", f"{pushed}/test/app:v1", check=False)
    assert r.returncode != 0 and "already exists" in r.stderr
    r = machctl(bus, "pull-oci", "--force", f"{pushed}/test/app:v1")
    check_stack(machd.pool, "app")
    assert not (machd.pool / "app").exists()  # --force replaced the flattened form


def test_machctl_start_runs_an_oci_image(bus, tmp_path, leaders, busybox_tree_template):
    """StartMachine runs a flattened OCI image's Entrypoint+Cmd (no --boot: the image has no init),
    with the untrusted NAME.nspawn next to it, in a user namespace like every machd machine."""
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("host runs systemd: start goes to spawn@.service")
    from conftest import Machd, cleanup_machine_cgroups
    from test_oci_images import app_layers, build_layout
    spawn = TRANSFER.parent.parent / "spawn" / "spawn"
    lay = build_layout(tmp_path / "lay", app_layers(busybox_tree_template),
                       {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo \"$GREETING from $(pwd)\" > /ran; exec sleep 1000"],
                        "Env": ["GREETING=hi"], "WorkingDir": "/app"})
    pool = tmp_path / "pool"
    pool.mkdir(mode=0o700)
    d = Machd(bus, tmp_path / "machines", pool=pool,
              extra_args=["--spawn-path=%s" % spawn, "--log-dir=%s" % (tmp_path / "logs")]).start()
    try:
        machctl(bus, "import-oci", "--flatten", lay, "ociapp")
        r = machctl(bus, "start", "--timeout=20", "ociapp")
        assert "Started machine ociapp" in r.stderr
        assert wait_for(lambda: (pool / "ociapp" / "ran").exists(), timeout=20)
        assert (pool / "ociapp" / "ran").read_text() == "hi from /app\n"
        machctl(bus, "terminate", "ociapp")
        # The same as a layer stack: the overlay is the root, writes land in rw/.
        machctl(bus, "import-oci", lay, "ocistack")
        machctl(bus, "start", "--timeout=20", "ocistack")
        ran = pool / "ocistack.mstack" / "rw" / "ran"
        assert wait_for(lambda: ran.exists(), timeout=20)
        assert ran.read_text() == "hi from /app\n"
        # machd starts machines with -U: the layers are idmapped, not chowned; rw/ is in the range.
        assert os.stat(ran).st_uid >= 0x10000
        assert os.stat(pool / "ocistack.mstack" / "layer@0" / "bin" / "busybox").st_uid == 0
        machctl(bus, "terminate", "ocistack")
    finally:
        d.stop()
        cleanup_machine_cgroups(["ociapp", "ocistack"])


def layer_dirs(pool):
    return sorted(e for e in os.listdir(pool) if e.startswith(".oci-sha256-"))


def stack_layers(pool, name):
    st = pool / f"{name}.mstack"
    return sorted(os.readlink(st / e)[3:] for e in os.listdir(st) if e.startswith("layer@"))


def test_machctl_manages_stacks_and_their_shared_layers(bus, machd, app_layout, busybox_tree_template, tmp_path):
    """Stacks are images of type mstack: list-images, image-status, clone, rename, read-only and
    remove work on them, with NAME.nspawn/NAME.oci-config alongside. remove drops the layers no
    other stack links and never one another image still uses; clean collects unlinked layers."""
    from test_oci_images import app_layers, build_layout, tar_of, ti
    pool = machd.pool
    machctl(bus, "import-oci", app_layout, "first")
    base, lower, _ = app_layers(busybox_tree_template)
    lay = build_layout(tmp_path / "second", [base, lower, tar_of([ti("own", data=b"own\n")])], {})
    machctl(bus, "import-oci", lay, "second")
    first, second = stack_layers(pool, "first"), stack_layers(pool, "second")
    shared = sorted(set(first) & set(second))
    assert len(shared) == 2 and len(layer_dirs(pool)) == 4

    lines = {l.split()[0]: l.split() for l in machctl(bus, "list-images", "--no-legend").stdout.splitlines()}
    assert lines["first"][1] == "mstack" and lines["second"][1] == "mstack", lines
    assert "first.mstack" not in lines
    # The image's files are read from the merged layers (a detached overlay in machd, gone after).
    osr = bus.call_json("GetImageOSRelease", "s", "first")[0]
    assert osr.get("ID") == "busybox", osr
    with open("/proc/self/mountinfo") as f:
        assert ".oci-sha256-" not in f.read()

    machctl(bus, "read-only", "second")
    lines = {l.split()[0]: l.split() for l in machctl(bus, "list-images", "--no-legend").stdout.splitlines()}
    assert lines["second"][2] == "yes", lines
    r = machctl(bus, "rename", "second", "nope", check=False)
    assert r.returncode != 0
    machctl(bus, "read-only", "second", "no")

    machctl(bus, "clone", "second", "third")
    assert stack_layers(pool, "third") == second
    assert (pool / "third.nspawn").exists() and (pool / "third.oci-config").exists()
    machctl(bus, "rename", "third", "fourth")
    assert (pool / "fourth.mstack").is_dir() and (pool / "fourth.nspawn").exists()
    assert not (pool / "third.mstack").exists() and not (pool / "third.nspawn").exists()

    # first goes: its own top layer with it, the two it shares with second stay.
    machctl(bus, "remove", "first")
    assert not [e for e in os.listdir(pool) if e.startswith("first.")]
    assert layer_dirs(pool) == sorted(second)
    # second goes, but fourth (its clone) still links the same layers: they all stay.
    machctl(bus, "remove", "second")
    assert layer_dirs(pool) == sorted(second)
    assert all((pool / l).is_dir() for l in shared)

    # clean collects layers nothing links (a killed pull's, say), and keeps those in use.
    stray = pool / (".oci-sha256-" + "f" * 64)
    stray.mkdir()
    machctl(bus, "clean")
    assert not stray.exists() and layer_dirs(pool) == sorted(second)
    machctl(bus, "remove", "fourth")
    assert os.listdir(pool) == []


def test_clean_waits_for_running_pulls(bus, machd, pushed, front):
    """Unused-layer cleanup never runs under a transfer (which may be about to link a layer it
    found in the pool): while a pull runs, clean leaves layers alone; after it, they go."""
    pool = machd.pool
    stray = pool / (".oci-sha256-" + "e" * 64)
    stray.mkdir()
    f = front("stall")
    p = subprocess.Popen([str(MACHCTL), "-q", "pull-oci", f"{f.addr}/test/app:v1", "slow"], env=bus.env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: any(e.startswith(".#pull-oci-layer-") for e in os.listdir(pool)), timeout=20)
        machctl(bus, "clean")
        assert stray.is_dir()
        t = transfers_of(bus)[0]
        machctl(bus, "cancel-transfer", t["id"])
        assert p.wait(30) != 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert wait_for(lambda: os.listdir(pool) == [stray.name], timeout=10), os.listdir(pool)
    machctl(bus, "clean")
    assert os.listdir(pool) == []


def test_machctl_start_boots_an_oci_image_with_an_init(bus, tmp_path):
    """An OCI image whose command is an init (the Debian fixture as a one-layer image) is booted
    by StartMachine, flattened and as a stack (idmapped layer, rw/ as the upper layer), to
    multi-user; poweroff ends it."""
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("host runs systemd: start goes to spawn@.service")
    from conftest import Machd, cleanup_machine_cgroups
    from test_oci_images import debian_image_layout
    helpers = pathlib.Path(__file__).resolve().parents[1] / "helpers"
    r = subprocess.run([str(helpers / "debian-fixture.sh")], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        pytest.skip("Debian fixture unavailable: " + r.stderr.strip()[-200:])
    lay = debian_image_layout(pathlib.Path(r.stdout.strip()), tmp_path / "lay", ["/lib/systemd/systemd"])
    spawn = TRANSFER.parent.parent / "spawn" / "spawn"
    pool, logs = tmp_path / "pool", tmp_path / "logs"
    pool.mkdir(mode=0o700)
    d = Machd(bus, tmp_path / "machines", pool=pool, extra_args=["--spawn-path=%s" % spawn, "--log-dir=%s" % logs]).start()
    names = ["debflat", "debstack"]
    try:
        machctl(bus, "import-oci", "--flatten", lay, "debflat")
        machctl(bus, "import-oci", lay, "debstack")
        for name in names:
            machctl(bus, "start", "--timeout=30", name)
            log = logs / f"{name}.log"
            # Ready: the guest's systemd sent READY=1 (relayed by spawn), so it booted.
            w = subprocess.run([str(MACHCTL), "wait", "--timeout=150", name], env=bus.env(), capture_output=True,
                               text=True, timeout=180)
            assert w.returncode == 0, w.stderr + log.read_text(errors="replace")
            r = machctl(bus, "shell", name, "/bin/systemctl", "is-system-running")
            assert r.stdout.strip() in ("running", "degraded"), (r.stdout, r.stderr)
            r = machctl(bus, "shell", name, "/bin/systemctl", "is-active", "multi-user.target")
            assert r.stdout.strip() == "active", (r.stdout, r.stderr)
            machctl(bus, "poweroff", "--timeout=60", name)
            assert wait_for(lambda: name not in machctl(bus, "list", "--no-legend").stdout, timeout=60), \
                log.read_text(errors="replace")
        assert (pool / "debstack.mstack" / "rw" / "etc").is_dir()
        assert os.stat(pool / "debstack.mstack" / "layer@0" / "etc").st_uid == 0
    finally:
        d.stop()
        cleanup_machine_cgroups(names)


def test_machctl_export_tar_of_a_stack(bus, machd, app_layout, tmp_path):
    """import1's ExportTar of a layer stack (machctl export-tar) writes its merged view: the same
    tar as the flattened image's, with no whiteouts; the pool is as before."""
    from test_oci_images import tar_entries
    machctl(bus, "import-oci", app_layout, "st")
    machctl(bus, "import-oci", "--flatten", app_layout, "fl")
    before = sorted(os.listdir(machd.pool))
    machctl(bus, "export-tar", "st", tmp_path / "st.tar")
    machctl(bus, "export-tar", "fl", tmp_path / "fl.tar")
    st = tar_entries(tmp_path / "st.tar")
    assert st == tar_entries(tmp_path / "fl.tar")
    assert "data/keep" in st and "data/old" not in st and not [n for n in st if ".wh." in n]
    assert sorted(os.listdir(machd.pool)) == before
    with open("/proc/self/mountinfo") as f:
        assert ".oci-sha256-" not in f.read()
