"""`meson install --destdir` of the build: the tree is exactly tests/integration/install-tree.txt, and
no installed path is one that systemd-container or systemd owns (dpkg -L), so both can be installed.
Skips when the build overrides an install directory (the list is for the defaults)."""
import json
import os
import pathlib
import shutil
import subprocess

import pytest

HERE = pathlib.Path(__file__).resolve().parent
DIR_OPTIONS = ("systemdsystemunitdir", "tmpfilesdir", "dbuspolicydir", "dbusactivationdir", "polkitactionsdir",
               "bashcompletionsdir")


def build_dir():
    return pathlib.Path(os.environ.get("MK_BUILD_DIR", HERE.parents[1] / "build")).resolve()


def options(build):
    out = subprocess.run(["meson", "introspect", "--buildoptions", str(build)], capture_output=True, text=True,
                         check=True).stdout
    return {o["name"]: o["value"] for o in json.loads(out)}


def installed(build, dest):
    r = subprocess.run(["meson", "install", "-C", str(build), "--no-rebuild", "--quiet", "--destdir", str(dest)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return sorted("/" + str(p.relative_to(dest)) for p in dest.rglob("*") if not p.is_dir() or p.is_symlink())


def test_install_tree_matches_the_list(tmp_path):
    build = build_dir()
    opts = options(build)
    if any(opts.get(o) for o in DIR_OPTIONS) or opts.get("machines_target"):
        pytest.skip("the build overrides install directories")
    if not (build / "src/nft/machkit-nft").exists():
        pytest.skip("built without nftables")
    expected = sorted(l.replace("@prefix@", opts["prefix"]) for l in (HERE / "install-tree.txt").read_text().splitlines()
                      if l and not l.startswith("#"))
    assert installed(build, tmp_path / "dest") == expected


@pytest.mark.skipif(not shutil.which("dpkg"), reason="needs dpkg")
def test_no_path_of_systemd_container(tmp_path):
    build = build_dir()
    ours = installed(build, tmp_path / "dest")

    def usr(p):  # /lib and /usr/lib are one directory on merged-/usr systems
        return "/usr" + p if p.startswith(("/lib/", "/bin/", "/sbin/")) else p

    theirs = set()
    for pkg in ("systemd-container", "systemd"):
        out = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True).stdout
        theirs |= {usr(p) for p in out.split()}
    clashes = [p for p in ours if usr(p) in theirs]
    assert clashes == []
