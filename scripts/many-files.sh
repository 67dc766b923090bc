#!/usr/bin/env bash
# Many tiny files: pbio's memory and files/s against GNU tar, in one run (issue 23).
#
#   scripts/many-files.sh [N]        N files (default 10000000)
#
# Generates N files on a tmpfs, 1000 per directory, every other one empty and
# the rest 1 byte long; then measures, each under `/usr/bin/time -v` (maximum
# resident set size) with the page cache dropped before it:
#   tar_c         tar -b 2048 -cf DEV0 (+ sync of the device)   the reference
#   tar_x         tar -xf DEV0 into the tmpfs
#   pbio_backup   pbio backup of the tree to the N devices
#   pbio_list     pbio list --dev DEV0 (output to /dev/null)
#   pbio_verify   pbio verify of the set
#   pbio_restore  pbio restore of the set into the tmpfs
# and prints one table: seconds, files/s, max RSS, RSS bytes per file and the
# files/s ratio against tar (backup against tar c, list, verify and restore
# against tar x). The devices are this script's own loop devices
# (--direct-io=on over sparse files), detached and removed at the end, so
# that it never touches another bench's test bed.
#
# Environment:
#   PBIO_MANY_DEVICES [4]               loop devices for pbio (tar uses the first)
#   PBIO_MANY_DIR [/var/tmp/pbio-many]  backing files and results-<time>/
#   PBIO_MANY_TMPFS [/dev/shm/pbio-many] the tree and the restore targets
#   PBIO                                the pbio binary [target/release/pbio]
# Needs root (losetup, drop_caches), python3 and /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."

files=${1:-10000000}
ndev=${PBIO_MANY_DEVICES:-4}
work=${PBIO_MANY_DIR:-/var/tmp/pbio-many}
tmpfs=${PBIO_MANY_TMPFS:-/dev/shm/pbio-many}
pbio=${PBIO:-$PWD/target/release/pbio}

say() { echo "many-files: $*" >&2; }
die() { say "$*"; exit 2; }

[ "$(id -u)" = 0 ] || die "needs root (loop devices, drop_caches)"
command -v python3 >/dev/null || die "needs python3"
[ -x /usr/bin/time ] || die "needs /usr/bin/time (apt-get install -y time)"
[ -x "$pbio" ] || die "no pbio binary at $pbio (cargo build --release)"
[[ "$files" =~ ^[0-9]+$ ]] && [ "$files" -ge 1 ] || die "N must be a positive number"

stamp=$(date +%Y%m%d-%H%M%S)
out="$work/results-$stamp"
mkdir -p "$out/logs" "$tmpfs"

# ---------------------------------------------------------------- devices
# pbio: a 1-byte file is one record (4 KiB header + 4 KiB payload) plus the
# catalog (~150 bytes a file); tar: 512 bytes of header a file and 512 of
# data for a 1-byte file; each device must hold tar's whole archive.
pbio_bytes=$(((files / 2) * 8192 + files * 160))
tar_bytes=$((files * 1024 + (64 << 20)))
per_dev=$((pbio_bytes / ndev + (256 << 20)))
[ "$per_dev" -gt "$tar_bytes" ] || per_dev=$tar_bytes
per_dev=$(((per_dev + (1 << 20) - 1) / (1 << 20) * (1 << 20)))
devs=()
cleanup() {
    local d
    for d in "${devs[@]}"; do losetup -d "$d" 2>/dev/null || true; done
    rm -f "$work"/dev*.img
    rm -rf "$tmpfs"
}
trap cleanup EXIT
for i in $(seq 0 $((ndev - 1))); do
    rm -f "$work/dev$i.img"
    truncate -s "$per_dev" "$work/dev$i.img"
    devs+=("$(losetup --direct-io=on -f --show "$work/dev$i.img")")
done
dev0=${devs[0]}
pbio_devs=()
for d in "${devs[@]}"; do pbio_devs+=(--dev "$d"); done
say "devices: ${devs[*]} ($((per_dev >> 20)) MiB each); $files files"

