#!/usr/bin/env bash
# Tape read path, two pbio binaries A/B (issue 20 item 7: the tape readers
# check a block that came back shorter than asked, and read it again when
# it is not a whole record): restore and verify of one set from an emulated
# tape (vtape:, 1 MiB --tape-block: 528384-byte records read with larger
# requests, so every record is a short read that is checked), alternating
# the binaries per rep, and `dd bs=1M` reading the tape's data file (the
# same bytes, from the page cache) in the same run as the reference.
# Medians of wall and CPU seconds (user + system, /usr/bin/time).
#
#   scripts/bench-tape-read-ab.sh BIN_OLD BIN_NEW
#
# Environment: SIZE [256M] the set, REPS [5], DIR [/dev/shm/pbio-tape-ab]
# (source, tape and restore target; removed at the end).
set -euo pipefail
[ $# = 2 ] || { echo "usage: $0 BIN_OLD BIN_NEW" >&2; exit 2; }
old=$1 new=$2
size=${SIZE:-256M}
reps=${REPS:-5}
dir=${DIR:-/dev/shm/pbio-tape-ab}
rm -rf "$dir"
mkdir -p "$dir/src"
trap 'rm -rf "$dir"' EXIT
bytes=$(numfmt --from=iec "$size")
i=0
left=$bytes
while [ "$left" -gt 0 ]; do
    n=$((left < 67108864 ? left : 67108864))
    head -c "$n" /dev/urandom >"$dir/src/f$i.bin"
    left=$((left - n))
    i=$((i + 1))
done
tape="vtape:$dir/tape"
"$new" backup "$dir/src" --dev "$tape,size=$((bytes * 2))" --force --tape-block 1M >/dev/null 2>"$dir/backup.err" || {
    cat "$dir/backup.err" >&2
    exit 1
}
res=$(mktemp)
t() { # NAME CMD...
    local name=$1
    shift
    rm -rf "$dir/out"
    /usr/bin/time -f '%e %U %S' -o "$dir/time" "$@" >/dev/null 2>"$dir/$name.err" ||
        { echo "$name failed: $(tail -1 "$dir/$name.err")" >&2; exit 1; }
    awk -v n="$name" '{print n "_wall " $1; print n "_cpu " $2 + $3}' "$dir/time" >>"$res"
}
for rep in $(seq 1 "$reps"); do
    pair=(old new)
    [ $((rep % 2)) = 0 ] && pair=(new old)
    for which in "${pair[@]}"; do
        bin=$old
        [ "$which" = new ] && bin=$new
        t "restore_$which" "$bin" restore --dev "$tape" --to "$dir/out"
        t "verify_$which" "$bin" verify --dev "$tape"
    done
    t dd dd if="$dir/tape/vtape.data" of=/dev/null bs=1M
done
median() { grep "^$1 " "$res" | awk '{print $2}' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
echo "set $size on $tape, $reps reps, load $(cut -d' ' -f1-3 /proc/loadavg)"
for m in restore verify; do
    for k in wall cpu; do
        o=$(median "${m}_old_$k")
        n=$(median "${m}_new_$k")
        echo "$m $k: old $o s, new $n s, new/old $(awk -v a="$n" -v b="$o" 'BEGIN { printf "%.3f", (b > 0) ? a / b : 0 }')"
    done
done
d=$(median dd_wall)
for m in restore verify; do
    n=$(median "${m}_new_wall")
    echo "$m new vs dd bs=1M of the tape's data file ($d s): $(awk -v a="$n" -v b="$d" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')x the time"
done
rm -f "$res"
