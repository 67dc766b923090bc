#!/usr/bin/env bash
# pbio's NBD client against fio's (ioengine=nbd, libnbd) on the same
# exports, in one run; and --balance time over a local disk, a LAN site
# and a WAN site.
#
#   scripts/bench-nbd.sh            (as root; brings the test bed up)
#
# What it measures (each figure PBIO_BENCH_REPS times, the median kept):
#   (a) per site: fio ioengine=nbd bs=1M iodepth=32 sequential write of
#       SIZE bytes vs `pbio backup` of a one-file tree of SIZE bytes (on
#       tmpfs, so the source is not the limit) to that export alone;
#   (b) per site: fio sequential read of SIZE bytes vs `pbio verify` of
#       (a)'s set (reads every record, checks CRCs and digests, writes
#       nothing) and `pbio restore` of it into tmpfs;
#   (b') per site: `pbio bench --rw write|read` (pbio's own ring and NBD
#       pipe, no source, no format: the transport alone) vs the same fio;
#   (c) `pbio backup --balance time` of a tree to the first loop device of
#       scripts/testbed.sh, the lan site and the wan site (rates measured
#       by pbio's probe): every device's finish time, and the spread
#       (max - min) / max, which the issue wants within 10 %; the same
#       tree with --balance bytes for comparison (PBIO_BENCH_BALANCE_BYTES=1).
# Sites: "local" (qemu-nbd on a unix socket, export on tmpfs: no link
# limit, so the figure is the clients' own ceiling), "lan" (1gbit tbf) and
# "wan" (40mbit tbf) from `scripts/testbed.sh nbd-up`.
#
# Environment (defaults in brackets):
#   PBIO_BENCH_REPS [3]          repetitions of (a) and (b)
#   PBIO_BENCH_LOCAL_SIZE [1G]   bytes for the local site
#   PBIO_BENCH_LAN_SIZE [512M]   bytes for the lan site
#   PBIO_BENCH_WAN_SIZE [48M]    bytes for the wan site
#   PBIO_BENCH_BALANCE_SIZE [2G]  tree of (c): one big file and 64 small ones
#                                (large enough that one 1 MiB record on the
#                                wan link, ~0.2 s, is small against the run)
#   PBIO_BENCH_DIR [/var/tmp/pbio-bench]  results
#   PBIO_BENCH_TMPFS [/dev/shm/pbio-bench-nbd]  trees, restores, local export
#   PBIO                         the pbio binary [target/release/pbio]
# Output: the table on stdout and in $PBIO_BENCH_DIR/nbd-<time>/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."

reps=${PBIO_BENCH_REPS:-3}
work=${PBIO_BENCH_DIR:-/var/tmp/pbio-bench}
tmpfs=${PBIO_BENCH_TMPFS:-/dev/shm/pbio-bench-nbd}
pbio=${PBIO:-$PWD/target/release/pbio}

say() { echo "bench-nbd: $*" >&2; }
die() { say "$*"; exit 2; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, loop devices)"
command -v fio >/dev/null || die "needs fio"
fio --enghelp 2>/dev/null | grep -qw nbd || die "this fio has no nbd engine (libnbd)"
command -v qemu-nbd >/dev/null || die "needs qemu-nbd (qemu-utils)"
command -v python3 >/dev/null || die "needs python3"
[ -x "$pbio" ] || cargo build --release --quiet
bytes() { numfmt --from=iec "${1%B}"; }

out=$work/nbd-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out" "$tmpfs"
local_pid=
cleanup() {
    [ -n "$local_pid" ] && kill "$local_pid" 2>/dev/null || true
    rm -rf "$tmpfs"
}
trap cleanup EXIT

loop=$(scripts/testbed.sh up | head -n1)
mapfile -t sites < <(scripts/testbed.sh nbd-up)
lan=${sites[0]}
wan=${sites[1]}
local_size=$(bytes "${PBIO_BENCH_LOCAL_SIZE:-1G}")
qemu-img create -q -f raw "$tmpfs/local.img" $((local_size + (256 << 20)))
qemu-nbd --persistent --shared=8 -f raw --export-name=local \
    --socket="$tmpfs/local.sock" "$tmpfs/local.img" 2>"$out/local-nbd.log" &
