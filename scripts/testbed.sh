#!/usr/bin/env bash
# The standard pbio test bed: loop devices with direct I/O over files.
#
#   scripts/testbed.sh up       create (or find) the devices; prints their paths, one per line
#   scripts/testbed.sh down     detach and remove everything (idempotent)
#   scripts/testbed.sh status   print the attached devices, if any
#
# Environment:
#   PBIO_TESTBED_DIR      where the backing files live (default /var/tmp/pbio-testbed)
#   PBIO_TESTBED_DEVICES  how many devices (default 4)
#   PBIO_TESTBED_SIZE     size of each, in dd/truncate units (default 4G: the
#                         100,000-small-file tree of bench-vs-fio.sh, 3.2 GiB,
#                         must fit on one device for tar)
#   PBIO_TESTBED_FILL     1 (default): write every backing file once at `up`, so
#                         no benchmark pays the filesystem's first-write cost
#                         (unwritten extents) and others the second; 0: sparse
#
# Needs root (losetup). `up` is idempotent: devices already attached to
# the backing files are reused; a backing file of the wrong size is
# recreated. The devices are given to fio and pbio as block devices; they
# are scratch space and every benchmark destroys what they hold.
set -euo pipefail

dir=${PBIO_TESTBED_DIR:-/var/tmp/pbio-testbed}
count=${PBIO_TESTBED_DEVICES:-4}
size=${PBIO_TESTBED_SIZE:-4G}
fill=${PBIO_TESTBED_FILL:-1}

say() { echo "testbed: $*" >&2; }
die() { say "$*"; exit 2; }

to_bytes() {
    numfmt --from=iec "${1%B}" 2>/dev/null || die "bad size '$1' (use e.g. 512M, 4G)"
}

# Loop devices attached to a backing file (none, one, or more).
attached() {
    losetup -n -O NAME -j "$1" 2>/dev/null | awk '{print $1}'
}

up() {
    [ "$(id -u)" = 0 ] || die "needs root (losetup)"
    command -v losetup >/dev/null || die "losetup is missing (apt-get install util-linux)"
    [ -e /dev/loop-control ] || modprobe loop 2>/dev/null || true
    [ -e /dev/loop-control ] || die "/dev/loop-control is missing (no loop driver)"
    local bytes
    bytes=$(to_bytes "$size")
    mkdir -p "$dir"
    local avail need
    avail=$(df -B1 --output=avail "$dir" | tail -1)
    need=0
    for i in $(seq 0 $((count - 1))); do
        local f="$dir/dev$i.img"
        if [ ! -f "$f" ] || [ "$(stat -c %s "$f")" != "$bytes" ]; then
            need=$((need + bytes))
        fi
    done
    [ "$need" -lt "$avail" ] || die "$dir: need $need bytes, $avail available (set PBIO_TESTBED_SIZE or PBIO_TESTBED_DIR)"
    : >"$dir/devices.new"
    for i in $(seq 0 $((count - 1))); do
        local f="$dir/dev$i.img" dev
        if [ -f "$f" ] && [ "$(stat -c %s "$f")" != "$bytes" ]; then
            say "$f has the wrong size: recreating it"
            for d in $(attached "$f"); do losetup -d "$d"; done
            rm -f "$f"
        fi
        if [ ! -f "$f" ]; then
            if [ "$fill" = 1 ]; then
                say "writing $f ($size) once"
                dd if=/dev/zero of="$f.part" bs=4M count=$((bytes / 4194304)) oflag=direct status=none
                truncate -s "$bytes" "$f.part"
                mv "$f.part" "$f"
            else
                truncate -s "$bytes" "$f"
            fi
        fi
        dev=$(attached "$f" | head -1)
        if [ -z "$dev" ]; then
            dev=$(losetup --direct-io=on -f --show "$f")
        fi
        echo "$dev" >>"$dir/devices.new"
    done
    mv "$dir/devices.new" "$dir/devices"
    cat "$dir/devices"
}

down() {
    [ -d "$dir" ] || return 0
    local f d
    for f in "$dir"/dev*.img "$dir"/dev*.img.part; do
        [ -e "$f" ] || continue
        for d in $(attached "$f"); do
            losetup -d "$d" && say "detached $d"
        done
        rm -f "$f"
    done
    rm -f "$dir/devices" "$dir/devices.new"
    rmdir "$dir" 2>/dev/null || say "$dir is not empty: left in place"
}

status() {
    [ -d "$dir" ] || return 0
    local f
    for f in "$dir"/dev*.img; do
        [ -e "$f" ] || continue
        attached "$f"
    done
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
