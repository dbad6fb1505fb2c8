"""machd's introspection equals systemd-machined 252's (golden XML captured from the real daemon on a
private bus, tests/bus/data/). Compared structurally: member order is the only freedom."""
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import DEST, MANAGER, create, machine_path

DATA = Path(__file__).parent / "data"


def canonical(xml_text, iface):
    root = ET.fromstring(xml_text)
    node = next(i for i in root.iter("interface") if i.get("name") == iface)
    out = {}
    for el in node:
        key = (el.tag, el.get("name"))
        args = tuple((a.get("type"), a.get("name"), a.get("direction")) for a in el.findall("arg"))
        ann = tuple(sorted((a.get("name"), a.get("value")) for a in el.findall("annotation")))
        attrs = (el.get("type"), el.get("access"))
        out[key] = (args, ann, attrs)
    return out


def introspect(bus, path):
    return bus.busctl("introspect", "--xml-interface", DEST, path).stdout


def test_manager_interface_matches_machined_252(bus, machd):
    golden = canonical((DATA / "machined252-manager.xml").read_text(), "org.freedesktop.machine1.Manager")
    ours = canonical(introspect(bus, MANAGER), "org.freedesktop.machine1.Manager")
    assert sorted(ours) == sorted(golden)
    for k in golden:
        assert ours[k] == golden[k], k


def test_machine_interface_matches_machined_252(bus, machd, leaders):
    p = leaders.spawn()
    create(bus, "intro", p.pid)
    golden = canonical((DATA / "machined252-machine.xml").read_text(), "org.freedesktop.machine1.Machine")
    ours = canonical(introspect(bus, machine_path("intro")), "org.freedesktop.machine1.Machine")
    assert sorted(ours) == sorted(golden)
    for k in golden:
        assert ours[k] == golden[k], k


def test_our_xml_is_the_golden_plus_async(bus):
    """dbus/*.xml (the generator input) says exactly what the golden says, plus Method.Async."""
    root = Path(__file__).resolve().parents[2] / "dbus"
    for name, golden in [("Manager", "machined252-manager.xml"), ("Machine", "machined252-machine.xml"),
                         ("Image", "machined252-image.xml")]:
        iface = "org.freedesktop.machine1." + name
        ours = canonical((root / (iface + ".xml")).read_text(), iface)
        want = canonical((DATA / golden).read_text(), iface)
        for k, v in ours.items():
            args, ann, attrs = v
            ann = tuple(a for a in ann if a[0] != "org.freedesktop.DBus.Method.Async")
            ours[k] = (args, ann, attrs)
        assert ours == want, name
