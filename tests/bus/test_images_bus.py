"""machd's org.freedesktop.machine1 image API against a private pool (--pool=<tmp>)."""
import filecmp
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import DEST, IFACE, MANAGER, Machd, create

NOBODY = 65534

HELPERS = Path(__file__).resolve().parent.parent / "helpers"
IMAGE_IFACE = "org.freedesktop.machine1.Image"


@pytest.fixture
def pool(tmp_path):
    p = tmp_path / "pool"
    p.mkdir(exist_ok=True)
    subprocess.run([str(HELPERS / "busybox-tree.sh"), str(p / "bb")], check=True, capture_output=True)
    (p / "bb" / "etc" / "hostname").write_text("bbhost\n")
    (p / "bb" / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (p / "bb" / "etc" / "machine-info").write_text('PRETTY_HOSTNAME="Busy Box"\n')
    (p / "disk.raw").write_bytes(b"\0" * 4096)
    return p


@pytest.fixture
def imgd(pool, machd):
    # conftest's machd serves tmp_path/"pool" (made by `pool` first) and ends the test's machines.
    return machd


def images(bus):
    return {i[0]: i for i in bus.call_json("ListImages")[0]}


def test_list_get_and_properties(bus, imgd, pool):
    imgs = images(bus)
    assert imgs["bb"][1] == "directory"
    assert imgs["disk"][1] == "raw"
    assert imgs["bb"][6] == "/org/freedesktop/machine1/image/bb"
    path = bus.call_json("GetImage", "s", "bb")[0]
    assert path == "/org/freedesktop/machine1/image/bb"
    assert bus.get_property(path, IMAGE_IFACE, "Path") == str(pool / "bb")
    assert bus.get_property(path, IMAGE_IFACE, "Name") == "bb"
    assert bus.get_property(path, IMAGE_IFACE, "Type") == "directory"
    assert bus.get_property(path, IMAGE_IFACE, "ReadOnly") is False
    assert bus.get_property(path, IMAGE_IFACE, "Usage") > 0
    assert bus.get_property(MANAGER, IFACE, "PoolPath") == str(pool)
    assert bus.error_name("GetImage", "string:nope") == "org.freedesktop.machine1.NoSuchImage"


def test_content_getters(bus, imgd):
    osr = bus.call_json("GetImageOSRelease", "s", "bb")[0]
    assert "ID" in osr
    assert bus.call_json("GetImageHostname", "s", "bb")[0] == "bbhost"
    assert bus.call_json("GetImageMachineID", "s", "bb")[0] == list(bytes.fromhex("0123456789abcdef0123456789abcdef"))
    assert bus.call_json("GetImageMachineInfo", "s", "bb")[0] == {"PRETTY_HOSTNAME": "Busy Box"}
    path = bus.call_json("GetImage", "s", "bb")[0]  # objects appear once a client looks the image up
    r = bus.busctl("--json=short", "call", DEST, path, IMAGE_IFACE, "GetOSRelease")
    assert json.loads(r.stdout)["data"][0] == osr
    assert bus.error_name("GetImageOSRelease", "string:disk") == "org.freedesktop.DBus.Error.NotSupported"


def test_clone_rename_readonly_remove(bus, imgd, pool):
    bus.call("CloneImage", "ssb", "bb", "bb2", "false")
    cmp = filecmp.dircmp(pool / "bb", pool / "bb2")
    assert not cmp.left_only and not cmp.right_only and not cmp.diff_files
    assert os.readlink(pool / "bb2" / "bin" / "sh") == "busybox"
    bus.call("RenameImage", "ss", "bb2", "bb3")
    assert not (pool / "bb2").exists() and (pool / "bb3").is_dir()
    bus.call("MarkImageReadOnly", "sb", "bb3", "true")
    assert images(bus)["bb3"][2] is True
    bus.call("MarkImageReadOnly", "sb", "bb3", "false")
    assert images(bus)["bb3"][2] is False
    # Through the Image object too.
    path = bus.call_json("GetImage", "s", "bb3")[0]
    bus.busctl("call", DEST, path, IMAGE_IFACE, "Remove")
    assert not (pool / "bb3").exists()
    assert "bb3" not in images(bus)
    assert bus.error_name("CloneImage", "string:bb", "string:bb", "boolean:false") == "org.freedesktop.DBus.Error.FileExists"


@pytest.mark.parametrize("name", ["", ".", "..", ".#foo", "a/b", "x" * 256, "a\nb"])
def test_hostile_names(bus, imgd, pool, name):
    assert bus.error_name("GetImage", "string:" + name) == "org.freedesktop.DBus.Error.InvalidArgs"
    assert bus.error_name("CloneImage", "string:bb", "string:" + name, "boolean:false") == \
        "org.freedesktop.DBus.Error.InvalidArgs"
    assert bus.error_name("RenameImage", "string:bb", "string:" + name) == "org.freedesktop.DBus.Error.InvalidArgs"
    assert sorted(os.listdir(pool)) == ["bb", "disk.raw"]


def test_error_texts_escape_control_characters(bus, imgd, pool):
    # Issue 19: a name echoed back in an error must not break the caller's line or drive its
    # terminal. dbus-send prints the error's text as it came.
    def error_text(iface, method, *args):
        r = subprocess.run(["dbus-send", "--bus=%s" % bus.address, "--print-reply", "--dest=" + DEST, MANAGER,
                            iface + "." + method, *args], capture_output=True, text=True, timeout=20)
        assert r.returncode != 0
        return r.stderr
    err = error_text(IFACE, "GetImage", "string:a\nb")
    assert err.strip() == "Error org.freedesktop.DBus.Error.InvalidArgs: Image name 'a\\x0ab' is invalid.", err
    err = error_text(IFACE, "GetMachine", "string:x\x1b[31mred")
    assert "\x1b" not in err and "x\\x1b[31mred" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_non_root_is_refused_for_mutations(bus, imgd, pool):
    assert bus.error_name("ListImages", user=NOBODY) is None
    for method, args in [("RemoveImage", ["string:bb"]), ("RenameImage", ["string:bb", "string:x"]),
                         ("CloneImage", ["string:bb", "string:x", "boolean:false"]),
                         ("MarkImageReadOnly", ["string:bb", "boolean:true"])]:
        assert bus.error_name(method, *args, user=NOBODY) == "org.freedesktop.DBus.Error.AccessDenied", method
    assert (pool / "bb").is_dir() and not (pool / "x").exists()


def test_busy_image_is_not_removed(bus, imgd, pool, leaders):
    p = leaders.spawn()
    create(bus, "runbb2", p.pid, root=str(pool / "bb"))
    assert bus.error_name("RemoveImage", "string:bb") == "System.Error.EBUSY"
    assert bus.error_name("RenameImage", "string:bb", "string:bb9") == "System.Error.EBUSY"
    assert (pool / "bb" / "bin" / "busybox").exists()


def test_pool_limit_not_supported_off_btrfs(bus, imgd):
    assert bus.error_name("SetPoolLimit", "uint64:1000000") == "org.freedesktop.DBus.Error.NotSupported"


def test_clean_all_skips_busy_images(bus, imgd, pool, leaders):
    # machined's CleanPool keeps an image a running machine uses and removes the others.
    subprocess.run(["cp", "-a", str(pool / "bb"), str(pool / "bbfree")], check=True)
    p = leaders.spawn()
    create(bus, "runbbclean", p.pid, root=str(pool / "bb"))
    removed = {r[0] for r in bus.call_json("CleanPool", "s", "all")[0]}
    assert removed == {"bbfree", "disk"}
    assert (pool / "bb" / "bin" / "busybox").exists()
    assert not (pool / "bbfree").exists() and not (pool / "disk.raw").exists()
