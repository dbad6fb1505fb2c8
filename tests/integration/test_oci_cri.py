"""Kubernetes' route to machrun: CRI v1 through containerd 1.6's CRI plugin, as kubelet drives it.

A private containerd (Debian 12's; own root, state, socket, CNI dirs in a tmp dir) runs with the
CRI runtime entry docs/oci.md shows, read from that file, so the documented snippet is the tested
one. A pod asks for it the way kubelet does for a RuntimeClass with `handler: machrun`:
RunPodSandboxRequest.runtime_handler = "machrun". The test speaks gRPC to containerd's socket with
python3-grpcio, through tests/integration/cri/cri_runtime_v1.proto (the part of k8s.io/cri-api's
runtime.v1 it uses, compiled by grpc_tools.protoc into a tmp dir).

The pod uses the node's network (NamespaceOption network=NODE), so no CNI is needed; the images
(sandbox and container: one busybox-based OCI archive whose entrypoint sleeps) are made here and
imported with `ctr -n k8s.io image import`, so nothing comes from the internet. Root only; real
namespaces, mounts and cgroups."""
import gzip
import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tarfile

import pytest
from mkutil import containerd_config, end_process, wait_for
from test_oci_engines import groups_named, hierarchies, machrun_bin, mounts_mentioning

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

REPO = pathlib.Path(__file__).resolve().parents[2]
PROTO = pathlib.Path(__file__).resolve().parent / "cri" / "cri_runtime_v1.proto"
DOCS = REPO / "docs" / "oci.md"
IMAGE = "docker.io/machkit/cri-busybox:1"
NS = "k8s.io"
SHIM_ROOT = pathlib.Path("/run/containerd/runc") / NS  # the runc shim's --root for machrun
DOCUMENTED_BINARY = "/usr/local/bin/machrun"


def documented_runtime_entry():
    """The containerd CRI runtime entry for machrun, exactly as docs/oci.md shows it."""
    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(), re.S)
    entries = [b for b in blocks if 'containerd.runtimes.machrun]' in b]
    assert len(entries) == 1, "docs/oci.md must show one ```toml block with the machrun CRI runtime entry"
    assert entries[0].count(DOCUMENTED_BINARY) == 1, entries[0]
    return entries[0]


# ---- an OCI image archive of the busybox tree, made offline -------------------------------------


