"""Image import/export/pull through machd-transfer: round trips in every format, hostile archives,
broken compression, pulls from a local HTTP server (checksums, signatures, dropped connections),
a full disk, and the sandbox. Root only (owners, file capabilities, tmpfs mounts).

Every failure case checks three things: a clear one-line error, nothing written outside the pool,
and nothing half-made left inside it (not even a hidden .# entry)."""
import hashlib
import http.server
import io
import os
import pathlib
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tarfile
import threading
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from conftest import BUILD  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

FS_IOC_GETFLAGS = 0x80086601
FS_IMMUTABLE_FL = 0x10


@pytest.fixture(scope="session")
def transfer_bin():
    p = BUILD / "src" / "transfer" / "machd-transfer"
    if not p.exists():
        pytest.skip(f"{p} not built")
    return str(p)


@pytest.fixture
def pool(tmp_path):
    p = tmp_path / "pool"
    p.mkdir(mode=0o700)
    yield p
    # Images may be immutable (read-only tests); lift that so tmp_path can be cleaned.
    subprocess.run(["chattr", "-R", "-i", str(p)], capture_output=True)


def xfer(transfer_bin, pool, *args, stdin=None, input=None, timeout=300):
    return subprocess.run([transfer_bin, args[0], f"--pool={pool}", *args[1:]], capture_output=True,
                          stdin=stdin, input=input, timeout=timeout)


def ok(r):
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r


def failed(r, *words):
    err = r.stderr.decode(errors="replace")
    assert r.returncode != 0, "expected failure, got success: " + err
    last = err.strip().splitlines()[-1]
    assert last.startswith("machd-transfer: "), err
    for w in words:
        assert w.lower() in last.lower(), f"{w!r} not in {last!r}"
    return last


def pool_entries(pool):
    return sorted(os.listdir(pool))


# ---- a tree with everything an image can hold, and a walker that describes it ----

def cap_xattr(cap):
    # VFS_CAP_REVISION_2 with the effective bit: struct vfs_cap_data.
    return struct.pack("<IIIII", 0x02000001, 1 << cap, 0, 0, 0)


def acl_xattr(uid):
    # POSIX ACL xattr v2: user::rw- user:uid:r-- group::r-- mask::r-- other::r--
    e = lambda tag, perm, id_: struct.pack("<HHI", tag, perm, id_)
    return struct.pack("<I", 2) + e(1, 6, 0xFFFFFFFF) + e(2, 4, uid) + e(4, 4, 0xFFFFFFFF) + \
        e(0x10, 4, 0xFFFFFFFF) + e(0x20, 4, 0xFFFFFFFF)


def make_rich_tree(root: pathlib.Path, busybox_tree_template):
    shutil.copytree(busybox_tree_template, root, symlinks=True)
    (root / "data").mkdir()
    big = root / "data" / "big.bin"
    big.write_bytes(os.urandom(1 << 20) + b"\0" * (1 << 20) + b"tail")
    (root / "data" / "empty").write_bytes(b"")
    (root / "data" / "setuid").write_bytes(b"#!/bin/sh\n")
    os.chown(root / "data" / "setuid", 0, 0)
    os.chmod(root / "data" / "setuid", 0o4755)
    (root / "data" / "owned").write_text("x")
    os.chown(root / "data" / "owned", 4242, 4343)
    os.chmod(root / "data" / "owned", 0o640)
    os.link(root / "data" / "owned", root / "data" / "owned.hardlink")
    os.link(root / "data" / "owned", root / "etc" / "owned.hardlink2")
    (root / "data" / "x").write_text("xattrs")
    os.setxattr(root / "data" / "x", "user.test", b"value\0with nul")
    os.setxattr(root / "data" / "x", "user.empty", b"")
    (root / "data" / "ping").write_bytes(b"\x7fELF fake")
    os.setxattr(root / "data" / "ping", "security.capability", cap_xattr(13))  # cap_net_raw+ep
    (root / "data" / "acl").write_text("acl")
    os.setxattr(root / "data" / "acl", "system.posix_acl_access", acl_xattr(1000))
    os.symlink("../etc/passwd", root / "data" / "rel-link")
    os.symlink("/etc/shadow", root / "data" / "abs-link")
    os.symlink("dangling/target", root / "data" / "dangling")
    os.mkfifo(root / "data" / "fifo", 0o620)
    (root / "data" / "dir-0555").mkdir(mode=0o555)
    os.chmod(root / "data" / "dir-0555", 0o555)
    (root / "data" / "sticky").mkdir()
    os.chmod(root / "data" / "sticky", 0o1777)
    os.utime(root / "data" / "x", (1000000000, 1234567890))
    os.utime(root / "data" / "sticky", (1000000000, 1111111111))


