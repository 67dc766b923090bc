#!/bin/sh
# The tape control path through pbio's st code (not the vtape emulator):
# the drive's status (MTIOCGET), a backup onto a blank cartridge (when it
# is one) and to the tape and a file device, then, looked at from outside
# pbio (mt and hw-tests/tools/mtprobe.c, which use the kernel's own
# <sys/mtio.h>): the label and record blocks and their sizes, the
# filemarks where docs/FORMAT.md section 10 puts them, positioning to the
# catalog file with MTFSF, MTBSF and MTEOM, pbio reading the label back,
# pbio qualify's tape checks (status, block limits, throughput, variable
# blocks one per read, filemarks, MTFSF/MTFSR/MTBSF, MTEOM, rewind), and end of medium
# (early warning = full, the catalog written after it, the rest on the
# other device, every block on the tape counted by the catalog).
#
#   PBIO_TAPE=/dev/nst0 hw-tests/tape-control.sh     ERASES the cartridge
#
#   PBIO_TAPE_KEEPS_DATA [1]  0 on scsi_debug (the QEMU guest sets it): the
#                     emulated tape keeps each block's length and first 4
#                     bytes only, so nothing pbio reads back from it can pass
#                     a CRC; checks that need the payload expect that
#                     failure instead. On a real drive (1) pbio list must
#                     read the catalog; tape.sh has the payload round trips.
#   PBIO_TAPE_BLANK [0]  1: the cartridge has never been written (a new one;
#                     the guest's at boot): pbio must write a set on it
#   PBIO_TAPE_SIZE    the cartridge's capacity (size=), for a drive whose
#                     density code pbio does not know (scsi_debug reports 0;
#                     the guest sets 1G)
#   PBIO_TAPE_EOM [0]  1: run the end-of-medium check: 128 MiB
#                     (PBIO_TAPE_EOM_MB), half planned on the tape, in 8 KiB
#                     blocks fill scsi_debug's
#                     10000 objects in seconds (the guest sets it). A real
#                     cartridge needs a tree larger than itself and hours:
#                     tape.sh's PBIO_TAPE_EOT=DIR does that with payloads.
#   PBIO_TAPE_BLOCK_MAX [1048576]  largest block mtprobe reads
#   PBIO_MTPROBE      the mtprobe binary [mtprobe on PATH, else built with cc]
hw_suite="tape-control"
. "$(dirname "$0")/lib.sh"
require_var PBIO_TAPE "tape drive's non-rewinding node (e.g. /dev/nst0)"
refuse_ci
require_tool mt "busybox mt or the mt-st package"
work_init
tape=$PBIO_TAPE
tape_dev=$tape${PBIO_TAPE_SIZE:+,size=$PBIO_TAPE_SIZE}
keeps=${PBIO_TAPE_KEEPS_DATA:-1}
block_max=${PBIO_TAPE_BLOCK_MAX:-1048576}
case $(basename "$tape") in
nst*) ;;
*)
    echo "$0: refusing to run: $tape is not a non-rewinding st node (/dev/nstN)" >&2
    exit 2
    ;;
esac

mtprobe=${PBIO_MTPROBE:-$(command -v mtprobe || true)}
if [ -z "$mtprobe" ]; then
    require_tool cc "to build hw-tests/tools/mtprobe.c, or give PBIO_MTPROBE"
    mtprobe=$hw_dir/mtprobe
    cc -O2 -o "$mtprobe" "$(dirname "$0")/tools/mtprobe.c" || {
        echo "$0: building mtprobe failed" >&2
        exit 2
    }
fi
[ "$keeps" = 0 ] && note "this tape keeps only each block's length and first 4 bytes (scsi_debug): control path checked, not payloads"

# status: MTIOCGET/MTIOCPOS into $hw_dir/status; st KEY reads a field.
status() { "$mtprobe" status "$tape" >"$hw_dir/status" 2>&1; }
st() { grep "^$1=" "$hw_dir/status" | cut -d= -f2; }
status_line() { tr '\n' ' ' <"$hw_dir/status" | sed 's/ $//'; }
mtop() { mt -f "$tape" "$@" >>"$hw_dir/mt.log" 2>&1; }
# walk FILE [COUNT]: blocks and filemarks from the current position.
walk() { "$mtprobe" walk "$tape" "$block_max" ${2:+"$2"} >"$hw_dir/$1" 2>&1; }
magic=5042494f # "PBIO": the first 4 bytes of a label and of every record header

