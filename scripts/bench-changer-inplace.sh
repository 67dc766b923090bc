#!/bin/sh
# Issue 20: backup and restore over an emulated library whose cartridges
# are read in their slots (inplace=1) or only in a drive (inplace=0, as a
# real library), against the same data on two vtapes without swaps.
# Prints wall time and the library's loads (vlib.state "loads N").
# Usage: scripts/bench-changer-inplace.sh [RUNS] (needs target/release/pbio)
set -eu
RUNS=${1:-3}
PBIO=${PBIO:-$(pwd)/target/release/pbio}
W=$(mktemp -d /var/tmp/pbio-bench-changer.XXXXXX)
trap 'rm -rf "$W"' EXIT
mkdir "$W/src"
for i in 1 2 3 4 5; do head -c $((30 << 20)) /dev/urandom > "$W/src/f$i"; done
loads() { sed -n 's/^loads //p' "$1/vlib.state"; }
secs() { s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
for r in $(seq "$RUNS"); do
  for inplace in 1 0; do
    L="$W/L$inplace"; rm -rf "$L" "$W/r"
    b=$(secs "$PBIO" backup "$W/src" --changer "vlib:$L,slots=8,drives=2,size=40M,move_ms=100,inplace=$inplace")
    lb=$(loads "$L")
    r2=$(secs "$PBIO" restore --changer "vlib:$L" --to "$W/r"); rm -rf "$W/r"
    lr2=$(($(loads "$L") - lb))
    r1=$(secs "$PBIO" restore --changer "vlib:$L" --drive 0 --to "$W/r"); rm -rf "$W/r"
    lr1=$(($(loads "$L") - lb - lr2))
    echo "run $r inplace=$inplace: backup ${b}s ($lb loads), restore 2 drives ${r2}s ($lr2 loads), 1 drive ${r1}s ($lr1 loads)"
  done
  rm -rf "$W/v0" "$W/v1"
  t=$(secs "$PBIO" backup "$W/src" --dev "vtape:$W/v0,size=200M" --dev "vtape:$W/v1,size=200M")
  rt=$(secs sh -c "tar cf - -C \"$W\" src | cat > /dev/null")
  echo "run $r reference: no swaps, 2 vtapes ${t}s; tar cf - src | cat ${rt}s"
done
