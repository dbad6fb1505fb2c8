#!/bin/bash
# Prints the path of a cached Debian bookworm tree for boot tests, building it with debootstrap on
# first use. The cache lives outside the repository and is keyed by the recipe below, so a changed
# recipe builds a new tree. Concurrent callers serialise on a lock file.
set -euo pipefail

SUITE=bookworm
INCLUDE=systemd,systemd-sysv,dbus,iproute2,procps,util-linux
MIRROR=${MK_DEBIAN_MIRROR:-}
RECIPE="debootstrap --variant=minbase --include=$INCLUDE $SUITE | root password empty | v1"
KEY=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-16)
CACHE=${MK_FIXTURE_CACHE:-/var/cache/machkit/fixtures}
TREE=$CACHE/debian-$SUITE-$KEY

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [ ! -e "$TREE/.complete" ]; then
    command -v debootstrap >/dev/null || { echo "debian-fixture: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
    if [ -z "$MIRROR" ]; then
        # Use the mirror apt already uses on this machine: it is the only one reachable.
        MIRROR=$(grep -rhoE '^(deb|URIs:)[[:space:]]+[^[:space:]]+' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
                 | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
        [ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
    fi
    tmp=$(mktemp -d "$CACHE/.build.XXXXXX")
    trap 'rm -rf --one-file-system "$tmp"' EXIT
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp/tree" "$MIRROR" >"$tmp/log" 2>&1 \
        || { tail -n 20 "$tmp/log" >&2; echo "debian-fixture: debootstrap failed" >&2; exit 1; }
    # A passwordless root so that a console login test can log in; the tree is a test fixture only.
    sed -i 's/^root:[^:]*:/root::/' "$tmp/tree/etc/shadow"
    : >"$tmp/tree/etc/machine-id"
    rm -rf --one-file-system "$TREE"
    mv "$tmp/tree" "$TREE"
    touch "$TREE/.complete"
fi
echo "$TREE"
