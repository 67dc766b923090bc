#!/bin/sh
# Persistent memory namespace (/dev/pmemN). pbio has no pmem device kind
# yet, so it is written here as a block device (O_DIRECT through the ring);
# once the pmem kind lands, the same path goes through it. Identity (the
# namespace's mode, DAX), then `pbio qualify` or, until it exists, `pbio bench`.
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
    fail device "$dev is not a block device (a devdax /dev/daxN.M waits for pbio's pmem kind)"
    finish
fi

qualify_device "$dev" || bench_device pmem "$dev"
finish
