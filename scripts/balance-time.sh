#!/bin/bash
# --balance time on two emulated tapes at 5 and 15 MiB/s (issue 19): wall
# time against the ideal makespan, total bytes / 20 MiB/s, and against the
# ideal plus the fixed costs (the same backup at 1000x the rates).
#
# usage: scripts/balance-time.sh [SOURCE_DIR] [RUNS]
# Without SOURCE_DIR, a 100 MiB file and a tree of 400 small files and a
# 40 MiB one are made in a temporary directory and both are measured.
set -euo pipefail
PBIO=${PBIO:-$(dirname "$0")/../target/release/pbio}
RUNS=${2:-3}
WORK=$(mktemp -d /tmp/pbio-balance-time.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

backup() { # SRC SLOW_RATE FAST_RATE -> "wall_s payload_bytes slow_bytes fast_bytes slow_s fast_s"
    rm -rf "$WORK/t1" "$WORK/t2"
    local t0 t1 out
    t0=$(date +%s.%N)
    out=$("$PBIO" backup "$1" --json --balance time \
        --dev "vtape:$WORK/t1,size=1G,rate=$2" --dev "vtape:$WORK/t2,size=1G,rate=$3")
    t1=$(date +%s.%N)
    echo "$out" | python3 -c "
import sys, json
wall = $t1 - $t0
for l in sys.stdin:
    v = json.loads(l)
    if v.get('event') == 'summary':
        d = v['devices']
        print(wall, v['payload_bytes'], d[0]['payload_bytes'], d[1]['payload_bytes'], d[0]['seconds'], d[1]['seconds'])
"
}

measure() { # SRC
    local fixed
    fixed=$(backup "$1" 5000M 15000M | awk '{print $1}')
    for _ in $(seq "$RUNS"); do
        backup "$1" 5M 15M | awk -v fixed="$fixed" -v src="$1" '{
            ideal = $2 / (20 * 1048576);
            printf "%s: wall %.2f s, ideal %.2f s (x%.3f), fixed %.2f s, ideal+fixed x%.3f; slow %.1f MiB in %.2f s, fast %.1f MiB in %.2f s (%.2fx)\n",
                src, $1, ideal, $1 / ideal, fixed, $1 / (ideal + fixed), $3 / 1048576, $5, $4 / 1048576, $6, $4 / $3
        }'
    done
}

if [ $# -ge 1 ]; then
    measure "$1"
else
    mkdir -p "$WORK/big" "$WORK/tree/small"
    head -c $((100 << 20)) /dev/urandom >"$WORK/big/one.bin"
    head -c $((40 << 20)) /dev/urandom >"$WORK/tree/large.bin"
    for k in $(seq 400); do head -c $((RANDOM * 2 + 1)) /dev/urandom >"$WORK/tree/small/f$k"; done
    measure "$WORK/big"
    measure "$WORK/tree"
fi