def describe_tree(root: pathlib.Path, skip_devices=False):
    """path -> (type, mode, uid, gid, content digest / link target, xattrs, mtime, link group)"""
    out = {}
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ["."] + dirnames + filenames if dirpath == str(root) else dirnames + filenames:
            p = os.path.join(dirpath, name) if name != "." else dirpath
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            kind = stat.S_IFMT(st.st_mode)
            if skip_devices and kind in (stat.S_IFCHR, stat.S_IFBLK):
                continue
            if stat.S_ISREG(kind):
                with open(p, "rb") as f:
                    content = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(kind):
                content = os.readlink(p)
            else:
                content = None
            xattrs = {}
            if not stat.S_ISLNK(kind):
                for k in sorted(os.listxattr(p, follow_symlinks=False)):
                    xattrs[k] = os.getxattr(p, k, follow_symlinks=False)
            group = None
            if not stat.S_ISDIR(kind) and st.st_nlink > 1:
                group = inodes.setdefault(st.st_ino, rel)
            mtime = None if stat.S_ISLNK(kind) else int(st.st_mtime)
            if stat.S_ISDIR(kind) and rel == ".":
                mtime = None  # the pool's rename may not touch it, but be lenient about the root
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, content, tuple(xattrs.items()),
                        mtime, group, st.st_nlink if not stat.S_ISDIR(kind) else None)
    return out


@pytest.fixture(scope="module")
def rich_image(busybox_tree_template, tmp_path_factory, transfer_bin):
    """A pool holding image 'rich' (imported with import-fs), plus the tree it came from."""
    base = tmp_path_factory.mktemp("rich")
    src = base / "src"
    make_rich_tree(src, busybox_tree_template)
    pool = base / "pool"
    pool.mkdir(mode=0o700)
    ok(xfer(transfer_bin, pool, "import-fs", str(src), "rich"))
    return pool, src


def test_import_fs_copies_everything(rich_image):
    pool, src = rich_image
    assert describe_tree(pool / "rich") == describe_tree(src)


@pytest.mark.parametrize("fmt,suffix", [("uncompressed", ".tar"), ("xz", ".tar.xz"), ("zstd", ".tar.zst"),
                                        ("gzip", ".tar.gz"), ("bzip2", ".tar.bz2")])
def test_tar_round_trip(transfer_bin, rich_image, tmp_path, fmt, suffix):
    pool, src = rich_image
    out = tmp_path / ("export" + suffix)
    ok(xfer(transfer_bin, pool, "export-tar", "rich", str(out)))  # format from the suffix
    magic = out.read_bytes()[:6]
    expect = {"xz": b"\xfd7zXZ\0", "zstd": b"\x28\xb5\x2f\xfd", "gzip": b"\x1f\x8b", "bzip2": b"BZh"}
    if fmt in expect:
        assert magic.startswith(expect[fmt])
    name = "rt-" + fmt
    ok(xfer(transfer_bin, pool, "import-tar", str(out), name))
    try:
        assert describe_tree(pool / name) == describe_tree(src)
    finally:
        shutil.rmtree(pool / name)


def test_export_is_readable_by_gnu_tar(transfer_bin, rich_image, tmp_path):
    pool, src = rich_image
    out = tmp_path / "e.tar"
    ok(xfer(transfer_bin, pool, "export-tar", "rich", str(out)))
    dst = tmp_path / "gnu"
    dst.mkdir()
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", str(dst), "-xpf", str(out)],
                   check=True)
    assert describe_tree(dst) == describe_tree(src)


def test_import_of_gnu_tar_output(transfer_bin, rich_image, tmp_path, pool):
    _, src = rich_image
    out = tmp_path / "g.tar.gz"
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", str(src), "-czf", str(out), "."],
                   check=True)
    ok(xfer(transfer_bin, pool, "import-tar", "-", "gnu", stdin=open(out, "rb")))  # from a pipe-like stdin
    assert describe_tree(pool / "gnu") == describe_tree(src)


