"""config.json through spawn --oci-bundle= (issue 13): bundles built in the test from the busybox
tree; what spawn applies is read back from inside the container, and every field the launcher does
not apply yet is refused with one line naming it, before anything is created. Root only."""
import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

NAMESPACES = [{"type": t} for t in ("pid", "mount", "ipc", "uts", "network")]


def base_config(script):
    return {
        "ociVersion": "1.2.0",
        "root": {"path": "rootfs"},
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "cwd": "/",
                    "args": ["/bin/sh", "-c", script], "env": ["PATH=/bin:/sbin"]},
        "hostname": "oci-cfg",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [dict(n) for n in NAMESPACES]},
    }


@pytest.fixture
def bundle(tree, tmp_path):
    b = tmp_path / "bundle"
    b.mkdir()
    tree.rename(b / "rootfs")
    return b


def run(spawn_bin, bundle, cfg, timeout=60):
    (bundle / "config.json").write_text(json.dumps(cfg))
    return subprocess.run([spawn_bin, "-q", "-P", f"--oci-bundle={bundle}", "-M", "oci-cfg-t"], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def one_line_error(r, *needles):
    assert r.returncode != 0, r.stdout
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err


def test_runtime_spec_1_2_bundle_runs(spawn_bin, bundle):
    cfg = base_config("hostname; cat /proc/self/status | grep -E '^(NoNewPrivs|CapBnd)'; ulimit -n; "
                      "cat /proc/self/oom_score_adj; ls /masked | wc -l")
    cfg["process"].update({"noNewPrivileges": True, "oomScoreAdj": 123,
                           "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654}],
                           "capabilities": {k: ["CAP_CHOWN", "CAP_KILL"] for k in ("bounding", "effective", "permitted")},
                           "apparmorProfile": "", "selinuxLabel": ""})
    cfg["linux"]["maskedPaths"] = ["/masked"]
    cfg["linux"]["readonlyPaths"] = ["/proc/sys"]
    cfg["annotations"] = {"org.example.k": "v"}
    (bundle / "rootfs" / "masked").mkdir()
    (bundle / "rootfs" / "masked" / "f").write_text("x")
    r = run(spawn_bin, bundle, cfg)
    assert r.returncode == 0, r.stderr
    out = r.stdout.split("\n")
    assert out[0] == "oci-cfg"
    status = dict(line.split(":\t") for line in out[1:3])
    assert status["NoNewPrivs"] == "1"
    assert int(status["CapBnd"], 16) == (1 << 0) | (1 << 5)  # CAP_CHOWN, CAP_KILL
    assert out[3] == "321"
    assert out[4] == "123"
    assert out[5].strip() == "0"


def test_oci_only_fields_are_applied_inside(spawn_bin, bundle):
    script = ("umask; cat /proc/sys/kernel/msgmax /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/domainname; "
              "stat -c '%t:%T %a %u:%g' /dev/oci-null; "
              "touch /data-ro/x 2>/dev/null && echo rw || echo ro; "
              "mkdir /tmp/d 2>&1 | grep -c 'not implemented'; "
              "ionice -p $$; awk '{print $19, $41}' /proc/self/stat")
    cfg = base_config(script)
    cfg["process"].update({"user": {"uid": 0, "gid": 0, "umask": 0o27},
                           "ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 0},
                           "scheduler": {"policy": "SCHED_BATCH", "nice": 5}})
    cfg["domainname"] = "oci.example"
    cfg["linux"].update({
        "sysctl": {"kernel.msgmax": "9999", "net.ipv4.ip_forward": "1"},
        "devices": [{"type": "c", "path": "/dev/oci-null", "major": 1, "minor": 3, "fileMode": 0o600, "uid": 0, "gid": 0}],
        "readonlyPaths": ["/data-ro", "/proc/sys"],
        "seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
                    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]},
    })
    (bundle / "rootfs" / "data-ro").mkdir()
    host_msgmax = open("/proc/sys/kernel/msgmax").read()
    r = run(spawn_bin, bundle, cfg)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "0027"
    assert out[1:4] == ["9999", "1", "oci.example"]
    assert out[4] == "1:3 600 0:0"
    assert out[5] == "ro"
    assert out[6] == "1"  # mkdir: ENOSYS from the profile
    assert out[7].startswith("idle")
    assert out[8].split() == ["5", "3"]  # nice 5, SCHED_BATCH
    assert open("/proc/sys/kernel/msgmax").read() == host_msgmax


def test_bind_mount_options(spawn_bin, bundle, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    cfg = base_config("awk '$5 == \"/data\" || $5 == \"/data2\" {print $5, $6}' /proc/self/mountinfo; "
                      "touch /data/new 2>/dev/null && echo rw || echo ro")
    cfg["mounts"] += [
        {"destination": "/data", "type": "bind", "source": str(src), "options": ["rbind", "nosuid", "nodev", "noexec", "rro"]},
        {"destination": "/data2", "type": "bind", "source": str(src), "options": ["bind", "ro", "noatime", "rprivate"]},
    ]
    r = run(spawn_bin, bundle, cfg)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(" ", 1) for line in r.stdout.splitlines()[:2])
    assert set(lines["/data"].split(",")) >= {"ro", "nosuid", "nodev", "noexec"}, lines
    assert set(lines["/data2"].split(",")) >= {"ro", "noatime"}, lines
    assert r.stdout.splitlines()[2] == "ro"
    assert not (src / "new").exists()


def test_rootfs_propagation(spawn_bin, bundle):
    cfg = base_config("awk '$5 == \"/\" {print $7}' /proc/self/mountinfo")
    cfg["linux"]["rootfsPropagation"] = "rshared"
    r = run(spawn_bin, bundle, cfg)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0].startswith("shared:"), r.stdout


