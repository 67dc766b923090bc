#!/bin/sh
# A tape library's medium changer through `pbio changer`: status (slots,
# drives, barcodes), a load of one cartridge into an empty drive, the
# refusal to load a drive that holds a cartridge (exit 2, the drive named,
# nothing moved), inventory (the loaded cartridge's label read through the
# drive), and the unload back to the cartridge's slot. Cartridges are moved
# but nothing is written to them.
#
#   PBIO_CHANGER=/dev/sg5 hw-tests/changer.sh
#
# Environment:
#   PBIO_CHANGER        the changer's SCSI generic node (`lsscsi -g`: the
#                       "mediumx" line), required; vlib:DIR[,...] rehearses
#                       the script on the emulated library
#   PBIO_CHANGER_SLOT   the slot to load (default: the first full one)
#   PBIO_CHANGER_DRIVE  the drive to load it into (default: the first empty one)
#   PBIO_CHANGER_DEV    that drive's tape node (default: what pbio matched
#                       by serial number; without one, inventory reads no label)
#   PBIO, PBIO_WORK     as in lib.sh
hw_suite="changer"
. "$(dirname "$0")/lib.sh"
if [ -z "${PBIO_CHANGER:-}" ]; then
    echo "$0: refusing to run: set PBIO_CHANGER to the library's changer (/dev/sgN, see lsscsi -g), or vlib:DIR,size=N to rehearse on the emulated library" >&2
    exit 2
fi
refuse_ci
work_init
C=$PBIO_CHANGER

# status: counts, and the first full slot and empty drive.
run status.log "$PBIO" changer status --changer "$C"
if [ "$rc" != 0 ]; then
    fail status "exit $rc"
    show_log
    finish
fi
# After creation, a vlib's options are no longer accepted: the name alone.
case $C in vlib:*) C=${C%%,*} ;; esac
head=$(head -n1 "$hw_log")
slots=$(grep -c '^\(slot\|mail\) ' "$hw_log")
drives=$(grep -c '^drive ' "$hw_log")
if [ "$slots" -gt 0 ] && [ "$drives" -gt 0 ]; then
    pass status "$head"
else
    fail status "no slots or no drives: $head"
    finish
fi
slot=${PBIO_CHANGER_SLOT:-$(awk '$1 == "slot" && $3 != "empty" { print $2; exit }' "$hw_log")}
drive=${PBIO_CHANGER_DRIVE:-$(awk '$1 == "drive" && $3 == "empty" { print $2; exit }' "$hw_log")}
if [ -z "$slot" ] || [ -z "$drive" ]; then
    skip load "needs a full slot and an empty drive (slot '${slot}', drive '${drive}')"
    finish
fi
barcode=$(awk -v s="$slot" '$1 == "slot" && $2 == s { print $3; exit }' "$hw_log")
other=$(awk -v s="$slot" '$1 == "slot" && $2 != s && $3 != "empty" { print $2; exit }' "$hw_log")

# load
run load.log "$PBIO" changer load "$slot" "$drive" --changer "$C"
if [ "$rc" != 0 ]; then
    fail load "slot $slot -> drive $drive: exit $rc"
    show_log
    finish
fi
load_secs=$secs
run status-loaded.log "$PBIO" changer status --changer "$C"
line=$(awk -v d="$drive" '$1 == "drive" && $2 == d' "$hw_log")
case $line in
*"$barcode"*) pass load "slot $slot -> drive $drive in ${load_secs}s: $line" ;;
*) fail load "drive $drive after the load: $line (expected $barcode)" ;;
esac
dev=${PBIO_CHANGER_DEV:-$(echo "$line" | sed -n 's/.*--dev \([^ ]*\).*/\1/p')}

# A full drive is refused, named, and nothing moves.
if [ -n "$other" ]; then
    run refuse.log "$PBIO" changer load "$other" "$drive" --changer "$C"
    if [ "$rc" = 2 ] && grep -q "drive $drive already holds" "$hw_log"; then
        pass full-drive "loading slot $other into drive $drive refused: $(grep pbio "$hw_log" | head -n1)"
    else
        fail full-drive "exit $rc: $(head -n2 "$hw_log" | tr '\n' ' ')"
    fi
else
    skip full-drive "no second full slot"
fi

# inventory: the loaded cartridge's label, read through its drive.
if [ -n "$dev" ]; then
    run inventory.log "$PBIO" changer inventory --changer "$C" --dev "$dev"
else
    run inventory.log "$PBIO" changer inventory --changer "$C"
fi
line=$(awk -v d="$drive" '$1 == "drive" && $2 == d' "$hw_log")
if [ "$rc" != 0 ]; then
    fail inventory "exit $rc"
    show_log
elif [ -z "$dev" ]; then
    skip inventory.label "drive $drive's tape node unknown (set PBIO_CHANGER_DEV): $line"
else
    case $line in
    *"set "* | *blank* | *"no pbio label"*) pass inventory "in ${secs}s; drive $drive: $line" ;;
    *) fail inventory "drive $drive's cartridge not read: $line" ;;
    esac
fi

# unload: back to the slot it came from. A real drive must eject the
# cartridge first (pbio does not yet send the drive's UNLOAD itself).
case $C in
vlib:*) ;;
*) [ -n "$dev" ] && command -v mt >/dev/null 2>&1 && mt -f "$dev" offline ;;
esac
run unload.log "$PBIO" changer unload "$drive" --changer "$C"
if [ "$rc" != 0 ]; then
    fail unload "drive $drive: exit $rc"
    show_log
    finish
fi
unload_secs=$secs
run status-after.log "$PBIO" changer status --changer "$C"
line=$(awk -v s="$slot" '$1 == "slot" && $2 == s' "$hw_log")
case $line in
*"$barcode"*) pass unload "drive $drive -> slot $slot in ${unload_secs}s: $line" ;;
*) fail unload "slot $slot after the unload: $line (expected $barcode)" ;;
esac
finish
