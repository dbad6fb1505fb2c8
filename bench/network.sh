#!/bin/bash
# Start-to-exit latency of /bin/true with a veth: spawn vs systemd-nspawn vs a bare floor, side by
# side in one hyperfine run; prints medians and ratios. Runs entirely inside a private network
# namespace (re-executes itself under `unshare --net`): no link, address or nftables rule of the
# real host is touched.
#   bench/network.sh [BUILD_DIR]   (root; needs hyperfine, systemd-container, busybox-static, iproute2)
#   RUNS=N (default 100); PAUSE=1 sleeps 50 ms before each run: back to back, every start also waits
#   for the kernel to finish destroying the previous run's namespace (rtnl_lock), which inflates
#   all veth rows.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${MK_BENCH_NETNS:-}" ]; then
    exec env MK_BENCH_NETNS=1 unshare --net "$0" "$@"
fi
ip link set lo up
build=$(cd "${1:-$here/../build}" && pwd)
spawn=$build/src/spawn/spawn
runs=${RUNS:-100}
work=$(mktemp -d /tmp/mk-bench-net.XXXXXX)
trap 'rm -rf --one-file-system "$work"' EXIT
"$here/../tests/helpers/busybox-tree.sh" "$work/tree" >/dev/null
t=$work/tree

cmds=(
  "$spawn -q -M b --network-veth -D $t /bin/true"
  "env MACHKIT_NETWORK_AUTO=no $spawn -q -M c --network-veth -D $t /bin/true"
  "$spawn -q -M d --private-network -D $t /bin/true"
  "systemd-nspawn --register=no --keep-unit --network-veth -q -M n -D $t /bin/true"
  "unshare --net sh -c 'ip link add vtp0 type veth peer name vtp1'"
  "unshare --fork --pid --mount --uts --ipc --net --mount-proc chroot $t /bin/true"
)
names=(spawn-veth spawn-veth-bare spawn-private-network nspawn-veth floor-veth floor-unshare)

pause=()
[ -n "${PAUSE:-}" ] && pause=(--prepare "sleep 0.05")
hyperfine -N -w 10 -r "$runs" "${pause[@]}" --export-json "$work/net.json" "${cmds[@]}" >/dev/null 2>&1 || \
hyperfine -N -w 10 -r "$runs" "${pause[@]}" --export-json "$work/net.json" "${cmds[@]}" 2>&1 | grep -v "^ " >&2

python3 - "$work/net.json" "${names[@]}" <<'PY'
import json, statistics, sys
data = json.load(open(sys.argv[1]))["results"]
names = sys.argv[2:]
med = {n: statistics.median(r["times"]) * 1e3 for n, r in zip(names, data)}
notes = {
    "spawn-veth": "--network-veth: addresses, routes, NAT entries",
    "spawn-veth-bare": "--network-veth, MACHKIT_NETWORK_AUTO=no (via env)",
    "spawn-private-network": "--private-network (lo only)",
    "nspawn-veth": "systemd-nspawn --network-veth",
    "floor-veth": "unshare --net + ip link add veth",
    "floor-unshare": "unshare (5 namespaces) + chroot /bin/true",
}
print("start-to-exit of /bin/true, median of %d runs (ms):" % len(data[0]["times"]))
for n in names:
    print("  %-22s %7.2f ms   %s" % (n, med[n], notes[n]))
print("ratios:")
print("  nspawn-veth / spawn-veth        %6.1fx" % (med["nspawn-veth"] / med["spawn-veth"]))
print("  spawn-veth / floor-veth         %6.2fx" % (med["spawn-veth"] / med["floor-veth"]))
print("  spawn-veth - spawn-private-net  %+6.2f ms (the network's own cost)" % (med["spawn-veth"] - med["spawn-private-network"]))
PY
nft list tables 2>/dev/null | grep -q machkit && sleep 3  # let machkit-nft collect the table
exit 0
