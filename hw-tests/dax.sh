#!/bin/sh
# Device-DAX (/dev/daxN.M: a pmem namespace in devdax mode) through pbio's
# pmem kind, whose DAX path makes records durable with CPU cache-line
# flushes (CLWB, else CLFLUSHOPT, else CLFLUSH) and a fence instead of
# msync. Identity (size, alignment, the CPU's flush instructions), `pbio
# bench` write and read through the mapping, then a set on the device
# alone: backup, verify, list, restore compared with cmp.
#   PBIO_DAX=/dev/dax0.0 hw-tests/dax.sh        DESTROYS what the namespace holds
hw_suite="dax"
. "$(dirname "$0")/lib.sh"
require_var PBIO_DAX "device-DAX node (e.g. /dev/dax0.0)"
refuse_ci
work_init

dev=$PBIO_DAX
name=$(basename "$(readlink -f "$dev")")
sys=/sys/bus/dax/devices/$name
if [ -c "$dev" ] && [ -d "$sys" ]; then
    size=$(cat "$sys/size")
    align=$(cat "$sys/align" 2>/dev/null || echo '?')
    flushes=$(grep -o -w 'clwb\|clflushopt\|clflush' /proc/cpuinfo | sort -u | tr '\n' ' ' | sed 's/ $//')
    pass device "$dev: $((size / 1048576)) MiB, alignment $align B, CPU flushes: ${flushes:-none} (device_dax driver)"
else
    fail device "$dev is not a device-DAX node (no $sys)"
    finish
fi

# pbio cannot use device-DAX yet (the node supports only mmap; the label,
# catalog and reads would have to go through the mapping): until it can, it
# must refuse the node with a clear message, never fail half way.
mkdir -p "$hw_dir/src0"
echo unsupported >"$hw_dir/src0/x"
run refuse.log "$PBIO" backup "$hw_dir/src0" --dev "$dev" --force
if [ "$rc" = 2 ] && grep -q "device-DAX" "$hw_log"; then
    pass unsupported "pbio refuses $dev clearly: device-DAX is not supported yet"
else
    fail unsupported "exit $rc: $(grep 'pbio' "$hw_log" | head -n 2 | tr '\n' ' ')"
fi
finish

if ! qualify_device "$dev"; then
    # No more than the device holds (its info block takes a few MiB).
    want=$(size_bytes "$PBIO_HW_SIZE")
    [ "$want" -gt "$size" ] && PBIO_HW_SIZE=$((size / 1048576 * 1048576))
    bench_device dax "$dev" 0
fi

# A set on the device alone.
src=$hw_dir/src
mkdir -p "$src/d"
head -c $((5 * 1048576 + 333)) /dev/urandom >"$src/five.bin"
i=0
while [ $i -lt 10 ]; do
    head -c $((i * 3000 + 7)) /dev/urandom >"$src/d/f$i"
    i=$((i + 1))
done
run backup.json "$PBIO" backup "$src" --dev "$dev" --force --json
summary_of "$hw_log" >"$hw_dir/summary.json"
state=$(summary_devices "$hw_dir/summary.json" | head -n1 | field state)
mapped=$(grep -o 'mapped (.*)' "$hw_log" | head -n1)
if [ "$rc" = 0 ] && [ "$state" = complete ]; then
    pass backup "complete, $mapped; ${secs} s"
else
    fail backup "exit $rc, state '$state': $(grep -v '^{' "$hw_log" | grep 'pbio: ' | head -n 3 | tr '\n' ' ')"
    show_log "$hw_log" 4
    finish
fi
run verify.log "$PBIO" verify --dev "$dev"
if [ "$rc" = 0 ]; then pass verify "every CRC and file digest"; else
    fail verify "exit $rc"
    show_log
fi
run restore.log "$PBIO" restore --dev "$dev" --to "$hw_dir/restore"
differ=0
for f in five.bin d/f0 d/f1 d/f2 d/f3 d/f4 d/f5 d/f6 d/f7 d/f8 d/f9; do
    cmp -s "$src/$f" "$hw_dir/restore/src/$f" || differ=$((differ + 1))
done
if [ "$rc" = 0 ] && [ $differ = 0 ]; then
    pass restore-identical "restored from the device alone, 11 files byte-identical (cmp)"
else
    fail restore-identical "restore exit $rc, $differ of 11 files differ"
    show_log
fi
finish
