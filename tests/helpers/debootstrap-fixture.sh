#!/bin/bash
# debootstrap-fixture.sh SUITE INCLUDE: prints the path of a cached Debian tree of SUITE (minbase plus
# the comma-separated INCLUDE packages, an empty root password, an empty machine-id), building it with
# debootstrap on first use. The cache lives outside the repository and is keyed by the recipe, so a
# changed recipe builds a new tree. Concurrent callers serialise on a lock file per suite.
# debian-fixture.sh and sid-fixture.sh name the recipes the tests use.
set -euo pipefail

SUITE=$1
INCLUDE=$2
MIRROR=${MK_DEBIAN_MIRROR:-}
RECIPE="debootstrap --variant=minbase --include=$INCLUDE $SUITE | root password empty | v1"
KEY=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-16)
CACHE=${MK_FIXTURE_CACHE:-/var/cache/machkit/fixtures}
TREE=$CACHE/debian-$SUITE-$KEY
me=$(basename "$0")

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-$SUITE"
flock 9
if [ ! -e "$TREE/.complete" ]; then
    command -v debootstrap >/dev/null || { echo "$me: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
    if [ -z "$MIRROR" ]; then
        # Use the mirror apt already uses on this machine: it is the only one reachable.
        MIRROR=$(grep -rhoE '^(deb|URIs:)[[:space:]]+[^[:space:]]+' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
                 | awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
        [ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
    fi
    tmp=$(mktemp -d "$CACHE/.build.XXXXXX")
    trap 'rm -rf --one-file-system "$tmp"' EXIT
    run() { debootstrap "$@" --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp/tree" "$MIRROR" >"$tmp/log" 2>&1; }
    if ! run; then
        # A newer suite's Release may be signed by a key newer than this host's keyring: bootstrap
        # unchecked from the configured mirror (a test fixture, never shipped).
        grep -q -iE 'signature|NO_PUBKEY|Release' "$tmp/log" && rm -rf --one-file-system "$tmp/tree" && run --no-check-gpg \
            || { tail -n 20 "$tmp/log" >&2; echo "$me: debootstrap of $SUITE failed" >&2; exit 1; }
    fi
    # A passwordless root so that a console login test can log in; the tree is a test fixture only.
    sed -i 's/^root:[^:]*:/root::/' "$tmp/tree/etc/shadow"
    : >"$tmp/tree/etc/machine-id"
    rm -rf --one-file-system "$TREE"
    mv "$tmp/tree" "$TREE"
    touch "$TREE/.complete"
fi
echo "$TREE"
