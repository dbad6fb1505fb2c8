#!/bin/bash
# Builds a small busybox-static tree at $1 for fast container tests: /bin/busybox with its applets
# as symlinks, an /etc/passwd and /etc/group with root and an unprivileged user, and os-release.
set -euo pipefail
dst=${1:?usage: busybox-tree.sh DIR}
bb=$(command -v busybox || true)
[ -n "$bb" ] && file -L "$bb" 2>/dev/null | grep -q static || bb=/bin/busybox
[ -x "$bb" ] || { echo "busybox-tree: busybox-static is not installed (apt-get install busybox-static)" >&2; exit 1; }
mkdir -p "$dst"/{bin,sbin,etc,proc,sys,dev,run,tmp,root,home/user,usr/bin,usr/sbin,var}
cp "$bb" "$dst/bin/busybox"
for a in $("$dst/bin/busybox" --list); do
    case "$a" in busybox) continue ;; esac
    ln -sf busybox "$dst/bin/$a"
done
cat >"$dst/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/:/bin/false
P
cat >"$dst/etc/group" <<'G'
root:x:0:
tty:x:5:
users:x:100:user
user:x:1000:
nogroup:x:65534:
G
printf 'ID=busybox\nNAME=BusyBox\nPRETTY_NAME="BusyBox test tree"\n' >"$dst/etc/os-release"
: >"$dst/etc/machine-id"
chown 1000:1000 "$dst/home/user"
