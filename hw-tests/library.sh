#!/bin/sh
# A set through a tape library's real drivers: the changer (sg, SMC
# commands through SG_IO) moves the cartridges, the drives (st) write and
# read them.
#
# 0. With the cartridges' size given (`--changer C,size=S`, S so small
#    that the set cannot fit): refused before writing, with the numbers.
# 1. Spanning: `pbio backup --changer` of PBIO_LIBRARY_SIZE over every
#    drive whose tape node pbio matched, onto more cartridges than there
#    are drives, then `pbio restore --changer --drive N --set ID` with ONE
#    drive, compared byte for byte with the source; afterwards every drive
#    is empty again. pbio loads the cartridges through the drives itself.
#    No `,size=`: where the drives report no capacity (density code 0, as
#    tgt's do) pbio says so and spans at each cartridge's end of medium.
# 2. Two cartridges loaded with `pbio changer load`, a set of
#    PBIO_LIBRARY_FIT_SIZE written through both drives (--dev), the
#    cartridges ejected (mt offline) and unloaded; then `pbio restore
#    --changer` with ONE drive: pbio loads each cartridge of the set into
#    it in turn (and reads the labels of the others; the cartridges of
#    part 1 still hold that set's other volumes: --set chooses), and the restore is
#    compared byte for byte with the source; afterwards every drive is
#    empty again. Before the unload, `pbio verify --dev` through the drives
#    that wrote the set checks every record's payload (verify-same-drive).
#
#   PBIO_CHANGER=/dev/sg5 hw-tests/library.sh      ERASES the cartridges of the library
#
# Environment:
#   PBIO_CHANGER            the changer's SCSI generic node (lsscsi -g: "mediumx"), required
#   PBIO_LIBRARY_SIZE [96M] the spanning set: more than the drives' cartridges hold
#   PBIO_LIBRARY_FIT_SIZE [24M]  the set of part 2: what two cartridges hold
#   PBIO_LIBRARY_CARTRIDGE_SIZE  the cartridges' native capacity (e.g. 12T), for
#                           drives that report none (density code 0, as tgt's and
#                           scsi_debug's do): part 2's --dev NODE,size=N
#   PBIO_LIBRARY_TAPE_BLOCK [1M]  backup --tape-block (1M: records of 528384
#                           bytes, read with 1 MiB requests: the case tgt's drives
#                           cut short, hw-tests/README.md item 7)
#   PBIO, PBIO_WORK         as in lib.sh
hw_suite="library"
. "$(dirname "$0")/lib.sh"
if [ -z "${PBIO_CHANGER:-}" ]; then
    echo "$0: refusing to run: set PBIO_CHANGER to the library's changer (/dev/sgN, see lsscsi -g); its cartridges are overwritten" >&2
    exit 2
fi
refuse_ci
for t in cmp find sort awk head mt; do require_tool "$t"; done
work_init
C=$PBIO_CHANGER
span_size=${PBIO_LIBRARY_SIZE:-96M}
fit_size=${PBIO_LIBRARY_FIT_SIZE:-24M}
tape_block=${PBIO_LIBRARY_TAPE_BLOCK:-1M}
# set_of LOG: the set id of the backup whose --json output LOG holds.
set_of() { grep -o '"set_id":"[0-9a-f]*"' "$1" | tail -n1 | cut -d'"' -f4; }

# status: the drives pbio matched to tape nodes ("--dev NODE" on the line).
status() {
    run "$1" "$PBIO" changer status --changer "$C"
    if [ "$rc" != 0 ]; then
        fail "$2" "pbio changer status exited $rc"
        show_log
        finish
    fi
}
status status.log status
mapped=$(awk '$1 == "drive" && /--dev / { print $2 }' "$hw_log")
nmapped=$(echo "$mapped" | grep -c .)
ndrives=$(grep -c '^drive ' "$hw_log")
nfull=$(awk '$1 == "slot" && $3 != "empty"' "$hw_log" | grep -c .)
if [ "$nmapped" -ge 2 ] && [ "$nfull" -ge 2 ]; then
    pass status "$ndrives drives ($nmapped matched to tape nodes by serial), $nfull cartridges: $(head -n1 "$hw_log")"