def _blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def make_oci_archive(tree, out, name, entrypoint):
    layout = out.parent / "oci-layout-dir"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for p in sorted(tree.rglob("*")):
            t.add(p, arcname=str(p.relative_to(tree)), recursive=False)
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    layer = _blob(layout, gzip.compress(raw.getvalue(), compresslevel=1))
    layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    config = _blob(layout, json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }).encode())
    config["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = _blob(layout, json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": [layer],
    }).encode())
    manifest["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    manifest["annotations"] = {"io.containerd.image.name": name,
                               "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    with tarfile.open(out, "w") as t:
        for p in sorted(layout.rglob("*")):
            t.add(p, arcname=str(p.relative_to(layout)), recursive=False)
    shutil.rmtree(layout)


# ---- the private containerd with the CRI plugin ------------------------------------------------


@pytest.fixture(scope="module")
def cri(busybox_tree_template, tmp_path_factory):
    if not shutil.which("containerd") or not shutil.which("ctr"):
        pytest.skip("containerd is not installed")
    try:
        import grpc  # noqa: PLC0415
        import grpc_tools.protoc  # noqa: PLC0415
    except ImportError:
        pytest.skip("python3-grpcio and python3-grpc-tools are not installed")
    machrun = machrun_bin()
    base = tmp_path_factory.mktemp("crih")
    gen = base / "gen"
    gen.mkdir()
    rc = grpc_tools.protoc.main(["protoc", f"-I{PROTO.parent}", f"--python_out={gen}", f"--grpc_python_out={gen}",
                                 str(PROTO)])
    assert rc == 0, "grpc_tools.protoc failed on tests/integration/cri/cri_runtime_v1.proto"
    sys.path.insert(0, str(gen))
    import cri_runtime_v1_pb2 as api_pb2  # noqa: PLC0415
    import cri_runtime_v1_pb2_grpc as api_pb2_grpc  # noqa: PLC0415

    sock = base / "c.sock"
    for d in ("cni-bin", "cni-conf", "pod-logs"):
        (base / d).mkdir()
    entry = documented_runtime_entry().replace(DOCUMENTED_BINARY, machrun)
    config = base / "config.toml"
    config.write_text(containerd_config(base, sock) + f"""[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # No CAP_SYS_RESOURCE on this VM: the sandbox's oom_score_adj -998 could not be set (by runc either);
  # containerd then keeps it at or above its own, as for rootless.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{base}/cni-bin"
    conf_dir = "{base}/cni-conf"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
{entry}""")
    log = open(base / "containerd.log", "w")
    daemon = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=log,
                              stdin=subprocess.DEVNULL)
    channel = grpc.insecure_channel(f"unix://{sock}")

    class C:
        dir = base
        binary = machrun
        pb = api_pb2
        rt = api_pb2_grpc.RuntimeServiceStub(channel)
        img = api_pb2_grpc.ImageServiceStub(channel)
        pods = []
        cgroup_parent = f"/machkit-cri-{os.getpid()}"

        def ctr(self, *args, check=True):
            r = subprocess.run(["ctr", "-a", str(sock), "-n", NS, *args], capture_output=True, text=True,
                               timeout=120, stdin=subprocess.DEVNULL)
            if check and r.returncode != 0:
                raise AssertionError(f"ctr {' '.join(args)} failed ({r.returncode}): {r.stderr}")
            return r

        def log(self):
            return (base / "containerd.log").read_text()[-4000:]

    c = C()
    try:
        def up():
            assert "failed to load plugin io.containerd.grpc.v1.cri" not in c.log(), c.log()
            assert daemon.poll() is None, c.log()
            try:
                c.rt.Version(api_pb2.VersionRequest(version="v1"), timeout=2)
                return True
            except grpc.RpcError:
                return False

        assert wait_for(up, timeout=30), c.log()
        archive = base / "bb-oci.tar"
        make_oci_archive(busybox_tree_template, archive, IMAGE, ["/bin/sleep", "2147483647"])
        c.ctr("image", "import", str(archive))
        archive.unlink()

        def image_known():
            r = c.img.ImageStatus(api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=IMAGE)), timeout=5)
            return r.HasField("image")

        assert wait_for(image_known, timeout=30), c.log()
        yield c
    finally:
        for pod in c.pods:  # what a failed test left: kubelet's order, stop then remove
            for call, req in ((c.rt.StopPodSandbox, api_pb2.StopPodSandboxRequest),
                              (c.rt.RemovePodSandbox, api_pb2.RemovePodSandboxRequest)):
                try:
                    call(req(pod_sandbox_id=pod), timeout=60)
                except grpc.RpcError:
                    pass
        channel.close()
        end_process(daemon)
        log.close()
        # Shims of pods a failed test left behind (they outlive containerd): ours name our socket.
        for p in pathlib.Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    cmd = (p / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and str(sock).encode() in cmd:
                    os.kill(int(p.name), signal.SIGKILL)
        if SHIM_ROOT.exists():  # containers whose shim is gone: machrun cleans up what it made
            for cid in os.listdir(SHIM_ROOT):
                subprocess.run([machrun, "--root", str(SHIM_ROOT), "delete", "--force", cid], capture_output=True,
                               timeout=30)
        for m in reversed(mounts_mentioning(str(base))):
            subprocess.run(["umount", "-l", m.split()[4]], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(SHIM_ROOT, ignore_errors=True)
        for h in hierarchies():
            try:
                os.rmdir(h / c.cgroup_parent.lstrip("/"))
            except OSError:
                pass
        sys.path.remove(str(gen))
        for mod in ("cri_runtime_v1_pb2", "cri_runtime_v1_pb2_grpc"):
            sys.modules.pop(mod, None)


def pod_config(c, name, **ns):
    pb = c.pb
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="default", attempt=0),
        log_directory=str(c.dir / "pod-logs" / name),
        labels={"app": name},
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=c.cgroup_parent,
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.NODE, pid=ns.get("pid", pb.CONTAINER),
                                                     ipc=ns.get("ipc", pb.POD)))))


