#!/bin/bash
# Image export/import throughput: machd-transfer vs the shell pipelines and systemd 252's helpers,
# side by side on the Debian fixture (tests/helpers/debian-fixture.sh, ~257 MB).
#
#   bench/images.sh [BUILD_DIR]        RUNS=3 (fast cases), XZ_EXPORT_RUNS=1 (xz export is ~45 s each)
#
# Outputs and import targets live on tmpfs (/dev/shm): extraction into ext4 here is dominated by
# discard/journal noise (perf-anchors.md §4.2). Medians of wall and CPU time; "speed-up" = reference
# time / our time (> 1: we are faster). systemd-import runs with --sync=no, like the others.
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

F="${FIXTURE:-$("$top/tests/helpers/debian-fixture.sh")}"
W=/dev/shm/mk-bench
rm -rf "$W"
mkdir -p "$W"
trap 'rm -rf "$W"' EXIT
fpool="$(dirname "$F")"
fname="$(basename "$F")"

echo "fixture: $F ($(du -sh --apparent-size "$F" | cut -f1), $(find "$F" | wc -l) entries)"
echo "tar stream: $(tar -C "$F" -cf - . | wc -c) bytes; CPUs: $(nproc); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# Each case is a cleanup command and a command. Cases of one group run round-robin (a, b, c, a, b,
# c, ...) so that load from other users of the machine hits them alike; the median of wall times and
# of CPU times (user+sys of the whole pipeline, from GNU time) is reported for each.
declare -A RESULT CPU
group() {
    local runs=$1
    shift
    local -a keys=() cleans=() cmds=()
    while [ $# -gt 0 ]; do
        keys+=("$1")
        cleans+=("$2")
        cmds+=("$3")
        shift 3
    done
    local -A walls cpus
    for ((i = 0; i < runs; i++)); do
        for j in "${!keys[@]}"; do
            eval "${cleans[$j]}"
            sync
            if ! /usr/bin/time -f '%e %U %S' -o "$W/time" sh -c "${cmds[$j]}" >/dev/null 2>"$W/err"; then
                echo "FAILED: ${keys[$j]}: $(tail -n 3 "$W/err")" >&2
                return 1
            fi
            read -r e u s <"$W/time"
            walls[$j]+="$e "
            cpus[$j]+="$(echo "$u + $s" | bc -l) "
        done
    done
    for j in "${!keys[@]}"; do
        local k=${keys[$j]}
        RESULT[$k]=$(printf '%s\n' ${walls[$j]} | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
        CPU[$k]=$(printf '%s\n' ${cpus[$j]} | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
        printf '  %-34s wall %8.3f s   cpu %8.2f s\n' "$k" "${RESULT[$k]}" "${CPU[$k]}"
    done
}

echo "== export (tree -> compressed tar on tmpfs)"
sd_export=()
[ -x "$SD_EXPORT" ] && sd_export=("systemd-export tar xz" "rm -f $W/sd.tar.xz" "$SD_EXPORT tar --format=xz '$F' '$W/sd.tar.xz'")
group "$XZ_EXPORT_RUNS" \
    "tar | xz -T2 -6" "rm -f $W/ref.tar.xz" "tar -C '$F' -cf - . | xz -T2 -6 > '$W/ref.tar.xz'" \
    "machd-transfer export xz" "rm -f $W/mk.tar.xz" \
    "'$T' export-tar --pool='$fpool' --format=xz --threads=2 '$fname' '$W/mk.tar.xz'" \
    "${sd_export[@]}"
group "$RUNS" \
    "tar | zstd -T2 -3" "rm -f $W/ref.tar.zst" "tar -C '$F' -cf - . | zstd -T2 -3 -q > '$W/ref.tar.zst'" \
    "machd-transfer export zstd" "rm -f $W/mk.tar.zst" \
    "'$T' export-tar --pool='$fpool' --format=zstd --threads=2 '$fname' '$W/mk.tar.zst'"
group 1 \
    "tar | gzip -6" "rm -f $W/ref.tar.gz" "tar -C '$F' -cf - . | gzip -6 > '$W/ref.tar.gz'" \
    "machd-transfer export gzip" "rm -f $W/mk.tar.gz" "'$T' export-tar --pool='$fpool' --format=gzip '$fname' '$W/mk.tar.gz'"
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
sd() { [ -x "$SD_IMPORT" ] && printf '%s\n' "systemd-import tar $1" "rm -rf $S; mkdir -p $S" \
    "$SD_IMPORT --image-root='$S' --sync=no tar '$W/ref.tar.$2' deb"; }
mapfile -t sdxz < <(sd xz xz)
mapfile -t sdgz < <(sd gzip gz)
group "$RUNS" \
    "xz -T2 -dc | tar -x" "rm -rf $X; mkdir -p $X" "xz -T2 -dc '$W/ref.tar.xz' | tar -C '$X' -xf -" \
    "machd-transfer import xz" "rm -rf $P; mkdir -p $P" "'$T' import-tar --pool='$P' --threads=2 '$W/ref.tar.xz' deb" \
    "${sdxz[@]}"
group "$RUNS" \
    "zstd -dc | tar -x" "rm -rf $X; mkdir -p $X" "zstd -dc '$W/ref.tar.zst' | tar -C '$X' -xf -" \
    "machd-transfer import zstd" "rm -rf $P; mkdir -p $P" "'$T' import-tar --pool='$P' '$W/ref.tar.zst' deb"
group "$RUNS" \
    "gzip -dc | tar -x" "rm -rf $X; mkdir -p $X" "gzip -dc '$W/ref.tar.gz' | tar -C '$X' -xf -" \
    "machd-transfer import gzip" "rm -rf $P; mkdir -p $P" "'$T' import-tar --pool='$P' '$W/ref.tar.gz' deb" \
    "${sdgz[@]}"
rm -rf "$X" "$P" "$S"
echo

ratio() { echo "scale=2; ${RESULT[$1]} / ${RESULT[$2]}" | bc -l; }
cpuratio() { echo "scale=2; ${CPU[$1]} / ${CPU[$2]}" | bc -l; }
echo "== speed-up of machd-transfer (reference time / our time; >= 0.95 is the target vs pipelines)"
printf '  export xz   vs tar|xz -T2:        %s   vs systemd-export: %s\n' \
    "$(ratio "tar | xz -T2 -6" "machd-transfer export xz")" \
    "$( [ -n "${RESULT[systemd-export tar xz]:-}" ] && ratio "systemd-export tar xz" "machd-transfer export xz" || echo n/a)"
printf '  export xz   CPU-time ratio vs tar|xz -T2: %s\n' "$(cpuratio "tar | xz -T2 -6" "machd-transfer export xz")"
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
