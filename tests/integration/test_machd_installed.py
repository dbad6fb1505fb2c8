"""machkit as a distribution would ship it, under a real systemd: a copy of the Debian 12 fixture gets
systemd-container (the host's, same systemd 252) and `meson install --destdir` of this build, boots
with spawn -b, and then every machd feature is used through the installed units: choosing machd with
its one command, StartMachine (spawn@NAME.service), shell, login, bind, copy-to/-from,
import/export/pull (from an HTTP server on the guest's loopback) and the image methods; at the end
switching back to systemd-machined and forth again. The guest's units are the installed ones,
unmodified. Root only; the guest is powered off and its copy removed.

    MK_BUILD_DIR=$PWD/build python3 -m pytest -q -p no:cacheprovider tests/integration/test_machd_installed.py
"""
import json
import os
import pathlib
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_boot import Console  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
HELPERS = REPO / "tests" / "helpers"
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("dpkg"), reason="needs root and dpkg")
MGR = "org.freedesktop.machine1 /org/freedesktop/machine1"
LIBDIR = "usr/local/lib/x86_64-linux-gnu"


def install_systemd_container(tree):
    """The host's systemd-container, file by file (the fixture's systemd is the same 252 build)."""
    host = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "systemd"], capture_output=True, text=True).stdout
    status = (tree / "var/lib/dpkg/status").read_text()
    guest = re.search(r"Package: systemd\n(?:.+\n)*?Version: (.+)", status).group(1)
    if host != guest:
        pytest.skip(f"host systemd {host} != guest {guest}")
    for f in subprocess.run(["dpkg", "-L", "systemd-container"], capture_output=True, text=True,
                            check=True).stdout.split():
        p = pathlib.Path(f)
        if (p.is_symlink() or p.is_file()) and not f.startswith(("/usr/share/man", "/usr/share/doc")):
            dest = tree / f.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-a", f, str(dest)], check=True)


def install_libraries(tree):
    """Shared libraries the installed programs need and the fixture lacks, as an administrator
    would install packages: into /usr/local/lib, then ldconfig."""
    (tree / LIBDIR).mkdir(parents=True, exist_ok=True)
    for exe in list((tree / "usr/local/bin").iterdir()) + list((tree / "usr/local/libexec").iterdir()):
        out = subprocess.run(["ldd", str(exe)], capture_output=True, text=True).stdout
        for lib in re.findall(r"=> (/\S+)", out):
            name = pathlib.Path(lib).name
            if not any((tree / d / name).exists() for d in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu", LIBDIR)):
                shutil.copy2(lib, tree / LIBDIR / name)
    subprocess.run(["ldconfig", "-r", str(tree)], check=True)


def busybox_tree(path, boot=False):
    subprocess.run([str(HELPERS / "busybox-tree.sh"), str(path)], check=True)
    if boot:
        (path / "sbin" / "init").unlink(missing_ok=True)
        (path / "sbin" / "init").symlink_to("/bin/busybox")
        (path / "etc" / "inittab").write_text("::sysinit:/bin/echo booted\n::respawn:/bin/sleep 1000\n")


class Guest:
    def __init__(self, console):
        self.c = console
        self.leader = console.leader()

    def sh(self, script, check=True, timeout=120, **kw):
        r = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "-r", "-w", "/bin/sh", "-c", script],
                           capture_output=True, text=True, timeout=timeout, **kw)
        if check:
            assert r.returncode == 0, f"{script}\nstdout: {r.stdout}\nstderr: {r.stderr}\n" + self.journal()
        return r

    def journal(self):
        r = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "-r", "-w", "journalctl", "--no-pager",
                            "-n", "30", "-u", "machd", "-u", "systemd-machined", "-u", "spawn@*"],
                           capture_output=True, text=True, timeout=60)
        return "journal:\n" + r.stdout

    def wait_until(self, script, what, timeout=60):
        end = time.monotonic() + timeout
        while True:
            r = self.sh(script, check=False)
            if r.returncode == 0:
                return r
            assert time.monotonic() < end, f"{what}: {r.stdout} {r.stderr}\n" + self.journal()
            time.sleep(0.3)

    def owner(self, name):
        """The unit whose process owns bus name `name` (busctl's UNIT column), or '' (activatable only)."""
        r = self.sh(f"busctl --no-pager --no-legend list | awk '$1 == \"{name}\" {{print $6}}'", check=False)
        return r.stdout.strip().strip("-")


