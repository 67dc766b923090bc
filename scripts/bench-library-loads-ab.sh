#!/bin/sh
# Issue 20 (20l): restore of a set spanning >= 4 cartridges of an emulated
# library (inplace=0, as a real library: labels read only in a drive) with
# rate-limited drives and robot moves, through one drive and through two,
# old binary vs new, alternating, same library, same run. Prints per run
# wall, user+sys CPU seconds and the library's loads (vlib.state "loads N"),
# then the medians; and a reference: the same bytes read by dd from the
# cartridges' data files at the drives' rate (what the drives cost alone).
# Usage: OLD=/path/old/pbio NEW=/path/new/pbio scripts/bench-library-loads-ab.sh [RUNS]
# Defaults: NEW=target/release/pbio; RATE=20M drives, MOVE_MS=1000 a move.
set -eu
RUNS=${1:-3}
NEW=${NEW:-$(pwd)/target/release/pbio}
OLD=${OLD:?give OLD=path of the old pbio binary}
RATE=${RATE:-20M}
MOVE_MS=${MOVE_MS:-1000}
W=$(mktemp -d /var/tmp/pbio-bench-libloads.XXXXXX)
trap 'rm -rf "$W"' EXIT
mkdir "$W/src"
for i in 1 2 3 4 5; do head -c $((30 << 20)) /dev/urandom > "$W/src/f$i"; done
L="$W/lib"
"$NEW" backup "$W/src" --changer "vlib:$L,slots=8,drives=2,size=40M,move_ms=0,inplace=0" > /dev/null
N=$(ls "$L/cartridges" | while read -r b; do test -s "$L/cartridges/$b/vtape.data" && echo "$b"; done | wc -l)
echo "set on $N cartridges (of 8), drives rate=$RATE, move_ms=$MOVE_MS"
loads() { sed -n 's/^loads //p' "$L/vlib.state"; }
# one BIN DRIVES...: "wall cpu loads" of a restore
one() {
  bin=$1; shift
  rm -rf "$W/r"
  drives=""; for d in "$@"; do drives="$drives --drive $d"; done
  before=$(loads)
  # shellcheck disable=SC2086
  /usr/bin/time -f "%e %U %S" -o "$W/t" "$bin" restore --changer "vlib:$L,move_ms=$MOVE_MS,rate=$RATE" $drives --to "$W/r" > /dev/null
  cmp -s "$W/src/f3" "$W/r/src/f3" || { echo "restore differs" >&2; exit 1; }
  read -r wall u s < "$W/t"
  echo "$wall $(echo "$u + $s" | bc) $(($(loads) - before))"
}
: > "$W/res"
for r in $(seq "$RUNS"); do
  for d in 1 2; do
    drv=0; [ "$d" = 2 ] && drv="0 1"
    for which in old new; do
      bin=$OLD; [ "$which" = new ] && bin=$NEW
      # shellcheck disable=SC2086
      res=$(one "$bin" $drv)
      echo "run $r $which drives=$d: wall/cpu/loads $res"
      echo "$which $d $res" >> "$W/res"
    done
  done
  # Reference: the set's bytes read at the drives' rate by dd (no loads).
  bytes=$(cat "$L"/cartridges/*/vtape.data | wc -c)
  rate=$(numfmt --from=iec "$RATE")
  t=$( { /usr/bin/time -f "%e" sh -c "cat $L/cartridges/*/vtape.data | dd of=/dev/null bs=1M status=none" ; } 2>&1 )
  echo "run $r reference: dd of the $bytes bytes ${t}s; at $RATE: $(echo "scale=2; $bytes / $rate" | bc)s"
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for d in 1 2; do
  for which in old new; do
    w=$(awk -v x="$which" -v d="$d" '$1==x && $2==d {print $3}' "$W/res" | median)
    c=$(awk -v x="$which" -v d="$d" '$1==x && $2==d {print $4}' "$W/res" | median)
    l=$(awk -v x="$which" -v d="$d" '$1==x && $2==d {print $5}' "$W/res" | median)
    echo "median $which drives=$d: wall ${w}s cpu ${c}s loads $l"
  done
done
