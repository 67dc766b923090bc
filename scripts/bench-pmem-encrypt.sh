#!/bin/bash
# PERF #22 on pmem (wt-22p): plain vs --encrypt vs --compress zstd:1
# (incompressible source: stored raw) on the same emulated pmem file
# (tmpfs), backup and restore, alternating, with the process's CPU seconds
# per GiB; reference: dd of the same source into a tmpfs file, same run.
# Usage: scripts/bench-pmem-encrypt.sh [DIR] [REPS] [MiB]
set -e
P=${PBIO:-target/release/pbio}; P=$(realpath $P)
D=${1:-/tmp/pbio-bench-pmem}; REPS=${2:-3}; MB=${3:-512}
mkdir -p $D; cd $D
S=/dev/shm/pbio-bench-pmem; mkdir -p $S
O=$S/out; PM=$S/pmem.img
trap 'rm -rf $S' EXIT
mkdir -p rand
[ -f rand/r.bin ] && [ $(stat -c %s rand/r.bin) = $((MB << 20)) ] || head -c ${MB}M /dev/urandom > rand/r.bin
[ -f k.key ] || $P key new k.key > /dev/null
cat rand/r.bin > /dev/null   # the source from the page cache
rate() { # label seconds cpu-file bytes
  python3 -c "
import sys; secs=float(sys.argv[2]); cpu=sum(map(float,open(sys.argv[3]).read().split())); gib=int(sys.argv[4])/2**30
print(f\"{sys.argv[1]:<30} {gib*1024/secs:8.1f} MiB/s  cpu {cpu:6.2f} s = {cpu/gib:5.2f} s/GiB\")" "$@"
}
ref() {
  local t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o t.txt dd if=rand/r.bin of=$S/dd.img bs=1M conv=fsync status=none
  local t1=$(date +%s.%N)
  rate "dd to tmpfs (reference)" $(echo "$t1 - $t0" | bc) t.txt $((MB << 20))
  rm -f $S/dd.img
}
one() { # label opts...
  local label=$1; shift
  local t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o t.txt $P backup rand --dev pmem:$PM,size=$((MB + 128))M --force --json "$@" > out.json
  local t1=$(date +%s.%N)
  local bytes=$(python3 -c "import json; print([json.loads(l) for l in open('out.json') if '\"summary\"' in l][0]['payload_bytes'])")
  rate "backup  $label" $(echo "$t1 - $t0" | bc) t.txt $bytes
  rm -rf $O
  local key=(); [[ " $* " == *" --encrypt "* ]] && key=(--key-file k.key)
  t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o t.txt $P restore --dev pmem:$PM --to $O "${key[@]}" > /dev/null
  t1=$(date +%s.%N)
  rate "restore $label" $(echo "$t1 - $t0" | bc) t.txt $bytes
  rm -rf $O
}
uptime
for rep in $(seq $REPS); do
  ref
  one "plain"
  one "--encrypt" --encrypt --key-file k.key
  one "--compress zstd:1" --compress zstd:1
done
