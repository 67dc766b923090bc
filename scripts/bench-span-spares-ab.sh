#!/usr/bin/env bash
# Spares in a spanning backup, two pbio binaries A/B (issue 20: a drive
# whose cartridge ran dry with room loaded a spare for the work another
# cartridge handed back at its end of medium). An emulated library (vlib:,
# 2 drives, 6 cartridges of 32 MiB, moves of MOVE_MS); the third cartridge
# reaches its end of medium after 16 MiB (its early-warning zone made half
# of it). A 60 MiB set (planned on 3 cartridges) per rep, alternating the
# binaries, each on a fresh library. Per binary: cartridges used, loads,
# medians of wall and CPU seconds (user + system, /usr/bin/time); the
# reference is `dd` writing the set's bytes to a file in the same
# directory, the same run.
#
#   scripts/bench-span-spares-ab.sh BIN_OLD BIN_NEW
#
# Environment: REPS [5], MOVE_MS [300], DIR [/dev/shm/pbio-span-ab]
# (source and library; removed at the end).
set -euo pipefail
[ $# = 2 ] || { echo "usage: $0 BIN_OLD BIN_NEW" >&2; exit 2; }
old=$1 new=$2
reps=${REPS:-5}
move_ms=${MOVE_MS:-300}
dir=${DIR:-/dev/shm/pbio-span-ab}
rm -rf "$dir"
mkdir -p "$dir/src"
trap 'rm -rf "$dir"' EXIT
head -c 40M /dev/urandom >"$dir/src/a"
head -c 20M /dev/urandom >"$dir/src/b"
res=$(mktemp)
run() { # NAME BIN
    local name=$1 bin=$2 lib="vlib:$dir/lib"
    rm -rf "$dir/lib"
    "$bin" changer status --changer "$lib,slots=6,drives=2,size=32M,move_ms=$move_ms" >/dev/null
    printf 'size=33554432\new=16777216\n' >"$dir/lib/cartridges/PB0003L6/vtape.conf"
    /usr/bin/time -f "%e %U %S" -o "$dir/time" "$bin" backup "$dir/src" --changer "$lib" --json \
        >"$dir/out" 2>"$dir/err" || { cat "$dir/err" >&2; exit 1; }
    local fin
    fin=$(grep '"event":"finished"' "$dir/out" | tail -1)
    local carts loads
    carts=$(echo "$fin" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["cartridges"]))')
    loads=$(echo "$fin" | python3 -c 'import json,sys; print(json.load(sys.stdin)["loads"])')
    read -r wall user sys <"$dir/time"
    echo "$name $carts $loads $wall $(echo "$user + $sys" | bc)" >>"$res"
}
for _ in $(seq "$reps"); do
    run old "$old"
    run new "$new"
    /usr/bin/time -f "%e %U %S" -o "$dir/time" sh -c "cat $dir/src/a $dir/src/b | dd of=$dir/dd.out bs=1M conv=fsync status=none"
    read -r wall user sys <"$dir/time"
    echo "dd - - $wall $(echo "$user + $sys" | bc)" >>"$res"
    rm -f "$dir/dd.out"
done
python3 - "$res" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print(f"{'binary':6} {'cartridges':>10} {'loads':>6} {'wall s':>8} {'cpu s':>8}  (medians of {len(rows)//3})")
med = {}
for name in ("old", "new", "dd"):
    r = [x for x in rows if x[0] == name]
    c = "-" if r[0][1] == "-" else "/".join(sorted({x[1] for x in r}))
    l = "-" if r[0][2] == "-" else "/".join(sorted({x[2] for x in r}))
    w = statistics.median(float(x[3]) for x in r)
    u = statistics.median(float(x[4]) for x in r)
    med[name] = (w, u)
    print(f"{name:6} {c:>10} {l:>6} {w:8.2f} {u:8.2f}")
print(f"new/old wall {med['new'][0]/med['old'][0]:.2f}x, cpu {med['new'][1]/max(med['old'][1],1e-9):.2f}x; "
      f"new/dd wall {med['new'][0]/max(med['dd'][0],1e-9):.1f}x")
EOF
rm -f "$res"
