#!/bin/bash
# Boots a scratch copy of the cached Debian fixture with spawn and with systemd-nspawn, side by side.
#   bench/boot.sh [BUILD_DIR] [REPS]      (root)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd)
tree=$("$here/../tests/helpers/debian-fixture.sh")
work=$(mktemp -d /var/tmp/mk-bootbench.XXXXXX)
trap 'rm -rf --one-file-system "$work"' EXIT
cp -a "$tree" "$work/tree"
python3 "$here/boot.py" "$build" "$work/tree" "${2:-5}"
