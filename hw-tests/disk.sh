#!/bin/sh
# A disk (SATA/SAS/virtio, a RAID volume: any block device): identity from
# sysfs, `pbio qualify --force` (geometry, O_DIRECT limits, throughput
# matrix, latency, fsync/DSYNC, write cache, pattern), then a full backup
# and restore round trip on the disk alone.
#   PBIO_DISK=/dev/sdb hw-tests/disk.sh      DESTROYS what the disk holds
# Never in CI (hw-tests/emulated.sh runs it on a loop device instead).
hw_suite=disk
. "$(dirname "$0")/lib.sh"
require_var PBIO_DISK "disk (a block device, e.g. /dev/sdb)"
refuse_ci
work_init

dev=$PBIO_DISK
name=$(basename "$(readlink -f "$dev")")
if [ -b "$dev" ] && [ -d "/sys/class/block/$name" ]; then
    sys=/sys/class/block/$name
    # A partition's queue is its disk's.
    [ -f "$sys/partition" ] && sys=$(dirname "$(readlink -f "$sys")")
    lbs=$(cat "$sys/queue/logical_block_size")
    pbs=$(cat "$sys/queue/physical_block_size")
    rot=$(cat "$sys/queue/rotational")
    sectors=$(cat "/sys/class/block/$name/size")
    model=$(tr -s ' ' 2>/dev/null <"$sys/device/model")
    what="model '${model% }'"
    [ -f "$sys/loop/backing_file" ] &&
        what="loop device over $(cat "$sys/loop/backing_file"), direct I/O $(cat "$sys/loop/dio" 2>/dev/null)"
    pass device "$dev: $((sectors / 2048)) MiB, logical/physical block $lbs/$pbs, rotational $rot, $what"
else
    fail device "$dev is not a block device"
    finish
fi

qualify_device "$dev" || fail qualify "pbio qualify has no checks for $dev"
roundtrip "$dev" "${PBIO_HW_ROUNDTRIP_MB:-64}"
finish
