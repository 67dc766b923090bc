#!/usr/bin/env bash
# The standard pbio test bed: loop devices with direct I/O over files.
#
#   scripts/testbed.sh up       create (or find) the devices; prints their paths, one per line
#   scripts/testbed.sh down     detach and remove everything (idempotent)
#   scripts/testbed.sh status   print the attached devices, if any
#
#   scripts/testbed.sh nbd-up      start two NBD hosts, each in its own network
#                                  namespace behind a veth shaped by tc tbf on both
#                                  ends: "lan" (1gbit) and "wan" (40mbit, deep
#                                  queue); prints their URLs for `pbio --dev`:
#                                    nbd://10.77.0.2:10809/lan
#                                    nbd://10.77.0.6:10809/wan
#   scripts/testbed.sh nbd-down    stop them and remove namespaces, links and
#                                  backing files (idempotent; `down` does it too)
#   scripts/testbed.sh nbd-status  print the URLs of the NBD hosts that answer
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
#                         (also for the NBD hosts' backing files)
#   PBIO_TESTBED_NBD_SERVER  qemu-nbd (default) or nbdkit (its file plugin)
#   PBIO_TESTBED_NBD_SIZE    size of each NBD export (default 1G)
#   PBIO_TESTBED_LAN_SHAPE   tbf parameters of the lan site
#                            (default "rate 1gbit burst 512kb latency 10ms")
#   PBIO_TESTBED_WAN_SHAPE   tbf parameters of the wan site
#                            (default "rate 40mbit burst 32kb latency 200ms";
#                            tc here has no netem: tbf adds no delay of its
#                            own, the deep queue adds up to 200 ms under load)
#
# NBD hosts: namespaces pbio-testbed-lan / -wan, host veth ends pbtb-lan /
# pbtb-wan (10.77.0.1/30, 10.77.0.5/30; the tests' sites, tests/common/netns.rs,
# use 10.77.1.0 and up), backing files nbd-lan.img / nbd-wan.img in the same
# directory, served with --cache=none --aio=native where it takes O_DIRECT.
# Needs root, iproute2 and qemu-utils (or nbdkit). `nbd-up` is idempotent: a
# site whose server answers is kept (shape updated), others are rebuilt
# (to switch PBIO_TESTBED_NBD_SERVER, run nbd-down first).
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
    nbd_down
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


# --- NBD hosts ---------------------------------------------------------------

nbd_server=${PBIO_TESTBED_NBD_SERVER:-qemu-nbd}
nbd_size=${PBIO_TESTBED_NBD_SIZE:-1G}
lan_shape=${PBIO_TESTBED_LAN_SHAPE:-rate 1gbit burst 512kb latency 10ms}
wan_shape=${PBIO_TESTBED_WAN_SHAPE:-rate 40mbit burst 32kb latency 200ms}
nbd_port=10809

# site name -> "namespace host-if ns-if host-addr ns-addr"
site_info() {
    case "$1" in
        lan) echo "pbio-testbed-lan pbtb-lan pbtb-lan-n 10.77.0.1 10.77.0.2" ;;
        wan) echo "pbio-testbed-wan pbtb-wan pbtb-wan-n 10.77.0.5 10.77.0.6" ;;
    esac
}

answers() { # addr: does an NBD server greet on it?
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$nbd_port && head -c 8 <&3" 2>/dev/null | grep -q NBDMAGIC
}

server_pid() { # site: pid of its server if it runs in the site's namespace
    local ns pid
    read -r ns _ <<<"$(site_info "$1")"
    pid=$(cat "$dir/nbd-$1.pid" 2>/dev/null) || return 1
    ip netns pids "$ns" 2>/dev/null | grep -qx "$pid" && echo "$pid"
}

site_down() {
    local site=$1 ns hif pid p
    read -r ns hif _ <<<"$(site_info "$site")"
    if ip netns list 2>/dev/null | grep -q "^$ns\b"; then
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    fi
    if ip link del "$hif" 2>/dev/null; then say "deleted link $hif"; fi
    if ip netns del "$ns" 2>/dev/null; then say "deleted namespace $ns"; fi
    rm -f "$dir/nbd-$site.pid" "$dir/nbd-$site.log"
}

site_shape() {
    local site=$1 shape=$2 ns hif nif
    read -r ns hif nif _ <<<"$(site_info "$site")"
    # shellcheck disable=SC2086 # the shape is tc words
    tc qdisc replace dev "$hif" root tbf $shape
    # shellcheck disable=SC2086
    tc -n "$ns" qdisc replace dev "$nif" root tbf $shape
}

