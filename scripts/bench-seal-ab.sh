#!/bin/bash
# PERF #22, A/B of two builds: plain, `--encrypt` and `--compress zstd:1`
# (incompressible data: stored raw) backup and restore on the same two loop
# devices, the OLD and NEW binaries alternating within each round, every
# command's wall time and CPU seconds (user + system, /usr/bin/time). At the
# end: per build and mode the medians, the ratio to plain of the same build
# (rate, median of the per-round ratios) and CPU s/GiB, NEW against OLD.
# Usage (root, from the repository):
#   OLD=/path/old-pbio NEW=target/release/pbio scripts/bench-seal-ab.sh [DIR] [REPS]
# OUT=dir for the restores (default /dev/shm/pbio-seal-ab-out: tmpfs, so the
# destination's disk is not measured). Page cache dropped before each restore.
set -e
OLD=$(realpath ${OLD:?OLD=path of the build to compare against})
NEW=$(realpath ${NEW:-target/release/pbio})
D=${1:-/tmp/pbio-bench-seal-ab}; REPS=${2:-5}; mkdir -p $D; cd $D
O=${OUT:-/dev/shm/pbio-seal-ab-out}
mkdir -p rand
[ -f rand/r.bin ] || head -c 1G /dev/urandom > rand/r.bin
[ -f k.key ] || $NEW key new k.key > /dev/null
truncate -s 700M a.img b.img
A=$(losetup --direct-io=on -f --show a.img); B=$(losetup --direct-io=on -f --show b.img)
trap 'losetup -d $A $B; rm -rf $O' EXIT
LOG=$D/results.txt; : > $LOG
bytes=$(stat -c %s rand/r.bin)
timed() { # build mode op command...
  local build=$1 mode=$2 op=$3; shift 3
  local t0=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o t.txt "$@" > /dev/null
  local t1=$(date +%s.%N)
  local line="$build $mode $op $(echo "$t1 - $t0" | bc) $(awk '{print $1 + $2}' t.txt) $bytes"
  echo "$line" | tee -a $LOG
}
one() { # build binary mode opts...
  local build=$1 bin=$2 mode=$3; shift 3
  timed $build $mode backup $bin backup rand --dev $A --dev $B --force "$@"
  local key=(); [[ " $* " == *" --encrypt "* ]] && key=(--key-file k.key)
  rm -rf $O; sync; echo 3 > /proc/sys/vm/drop_caches
  timed $build $mode restore $bin restore --dev $A --dev $B --to $O "${key[@]}"
  rm -rf $O
}
echo "# build mode op wall_s cpu_s payload_bytes   (load: $(cut -d' ' -f1-3 /proc/loadavg))"
for rep in $(seq $REPS); do
  for b in old new; do
    bin=$OLD; [ $b = new ] && bin=$NEW
    one $b $bin plain
    one $b $bin encrypt --encrypt --key-file k.key
    one $b $bin zstd1 --compress zstd:1
  done
done
echo "# load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - $LOG <<'EOF'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
runs = {}
for b, mode, op, wall, cpu, n in rows:
    gib = int(n) / 2**30
    runs.setdefault((b, mode, op), []).append((gib * 1024 / float(wall), float(cpu) / gib))
print(f"{'op':<8} {'mode':<8} {'build':<4} {'MiB/s (rounds)':<44} {'x plain':>8} {'CPU s/GiB (median)':>18}")
for op in ("backup", "restore"):
    for mode in ("plain", "encrypt", "zstd1"):
        for b in ("old", "new"):
            r = runs.get((b, mode, op))
            if not r:
                continue
            plain = runs[(b, "plain", op)]
            ratios = [x[0] / p[0] for x, p in zip(r, plain)]
            rates = ", ".join(f"{x[0]:.0f}" for x in r)
            print(f"{op:<8} {mode:<8} {b:<4} {rates:<44} {st.median(ratios):8.2f} "
                  f"{st.median(x[1] for x in r):8.2f} ({min(x[1] for x in r):.2f}-{max(x[1] for x in r):.2f})")
EOF
