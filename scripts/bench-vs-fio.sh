#!/usr/bin/env bash
# pbio against fio, tar and dd on the same devices, in one run.
#
#   scripts/bench-vs-fio.sh            (as root; brings the test bed up if needed)
#
# What it measures (every figure PBIO_BENCH_REPS times, interleaved, the
# median reported with the spread):
#   (a) fio ioengine=io_uring direct=1 bs=1M iodepth=32, one job per device,
#       sequential write of SIZE/N per device; `pbio bench --rw write` alike
#   (b) `pbio backup` of a generated tree of SIZE bytes to the N devices,
#       the tree on this machine's disk ($PBIO_BENCH_DIR/tree) and, to take
#       the shared disk out of the source side, a copy of it on tmpfs;
#       fio reading the tree's files (what the source disk delivers)
#   (c) fio sequential read of SIZE/N per device; `pbio bench --rw read`;
#       `pbio restore` of (b)'s set into a tmpfs directory (the destination
#       is RAM, so the figure is the devices' and pbio's, not a disk's)
#   (d) one device: `tar cf` of the tree (+ fsync of the device), and
#       `tar cf - | dd oflag=direct`, vs `pbio backup` of the tree;
#       `dd oflag=direct bs=1M` of the tree's largest file (+ fsync) vs
#       `pbio backup` of that file
#   (e) a tree of PBIO_BENCH_FILES small files (1-64 KiB): both tars to one
#       device vs `pbio backup` to the N devices and to one device (files/s)
# Takes about 3.5 minutes with the defaults on a 2-core VM (5 minutes with
# PBIO_BENCH_REPS=5); generating the trees the first time adds ~30 s.
# CPU: user+sys of the measured process and its children (/usr/bin/time),
# and the whole machine's busy time over the run (/proc/stat: includes the
# loop devices' kernel workers and writeback threads, which a process's own
# rusage does not). Page caches are dropped before every run that reads a
# source or a device (echo 3 > /proc/sys/vm/drop_caches).
#
# Environment (defaults in brackets):
#   PBIO_BENCH_SIZE [2G]        total bytes of the tree for (a)-(d)
#   PBIO_BENCH_FILES [100000]   small files for (e); 0 skips (e)
#   PBIO_BENCH_REPS [3]         repetitions of (a)-(d)
#   PBIO_BENCH_SMALL_REPS [1]   repetitions of (e)
#   PBIO_BENCH_QD [32]          queue depth for fio and pbio (--qd)
#   PBIO_BENCH_PARTS [abcde]    which parts to run (e.g. "c" for the read side
#                               only: one unmeasured backup of the tree first
#                               gives restore a set to read; the tmpfs copy of
#                               the tree is made only for b, the device-size
#                               check for the one-device runs only for d and e)
#   PBIO_BENCH_DIR [/var/tmp/pbio-bench]   generated trees (kept between runs) and results
#   PBIO_BENCH_TMPFS [/dev/shm/pbio-bench] tmpfs tree copy and restore target (removed at the end)
#   PBIO_BENCH_DEVS             devices to use (space-separated); default: scripts/testbed.sh up
#   PBIO                        the pbio binary [target/release/pbio, built if missing]
# Output: the table on stdout; $PBIO_BENCH_DIR/results-<time>/ holds
# results.tsv (every run), summary.md (the table) and each command's output.
set -euo pipefail
cd "$(dirname "$0")/.."

size_text=${PBIO_BENCH_SIZE:-2G}
files=${PBIO_BENCH_FILES:-100000}
reps=${PBIO_BENCH_REPS:-3}
small_reps=${PBIO_BENCH_SMALL_REPS:-1}
qd=${PBIO_BENCH_QD:-32}
parts=${PBIO_BENCH_PARTS:-abcde}
part() { [[ $parts == *"$1"* ]]; }
work=${PBIO_BENCH_DIR:-/var/tmp/pbio-bench}
tmpfs=${PBIO_BENCH_TMPFS:-/dev/shm/pbio-bench}
pbio=${PBIO:-$PWD/target/release/pbio}

say() { echo "bench: $*" >&2; }
die() { say "$*"; exit 2; }