@pytest.fixture(scope="module")
def guest(spawn_bin, debian_tree, tmp_path_factory):
    build = pathlib.Path(spawn_bin).parents[2]
    tmp = tmp_path_factory.mktemp("installed")
    tree = tmp / "tree"
    subprocess.run(["cp", "-a", str(debian_tree), str(tree)], check=True)
    install_systemd_container(tree)
    r = subprocess.run(["meson", "install", "-C", str(build), "--no-rebuild", "--quiet", "--destdir", str(tree)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    install_libraries(tree)
    busybox_tree(tree / "var/lib/machines/bootbb", boot=True)  # StartMachine's image
    busybox_tree(tree / "srv/inner")                          # a plain container for bind/copy/shell
    name = "inst-" + uuid.uuid4().hex[:6]
    c = Console([spawn_bin, "-b", "-D", str(tree), "-M", name])
    try:
        assert c.wait_for(r"Reached target [^\n]*multi-user\.target", 120), c.text()
        g = Guest(c)
        g.sh("systemctl is-system-running --wait", check=False)
        yield g
        c.p.send_signal(signal.SIGTERM)
        c.wait_exit(90)
    finally:
        if c.p.poll() is None:
            c.p.kill()
            c.p.wait()
        # Read-only images carry the immutable flag.
        subprocess.run(["chattr", "-R", "-f", "-i", str(tree / "var/lib/machines")], check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", str(tmp)], check=False)


@pytest.fixture(scope="module")
def inner(guest):
    """A container run by spawn inside the guest without a user namespace (bind needs that)."""
    p = subprocess.Popen(["nsenter", "-t", str(guest.leader), "-a", "-r", "-w", "/usr/local/bin/spawn", "-q",
                          "-D", "/srv/inner", "-M", "inner", "--", "/bin/sh", "-c", "echo ready; exec sleep 100000"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.strip() == "ready", p.stderr.read() if p.poll() is not None else line
    yield "inner"
    guest.sh("machctl terminate inner", check=False)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def test_choosing_machd_is_one_command(guest):
    # Installed next to systemd-container: machined answers until machd is chosen.
    assert guest.owner("org.freedesktop.machine1") in ("", "systemd-machined.service")
    guest.sh("systemctl enable --now machd.service")
    assert guest.sh("systemctl is-active machd.service").stdout.strip() == "active"
    assert guest.owner("org.freedesktop.machine1") == "machd.service"
    assert guest.owner("org.freedesktop.import1") == "machd.service"
    assert guest.sh("systemctl is-active systemd-machined.service", check=False).stdout.strip() != "active"
    # The unit as installed: systemd finds nothing to complain about.
    # (The guest has no man(1) to check Documentation= with.)
    r = guest.sh("systemd-analyze verify machd.service spawn@x.service systemd-machined.service 2>&1", check=False)
    complaints = [l for l in r.stdout.splitlines() if "Command 'man " not in l]
    assert complaints == [], r.stdout
    print(guest.sh("systemd-analyze security --no-pager machd.service systemd-machined.service "
                   "systemd-importd.service 2>&1 | tail -4").stdout)


def test_start_machine_runs_the_spawn_unit(guest):
    r = guest.sh(f"busctl call {MGR} io.machkit.Manager1 StartMachine s bootbb")
    assert r.stdout.strip() == 'us 0 "spawn@bootbb.service"', r.stdout
    guest.wait_until("machctl wait --timeout=5 bootbb", "bootbb registers", timeout=90)
    show = guest.sh("machctl show bootbb").stdout
    assert "Unit=spawn@bootbb.service" in show, show
    assert guest.sh("systemctl is-active spawn@bootbb.service").stdout.strip() == "active"
    # Once more while it runs: the machine exists.
    r = guest.sh(f"busctl call {MGR} io.machkit.Manager1 StartMachine s bootbb", check=False)
    assert r.returncode != 0 and "already exists" in r.stderr, r.stderr
    r = guest.sh(f"busctl call {MGR} io.machkit.Manager1 StartMachine s nosuchimage", check=False)
    assert r.returncode != 0 and "No image directory" in r.stderr, r.stderr
    guest.sh("machctl poweroff -s SIGUSR2 --timeout=30 bootbb")
    assert guest.sh("systemctl is-active spawn@bootbb.service", check=False).stdout.strip() != "active"


def test_shell_is_not_confined_by_the_unit(guest, inner):
    # What the shell may do is the container's business: none of machd.service's sandbox reaches it.
    r = guest.sh("machctl shell inner /bin/sh -c 'grep -E \"^(NoNewPrivs|CapBnd)\" /proc/self/status; "
                 "echo hi > /tmp/x && chmod 4755 /tmp/x && echo suid-ok; exit 3'", check=False)
    assert r.returncode == 3, r.stdout + r.stderr + guest.journal()
    assert "NoNewPrivs:\t0" in r.stdout and "suid-ok" in r.stdout, r.stdout
    assert guest.sh("machctl shell inner /bin/id -u").stdout.strip() == "0"


def test_login_reaches_the_containers_login(guest, inner):
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "dumb"
        os.execvp("nsenter", ["nsenter", "-t", str(guest.leader), "-a", "-r", "-w", "machctl", "login", "inner"])
    out = b""

    def expect(text, timeout):
        nonlocal out
        end = time.monotonic() + timeout
        while text not in out and time.monotonic() < end:
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break
        assert text in out, out

    try:
        expect(b"login: ", 60)
        os.write(fd, b"root\n")
        expect(b"assword", 30)  # busybox login(1) of the container asks: it runs in there
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)


def test_bind_mounts_a_host_directory(guest, inner):
    guest.sh("mkdir -p /root/bindsrc && echo from-host > /root/bindsrc/f && mkdir -p /srv/inner/mnt/b")
    guest.sh("machctl bind --mkdir inner /root/bindsrc /mnt/b")
    assert guest.sh("machctl shell inner /bin/cat /mnt/b/f").stdout.strip() == "from-host"
    guest.sh("machctl bind --read-only --mkdir inner /root/bindsrc /mnt/ro")
    r = guest.sh("machctl shell inner /bin/sh -c 'echo x > /mnt/ro/g'", check=False)
    assert r.returncode != 0


def test_copy_to_and_from(guest, inner):
    guest.sh("echo to-machine > /root/copysrc")
    guest.sh("machctl copy-to inner /root/copysrc /tmp/copied")
    assert guest.sh("machctl shell inner /bin/cat /tmp/copied").stdout.strip() == "to-machine"
    guest.sh("machctl shell inner /bin/sh -c 'echo from-machine > /tmp/back'")
    guest.sh("machctl copy-from inner /tmp/back /root/back")
    assert guest.sh("cat /root/back").stdout.strip() == "from-machine"


def test_import_export_pull(guest):
    guest.sh("tar -C /srv/inner -cf /root/bb.tar . && mkdir -p /root/www && cp /root/bb.tar /root/www/")
    guest.sh("machctl import-tar /root/bb.tar imported")
    assert guest.sh("test -x /var/lib/machines/imported/bin/busybox", check=False).returncode == 0
    guest.sh("machctl export-tar imported /root/exported.tar.gz")
    assert "./bin/busybox" in guest.sh("tar -tzf /root/exported.tar.gz").stdout.split()
    httpd = subprocess.Popen(["nsenter", "-t", str(guest.leader), "-a", "-r", "-w", "/srv/inner/bin/busybox", "httpd",
                              "-f", "-p", "127.0.0.1:8088", "-h", "/root/www"])
    try:
        guest.wait_until("/srv/inner/bin/busybox wget -q -O /dev/null http://127.0.0.1:8088/bb.tar", "httpd up")
        guest.sh("machctl pull-tar --verify=no http://127.0.0.1:8088/bb.tar pulled")
        assert guest.sh("test -x /var/lib/machines/pulled/bin/busybox", check=False).returncode == 0
    finally:
        httpd.kill()
        httpd.wait()


def transfer_unit(guest):
    r = guest.wait_until("systemctl list-units --no-legend --plain 'machd-transfer-*' | grep -q running && "
                         "systemctl list-units --no-legend --plain 'machd-transfer-*'", "a running transfer unit")
    return r.stdout.split()[0]


def stalled_transfer(guest, command, what, end):
    """Starts `command` (a transfer that waits for its input), returns the running unit's sandbox
    properties, ends it with `end` and checks that it left nothing behind."""
    p = subprocess.Popen(["nsenter", "-t", str(guest.leader), "-a", "-r", "-w", "/bin/sh", "-c", command],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        unit = transfer_unit(guest)
        props = dict(l.split("=", 1) for l in guest.sh(
            f"systemctl show {unit} -p NoNewPrivileges -p PrivateNetwork -p ProtectSystem -p ReadWritePaths "
            "-p RestrictAddressFamilies -p CapabilityBoundingSet -p ControlGroup -p MainPID").stdout.splitlines())
        print(guest.sh(f"systemd-analyze security --no-pager {unit} | tail -1").stdout)
        end(unit)
        out, err = p.communicate(timeout=60)
        assert p.returncode != 0, out + err
        guest.wait_until(f"! systemctl is-active {unit}", f"{what}: {unit} ends")
        assert guest.sh("ls -A /var/lib/machines | grep '^\\.#'", check=False).stdout == ""
        return unit, props
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_transfers_run_as_sandboxed_units(guest):
    # An import waits on a FIFO nobody writes to; a pull on a server that never answers.
    guest.sh("mkfifo /root/fifo")
    writer = subprocess.Popen(["nsenter", "-t", str(guest.leader), "-a", "-r", "-w", "/bin/sh", "-c",
                               "echo $$ > /root/writer.pid; exec sleep 100000 > /root/fifo"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    guest.wait_until("test -s /root/writer.pid", "the FIFO's writer")
    unit, props = stalled_transfer(guest, "machctl import-tar /root/fifo stalled-import", "import",
                                   lambda unit: guest.sh("kill $(cat /root/writer.pid)"))
    assert unit.startswith("machd-transfer-"), unit
    assert props["NoNewPrivileges"] == "yes" and props["PrivateNetwork"] == "yes", props
    assert props["ProtectSystem"] == "strict" and props["ReadWritePaths"] == "/var/lib/machines", props
    assert props["RestrictAddressFamilies"] == "AF_UNIX", props
    assert "cap_sys_admin" not in props["CapabilityBoundingSet"], props
    assert props["ControlGroup"].startswith("/system.slice/machd-transfer-"), props  # not machd's cgroup
    writer.wait()

    # A CGI that never answers, served on the guest's loopback.
    guest.sh("mkdir -p /root/www2/cgi-bin && printf '#!/bin/sh\\nexec sleep 100000\\n' > /root/www2/cgi-bin/stall "
             "&& chmod 755 /root/www2/cgi-bin/stall")
    httpd = subprocess.Popen(["nsenter", "-t", str(guest.leader), "-a", "-r", "-w", "/srv/inner/bin/busybox", "httpd",
                              "-f", "-p", "127.0.0.1:8089", "-h", "/root/www2"])
    try:
        guest.wait_until("grep -q '0100007F:1F99 00000000:0000 0A' /proc/net/tcp", "httpd listens on 127.0.0.1:8089")

        def cancel(unit):
            guest.sh(f"machctl cancel-transfer {unit.split('-')[2].split('.')[0]}")  # the unit carries the id
        unit, props = stalled_transfer(guest, "machctl pull-tar --verify=no http://127.0.0.1:8089/cgi-bin/stall stalled-pull",
                                       "pull", cancel)
        assert props["PrivateNetwork"] == "no", props
        assert sorted(props["RestrictAddressFamilies"].split()) == ["AF_INET", "AF_INET6", "AF_UNIX"], props
        assert props["NoNewPrivileges"] == "yes", props
    finally:
        httpd.kill()
        httpd.wait()


def test_images(guest):
    names = [i["name"] for i in json.loads(guest.sh("machctl list-images -o json").stdout)]
    assert {"imported", "pulled", "bootbb"} <= set(names), names
    guest.sh("machctl clone imported cloned && machctl rename cloned renamed && machctl read-only renamed")
    status = guest.sh("machctl image-status renamed").stdout
    assert re.search(r"RO: read-only", status), status
    guest.sh("machctl read-only renamed false && machctl remove renamed pulled")
    names = [i["name"] for i in json.loads(guest.sh("machctl list-images -o json").stdout)]
    assert "renamed" not in names and "pulled" not in names, names


def test_switching_back_to_machined_and_forth(guest):
    guest.sh("systemctl disable --now machd.service")
    # The next call activates systemd-machined through systemd-container's files.
    guest.sh(f"busctl call {MGR} org.freedesktop.machine1.Manager ListMachines")
    assert guest.owner("org.freedesktop.machine1") == "systemd-machined.service"
    guest.sh("busctl call org.freedesktop.import1 /org/freedesktop/import1 org.freedesktop.import1.Manager ListTransfers")
    assert guest.owner("org.freedesktop.import1") == "systemd-importd.service"
    guest.sh("systemctl enable --now machd.service")
    assert guest.owner("org.freedesktop.machine1") == "machd.service"
    assert guest.owner("org.freedesktop.import1") == "machd.service"
    assert guest.sh("systemctl is-active systemd-machined.service systemd-importd.service",
                    check=False).stdout.split() == ["inactive", "inactive"]
    # Activation reaches machd too: stopped, it comes back on the next call.
    guest.sh("systemctl stop machd.service")
    guest.sh(f"busctl call {MGR} org.freedesktop.machine1.Manager ListMachines")
    assert guest.owner("org.freedesktop.machine1") == "machd.service"


def test_activation_without_systemd_container(guest):
    # machkit's own activation files (read after systemd-container's) take over once those are gone.
    guest.sh("rm /usr/share/dbus-1/system-services/org.freedesktop.machine1.service "
             "/usr/share/dbus-1/system-services/org.freedesktop.import1.service && systemctl reload dbus")
    guest.sh("systemctl stop machd.service")
    assert guest.owner("org.freedesktop.import1") == ""
    guest.sh("busctl call org.freedesktop.import1 /org/freedesktop/import1 org.freedesktop.import1.Manager ListTransfers")
    assert guest.owner("org.freedesktop.import1") == "machd.service"
    assert guest.owner("org.freedesktop.machine1") == "machd.service"
