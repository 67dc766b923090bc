#!/usr/bin/env bash
# Two pbio binaries against each other and against fio read, on the same
# devices in one run: restore (to a tmpfs directory) and verify of the set
# the devices hold, fio ioengine=io_uring direct=1 bs=1M iodepth=QD read of
# the same bytes per device. Every figure REPS times, the order of the
# binaries alternating per rep; the median wall time and the process's
# CPU time (user + system, /usr/bin/time) are reported: on a shared, loaded
# machine the CPU seconds are the steadier figure.
#
#   scripts/read-ab.sh BIN_A BIN_B DEV...   (as root; the devices hold a set)
#
# Environment: REPS [5], QD [32], OUT [/dev/shm/pbio-read-ab] (restore target),
# FIO_SIZE [512M] (what fio reads per device: the set's bytes per device).
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 BIN_A BIN_B DEV..." >&2; exit 2; }
a=$1 b=$2
shift 2
devs=("$@")
reps=${REPS:-5}
qd=${QD:-32}
out=${OUT:-/dev/shm/pbio-read-ab}
size=${FIO_SIZE:-512M}
dargs=()
for d in "${devs[@]}"; do dargs+=(--dev "$d"); done
fargs=()
for d in "${devs[@]}"; do fargs+=(--name="$(basename "$d")" --filename="$d"); done
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
t() { # NAME CMD...: wall seconds appended to the results
    local name=$1
    shift
    drop
    /usr/bin/time -f '%e %U %S' -o /tmp/read-ab.time "$@" >/dev/null 2>"/tmp/read-ab.$name.err" ||
        echo "$name failed: $(tail -1 "/tmp/read-ab.$name.err")" >&2
    awk -v n="$name" '{print n "_wall " $1; print n "_cpu " $2 + $3}' /tmp/read-ab.time >>"$res"
}
res=$(mktemp)
for rep in $(seq 1 "$reps"); do
    order=("$a" "$b")
    [ $((rep % 2)) = 0 ] && order=("$b" "$a")
    for bin in "${order[@]}"; do
        tag=A
        [ "$bin" = "$b" ] && tag=B
        rm -rf "$out"
        t "restore_$tag" "$bin" restore "${dargs[@]}" --to "$out"
        rm -rf "$out"
        t "verify_$tag" "$bin" verify "${dargs[@]}"
    done
    drop
    fio --output-format=json --group_reporting --ioengine=io_uring --direct=1 --bs=1M \
        --iodepth="$qd" --rw=read --size="$size" "${fargs[@]}" >/tmp/read-ab.fio.json
    python3 -c '
import json,sys
j=json.load(open("/tmp/read-ab.fio.json"))
r=j["jobs"][0]["read"]
print("fio_read_io_s", r["io_bytes"]/r["bw_bytes"])' >>"$res"
done
rm -rf "$out"
python3 - "$res" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    k, v = line.split()
    rows.setdefault(k, []).append(float(v))
for k in sorted(rows):
    v = rows[k]
    print(f"{k:16s} median {statistics.median(v):6.3f} s  min {min(v):6.3f}  max {max(v):6.3f}  n={len(v)}")
PY
rm -f "$res"