else
    fail status "needs 2 drives matched to tape nodes and 2 cartridges: $nmapped of $ndrives drives matched, $nfull cartridges"
    show_log
    finish
fi
d0=$(echo "$mapped" | sed -n 1p)
d1=$(echo "$mapped" | sed -n 2p)
node() { awk -v d="$1" '$1 == "drive" && $2 == d' "$hw_dir/status.log" | sed -n 's/.*--dev \([^ ]*\).*/\1/p'; }
dev0=$(node "$d0")
dev1=$(node "$d1")

# A cartridge left in a drive by an earlier run goes back to its slot.
for d in $(awk '$1 == "drive" && $3 != "empty" { print $2 }' "$hw_dir/status.log"); do
    n=$(node "$d")
    [ -n "$n" ] && mt -f "$n" offline 2>/dev/null
    run unload-left.log "$PBIO" changer unload "$d" --changer "$C"
done

# tree DIR SIZE: files of 4 MiB (the last one the rest) and a few small ones.
tree() {
    mkdir -p "$1/small"
    left=$(size_bytes "$2")
    i=0
    while [ "$left" -gt 0 ]; do
        n=$((left < 4194304 ? left : 4194304))
        head -c "$n" /dev/urandom >"$1/f$i.bin"
        left=$((left - n))
        i=$((i + 1))
    done
    i=0
    while [ $i -lt 16 ]; do
        head -c $((i * 1021 + 7)) /dev/urandom >"$1/small/s$i"
        i=$((i + 1))
    done
}

# identical NAME SRC GOT: every file of SRC byte-identical in GOT.
identical() {
    (cd "$2" && find . -type f) | sed 's|^\./||' | sort >"$hw_dir/$1.files"
    nfiles=$(grep -c . "$hw_dir/$1.files")
    differ=0
    : >"$hw_dir/$1.cmp"
    while IFS= read -r f; do
        cmp "$2/$f" "$3/$f" >>"$hw_dir/$1.cmp" 2>&1 || differ=$((differ + 1))
    done <"$hw_dir/$1.files"
    if [ "$differ" = 0 ] && [ "$nfiles" -gt 0 ]; then
        pass "$1" "all $nfiles files byte-identical (cmp)"
    else
        fail "$1" "$differ of $nfiles files differ from the source"
        show_log "$hw_dir/$1.cmp" 5
    fi
}

# drives_empty NAME: after a restore every drive is empty again.
drives_empty() {
    status "$1.status" "$1"
    left=$(awk '$1 == "drive" && $3 != "empty"' "$hw_log")
    if [ -z "$left" ]; then
        pass "$1" "every drive empty after the restore"
    else
        fail "$1" "left in a drive: $left"
    fi
}

# 0. A set larger than the cartridges of the size given: refused, nothing written.
src=$hw_dir/span-src
tree "$src" "$span_size"
run too-large.log "$PBIO" backup "$src" --changer "$C,size=4M" --force --tape-block "$tape_block"
if [ "$rc" = 2 ] && grep -q "scratch cartridges hold together" "$hw_log"; then
    pass too-large "$span_size on cartridges of 4M (--changer $C,size=4M): refused before writing: $(grep pbio: "$hw_log" | head -n1 | cut -c1-160)"
else
    fail too-large "$span_size on cartridges of 4M: exit $rc, expected 2 and the numbers"
    show_log
fi

# 1. Spanning over the library.
run span-backup.json "$PBIO" backup "$src" --changer "$C" --force --json --tape-block "$tape_block"
if [ "$rc" != 0 ]; then
    fail span "pbio backup --changer exited $rc"
    show_log
else
    used=$(grep -o '"cartridges":\[[^]]*\]' "$hw_log" | tail -n1 | tr -cd ',' | wc -c)
    used=$((used + 1))
    if [ "$used" -gt "$nmapped" ]; then
        pass span "$span_size on $used cartridges through $nmapped drives in ${secs}s"
    else
        fail span "$used cartridges for $nmapped drives: nothing spanned (PBIO_LIBRARY_SIZE=$span_size too small?)"
    fi
    span_set=$(set_of "$hw_log")
    run span-restore.log "$PBIO" restore --changer "$C" --drive "$d0" --set "$span_set" --to "$hw_dir/span-restore"
    if [ "$rc" = 0 ]; then
        pass span-restore "with drive $d0 alone in ${secs}s"
        identical span-identical "$src" "$hw_dir/span-restore/$(basename "$src")"
    else
        fail span-restore "pbio restore --changer --drive $d0 exited $rc"
        show_log
    fi
    drives_empty span-drives-empty
