#!/bin/bash
# PERF #22 encryption: plain vs --encrypt (and --encrypt --compress zstd:1)
# on the same two loop devices, backup and restore, alternating, with the
# process's CPU seconds per GiB. Usage: scripts/bench-encrypt.sh [DIR] [REPS]
set -e
P=${PBIO:-target/release/pbio}; P=$(realpath $P)
D=${1:-/tmp/pbio-bench-encrypt}; REPS=${2:-3}; mkdir -p $D; cd $D
# Where restores go: OUT=/dev/shm/x keeps the destination's disk (and its
# fsyncs) out of the measurement of the devices' read path.
O=${OUT:-$D/out}
mkdir -p rand
[ -f rand/r.bin ] || head -c 1G /dev/urandom > rand/r.bin
[ -f k.key ] || $P key new k.key > /dev/null
truncate -s 700M a.img b.img
A=$(losetup --direct-io=on -f --show a.img); B=$(losetup --direct-io=on -f --show b.img)
trap 'losetup -d $A $B; rm -rf $O' EXIT
rate() { # label seconds cpu-file bytes
  python3 -c "
import sys; secs=float(sys.argv[2]); cpu=sum(map(float,open(sys.argv[3]).read().split())); gib=int(sys.argv[4])/2**30
print(f\"{sys.argv[1]:<28} {gib*1024/secs:8.1f} MiB/s  cpu {cpu:6.2f} s = {cpu/gib:5.2f} s/GiB\")" "$@"
}
one() { # label opts...
  local label=$1; shift
  local t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o t.txt $P backup rand --dev $A --dev $B --force --json "$@" > out.json
  local t1=$(date +%s.%N)
  local bytes=$(python3 -c "import json; print([json.loads(l) for l in open('out.json') if '\"summary\"' in l][0]['payload_bytes'])")
  rate "backup  $label" $(echo "$t1 - $t0" | bc) t.txt $bytes
  rm -rf $O
  local key=(); [[ " $* " == *" --encrypt "* ]] && key=(--key-file k.key)
  sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o t.txt $P restore --dev $A --dev $B --to $O "${key[@]}" > /dev/null
  t1=$(date +%s.%N)
  rate "restore $label" $(echo "$t1 - $t0" | bc) t.txt $bytes
}
for rep in $(seq $REPS); do
  one "plain"
  one "--encrypt" --encrypt --key-file k.key
  one "--encrypt --compress zstd:1" --encrypt --key-file k.key --compress zstd:1
done
