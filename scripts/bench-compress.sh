#!/bin/bash
# PERF #22: plain vs --compress on the same two loop devices, alternating.
set -e
P=${PBIO:-target/release/pbio}; P=$(realpath $P)
D=${1:-/tmp/pbio-bench-compress}; mkdir -p $D; cd $D
mkdir -p rand text
[ -f rand/r.bin ] || head -c 1G /dev/urandom > rand/r.bin
if [ ! -f text/t0.txt ]; then for i in $(seq 0 7); do yes "line $i of a log file, pbio test: the quick brown fox $i" | head -c 128M > text/t$i.txt; done; fi
truncate -s 700M a.img b.img
A=$(losetup --direct-io=on -f --show a.img); B=$(losetup --direct-io=on -f --show b.img)
trap 'losetup -d $A $B' EXIT
one() { # label src opts...
  local label=$1 src=$2; shift 2
  /usr/bin/time -f "%U %S" -o t.txt $P backup $src --dev $A --dev $B --force --json "$@" > out.json
  local s=$(grep '"summary"' out.json)
  python3 -c "
import json,sys; s=json.loads(sys.argv[1]); cpu=sum(map(float,open('t.txt').read().split()))
media=sum(d['media_bytes'] for d in s['devices']); gib=s['payload_bytes']/2**30
print(f\"{sys.argv[2]:<22} {s['mib_per_sec']:8.1f} MiB/s  cpu {cpu:6.2f} s = {cpu/gib:5.2f} s/GiB  media/payload {media/s['payload_bytes']:.3f}\")" "$s" "$label"
}
for rep in 1 2 3; do
  one "rand plain" rand
  one "rand zstd:1" rand --compress zstd:1
  one "rand lz4" rand --compress lz4
  one "text plain" text
  one "text zstd:1" text --compress zstd:1
  one "text lz4" text --compress lz4
done
