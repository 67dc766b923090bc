#!/bin/sh
# NVMe namespace: identity, then `pbio qualify` (or, until this pbio has it,
# `pbio bench` sequential write and read through pbio's rings).
#   PBIO_NVME=/dev/nvme0n1 hw-tests/nvme.sh      DESTROYS what the namespace holds
hw_suite=nvme
. "$(dirname "$0")/lib.sh"
require_var PBIO_NVME "NVMe namespace (e.g. /dev/nvme1n1)"
work_init

dev=$PBIO_NVME
name=$(basename "$(readlink -f "$dev")")
if [ -b "$dev" ] && [ -d "/sys/block/$name" ]; then
    lbs=$(cat "/sys/block/$name/queue/logical_block_size")
    pbs=$(cat "/sys/block/$name/queue/physical_block_size")
    sectors=$(cat "/sys/block/$name/size")
    model=$(tr -s ' ' <"/sys/block/$name/device/model" 2>/dev/null)
    case $name in
    nvme*) pass device "$dev: $((sectors / 2048)) MiB, logical/physical block $lbs/$pbs, model '${model% }' (nvme driver)" ;;
    *) fail device "$dev is $name, not an NVMe namespace" ;;
    esac
else
    fail device "$dev is not a block device"
    finish
fi

qualify_device "$dev" || bench_device nvme "$dev"
finish
