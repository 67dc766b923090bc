#!/usr/bin/env bash
# PERF.md "#19 --parity": backup with --parity 1 vs without on the same 4
# loop devices in the same run (alternating), restore with one device
# missing vs all present, and fio writing the same bytes to the same
# devices (ioengine=io_uring direct=1) as the reference. Needs root.
# MODE: plain (default); compress (--compress zstd:1, the large file
# base64 text so that it compresses); encrypt (--encrypt --key-file, a new
# key): both backups and restores of a run use the mode, so the ratio
# --parity 1 / --parity 0 is measured with it.
# Usage: [PBIO=binary] scripts/bench-parity.sh [REPS] [SOURCE_MIB] [MODE]
set -euo pipefail
cd "$(dirname "$0")/.."
reps="${1:-3}"; src_mib="${2:-320}"; mode="${3:-plain}"
pbio="${PBIO:-$PWD/target/release/pbio}"
work="$(mktemp -d /tmp/bench-parity.XXXXXX)"
src="$(mktemp -d /dev/shm/bench-parity-src.XXXXXX)"
loops=()
cleanup() {
    for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
    rm -rf "$work" "$src"
}
trap cleanup EXIT
# Source on tmpfs: one large file and 200 small ones.
mkdir -p "$src/tree/small"
if [ "$mode" = compress ]; then
    head -c $(( (src_mib - 20) * 3 << 18 )) /dev/urandom | base64 -w 0 >"$src/tree/large.bin"
else
    head -c $(( (src_mib - 20) << 20 )) /dev/urandom >"$src/tree/large.bin"
fi
backup_args=(); restore_args=()
case "$mode" in
    plain) ;;
    compress) backup_args=(--compress zstd:1) ;;
    encrypt)
        "$pbio" key new "$work/key" >/dev/null
        backup_args=(--encrypt --key-file "$work/key"); restore_args=(--key-file "$work/key") ;;
    *) echo "unknown mode $mode (plain, compress, encrypt)" >&2; exit 2 ;;
esac
for i in $(seq 1 200); do head -c $(( (RANDOM % 200 + 1) * 512 )) /dev/urandom >"$src/tree/small/f$i"; done
for i in 0 1 2 3; do
    truncate -s $(( src_mib * 2 / 3 + 64 ))M "$work/d$i.img"
    loops+=("$(losetup --direct-io=on -f --show "$work/d$i.img")")
done
devs=(); for l in "${loops[@]}"; do devs+=(--dev "$l"); done
secs() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])['seconds'])"; }
echo "devices: ${loops[*]}; source $(du -sh "$src/tree" | cut -f1) on tmpfs; mode $mode ${backup_args[*]}"
for r in $(seq 1 "$reps"); do
    per=$(( src_mib / 4 ))
    jobs=(); for l in "${loops[@]}"; do jobs+=(--name="w$l" --filename="$l"); done
    fio_kib=$(fio --output-format=json --group_reporting --ioengine=io_uring --direct=1 --rw=write \
        --bs=1M --iodepth=32 --size=$(( src_mib / 4 ))M "${jobs[@]}" 2>/dev/null |
        python3 -c "import json,sys; print(json.load(sys.stdin)['jobs'][0]['write']['bw'])")
    for m in 0 1; do
        line=$("$pbio" backup "$src/tree" "${devs[@]}" --force --parity "$m" "${backup_args[@]}" --json | tail -1)
        echo "rep $r: backup --parity $m: $(echo "$line" | secs) s, parity $(echo "$line" | python3 -c "import json,sys; p=json.load(sys.stdin)['parity']; print(p['payload_bytes'] >> 20, 'MiB in', p['records'], 'records, parity phase', round(p['seconds'], 3), 's')")"
    done
    echo "rep $r: fio write ${src_mib} MiB, one job per device (io_uring direct=1 bs=1M qd32): $(( fio_kib / 1024 )) MiB/s, $(python3 -c "print(round(${src_mib} * 1024 / ${fio_kib}, 3))") s"
    for without in none 2; do
        given=(); for i in 0 1 2 3; do [ "$i" = "$without" ] || given+=(--dev "${loops[$i]}"); done
        rm -rf "$src/out"
        t=$("$pbio" restore --to "$src/out" "${given[@]}" "${restore_args[@]}" --json | secs)
        echo "rep $r: restore, device missing: $without: $t s"
        diff -r "$src/tree" "$src/out/tree" >/dev/null || { echo "restore differs"; exit 1; }
    done
    rm -rf "$src/out"
done
