#!/usr/bin/env bash
# PERF.md "#19 restore --scan of a --parity set": a set written with
# --parity 1 on 4 loop devices, its catalogs wiped (data_end..catalog_end
# zeroed: a set with no usable catalog), then per repetition, alternating
# on the same devices: fio reading the same bytes from the 4 devices
# (ioengine=io_uring direct=1 bs=1M iodepth=32, the reference),
# `restore --scan` from all 4 devices (with PBIO_OLD also by the old
# binary: the scan path's A/B), and `restore --scan` without device 2
# (its records rebuilt from parity). Each restore is compared with the
# source. Prints wall and CPU seconds (user + sys, /usr/bin/time) per run
# and the medians. Needs root.
# Usage: [PBIO=binary] [PBIO_OLD=binary] scripts/bench-scan-parity.sh [REPS] [SOURCE_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
reps="${1:-3}"; src_mib="${2:-320}"
pbio="${PBIO:-$PWD/target/release/pbio}"
work="$(mktemp -d /tmp/bench-scan-parity.XXXXXX)"
src="$(mktemp -d /dev/shm/bench-scan-parity-src.XXXXXX)"
loops=()
cleanup() {
    for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
    rm -rf "$work" "$src"
}
trap cleanup EXIT
mkdir -p "$src/tree/small"
head -c $(( (src_mib - 20) << 20 )) /dev/urandom >"$src/tree/large.bin"
for i in $(seq 1 200); do head -c $(( (RANDOM % 200 + 1) * 512 )) /dev/urandom >"$src/tree/small/f$i"; done
for i in 0 1 2 3; do
    truncate -s $(( src_mib * 2 / 3 + 64 ))M "$work/d$i.img"
    loops+=("$(losetup --direct-io=on -f --show "$work/d$i.img")")
done
devs=(); for l in "${loops[@]}"; do devs+=(--dev "$l"); done
"$pbio" backup "$src/tree" "${devs[@]}" --parity 1 --json | tail -1 >"$work/backup.json"
# Wipe every catalog: the set has no usable catalog any more.
python3 - "$work/backup.json" "${loops[@]}" <<'PY'
import json, os, sys
j = json.loads(open(sys.argv[1]).read())
for d, dev in zip(j['devices'], sys.argv[2:]):
    start, end = d['data_end'], d['catalog_end']
    fd = os.open(dev, os.O_WRONLY)
    os.pwrite(fd, bytes(end - start), start)
    os.fsync(fd)
    os.close(fd)
PY
if "$pbio" verify "${devs[@]}" >/dev/null 2>&1; then echo "the catalog still reads" >&2; exit 1; fi
without=(--dev "${loops[0]}" --dev "${loops[1]}" --dev "${loops[3]}")
results="$work/results"; : >"$results"
# One run: $1 label, $2 binary, rest: devices. Appends "label wall cpu".
scan_once() {
    local label=$1 exe=$2; shift 2
    rm -rf "$work/out"
    /usr/bin/time -f "%e %U %S" -o "$work/time" "$exe" restore --scan --to "$work/out" "$@" --json \
        | tail -1 >"$work/line" || true
    read -r wall u s <"$work/time"
    cmp -s "$src/tree/large.bin" "$work/out/tree/large.bin" || { echo "$label: large.bin differs" >&2; exit 1; }
    diff -r "$src/tree/small" "$work/out/tree/small" >/dev/null || { echo "$label: small files differ" >&2; exit 1; }
    python3 - "$label" "$wall" "$u" "$s" "$work/line" "$results" <<'PY'
import json, sys
label, wall, u, s, line, results = sys.argv[1:]
j = json.loads(open(line).read())
cpu = float(u) + float(s)
print(f"  {label}: {float(wall):.3f} s wall, {cpu:.2f} s CPU; {j['files']} files, {j['payload_bytes'] >> 20} MiB, rebuilt {j.get('rebuild', {}).get('bytes', 0) >> 20} MiB in {j.get('rebuild', {}).get('records', 0)} records, exit ok={j['ok']}")
open(results, 'a').write(f"{label} {wall} {cpu}\n")
PY
}
echo "devices: ${loops[*]}; source $(du -sh "$src/tree" | cut -f1) on tmpfs; --parity 1, catalogs wiped"
for r in $(seq 1 "$reps"); do
    echo "rep $r:"
    jobs=(); for l in "${loops[@]}"; do jobs+=(--name="r$l" --filename="$l"); done
    /usr/bin/time -f "%e %U %S" -o "$work/time" fio --output-format=json --group_reporting --ioengine=io_uring \
        --direct=1 --rw=read --bs=1M --iodepth=32 --size=$(( src_mib / 3 + 8 ))M "${jobs[@]}" >/dev/null 2>&1
    read -r wall u s <"$work/time"
    echo "  fio read $(( (src_mib / 3 + 8) * 4 )) MiB: $wall s wall"
    echo "fio $wall $(python3 -c "print($u + $s)")" >>"$results"
    if [ -n "${PBIO_OLD:-}" ]; then scan_once "old-all-4" "$PBIO_OLD" "${devs[@]}"; fi
    scan_once "new-all-4" "$pbio" "${devs[@]}"
    scan_once "new-without-2" "$pbio" "${without[@]}"
done
python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, wall, cpu = line.split()
    rows.setdefault(label, []).append((float(wall), float(cpu)))
med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in rows.items()}
print("medians (wall s, CPU s):")
for k, (w, c) in med.items():
    print(f"  {k}: {w:.3f} s wall, {c:.2f} s CPU")
fio = med["fio"][0]
for k in med:
    if k != "fio":
        print(f"  {k} / fio read: {med[k][0] / fio:.2f}x wall")
if "old-all-4" in med:
    print(f"  new / old, all 4: {med['new-all-4'][0] / med['old-all-4'][0]:.2f}x wall, {med['new-all-4'][1] / med['old-all-4'][1]:.2f}x CPU")
print(f"  without device 2 / all 4: {med['new-without-2'][0] / med['new-all-4'][0]:.2f}x wall, {med['new-without-2'][1] / med['new-all-4'][1]:.2f}x CPU")
PY