def machrun_state(c, cid):
    r = subprocess.run([c.binary, "--root", str(SHIM_ROOT), "state", cid], capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else None


def run_pod(c, name, handler="machrun", **ns):
    pb = c.pb
    r = c.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config(c, name, **ns), runtime_handler=handler),
                           timeout=60)
    c.pods.append(r.pod_sandbox_id)
    return r.pod_sandbox_id


def create_container(c, pod, name, command, memory=0, pid=None):
    pb = c.pb
    pid = pb.CONTAINER if pid is None else pid
    cfg = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=IMAGE), command=command,
        log_path=f"{name}.log",
        linux=pb.LinuxContainerConfig(
            resources=pb.LinuxContainerResources(memory_limit_in_bytes=memory),
            security_context=pb.LinuxContainerSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.NODE, pid=pid, ipc=pb.POD))))
    r = c.rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=cfg,
                                                       sandbox_config=pod_config(c, name)), timeout=60)
    return r.container_id


def container_status(c, cid):
    return c.rt.ContainerStatus(c.pb.ContainerStatusRequest(container_id=cid), timeout=30).status


def exec_sync(c, cid, *cmd):
    return c.rt.ExecSync(c.pb.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=30), timeout=60)


def test_version_names_containerd_and_cri_v1(cri):
    v = cri.rt.Version(cri.pb.VersionRequest(version="v1"), timeout=10)
    assert v.runtime_name == "containerd"
    assert v.runtime_api_version == "v1"
    assert v.runtime_version.startswith("1.6."), v.runtime_version


