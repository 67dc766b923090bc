#!/usr/bin/env bash
# Memory per entry of two pbio binaries, A/B in one run (issue 23).
#
#   scripts/memory-ab.sh OLD_PBIO NEW_PBIO [N_SMALL] [N_LARGE]
#
# Runs scripts/many-files.sh at N_SMALL (default 100000) and N_LARGE
# (default 400000) files for each binary, alternating (old, new at N_LARGE,
# then new, old at N_SMALL), and prints per step the max RSS of each run,
# the ratio large/small (memory_read's limit is < 1.3x) and the slope in
# bytes an entry (difference of max RSS over the difference of entries),
# next to the files/s against tar of the N_LARGE runs. Needs what
# many-files.sh needs (root, python3, /usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?old pbio binary}
new=${2:?new pbio binary}
small=${3:-100000}
large=${4:-400000}
work=${PBIO_MANY_DIR:-/var/tmp/pbio-many}
runs=()
run() { # LABEL BINARY N
    local before
    before=$(ls -d "$work"/results-* 2>/dev/null | sort | tail -1 || true)
    PBIO="$2" scripts/many-files.sh "$3" >&2
    sleep 1
    local dir
    dir=$(ls -d "$work"/results-* | sort | tail -1)
    [ "$dir" != "$before" ] || { echo "memory-ab: no results for $1 $3" >&2; exit 2; }
    runs+=("$1 $3 $dir")
}
run old "$old" "$large"
run new "$new" "$large"
run new "$new" "$small"
run old "$old" "$small"
python3 - "$small" "$large" "${runs[@]}" <<'PY'
import csv, sys
small, large = int(sys.argv[1]), int(sys.argv[2])
res = {}
for spec in sys.argv[3:]:
    label, n, d = spec.split(" ", 2)
    rows = {r["name"]: r for r in csv.DictReader(open(d + "/results.tsv"), delimiter="\t")}
    res[(label, int(n))] = (rows, d)
print(f"| step | binary | max RSS {small//1000}k MiB | max RSS {large//1000}k MiB | ratio | slope bytes/entry | {large//1000}k entries/s vs tar |")
print("|---|---|---:|---:|---:|---:|---:|")
ref = {"pbio_backup": "tar_c", "pbio_list": "tar_x", "pbio_verify": "tar_x", "pbio_restore": "tar_x"}
for step in ["pbio_backup", "pbio_list", "pbio_verify", "pbio_restore"]:
    for label in ["old", "new"]:
        s, _ = res[(label, small)]
        l, _ = res[(label, large)]
        rs, rl = int(s[step]["max_rss_kib"]) * 1024, int(l[step]["max_rss_kib"]) * 1024
        es, el = int(s[step]["entries"]), int(l[step]["entries"])
        fps = lambda r, k: int(r[k]["entries"]) / max(float(r[k]["wall_s"]), 1e-9)
        vs = fps(l, step) / fps(l, ref[step])
        print(f"| {step[5:]} | {label} | {rs/2**20:.0f} | {rl/2**20:.0f} | {rl/rs:.2f}x | "
              f"{(rl-rs)/(el-es):.0f} | {vs:.2f}x |")
for (label, n), (_, d) in sorted(res.items()):
    print(f"{label} {n}: {d}")
PY
