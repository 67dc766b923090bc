#!/bin/sh
# NVMe namespace: identity, then `pbio qualify` (or, where this pbio lacks
# it, `pbio bench` sequential write and read through pbio's rings), then a
# full backup and restore round trip on the namespace alone.
#   PBIO_NVME=/dev/nvme0n1 hw-tests/nvme.sh      DESTROYS what the namespace holds
# Never in CI (hw-tests/emulated.sh runs it on a loop device instead).
hw_suite=nvme
. "$(dirname "$0")/lib.sh"
require_var PBIO_NVME "NVMe namespace (e.g. /dev/nvme1n1)"
refuse_ci
work_init

dev=$PBIO_NVME
name=$(basename "$(readlink -f "$dev")")
if [ -b "$dev" ] && [ -d "/sys/block/$name" ]; then
    lbs=$(cat "/sys/block/$name/queue/logical_block_size")
    pbs=$(cat "/sys/block/$name/queue/physical_block_size")
    sectors=$(cat "/sys/block/$name/size")
    model=$(tr -s ' ' 2>/dev/null <"/sys/block/$name/device/model")
    case $name in
    nvme*) pass device "$dev: $((sectors / 2048)) MiB, logical/physical block $lbs/$pbs, model '${model% }' (nvme driver)" ;;
    *)
        if [ "${PBIO_HW_EMULATED:-0}" = 1 ]; then
            pass device "$dev: $((sectors / 2048)) MiB, logical/physical block $lbs/$pbs: $name stands in for an NVMe namespace (emulated test bed)"
        else
            fail device "$dev is $name, not an NVMe namespace"
        fi
        ;;
    esac
else
    fail device "$dev is not a block device"
    finish
fi

qualify_device "$dev" || bench_device nvme "$dev"
roundtrip "$dev" "${PBIO_HW_ROUNDTRIP_MB:-16}"
finish
