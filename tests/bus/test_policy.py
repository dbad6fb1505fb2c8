"""D-01: the bus policy's allow-list for non-root callers equals a reviewed list, and every method of
the machine1 interfaces has a decision (a method added to dbus/*.xml without one fails here).
No bus needed."""
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Reviewed: read-only methods, plus the methods machd hands to polkit (bus/polkit.cpp) as machined
# does. Everything else is root-only at the bus level, and machd re-checks the caller itself.
REVIEWED_POLKIT = {("org.freedesktop.machine1.Manager", m) for m in [
    "UnregisterMachine", "TerminateMachine", "KillMachine", "OpenMachinePTY", "OpenMachineLogin",
    "OpenMachineShell", "BindMountMachine", "CopyFromMachine", "CopyToMachine", "CopyFromMachineWithFlags",
    "CopyToMachineWithFlags", "OpenMachineRootDirectory", "RemoveImage", "RenameImage", "CloneImage",
    "MarkImageReadOnly", "SetPoolLimit", "SetImageLimit", "CleanPool"]
} | {("org.freedesktop.machine1.Machine", m) for m in [
    "Terminate", "Kill", "OpenPTY", "OpenLogin", "OpenShell", "BindMount", "CopyFrom", "CopyTo",
    "CopyFromWithFlags", "CopyToWithFlags", "OpenRootDirectory"]
} | {("org.freedesktop.machine1.Image", m) for m in ["Remove", "Rename", "Clone", "MarkReadOnly", "SetLimit"]}

REVIEWED_DEFAULT_ALLOW = {
    ("org.freedesktop.DBus.Introspectable", None),
    ("org.freedesktop.DBus.Peer", None),
    ("org.freedesktop.DBus.Properties", "Get"),
    ("org.freedesktop.DBus.Properties", "GetAll"),
} | {("org.freedesktop.machine1.Manager", m) for m in [
    "GetMachine", "GetImage", "GetMachineByPID", "ListMachines", "ListImages", "GetMachineAddresses",
    "GetMachineOSRelease", "GetMachineUIDShift", "GetImageHostname", "GetImageMachineID", "GetImageMachineInfo",
    "GetImageOSRelease", "MapFromMachineUser", "MapToMachineUser", "MapFromMachineGroup", "MapToMachineGroup"]
} | {("org.freedesktop.machine1.Machine", m) for m in ["GetAddresses", "GetOSRelease", "GetUIDShift"]
} | {("org.freedesktop.machine1.Image", m) for m in ["GetHostname", "GetMachineID", "GetMachineInfo", "GetOSRelease"]
} | {("io.machkit.Manager1", "GetMachineReady")} | REVIEWED_POLKIT

# Root-only by decision (machined 252: Create/Register need CAP_SYS_ADMIN; machkit's extension).
REVIEWED_ROOT_ONLY = {("org.freedesktop.machine1.Manager", m) for m in [
    "CreateMachine", "CreateMachineWithNetwork", "RegisterMachine", "RegisterMachineWithNetwork"]
} | {("io.machkit.Manager1", m) for m in [
    "ExecMachine", "PauseMachine", "ResumeMachine", "GetMachineFreezerState", "StartMachine", "SetMachineReady",
    "CheckpointMachine", "RestoreMachine"]}


def policy():
    return ET.parse(ROOT / "policy" / "org.freedesktop.machine1.conf").getroot()


def test_default_context_allow_list_is_reviewed():
    default = next(p for p in policy().findall("policy") if p.get("context") == "default")
    allowed = set()
    for el in default:
        if el.tag == "allow" and el.get("send_destination") == "org.freedesktop.machine1":
            allowed.add((el.get("send_interface"), el.get("send_member")))
    assert allowed == REVIEWED_DEFAULT_ALLOW
    # Deny by default comes first, and nobody but root may own the name.
    assert default[0].tag == "deny" and default[0].get("send_destination") == "org.freedesktop.machine1"
    assert not any(el.get("own") for el in default if el.tag == "allow")


def test_only_root_owns_the_name():
    owners = [p.get("user") for p in policy().findall("policy") for el in p if el.get("own") == "org.freedesktop.machine1"]
    assert owners == ["root"]


def test_every_method_has_a_decision():
    for iface in ["org.freedesktop.machine1." + n for n in ("Manager", "Machine", "Image")] + ["io.machkit.Manager1"]:
        root = ET.parse(ROOT / "dbus" / (iface + ".xml")).getroot()
        for m in root.iter("method"):
            key = (iface, m.get("name"))
            assert (key in REVIEWED_DEFAULT_ALLOW) != (key in REVIEWED_ROOT_ONLY), key
