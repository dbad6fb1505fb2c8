"""OCI images (issue 18): `machd-transfer import-oci` / `pull-oci` against a real registry
(Debian's docker-registry, distribution 2.8, on 127.0.0.1 with a temp config and storage), filled
by Debian's `skopeo copy` from OCI layouts built here (busybox-based, three layers, with a
whiteout and an opaque directory). Then the pulled images are run with spawn.

Failure cases check a clear one-line error, no partial image (no NAME, NAME.mstack, .# entries or
new .oci-* layers) and that the layers other images share are untouched. Root only."""
import gzip
import hashlib
import http.server
import io
import json
import os
import pathlib
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from conftest import BUILD  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
FOREIGN = "s390x" if GOARCH != "s390x" else "amd64"


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
    return p


def xfer(transfer_bin, pool, *args, timeout=300):
    return subprocess.run([transfer_bin, args[0], f"--pool={pool}", "--registries-dir=/nonexistent", *args[1:]],
                          capture_output=True, timeout=timeout)


def ok(r):
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r


def failed(r, *words):
    assert r.returncode != 0
    err = r.stderr.decode(errors="replace").strip()
    last = err.splitlines()[-1] if err else ""
    assert last.startswith("machd-transfer: "), err
    for w in words:
        assert w in last, err
    return last


def entries(pool):
    return sorted(os.listdir(pool))


# ---- building OCI layouts ----

