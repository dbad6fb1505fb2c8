#!/bin/bash
# The whole test suite: unit tests (plain and with ASan/UBSan), bounded fuzzing, and the root tiers
# (integration, bus, conformance) with pytest. Exits non-zero on the first failing tier.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== build (warnings are errors)"
[ -f build/build.ninja ] || meson setup build >/dev/null
meson configure build -Dwerror=true >/dev/null
ninja -C build

echo "== unit tests"
build/tests/unit/unit-tests --gtest_brief=1
build/tests/unit/bus-unit-tests --gtest_brief=1
build/tests/unit/machctl-unit-tests --gtest_brief=1
build/tests/unit/varlink-unit-tests --gtest_brief=1
build/tests/unit/oci-runtime-unit-tests --gtest_brief=1

echo "== unit tests under AddressSanitizer and UndefinedBehaviorSanitizer"
[ -f build-asan/build.ninja ] || meson setup build-asan -Db_sanitize=address,undefined -Dstatic_spawn=false \
    -Dcpp_args=-fno-sanitize-recover=all >/dev/null
ninja -C build-asan tests/unit/unit-tests tests/unit/bus-unit-tests tests/unit/machctl-unit-tests tests/unit/varlink-unit-tests tests/unit/oci-runtime-unit-tests
for t in unit-tests bus-unit-tests machctl-unit-tests varlink-unit-tests oci-runtime-unit-tests; do
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        build-asan/tests/unit/$t --gtest_brief=1
done

if [ -x tests/fuzz/run.sh ]; then
    echo "== fuzzing (bounded)"
    FUZZ_SECONDS=${FUZZ_SECONDS:-15} tests/fuzz/run.sh build-fuzz
fi

echo "== integration, bus and conformance tests (root)"
MK_BUILD_DIR=$(pwd)/build /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/
