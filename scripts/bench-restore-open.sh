#!/bin/bash
# PERF #22: restore of an encrypted set against a plain one, the records
# opened on the restore workers (this build) or inline on each device's
# reader (INLINE=path: a build from before the workers, e.g. of 59f8b11;
# INLINE_ENV=VAR=value is set for it), alternating, in one run. The plain set is on two
# loop devices, the encrypted one on two others (same files, same disk).
# Usage: scripts/bench-restore-open.sh [DIR] [REPS]   (root; OUT=dir for
# the restores, /dev/shm by default)
set -e
P=${PBIO:-target/release/pbio}; P=$(realpath $P)
I=$(realpath ${INLINE:?INLINE=path of a build without the restore workers})
D=${1:-/tmp/pbio-bench-open}; REPS=${2:-5}; mkdir -p $D; cd $D
O=${OUT:-/dev/shm/pbio-bench-open-out}
mkdir -p rand
[ -f rand/r.bin ] || head -c 1G /dev/urandom > rand/r.bin
[ -f k.key ] || $P key new k.key > /dev/null
truncate -s 700M a.img b.img c.img d.img
A=$(losetup --direct-io=on -f --show a.img); B=$(losetup --direct-io=on -f --show b.img)
C=$(losetup --direct-io=on -f --show c.img); E=$(losetup --direct-io=on -f --show d.img)
trap 'losetup -d $A $B $C $E; rm -rf $O' EXIT
$P backup rand --dev $A --dev $B --force > /dev/null
$P backup rand --dev $C --dev $E --force --encrypt --key-file k.key > /dev/null
bytes=$(stat -c %s rand/r.bin)
one() { # label binary env devices...
  local label=$1 bin=$2 env=$3; shift 3
  rm -rf $O; sync; echo 3 > /proc/sys/vm/drop_caches
  local t0=$(date +%s.%N)
  env $env /usr/bin/time -f "%U %S" -o t.txt $bin restore "$@" --to $O > /dev/null
  local t1=$(date +%s.%N)
  python3 -c "
import sys; secs=float(sys.argv[2]); cpu=sum(map(float,open('t.txt').read().split())); gib=int(sys.argv[3])/2**30
print(f\"{sys.argv[1]:<26} {gib*1024/secs:8.1f} MiB/s  cpu {cpu:6.2f} s = {cpu/gib:5.2f} s/GiB\")" "$label" $(echo "$t1 - $t0" | bc) $bytes
}
for rep in $(seq $REPS); do
  one "plain" $P X=1 --dev $A --dev $B
  one "--encrypt, workers" $P X=1 --dev $C --dev $E --key-file k.key
  one "--encrypt, inline" $I ${INLINE_ENV:-X=1} --dev $C --dev $E --key-file k.key
done
