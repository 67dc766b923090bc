#!/usr/bin/env bash
# hw-tests/emulated.sh: the hardware suites (disk.sh, nvme.sh, tape.sh,
# pmem.sh) run on this machine's emulated test bed, so that the scripts a
# lab runs on real hardware are themselves tested, in CI too:
#
#   disk   PBIO_DISK  a loop device (losetup --direct-io=on) over a file
#   nvme   PBIO_NVME  another such loop device standing in for a namespace
#   tape   PBIO_TAPE  vtape:DIR, pbio's tape emulator (st semantics)
#   pmem   PBIO_PMEM  pmem:/dev/shm/FILE, a file-backed mapping (msync)
#
# Each suite runs `pbio qualify --force --quick` on its device and a full
# backup/restore round trip; every check prints PASS/FAIL/SKIP suite.name,
# hw-tests/all.sh sums up. Everything made here (loop devices, files,
# folders) is removed on exit, whatever the outcome.
#
#   sudo hw-tests/emulated.sh        about 30-60 s (builds pbio first if needed)
#
# Exit: 0 every check passed; 1 a check failed (listed at the end), or a
# capability was missing under CI=true; 2 the test bed could not be set up.
# It needs root: for the loop devices, and for pbio's backups (io_uring
# registered buffers are charged to RLIMIT_MEMLOCK; root has CAP_IPC_LOCK).
# Without root, or without loop devices, it prints SKIP with the reason
# and runs nothing (or, with root but no loop driver, skips disk and nvme);
# under CI=true a missing capability is a FAIL instead.
#
# Environment: PBIO (pbio binary; default target/release/pbio, built with
# `cargo build --release` when missing), PBIO_EMULATED_DIR (folder for the
# loop devices' backing files and scratch; default a new one under /var/tmp),
# PBIO_HW_QUALIFY_ARGS (default --quick).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
say() { echo "emulated: $*"; }

PBIO=${PBIO:-$repo/target/release/pbio}
if [ ! -x "$PBIO" ]; then
    say "building pbio (cargo build --release)"
    (cd "$repo" && cargo build --release -q) || {
        say "error: building pbio failed"
        exit 2
    }
fi

work=$(mktemp -d "${PBIO_EMULATED_DIR:-/var/tmp}/pbio-emulated.XXXXXX") || {
    say "error: cannot make a scratch folder"
    exit 2
}
shm=/dev/shm/pbio-emulated-$$.img
loops=()
# shellcheck disable=SC2317 # called by the traps
cleanup() {
    for l in "${loops[@]}"; do
        losetup -d "$l" 2>/dev/null || say "warning: could not detach $l"
    done
    rm -rf "$work"
    rm -f "$shm"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

failed=0
suites=
# Root: loop devices, and the memory pbio's rings lock.
if [ "$(id -u)" != 0 ]; then
    why="not running as root (loop devices; pbio's io_uring registered buffers need CAP_IPC_LOCK or a large RLIMIT_MEMLOCK)"
    if [ "${CI:-}" = true ]; then
        echo "FAIL emulated.root: under CI the emulated suites must run, but $why"
        exit 1
    fi
    for s in disk nvme tape pmem; do
        echo "SKIP emulated.$s: $why"
    done
    exit 0
fi
# Capabilities for the loop devices.
why=
if ! command -v losetup >/dev/null; then
    why="losetup is not installed (util-linux)"
elif [ ! -e /dev/loop-control ]; then
    why="/dev/loop-control is missing (no loop driver)"
fi

# loop_dev FILE SIZE: a direct-I/O loop device over a new sparse FILE.
loop_dev() {
    truncate -s "$2" "$1" || return 1
    local l
    l=$(losetup --direct-io=on -f --show "$1") || return 1
    loops+=("$l")
    if [ "$(cat "/sys/block/${l#/dev/}/loop/dio" 2>/dev/null)" != 1 ]; then
        say "error: $l over $1 is not in direct-I/O mode"
        return 1
    fi
    echo "$l"
}

if [ -z "$why" ]; then
    disk=$(loop_dev "$work/disk.img" 512M) && nvme=$(loop_dev "$work/nvme.img" 512M) || {
        echo "FAIL emulated.loop-devices: losetup --direct-io=on over files in $work failed"
        exit 1
    }
    # loops+= ran in a subshell ($(...)): record them here for the cleanup.
    loops=("$disk" "$nvme")
    echo "PASS emulated.loop-devices: $disk and $nvme (direct I/O) over 512 MiB files in $work"
    export PBIO_DISK=$disk PBIO_NVME=$nvme
    suites="disk nvme"
elif [ "${CI:-}" = true ]; then
    echo "FAIL emulated.loop-devices: under CI the disk and nvme suites must run, but $why"
    failed=1
else
    echo "SKIP emulated.disk: $why (needs root and loop devices)"
    echo "SKIP emulated.nvme: $why (needs root and loop devices)"
fi

truncate -s 256M "$shm" || {
    say "error: cannot make $shm"
    exit 2
}
echo "PASS emulated.pmem-file: $shm, 256 MiB on $(stat -f -c %T /dev/shm)"
suites="$suites tape pmem"

export PBIO PBIO_BIN=$PBIO PBIO_HW_EMULATED=1
export PBIO_HW_QUALIFY_ARGS=${PBIO_HW_QUALIFY_ARGS:---quick}
export PBIO_WORK=$work/hw PBIO_HW_ROUNDTRIP_MB=16
export PBIO_TAPE=vtape:$work/tape PBIO_TAPE_SIZE=1G PBIO_TAPE_WORK=$work/tape-work
export PBIO_TAPE_TREE_MIB=32 PBIO_TAPE_SMALL_FILES=200
export PBIO_PMEM=pmem:$shm
mkdir -p "$PBIO_WORK"

start=$(date +%s)
# shellcheck disable=SC2086 # the suite names are words
"$here/all.sh" $suites
rc=$?
say "suites:$suites, $(($(date +%s) - start)) s"
if [ "$rc" != 0 ] || [ "$failed" != 0 ]; then
    say "FAILED"
    exit 1
fi
say "PASSED"
exit 0