# 1. The drive: online, at BOT after a rewind, writable.
if mtop rewind && status && [ "$(st ONLINE)" = 1 ] && [ "$(st BOT)" = 1 ] &&
    [ "$(st file)" = 0 ] && [ "$(st block)" = 0 ] && [ "$(st WR_PROT)" = 0 ]; then
    pass drive-status "online, writable, at BOT after MTREW (MTIOCGET file 0 block 0)"
else
    fail drive-status "after rewind: $(status_line)"
    show_log "$hw_dir/mt.log" 5
    finish
fi

if ! "$PBIO" backup --help 2>/dev/null | grep -q -- '--tape-block'; then
    skip pbio "this pbio has no tape device kind yet (wt-tape not merged): only the drive was checked"
    finish
fi

# A small tree: a few records of every size class.
src=$hw_dir/src
mkdir -p "$src/small"
head -c $((6 * 1048576 + 777)) /dev/urandom >"$src/big.bin"
head -c 300000 /dev/urandom >"$src/medium.bin"
i=0
while [ $i -lt 8 ]; do
    head -c $((i * 1500 + 1)) /dev/urandom >"$src/small/f$i"
    i=$((i + 1))
done
: >"$src/empty"
disk=$hw_dir/disk.img

# 2. A set on the tape and a file device; first on a blank cartridge when
# there is one (the overwrite guard reads the tape before writing).
backup_to_tape() {
    run backup.json "$PBIO" backup "$src" --dev "$tape_dev" --dev "$disk,size=64M" --force --json
}
if [ "${PBIO_TAPE_BLANK:-0}" = 1 ]; then
    "$mtprobe" walk "$tape" "$block_max" 1 >"$hw_dir/blank-read.txt" 2>&1
    status
    blank_status=$(status_line)
    mtop rewind
    backup_to_tape
    if [ "$rc" = 0 ]; then
        pass blank-cartridge "pbio wrote a set on a never-written cartridge"
    else
        fail blank-cartridge "pbio backup --force on a never-written cartridge exited $rc: $(grep -v '^{' "$hw_log" | head -n 2 | tr '\n' ' ')(reading it here: '$(tr '\n' ' ' <"$hw_dir/blank-read.txt")', then MTIOCGET: $blank_status)"
        # Go on with a cartridge that is no longer blank: one filemark at BOT.
        mtop rewind && mtop weof 1 && mtop rewind
        backup_to_tape
    fi
else
    backup_to_tape
fi
summary_of "$hw_log" >"$hw_dir/summary.json"
summary_devices "$hw_dir/summary.json" >"$hw_dir/devices"
t=$(head -n1 "$hw_dir/devices")
t_state=$(echo "$t" | field state)
t_records=$(echo "$t" | field records)
t_data_end=$(echo "$t" | field data_end)
if [ "$rc" = 0 ] && [ "$t_state" = complete ] && [ "${t_records:-0}" -gt 0 ]; then
    pass backup "tape complete: $t_records data records, data_end $t_data_end; $(echo "$t" | field mib_per_sec | cut -d. -f1) MiB/s, ${secs} s ($(speed_note))"
else
    fail backup "exit $rc, tape state '$t_state', records '$t_records'"
    show_log
    finish
fi
status
note "after the backup: $(status_line)"

# 3. The layout, read block by block from BOT.
mtop rewind
walk walk.txt
awk -v magic="$magic" -v records="$t_records" -v data_end="$t_data_end" -v max="$block_max" '
    $1 == "block" { n[$2]++; size[$2, $3] = $4; if ($5 != magic) bad = bad " " $2 "/" $3 ":head=" $5
                    if ($4 % 4096 != 0 || $4 > max) bad = bad " " $2 "/" $3 ":size=" $4 }
    $1 == "filemark" { marks++; mark_after[$2] = 1 }
    $1 == "end" { end = $2 }
    END {
        why = ""
        if (size[0, 0] != 4096) why = why " label block is " size[0, 0] " bytes, not 4096;"
        if (n[0] - 1 != records) why = why " tape file 0 has " n[0] - 1 " data blocks, the summary says " records ";"
        if (n[0] != data_end) why = why " data_end " data_end " is not object " n[0] " (the first filemark);"
        for (i = 1; i < n[0]; i++) if (size[0, i] <= 4096) why = why " data block " i " has no payload;"
        if (!mark_after[0] || !mark_after[1]) why = why " filemarks: " marks ";"
        if (n[1] < 2) why = why " tape file 1 has " n[1] + 0 " blocks (catalog + End expected);"
        if (size[1, n[1] - 1] != 4096) why = why " last block of tape file 1 is " size[1, n[1] - 1] " bytes, not a 4096-byte End record;"
        if (n[2] > 0) why = why " " n[2] " blocks after the second filemark;"
        if (end != "eod" && end != "double-filemark") why = why " walk ended with " end ";"
        if (bad != "") why = why " bad blocks:" substr(bad, 1, 200)
        if (why != "") { print "FAIL" why; exit }
        largest = 0; for (i = 1; i < n[0]; i++) if (size[0, i] > largest) largest = size[0, i]
        printf "OK label 4096 B, %d data blocks (largest %d B, <= %d), filemark, tape file 1: %d blocks ending with a 4096-B End record, filemark, end of data (%s)\n", n[0] - 1, largest, max, n[1], end
        print "CATALOG_FIRST " size[1, 0] > "/dev/stderr"
    }' "$hw_dir/walk.txt" >"$hw_dir/layout" 2>"$hw_dir/catalog-first"