def test_import_from_pipe_and_progress_protocol(transfer_bin, rich_image, tmp_path, pool):
    rpool, _ = rich_image
    out = tmp_path / "p.tar.zst"
    ok(xfer(transfer_bin, rpool, "export-tar", "rich", str(out)))
    r, w = os.pipe()
    cat = subprocess.Popen(["cat", str(out)], stdout=subprocess.PIPE)
    p = subprocess.run([transfer_bin, "import-tar", f"--pool={pool}", f"--progress-fd={w}", "-", "piped"],
                       stdin=cat.stdout, pass_fds=(w,), capture_output=True)
    cat.wait()
    os.close(w)
    lines = os.read(r, 1 << 20).decode().splitlines()
    os.close(r)
    assert p.returncode == 0, p.stderr
    assert lines[-1] == "DONE"
    assert any(l.startswith("LOG Input compression: zstd") for l in lines), lines
    # From a file the size is known, so progress is reported.
    r, w = os.pipe()
    p = subprocess.run([transfer_bin, "import-tar", f"--pool={pool}", f"--progress-fd={w}", str(out), "fromfile"],
                       pass_fds=(w,), capture_output=True)
    os.close(w)
    lines = os.read(r, 1 << 20).decode().splitlines()
    os.close(r)
    assert p.returncode == 0
    percents = [int(l.split()[1]) for l in lines if l.startswith("PROGRESS ")]
    assert percents and percents == sorted(percents) and percents[-1] == 100


def test_exists_force_and_read_only(transfer_bin, rich_image, tmp_path, pool):
    rpool, _ = rich_image
    out = tmp_path / "f.tar"
    ok(xfer(transfer_bin, rpool, "export-tar", "rich", str(out)))
    ok(xfer(transfer_bin, pool, "import-tar", "--read-only", str(out), "img"))
    import fcntl
    fd = os.open(pool / "img", os.O_RDONLY | os.O_DIRECTORY)
    flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 4))[0]
    os.close(fd)
    assert flags & FS_IMMUTABLE_FL
    failed(xfer(transfer_bin, pool, "import-tar", str(out), "img"), "exists")
    ok(xfer(transfer_bin, pool, "import-tar", "--force", str(out), "img"))
    assert pool_entries(pool) == ["img"]


# ---- raw images ----

@pytest.mark.parametrize("comp", [None, "xz", "gzip", "zstd"])
def test_raw_round_trip_sparse(transfer_bin, tmp_path, pool, comp):
    raw = tmp_path / "disk.raw"
    with open(raw, "wb") as f:
        f.write(b"\xeb\x3c\x90" + os.urandom(4093))
        f.seek(64 << 20)
        f.write(os.urandom(8192))
        f.truncate((128 << 20) + 7)
    src = raw
    if comp:
        tool = {"xz": ["xz", "-T2", "-k"], "gzip": ["gzip", "-k"], "zstd": ["zstd", "-q", "-k"]}[comp]
        subprocess.run(tool + [str(raw)], check=True)
        src = pathlib.Path(str(raw) + {"xz": ".xz", "gzip": ".gz", "zstd": ".zst"}[comp])
    ok(xfer(transfer_bin, pool, "import-raw", str(src), "disk"))
    img = pool / "disk.raw"
    assert img.stat().st_size == raw.stat().st_size
    assert img.stat().st_blocks * 512 < (1 << 20), "raw import is not sparse"
    assert hashlib.sha256(img.read_bytes()).digest() == hashlib.sha256(raw.read_bytes()).digest()
    out = tmp_path / "exported.raw.zst"
    ok(xfer(transfer_bin, pool, "export-raw", "disk", str(out)))
    assert subprocess.run(["zstd", "-dc", str(out)], capture_output=True, check=True).stdout == raw.read_bytes()


def test_raw_refuses_qcow2_and_tar_refuses_raw(transfer_bin, tmp_path, pool):
    q = tmp_path / "x.qcow2"
    q.write_bytes(b"QFI\xfb" + b"\0" * 4092)
    failed(xfer(transfer_bin, pool, "import-raw", str(q), "q"), "qcow2")
    assert pool_entries(pool) == []


# ---- hostile archives (B-20..B-32) ----