local_pid=$!
for _ in $(seq 50); do [ -S "$tmpfs/local.sock" ] && break; sleep 0.1; done
local_url="nbd+unix:///local?socket=$tmpfs/local.sock"
say "sites: local $local_url, lan $lan, wan $wan; disk $loop"

median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
# MiB/s from fio's json (write or read).
fio_mibs() {
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["jobs"][0][sys.argv[2]]["bw_bytes"]/1048576)' "$1" "$2"
}
# From pbio's --json lines: the summary's payload MiB/s.
pbio_mibs() {
    python3 -c '
import json,sys
for line in open(sys.argv[1]):
    try: e=json.loads(line)
    except ValueError: continue
    if e.get("event")=="summary": print(e["payload_bytes"]/1048576/e["seconds"])
' "$1"
}

# From `pbio bench --json`: the summary's MiB/s.
bench_mibs() {
    python3 -c '
import json,sys
for line in open(sys.argv[1]):
    try: e=json.loads(line)
    except ValueError: continue
    if e.get("event")=="summary": print(e["bytes"]/1048576/e["seconds"])
' "$1"
}

declare -A size_of=([local]=$local_size [lan]=$(bytes "${PBIO_BENCH_LAN_SIZE:-512M}") [wan]=$(bytes "${PBIO_BENCH_WAN_SIZE:-48M}"))
declare -A url_of=([local]=$local_url [lan]=$lan [wan]=$wan)
printf '| site | bytes | fio write MiB/s | pbio backup MiB/s | ratio | fio read MiB/s | pbio verify MiB/s | ratio | pbio restore MiB/s | ratio |\n' >"$out/summary.md"
printf '|---|---|---|---|---|---|---|---|---|---|\n' >>"$out/summary.md"
for site in local lan wan; do
    url=${url_of[$site]}
    size=${size_of[$site]}
    tree=$tmpfs/tree-$site
    rm -rf "$tree" && mkdir -p "$tree"
    head -c "$size" /dev/urandom >"$tree/data.bin"
    fw=() pw=() fr=() pv=() pr=() bw=() br=()
    for r in $(seq "$reps"); do
        say "$site: rep $r: fio write"
        fio --name=w --ioengine=nbd --uri="$url" --rw=write --bs=1M --iodepth=32 \
            --size="$size" --output-format=json --output="$out/$site-fio-write-$r.json" >/dev/null 2>&1
        fw+=("$(fio_mibs "$out/$site-fio-write-$r.json" write)")
        say "$site: rep $r: pbio backup"
        "$pbio" backup "$tree" --dev "$url" --force --json >"$out/$site-pbio-backup-$r.json" 2>"$out/$site-pbio-backup-$r.err" ||
            die "$site: pbio backup failed: $(cat "$out/$site-pbio-backup-$r.err")"
        pw+=("$(pbio_mibs "$out/$site-pbio-backup-$r.json")")
        say "$site: rep $r: fio read"
        fio --name=r --ioengine=nbd --uri="$url" --rw=read --bs=1M --iodepth=32 \
            --size="$size" --output-format=json --output="$out/$site-fio-read-$r.json" >/dev/null 2>&1
        fr+=("$(fio_mibs "$out/$site-fio-read-$r.json" read)")
        say "$site: rep $r: pbio verify"
        start=$(date +%s.%N)
        "$pbio" verify --dev "$url" >"$out/$site-pbio-verify-$r.out" 2>&1 ||
            die "$site: pbio verify failed: $(cat "$out/$site-pbio-verify-$r.out")"
        end=$(date +%s.%N)
        pv+=("$(python3 -c "print($size/1048576/($end-$start))")")
        say "$site: rep $r: pbio restore"
        rm -rf "$tmpfs/restore"
        start=$(date +%s.%N)
        "$pbio" restore --dev "$url" --to "$tmpfs/restore" >"$out/$site-pbio-restore-$r.out" 2>&1 ||
            die "$site: pbio restore failed: $(cat "$out/$site-pbio-restore-$r.out")"
        end=$(date +%s.%N)
        cmp -s "$tree/data.bin" "$tmpfs/restore/tree-$site/data.bin" || die "$site: restore differs"
        pr+=("$(python3 -c "print($size/1048576/($end-$start))")")
        rm -rf "$tmpfs/restore"
        # Last: bench --rw write overwrites the set.
        for rw in write read; do
            say "$site: rep $r: pbio bench --rw $rw"
            "$pbio" bench --dev "$url" --rw "$rw" --bs 1M --qd 32 --size "$size" --force --json \
                >"$out/$site-pbio-bench-$rw-$r.json" 2>"$out/$site-pbio-bench-$rw-$r.err" ||
                die "$site: pbio bench failed: $(cat "$out/$site-pbio-bench-$rw-$r.err")"
        done
        bw+=("$(bench_mibs "$out/$site-pbio-bench-write-$r.json")")
        br+=("$(bench_mibs "$out/$site-pbio-bench-read-$r.json")")
    done
    m() { printf '%s\n' "$@" | median; }
    a=$(m "${fw[@]}") b=$(m "${pw[@]}") c=$(m "${fr[@]}") v=$(m "${pv[@]}") d=$(m "${pr[@]}")
    printf '| %s | %s | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f | %.1f | %.2f |\n' "$site" "$(numfmt --to=iec "$size")" \
        "$a" "$b" "$(python3 -c "print($b/$a)")" "$c" "$v" "$(python3 -c "print($v/$c)")" \
        "$d" "$(python3 -c "print($d/$c)")" >>"$out/summary.md"
    printf '| %s | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f |\n' "$site" "$a" "$(m "${bw[@]}")" \
        "$(python3 -c "print($(m "${bw[@]}")/$a)")" "$c" "$(m "${br[@]}")" \
        "$(python3 -c "print($(m "${br[@]}")/$c)")" >>"$out/transport.md"
    rm -rf "$tree"
