"""machctl's image verbs against systemd-machined 252 (machd has no images yet): machined runs on the
private bus in its own mount namespace, with a temporary directory bound over /var/lib/machines, so
the host's pool is never touched. Compared with machinectl 252's output where the format matters.
Root only; skipped without systemd-container."""
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import BUILD, DEST, wait_for

MACHCTL = BUILD / "src" / "machctl" / "machctl"
HELPERS = Path(__file__).resolve().parents[1] / "helpers"
MACHINED = "/lib/systemd/systemd-machined"

pytestmark = pytest.mark.skipif(not os.path.exists(MACHINED) or not shutil.which("machinectl"),
                                reason="systemd-container (systemd-machined 252) not installed")
FAKE_BOOTED = "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system"


@pytest.fixture
def pool(bus):
    d = Path(tempfile.mkdtemp(prefix="mk-pool-"))
    subprocess.run([str(HELPERS / "busybox-tree.sh"), str(d / "img1")], check=True, capture_output=True)
    (d / "img1" / "etc" / "hostname").write_text("imghost\n")
    (d / ".hidden").mkdir()
    m = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                          FAKE_BOOTED + " && mount --bind %s /var/lib/machines && exec %s" % (d, MACHINED)],
                         env=bus.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(lambda: bus.busctl("status", DEST, check=False).returncode == 0, 10)
    yield d
    m.terminate()
    m.wait()
    shutil.rmtree(d, ignore_errors=True)


def mc(bus, *args, rc=0):
    r = subprocess.run([str(MACHCTL)] + [str(a) for a in args], capture_output=True, text=True, env=bus.env(),
                       stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == rc, "machctl %s -> %d: %s" % (" ".join(map(str, args)), r.returncode, r.stderr)
    return r


def machinectl(bus, *args):
    sh = FAKE_BOOTED + ' && exec machinectl --no-pager "$@"'
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", sh, "sh"] + list(args),
                          env=bus.env(), capture_output=True, text=True, timeout=30)


def test_list_images(bus, pool):
    out = mc(bus, "list-images").stdout
    assert out.splitlines()[0].split() == ["NAME", "TYPE", "RO", "USAGE", "CREATED", "MODIFIED"]
    assert out.splitlines()[1].split()[:3] == ["img1", "directory", "no"]
    assert out.endswith("\n1 images listed.\n")
    assert ".hidden" in mc(bus, "list-images", "--all").stdout
    data = json.loads(mc(bus, "list-images", "-o", "json").stdout)
    theirs = json.loads(machinectl(bus, "list-images", "-o", "json").stdout)
    assert [(i["name"], i["type"], i["ro"], i["usage"]) for i in data] == \
        [(i["name"], i["type"], i["ro"], i["usage"]) for i in theirs]


def test_image_status_and_show_image(bus, pool):
    ours = mc(bus, "image-status", "img1").stdout
    theirs = machinectl(bus, "image-status", "img1").stdout
    for line in ("Type: directory", "Path: /var/lib/machines/img1", "Hostname: imghost", "OS: BusyBox test tree",
                 "RO: writable"):
        assert line in ours and line in theirs
    j = json.loads(mc(bus, "image-status", "-o", "json", "img1").stdout)
    assert j["Name"] == "img1" and j["Hostname"] == "imghost" and j["OS"]["ID"] == "busybox"
    show = mc(bus, "show-image", "img1").stdout
    assert show == machinectl(bus, "show-image", "img1").stdout
    assert json.loads(mc(bus, "show-image", "-o", "json", "img1").stdout)["ReadOnly"] is False
    assert "PoolPath=/var/lib/machines" in mc(bus, "show-image").stdout


def test_clone_read_only_rename_remove(bus, pool):
    mc(bus, "clone", "img1", "img2")
    assert (pool / "img2" / "etc" / "hostname").read_text() == "imghost\n"
    mc(bus, "read-only", "img2")
    assert json.loads(mc(bus, "show-image", "-o", "json", "img2").stdout)["ReadOnly"] is True
    mc(bus, "read-only", "img2", "no")
    assert json.loads(mc(bus, "show-image", "-o", "json", "img2").stdout)["ReadOnly"] is False
    mc(bus, "rename", "img2", "img3")
    assert not (pool / "img2").exists() and (pool / "img3").is_dir()
    mc(bus, "remove", "img3")
    assert not (pool / "img3").exists()
    r = mc(bus, "remove", "nope", rc=1)
    assert "nope" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    mc(bus, "read-only", "img1", "maybe", rc=1)


def test_clean(bus, pool):
    r = mc(bus, "clean")
    assert "Removed image '.hidden'" in r.stderr and "Removed 1 images in total." in r.stderr
    assert not (pool / ".hidden").exists() and (pool / "img1").exists()
    assert json.loads(mc(bus, "clean", "--all", "-o", "json").stdout)[0]["name"] == "img1"
    assert mc(bus, "list-images").stdout == "No images.\n"
    assert mc(bus, "list-images", "--no-legend").stdout == ""
    assert json.loads(mc(bus, "list-images", "-o", "json").stdout) == []


def test_set_limit_reports_the_error(bus, pool):
    # Quotas need btrfs; on other file systems machined refuses, and machctl says so in one line.
    r = subprocess.run([str(MACHCTL), "set-limit", "img1", "1G"], capture_output=True, text=True, env=bus.env())
    if r.returncode != 0:
        assert r.stderr.startswith("Could not set limit: ") and len(r.stderr.strip().splitlines()) == 1
    mc(bus, "set-limit", "img1", "lots", rc=1)
