#!/usr/bin/env bash
# Restore of many small files: pbio restore vs GNU `tar x`, files per
# second, in one run, each reading one device of the same kind.
#
#   scripts/bench-small-restore.sh DEV_PBIO DEV_TAR   (as root; destroys both devices' data)
#
# Generates FILES files of 0..SIZE_MAX bytes (uniform; 1000 a directory) on
# a tmpfs, backs them up with `pbio backup` to DEV_PBIO and `tar -b 2048 cf`
# to DEV_TAR (+ fsync), then REPS times, alternating which goes first, with
# the page cache dropped before each: `pbio restore --dev DEV_PBIO --to T`
# and `tar -b 2048 -xf DEV_TAR -C T` into an empty T on the same tmpfs,
# and `dd if=DEV_TAR bs=1M iflag=direct | tar -b 2048 -xf - -C T` (tardd:
# tar reading the device through the page cache is slow on loop devices;
# the ratio is taken against the faster of the two).
# Prints wall seconds, files/s and the ratio pbio / tar (medians), CPU
# seconds (user + system) and the resident maximum of each (/usr/bin/time).
# With OLD=<another pbio build> that build restores the same device too,
# in the same rotation (A/B: the ratio new / old is printed as well).
#
# Environment (defaults in brackets): FILES [100000], SIZE_MIN [0],
# SIZE_MAX [4096], REPS [3], DIR [/dev/shm/pbio-small-restore] (tree and
# restore targets, removed at the end), PBIO [target/release/pbio], OLD [].
# The issue's case, files of 1-64 KiB: SIZE_MIN=1024 SIZE_MAX=65536.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# = 2 ] || { echo "usage: $0 DEV_PBIO DEV_TAR" >&2; exit 2; }
dev_pbio=$1 dev_tar=$2
files=${FILES:-100000}
size_min=${SIZE_MIN:-0}
size_max=${SIZE_MAX:-4096}
old=${OLD:-}
reps=${REPS:-3}
dir=${DIR:-/dev/shm/pbio-small-restore}
pbio=${PBIO:-$PWD/target/release/pbio}
say() { echo "small-restore: $*" >&2; }
[ "$(id -u)" = 0 ] || { say "needs root (devices, drop_caches)"; exit 2; }
rm -rf "$dir"
mkdir -p "$dir"
trap 'rm -rf "$dir"' EXIT
say "generating $files files of $size_min-$size_max bytes in $dir/small"
python3 - "$dir/small" "$files" "$size_max" "$size_min" <<'PY'
import os, random, sys
root, files, size_max, size_min = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(23)
for i in range(files):
    d = os.path.join(root, f"d{i // 1000:04d}")
    if i % 1000 == 0:
        os.makedirs(d)
    with open(os.path.join(d, f"f{i:07d}"), "wb") as f:
        f.write(rng.randbytes(rng.randint(size_min, size_max)))
PY
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
say "pbio backup -> $dev_pbio, tar cf -> $dev_tar"
"$pbio" backup "$dir/small" --dev "$dev_pbio" --force >/dev/null
tar_bytes=$(tar -b 2048 --totals -cf "$dev_tar" -C "$dir" small 2>&1 | sed -n 's/^Total bytes written: \([0-9]*\).*/\1/p')
sync "$dev_tar"
tar_mib=$(((tar_bytes + (1 << 20) - 1) >> 20))
rm -rf "$dir/small"
res=$(mktemp)
run() { # NAME CMD...
    local name=$1
    shift
    rm -rf "$dir/out" && mkdir -p "$dir/out"
    drop
    /usr/bin/time -f '%e %M %U %S' -o "$dir/time" "$@" >/dev/null 2>"$dir/$name.err" ||
        say "$name failed: $(tail -2 "$dir/$name.err" | tr '\n' ' ')"
    local got
    got=$(find "$dir/out" -type f | wc -l)
    [ "$got" = "$files" ] || say "$name restored $got files of $files"
    echo "$name $(cat "$dir/time")" >>"$res"
    say "$name: $(cat "$dir/time") (wall s, max RSS KiB, user s, sys s)"
}
for rep in $(seq 1 "$reps"); do
    order=(pbio tar tardd)
    [ -z "$old" ] || order=(pbio old tar tardd)
    # Each takes each place in turn.
    for _ in $(seq 2 "$rep"); do order=("${order[@]:1}" "${order[0]}"); done
    for w in "${order[@]}"; do
        case $w in
        pbio) run pbio "$pbio" restore --dev "$dev_pbio" --to "$dir/out" ;;
        old) run old "$old" restore --dev "$dev_pbio" --to "$dir/out" ;;
        tar) run tar tar -b 2048 -xf "$dev_tar" -C "$dir/out" ;;
        tardd) run tardd sh -c "dd if=$dev_tar bs=1M iflag=direct count=$tar_mib status=none | tar -b 2048 -xf - -C $dir/out" ;;
        esac
    done
done
python3 - "$res" "$files" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    k, wall, rss, user, sys_s = line.split()
    rows.setdefault(k, []).append((float(wall), int(rss), float(user) + float(sys_s)))
files = int(sys.argv[2])
fps = {}
for k, v in sorted(rows.items()):
    wall = statistics.median(w for w, _, _ in v)
    cpu = statistics.median(c for _, _, c in v)
    fps[k] = files / wall
    print(f"{k:5s} median {wall:7.2f} s  {fps[k]:9.0f} files/s  (min {min(w for w, _, _ in v):.2f} max {max(w for w, _, _ in v):.2f})  CPU {cpu:.2f} s (min {min(c for _, _, c in v):.2f} max {max(c for _, _, c in v):.2f})  max RSS {max(r for _, r, _ in v) // 1024} MiB  n={len(v)}")
tars = [fps[k] for k in ("tar", "tardd") if k in fps]
if "pbio" in fps and tars:
    print(f"pbio / faster tar x (files/s): {fps['pbio'] / max(tars):.2f}")
if "old" in fps and tars:
    print(f"old / faster tar x (files/s): {fps['old'] / max(tars):.2f}")
if "old" in fps and "pbio" in fps:
    print(f"pbio / old (files/s): {fps['pbio'] / fps['old']:.2f}")
PY
rm -f "$res"
