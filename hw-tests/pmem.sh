#!/bin/sh
# Persistent memory namespace (/dev/pmemN), through pbio's pmem kind
# (mapped; msync on a non-DAX namespace). Identity (the namespace's mode,
# DAX), then `pbio qualify` or, while it has no checks for pmem, `pbio
# bench` write and read through the mapping. A device-DAX node is dax.sh's.
#   PBIO_PMEM=/dev/pmem0 hw-tests/pmem.sh        DESTROYS what the namespace holds
hw_suite=pmem
. "$(dirname "$0")/lib.sh"
require_var PBIO_PMEM "pmem namespace (e.g. /dev/pmem0)"
work_init

dev=$PBIO_PMEM
name=$(basename "$(readlink -f "$dev")")
if [ -b "$dev" ] && [ -d "/sys/block/$name" ]; then
    sectors=$(cat "/sys/block/$name/size")
    dax=$(cat "/sys/block/$name/queue/dax" 2>/dev/null || echo '?')
    mode=$(cat "/sys/block/$name/device/mode" 2>/dev/null || echo '?')
    case $name in
    pmem*) pass device "$dev: $((sectors / 2048)) MiB, namespace mode $mode, dax $dax (nd_pmem driver)" ;;
    *) fail device "$dev is $name, not a pmem namespace" ;;
    esac
else
    fail device "$dev is not a block device (a device-DAX /dev/daxN.M is PBIO_DAX, dax.sh)"
    finish
fi

qualify_device "$dev" || bench_device pmem "$dev" 0
finish