def test_cgroup_mount_shows_the_containers_own_groups_read_only(spawn_bin, bundle):
    # podman's and containerd's "cgroup" mount: the host's layout, every hierarchy read-only, each
    # rooted at the container's own group (mounted from its cgroup namespace).
    cfg = base_config("ls /sys/fs/cgroup | grep -c . ; grep -c ':/$' /proc/self/cgroup; "
                      "touch /sys/fs/cgroup/x 2>/dev/null || echo read-only; "
                      "awk '$5 ~ \"^/sys/fs/cgroup/\" && $6 !~ /^ro/ {print \"writable\", $5}' /proc/self/mountinfo")
    cfg["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                          "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})
    r = run(spawn_bin, bundle, cfg)
    assert r.returncode == 0, r.stderr
    out = r.stdout.split()
    host = [d for d in os.listdir("/sys/fs/cgroup")] if not os.path.exists("/sys/fs/cgroup/cgroup.controllers") else []
    if host:
        assert int(out[0]) == len(host), r.stdout
    assert int(out[1]) == len(open("/proc/self/cgroup").read().splitlines())  # every hierarchy rooted at "/"
    assert out[2:] == ["read-only"], r.stdout


def test_numeric_user_with_additional_gids(spawn_bin, bundle):
    cfg = base_config("grep -E '^(Uid|Gid|Groups|CapEff):' /proc/self/status")
    cfg["process"]["user"] = {"uid": 1000, "gid": 100, "additionalGids": [5, 4242]}
    r = run(spawn_bin, bundle, cfg)
    assert r.returncode == 0, r.stderr
    status = dict(line.split(":", 1) for line in r.stdout.splitlines())
    assert status["Uid"].split() == ["1000"] * 4
    assert status["Gid"].split() == ["100"] * 4
    assert status["Groups"].split() == ["5", "4242"]
    assert int(status["CapEff"], 16) == 0


@pytest.mark.parametrize("path,value,field", [
    (("process", "consoleSize"), {"height": 10, "width": 20}, "process.consoleSize"),
    (("process", "capabilities"), {"bounding": ["CAP_KILL"], "effective": [], "permitted": ["CAP_KILL"]},
     "process.capabilities.effective/permitted"),
    (("linux", "resources"), {"pids": {"limit": 20}}, "linux.resources"),
    (("linux", "cgroupsPath"), "/mk-oci-t", "linux.cgroupsPath"),
    (("hooks",), {"poststop": [{"path": "/bin/true"}]}, "hooks"),
])
def test_fields_spawn_does_not_apply_yet_are_refused_by_name(spawn_bin, bundle, path, value, field):
    cfg = base_config("true")
    node = cfg
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    r = run(spawn_bin, bundle, cfg)
    one_line_error(r, f"'{field}", "not supported by spawn")
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json", "rootfs"]


@pytest.mark.parametrize("edit,needle", [
    (lambda c: c["linux"].update(sysctl={"kernel.core_pattern": "|/tmp/x"}), "kernel.core_pattern is not in a namespace"),
    (lambda c: c["linux"].update(intelRdt={"closID": "x"}), "linux.intelRdt"),
    (lambda c: c["process"].update(apparmorProfile="docker-default"), "process.apparmorProfile"),
    (lambda c: c.update(ociVersion="2.0.0"), "ociVersion"),
    (lambda c: c["linux"].update(resources={"memory": {"kernel": 1}}), "linux.resources.memory.kernel"),
    (lambda c: c.update(windows={}), "'windows'"),
])
def test_invalid_or_unsupported_configs_fail_in_one_line(spawn_bin, bundle, edit, needle):
    cfg = base_config("true")
    edit(cfg)
    one_line_error(run(spawn_bin, bundle, cfg), needle)


PODMAN_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE",
               "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT"]


def podman_default_seccomp():
    """containers/common's seccomp.json as podman hands it to a runtime (amd64, default caps)."""
    d = json.load(open("/usr/share/containers/seccomp.json"))
    out = {"defaultAction": d["defaultAction"], "defaultErrnoRet": d["defaultErrnoRet"],
           "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"], "syscalls": []}
    for s in d["syscalls"]:
        inc, exc = s.get("includes") or {}, s.get("excludes") or {}
        if not all(c in PODMAN_CAPS for c in inc.get("caps", [])) or any(c in PODMAN_CAPS for c in exc.get("caps", [])):
            continue
        if ("arches" in inc and "amd64" not in inc["arches"]) or "amd64" in exc.get("arches", []):
            continue
        r = {"names": s["names"], "action": s["action"]}
        for k in ("errnoRet", "args"):
            if s.get(k) is not None:
                r[k] = s[k]
        out["syscalls"].append(r)
    return out


@pytest.mark.skipif(not os.path.exists("/usr/share/containers/seccomp.json"), reason="no podman seccomp profile")
def test_podman_default_seccomp_profile(spawn_bin, bundle):
    cfg = base_config("echo ok; grep -E '^Seccomp' /proc/self/status")
    cfg["process"]["capabilities"] = {k: PODMAN_CAPS for k in ("bounding", "effective", "permitted")}
    cfg["linux"]["seccomp"] = podman_default_seccomp()
    r = run(spawn_bin, bundle, cfg)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "ok"
    status = dict(line.split(":\t") for line in out[1:3])
    # One filter, the profile, instead of spawn's default set (argument filters + one per arch).
    assert status == {"Seccomp": "2", "Seccomp_filters": "1"}, out
