#!/usr/bin/env bash
# PERF.md "#19 --parity": backup with --parity 1 vs without on the same 4
# loop devices in the same run (alternating), restore with one device
# missing vs all present, and fio writing the same bytes to the same
# devices (ioengine=io_uring direct=1) as the reference. Needs root.
# MODE: plain (default); compress (--compress zstd:1, the large file
# base64 text so that it compresses); encrypt (--encrypt --key-file, a new
# key): both backups and restores of a run use the mode, so the ratio
# --parity 1 / --parity 0 is measured with it.
# PBIO_OLD=binary adds an A/B: every backup is run with both binaries,
# alternating, on the same devices. Each backup's wall time (its JSON
# `seconds`) and CPU seconds (user + sys, /usr/bin/time) are printed, and
# at the end the medians, the ratio --parity 1 / --parity 0 per binary and
# the goal (issue 19: the extra time no more than the extra bytes plus
# 10%: 4/3 x 1.1 = 1.47 at 4 devices). RESTORE=0 skips the restores.
# Usage: [PBIO=binary] [PBIO_OLD=binary] [RESTORE=0] scripts/bench-parity.sh [REPS] [SOURCE_MIB] [MODE]
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
bins=(new); [ -n "${PBIO_OLD:-}" ] && bins+=(old)
results="$work/results"; : >"$results"
# One backup: prints its line, appends "bin m wall cpu parity_read_back" to $results.
backup_once() {
    local bin=$1 m=$2 exe=$pbio
    [ "$bin" = old ] && exe=$PBIO_OLD
    /usr/bin/time -f "%U %S" -o "$work/time" "$exe" backup "$src/tree" "${devs[@]}" --force \
        --parity "$m" "${backup_args[@]}" --json | tail -1 >"$work/line"
    python3 - "$bin" "$m" "$work/line" "$work/time" "$results" <<'PY'
import json, sys
bin_, m, line, tm, results = sys.argv[1:]
j = json.loads(open(line).read())
u, s = map(float, open(tm).read().split()[-2:])
p = j['parity']
rb = p.get('read_back_bytes', -1)
print(f"  {bin_} --parity {m}: {j['seconds']:.3f} s wall, {u + s:.2f} s CPU; parity {p['payload_bytes'] >> 20} MiB in {p['records']} records, {p.get('inline_stripes', 0)} of {p['stripes']} stripes while writing, read back {rb >> 20 if rb >= 0 else 'n/a'} MiB, {p['seconds']:.3f} s after the data")
open(results, 'a').write(f"{bin_} {m} {j['seconds']} {u + s}\n")
PY
}
secs() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])['seconds'])"; }
echo "devices: ${loops[*]}; source $(du -sh "$src/tree" | cut -f1) on tmpfs; mode $mode ${backup_args[*]}"
for r in $(seq 1 "$reps"); do
    per=$(( src_mib / 4 ))
    jobs=(); for l in "${loops[@]}"; do jobs+=(--name="w$l" --filename="$l"); done
    fio_kib=$(fio --output-format=json --group_reporting --ioengine=io_uring --direct=1 --rw=write \
        --bs=1M --iodepth=32 --size=$(( src_mib / 4 ))M "${jobs[@]}" 2>/dev/null |
        python3 -c "import json,sys; print(json.load(sys.stdin)['jobs'][0]['write']['bw'])")
    echo "rep $r:"
    for bin in "${bins[@]}"; do
        for m in 0 1; do backup_once "$bin" "$m"; done
    done
    echo "rep $r: fio write ${src_mib} MiB, one job per device (io_uring direct=1 bs=1M qd32): $(( fio_kib / 1024 )) MiB/s, $(python3 -c "print(round(${src_mib} * 1024 / ${fio_kib}, 3))") s"
    [ "${RESTORE:-1}" = 0 ] && continue
    for without in none 2; do
        given=(); for i in 0 1 2 3; do [ "$i" = "$without" ] || given+=(--dev "${loops[$i]}"); done
        rm -rf "$src/out"
        t=$("$pbio" restore --to "$src/out" "${given[@]}" "${restore_args[@]}" --json | secs)
        echo "rep $r: restore, device missing: $without: $t s"
        diff -r "$src/tree" "$src/out/tree" >/dev/null || { echo "restore differs"; exit 1; }
    done
    rm -rf "$src/out"
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print("medians over", len(rows) // 4 if len(rows) >= 4 else len(rows), "reps:")
for b in ("new", "old"):
    w = {m: [float(r[2]) for r in rows if r[0] == b and r[1] == m] for m in ("0", "1")}
    c = {m: [float(r[3]) for r in rows if r[0] == b and r[1] == m] for m in ("0", "1")}
    if not w["0"]:
        continue
    w0, w1 = statistics.median(w["0"]), statistics.median(w["1"])
    c0, c1 = statistics.median(c["0"]), statistics.median(c["1"])
    print(f"  {b}: --parity 0 {w0:.3f} s wall {c0:.2f} s CPU; --parity 1 {w1:.3f} s wall {c1:.2f} s CPU; "
          f"ratio wall {w1 / w0:.2f}x, CPU {c1 / c0:.2f}x (goal: wall <= 1.47x)")
PY
