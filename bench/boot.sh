#!/bin/bash
# Boots scratch copies of the cached Debian fixtures (bookworm: systemd 252; sid: systemd 262) with
# spawn and with systemd-nspawn, side by side. MK_BENCH_SID=0 leaves the sid guest out.
#   bench/boot.sh [BUILD_DIR] [REPS]      (root)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd)
tree=$("$here/../tests/helpers/debian-fixture.sh")
work=$(mktemp -d /var/tmp/mk-bootbench.XXXXXX)
trap 'rm -rf --one-file-system "$work"' EXIT
cp -a "$tree" "$work/tree"
if [ "${MK_BENCH_SID:-1}" = 1 ]; then
    sid=$("$here/../tests/helpers/sid-fixture.sh")
    cp -a "$sid" "$work/sid"
    python3 "$here/boot.py" "$build" "$work/tree" "${2:-5}" "$work/sid"
else
    python3 "$here/boot.py" "$build" "$work/tree" "${2:-5}"
fi
