#!/bin/bash
# Prints the path of a cached Debian sid tree: today's systemd (machinectl, systemd-nspawn, varlinkctl,
# systemd-machined) and criu, for conformance tests against systemd >= 261 and for guests whose systemd
# refuses cgroup v1. Built with debootstrap on first use; the cache lives outside the repository and is
# keyed by the recipe below, so a changed recipe builds a new tree. Concurrent callers serialise on a
# lock file.
set -euo pipefail

SUITE=sid
INCLUDE=systemd,systemd-sysv,systemd-container,dbus,iproute2,procps,util-linux,criu
MIRROR=${MK_DEBIAN_MIRROR:-}
RECIPE="debootstrap --variant=minbase --include=$INCLUDE $SUITE | root password empty | v1"
KEY=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-16)
CACHE=${MK_FIXTURE_CACHE:-/var/cache/machkit/fixtures}
TREE=$CACHE/debian-$SUITE-$KEY

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-$SUITE"
flock 9
if [ ! -e "$TREE/.complete" ]; then
    command -v debootstrap >/dev/null || { echo "sid-fixture: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
    if [ -z "$MIRROR" ]; then
        MIRROR=$(grep -rhoE '^(deb|URIs:)[[:space:]]+[^[:space:]]+' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
                 | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
        [ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
    fi
    tmp=$(mktemp -d "$CACHE/.build.XXXXXX")
    trap 'rm -rf --one-file-system "$tmp"' EXIT
    # sid's Release may be signed by a key newer than bookworm's keyring: fall back to an unchecked
    # bootstrap (a test fixture from the configured mirror, never shipped).
    if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp/tree" "$MIRROR" >"$tmp/log" 2>&1; then
        if grep -q -iE 'signature|NO_PUBKEY|Release' "$tmp/log"; then
            rm -rf --one-file-system "$tmp/tree"
            debootstrap --no-check-gpg --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp/tree" "$MIRROR" >"$tmp/log" 2>&1 \
                || { tail -n 20 "$tmp/log" >&2; echo "sid-fixture: debootstrap failed" >&2; exit 1; }
        else
            tail -n 20 "$tmp/log" >&2; echo "sid-fixture: debootstrap failed" >&2; exit 1
        fi
    fi
    sed -i 's/^root:[^:]*:/root::/' "$tmp/tree/etc/shadow"
    : >"$tmp/tree/etc/machine-id"
    rm -rf --one-file-system "$TREE"
    mv "$tmp/tree" "$TREE"
    touch "$TREE/.complete"
fi
echo "$TREE"