fi
rm -rf "$src" "$hw_dir/span-restore"

# 2. Two cartridges loaded by hand, written through both drives, restored
# through one drive that pbio loads itself.
status status2.log status
s0=$(awk '$1 == "slot" && $3 != "empty" { print $2 }' "$hw_log" | sed -n 1p)
s1=$(awk '$1 == "slot" && $3 != "empty" { print $2 }' "$hw_log" | sed -n 2p)
for pair in "$s0:$d0" "$s1:$d1"; do
    run "load-${pair%:*}.log" "$PBIO" changer load "${pair%:*}" "${pair#*:}" --changer "$C"
    if [ "$rc" != 0 ]; then
        fail load "slot ${pair%:*} -> drive ${pair#*:}: exit $rc"
        show_log
        finish
    fi
done
pass load "slot $s0 -> drive $d0 ($dev0), slot $s1 -> drive $d1 ($dev1)"
src=$hw_dir/fit-src
tree "$src" "$fit_size"
size=${PBIO_LIBRARY_CARTRIDGE_SIZE:+,size=$PBIO_LIBRARY_CARTRIDGE_SIZE}
run backup.json "$PBIO" backup "$src" --dev "$dev0$size" --dev "$dev1$size" --force --json --tape-block "$tape_block"
if [ "$rc" != 0 ]; then
    fail backup "pbio backup --dev $dev0 --dev $dev1 exited $rc"
    show_log
    finish
fi
fit_set=$(set_of "$hw_log")
pass backup "$fit_size through $dev0 and $dev1 in ${secs}s ($(speed_note))"
# Read back in the drive that wrote it, before any move: a failure here
# is the tape path's, not the changer's.
run list.log "$PBIO" list --dev "$dev1"
if [ "$rc" = 0 ]; then
    pass list-same-drive "pbio list --dev $dev1 read the label and catalog it wrote"
else
    fail list-same-drive "pbio list --dev $dev1 exited $rc: $(grep pbio: "$hw_log" | head -n1)"
fi
# Every record's payload, read back with requests of the drive's block
# limit (larger than the records: item 7 of hw-tests/README.md).
run verify.log "$PBIO" verify --dev "$dev0" --dev "$dev1"
if [ "$rc" = 0 ]; then
    pass verify-same-drive "pbio verify --dev $dev0 --dev $dev1: every record of --tape-block $tape_block read back whole ($(grep -o 'verified [^,]*, [^,]* in [0-9]* records' "$hw_log" | head -n1))"
else
    fail verify-same-drive "pbio verify --dev $dev0 --dev $dev1 exited $rc: $(grep -E 'pbio:|error:' "$hw_log" | head -n1)"
    show_log
fi
for pair in "$d0:$dev0" "$d1:$dev1"; do
    mt -f "${pair#*:}" offline || note "mt -f ${pair#*:} offline failed"
    run "unload-${pair%:*}.log" "$PBIO" changer unload "${pair%:*}" --changer "$C"
    if [ "$rc" != 0 ]; then
        fail unload "drive ${pair%:*}: exit $rc"
        show_log
        finish
    fi
done
pass unload "drives $d0 and $d1 back to their slots"
run restore.log "$PBIO" restore --changer "$C" --drive "$d0" --set "$fit_set" --to "$hw_dir/restore"
if [ "$rc" = 0 ]; then
    pass restore-one-drive "pbio loaded the set's 2 cartridges into drive $d0 in turn: exit 0 in ${secs}s"
    identical restore-identical "$src" "$hw_dir/restore/$(basename "$src")"
else
    fail restore-one-drive "pbio restore --changer $C --drive $d0 exited $rc"
    show_log
fi
drives_empty drives-empty
finish
