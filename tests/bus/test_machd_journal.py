"""machd's log lines go to the journal when journald listens: a stand-in journald (a datagram
socket speaking the native protocol) bound over /run/systemd/journal in machd's private mount
namespace. Machine start and end carry MACHINE=, machined's MESSAGE_IDs, NAME= and LEADER=."""
import socket
import struct
import subprocess
import time

from conftest import DEST, MACHD, TRANSFER, cleanup_machine_cgroups, create, wait_for

MACHINE_START = "24d8d4452573402496068381a6312df2"
MACHINE_STOP = "58432bd3bace477cb514b56381b8a758"


def parse_native(datagram):
    """One journal entry of the native protocol: KEY=value lines, or KEY\\n<le64 size><data>\\n."""
    fields, i = {}, 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            k = line
            (size,) = struct.unpack("<Q", datagram[nl + 1:nl + 9])
            v = datagram[nl + 9:nl + 9 + size]
            i = nl + 9 + size + 1
        fields[k.decode()] = v.decode(errors="replace")
    return fields


def test_machd_logs_to_the_journal_with_machine_fields(bus, tmp_path, leaders):
    jdir = tmp_path / "journal"
    jdir.mkdir()
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(jdir / "socket"))
    rx.settimeout(0.2)
    entries = []
    sh = ('mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/journal && '
          'mount --bind "$0" /run/systemd/journal && exec "$@"')
    log = open(tmp_path / "machd.stderr", "wb")
    p = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", sh, str(jdir), str(MACHD),
                          "--state-dir=%s" % (tmp_path / "machines"), "--pool=%s" % (tmp_path / "pool"),
                          "--transfer-path=%s" % TRANSFER], env=bus.env(), stdout=log, stderr=log)

    def drain():
        try:
            while True:
                entries.append(parse_native(rx.recv(1 << 20)))
        except socket.timeout:
            pass
        return entries
    try:
        assert wait_for(lambda: bus.busctl("status", DEST, check=False).returncode == 0, 10)
        assert wait_for(lambda: any("serving org.freedesktop.machine1" in e.get("MESSAGE", "") for e in drain()), 10)
        leader = leaders.spawn()
        create(bus, "jrnl-m", leader.pid)
        leader.kill()
        leader.wait()
        assert wait_for(lambda: any(e.get("MESSAGE_ID") == MACHINE_STOP for e in drain()), 10), entries
        start = next(e for e in entries if e.get("MESSAGE_ID") == MACHINE_START)
        assert start["MESSAGE"] == "New machine jrnl-m." and start["MACHINE"] == "jrnl-m"
        assert start["NAME"] == "jrnl-m" and start["LEADER"] == str(leader.pid)
        assert start["SYSLOG_IDENTIFIER"] == "machd" and start["PRIORITY"] == "6"
        stop = next(e for e in entries if e.get("MESSAGE_ID") == MACHINE_STOP)
        assert stop["MESSAGE"] == "Machine jrnl-m terminated." and stop["MACHINE"] == "jrnl-m"
        # Nothing of it on stderr: the journal has it.
        assert b"New machine" not in (tmp_path / "machd.stderr").read_bytes()
    finally:
        p.terminate()
        p.wait(10)
        rx.close()
        cleanup_machine_cgroups(["jrnl-m"])


def test_machd_logs_to_stderr_without_journald(bus, machd, leaders):
    leader = leaders.spawn()
    create(bus, "stderr-m", leader.pid)
    assert wait_for(lambda: "machd: New machine stderr-m." in machd.log.read_text(errors="replace"), 10)
