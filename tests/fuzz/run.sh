#!/bin/bash
# Builds the libFuzzer targets with clang (not meson: the sanitizer + fuzzer flags must cover the
# core sources too) and runs each for FUZZ_SECONDS on a copy of its seed corpus.
#
#   tests/fuzz/run.sh [BUILD_DIR]      (default build-fuzz; FUZZ_SECONDS default 20)
#
# Needs clang++ with the libFuzzer runtime. Debian 12: apt-get install -y clang-14 libclang-rt-14-dev
# Exits non-zero if a target fails to build or finds a crash; crash inputs are left in BUILD_DIR/<name>/
# (crash-*, leak-*, timeout-*). Turn each into a regression unit test.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
top="$(cd "$here/../.." && pwd)"
out="${1:-build-fuzz}"
seconds="${FUZZ_SECONDS:-20}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

cxx="${CXX_FUZZ:-}"
if [ -z "$cxx" ]; then
    for c in clang++ clang++-14 clang++-15 clang++-16; do
        if command -v "$c" >/dev/null; then cxx="$c"; break; fi
    done
fi
[ -n "$cxx" ] || { echo "run.sh: clang++ not found (apt-get install -y clang-14 libclang-rt-14-dev)" >&2; exit 2; }

flags=(-std=c++20 -g -O1 -D_GNU_SOURCE -I"$top/src" -Wall -Wextra
       -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)

# Core sources under test, compiled once with coverage instrumentation and put in an archive so
# each target links only the objects it uses.
core=(base/error.cpp base/id128.cpp base/io.cpp base/names.cpp base/os_release.cpp base/fs_at.cpp base/rm_rf.cpp base/tree_copy.cpp kernel/capabilities.cpp kernel/cgroup.cpp machine/inspect.cpp
      machine/shell.cpp machine/state_file.cpp machine/machine.cpp spawn/option_values.cpp spawn/settings.cpp spawn/oci_config.cpp
      image/sha256sums.cpp image/archive.cpp spawn/guest_systemd.cpp image/oci_manifest.cpp kernel/subid.cpp
      ../varlink/protocol.cpp ../varlink/errors.cpp ../varlink/params.cpp ../varlink/json_writer.cpp
      criu/protobuf.cpp criu/rpc.cpp criu/plan.cpp kernel/userns.cpp spawn/oci_userns.cpp base/run_lock.cpp)
objs=()
for src in "${core[@]}"; do
    obj="$out/obj/${src//\//_}.o"
    mkdir -p "$out/obj"
    "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link -c "$top/src/core/$src" -o "$obj"
    objs+=("$obj")
done
rm -f "$out/libmkcore-fuzz.a"
ar rcs "$out/libmkcore-fuzz.a" "${objs[@]}"

declare -A libs=([names]="" [option_values]="" [settings]="" [machine_parsers]="" [sha256sums]="-lcrypto"
                 [archive_paths]="-larchive" [oci_config]="" [guest_systemd]="" [varlink]="" [oci_manifest]="" [subid]="" [criu_rpc]="" [os_release]="")
# settings: 64 KiB+1, security.md B-50
declare -A max_len=([names]=512 [option_values]=4096 [settings]=65537 [machine_parsers]=65536 [sha256sums]=65536
                    [archive_paths]=1024 [oci_config]=65536 [guest_systemd]=4096 [varlink]=8192
                    [oci_manifest]=65536 [subid]=65536 [criu_rpc]=65536 [os_release]=65536)

status=0
for name in ${FUZZ_TARGETS:-names option_values settings machine_parsers sha256sums archive_paths oci_config guest_systemd varlink oci_manifest subid criu_rpc os_release}; do
    bin="$out/fuzz_$name"
    # shellcheck disable=SC2086
    "$cxx" "${flags[@]}" -fsanitize=fuzzer "$here/fuzz_$name.cpp" "$out/libmkcore-fuzz.a" ${libs[$name]} -o "$bin"

    work="$out/$name"
    mkdir -p "$work/corpus"
    cp -n "$here/corpus/$name/"* "$work/corpus/" 2>/dev/null || true
    echo "== fuzz_$name for ${seconds}s"
    if ! (cd "$work" && "$bin" -max_total_time="$seconds" -max_len="${max_len[$name]}" -timeout=10 \
            -rss_limit_mb=2048 -print_final_stats=1 corpus 2>"$work/log"); then
        echo "fuzz_$name FAILED; see $work/log and $work/crash-*" >&2
        tail -n 40 "$work/log" >&2
        status=1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$work/log" || true
done
exit $status
