#!/bin/bash
# PERF #22: plain vs --compress on the same two loop devices, alternating;
# each backup followed by a restore of the set to files.
set -e
P=${PBIO:-target/release/pbio}; P=$(realpath $P)
D=${1:-/tmp/pbio-bench-compress}; mkdir -p $D; cd $D
# Where restores go: OUT=/dev/shm/x keeps the destination's disk (and its
# fsyncs) out of the measurement of the devices' read path.
O=${OUT:-$D/out}
mkdir -p rand text
[ -f rand/r.bin ] || head -c 1G /dev/urandom > rand/r.bin
if [ ! -f text/t0.txt ]; then for i in $(seq 0 7); do yes "line $i of a log file, pbio test: the quick brown fox $i" | head -c 128M > text/t$i.txt; done; fi
truncate -s 700M a.img b.img
A=$(losetup --direct-io=on -f --show a.img); B=$(losetup --direct-io=on -f --show b.img)
trap 'losetup -d $A $B; rm -rf $O' EXIT
one() { # label src opts...
  local label=$1 src=$2; shift 2
  /usr/bin/time -f "%U %S" -o t.txt $P backup $src --dev $A --dev $B --force --json "$@" > out.json
  local s=$(grep '"summary"' out.json)
  python3 -c "
import json,sys; s=json.loads(sys.argv[1]); cpu=sum(map(float,open('t.txt').read().split()))
media=sum(d['media_bytes'] for d in s['devices']); gib=s['payload_bytes']/2**30
print(f\"{sys.argv[2]:<22} {s['mib_per_sec']:8.1f} MiB/s  cpu {cpu:6.2f} s = {cpu/gib:5.2f} s/GiB  media/payload {media/s['payload_bytes']:.3f}\")" "$s" "$label"
  # The restore of the set to files, page cache dropped first: payload
  # over wall time (as scripts/bench-encrypt.sh).
  local bytes=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['payload_bytes'])" "$s")
  rm -rf $O; sync; echo 3 > /proc/sys/vm/drop_caches
  local t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o t.txt $P restore --dev $A --dev $B --to $O > /dev/null
  local t1=$(date +%s.%N)
  python3 -c "
import sys; secs=float(sys.argv[2]); cpu=sum(map(float,open('t.txt').read().split())); gib=int(sys.argv[3])/2**30
print(f\"{sys.argv[1]:<22} {gib*1024/secs:8.1f} MiB/s  cpu {cpu:6.2f} s = {cpu/gib:5.2f} s/GiB  (restore)\")" "$label" $(echo "$t1 - $t0" | bc) $bytes
  rm -rf $O
}
for rep in 1 2 3; do
  one "rand plain" rand
  one "rand zstd:1" rand --compress zstd:1
  one "rand lz4" rand --compress lz4
  one "text plain" text
  one "text zstd:1" text --compress zstd:1
  one "text lz4" text --compress lz4
done
