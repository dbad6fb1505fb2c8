"""org.freedesktop.import1 in machd: transfers run by machd-transfer, driven over the bus
(dbus-python for the fd-passing calls), with an HTTP server on 127.0.0.1 for the pulls."""
import hashlib
import http.server
import io
import json
import os
import re
import socketserver
import tarfile
import threading
import time

import pytest

from conftest import TRANSFER, wait_for

dbus = pytest.importorskip("dbus")

IMPORT_DEST = "org.freedesktop.import1"
IMPORT_PATH = "/org/freedesktop/import1"
IMPORT_IFACE = "org.freedesktop.import1.Manager"

pytestmark = pytest.mark.skipif(not TRANSFER.exists(), reason="machd-transfer not built")


def manager(bus):
    conn = dbus.bus.BusConnection(bus.address)
    return dbus.Interface(conn.get_object(IMPORT_DEST, IMPORT_PATH), IMPORT_IFACE)


def list_transfers(bus, user=None):
    r = bus.busctl("--json=short", "call", IMPORT_DEST, IMPORT_PATH, IMPORT_IFACE, "ListTransfers", user=user)
    return json.loads(r.stdout)["data"][0]


def result_of(machd, tid, timeout=20):
    """Waits for the transfer to end; its result from machd's log (the TransferRemoved result)."""
    pat = re.compile(r"machd: transfer %d \([^)]*\): (\w+)" % tid)
    found = []

    def done():
        m = pat.search(machd.log.read_text(errors="replace"))
        if m:
            found.append(m.group(1))
        return bool(m)
    assert wait_for(done, timeout=timeout), machd.log.read_text()
    print(machd.log.read_text(errors="replace"))
    return found[0]


