#!/bin/bash
# Prints the path of a cached Debian bookworm tree (systemd 252) for boot tests, built on first use
# (debootstrap-fixture.sh: cached outside the repository, keyed by the recipe).
exec "$(dirname "$0")/debootstrap-fixture.sh" bookworm systemd,systemd-sysv,dbus,iproute2,procps,util-linux
