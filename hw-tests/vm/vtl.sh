#!/usr/bin/env bash
# A virtual tape library on the host for the QEMU guest of hw-tests/vm/run.sh:
# tgt's user-space iSCSI target (tgtd) serving two SSC tape drives (LUN 1
# and 2) and an SMC medium changer (LUN 3: drive elements 1-3, the third
# without a drive behind it, see below; robot 4; storage slots from 1000)
# whose slots hold cartridges with barcodes (tgtimg files); QEMU's iSCSI block driver (libiscsi, from
# qemu-block-extra) passes the LUNs to the guest as SCSI devices, where
# the real st and sg drivers see a tape library. No kernel iSCSI module
# is used on either side.
#
#   hw-tests/vm/vtl.sh start DIR    start tgtd, make the library in DIR; prints
#                                   the target's iSCSI URL (iscsi://HOST:PORT/IQN);
#                                   the LUNs are URL/1, URL/2 (drives), URL/3 (changer)
#   hw-tests/vm/vtl.sh stop DIR     stop the tgtd started for DIR (its pid file)
#   hw-tests/vm/vtl.sh check        exit 0 when tgtd, tgtadm, tgtimg and
#                                   iscsi-ls are there, else name what is missing
#
# Environment:
#   PBIO_VM_VTL_PORT [3271]        the iSCSI port on 127.0.0.1
#   PBIO_VM_VTL_CONTROL [71]       tgtd's control port number (tgtadm -C), so
#                                  that another tgtd on this host is left alone
#   PBIO_VM_VTL_CARTRIDGES [6]     cartridges, one a slot, barcodes PB0001L6 ...
#   PBIO_VM_VTL_SIZE [32]          each cartridge's size in MB (tgtimg --size)
set -euo pipefail

port=${PBIO_VM_VTL_PORT:-3271}
control=${PBIO_VM_VTL_CONTROL:-71}
cartridges=${PBIO_VM_VTL_CARTRIDGES:-6}
size_mb=${PBIO_VM_VTL_SIZE:-32}
iqn=iqn.2026-12.org.pbio:vtl
drives=2
drive_first=1
# tgt cuts the last element descriptor of every READ ELEMENT STATUS answer
# by 8 bytes (usr/smc.c counts the element status page header out of the
# length it sends): with DVCID, the last drive's serial number reaches the
# initiator as its first 2 characters. A third drive element without a LUN
# behind it comes last, so that the two real drives are reported whole
# and pbio can match them to their st nodes by serial number; pbio sees it
# as a drive without a device (it never loads it: MOVE MEDIUM to it fails).
phantom=$((drive_first + drives))
transport=$((phantom + 1))
slot_first=1000

say() { echo "vtl: $*" >&2; }
die() {
    say "error: $*"
    exit 2
}
tgtadm_() { tgtadm -C "$control" --lld iscsi "$@"; }

check() {
    local missing=() t
    for t in tgtd tgtadm tgtimg; do command -v "$t" >/dev/null 2>&1 || missing+=("$t (apt-get install tgt)"); done
    command -v iscsi-ls >/dev/null 2>&1 || missing+=("iscsi-ls (apt-get install libiscsi-bin)")
    if [ "${#missing[@]}" -gt 0 ]; then
        say "missing: ${missing[*]}"
        return 2
    fi
}

stop() {
    local dir=$1 pid
    [ -f "$dir/tgtd.pid" ] || return 0
    pid=$(cat "$dir/tgtd.pid")
    if kill -0 "$pid" 2>/dev/null; then
        # tgtd ignores SIGTERM; it stops when its last target is gone.
        tgtadm_ --op delete --mode target --tid 1 --force >/dev/null 2>&1 || true
        tgtadm -C "$control" --op delete --mode system >/dev/null 2>&1 || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/tgtd.pid"
}

