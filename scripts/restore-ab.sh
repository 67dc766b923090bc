#!/usr/bin/env bash
# Restore of many tiny files, two pbio binaries A/B in one run (issue 23).
#
#   scripts/restore-ab.sh OLD_PBIO NEW_PBIO [N] [REPS]
#
# Generates N files (default 400000) on a tmpfs as scripts/many-files.sh
# does (1000 a directory, every other one empty, the rest 1 byte), backs
# them up once with OLD_PBIO to its own four loop devices (--direct-io=on),
# then REPS times (default 5), alternating old, new, tar x: restores the set
# into the tmpfs with each binary (`restore --to`, page cache dropped
# before each) and extracts a tar of the same tree from the first device.
# Prints per run wall, user + sys CPU and max RSS, then the medians and the
# ratios new/old and against tar x. PBIO_REF=BINARY adds a third pbio
# (ref) to each rep. Needs root, python3, /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?old pbio binary}
new=${2:?new pbio binary}
files=${3:-400000}
reps=${4:-5}
ref=${PBIO_REF:-}
ndev=4
work=${PBIO_AB_DIR:-/var/tmp/pbio-restore-ab}
tmpfs=${PBIO_AB_TMPFS:-/dev/shm/pbio-restore-ab}
say() { echo "restore-ab: $*" >&2; }
[ "$(id -u)" = 0 ] || { say "needs root"; exit 2; }
mkdir -p "$work" "$tmpfs"
per_dev=$((((files / 2) * 8192 + files * 160) / ndev + (256 << 20)))
tar_bytes=$((files * 1024 + (64 << 20)))
[ "$per_dev" -gt "$tar_bytes" ] || per_dev=$tar_bytes
devs=()
cleanup() {
    for d in "${devs[@]}"; do losetup -d "$d" 2>/dev/null || true; done
    rm -f "$work"/dev*.img "$work/tree.tar"
    rm -rf "$tmpfs"
}
trap cleanup EXIT
for i in $(seq 0 $((ndev - 1))); do
    truncate -s "$per_dev" "$work/dev$i.img"
    devs+=("$(losetup --direct-io=on -f --show "$work/dev$i.img")")
done
pdevs=()
for d in "${devs[@]}"; do pdevs+=(--dev "$d"); done
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
"$old" backup "$tmpfs/many" "${pdevs[@]}" --force --json >/dev/null
# The tar archive goes to a file beside the devices' (tar x reads it as
# many-files.sh's tar x reads a device: the same bytes, page cache dropped).
tar -b 2048 -cf "$work/tree.tar" -C "$tmpfs" many
rm -rf "$tmpfs/many"
out="$work/results.tsv"
printf 'rep\tname\twall_s\tcpu_s\tuser_s\tsys_s\tmax_rss_kib\n' >"$out"
one() { # REP NAME COMMAND...
    local rep=$1 name=$2
    shift 2
    rm -rf "$tmpfs/out"
    mkdir -p "$tmpfs/out"
    sync
    echo 3 >/proc/sys/vm/drop_caches
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/time -f '%U %S %M' -o "$work/time" "$@" >/dev/null 2>"$work/err" ||
        { say "$name failed: $(tail -3 "$work/err")"; exit 1; }
    t1=$(date +%s.%N)
    read -r u s m <"$work/time"
    printf '%s\t%s\t%.3f\t%.2f\t%s\t%s\t%s\n' "$rep" "$name" "$(echo "$t1 - $t0" | bc -l)" \
        "$(echo "$u + $s" | bc -l)" "$u" "$s" "$m" | tee -a "$out" >&2
}
for rep in $(seq 1 "$reps"); do
    one "$rep" old "$old" restore "${pdevs[@]}" --to "$tmpfs/out" --json
    one "$rep" new "$new" restore "${pdevs[@]}" --to "$tmpfs/out" --json
    [ -z "$ref" ] || one "$rep" ref "$ref" restore "${pdevs[@]}" --to "$tmpfs/out" --json
    one "$rep" tar tar -b 2048 -xf "$work/tree.tar" -C "$tmpfs/out"
done
python3 - "$out" "$files" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
med = lambda name, k: statistics.median(float(r[k]) for r in rows if r["name"] == name)
print(f"{sys.argv[2]} tiny files, medians of {len([r for r in rows if r['name'] == 'old'])} reps")
print("| run | wall s | CPU s (user+sys) | user s | sys s | max RSS MiB | files/s vs tar x |")
print("|---|---:|---:|---:|---:|---:|---:|")
for n in [n for n in ["old", "new", "ref", "tar"] if any(r["name"] == n for r in rows)]:
    print(f"| {n} | {med(n, 'wall_s'):.2f} | {med(n, 'cpu_s'):.2f} | {med(n, 'user_s'):.2f} | "
          f"{med(n, 'sys_s'):.2f} | "
          f"{med(n, 'max_rss_kib') / 1024:.0f} | {med('tar', 'wall_s') / med(n, 'wall_s'):.2f}x |")
print(f"new/old: wall {med('new', 'wall_s') / med('old', 'wall_s'):.2f}x, "
      f"CPU {med('new', 'cpu_s') / med('old', 'cpu_s'):.2f}x")
PY
