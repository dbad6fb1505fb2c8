#!/bin/bash
# Image export/import throughput: machd-transfer vs the shell pipelines and systemd 252's helpers,
# side by side on the Debian fixture (tests/helpers/debian-fixture.sh, ~257 MB).
#
#   bench/images.sh [BUILD_DIR]        RUNS=3 (fast cases), XZ_EXPORT_RUNS=1 (xz export is ~45 s each)
#
# Outputs and import targets live on tmpfs (/dev/shm): extraction into ext4 here is dominated by
# discard/journal noise (perf-anchors.md §4.2). Medians of wall time; "speed-up" = reference time /
# our time (> 1: we are faster). systemd-import runs with --sync=no, like the others.
# The machine may be shared: the load average is printed before and after.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
top="$(cd "$here/.." && pwd)"
build="${1:-$top/build}"
T="$build/src/transfer/machd-transfer"
[ -x "$T" ] || { echo "build first: ninja -C $build" >&2; exit 2; }
RUNS="${RUNS:-3}"
XZ_EXPORT_RUNS="${XZ_EXPORT_RUNS:-1}"
SD_EXPORT=/lib/systemd/systemd-export
SD_IMPORT=/lib/systemd/systemd-import

F="$("$top/tests/helpers/debian-fixture.sh")"
W=/dev/shm/mk-bench
rm -rf "$W"
mkdir -p "$W"
trap 'rm -rf "$W"' EXIT
fpool="$(dirname "$F")"
fname="$(basename "$F")"

echo "fixture: $F ($(du -sh --apparent-size "$F" | cut -f1), $(find "$F" | wc -l) entries)"
echo "tar stream: $(tar -C "$F" -cf - . | wc -c) bytes; CPUs: $(nproc); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

now() { date +%s.%N; }
# median of the wall times of running "$@" $2 times; $1 = cleanup command run before each run
declare -A RESULT
measure() {
    local key=$1 runs=$2 cleanup=$3
    shift 3
    local times=()
    for ((i = 0; i < runs; i++)); do
        eval "$cleanup"
        sync
        local t0 t1
        t0=$(now)
        "$@" >/dev/null 2>&1 || { echo "FAILED: $key: $*" >&2; return 1; }
        t1=$(now)
        times+=("$(echo "$t1 - $t0" | bc -l)")
    done
    RESULT[$key]=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf '  %-34s %8.3f s\n' "$key" "${RESULT[$key]}"
}

echo "== export (tree -> compressed tar on tmpfs)"
measure "tar | xz -T2 -6" "$XZ_EXPORT_RUNS" "rm -f $W/ref.tar.xz" \
    sh -c "tar -C '$F' -cf - . | xz -T2 -6 > '$W/ref.tar.xz'"
measure "machd-transfer export xz" "$XZ_EXPORT_RUNS" "rm -f $W/mk.tar.xz" \
    "$T" export-tar --pool="$fpool" --format=xz --threads=2 "$fname" "$W/mk.tar.xz"
if [ -x "$SD_EXPORT" ]; then
    measure "systemd-export tar xz" "$XZ_EXPORT_RUNS" "rm -f $W/sd.tar.xz" \
        "$SD_EXPORT" tar --format=xz "$F" "$W/sd.tar.xz"
fi
measure "tar | zstd -T2 -3" "$RUNS" "rm -f $W/ref.tar.zst" \
    sh -c "tar -C '$F' -cf - . | zstd -T2 -3 -q > '$W/ref.tar.zst'"
measure "machd-transfer export zstd" "$RUNS" "rm -f $W/mk.tar.zst" \
    "$T" export-tar --pool="$fpool" --format=zstd --threads=2 "$fname" "$W/mk.tar.zst"
measure "tar | gzip -6" 1 "rm -f $W/ref.tar.gz" sh -c "tar -C '$F' -cf - . | gzip -6 > '$W/ref.tar.gz'"
measure "machd-transfer export gzip" 1 "rm -f $W/mk.tar.gz" \
    "$T" export-tar --pool="$fpool" --format=gzip "$fname" "$W/mk.tar.gz"
echo
echo "  sizes: ref.tar.xz $(stat -c %s "$W/ref.tar.xz")  mk.tar.xz $(stat -c %s "$W/mk.tar.xz")" \
     "$( [ -f "$W/sd.tar.xz" ] && echo " sd.tar.xz $(stat -c %s "$W/sd.tar.xz")")"
