#!/usr/bin/python3
"""Copies introspection XML without the named members: machd serves those from a plain sd-bus
vtable (src/bus/machine_nodes.cpp), so the generated sdbus-c++ adaptor must not register them.
Proxies are still generated from the full XML.

    without-members.py INPUT OUTPUT MEMBER...
"""
import sys
import xml.etree.ElementTree as ET

src, dst, drop = sys.argv[1], sys.argv[2], set(sys.argv[3:])
tree = ET.parse(src)
for iface in tree.getroot().iter("interface"):
    for el in list(iface):
        if el.get("name") in drop:
            iface.remove(el)
            drop.discard(el.get("name"))
if drop:
    sys.exit("without-members.py: %s not in %s" % (", ".join(sorted(drop)), src))
tree.write(dst, encoding="unicode")