site_up() {
    local site=$1 shape=$2 ns hif nif haddr naddr f bytes cache=()
    read -r ns hif nif haddr naddr <<<"$(site_info "$site")"
    bytes=$(to_bytes "$nbd_size")
    f="$dir/nbd-$site.img"
    if [ -n "$(server_pid "$site")" ] && answers "$naddr" \
        && [ "$(stat -c %s "$f" 2>/dev/null)" = "$bytes" ]; then
        site_shape "$site" "$shape"
        echo "nbd://$naddr:$nbd_port/$site"
        return
    fi
    site_down "$site"
    if [ ! -f "$f" ] || [ "$(stat -c %s "$f")" != "$bytes" ]; then
        rm -f "$f"
        if [ "$fill" = 1 ]; then
            say "writing $f ($nbd_size) once"
            dd if=/dev/zero of="$f.part" bs=4M count=$((bytes / 4194304)) oflag=direct status=none
            truncate -s "$bytes" "$f.part"
            mv "$f.part" "$f"
        else
            truncate -s "$bytes" "$f"
        fi
    fi
    ip netns add "$ns"
    ip link add "$hif" type veth peer name "$nif" netns "$ns"
    ip addr add "$haddr/30" dev "$hif"
    ip link set "$hif" up
    ip -n "$ns" addr add "$naddr/30" dev "$nif"
    ip -n "$ns" link set "$nif" up
    ip -n "$ns" link set lo up
    site_shape "$site" "$shape"
    # Both servers detach once they listen, leaving their pid in the file.
    case "$nbd_server" in
        qemu-nbd)
            # O_DIRECT (--cache=none) where the filesystem has it (not tmpfs
            # before Linux 6.6): the server then adds no page cache of its own.
            if dd if="$f" of=/dev/null bs=4096 count=1 iflag=direct status=none 2>/dev/null; then
                cache=(--cache=none --aio=native)
            fi
            ip netns exec "$ns" qemu-nbd --fork --pid-file="$dir/nbd-$site.pid" \
                --persistent --shared=8 -f raw "${cache[@]}" --export-name="$site" \
                --bind "$naddr" --port "$nbd_port" "$f" 2>"$dir/nbd-$site.log" \
                || die "qemu-nbd for $site failed: $(cat "$dir/nbd-$site.log")"
            ;;
        nbdkit)
            ip netns exec "$ns" nbdkit -P "$dir/nbd-$site.pid" --exportname "$site" \
                -i "$naddr" -p "$nbd_port" --filter=exportname file "$f" \
                exportname="$site" exportname-strict=true 2>"$dir/nbd-$site.log" \
                || die "nbdkit for $site failed: $(cat "$dir/nbd-$site.log")"
            ;;
        *) die "PBIO_TESTBED_NBD_SERVER: qemu-nbd or nbdkit, not '$nbd_server'" ;;
    esac
    local i
    for i in $(seq 50); do
        answers "$naddr" && break
        [ "$i" = 50 ] && die "$site: no NBD server on $naddr:$nbd_port: $(cat "$dir/nbd-$site.log")"
        sleep 0.1
    done
    echo "nbd://$naddr:$nbd_port/$site"
}

nbd_up() {
    [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
    if ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
        die "ip/tc are missing (apt-get install iproute2)"
    fi
    command -v "$nbd_server" >/dev/null \
        || die "$nbd_server is missing (apt-get install $([ "$nbd_server" = nbdkit ] && echo nbdkit || echo qemu-utils))"
    mkdir -p "$dir"
    site_up lan "$lan_shape"
    site_up wan "$wan_shape"
}

nbd_down() {
    local site
    for site in lan wan; do
        site_down "$site"
        rm -f "$dir/nbd-$site.img" "$dir/nbd-$site.img.part"
    done
}

nbd_status() {
    local site naddr
    for site in lan wan; do
        read -r _ _ _ _ naddr <<<"$(site_info "$site")"
        if answers "$naddr"; then echo "nbd://$naddr:$nbd_port/$site"; fi
    done
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    nbd-up) nbd_up ;;
    nbd-down) nbd_down ;;
    nbd-status) nbd_status ;;
    *) echo "usage: $0 up|down|status|nbd-up|nbd-down|nbd-status" >&2; exit 2 ;;
esac
