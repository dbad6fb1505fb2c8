#!/usr/bin/env python3
"""OCI pull benchmark (issue 18): a 3-layer, ~100 MB image pulled from a local docker-registry
(Debian's distribution 2.8 on 127.0.0.1), end to end into a fresh store each time:

  ours-stack    machd-transfer pull-oci (layers downloaded, verified and unpacked in one pass)
  ours-flatten  the same with --flatten (plus the merge into one plain tree)
  skopeo+umoci  skopeo copy docker://… oci:DIR, then umoci unpack (a flattened rootfs)
  podman        podman pull into a private --root/--runroot

Prints the median of REPS runs and ratios (peer time / ours: > 1 means we are faster).

usage: bench/oci_pull.py BUILD_DIR [REPS]   (root)
"""
import gzip
import hashlib
import io
import json
import os
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def layer_tar(seed, mb):
    """~mb MB of files: half random (incompressible), half text-like (compresses ~5x), as real
    images mix binaries and text."""
    buf = io.BytesIO()
    rnd = hashlib.sha256(seed.encode()).digest()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        d = tarfile.TarInfo(f"data{seed}")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        t.addfile(d)
        for i in range(mb * 4):
            if i % 2:
                data = os.urandom(256 * 1024)
            else:
                data = (b"line %d of a text file in layer " % i + rnd.hex().encode() + b"\n") * 3000
                data = data[:256 * 1024]
            ti = tarfile.TarInfo(f"data{seed}/f{i}")
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1700000000
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def build_layout(d: pathlib.Path):
    d.mkdir()
    (d / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    blobs = d / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(b):
        h = hashlib.sha256(b).hexdigest()
        (blobs / h).write_bytes(b)
        return {"digest": "sha256:" + h, "size": len(b)}
    layers, diffs = [], []
    for i, mb in enumerate((50, 30, 20)):
        raw = layer_tar(str(i), mb)
        diffs.append("sha256:" + hashlib.sha256(raw).hexdigest())
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **blob(gzip.compress(raw, 6, mtime=0))})
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    cfg = blob(json.dumps({"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                           "rootfs": {"type": "layers", "diff_ids": diffs}}).encode())
    man = blob(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg},
                           "layers": layers}).encode())
    (d / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", **man,
         "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}))
    return sum(l["size"] for l in layers)


def unmount_under(path):
    with open("/proc/self/mountinfo") as f:
        mps = [l.split()[4] for l in f]
    for mp in sorted((m for m in mps if m.startswith(str(path))), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True)


def timed(argv_list, cleanup):
    t0 = time.monotonic()
    for argv in argv_list:
        r = subprocess.run(argv, capture_output=True)
        if r.returncode:
            raise SystemExit(f"{argv[0]} failed: {r.stderr.decode(errors='replace')[-2000:]}")
    dt = time.monotonic() - t0
    cleanup()
    return dt


def main():
    if len(sys.argv) < 2 or os.geteuid() != 0:
        raise SystemExit(__doc__)
    build = pathlib.Path(sys.argv[1]).resolve()
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    transfer = build / "src" / "transfer" / "machd-transfer"
    work = pathlib.Path(tempfile.mkdtemp(prefix="oci-bench-"))
    port = free_port()
    (work / "reg.yml").write_text(f"version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {work}/reg}}\n"
                                  f"http: {{addr: 127.0.0.1:{port}}}\n")
    reg = subprocess.Popen(["docker-registry", "serve", str(work / "reg.yml")], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.02)
        size = build_layout(work / "layout")
        subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{work}/layout:v1",
                        f"docker://127.0.0.1:{port}/bench/img:v1"], check=True)
        ref = f"127.0.0.1:{port}/bench/img:v1"
        out = work / "out"

        def fresh():
            unmount_under(out)
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(mode=0o700)

        runs = {
            "ours-stack": lambda: [[str(transfer), "pull-oci", f"--pool={out}", "--registries-dir=/nonexistent", ref, "img"]],
            "ours-flatten": lambda: [[str(transfer), "pull-oci", f"--pool={out}", "--registries-dir=/nonexistent",
                                      "--flatten", ref, "img"]],
            "skopeo+umoci": lambda: [["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{out}/oci:v1"],
                                     ["umoci", "unpack", "--image", f"{out}/oci:v1", f"{out}/bundle"]],
            "podman": lambda: [["podman", "--root", f"{out}/root", "--runroot", f"{out}/run", "pull", "-q",
                                "--tls-verify=false", ref]],
        }
        times = {k: [] for k in runs}
        for _ in range(reps):
            for k, argv in runs.items():  # alternating, so drift hits all alike
                fresh()
                times[k].append(timed(argv(), fresh))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"3-layer image, {size / 1e6:.0f} MB compressed, median of {reps}:")
        for k, v in med.items():
            print(f"  {k:13s} {v:7.2f} s   ({', '.join(f'{x:.2f}' for x in times[k])})")
        print("ratios (peer / ours; > 1: ours faster):")
        print(f"  skopeo+umoci / ours-flatten  {med['skopeo+umoci'] / med['ours-flatten']:.2f}x")
        print(f"  skopeo+umoci / ours-stack    {med['skopeo+umoci'] / med['ours-stack']:.2f}x")
        print(f"  podman       / ours-stack    {med['podman'] / med['ours-stack']:.2f}x")
    finally:
        reg.terminate()
        reg.wait()
        unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