def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def tar_of(members):
    """members: list of (TarInfo, data or None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for ti, data in members:
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def ti(name, type_=tarfile.REGTYPE, data=b"", mode=0o644, linkname=""):
    t = tarfile.TarInfo(name)
    t.type = type_
    t.mode = mode if type_ != tarfile.DIRTYPE else 0o755
    t.linkname = linkname
    t.mtime = 1700000000
    if type_ == tarfile.REGTYPE:
        t.size = len(data)
        return (t, data)
    return (t, None)


def tree_tar(root: pathlib.Path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        t.add(str(root), arcname=".")
    return buf.getvalue()


def write_blob(layout, data):
    d = sha(data)
    p = layout / "blobs" / "sha256" / d[7:]
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return {"digest": d, "size": len(data)}


def build_layout(layout: pathlib.Path, layers, config, arch=GOARCH, compress="gzip", index_platforms=None):
    """An OCI image layout with `layers` (uncompressed tars). With index_platforms, index.json
    points at a nested index with one manifest per architecture (all with the same layers)."""
    layout.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    descs, diff_ids = [], []
    for raw in layers:
        diff_ids.append(sha(raw))
        if compress == "gzip":
            data, mt = gzip.compress(raw, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"
        elif compress == "zstd":
            data = subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout
            mt = "application/vnd.oci.image.layer.v1.tar+zstd"
        else:
            data, mt = raw, "application/vnd.oci.image.layer.v1.tar"
        descs.append({"mediaType": mt, **write_blob(layout, data)})

    def manifest_for(a):
        cfg = {"architecture": a, "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids},
               "config": config}
        c = write_blob(layout, json.dumps(cfg).encode())
        m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
             "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **c}, "layers": descs}
        return {"mediaType": "application/vnd.oci.image.manifest.v1+json", **write_blob(layout, json.dumps(m).encode())}

    if index_platforms:
        entries_ = [{**manifest_for(a), "platform": {"architecture": a, "os": "linux"}} for a in index_platforms]
        inner = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries_}
        top = [{"mediaType": "application/vnd.oci.image.index.v1+json", **write_blob(layout, json.dumps(inner).encode()),
                "annotations": {"org.opencontainers.image.ref.name": "latest"}}]
    else:
        top = [{**manifest_for(arch), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": top}))
    return layout


APP = b"#!/bin/sh\necho \"oci-app-ran $GREETING $* in $(pwd)\"\n"
CONFIG = {"Entrypoint": ["/bin/sh", "/app/run.sh"], "Cmd": ["hello world"], "Env": ["GREETING=hi", "PATH=/bin"],
          "WorkingDir": "/app", "StopSignal": "SIGINT", "Labels": {"x": "y"}}


def app_layers(busybox_tree_template):
    base = tree_tar(busybox_tree_template)
    lower = tar_of([ti("data", tarfile.DIRTYPE), ti("data/keep", data=b"keep\n"), ti("data/old", data=b"old\n"),
                    ti("data/opq", tarfile.DIRTYPE), ti("data/opq/lower", data=b"lower\n")])
    upper = tar_of([ti("data", tarfile.DIRTYPE), ti("data/.wh.old"), ti("data/opq", tarfile.DIRTYPE),
                    ti("data/opq/.wh..wh..opq"), ti("data/opq/upper", data=b"upper\n"),
                    ti("app", tarfile.DIRTYPE), ti("app/run.sh", data=APP, mode=0o755)])
    return [base, lower, upper]


@pytest.fixture(scope="session")
def app_layout(busybox_tree_template, tmp_path_factory):
    return build_layout(tmp_path_factory.mktemp("oci") / "app", app_layers(busybox_tree_template), CONFIG)


def check_app_tree(root: pathlib.Path):
    assert (root / "bin" / "busybox").is_file()
    assert (root / "data" / "keep").read_text() == "keep\n"
    assert not (root / "data" / "old").exists()
    assert (root / "data" / "opq" / "upper").read_text() == "upper\n"
    assert not (root / "data" / "opq" / "lower").exists()
    assert not list(root.rglob(".wh.*"))


def check_stack(pool, name, nlayers=3):
    st = pool / f"{name}.mstack"
    links = sorted(p.name for p in st.iterdir() if p.name.startswith("layer@"))
    assert links == [f"layer@{i}" for i in range(nlayers)]
    assert (st / "rw").is_dir()
    for i in range(nlayers):
        target = os.readlink(st / f"layer@{i}")
        assert target.startswith("../.oci-sha256-") and (st / target).is_dir()
    top = st / f"layer@{nlayers - 1}"
    # Whiteouts as overlayfs wants them: char 0/0 and the opaque xattr (userxattr flavour).
    wo = os.lstat(top / "data" / "old")
    assert stat.S_ISCHR(wo.st_mode) and wo.st_rdev == 0
    assert os.getxattr(top / "data" / "opq", "user.overlay.opaque") == b"y"
    assert not list(pathlib.Path(os.path.realpath(top)).rglob(".wh.*"))


def check_settings(pool, name):
    s = (pool / f"{name}.nspawn").read_text()
    assert "Boot=no" in s
    assert 'Parameters="/bin/sh" "/app/run.sh" "hello world"' in s
    assert "WorkingDirectory=/app" in s and 'Environment="GREETING=hi"' in s and "KillSignal=SIGINT" in s
    assert json.loads((pool / f"{name}.oci-config").read_text())["config"]["Entrypoint"] == CONFIG["Entrypoint"]


def oci_layers(pool):
    return sorted(p for p in os.listdir(pool) if p.startswith(".oci-"))


def test_import_layout_as_stack_and_flattened(transfer_bin, pool, app_layout):
    ok(xfer(transfer_bin, pool, "import-oci", str(app_layout), "app"))
    check_stack(pool, "app")
    check_settings(pool, "app")
    assert len(oci_layers(pool)) == 3
    # The same image again, flattened: the layers are shared (nothing new unpacked).
    before = {p: os.stat(pool / p).st_ino for p in oci_layers(pool)}
    ok(xfer(transfer_bin, pool, "import-oci", "--flatten", str(app_layout), "flat"))
    assert {p: os.stat(pool / p).st_ino for p in oci_layers(pool)} == before
    check_app_tree(pool / "flat")
    assert (pool / "flat.nspawn").exists()
    assert not [e for e in entries(pool) if e.startswith(".#")]
    # Exists: refused without --force.
    failed(xfer(transfer_bin, pool, "import-oci", str(app_layout), "app"), "already exists")


def test_import_oci_archive_from_skopeo(transfer_bin, pool, app_layout, tmp_path):
    arch = tmp_path / "app.oci.tar"
    subprocess.run(["skopeo", "copy", "-q", f"oci:{app_layout}:latest", f"oci-archive:{arch}:latest"],
                   check=True, capture_output=True)
    ok(xfer(transfer_bin, pool, "import-oci", "--flatten", str(arch), "fromarchive"))
    check_app_tree(pool / "fromarchive")
    assert not [e for e in entries(pool) if e.startswith(".#")]


def test_zstd_and_uncompressed_layers(transfer_bin, pool, busybox_tree_template, tmp_path):
    for comp in ("zstd", "none"):
        lay = build_layout(tmp_path / comp, app_layers(busybox_tree_template), CONFIG, compress=comp)
        ok(xfer(transfer_bin, pool, "import-oci", "--flatten", str(lay), f"img-{comp}"))
        check_app_tree(pool / f"img-{comp}")


# ---- hostile layouts (offline): same checks as for pulls ----

def hostile_layout(tmp_path, busybox_tree_template, case):
    base = tar_of([ti("bin", tarfile.DIRTYPE), ti("bin/x", data=b"x")])
    if case == "whiteout-escape":
        return build_layout(tmp_path / case, [base, tar_of([ti("data", tarfile.DIRTYPE), ti("data/.wh..."),])], {})
    if case == "not-a-tar":
        return build_layout(tmp_path / case, [base, b"this is not a tar archive at all\n" * 100], {})
    if case == "foreign-arch":
        return build_layout(tmp_path / case, [base], {}, index_platforms=[FOREIGN])
    if case == "digest-mismatch":
        lay = build_layout(tmp_path / case, [base, tar_of([ti("y", data=b"y" * 5000)])], {})
        # Damage the second layer blob, keeping its size.
        idx = json.loads((lay / "index.json").read_text())
        man = json.loads((lay / "blobs/sha256" / idx["manifests"][0]["digest"][7:]).read_text())
        p = lay / "blobs/sha256" / man["layers"][1]["digest"][7:]
        raw = bytearray(gzip.decompress(p.read_bytes()))
        raw[600] ^= 1
        data = gzip.compress(bytes(raw), mtime=0)
        p.write_bytes(data)
        man["layers"][1]["size"] = len(data)
        mb = json.dumps(man).encode()
        d = write_blob(lay, mb)
        idx["manifests"][0].update(d)
        (lay / "index.json").write_text(json.dumps(idx))
        return lay
    if case == "too-many-layers":
        lay = build_layout(tmp_path / case, [base], {})
        idx = json.loads((lay / "index.json").read_text())
        man = json.loads((lay / "blobs/sha256" / idx["manifests"][0]["digest"][7:]).read_text())
        man["layers"] = man["layers"] * 10000
        d = write_blob(lay, json.dumps(man).encode())
        idx["manifests"][0].update(d)
        (lay / "index.json").write_text(json.dumps(idx))
        return lay
    raise AssertionError(case)


HOSTILE = {
    "whiteout-escape": "points outside",
    "not-a-tar": "layer sha256:",
    "foreign-arch": f"linux/{FOREIGN}",
    "digest-mismatch": "digest mismatch",
    "too-many-layers": "10000 layers",
}


@pytest.fixture
def shared_pool(transfer_bin, pool, app_layout):
    """A pool that already holds an image whose layers must survive every failure."""
    ok(xfer(transfer_bin, pool, "import-oci", str(app_layout), "app"))
    snap = {}
    for l in oci_layers(pool):
        for dp, dns, fns in os.walk(pool / l):
            for n in dns + fns:
                st = os.lstat(os.path.join(dp, n))
                snap[os.path.join(dp, n)] = (st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns)
    return pool, snap


def check_pool_unchanged(shared):
    pool, snap = shared
    assert sorted(e for e in entries(pool)) == sorted(["app.mstack", "app.nspawn", "app.oci-config"] +
                                                      sorted({os.path.relpath(p, pool).split("/")[0] for p in snap}))
    now = {}
    for l in oci_layers(pool):
        for dp, dns, fns in os.walk(pool / l):
            for n in dns + fns:
                st = os.lstat(os.path.join(dp, n))
                now[os.path.join(dp, n)] = (st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns)
    assert now == snap


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layout(transfer_bin, shared_pool, busybox_tree_template, tmp_path, case):
    pool, _ = shared_pool
    lay = hostile_layout(tmp_path, busybox_tree_template, case)
    failed(xfer(transfer_bin, pool, "import-oci", str(lay), "bad"), HOSTILE[case])
    check_pool_unchanged(shared_pool)


# ---- a real registry ----

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc):
    for _ in range(500):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("server did not come up")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    if not shutil.which("docker-registry"):
        pytest.skip("docker-registry is not installed")
    d = tmp_path_factory.mktemp("registry")
    port = free_port()
    (d / "config.yml").write_text(f"""version: 0.1
