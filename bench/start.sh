#!/bin/bash
# Start-to-exit latency of /bin/true in a fresh container: spawn vs systemd-nspawn vs a bare
# unshare+chroot floor, side by side in one hyperfine run; prints medians, ratios and peak RSS.
#   bench/start.sh [BUILD_DIR]     (root; needs hyperfine, systemd-container, busybox-static, time)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd)
spawn=$build/src/spawn/spawn
runs=${RUNS:-200}
work=$(mktemp -d /tmp/mk-bench.XXXXXX)
trap 'rm -rf --one-file-system "$work"' EXIT
"$here/../tests/helpers/busybox-tree.sh" "$work/tree" >/dev/null

cmds=(
  "$spawn -q -D $work/tree /bin/true"
  "$spawn -q --private-network -D $work/tree /bin/true"
  "systemd-nspawn --register=no --keep-unit -q -D $work/tree /bin/true"
  "systemd-nspawn --register=no --keep-unit --private-network -q -D $work/tree /bin/true"
  "unshare --fork --pid --mount --uts --ipc --net --mount-proc chroot $work/tree /bin/true"
)
names=(spawn spawn-private-network nspawn nspawn-private-network floor-unshare)

hyperfine -N -w 10 -r "$runs" --export-json "$work/start.json" "${cmds[@]}" >/dev/null 2>&1 || \
hyperfine -N -w 10 -r "$runs" --export-json "$work/start.json" "${cmds[@]}" 2>&1 | grep -v "^ " >&2

rss() {  # median peak RSS in KiB over 9 runs
    for _ in $(seq 9); do /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -n1; done | sort -n | sed -n 5p
}
rss_spawn=$(rss $spawn -q -D "$work/tree" /bin/true)
rss_nspawn=$(rss systemd-nspawn --register=no --keep-unit -q -D "$work/tree" /bin/true)

python3 - "$work/start.json" "$rss_spawn" "$rss_nspawn" "${names[@]}" <<'PY'
import json, statistics, sys
data = json.load(open(sys.argv[1]))["results"]
rss_spawn, rss_nspawn = int(sys.argv[2]), int(sys.argv[3])
names = sys.argv[4:]
med = {n: statistics.median(r["times"]) * 1e3 for n, r in zip(names, data)}
print("start-to-exit of /bin/true, median of %d runs (ms):" % len(data[0]["times"]))
for n in names:
    print("  %-24s %7.2f ms" % (n, med[n]))
print("ratios:")
print("  nspawn / spawn                         %6.1fx" % (med["nspawn"] / med["spawn"]))
print("  nspawn / spawn (--private-network)     %6.1fx" % (med["nspawn-private-network"] / med["spawn-private-network"]))
print("  spawn / floor (unshare+chroot)         %6.2fx" % (med["spawn"] / med["floor-unshare"]))
print("peak RSS (KiB, median of 9): spawn %d, nspawn %d (ratio %.1fx)" % (rss_spawn, rss_nspawn, rss_nspawn / rss_spawn))
PY
