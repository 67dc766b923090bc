#!/usr/bin/env bash
# PERF.md "#19 scrub": `pbio scrub` of a --parity 1 set on 4 loop devices
# vs fio reading the same bytes of the same devices (io_uring, direct,
# bs=1M, qd32, one job per device) in the same run; and `scrub --repair
# --replace` of a wiped device onto a fifth one. Needs root.
# Usage: scripts/bench-scrub.sh [REPS] [SOURCE_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
reps="${1:-3}"; src_mib="${2:-320}"
pbio="$PWD/target/release/pbio"
work="$(mktemp -d /tmp/bench-scrub.XXXXXX)"
src="$(mktemp -d /dev/shm/bench-scrub-src.XXXXXX)"
loops=()
cleanup() {
    for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
    rm -rf "$work" "$src"
}
trap cleanup EXIT
mkdir -p "$src/tree/small"
head -c $(( (src_mib - 20) << 20 )) /dev/urandom >"$src/tree/large.bin"
for i in $(seq 1 200); do head -c $(( (RANDOM % 200 + 1) * 512 )) /dev/urandom >"$src/tree/small/f$i"; done
for i in 0 1 2 3 4; do
    truncate -s $(( src_mib * 2 / 3 + 64 ))M "$work/d$i.img"
    loops+=("$(losetup --direct-io=on -f --show "$work/d$i.img")")
done
devs=(); for l in "${loops[@]:0:4}"; do devs+=(--dev "$l"); done
"$pbio" backup "$src/tree" "${devs[@]}" --force --parity 1 --json | tail -1 >/dev/null
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])$1)"; }
echo "devices: ${loops[*]:0:4}; source $(du -sh "$src/tree" | cut -f1) on tmpfs"
for r in $(seq 1 "$reps"); do
    line=$("$pbio" scrub "${devs[@]}" --json | tail -1)
    read_b=$(echo "$line" | field "['bytes_read']"); t=$(echo "$line" | field "['seconds']")
    echo "rep $r: scrub: $(( read_b >> 20 )) MiB in $t s: $(python3 -c "print(round($read_b / 1048576 / $t))") MiB/s"
    per=$(( read_b / 4 / 1048576 + 1 ))
    jobs=(); for l in "${loops[@]:0:4}"; do jobs+=(--name="r$l" --filename="$l" --offset=4096); done
    fio_kib=$(fio --output-format=json --group_reporting --ioengine=io_uring --direct=1 --rw=read \
        --bs=1M --iodepth=32 --size=${per}M "${jobs[@]}" 2>/dev/null |
        python3 -c "import json,sys; print(json.load(sys.stdin)['jobs'][0]['read']['bw'])")
    echo "rep $r: fio read ${per} MiB per device, one job per device (io_uring direct=1 bs=1M qd32): $(( fio_kib / 1024 )) MiB/s"
done
# Repair: device 2 wiped, rebuilt onto device 4.
dd if=/dev/zero of="${loops[2]}" bs=1M oflag=direct status=none 2>/dev/null || true
start=$(date +%s.%N)
line=$("$pbio" scrub "${devs[@]}" --repair --replace "${loops[2]}=${loops[4]}" --json | tail -1)
end=$(date +%s.%N)
echo "repair --replace: $(echo "$line" | field "['repair']['media_bytes_written']" | awk '{print int($1/1048576)}') MiB written, scrub pass $(echo "$line" | field "['seconds']") s, repair pass $(echo "$line" | field "['repair']['seconds']") s, wall $(python3 -c "print(round($end - $start, 2))") s"
"$pbio" verify --dev "${loops[0]}" --dev "${loops[1]}" --dev "${loops[4]}" --dev "${loops[3]}" >/dev/null && echo "verify with the new device: ok"