def make_tarball(path, files):
    with tarfile.open(path, "w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))


def tree(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


FILES = {"etc/os-release": b"ID=test\n", "usr/bin/hello": b"#!/bin/sh\necho hi\n", "data/big": os.urandom(200000)}


def test_import_tar_and_export_roundtrip(bus, machd, tmp_path):
    src = tmp_path / "img.tar"
    make_tarball(src, FILES)
    m = manager(bus)
    with open(src, "rb") as f:
        tid, path = m.ImportTar(dbus.types.UnixFd(f.fileno()), "imported", False, False)
    assert str(path) == "/org/freedesktop/import1/transfer/_%d" % tid
    assert result_of(machd, tid) == "done"
    assert tree(machd.pool / "imported") == FILES
    assert list_transfers(bus) == []

    out = tmp_path / "out.tar"
    with open(out, "wb") as f:
        tid, _ = m.ExportTar("imported", dbus.types.UnixFd(f.fileno()), "")
    assert result_of(machd, tid) == "done"
    back = tmp_path / "back"
    back.mkdir()
    with tarfile.open(out) as t:
        t.extractall(back)
    assert tree(back) == FILES
    # machd's log names each transfer in the direction the data went (issue 19: the export line
    # read "export-tar  -> imported").
    log = machd.log.read_text()
    assert "import-tar the caller's file descriptor -> imported started" in log, log
    assert "export-tar imported -> the caller's file descriptor started" in log, log


class Handler(http.server.SimpleHTTPRequestHandler):
    trickle = False

    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path.startswith("/slow/"):
            self.send_response(200)
            self.send_header("Content-Length", str(10 * 1024 * 1024))
            self.end_headers()
            try:
                for _ in range(600):
                    self.wfile.write(b"\0" * 512)
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass
            return
        super().do_GET()


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()

    class H(Handler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_pull_tar_checksum(bus, machd, http_root):
    root, url = http_root
    make_tarball(root / "good.tar", FILES)
    digest = hashlib.sha256((root / "good.tar").read_bytes()).hexdigest()
    (root / "SHA256SUMS").write_text("%s *good.tar\n%s *bad.tar\n" % (digest, "0" * 64))
    make_tarball(root / "bad.tar", FILES)
    m = manager(bus)
    tid, _ = m.PullTar(url + "/good.tar", "pulled", "checksum", False)
    assert result_of(machd, tid) == "done"
    assert tree(machd.pool / "pulled") == FILES

    tid, _ = m.PullTar(url + "/bad.tar", "badpull", "checksum", False)
    assert result_of(machd, tid) == "failed"
    assert sorted(os.listdir(machd.pool)) == ["pulled"]


def test_cancel_slow_pull_and_list(bus, machd, http_root):
    root, url = http_root
    m = manager(bus)
    tid, path = m.PullTar(url + "/slow/x.tar", "slow", "no", False)
    ts = list_transfers(bus)
    assert len(ts) == 1
    assert ts[0][0] == tid and ts[0][1] == "pull-tar" and ts[0][2] == url + "/slow/x.tar" and ts[0][3] == "slow"
    assert ts[0][5] == str(path)
    # everyone may list; only root may cancel or start
    assert len(list_transfers(bus, user=65534)) == 1
    r = bus.busctl("call", IMPORT_DEST, IMPORT_PATH, IMPORT_IFACE, "CancelTransfer", "u", tid, user=65534, check=False)
    assert r.returncode != 0 and "denied" in r.stderr.lower()
    # a second transfer of the same local name is refused
    with pytest.raises(dbus.exceptions.DBusException) as e:
        m.PullTar(url + "/slow/y.tar", "slow", "no", False)
    assert e.value.get_dbus_name() == "org.freedesktop.import1.TransferInProgress"
    bus.busctl("call", IMPORT_DEST, IMPORT_PATH, IMPORT_IFACE, "CancelTransfer", "u", tid)
    assert result_of(machd, tid) == "canceled"
    assert list_transfers(bus) == []
    assert not machd.pool.exists() or os.listdir(machd.pool) == []


def test_non_root_denied(bus, machd):
    r = bus.busctl("call", IMPORT_DEST, IMPORT_PATH, IMPORT_IFACE, "PullTar", "sssb",
                   "http://127.0.0.1:1/x.tar", "x", "no", "false", user=65534, check=False)
    assert r.returncode != 0 and "denied" in r.stderr.lower()
    r = bus.busctl("call", IMPORT_DEST, IMPORT_PATH, IMPORT_IFACE, "CancelTransfer", "u", 1, check=False)
    assert r.returncode != 0


MACHCTL = TRANSFER.parent.parent / "machctl" / "machctl"


def machctl(bus, *args, check=True):
    import subprocess
    r = subprocess.run([str(MACHCTL)] + [str(a) for a in args], env=bus.env(), capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError("machctl %s: %s" % (" ".join(map(str, args)), r.stderr))
    return r


def transfers_of(bus):
    """machctl list-transfers' rows (machinectl 252 has no JSON for it: -o json prints the table)."""
    keys = ("id", "percent", "type", "local", "remote")
    return [dict(zip(keys, l.split())) for l in machctl(bus, "list-transfers", "--no-legend").stdout.splitlines()]


def test_machctl_transfer_verbs(bus, machd, tmp_path, http_root):
    root, url = http_root
    src = tmp_path / "viactl.tar"
    make_tarball(src, FILES)
    r = machctl(bus, "import-tar", src)  # name from the file name
    assert tree(machd.pool / "viactl") == FILES
    assert "\r" not in r.stderr  # no progress bar when not on a terminal
    out = tmp_path / "exp.tar.gz"
    machctl(bus, "-q", "export-tar", "viactl", out)
    assert out.read_bytes()[:2] == b"\x1f\x8b"  # --format from the suffix
    assert machctl(bus, "list-transfers", "-o", "json").stdout == ""  # machinectl 252 prints its table, here empty

    make_tarball(root / "bad.tar", FILES)
    (root / "SHA256SUMS").write_text("%s *bad.tar\n" % ("0" * 64))
    r = machctl(bus, "pull-tar", "--verify=checksum", url + "/bad.tar", "bad", check=False)
    assert r.returncode != 0 and "failed" in r.stderr and "checksum" in r.stderr.lower()
    assert sorted(os.listdir(machd.pool)) == ["viactl"]

    import subprocess
    p = subprocess.Popen([str(MACHCTL), "-q", "pull-tar", "--verify=no", url + "/slow/s.tar", "slowctl"],
                         env=bus.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: transfers_of(bus) != [], timeout=10)
    ts = transfers_of(bus)
    assert ts[0]["local"] == "slowctl" and ts[0]["type"] == "pull-tar" and ts[0]["remote"] == url + "/slow/s.tar"
    machctl(bus, "cancel-transfer", ts[0]["id"])
    assert p.wait(20) != 0
    assert "canceled" in p.stderr.read()
    r = machctl(bus, "cancel-transfer", "999", check=False)
    assert r.returncode != 0


def test_systemd_machinectl_import_and_list_transfers(bus, machd, tmp_path):
    import shutil
    if not shutil.which("machinectl"):
        pytest.skip("machinectl not installed")
    from test_conformance import machinectl as sd_machinectl
    src = tmp_path / "sdimg.tar"
    make_tarball(src, FILES)
    r = sd_machinectl(bus, machd, "import-tar", str(src), "sdimg")
    assert tree(machd.pool / "sdimg") == FILES, r.stderr
    r = sd_machinectl(bus, machd, "list-transfers")
    assert "No transfers." in r.stdout


def test_machctl_shows_a_progress_bar_on_a_terminal(bus, machd, http_root):
    import pty
    import select
    import subprocess
    root, url = http_root
    master, slave = pty.openpty()
    p = subprocess.Popen([str(MACHCTL), "pull-tar", "--verify=no", url + "/slow/bar.tar", "barred"], env=bus.env(),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    out = b""
    end = time.time() + 20
    try:
        # The rate is bytes per second, from the helper's once-a-second "Got … at 10.0K/s." line.
        rate = re.compile(rb"\] +\d+% \d+(\.\d)?[BKMG]/s ETA")
        while not rate.search(out) and time.time() < end:
            if select.select([master], [], [], 0.5)[0]:
                out += os.read(master, 4096)
        text = out.decode(errors="replace")
        assert "\r[" in text and "%" in text and "ETA" in text, text
        assert rate.search(out) and "%/s" not in text, text
    finally:
        ts = transfers_of(bus)
        for t in ts:
            machctl(bus, "cancel-transfer", str(t["id"]), check=False)
        p.wait(30)
        os.close(master)
    assert not (machd.pool / "barred").exists()
