#!/bin/bash
# Prints the path of a cached Debian sid tree: today's systemd (machinectl, systemd-nspawn, varlinkctl,
# systemd-machined) and criu, for conformance tests against systemd >= 261 and for guests whose systemd
# refuses cgroup v1. Built on first use (debootstrap-fixture.sh: cached outside the repository, keyed
# by the recipe).
exec "$(dirname "$0")/debootstrap-fixture.sh" sid systemd,systemd-sysv,systemd-container,dbus,iproute2,procps,util-linux,criu