cat_first=$(cut -d' ' -f2 "$hw_dir/catalog-first")
if grep -q '^OK ' "$hw_dir/layout"; then
    pass layout "$(sed 's/^OK //' "$hw_dir/layout"); every block starts with PBIO (docs/FORMAT.md section 10)"
else
    fail layout "$(sed 's/^FAIL //' "$hw_dir/layout")"
    show_log "$hw_dir/walk.txt" 8
fi

# 4. Positioning to the catalog file: MTFSF from BOT (how pbio finds it),
# MTEOM then MTBSF 2 + MTFSF 1 (from the end), each landing on the first
# catalog block.
first_block() {
    walk first.txt 1
    awk '$1 == "block" { print $4 }' "$hw_dir/first.txt"
}
why=
mtop rewind && mtop fsf 1 && status
[ "$(st file)" = 1 ] && [ "$(st block)" = 0 ] || why="$why after MTREW+MTFSF 1: $(status_line);"
b=$(first_block)
[ "$b" = "$cat_first" ] || why="$why the block after MTFSF 1 is '$b' bytes, the catalog's first is $cat_first;"
mtop eom && status
[ "$(st EOD)" = 1 ] && [ "$(st file)" = 2 ] || why="$why after MTEOM: $(status_line);"
mtop bsf 2 && mtop fsf 1 && status
[ "$(st file)" = 1 ] && [ "$(st block)" = 0 ] || why="$why after MTBSF 2+MTFSF 1: $(status_line);"
b=$(first_block)
[ "$b" = "$cat_first" ] || why="$why the block after MTBSF 2+MTFSF 1 is '$b' bytes, not $cat_first;"
if [ -z "$why" ]; then
    pass positioning "MTFSF 1 from BOT and MTEOM+MTBSF 2+MTFSF 1 both land on the catalog's first block ($cat_first B); MTEOM reports EOD in file 2"
else
    fail positioning "$why"
    show_log "$hw_dir/mt.log" 5
fi

# 5. pbio reads the tape back.
run list.json "$PBIO" list --dev "$tape_dev" --json
if [ "$keeps" = 0 ]; then
    status
    if [ "$rc" != 0 ] && grep -qi 'label' "$hw_log" && [ "$(st file)" = 0 ] && [ "$(st block)" = 1 ]; then
        pass read-label "pbio list rewound and read exactly the 4096-byte label block (now file 0 block 1); it fails the label check because the emulation kept 4 bytes of it, as expected: $(head -c 160 "$hw_log")"
    else
        fail read-label "pbio list: exit $rc, position after: $(status_line); expected a label error at file 0 block 1"
        show_log
    fi
else
    files=$(summary_top "$hw_dir/summary.json" | field files)
    listed=$(grep -o '"path":' "$hw_log" | wc -l | tr -d ' ')
    if [ "$rc" = 0 ]; then
        pass read-catalog "pbio list read the catalog from the tape alone ($listed paths, the set has $files entries)"
    else
        fail read-catalog "pbio list --dev $tape exited $rc"
        show_log
    fi
fi

# 6. pbio qualify's tape checks. On scsi_debug (PBIO_TAPE_KEEPS_DATA=0)
# the blocks read back with their lengths and first 4 bytes only: qualify's
# pattern_verify must FAIL and say so (its lengths, filemarks and positions
# are still checked block by block); every other check must PASS.
if [ "$keeps" = 0 ]; then
    qualify_device "$tape_dev" pattern_verify "keeps only each block's length and first 4 bytes" \
        "this emulated drive keeps 4 bytes of each block" ||
        fail qualify "pbio qualify has no checks for tapes"