def tar_bytes(members, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for m in members:
            if isinstance(m, tuple):
                info, data = m
                t.addfile(info, io.BytesIO(data))
            else:
                t.addfile(m)
    return buf.getvalue()


def ti(name, type_=tarfile.REGTYPE, data=b"", linkname="", mode=0o644, **kw):
    i = tarfile.TarInfo(name)
    i.type = type_
    i.mode = mode
    i.linkname = linkname
    i.size = len(data) if type_ == tarfile.REGTYPE else 0
    for k, v in kw.items():
        setattr(i, k, v)
    return (i, data) if type_ == tarfile.REGTYPE else i


@pytest.fixture
def outside(tmp_path):
    """A directory outside the pool that hostile archives aim at; must stay untouched."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "victim").write_text("original")
    return d


def check_untouched(outside):
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (outside / "victim").read_text() == "original"
    assert os.stat(outside / "victim").st_nlink == 1
    assert stat.S_IMODE(os.stat(outside).st_mode) == 0o755


HOSTILE = {
    "dotdot": lambda o: [ti("./"  , tarfile.DIRTYPE, mode=0o755), ti("../outside/evil", data=b"x")],
    "dotdot-nested": lambda o: [ti("a/../../evil", data=b"x")],
    "absolute": lambda o: [ti(str(o / "evil"), data=b"x")],
    "symlink-then-write": lambda o: [ti("l", tarfile.SYMTYPE, linkname=str(o)), ti("l/evil", data=b"x")],
    "symlink-relative-escape": lambda o: [ti("l", tarfile.SYMTYPE, linkname="../../../../../../../../" + str(o)),
                                          ti("l/evil", data=b"x")],
    "symlink-overwrite-victim": lambda o: [ti("l", tarfile.SYMTYPE, linkname=str(o)), ti("l/victim", data=b"pwned")],
    "dir-then-symlink": lambda o: [ti("d", tarfile.DIRTYPE, mode=0o777), ti("d", tarfile.SYMTYPE, linkname=str(o)),
                                   ti("d/evil", data=b"x")],
    "hardlink-absolute": lambda o: [ti("h", tarfile.LNKTYPE, linkname=str(o / "victim"))],
    "hardlink-dotdot": lambda o: [ti("h", tarfile.LNKTYPE, linkname="../outside/victim")],
    "hardlink-through-symlink": lambda o: [ti("l", tarfile.SYMTYPE, linkname=str(o)),
                                           ti("h", tarfile.LNKTYPE, linkname="l/victim")],
    "hardlink-missing": lambda o: [ti("h", tarfile.LNKTYPE, linkname="nonexistent")],
    "hardlink-to-dir": lambda o: [ti("d", tarfile.DIRTYPE, mode=0o755), ti("h", tarfile.LNKTYPE, linkname="d")],
    "root-not-dir": lambda o: [ti("./", data=b"x")],
    "too-deep": lambda o: [ti("/".join(["d"] * 300) + "/f", data=b"x")],
    "name-too-long": lambda o: [ti("x" * 300, data=b"x")],
    "path-too-long": lambda o: [ti("/".join(["y" * 200] * 25), data=b"x")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_rejected(transfer_bin, pool, outside, tmp_path, case):
    data = tar_bytes(HOSTILE[case](outside))
    r = xfer(transfer_bin, pool, "import-tar", "-", "evil", input=data)
    failed(r)
    check_untouched(outside)
    assert pool_entries(pool) == [], "half-made image left behind"


def test_symlink_alone_is_contained(transfer_bin, pool, outside):
    # A symlink pointing out is fine as long as nothing is written through it.
    data = tar_bytes([ti("./", tarfile.DIRTYPE, mode=0o755), ti("l", tarfile.SYMTYPE, linkname=str(outside))])
    ok(xfer(transfer_bin, pool, "import-tar", "-", "img", input=data))
    assert os.readlink(pool / "img" / "l") == str(outside)
    check_untouched(outside)


def test_device_nodes_not_created(transfer_bin, pool):
    data = tar_bytes([ti("./", tarfile.DIRTYPE, mode=0o755), ti("dev", tarfile.DIRTYPE, mode=0o755),
                      ti("dev/mem", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=1),
                      ti("dev/sda", tarfile.BLKTYPE, mode=0o666, devmajor=8, devminor=0),
                      ti("dev/fifo", tarfile.FIFOTYPE, mode=0o600),
                      ti("etc/file", data=b"ok")])
    r = ok(xfer(transfer_bin, pool, "import-tar", "-", "img", input=data))
    err = r.stderr.decode()
    # One summary line for all of them, not one line per node.
    lines = [l for l in err.splitlines() if "device node" in l]
    assert len(lines) == 1 and "Skipped 2 device nodes" in lines[0] and "dev/mem" in lines[0], err
    assert "dev/sda" not in err
    assert sorted(os.listdir(pool / "img" / "dev")) == ["fifo"]
    assert (pool / "img" / "etc" / "file").read_bytes() == b"ok"


def test_filtered_xattrs(transfer_bin, pool):
    info = tarfile.TarInfo("f")
    info.size = 1
    info.pax_headers = {"SCHILY.xattr.trusted.overlay.opaque": "y", "SCHILY.xattr.user.ok": "1",
                        "SCHILY.xattr.security.selinux": "system_u:object_r:shadow_t:s0"}
    data = tar_bytes([ti("./", tarfile.DIRTYPE, mode=0o755), (info, b"x")])
    ok(xfer(transfer_bin, pool, "import-tar", "-", "img", input=data))
    names = os.listxattr(pool / "img" / "f")
    assert "user.ok" in names and "trusted.overlay.opaque" not in names


def test_same_path_twice_later_wins(transfer_bin, pool):
    data = tar_bytes([ti("./", tarfile.DIRTYPE, mode=0o755), ti("a", data=b"first"), ti("a", data=b"second"),
                      ti("d", tarfile.DIRTYPE, mode=0o700), ti("d", tarfile.DIRTYPE, mode=0o750)])
    ok(xfer(transfer_bin, pool, "import-tar", "-", "img", input=data))
    assert (pool / "img" / "a").read_bytes() == b"second"
    assert stat.S_IMODE(os.stat(pool / "img" / "d").st_mode) == 0o750


# ---- broken compression and truncation (B-30, B-33) ----

@pytest.fixture(scope="module")
def plain_tar(busybox_tree_template, tmp_path_factory):
    d = tmp_path_factory.mktemp("plain")
    t = d / "bb.tar"
    subprocess.run(["tar", "-C", str(busybox_tree_template), "-cf", str(t), "."], check=True)
    return t


@pytest.mark.parametrize("comp", ["xz", "zstd", "gzip", "bzip2", "none"])
@pytest.mark.parametrize("damage", ["truncate-half", "truncate-tail", "corrupt"])
def test_broken_archive(transfer_bin, pool, plain_tar, tmp_path, comp, damage):
    data = plain_tar.read_bytes()
    if comp != "none":
        tool = {"xz": ["xz", "-T2", "-c"], "zstd": ["zstd", "-q", "-c"], "gzip": ["gzip", "-c"],
                "bzip2": ["bzip2", "-c"]}[comp]
        data = subprocess.run(tool, input=data, capture_output=True, check=True).stdout
    if damage == "truncate-half":
        data = data[: len(data) // 2]
    elif damage == "truncate-tail":
        data = data[:-9] if comp != "none" else data[:-10240]  # plain: cut off the end marker
    else:
        mid = len(data) // 2
        data = data[:mid] + bytes(b ^ 0xA5 for b in data[mid:mid + 64]) + data[mid + 64:]
    r = xfer(transfer_bin, pool, "import-tar", "-", "broken", input=data)
    if comp == "none" and damage == "corrupt":
        # Flipped bytes inside file data of an uncompressed tar are indistinguishable from real
        # content (tar has no data checksum); a flipped header is caught. Either way no partial state.
        if r.returncode == 0:
            return
    last = failed(r)
    assert any(w in last.lower() for w in ("truncat", "corrupt", "damaged", "end-of-archive", "checksum")), last
    assert pool_entries(pool) == []


def test_empty_input(transfer_bin, pool):
    failed(xfer(transfer_bin, pool, "import-tar", "-", "e", input=b""))
    assert pool_entries(pool) == []


# ---- full disk ----

@pytest.fixture
def tiny_pool(tmp_path):
    d = tmp_path / "tiny"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=True)


def test_disk_full_import_tar(transfer_bin, tiny_pool, rich_image, tmp_path):
    rpool, _ = rich_image
    out = tmp_path / "big.tar.zst"
    ok(xfer(transfer_bin, rpool, "export-tar", "rich", str(out)))
    failed(xfer(transfer_bin, tiny_pool, "import-tar", str(out), "big"), "disk full")
    assert pool_entries(tiny_pool) == []


def test_disk_full_import_raw(transfer_bin, tiny_pool, tmp_path):
    raw = tmp_path / "r.raw"
    raw.write_bytes(os.urandom(4 << 20))
    failed(xfer(transfer_bin, tiny_pool, "import-raw", str(raw), "r"), "disk full")
    assert pool_entries(tiny_pool) == []


# ---- pulls from 127.0.0.1 ----

class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path.startswith("/drop/"):
            # Promise the whole file, send half, hang up.
            p = pathlib.Path(self.server.root) / self.path[len("/drop/"):]
            data = p.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        return super().do_GET()


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **k: Handler(*a, directory=str(root), **k))
    srv.root = str(root)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def publish(root, name, data, sums=True):
    (root / name).write_bytes(data)
    if sums:
        (root / "SHA256SUMS").write_text(f"{hashlib.sha256(data).hexdigest()}  {name}\n")


def test_pull_tar_checksum(transfer_bin, pool, http_root, plain_tar):
    root, url = http_root
    data = subprocess.run(["zstd", "-q", "-c", str(plain_tar)], capture_output=True, check=True).stdout
    publish(root, "bb.tar.zst", data)
    r = ok(xfer(transfer_bin, pool, "pull-tar", "--verify=checksum", f"{url}/bb.tar.zst", "bb"))
    assert "checksum" in r.stderr.decode().lower()
    assert (pool / "bb" / "bin" / "busybox").exists()
    assert pool_entries(pool) == ["bb"]


def test_pull_raw_name_sha256(transfer_bin, pool, http_root):
    root, url = http_root
    raw = os.urandom(1 << 20) + b"\0" * (1 << 20)
    data = subprocess.run(["xz", "-c"], input=raw, capture_output=True, check=True).stdout
    publish(root, "d.raw.xz", data, sums=False)
    (root / "d.raw.xz.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  d.raw.xz\n")
    ok(xfer(transfer_bin, pool, "pull-raw", "--verify=checksum", f"{url}/d.raw.xz", "d"))
    assert (pool / "d.raw").read_bytes() == raw


def test_pull_checksum_mismatch(transfer_bin, pool, http_root, plain_tar):
    root, url = http_root
    data = plain_tar.read_bytes()
    publish(root, "bb.tar", data)
    (root / "bb.tar").write_bytes(data[:-1] + b"\1")  # served bytes differ from the listed hash
    failed(xfer(transfer_bin, pool, "pull-tar", "--verify=checksum", f"{url}/bb.tar", "bb"), "checksum mismatch")
    assert pool_entries(pool) == []


def test_pull_checksum_missing_entry(transfer_bin, pool, http_root, plain_tar):
    root, url = http_root
    (root / "bb.tar").write_bytes(plain_tar.read_bytes())
    (root / "SHA256SUMS").write_text("0" * 64 + "  other.tar\n")
    failed(xfer(transfer_bin, pool, "pull-tar", "--verify=checksum", f"{url}/bb.tar", "bb"), "no entry")
    assert pool_entries(pool) == []


def test_pull_connection_dropped(transfer_bin, pool, http_root, plain_tar):
    root, url = http_root
    publish(root, "bb.tar", plain_tar.read_bytes())
    failed(xfer(transfer_bin, pool, "pull-tar", "--verify=no", f"{url}/drop/bb.tar", "bb"), "interrupted")
    assert pool_entries(pool) == []


def test_pull_404(transfer_bin, pool, http_root):
    _, url = http_root
    failed(xfer(transfer_bin, pool, "pull-tar", "--verify=no", f"{url}/nope.tar", "bb"), "404")
    assert pool_entries(pool) == []


def test_pull_bad_urls(transfer_bin, pool):
    for u in ["file:///etc/shadow", "ftp://127.0.0.1/x", "http://127.0.0.1/x\r\nX: y"]:
        failed(xfer(transfer_bin, pool, "pull-tar", "--verify=no", u, "bb"), "url")


def test_pull_signature_missing(transfer_bin, pool, http_root, plain_tar, tmp_path):
    root, url = http_root
    publish(root, "bb.tar", plain_tar.read_bytes())
    ring = tmp_path / "ring.gpg"
    ring.write_bytes(b"")
    failed(xfer(transfer_bin, pool, "pull-tar", "--verify=signature", f"--keyring={ring}", f"{url}/bb.tar", "bb"),
           "SHA256SUMS.gpg")
    assert pool_entries(pool) == []


@pytest.fixture(scope="module")
def gpg_key(tmp_path_factory):
    if not shutil.which("gpg"):
        pytest.skip("gpg not installed")
    home = tmp_path_factory.mktemp("gnupg")
    os.chmod(home, 0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "test@machkit.invalid", "ed25519",
                    "sign", "never"], env=env, check=True, capture_output=True)
    ring = home / "ring.gpg"
    subprocess.run(["gpg", "--batch", "--export", "--output", str(ring)], env=env, check=True)
    return env, ring


def test_pull_signature_good_and_bad(transfer_bin, pool, http_root, plain_tar, gpg_key):
    env, ring = gpg_key
    root, url = http_root
    publish(root, "bb.tar", plain_tar.read_bytes())
    subprocess.run(["gpg", "--batch", "--yes", "--detach-sign", "--output", str(root / "SHA256SUMS.gpg"),
                    str(root / "SHA256SUMS")], env=env, check=True, capture_output=True)
    r = ok(xfer(transfer_bin, pool, "pull-tar", "--verify=signature", f"--keyring={ring}", f"{url}/bb.tar", "good"))
    assert "signature" in r.stderr.decode().lower()
    # Tamper with the signed file after signing.
    with open(root / "SHA256SUMS", "a") as f:
        f.write("0" * 64 + "  extra\n")
    failed(xfer(transfer_bin, pool, "pull-tar", "--verify=signature", f"--keyring={ring}", f"{url}/bb.tar", "bad"),
           "signature")
    assert pool_entries(pool) == ["good"]


def test_pull_disk_full(transfer_bin, tiny_pool, http_root):
    root, url = http_root
    publish(root, "big.raw", os.urandom(4 << 20))
    failed(xfer(transfer_bin, tiny_pool, "pull-raw", "--verify=checksum", f"{url}/big.raw", "big"), "disk full")
    assert pool_entries(tiny_pool) == []


def test_cancel_leaves_nothing(transfer_bin, pool):
    p = subprocess.Popen([transfer_bin, "import-tar", f"--pool={pool}", "-", "slow"], stdin=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdin.write(tar_bytes([ti("./", tarfile.DIRTYPE, mode=0o755), ti("a", data=b"x" * 100000)])[:20480])
    p.stdin.flush()
    time.sleep(0.5)
    assert pool_entries(pool) != []  # the hidden temporary tree exists meanwhile
    p.terminate()
    p.stdin.close()
    assert p.wait(timeout=10) != 0
    assert pool_entries(pool) == []


def test_cancel_while_client_stalls(transfer_bin, pool):
    # The client keeps its end open and sends nothing more: SIGTERM must still end the transfer.
    p = subprocess.Popen([transfer_bin, "import-tar", f"--pool={pool}", "-", "stall"], stdin=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdin.write(tar_bytes([ti("./", tarfile.DIRTYPE, mode=0o755), ti("a", data=b"x" * 100000)])[:20480])
    p.stdin.flush()
    time.sleep(0.5)
    p.terminate()
    try:
        assert p.wait(timeout=5) != 0
        assert b"cancelled" in p.stderr.read()
    finally:
        p.stdin.close()
    assert pool_entries(pool) == []


# ---- the sandbox ----

def test_sandbox(transfer_bin, pool):
    p = subprocess.Popen([transfer_bin, "import-tar", f"--pool={pool}", "-", "sb"], stdin=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdin.write(tar_bytes([ti("./", tarfile.DIRTYPE, mode=0o755)])[:512])
    p.stdin.flush()
    time.sleep(0.3)
    status = pathlib.Path(f"/proc/{p.pid}/status").read_text()
    p.stdin.close()
    p.wait(timeout=10)
    fields = dict(l.split(":\t", 1) for l in status.splitlines() if ":\t" in l)
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"
    eff = int(fields["CapEff"], 16)
    assert not eff & (1 << 21), "CAP_SYS_ADMIN kept"
    assert not eff & (1 << 27), "CAP_MKNOD kept"
    assert int(fields["CapBnd"], 16) == eff


def test_gnu_tar_acls_text_form(transfer_bin, pool, tmp_path):
    # GNU tar --acls stores ACLs as SCHILY.acl.access/default text, not as xattrs.
    src = tmp_path / "aclsrc"
    src.mkdir()
    (src / "f").write_text("x")
    os.setxattr(src / "f", "system.posix_acl_access", acl_xattr(1000))
    (src / "d").mkdir()
    os.setxattr(src / "d", "system.posix_acl_default", acl_xattr(1001))
    out = tmp_path / "acl.tar"
    subprocess.run(["tar", "--acls", "--numeric-owner", "-C", str(src), "-cf", str(out), "."], check=True)
    listing = subprocess.run(["tar", "--acls", "-tvvf", str(out)], capture_output=True, text=True).stdout
    ok(xfer(transfer_bin, pool, "import-tar", str(out), "acl"))
    for rel, name in [("f", "system.posix_acl_access"), ("d", "system.posix_acl_default")]:
        assert os.getxattr(pool / "acl" / rel, name) == os.getxattr(src / rel, name), (rel, listing)


def test_bad_inputs_and_outputs(transfer_bin, rich_image, pool, tmp_path):
    rpool, _ = rich_image
    # B-35: the input must be a regular file or a pipe.
    d = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        failed(xfer(transfer_bin, pool, "import-tar", "-", "x", stdin=d), "regular file or a pipe")
    finally:
        os.close(d)
    # B-36: /dev/full reports a full disk; a reader that goes away reports a broken pipe.
    with open("/dev/full", "wb") as full:
        r = subprocess.run([transfer_bin, "export-tar", f"--pool={rpool}", "--format=zstd", "rich", "-"],
                           stdout=full, capture_output=False, stderr=subprocess.PIPE)
    assert r.returncode != 0 and b"disk full" in r.stderr, r.stderr
    rd, wr = os.pipe()
    os.close(rd)
    r = subprocess.run([transfer_bin, "export-tar", f"--pool={rpool}", "rich", "-"], stdout=wr, stderr=subprocess.PIPE)
    os.close(wr)
    assert r.returncode != 0 and b"Broken pipe" in r.stderr, r.stderr
    # Raw images cannot be exported as tar, nor directories as raw.
    failed(xfer(transfer_bin, rpool, "export-raw", "rich", str(tmp_path / "x.raw")), "raw")
    assert pool_entries(pool) == []
    # Invalid image names never reach the file system.
    for bad in ["../x", ".#hidden", "a/b", ""]:
        failed(xfer(transfer_bin, pool, "import-tar", "-", bad, input=b""))
    assert pool_entries(pool) == []


# ---- btrfs pools: subvolumes, read-only flag, removal without CAP_SYS_ADMIN ----

BTRFS_IOC_SUBVOL_GETFLAGS = 0x80089419
BTRFS_SUBVOL_RDONLY = 2


@pytest.fixture
def btrfs_pool(tmp_path):
    if not shutil.which("mkfs.btrfs"):
        pytest.skip("btrfs-progs not installed")
    img = tmp_path / "btrfs.img"
    with open(img, "wb") as f:
        f.truncate(300 << 20)
    subprocess.run(["mkfs.btrfs", "-q", str(img)], check=True, capture_output=True)
    mnt = tmp_path / "btrfs"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
    try:
        yield mnt / "pool"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def subvol_flags(path):
    import fcntl
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return struct.unpack("Q", fcntl.ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, b"\0" * 8))[0]
    finally:
        os.close(fd)


def test_btrfs_pool(transfer_bin, btrfs_pool, plain_tar, outside):
    ok(xfer(transfer_bin, btrfs_pool, "import-tar", str(plain_tar), "sv"))
    assert os.stat(btrfs_pool / "sv").st_ino == 256, "not a subvolume"
    assert (btrfs_pool / "sv" / "bin" / "busybox").exists()
    ok(xfer(transfer_bin, btrfs_pool, "import-tar", "--read-only", str(plain_tar), "ro"))
    assert subvol_flags(btrfs_pool / "ro") & BTRFS_SUBVOL_RDONLY
    # Replacing a read-only subvolume: the old one is removed although the helper lacks
    # CAP_SYS_ADMIN (no BTRFS_IOC_SNAP_DESTROY): flag lifted, emptied, rmdir'ed.
    ok(xfer(transfer_bin, btrfs_pool, "import-tar", "--force", str(plain_tar), "ro"))
    assert not subvol_flags(btrfs_pool / "ro") & BTRFS_SUBVOL_RDONLY
    # A failed import removes its temporary subvolume.
    failed(xfer(transfer_bin, btrfs_pool, "import-tar", "-", "evil", input=tar_bytes(HOSTILE["symlink-then-write"](outside))))
    check_untouched(outside)
    assert pool_entries(btrfs_pool) == ["ro", "sv"]
    listing = subprocess.run(["btrfs", "subvolume", "list", str(btrfs_pool.parent)], capture_output=True, text=True,
                             check=True).stdout
    assert ".#" not in listing, listing


def test_btrfs_pool_library(btrfs_pool):
    """ImagePool's snapshot clone, read-only flag and removal (gtest, pointed at the btrfs mount)."""
    unit = BUILD / "tests" / "unit" / "unit-tests"
    if not unit.exists():
        pytest.skip("unit tests not built")
    r = subprocess.run([str(unit), "--gtest_filter=Pool.Btrfs*"], capture_output=True, text=True,
                       env=dict(os.environ, MK_TEST_BTRFS_DIR=str(btrfs_pool.parent)))
    assert r.returncode == 0 and "[  PASSED  ] 1 test" in r.stdout, r.stdout + r.stderr