start() {
    local dir=$1 i t pid lus
    check || exit 2
    mkdir -p "$dir"
    # The port must be free: a tgtd already there would answer in our place.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "127.0.0.1:$port already accepts connections (another tgtd?); set PBIO_VM_VTL_PORT"
    fi
    : >"$dir/smc"
    dd if=/dev/zero of="$dir/smc" bs=1k count=1 2>/dev/null
    for i in $(seq 1 "$cartridges"); do
        t=$(printf 'PB%04dL6' "$i")
        rm -f "$dir/$t"
        tgtimg --op new --device-type tape --barcode "$t" --size "$size_mb" --type data --file "$dir/$t" >/dev/null ||
            die "tgtimg could not make cartridge $dir/$t"
    done
    # Foreground (-f) in the background: its pid is ours to stop.
    tgtd -f -C "$control" --iscsi "portal=127.0.0.1:$port" >"$dir/tgtd.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/tgtd.pid"
    for _ in $(seq 1 100); do
        tgtadm -C "$control" --op show --mode system >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || die "tgtd exited at start: $(tail -n 5 "$dir/tgtd.log")"
        sleep 0.1
    done
    {
        tgtadm_ --op new --mode target --tid 1 -T "$iqn"
        for i in $(seq 1 "$drives"); do
            tgtadm_ --mode logicalunit --op new --tid 1 --lun "$i" -b "$dir/$(printf 'PB%04dL6' "$i")" --device-type=tape
            # No cartridge in the drive until the changer loads one.
            tgtadm_ --mode logicalunit --op update --tid 1 --lun "$i" --params online=0
        done
        lus=$((drives + 1))
        tgtadm_ --mode logicalunit --op new --tid 1 --lun "$lus" -b "$dir/smc" --device-type=changer
        tgtadm_ --mode logicalunit --op update --tid 1 --lun "$lus" --params "media_home=$dir"
        tgtadm_ --mode logicalunit --op update --tid 1 --lun "$lus" --params "element_type=4,start_address=$drive_first,quantity=$((drives + 1))"
        for i in $(seq 1 "$drives"); do
            tgtadm_ --mode logicalunit --op update --tid 1 --lun "$lus" --params "element_type=4,address=$((drive_first + i - 1)),tid=1,lun=$i"
        done
        tgtadm_ --mode logicalunit --op update --tid 1 --lun "$lus" --params "element_type=1,start_address=$transport,quantity=1"
        tgtadm_ --mode logicalunit --op update --tid 1 --lun "$lus" --params "element_type=2,start_address=$slot_first,quantity=$cartridges"
        for i in $(seq 1 "$cartridges"); do
            tgtadm_ --mode logicalunit --op update --tid 1 --lun "$lus" --params "element_type=2,address=$((slot_first + i - 1)),barcode=$(printf 'PB%04dL6' "$i"),sides=1"
        done
        tgtadm_ --op bind --mode target --tid 1 -I ALL
    } >"$dir/tgtadm.log" 2>&1 || {
        stop "$dir"
        die "configuring the library with tgtadm failed: $(tail -n 3 "$dir/tgtadm.log")"
    }
    # What an initiator sees: two tape LUNs and a changer.
    local url=iscsi://127.0.0.1:$port
    iscsi-ls -s "$url" >"$dir/iscsi-ls.log" 2>&1 || {
        stop "$dir"
        die "iscsi-ls -s $url failed: $(tail -n 3 "$dir/iscsi-ls.log")"
    }
    if [ "$(grep -c 'SEQUENTIAL_ACCESS' "$dir/iscsi-ls.log")" != "$drives" ] ||
        ! grep -q 'MEDIA_CHANGER' "$dir/iscsi-ls.log"; then
        stop "$dir"
        die "the target does not list $drives tape LUNs and a changer: $(cat "$dir/iscsi-ls.log")"
    fi
    echo "$url/$iqn"
}

case ${1:-} in
    start) start "${2:?usage: $0 start DIR}" ;;
    stop) stop "${2:?usage: $0 stop DIR}" ;;
    check) check ;;
    *)
        echo "usage: $0 start DIR | stop DIR | check" >&2
        exit 2
        ;;
esac
