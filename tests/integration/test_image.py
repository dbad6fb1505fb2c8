"""spawn -i: disk images made by the test (sfdisk + mkfs.ext4 from the busybox tree) run as
containers: a GPT image per the Discoverable Partitions Specification with root and /home
partitions, a bare file system, read-only use, and no loop device or mount left behind, also when
spawn is SIGKILLed. Root only."""
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from mkutil import host_mounts  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("sfdisk") or not shutil.which("mkfs.ext4"),
                                reason="needs root, sfdisk (fdisk) and mkfs.ext4 (e2fsprogs)")
ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
HOME = "933AC7E1-2EB4-4F13-B844-0E14E2AEF915"


def loops_of(image):
    out = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True).stdout
    return [l.split(":")[0] for l in out.splitlines()]


def gpt_image(path, tree, home_dir):
    subprocess.run(["truncate", "-s", "96M", str(path)], check=True)
    table = (f"label: gpt\nstart=2048, size=110000, type={ROOT_X86_64}\n"
             f"start=120000, size=60000, type={HOME}\n")
    subprocess.run(["sfdisk", "-q", str(path)], input=table, text=True, check=True)
    subprocess.run(["mkfs.ext4", "-q", "-E", f"offset={2048 * 512}", "-d", str(tree), str(path), f"{110000 // 2}k"], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-E", f"offset={120000 * 512}", "-d", str(home_dir), str(path), f"{60000 // 2}k"],
                   check=True)


def test_gpt_image_with_root_and_home(spawn_bin, tree, tmp_path):
    home = tmp_path / "home"
    (home / "alice").mkdir(parents=True)
    (home / "alice" / "note").write_text("from the home partition\n")
    img = tmp_path / "disk.raw"
    gpt_image(img, tree, home)
    before = host_mounts()
    r = subprocess.run([spawn_bin, "-q", "-P", "-i", str(img), "--", "/bin/sh", "-c",
                        "hostname; cat /etc/os-release | head -1; cat /home/alice/note; "
                        "grep -E ' / | /home ' /proc/self/mountinfo; echo w > /written"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "disk" and lines[1] == "ID=busybox" and lines[2] == "from the home partition"
    assert "ext4 /dev/loop" in r.stdout and " /home " in r.stdout
    assert host_mounts() == before
    assert loops_of(img) == [], "loop devices detach themselves"
    # What the container wrote is in the image.
    r = subprocess.run([spawn_bin, "-q", "-P", "-i", str(img), "--", "/bin/cat", "/written"], capture_output=True, text=True)
    assert r.stdout == "w\n"


def test_bare_file_system_image_read_only(spawn_bin, tree, tmp_path):
    img = tmp_path / "bare.raw"
    subprocess.run(["truncate", "-s", "32M", str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-d", str(tree), str(img)], check=True)
    r = subprocess.run([spawn_bin, "-q", "-P", "--read-only", "-i", str(img), "--", "/bin/sh", "-c",
                        "touch /x || echo RO; grep ' / ' /proc/self/mountinfo"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "RO" in r.stdout and " / ro," in r.stdout
    assert loops_of(img) == []


def test_sigkill_leaves_no_loop_device(spawn_bin, tree, tmp_path):
    img = tmp_path / "k.raw"
    subprocess.run(["truncate", "-s", "32M", str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-d", str(tree), str(img)], check=True)
    p = subprocess.Popen([spawn_bin, "-q", "-P", "-i", str(img), "--", "/bin/sh", "-c", "echo ready; exec sleep 100"],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    assert loops_of(img), "the image is on a loop device while it runs"
    p.kill()
    p.wait()
    end = time.monotonic() + 10
    while loops_of(img) and time.monotonic() < end:
        time.sleep(0.05)
    assert loops_of(img) == []


def test_bad_images_are_one_line_errors(spawn_bin, tmp_path):
    junk = tmp_path / "junk.raw"
    junk.write_bytes(b"\0" * (4 << 20))
    for args, words in (([str(junk)], "no file system"), ([str(tmp_path / "missing.raw")], "cannot open image")):
        r = subprocess.run([spawn_bin, "-q", "-P", "-i", *args, "--", "/bin/true"], capture_output=True, text=True)
        assert r.returncode == 1 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    nogpt_root = tmp_path / "noroot.raw"
    subprocess.run(["truncate", "-s", "16M", str(nogpt_root)], check=True)
    subprocess.run(["sfdisk", "-q", str(nogpt_root)], input=f"label: gpt\nstart=2048, size=20000, type={HOME}\n",
                   text=True, check=True)
    r = subprocess.run([spawn_bin, "-q", "-P", "-i", str(nogpt_root), "--", "/bin/true"], capture_output=True, text=True)
    assert r.returncode == 1 and "no root partition" in r.stderr
    assert loops_of(junk) == [] and loops_of(nogpt_root) == []