else
    qualify_device "$tape_dev" || fail qualify "pbio qualify has no checks for tapes"
fi

# 7. End of medium: early warning makes the tape full, not failed; its
# catalog goes after early warning, the rest of its work to the disk.
if [ "${PBIO_TAPE_EOM:-0}" != 1 ]; then
    skip eom "fills the cartridge (hours on a real drive): PBIO_TAPE_EOM=1 runs it"
    finish
fi
eom_src=$hw_dir/eom-src
mkdir -p "$eom_src"
head -c $((${PBIO_TAPE_EOM_MB:-128} * 1048576)) /dev/urandom >"$eom_src/fill.bin"
# Half of the source is planned on the tape (--balance bytes: no work
# stealing, so the fast disk cannot take the tape's share before the tape
# reaches early warning, as it did under --balance time on a slow TCG guest).
# In 8 KiB blocks (4 KiB of payload each) scsi_debug's 10000 objects hold
# ~39 MiB of payload: less than the 64 MiB planned on the tape.
run eom.json "$PBIO" backup "$eom_src" --balance bytes --tape-block 8K \
    --dev "$tape,size=${PBIO_TAPE_SIZE:-1G}" --dev "$hw_dir/spill.img,size=256M" --force --json
summary_of "$hw_log" >"$hw_dir/eom-summary.json"
summary_devices "$hw_dir/eom-summary.json" >"$hw_dir/eom-devices"
t=$(head -n1 "$hw_dir/eom-devices")
e_state=$(echo "$t" | field state)
e_redirected=$(echo "$t" | field redirected_bytes)
e_records=$(echo "$t" | field records)
e_data_end=$(echo "$t" | field data_end)
e_catalog_end=$(echo "$t" | field catalog_end)
e_missing=$(summary_top "$hw_dir/eom-summary.json" | field missing_bytes)
status
note "after the end-of-medium backup: $(status_line)"
if [ "$rc" = 0 ] && [ "$e_state" = full ] && [ "${e_redirected:-0}" -gt 0 ] && [ "$e_missing" = 0 ] && [ "$e_catalog_end" != null ]; then
    pass eom "tape full at early warning after $e_records data records (not failed), $((e_redirected / 1048576)) MiB of its work redirected to the disk, nothing missing, its catalog written after early warning; ${secs} s"
else
    fail eom "exit $rc, tape state '$e_state', redirected '$e_redirected', missing '$e_missing', catalog_end '$e_catalog_end'"
    show_log
fi
# The full tape's layout: every data block on it counted by the catalog.
mtop rewind
walk eom-walk.txt
e_blocks0=$(awk '$1 == "block" && $2 == 0' "$hw_dir/eom-walk.txt" | wc -l | tr -d ' ')
e_blocks1=$(awk '$1 == "block" && $2 == 1' "$hw_dir/eom-walk.txt" | wc -l | tr -d ' ')
e_last1=$(awk '$1 == "block" && $2 == 1 { s = $4 } END { print s }' "$hw_dir/eom-walk.txt")
e_marks=$(grep -c '^filemark' "$hw_dir/eom-walk.txt")
e_end=$(awk '$1 == "end" { print $2 }' "$hw_dir/eom-walk.txt")
e_data=$((e_blocks0 - 1))
if [ "$e_data" = "$e_records" ] && [ "$e_data_end" = "$e_blocks0" ] && [ "$e_marks" = 2 ] &&
    [ "$e_blocks1" -ge 2 ] && [ "$e_last1" = 4096 ] && [ "$e_end" = eod ]; then
    pass eom-layout "label, $e_data data blocks = the catalog's records, filemark at object $e_data_end = data_end, catalog file ($e_blocks1 blocks) and filemark after early warning, end of data"
else
    why=
    if [ "$e_data" != "$e_records" ] || [ "$e_data_end" != "$e_blocks0" ]; then
        why="tape file 0 holds $e_data data blocks but pbio counted $e_records records (data_end $e_data_end; the filemark is object $e_blocks0)"
        [ "$e_data" = $((e_records + 1)) ] &&
            why="$why: the write st answered with ENOSPC at early warning did write its block (variable-block mode), so the tape holds one record more than its catalog says (docs/FORMAT.md section 10 rule 7 assumes that write wrote nothing);"
    fi
    fail eom-layout "$why on tape: file 0 $e_blocks0 blocks, file 1 $e_blocks1 blocks (last $e_last1 B), $e_marks filemarks, end $e_end"
fi
finish