# ---------------------------------------------------------------- the tree
gen0=$(date +%s.%N)
python3 - "$tmpfs/many" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(root, exist_ok=True)
for i in range(n):
    if i % 1000 == 0:
        d = os.path.join(root, f"d{i // 1000:05d}")
        os.mkdir(d)
    fd = os.open(os.path.join(d, f"f{i % 1000:03d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    if i % 2:
        os.write(fd, b"x")
    os.close(fd)
PY
dirs=$(((files + 999) / 1000 + 1))
entries=$((files + dirs))
say "tree: $entries entries ($files files, $dirs directories) in $(echo "$(date +%s.%N) - $gen0" | bc -l | cut -c1-6) s"

# ---------------------------------------------------------------- measuring
drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || say "cannot drop caches (figures may be warm)"
}
printf 'name\tentries\twall_s\tmax_rss_kib\tstatus\n' >"$out/results.tsv"
# measure NAME -- COMMAND...: the command's stdout goes to the log
measure() {
    local name=$1 log="$out/logs/$1" t0 t1 status=ok
    shift 2
    drop_caches
    t0=$(date +%s.%N)
    if ! /usr/bin/time -v -o "$log.time" "$@" >"$log.out" 2>"$log.err"; then
        status=failed
        say "$name: failed (see $log.err): $(tail -2 "$log.err" | tr '\n' ' ')"
    fi
    t1=$(date +%s.%N)
    local rss
    rss=$(awk -F': ' '/Maximum resident set size/{print $2}' "$log.time")
    printf '%s\t%s\t%.3f\t%s\t%s\n' "$name" "$entries" "$(echo "$t1 - $t0" | bc -l)" "$rss" "$status" >>"$out/results.tsv"
    say "$(printf '%-14s %8.2f s  %7d MiB max RSS  %s' "$name" "$(echo "$t1 - $t0" | bc -l)" $((rss / 1024)) "$status")"
}

measure tar_c -- bash -c 'tar -b 2048 -cf "$1" -C "$2" many && sync "$1"' _ "$dev0" "$tmpfs"
mkdir -p "$tmpfs/tar-out"
measure tar_x -- tar -b 2048 -xf "$dev0" -C "$tmpfs/tar-out"
rm -rf "$tmpfs/tar-out"
measure pbio_backup -- "$pbio" backup "$tmpfs/many" "${pbio_devs[@]}" --force --json
measure pbio_list -- "$pbio" list --dev "$dev0"
measure pbio_verify -- "$pbio" verify "${pbio_devs[@]}" --json
mkdir -p "$tmpfs/pbio-out"
measure pbio_restore -- "$pbio" restore "${pbio_devs[@]}" --to "$tmpfs/pbio-out" --json
restored=$(find "$tmpfs/pbio-out" | wc -l)
[ "$restored" -ge "$entries" ] || say "restore left $restored entries of $entries"
rm -rf "$tmpfs/pbio-out"

# ---------------------------------------------------------------- the table
python3 - "$out/results.tsv" "$files" <<'PY' | tee "$out/summary.md"
import csv, sys
rows = {r["name"]: r for r in csv.DictReader(open(sys.argv[1]), delimiter="\t")}
files = int(sys.argv[2])
ref = {"tar_c": None, "tar_x": None, "pbio_backup": "tar_c", "pbio_list": "tar_x",
       "pbio_verify": "tar_x", "pbio_restore": "tar_x"}
def fps(r): return int(r["entries"]) / max(float(r["wall_s"]), 1e-9)
print(f"{files} files ({next(iter(rows.values()))['entries']} entries with the directories)\n")
print("| step | s | entries/s | max RSS MiB | RSS bytes/entry | vs tar (entries/s) | status |")
print("|---|---:|---:|---:|---:|---:|---|")
for name, r in rows.items():
    rss = int(r["max_rss_kib"] or 0) * 1024
    vs = f"{fps(r) / fps(rows[ref[name]]):.2f}x {ref[name]}" if ref.get(name) in rows else ""
    print(f"| {name} | {float(r['wall_s']):.2f} | {fps(r):,.0f} | {rss / 2**20:.0f} | "
          f"{rss / int(r['entries']):.0f} | {vs} | {r['status']} |")
PY
say "results in $out"
