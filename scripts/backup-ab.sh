#!/usr/bin/env bash
# pbio backup alone, two binaries A/B on the same tree and devices (issue 23).
#
#   scripts/backup-ab.sh OLD_PBIO NEW_PBIO [N] [REPS]
#
# Generates N files (default 100000) as many-files.sh does (1000 a directory,
# every other one empty, the rest 1 byte) on a tmpfs, makes 4 loop devices
# (--direct-io=on over sparse 2 GiB files), then REPS times (default 3) backs
# the tree up with OLD then NEW, page cache dropped before each, and prints
# per run the wall and CPU seconds and the max RSS (/usr/bin/time). Needs root.
#
# Environment: PBIO_AB_TMPFS [/dev/shm/pbio-backup-ab], PBIO_AB_DIR [/var/tmp/pbio-backup-ab]
set -euo pipefail
old=${1:?old pbio binary}
new=${2:?new pbio binary}
n=${3:-100000}
reps=${4:-3}
tree=${PBIO_AB_TMPFS:-/dev/shm/pbio-backup-ab}
work=${PBIO_AB_DIR:-/var/tmp/pbio-backup-ab}
[ "$(id -u)" = 0 ] || { echo "backup-ab: needs root" >&2; exit 2; }
rm -rf "$tree" "$work"
mkdir -p "$tree" "$work"
loops=()
cleanup() {
    local l
    for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
    rm -rf "$tree" "$work"
}
trap cleanup EXIT
python3 - "$tree/many" "$n" <<'PY'
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
devs=()
for i in 0 1 2 3; do
    truncate -s 2G "$work/d$i.img"
    l=$(losetup --direct-io=on -f --show "$work/d$i.img")
    loops+=("$l")
    devs+=(--dev "$l")
done
for r in $(seq "$reps"); do
    for which in old new; do
        bin=$old
        [ "$which" = new ] && bin=$new
        sync
        echo 3 >/proc/sys/vm/drop_caches
        /usr/bin/time -f "$which rep$r: wall %e s, user %U s, sys %S s, max RSS %M KiB" \
            "$bin" backup "$tree/many" "${devs[@]}" --force --json >/dev/null
    done
done
