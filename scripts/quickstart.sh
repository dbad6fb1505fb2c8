#!/bin/bash
# The two Quick start commands of README.md, for a fresh Debian 12 machine, as root:
#   scripts/quickstart.sh run    install dependencies, build, boot the default Debian tree
#   scripts/quickstart.sh test   install dependencies, build, run the whole test suite
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

[ "$(id -u)" = 0 ] || { echo "quickstart: run as root (spawn creates namespaces and mounts)" >&2; exit 1; }

install_deps() {
    mapfile -t pkgs < <(grep -vE '^\s*(#|$)' scripts/deps.txt)
    missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "quickstart: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
    fi
}

build() {  # build DIR [meson options...]
    local dir=$1; shift
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" "$@" >/dev/null
    else
        meson configure "$dir" "$@" >/dev/null
    fi
    ninja -C "$dir"
}

case "${1:-}" in
run)
    install_deps
    build build -Dwerror=true
    # The default Debian tree: made once with debootstrap (cached by recipe), then copied into the
    # machine pool, so that the cached fixture stays pristine for the tests.
    if [ ! -d /var/lib/machines/debian ]; then
        fixture=$(tests/helpers/debian-fixture.sh)
        mkdir -p /var/lib/machines
        cp -a "$fixture" /var/lib/machines/.#debian.tmp
        rm -f /var/lib/machines/.#debian.tmp/.complete
        mv /var/lib/machines/.#debian.tmp /var/lib/machines/debian
    fi
    echo "quickstart: booting /var/lib/machines/debian (log in as root, no password; poweroff to leave, or press ^] three times within a second)"
    exec build/src/spawn/spawn -b -D /var/lib/machines/debian -M debian
    ;;
test)
    install_deps
    exec scripts/run-tests.sh
    ;;
*)
    echo "usage: $0 run|test" >&2
    exit 2
    ;;
esac