echo "         ref.tar.zst $(stat -c %s "$W/ref.tar.zst")  mk.tar.zst $(stat -c %s "$W/mk.tar.zst")"
echo "         ref.tar.gz $(stat -c %s "$W/ref.tar.gz")  mk.tar.gz $(stat -c %s "$W/mk.tar.gz")"
echo "  xz blocks: ref $(xz --robot -lv "$W/ref.tar.xz" | awk '$1=="totals"{print $3}')" \
     " mk $(xz --robot -lv "$W/mk.tar.xz" | awk '$1=="totals"{print $3}')"
echo

echo "== import (compressed tar -> tree on tmpfs); all read the same multi-block ref files"
X="$W/x"
P="$W/pool"
S="$W/sdroot"
measure "xz -T2 -dc | tar -x" "$RUNS" "rm -rf $X; mkdir -p $X" \
    sh -c "xz -T2 -dc '$W/ref.tar.xz' | tar -C '$X' -xf -"
measure "machd-transfer import xz" "$RUNS" "rm -rf $P; mkdir -p $P" \
    "$T" import-tar --pool="$P" --threads=2 "$W/ref.tar.xz" deb
if [ -x "$SD_IMPORT" ]; then
    measure "systemd-import tar xz" "$RUNS" "rm -rf $S; mkdir -p $S" \
        "$SD_IMPORT" --image-root="$S" --sync=no tar "$W/ref.tar.xz" deb
fi
measure "zstd -dc | tar -x" "$RUNS" "rm -rf $X; mkdir -p $X" \
    sh -c "zstd -dc '$W/ref.tar.zst' | tar -C '$X' -xf -"
measure "machd-transfer import zstd" "$RUNS" "rm -rf $P; mkdir -p $P" \
    "$T" import-tar --pool="$P" "$W/ref.tar.zst" deb
measure "gzip -dc | tar -x" "$RUNS" "rm -rf $X; mkdir -p $X" \
    sh -c "gzip -dc '$W/ref.tar.gz' | tar -C '$X' -xf -"
measure "machd-transfer import gzip" "$RUNS" "rm -rf $P; mkdir -p $P" \
    "$T" import-tar --pool="$P" "$W/ref.tar.gz" deb
if [ -x "$SD_IMPORT" ]; then
    measure "systemd-import tar gzip" "$RUNS" "rm -rf $S; mkdir -p $S" \
        "$SD_IMPORT" --image-root="$S" --sync=no tar "$W/ref.tar.gz" deb
fi
rm -rf "$X" "$P" "$S"
echo

ratio() { echo "scale=2; ${RESULT[$1]} / ${RESULT[$2]}" | bc -l; }
echo "== speed-up of machd-transfer (reference time / our time; >= 0.95 is the target vs pipelines)"
printf '  export xz   vs tar|xz -T2:        %s   vs systemd-export: %s\n' \
    "$(ratio "tar | xz -T2 -6" "machd-transfer export xz")" \
    "$( [ -n "${RESULT[systemd-export tar xz]:-}" ] && ratio "systemd-export tar xz" "machd-transfer export xz" || echo n/a)"
printf '  export zstd vs tar|zstd -T2:      %s\n' "$(ratio "tar | zstd -T2 -3" "machd-transfer export zstd")"
printf '  export gzip vs tar|gzip:          %s\n' "$(ratio "tar | gzip -6" "machd-transfer export gzip")"
printf '  import xz   vs xz -T2 -dc|tar:    %s   vs systemd-import: %s\n' \
    "$(ratio "xz -T2 -dc | tar -x" "machd-transfer import xz")" \
    "$( [ -n "${RESULT[systemd-import tar xz]:-}" ] && ratio "systemd-import tar xz" "machd-transfer import xz" || echo n/a)"
printf '  import zstd vs zstd -dc|tar:      %s\n' "$(ratio "zstd -dc | tar -x" "machd-transfer import zstd")"
printf '  import gzip vs gzip -dc|tar:      %s   vs systemd-import: %s\n' \
    "$(ratio "gzip -dc | tar -x" "machd-transfer import gzip")" \
    "$( [ -n "${RESULT[systemd-import tar gzip]:-}" ] && ratio "systemd-import tar gzip" "machd-transfer import gzip" || echo n/a)"
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