def test_pod_with_the_machrun_handler_runs_its_containers_under_machrun(cri):
    pb = cri.pb
    pod = run_pod(cri, "pod-a")
    # kubelet's PodSandboxStatus: ready, under the handler the RuntimeClass named, the pause pid.
    st = cri.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True), timeout=30)
    assert st.status.state == pb.SANDBOX_READY
    assert st.status.runtime_handler == "machrun"
    pause_pid = json.loads(st.info["info"])["pid"]
    # The pause container is machrun's: its state directory under the shim's --root is machrun's
    # format (runc's has no pidStart), and machrun reports it running with the pause's pid.
    saved = json.loads((SHIM_ROOT / pod / "state.json").read_text())
    assert "pidStart" in saved and "v1Cgroups" in saved, saved
    state = machrun_state(cri, pod)
    assert state["status"] == "running" and state["pid"] == pause_pid, state
    assert pathlib.Path(f"/proc/{pause_pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"/bin/sleep", b"2147483647"]
    # Its group sits under the pod's cgroup parent (kubelet's /kubepods/... in real life).
    assert any(g.endswith(f"{cri.cgroup_parent}/{pod}") for g in groups_named(pod)), groups_named(pod)

    # A container in the pod: runs under machrun too, writes a file ExecSync reads back, and
    # sees its memory limit from inside.
    cid = create_container(cri, pod, "writer", ["sh", "-c", "echo written-by-$HOSTNAME > /tmp/out; sleep 1000"],
                           memory=48 * 1024 * 1024)
    assert container_status(cri, cid).state == pb.CONTAINER_CREATED
    assert machrun_state(cri, cid) is None  # containerd 1.6 makes the task (machrun create) at start
    cri.rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    assert container_status(cri, cid).state == pb.CONTAINER_RUNNING
    assert machrun_state(cri, cid)["status"] == "running"
    assert wait_for(lambda: exec_sync(cri, cid, "cat", "/tmp/out").exit_code == 0, timeout=30)
    out = exec_sync(cri, cid, "cat", "/tmp/out")
    assert out.stdout.decode() == f"written-by-{os.uname().nodename}\n", out
    mem = exec_sync(cri, cid, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert mem.exit_code == 0 and mem.stdout.decode().strip() == str(48 * 1024 * 1024), mem
    # ExecSync's own exit code and stderr come back too.
    ex = exec_sync(cri, cid, "sh", "-c", "echo oops >&2; exit 6")
    assert (ex.exit_code, ex.stderr) == (6, b"oops\n")
    # The pod's containers share its IPC namespace (joined by path) and, with hostNetwork, the
    # node's UTS and network namespaces; each has its own PID and mount namespaces.
    cpid = machrun_state(cri, cid)["pid"]
    ns = lambda pid, t: os.stat(f"/proc/{pid}/ns/{t}").st_ino  # noqa: E731
    assert ns(cpid, "ipc") == ns(pause_pid, "ipc") != ns(os.getpid(), "ipc")
    assert ns(cpid, "uts") == ns(pause_pid, "uts") == ns(os.getpid(), "uts")
    assert ns(cpid, "net") == ns(os.getpid(), "net")
    assert ns(cpid, "pid") != ns(pause_pid, "pid") and ns(cpid, "mnt") != ns(pause_pid, "mnt")

    # A container that exits 3: ContainerStatus reports it.
    three = create_container(cri, pod, "three", ["sh", "-c", "exit 3"])
    cri.rt.StartContainer(pb.StartContainerRequest(container_id=three), timeout=60)
    assert wait_for(lambda: container_status(cri, three).state == pb.CONTAINER_EXITED, timeout=30)
    st3 = container_status(cri, three)
    assert st3.exit_code == 3 and st3.finished_at > 0, st3

    # kubelet's teardown: StopPodSandbox (kills what runs), RemovePodSandbox.
    cri.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    assert container_status(cri, cid).state == pb.CONTAINER_EXITED
    cri.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    cri.pods.remove(pod)
    for gone in (pod, cid, three):
        assert not (SHIM_ROOT / gone).exists(), gone
        assert groups_named(gone) == [], gone
        assert mounts_mentioning(gone) == [], gone
    assert not os.path.exists(f"/proc/{pause_pid}") or pathlib.Path(f"/proc/{pause_pid}/cmdline").read_bytes() != \
        b"/bin/sleep\x002147483647\x00"


def test_pod_with_an_unknown_handler_is_refused_by_containerd(cri):
    import grpc  # noqa: PLC0415

    def made():
        state = sorted(os.listdir(SHIM_ROOT)) if SHIM_ROOT.exists() else []
        groups = [str(g) for h in hierarchies() for g in (h / cri.cgroup_parent.lstrip("/")).glob("*/")]
        return state, groups

    before = made()
    with pytest.raises(grpc.RpcError) as e:
        run_pod(cri, "pod-x", handler="no-such-handler")
    assert e.value.code() == grpc.StatusCode.UNKNOWN
    assert 'no runtime for "no-such-handler" is configured' in e.value.details(), e.value.details()
    assert made() == before  # no state, no group: refused before any runtime ran


def remove_pod(c, pod):
    c.rt.StopPodSandbox(c.pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    c.rt.RemovePodSandbox(c.pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    c.pods.remove(pod)
    assert not (SHIM_ROOT / pod).exists() and groups_named(pod) == [] and mounts_mentioning(pod) == []


def test_share_process_namespace_and_host_pid_pods(cri):
    pb = cri.pb
    # shareProcessNamespace: true -- kubelet asks for pid POD; the container joins the sandbox's PID
    # namespace by path and sees the pause as PID 1.
    pod = run_pod(cri, "pod-shared", pid=pb.POD)
    cid = create_container(cri, pod, "peer", ["sleep", "1000"], pid=pb.POD)
    cri.rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    out = exec_sync(cri, cid, "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; cat /proc/self/stat")
    first, stat = out.stdout.decode().splitlines()
    assert first.strip() == "/bin/sleep 2147483647", out
    assert int(stat.split()[0]) > 1  # the exec is not alone in there
    remove_pod(cri, pod)
    # hostPID: true -- pid NODE: no PID namespace of the pod's, the node's processes are visible.
    pod = run_pod(cri, "pod-hostpid", pid=pb.NODE)
    cid = create_container(cri, pod, "host", ["sleep", "1000"], pid=pb.NODE)
    cri.rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    out = exec_sync(cri, cid, "cat", f"/proc/{os.getpid()}/status")
    assert out.exit_code == 0 and "python" in out.stdout.decode().splitlines()[0], out
    cpid = machrun_state(cri, cid)["pid"]
    assert os.stat(f"/proc/{cpid}/ns/pid").st_ino == os.stat("/proc/self/ns/pid").st_ino
    remove_pod(cri, pod)