log: {{level: error}}
storage:
  filesystem: {{rootdirectory: {d}/data}}
http: {{addr: 127.0.0.1:{port}}}
""")
    proc = subprocess.Popen(["docker-registry", "serve", str(d / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=open(d / "log", "wb"))
    try:
        wait_port(port, proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def push(layout, dest, *extra, ref="latest"):
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", *extra, f"oci:{layout}:{ref}",
                    f"docker://{dest}"], check=True, capture_output=True)


def remote_digest(ref):
    out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], check=True,
                         capture_output=True).stdout
    return sha(out)


@pytest.fixture(scope="module")
def pushed(registry, busybox_tree_template, tmp_path_factory):
    """What the registry holds: the app as OCI and as Docker v2s2, a manifest list, a foreign image."""
    t = tmp_path_factory.mktemp("layouts")
    app = build_layout(t / "app", app_layers(busybox_tree_template), CONFIG)
    push(app, f"{registry}/test/app:v1")
    push(app, f"{registry}/test/docker:v1", "--format", "v2s2")
    multi = build_layout(t / "multi", app_layers(busybox_tree_template), CONFIG, index_platforms=[FOREIGN, GOARCH])
    push(multi, f"{registry}/test/multi:v1", "--all")
    foreign = build_layout(t / "foreign", app_layers(busybox_tree_template)[:1], {}, index_platforms=[FOREIGN])
    push(foreign, f"{registry}/test/foreign:v1", "--all")
    return registry


def test_pull_by_tag_and_by_digest(transfer_bin, pool, pushed):
    ok(xfer(transfer_bin, pool, "pull-oci", f"{pushed}/test/app:v1", "app"))
    check_stack(pool, "app")
    check_settings(pool, "app")
    layers = oci_layers(pool)
    dig = remote_digest(f"{pushed}/test/app:v1")
    ok(xfer(transfer_bin, pool, "pull-oci", "--flatten", f"{pushed}/test/app@{dig}", "pinned"))
    check_app_tree(pool / "pinned")
    assert oci_layers(pool) == layers  # shared, not fetched twice
    assert not [e for e in entries(pool) if e.startswith(".#")]


def test_pull_docker_format_and_manifest_list(transfer_bin, pool, pushed):
    r = ok(xfer(transfer_bin, pool, "pull-oci", "--flatten", f"{pushed}/test/docker:v1", "dock"))
    check_app_tree(pool / "dock")
    ok(xfer(transfer_bin, pool, "pull-oci", f"{pushed}/test/multi:v1", "multi"))
    check_stack(pool, "multi")


def test_pull_foreign_architecture(transfer_bin, pool, pushed):
    failed(xfer(transfer_bin, pool, "pull-oci", f"{pushed}/test/foreign:v1", "f"), f"linux/{FOREIGN}", "no image for")
    assert entries(pool) == []


class Front(http.server.ThreadingHTTPServer):
    """A proxy in front of the registry: Bearer token auth, or one way of misbehaving."""
    daemon_threads = True

    def __init__(self, upstream, mode):
        self.upstream, self.mode, self.release = upstream, mode, threading.Event()
        self.token_requests = 0
        super().__init__(("127.0.0.1", 0), FrontHandler)

    @property
    def addr(self):
        return f"127.0.0.1:{self.server_address[1]}"


class FrontHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        s = self.server
        if self.path.startswith("/token"):
            s.token_requests += 1
            assert "scope=repository%3Atest%2Fapp%3Apull" in self.path, self.path
            return self.reply(200, b'{"token": "good-token"}', [("Content-Type", "application/json")])
        challenge = ("WWW-Authenticate", f'Bearer realm="http://{s.addr}/token",service="test",'
                                         f'scope="repository:test/app:pull"')
        if s.mode == "redirect-loop" and "/blobs/" in self.path:
            return self.reply(302, headers=[("Location", self.path)])
        if s.mode == "401-forever" or self.headers.get("Authorization") != "Bearer good-token":
            return self.reply(401, b'{"errors":[]}', [challenge, ("Content-Type", "application/json")])
        req = urllib.request.Request(f"http://{s.upstream}{self.path}", headers={
            "Accept": self.headers.get("Accept", "*/*")})
        try:
            with urllib.request.urlopen(req) as r:
                body, ctype, code = r.read(), r.headers.get("Content-Type", ""), r.status
        except urllib.error.HTTPError as e:
            return self.reply(e.code, e.read())
        if "/blobs/" in self.path and len(body) > 100000:
            if s.mode == "stall":
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:1000])
                self.wfile.flush()
                s.release.wait(120)
                return
            if s.mode == "bad-digest":
                body = body[:5000] + bytes([body[5000] ^ 1]) + body[5001:]
        self.reply(code, body, [("Content-Type", ctype)])


@pytest.fixture
def front(pushed):
    servers = []

    def make(mode):
        f = Front(pushed, mode)
        threading.Thread(target=f.serve_forever, daemon=True).start()
        servers.append(f)
        return f
    yield make
    for f in servers:
        f.release.set()
        f.shutdown()
        f.server_close()


def test_pull_through_token_auth(transfer_bin, pool, front):
    f = front("auth")
    ok(xfer(transfer_bin, pool, "pull-oci", "--flatten", f"{f.addr}/test/app:v1", "authed"))
    check_app_tree(pool / "authed")
    assert f.token_requests == 1  # one token for the manifest, the config and all layers


FRONT_FAILURES = {
    "401-forever": "HTTP 401",
    "redirect-loop": "too many redirects",
    "stall": "stalled",
    "bad-digest": "digest mismatch",
}


@pytest.mark.parametrize("mode", sorted(FRONT_FAILURES))
def test_pull_failures_leave_nothing(transfer_bin, pushed, front, tmp_path, mode):
    pool = tmp_path / "pool"
    pool.mkdir(mode=0o700)
    # Another image shares the upper layers: they must survive untouched. Its base layer (the
    # only blob large enough for the front to misbehave on) is dropped, so the pull fetches it.
    ok(xfer(transfer_bin, pool, "pull-oci", f"{pushed}/test/app:v1", "app"))
    shutil.rmtree(pool / os.readlink(pool / "app.mstack" / "layer@0")[3:])
    shared = [os.readlink(pool / "app.mstack" / f"layer@{i}")[3:] for i in (1, 2)]
    before = entries(pool)
    f = front(mode)
    last = failed(xfer(transfer_bin, pool, "pull-oci", "--stall-timeout=2", f"{f.addr}/test/app:v1", "bad"),
                  FRONT_FAILURES[mode])
    assert "\n" not in last
    assert entries(pool) == before
    assert (pool / shared[1] / "app" / "run.sh").read_bytes() == APP
    assert (pool / shared[0] / "data" / "keep").read_text() == "keep\n"


# ---- running the images ----

def host_mounts():
    with open("/proc/self/mountinfo") as f:
        return sorted(p for p in (line.split()[4] for line in f) if not p.startswith("/run/netns/"))


def test_run_stack_and_flattened_with_spawn(transfer_bin, spawn_bin, pool, app_layout):
    ok(xfer(transfer_bin, pool, "import-oci", str(app_layout), "app"))
    ok(xfer(transfer_bin, pool, "import-oci", "--flatten", str(app_layout), "flat"))
    before = host_mounts()
    for img in ("app.mstack", "flat"):
        # Entrypoint+Cmd, Env and WorkingDir come from the untrusted NAME.nspawn next to the image.
        r = subprocess.run([spawn_bin, "-q", "-D", str(pool / img), "-P"], capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        assert "oci-app-ran hi hello world in /app" in r.stdout
    # The stack: whiteouts and opaque directories as overlayfs shows them; writes land in rw/.
    r = subprocess.run([spawn_bin, "-q", "-D", str(pool / "app.mstack"), "-P", "--", "/bin/sh", "-c",
                        "ls /data; ls /data/opq; echo new > /data/keep; rm /data/opq/upper"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["keep", "opq", "upper"]
    rw = pool / "app.mstack" / "rw"
    assert (rw / "data" / "keep").read_text() == "new\n"
    wo = os.lstat(rw / "data" / "opq" / "upper")
    assert stat.S_ISCHR(wo.st_mode) and wo.st_rdev == 0
    lower = pool / os.readlink(pool / "app.mstack" / "layer@1")[3:]
    assert (lower / "data" / "keep").read_text() == "keep\n"  # the shared layer is untouched
    # --ephemeral over a stack: writes go to a tmpfs, not to rw/.
    r = subprocess.run([spawn_bin, "-q", "--ephemeral", "-D", str(pool / "app.mstack"), "-P", "--", "/bin/sh", "-c",
                        "echo eph > /eph && cat /eph"], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and r.stdout == "eph\n", r.stderr
    assert not (rw / "eph").exists()
    # -i takes a stack too (a pulled image is an image to its user); --read-only runs it without rw/.
    r = subprocess.run([spawn_bin, "-q", "--read-only", "-i", str(pool / "app.mstack"), "-P", "--", "/bin/sh", "-c",
                        "cat /data/keep; echo x > /data/ro || echo refused"], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:1] == ["new"] and r.stdout.rstrip().endswith("refused"), r.stdout
    assert not (rw / "data" / "ro").exists()
    # --volatile=yes binds the tree's /usr over a tmpfs; a stack has no such directory: one line.
    r = subprocess.run([spawn_bin, "-q", "--volatile=yes", "-D", str(pool / "app.mstack"), "-P", "--", "/bin/true"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    assert "--volatile=yes cannot run a layer stack" in r.stderr.strip().splitlines()[-1], r.stderr
    assert host_mounts() == before


def test_stack_with_private_users_maps_the_layers(transfer_bin, spawn_bin, pool, app_layout):
    """-U on a stack: the shared layers enter the overlay as idmapped mounts, so the image's files
    are root's inside while the layers keep their on-disk owners; rw/ (the stack's own) moves into
    the range, and back for a run without a user namespace."""
    ok(xfer(transfer_bin, pool, "import-oci", str(app_layout), "app"))
    st = pool / "app.mstack"
    layers = [pool / os.readlink(st / f"layer@{i}")[3:] for i in range(3)]
    owners = {p: (os.lstat(p).st_uid, os.lstat(p).st_gid) for l in layers for p in [l, *l.rglob("*")]}
    r = subprocess.run([spawn_bin, "-q", "-U", "-M", "images-userns", "-D", str(st), "-P", "--", "/bin/sh", "-c",
                        "read a b c < /proc/self/uid_map; echo $b; stat -c '%u:%g' /app/run.sh /data/keep /bin/busybox;"
                        " echo mine > /data/mine; echo changed > /data/keep; stat -c '%u' /data/mine /data/keep"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    out = r.stdout.split()
    shift = int(out[0])
    assert shift >= 0x10000 and shift % 0x10000 == 0, out
    assert out[1:] == ["0:0"] * 3 + ["0", "0"], out
    # Outside: the layers are untouched (owners and contents), the writes are in rw/, in the range.
    assert {p: (os.lstat(p).st_uid, os.lstat(p).st_gid) for l in layers for p in [l, *l.rglob("*")]} == owners
    assert (layers[1] / "data" / "keep").read_text() == "keep\n"
    assert os.stat(st / "rw" / "data" / "mine").st_uid == shift
    assert os.stat(st / "rw" / "data" / "keep").st_uid == shift
    assert os.stat(st / "rw").st_uid == shift
    # Without -U the same stack runs with rw/ shifted back: the files written above are root's.
    r = subprocess.run([spawn_bin, "-q", "-M", "images-nouserns", "-D", str(st), "-P", "--", "/bin/sh", "-c",
                        "stat -c '%u' /data/mine; cat /data/keep"], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "changed"]
    assert os.stat(st / "rw" / "data" / "mine").st_uid == 0
    assert host_mounts_clean(st)


def test_stack_in_use_is_not_chowned_by_a_second_run(transfer_bin, spawn_bin, pool, app_layout):
    """A writable run takes the stack before anything changes rw/: a second writable run with -U
    (another range) is refused with one line and leaves rw/'s owners and the mounts as they were."""
    ok(xfer(transfer_bin, pool, "import-oci", str(app_layout), "app"))
    st = pool / "app.mstack"
    before = host_mounts()
    first = subprocess.Popen([spawn_bin, "-q", "-M", "images-inuse1", "-D", str(st), "-P", "--", "/bin/sh", "-c",
                              "touch /started; read x"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            if (st / "rw" / "started").exists() or first.poll() is not None:
                break
            time.sleep(0.05)
        assert (st / "rw" / "started").exists(), first.stderr.read() if first.poll() is not None else ""
        r = subprocess.run([spawn_bin, "-q", "-U", "-M", "images-inuse2", "-D", str(st), "-P", "--", "/bin/true"],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert r.returncode != 0
        assert "is in use by another running container" in r.stderr.strip().splitlines()[-1], r.stderr
        assert os.stat(st / "rw").st_uid == 0 and os.stat(st / "rw" / "started").st_uid == 0
    finally:
        first.communicate(b"\n", timeout=60)
    assert first.returncode == 0
    assert host_mounts() == before


def host_mounts_clean(stack):
    with open("/proc/self/mountinfo") as f:
        return not [l for l in f if str(stack) in l or ".oci-sha256-" in l]


def test_pulled_image_runs_through_machrun(transfer_bin, pool, pushed, tmp_path):
    """The OCI runtime takes a stack as root.path: a bundle made for a pulled image runs it, its
    writes go to the stack's rw/, and nothing stays mounted."""
    machrun_bin = BUILD / "src" / "runtime" / "machrun"
    if not machrun_bin.exists():
        pytest.skip(f"{machrun_bin} not built")
    ok(xfer(transfer_bin, pool, "pull-oci", f"{pushed}/test/app:v1", "app"))
    state = tmp_path / "machrun-state"
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    mr = [str(machrun_bin), "--root", str(state)]
    subprocess.run([*mr, "spec", "--bundle", str(bundle)], check=True, capture_output=True, timeout=30)
    config = json.loads((bundle / "config.json").read_text())
    config["root"] = {"path": str(pool / "app.mstack"), "readonly": False}
    config["process"]["args"] = ["/bin/sh", "-c", "ls /data; ls /data/opq; echo via-machrun > /data/run; /app/run.sh x"]
    config["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(config))
    r = subprocess.run([*mr, "run", "--bundle", str(bundle), "images-machrun"], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[:3] == ["keep", "opq", "upper"], r.stdout
    assert "oci-app-ran" in r.stdout
    assert (pool / "app.mstack" / "rw" / "data" / "run").read_text() == "via-machrun\n"
    assert host_mounts_clean(pool / "app.mstack")
    assert os.listdir(state) == []


def test_registries_d_mirror_and_short_names(transfer_bin, pool, pushed, tmp_path):
    """registries.d: a registry name mapped to a mirror endpoint over HTTP, the default registry
    for references without one, and its short-name prefix."""
    d = tmp_path / "registries.d"
    d.mkdir()
    (d / "10-local.conf").write_text(f"""[Defaults]
Registry=registry.example
[Registry]
Name=registry.example
Endpoint={pushed}
ShortNamePrefix=test/
Insecure=yes
""")
    r = subprocess.run([transfer_bin, "pull-oci", f"--pool={pool}", f"--registries-dir={d}", "--flatten", "app:v1",
                        "short"], capture_output=True, timeout=120)
    ok(r)
    assert f"http://{pushed}/v2/test/app/" in r.stderr.decode()
    check_app_tree(pool / "short")
    (d / "20-typo.conf").write_text("[Registry]\nName=x.example\nInsecur=yes\n")
    r = subprocess.run([transfer_bin, "pull-oci", f"--pool={pool}", f"--registries-dir={d}", "app:v1", "other"],
                       capture_output=True, timeout=120)
    failed(r, "20-typo.conf:3", "unknown key Insecur")


def test_pull_progress_protocol(transfer_bin, pool, pushed):
    """Progress across all layers on --progress-fd: percentages never go back, end at 100, DONE."""
    r, w = os.pipe()
    p = subprocess.Popen([transfer_bin, "pull-oci", f"--pool={pool}", "--registries-dir=/nonexistent",
                          "--progress-fd=%d" % w, f"{pushed}/test/app:v1", "prog"], pass_fds=(w,),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        lines = f.read().decode().splitlines()
    assert p.wait(120) == 0, p.stderr.read()
    pct = [int(l.split()[1]) for l in lines if l.startswith("PROGRESS ")]
    assert pct and pct == sorted(pct) and pct[-1] == 100, lines
    assert lines[-1] == "DONE"
    assert any(l.startswith("LOG Image ") and "3 layers" in l for l in lines), lines


def test_layer_cannot_bring_its_own_overlay_markers(transfer_bin, pool, tmp_path):
    """A layer's own user.overlay.* xattrs (an opaque flag, a redirect) are dropped: only the OCI
    whiteouts we convert may hide lower layers."""
    lower = tar_of([ti("d", tarfile.DIRTYPE), ti("d/file", data=b"lower\n")])
    d, _ = ti("d", tarfile.DIRTYPE)
    d.pax_headers = {"SCHILY.xattr.user.overlay.opaque": "y", "SCHILY.xattr.user.overlay.redirect": "/etc",
                     "SCHILY.xattr.user.keep": "1"}
    upper = tar_of([(d, None), ti("d/new", data=b"new\n")])
    lay = build_layout(tmp_path / "marks", [lower, upper], {})
    ok(xfer(transfer_bin, pool, "import-oci", str(lay), "marks"))
    top = pool / os.readlink(pool / "marks.mstack" / "layer@1")[3:]
    names = os.listxattr(top / "d")
    assert "user.keep" in names and not [n for n in names if n.startswith("user.overlay.")], names
    ok(xfer(transfer_bin, pool, "import-oci", "--flatten", str(lay), "marksflat"))
    assert (pool / "marksflat" / "d" / "file").read_text() == "lower\n"
    assert (pool / "marksflat" / "d" / "new").read_text() == "new\n"


# ---- an image that boots: the Debian fixture as a one-layer OCI image ----

def debian_image_layout(tree: pathlib.Path, layout: pathlib.Path, cmd):
    """An OCI layout whose single (uncompressed) layer is `tree`, made with tar as an image build
    would, and whose command is `cmd` (an init: the image is made to boot)."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    tmp = layout / "layer.tar"
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--exclude=./.complete", "-C",
                    str(tree), "-cf", str(tmp), "."], check=True)
    h = hashlib.sha256()
    with open(tmp, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + h.hexdigest(),
             "size": tmp.stat().st_size}
    tmp.rename(blobs / h.hexdigest())
    cfg = write_blob(layout, json.dumps({"architecture": GOARCH, "os": "linux",
                                         "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
                                         "config": {"Cmd": cmd, "StopSignal": "SIGRTMIN+3"}}).encode())
    m = write_blob(layout, json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg},
                                       "layers": [layer]}).encode())
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **m,
         "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
    return layout


@pytest.fixture(scope="module")
def debian_layout(debian_tree, tmp_path_factory):
    return debian_image_layout(debian_tree, tmp_path_factory.mktemp("oci-debian") / "layout", ["/sbin/init"])


def in_machines_dir(pool, argv):
    """argv run with `pool` as /var/lib/machines, in a private mount namespace: how spawn -M NAME
    finds pool images, without touching the host's machine directory."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /var/lib/machines && exec "$@"', str(pool), *argv]


def test_spawn_m_finds_pool_images_as_nspawn_does(transfer_bin, spawn_bin, pool, app_layout):
    """spawn -M NAME without -D/-i runs /var/lib/machines/NAME, NAME.raw or NAME.mstack (a pulled
    image), with NAME.nspawn next to it; an unknown name is one line."""
    ok(xfer(transfer_bin, pool, "import-oci", str(app_layout), "app"))
    ok(xfer(transfer_bin, pool, "import-oci", "--flatten", str(app_layout), "flat"))
    before = host_mounts()
    for name in ("app", "flat"):
        r = subprocess.run(in_machines_dir(pool, [spawn_bin, "-q", "-M", name, "-P"]), capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        assert "oci-app-ran hi hello world in /app" in r.stdout
    r = subprocess.run(in_machines_dir(pool, [spawn_bin, "-q", "-M", "app", "-P", "--", "/bin/sh", "-c",
                                              "echo via-name > /data/byname"]),
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert (pool / "app.mstack" / "rw" / "data" / "byname").read_text() == "via-name\n"
    r = subprocess.run(in_machines_dir(pool, [spawn_bin, "-q", "-M", "nosuch", "-P", "--", "/bin/true"]),
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert "no image for machine 'nosuch'" in last and "-D DIR" in last, r.stderr
    assert host_mounts() == before


def boot_console(argv):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from test_boot import Console  # noqa: E402
    return Console(argv)


def test_debian_image_boots_flattened_and_as_stack(transfer_bin, spawn_bin, pool, debian_layout):
    """An OCI image whose command is an init (the Debian fixture, Cmd ["/sbin/init"]) gets
    Boot=yes: flattened, or as a stack (overlay with rw/ as upper), it boots to multi-user with
    spawn -M NAME, and with -b; SIGTERM powers it off and nothing stays mounted."""
    ok(xfer(transfer_bin, pool, "import-oci", "--flatten", str(debian_layout), "deb"))
    ok(xfer(transfer_bin, pool, "import-oci", str(debian_layout), "debs"))
    assert "Boot=yes" in (pool / "deb.nspawn").read_text()
    assert "Parameters=" not in (pool / "deb.nspawn").read_text()
    before = host_mounts()
    consoles = []
    try:
        for argv in ([spawn_bin, "-M", "deb"], [spawn_bin, "-b", "-M", "debs"]):
            c = boot_console(in_machines_dir(pool, argv))
            consoles.append(c)
            assert c.wait_for(r"Reached target [^\n]*multi-user\.target", 90), c.text()
            c.p.send_signal(signal.SIGTERM)
            assert c.wait_exit(60) == 0, c.text()
            assert "shut down" in c.text()
    finally:
        for c in consoles:
            if c.p.poll() is None:
                c.p.kill()
                c.p.wait()
    # The stack's boot wrote into its own rw/ (systemd's machine-id, journal, ...), never into the layer.
    rw = pool / "debs.mstack" / "rw"
    assert (rw / "etc").is_dir() or (rw / "var").is_dir(), os.listdir(rw)
    layer = pool / os.readlink(pool / "debs.mstack" / "layer@0")[3:]
    assert (layer / "etc" / "machine-id").read_text() == ""
    assert host_mounts() == before


# ---- export-tar of a stack ----

def tar_entries(path):
    """name -> (type, mode, uid, gid, linkname, data) of a tar's members (no times: a merged
    directory's time is its top-most layer's)."""
    out = {}
    with tarfile.open(path) as t:
        for m in t.getmembers():
            name = m.name[2:] if m.name.startswith("./") else m.name
            data = t.extractfile(m).read() if m.isreg() else None
            out[name or "."] = (m.type, m.mode, m.uid, m.gid, m.linkname, data, m.devmajor, m.devminor)
    return out


def test_export_tar_of_a_stack_is_its_merged_view(transfer_bin, spawn_bin, pool, busybox_tree_template, tmp_path):
    """export-tar of NAME.mstack writes the merged view (a read-only overlay in the transfer,
    made before its sandbox): the same tar as the flattened image, no whiteouts, and what runs
    wrote to rw/; imported back as a plain tree it is the container's root."""
    extra = tar_of([ti("fresh", tarfile.DIRTYPE), ti("fresh/.wh.ghost"), ti("fresh/file", data=b"fresh\n")])
    lay = build_layout(tmp_path / "lay", [*app_layers(busybox_tree_template), extra], CONFIG)
    ok(xfer(transfer_bin, pool, "import-oci", str(lay), "app"))
    ok(xfer(transfer_bin, pool, "import-oci", "--flatten", str(lay), "flat"))
    before = host_mounts()
    ok(xfer(transfer_bin, pool, "export-tar", "app", str(tmp_path / "app.tar")))
    ok(xfer(transfer_bin, pool, "export-tar", "flat", str(tmp_path / "flat.tar")))
    stack, flat = tar_entries(tmp_path / "app.tar"), tar_entries(tmp_path / "flat.tar")
    assert stack == flat
    assert "data/keep" in stack and "data/old" not in stack and "data/opq/lower" not in stack
    assert "fresh/file" in stack and "fresh/ghost" not in stack
    assert not [n for n in stack if ".wh." in n]
    assert not [n for n, e in stack.items() if e[0] == tarfile.CHRTYPE]

    # What a run changed (rw/: a deletion is a whiteout there, a replaced directory opaque) is in
    # the next export; imported back as a plain tree, the tree is what the container saw.
    r = subprocess.run([spawn_bin, "-q", "-D", str(pool / "app.mstack"), "-P", "--", "/bin/sh", "-c",
                        "rm /data/keep; rm -r /data/opq; mkdir /data/opq; echo only > /data/opq/only;"
                        " mkdir /newdir; echo new > /newdir/f; find / -xdev | sort > /seen"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    ok(xfer(transfer_bin, pool, "export-tar", "app", str(tmp_path / "app2.tar")))
    ok(xfer(transfer_bin, pool, "import-tar", str(tmp_path / "app2.tar"), "back"))
    back = pool / "back"
    assert not (back / "data" / "keep").exists()
    assert os.listdir(back / "data" / "opq") == ["only"]
    assert (back / "newdir" / "f").read_text() == "new\n"
    assert (back / "fresh" / "file").read_text() == "fresh\n"
    # The container saw what the tree holds (less the API file systems it mounts, empty here).
    api = ("proc/", "sys/", "dev/", "run/", "tmp/")
    seen = {l[1:] for l in (back / "seen").read_text().splitlines() if l != "/" and not l[1:].startswith(api)}
    ours = {str(p.relative_to(back)) for p in back.rglob("*")} - {"seen"}
    assert seen - {"seen"} == {o for o in ours if not o.startswith(api)}, (seen ^ ours)
    assert not [p for p in back.rglob("*") if p.is_char_device()]
    assert host_mounts() == before

    # A stack without rw/ (read-only, as systemd makes them) shows its top layer's root: the pool's
    # note of that layer's usage (user.machkit.usage) is not part of the image.
    ok(xfer(transfer_bin, pool, "import-oci", str(lay), "norw"))
    os.rmdir(pool / "norw.mstack" / "rw")
    ok(xfer(transfer_bin, pool, "export-tar", "norw", str(tmp_path / "norw.tar")))
    assert tar_entries(tmp_path / "norw.tar") == flat
    with tarfile.open(tmp_path / "norw.tar") as t:
        assert not [k for m in t.getmembers() for k in m.pax_headers if "machkit" in k]

    # Images with nothing to export as a tree are refused in one line.
    (pool / "disk.raw").write_bytes(b"\0" * 4096)
    failed(xfer(transfer_bin, pool, "export-tar", "disk", str(tmp_path / "disk.tar")), "only directory images")


def test_failed_transfer_keeps_a_new_layer_another_transfer_may_reuse(transfer_bin, pool, tmp_path):
    """A failed transfer removes the layers it added only when no other transfer holds the layer
    lock: one running alongside may have found such a layer and be about to link it. Here the lock
    is held shared (as a running transfer holds it) while an import fails after adding a layer:
    the layer stays, and the next import reuses it. Without a transfer alongside, the same failure
    leaves nothing."""
    import fcntl
    good = tar_of([ti("shared-new", data=b"new layer\n")])
    bad = build_layout(tmp_path / "bad", [good, b"this is not a tar archive " * 64], {}, compress="none")
    fine = build_layout(tmp_path / "fine", [good, tar_of([ti("top", data=b"top\n")])], {}, compress="none")
    layer = ".oci-sha256-" + hashlib.sha256(good).hexdigest()  # uncompressed: the blob is the tar
    fd = os.open(pool, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # another transfer's stake in the pool's layers
        failed(xfer(transfer_bin, pool, "import-oci", "--parallel=1", str(bad), "bad"))
        assert oci_layers(pool) == [layer]
        ino = os.stat(pool / layer).st_ino
        ok(xfer(transfer_bin, pool, "import-oci", str(fine), "fine"))
        assert os.readlink(pool / "fine.mstack" / "layer@0") == "../" + layer
        assert os.stat(pool / layer).st_ino == ino  # reused, not unpacked again
    finally:
        os.close(fd)
    alone = tmp_path / "alone"
    alone.mkdir(mode=0o700)
    failed(xfer(transfer_bin, alone, "import-oci", "--parallel=1", str(bad), "bad"))
    assert entries(alone) == []