done
{
    echo
    echo "| site | fio write MiB/s | pbio bench write MiB/s | ratio | fio read MiB/s | pbio bench read MiB/s | ratio |"
    echo "|---|---|---|---|---|---|---|"
    cat "$out/transport.md"
} >>"$out/summary.md"

# (c) --balance time over disk + lan + wan.
tree=$tmpfs/tree-balance
mkdir -p "$tree"
bsize=$(bytes "${PBIO_BENCH_BALANCE_SIZE:-2G}")
head -c $((bsize - 64 * 262144)) /dev/urandom >"$tree/big.bin"
for i in $(seq 64); do head -c 262144 /dev/urandom >"$tree/small$i"; done
spread() {
    python3 -c '
import json,sys
for line in open(sys.argv[1]):
    try: e=json.loads(line)
    except ValueError: continue
    if e.get("event")=="summary":
        s=[d["seconds"] for d in e["devices"]]
        p=[d["payload_bytes"]>>20 for d in e["devices"]]
        print("%.2f %.1f %s %s" % ((max(s)-min(s))/max(s)*100, e["seconds"], "/".join("%.2f" % x for x in s), "/".join(map(str,p))))
' "$1"
}
{
    echo
    echo "| --balance | total s | finish spread % | device seconds (disk/lan/wan) | payload MiB (disk/lan/wan) |"
    echo "|---|---|---|---|---|"
} >>"$out/summary.md"
# --balance bytes too with PBIO_BENCH_BALANCE_BYTES=1 (a third of the tree
# then crosses the wan link: minutes).
for balance in time $([ "${PBIO_BENCH_BALANCE_BYTES:-0}" = 1 ] && echo bytes); do
    say "balance $balance"
    "$pbio" backup "$tree" --balance "$balance" --dev "$loop" --dev "$lan" --dev "$wan" --force --json \
        >"$out/balance-$balance.json" 2>"$out/balance-$balance.err" ||
        die "balance $balance: pbio backup failed: $(cat "$out/balance-$balance.err")"
    read -r sp total secs payload < <(spread "$out/balance-$balance.json")
    echo "| $balance | $total | $sp | $secs | $payload |" >>"$out/summary.md"
done
python3 -c '
import json,sys
for line in open(sys.argv[1]):
    try: e=json.loads(line)
    except ValueError: continue
    if e.get("event")=="start":
        for d in e["devices"]:
            print("  %s: %.1f MiB/s" % (d["path"], (d["rate_bytes_per_sec"] or 0)/1048576))
' "$out/balance-time.json" >"$out/probe.txt"
cat "$out/summary.md"
echo
echo "rates the --balance time probe measured:"
cat "$out/probe.txt"
say "results in $out"
