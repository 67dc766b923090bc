#!/bin/sh
# Persistent memory through pbio's pmem kind (mapped; CPU cache-line
# flushes on a DAX mapping, msync otherwise): a namespace (/dev/pmemN) or
# a pmem file (pmem:PATH: a file on a DAX filesystem, or one in /dev/shm
# as the emulated test bed uses). Identity (the namespace's mode, DAX),
# `pbio qualify` (the mapping, persist mechanism, store+persist throughput,
# persist latency, pattern, durability through a second mapping), then a
# full backup and restore round trip on the device alone. A device-DAX
# node is dax.sh's.
#   PBIO_PMEM=/dev/pmem0 hw-tests/pmem.sh        DESTROYS what the namespace holds
# Never in CI (hw-tests/emulated.sh runs it on a file in /dev/shm instead).
hw_suite=pmem
. "$(dirname "$0")/lib.sh"
require_var PBIO_PMEM "pmem namespace (e.g. /dev/pmem0) or pmem:FILE"
refuse_ci
work_init

dev=$PBIO_PMEM
case $dev in
pmem:*)
    file=${dev#pmem:}
    file=${file%%,*}
    if [ -f "$file" ]; then
        fs=$(stat -f -c %T "$file" 2>/dev/null || echo '?')
        pass device "$dev: a $(($(stat -c %s "$file") / 1048576)) MiB file on $fs (pbio maps it; MAP_SYNC only on a DAX filesystem)"
    else
        fail device "$file (of $dev) is not a file"
        finish
    fi
    ;;
*)
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
    ;;
esac

qualify_device "$dev" || fail qualify "pbio qualify has no checks for $dev"
roundtrip "$dev" "${PBIO_HW_ROUNDTRIP_MB:-16}"
finish