[ "$(id -u)" = 0 ] || die "needs root (loop devices, drop_caches)"
command -v python3 >/dev/null || die "needs python3"
[ -x /usr/bin/time ] || die "needs /usr/bin/time (apt-get install -y time)"
if ! command -v fio >/dev/null; then
    say "installing fio"
    apt-get install -y fio >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y fio >/dev/null; }
fi
if [ ! -x "$pbio" ]; then
    say "building pbio"
    cargo build --release >&2
fi
size=$(numfmt --from=iec "${size_text%B}")
[ $((size % (16 << 20))) = 0 ] || die "PBIO_BENCH_SIZE must be a multiple of 16M"

if [ -n "${PBIO_BENCH_DEVS:-}" ]; then
    read -r -a devs <<<"$PBIO_BENCH_DEVS"
else
    mapfile -t devs < <(scripts/testbed.sh up)
fi
n=${#devs[@]}
[ "$n" -ge 1 ] || die "no devices"
per_dev=$((size / n / 1048576 * 1048576))
for d in "${devs[@]}"; do
    [ -b "$d" ] || die "$d is not a block device"
    cap=$(blockdev --getsize64 "$d")
    if part d || part e; then [ "$cap" -gt $((size + (64 << 20))) ] || die "$d ($cap bytes) cannot hold the whole tree ($size bytes) for the one-device runs"; fi
done
dev0=${devs[0]}
pbio_devs=()
for d in "${devs[@]}"; do pbio_devs+=(--dev "$d"); done

stamp=$(date +%Y%m%d-%H%M%S)
out="$work/results-$stamp"
mkdir -p "$out/logs" "$tmpfs"
trap 'rm -rf "$tmpfs"' EXIT
printf 'name\trep\tbytes\tfiles\twall_s\tproc_cpu_s\tsys_cpu_s\tinternal_mib_s\tstatus\n' >"$out/results.tsv"

# ---------------------------------------------------------------- trees
# $work/tree: one file of SIZE/2 (big.bin) and 8 of SIZE/16: random bytes.
# $work/small: FILES files of 1-64 KiB (uniform), 1000 per directory.
gen_trees() {
    python3 - "$work" "$size" "$files" <<'PY'
import os, random, sys
work, size, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def write(path, n):
    with open(path, "wb") as f:
        while n > 0:
            k = min(n, 8 << 20)
            f.write(os.urandom(k))
            n -= k
tree = os.path.join(work, "tree")
mark = os.path.join(work, f".tree-{size}")
if not os.path.exists(mark):
    os.system(f"rm -rf '{tree}'")
    os.makedirs(tree)
    write(os.path.join(tree, "big.bin"), size // 2)
    for i in range(8):
        write(os.path.join(tree, f"part{i}.bin"), size // 16)
    open(mark, "w").close()
small = os.path.join(work, "small")
mark = os.path.join(work, f".small-{files}")
if files > 0 and not os.path.exists(mark):
    os.system(f"rm -rf '{small}'")
    rng = random.Random(6)
    total = 0
    for i in range(files):
        d = os.path.join(small, f"d{i // 1000:03d}")
        if i % 1000 == 0:
            os.makedirs(d)
        k = rng.randint(1, 64 << 10)
        total += k
        with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
            f.write(os.urandom(k))
    with open(mark, "w") as f:
        f.write(f"{total}\n")
PY
}
say "trees under $work (on $(df --output=source "$work" | tail -1), $(findmnt -no FSTYPE -T "$work")): generating what is missing"
mkdir -p "$work"
# A marker names the parameters a tree was made with; others are stale.
for m in "$work"/.tree-* "$work"/.small-*; do
    if [ -e "$m" ] && [ "$m" != "$work/.tree-$size" ] && [ "$m" != "$work/.small-$files" ]; then
        rm -f "$m"
    fi
done
gen_trees
small_bytes=0
[ "$files" -gt 0 ] && small_bytes=$(cat "$work/.small-$files")
big_bytes=$((size / 2))
if part b; then
    say "copying the tree to tmpfs ($tmpfs)"
    rm -rf "$tmpfs/tree" && cp -r "$work/tree" "$tmpfs/tree"
fi
sync

# ---------------------------------------------------------------- measuring
clk=$(getconf CLK_TCK)
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || say "cannot drop caches (figures may be warm)"
}

# measure NAME REP BYTES FILES INTERNAL_KIND -- COMMAND...
# INTERNAL_KIND: fio-write | fio-read | pbio-backup | pbio-json | none
measure() {
    local name=$1 rep=$2 bytes=$3 nfiles=$4 kind=$5
    shift 6
    local log="$out/logs/$name.$rep" t0 t1 b0 b1 status=ok
    b0=$(busy)
    t0=$(date +%s.%N)
    if ! /usr/bin/time -f '%U %S' -o "$log.time" "$@" >"$log.out" 2>"$log.err"; then
        status=failed
        say "$name: failed (see $log.err): $(tail -2 "$log.err" | tr '\n' ' ')"
    fi
    t1=$(date +%s.%N)
    b1=$(busy)
    local cpu internal
    cpu=$(awk 'END{print $1+$2}' "$log.time")
    internal=$(python3 - "$kind" "$log.out" <<'PY'
import json, sys
kind, path = sys.argv[1], sys.argv[2]
try:
    text = open(path).read()
    if kind.startswith("fio-"):
        j = json.loads(text[text.index("{"):])
        job = j["jobs"][0]["write" if kind == "fio-write" else "read"]
        print(f"{job['bw_bytes'] / 2**20:.1f}")
    elif kind == "pbio-backup":
        j = json.loads(text.strip().splitlines()[-1])
        secs = max(d["seconds"] for d in j["devices"])
        print(f"{j['payload_bytes'] / 2**20 / secs:.1f}")
    elif kind == "pbio-json":
        j = json.loads(text.strip().splitlines()[-1])
        print(f"{j['mib_per_sec']:.1f}")
    else:
        print("")
except Exception:
    print("")
PY
)
    printf '%s\t%s\t%s\t%s\t%.3f\t%.3f\t%.3f\t%s\t%s\n' "$name" "$rep" "$bytes" "$nfiles" \
        "$(echo "$t1 - $t0" | bc -l)" "$cpu" "$(echo "($b1 - $b0) / $clk" | bc -l)" \
        "$internal" "$status" >>"$out/results.tsv"
    say "$(printf '%-28s rep %s: %7.2f s' "$name" "$rep" "$(echo "$t1 - $t0" | bc -l)")${internal:+ ($internal MiB/s internal)}"
}

fio_jobs() { # rw size: one job per device
    local rw=$1 sz=$2 d args=()
    for d in "${devs[@]}"; do args+=(--name="$(basename "$d")" --filename="$d"); done
    echo fio --output-format=json --group_reporting --ioengine=io_uring --direct=1 --bs=1M \
        --iodepth="$qd" --rw="$rw" --size="$sz" "${args[@]}"
}
fio_source_jobs() { # read every file of the tree, one job each
    local f args=()
    for f in "$work"/tree/*.bin; do args+=(--name="$(basename "$f")" --filename="$f"); done
    echo fio --output-format=json --group_reporting --ioengine=io_uring --direct=1 --bs=1M \
        --iodepth="$qd" --rw=read "${args[@]}"
}

say "devices: ${devs[*]}; tree $size bytes ($((per_dev >> 20)) MiB per device), qd $qd, $reps reps"
total=$((per_dev * n))

# One function per figure; a rep runs each group in alternating order
# (odd reps as listed, even reps reversed), so that neither side of a
# comparison always runs right after the other has loaded the disk.
fig_fio_write() {
    measure fio_write "$rep" "$total" 0 fio-write -- $(fio_jobs write "$per_dev")
}
fig_pbio_bench_write() {
    measure pbio_bench_write "$rep" "$total" 0 pbio-json -- \
        "$pbio" bench "${pbio_devs[@]}" --rw write --bs 1M --qd "$qd" --size "$per_dev" --force --json
}
fig_fio_read_source() {
    drop_caches
    measure fio_read_source "$rep" "$size" 0 fio-read -- $(fio_source_jobs)
}
fig_pbio_backup_disk() {
    drop_caches
    measure pbio_backup_disk "$rep" "$size" 0 pbio-backup -- \
        "$pbio" backup "$work/tree" "${pbio_devs[@]}" --qd "$qd" --json --force
}
fig_pbio_backup_tmpfs() {
    drop_caches
    measure pbio_backup_tmpfs "$rep" "$size" 0 pbio-backup -- \
        "$pbio" backup "$tmpfs/tree" "${pbio_devs[@]}" --qd "$qd" --json --force
}
fig_fio_read() {
    drop_caches
    measure fio_read "$rep" "$total" 0 fio-read -- $(fio_jobs read "$per_dev")
}
fig_pbio_bench_read() {
    drop_caches
    measure pbio_bench_read "$rep" "$total" 0 pbio-json -- \
        "$pbio" bench "${pbio_devs[@]}" --rw read --bs 1M --qd "$qd" --size "$per_dev" --json
}
fig_pbio_restore() {
    rm -rf "$tmpfs/out"
    drop_caches
    measure pbio_restore "$rep" "$size" 0 pbio-json -- \
        "$pbio" restore "${pbio_devs[@]}" --to "$tmpfs/out" --json
    rm -rf "$tmpfs/out"
}
fig_tar_1dev() {
    drop_caches
    measure tar_1dev "$rep" "$size" 0 none -- \
        bash -c 'tar -b 2048 -cf "$1" -C "$2" tree && sync "$1"' _ "$dev0" "$work"
}
fig_tar_dd_1dev() {
    drop_caches
    measure tar_dd_1dev "$rep" "$size" 0 none -- \
        bash -c 'set -o pipefail; tar -b 2048 -cf - -C "$2" tree | dd of="$1" bs=1M iflag=fullblock oflag=direct conv=fsync status=none' _ "$dev0" "$work"
}
fig_pbio_backup_1dev() {
    drop_caches
    measure pbio_backup_1dev "$rep" "$size" 0 pbio-backup -- \
        "$pbio" backup "$work/tree" --dev "$dev0" --qd "$qd" --json --force
}
fig_dd_1dev() {
    drop_caches
    measure dd_1dev "$rep" "$big_bytes" 0 none -- \
        dd if="$work/tree/big.bin" of="$dev0" bs=1M oflag=direct conv=fsync status=none
}
fig_pbio_backup_big_1dev() {
    drop_caches
    measure pbio_backup_big_1dev "$rep" "$big_bytes" 0 pbio-backup -- \
        "$pbio" backup "$work/tree/big.bin" --dev "$dev0" --qd "$qd" --json --force
}
fig_tar_small_1dev() {
    drop_caches
    measure tar_small_1dev "$rep" "$small_bytes" "$files" none -- \
        bash -c 'tar -b 2048 -cf "$1" -C "$2" small && sync "$1"' _ "$dev0" "$work"
}
fig_tar_dd_small_1dev() {
    drop_caches
    measure tar_dd_small_1dev "$rep" "$small_bytes" "$files" none -- \
        bash -c 'set -o pipefail; tar -b 2048 -cf - -C "$2" small | dd of="$1" bs=1M iflag=fullblock oflag=direct conv=fsync status=none' _ "$dev0" "$work"
}
fig_pbio_small() {
    drop_caches
    measure pbio_small "$rep" "$small_bytes" "$files" pbio-backup -- \
        "$pbio" backup "$work/small" "${pbio_devs[@]}" --qd "$qd" --json --force
}
fig_pbio_small_1dev() {
    drop_caches
    measure pbio_small_1dev "$rep" "$small_bytes" "$files" pbio-backup -- \
        "$pbio" backup "$work/small" --dev "$dev0" --qd "$qd" --json --force
}
# group FIGURE... : run in order on odd reps, reversed on even reps.
group() {
    local figs=("$@") i
    if [ $((rep % 2)) = 1 ]; then
        for i in "${figs[@]}"; do "fig_$i"; done
    else
        for ((i = ${#figs[@]} - 1; i >= 0; i--)); do "fig_${figs[i]}"; done
    fi
}

if part c && ! part b; then
    say "part c without b: one unmeasured backup of the tree for restore to read"
    "$pbio" backup "$work/tree" "${pbio_devs[@]}" --qd "$qd" --json --force >/dev/null
fi
for rep in $(seq 1 "$reps"); do
    if part a; then group fio_write pbio_bench_write; fi                           # (a)
    if part b; then group fio_read_source pbio_backup_disk pbio_backup_tmpfs; fi   # (b)
    # (c): the devices hold (b)'s last set, which restore reads back
    if part c; then group fio_read pbio_bench_read pbio_restore; fi
    if part d; then group tar_1dev tar_dd_1dev pbio_backup_1dev; fi                # (d)
    if part d; then group dd_1dev pbio_backup_big_1dev; fi
done

if [ "$files" -gt 0 ] && part e; then
    # One-device runs need the tree plus tar's headers / pbio's 4 KiB
    # headers and block padding on that device.
    if [ $((small_bytes + files * 8192 + (64 << 20))) -lt "$(blockdev --getsize64 "$dev0")" ]; then
        for rep in $(seq 1 "$small_reps"); do
            group tar_small_1dev tar_dd_small_1dev pbio_small pbio_small_1dev   # (e)
        done
    else
        say "the small-file tree does not fit on one device: tar and one-device runs skipped"
        for rep in $(seq 1 "$small_reps"); do fig_pbio_small; done
    fi
fi

# ---------------------------------------------------------------- summary
python3 - "$out" "$n" "$qd" <<'PY'
import csv, statistics, sys
out, n, qd = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = {}
for r in csv.DictReader(open(f"{out}/results.tsv"), delimiter="\t"):
    if r["status"] != "ok":
        continue
    rows.setdefault(r["name"], []).append(r)
GiB, MiB = 2**30, 2**20
def fig(name):
    rs = rows.get(name)
    if not rs:
        return None
    e2e = [int(r["bytes"]) / MiB / float(r["wall_s"]) for r in rs]
    internal = [float(r["internal_mib_s"]) for r in rs if r["internal_mib_s"]]
    files = int(rs[0]["files"])
    gib = int(rs[0]["bytes"]) / GiB
    return {
        "e2e": statistics.median(e2e), "lo": min(e2e), "hi": max(e2e),
        "internal": statistics.median(internal) if internal else None,
        "fps": statistics.median(files / float(r["wall_s"]) for r in rs) if files > 0 else None,
        "proc": statistics.median(float(r["proc_cpu_s"]) for r in rs) / gib,
        "sys": statistics.median(float(r["sys_cpu_s"]) for r in rs) / gib,
        "wall": statistics.median(float(r["wall_s"]) for r in rs),
        "runs": len(rs),
    }
labels = [
    ("a", "fio_write", f"fio write, {n} devices (fio's bw)"),
    ("a", "pbio_bench_write", f"pbio bench --rw write, {n} devices"),
    ("b", "fio_read_source", "fio read of the source tree files (disk)"),
    ("b", "pbio_backup_disk", f"pbio backup, tree on disk -> {n} devices"),
    ("b", "pbio_backup_tmpfs", f"pbio backup, tree on tmpfs -> {n} devices"),
    ("c", "fio_read", f"fio read, {n} devices (fio's bw)"),
    ("c", "pbio_bench_read", f"pbio bench --rw read, {n} devices"),
    ("c", "pbio_restore", f"pbio restore, {n} devices -> tmpfs"),
    ("d", "tar_1dev", "tar cf tree -> 1 device (+fsync)"),
    ("d", "tar_dd_1dev", "tar cf - tree | dd oflag=direct -> 1 device"),
    ("d", "pbio_backup_1dev", "pbio backup tree -> 1 device"),
    ("d", "dd_1dev", "dd oflag=direct bs=1M big.bin -> 1 device"),
    ("d", "pbio_backup_big_1dev", "pbio backup big.bin -> 1 device"),
    ("e", "tar_small_1dev", "tar cf small files -> 1 device (+fsync)"),
    ("e", "tar_dd_small_1dev", "tar cf - small | dd oflag=direct -> 1 device"),
    ("e", "pbio_small", f"pbio backup small files -> {n} devices"),
    ("e", "pbio_small_1dev", "pbio backup small files -> 1 device"),
]
F = {k: fig(k) for _, k, _ in labels}
def num(x, f="{:.0f}"):
    return "-" if x is None else f.format(x)
lines = [
    f"| | figure | MiB/s end to end (min-max) | MiB/s internal | files/s | wall s | CPU s/GiB process | CPU s/GiB machine | runs |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|",
]
for part, key, label in labels:
    f = F[key]
    if f is None:
        continue
    lines.append(
        f"| {part} | {label} | {f['e2e']:.0f} ({f['lo']:.0f}-{f['hi']:.0f}) | {num(f['internal'])} | "
        f"{num(f['fps'])} | {f['wall']:.2f} | {f['proc']:.3f} | {f['sys']:.3f} | {f['runs']} |"
    )
def ratio(a, b, ka="e2e", kb="internal", target=None, better="higher"):
    fa, fb = F.get(a), F.get(b)
    if not fa or not fb or fa.get(ka) is None or fb.get(kb) is None:
        return None
    return fa[ka] / fb[kb]
checks = []
def add(label, value, target, cmp=">="):
    if value is None:
        return
    ok = value >= target if cmp == ">=" else value <= target
    checks.append(f"| {label} | {value:.2f} | {cmp} {target} | {'met' if ok else 'NOT met'} |")
add("pbio bench write / fio write (ring mechanics)", ratio("pbio_bench_write", "fio_write", "internal"), 0.95)
add("backup (tree on disk, end to end) / fio write", ratio("pbio_backup_disk", "fio_write"), 0.95)
add("backup (tree on disk, end to end) / fio read of the source", ratio("pbio_backup_disk", "fio_read_source"), 0.95)
add("backup (tree on tmpfs, end to end) / fio write", ratio("pbio_backup_tmpfs", "fio_write"), 0.95)
add("backup (tree on tmpfs, data phase) / fio write", ratio("pbio_backup_tmpfs", "fio_write", "internal"), 0.95)
add("pbio bench read / fio read (ring mechanics)", ratio("pbio_bench_read", "fio_read", "internal"), 0.95)
add("restore (end to end) / fio read", ratio("pbio_restore", "fio_read"), 0.95)
add("backup (tree on tmpfs, end to end) / pbio bench write", ratio("pbio_backup_tmpfs", "pbio_bench_write"), 0.95)
# tar: the faster of the two ways of writing to the device.
tars = [k for k in ("tar_1dev", "tar_dd_1dev") if F.get(k)]
tar = max(tars, key=lambda k: F[k]["e2e"]) if tars else None
tar_small = [k for k in ("tar_small_1dev", "tar_dd_small_1dev") if F.get(k)]
tar_small = max(tar_small, key=lambda k: F[k]["fps"]) if tar_small else None
if tar:
    add(f"1 device: pbio / {tar} (MiB/s)", ratio("pbio_backup_1dev", tar, "e2e", "e2e"), 1.0)
add("1 device: pbio / dd (MiB/s, one large file)", ratio("pbio_backup_big_1dev", "dd_1dev", "e2e", "e2e"), 1.0)
for a, b in [("pbio_backup_1dev", "tar_1dev"), ("pbio_backup_1dev", "tar_dd_1dev"), ("pbio_backup_big_1dev", "dd_1dev")]:
    if F.get(a) and F.get(b):
        add(f"1 device: {a} / {b} (process CPU s/GiB)", F[a]["proc"] / F[b]["proc"], 0.5, "<=")
        add(f"1 device: {a} / {b} (machine CPU s/GiB)", F[a]["sys"] / F[b]["sys"], 0.5, "<=")
if F.get("pbio_small") and tar_small:
    add(f"small files: pbio ({n} devices) / {tar_small} (files/s)", F["pbio_small"]["fps"] / F[tar_small]["fps"], 2.0)
if F.get("pbio_small_1dev") and tar_small:
    add(f"small files: pbio (1 device) / {tar_small} (files/s)", F["pbio_small_1dev"]["fps"] / F[tar_small]["fps"], 2.0)
lines += ["", "| ratio | value | target | |", "|---|---:|---:|---|"] + checks
text = "\n".join(lines)
open(f"{out}/summary.md", "w").write(text + "\n")
print(text)
PY
say "results: $out (results.tsv, summary.md, logs/); remove the devices with: scripts/testbed.sh down"
