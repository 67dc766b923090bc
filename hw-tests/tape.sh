#!/usr/bin/env bash
# pbio against a real tape drive: `pbio qualify` (the drive's status,
# block limits, streaming throughput, variable blocks, filemarks, spacing,
# rewind, end of data), then the checks tests/tape.rs runs on the emulator
# (round trip with a disk, tape alone, scan, restore --scan) and, when
# asked, the end-of-tape check. One line per check: PASS tape.NAME: ... or
# FAIL tape.NAME: ... (the script stops at the first FAIL).
#
#   PBIO_TAPE=/dev/nst0 hw-tests/tape.sh
#
# THE CARTRIDGE IN THE DRIVE IS OVERWRITTEN (qualify and backups run with
# --force). Never runs in CI, except on the emulated test bed
# (hw-tests/emulated.sh sets PBIO_HW_EMULATED=1 and PBIO_TAPE=vtape:DIR).
#
# Environment:
#   PBIO_TAPE        the drive's non-rewinding node (required); vtape:DIR
#                    rehearses the script on the emulator
#   PBIO_TAPE_SIZE   the cartridge's native capacity (e.g. 12T), when the
#                    drive's density code is not an LTO generation pbio knows
#   PBIO_BIN         pbio binary (default: target/release/pbio, built if missing)
#   PBIO_TAPE_WORK   scratch directory (default: a new one under /var/tmp)
#   PBIO_TAPE_TREE_MIB  size of the generated large file (default 1024)
#   PBIO_TAPE_SMALL_FILES  how many small files (1 B-64 KiB) the tree has (default 2000)
#   PBIO_HW_QUALIFY_ARGS  extra `pbio qualify` options (e.g. --quick)
#   PBIO_TAPE_EOT=DIR  also run the end-of-tape check, backing up DIR, which
#                    must hold more data than the cartridge (this takes as
#                    long as filling the tape: hours)
set -euo pipefail

die() {
    echo "tape.sh: $*" >&2
    exit 2
}

if [[ -n "${CI:-}" && "${PBIO_HW_EMULATED:-0}" != 1 ]]; then
    die "refusing to run in CI (CI=${CI}): this needs a tape drive and erases its cartridge (hw-tests/emulated.sh runs it on vtape:)"
fi
TAPE=${PBIO_TAPE:-}
if [[ -z "$TAPE" ]]; then
    sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2
    die "PBIO_TAPE is not set: name the drive, e.g. PBIO_TAPE=/dev/nst0"
fi
case "$TAPE" in
vtape:*) EMULATED=1 ;;
*)
    EMULATED=
    [[ -c "$TAPE" ]] || die "$TAPE is not a character device"
    case "$(basename "$TAPE")" in
    nst*) ;;
    *) die "$TAPE: use the non-rewinding node (/dev/nstN)" ;;
    esac
    ;;
esac
command -v python3 >/dev/null || die "python3 is needed to read pbio's --json output"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PBIO=${PBIO_BIN:-$ROOT/target/release/pbio}
if [[ ! -x "$PBIO" ]]; then
    (cd "$ROOT" && cargo build --release)
fi
WORK=${PBIO_TAPE_WORK:-$(mktemp -d /var/tmp/pbio-tape.XXXXXX)}
mkdir -p "$WORK"
DEV="$TAPE${PBIO_TAPE_SIZE:+,size=$PBIO_TAPE_SIZE}"
DISK="$WORK/disk.img"
# step NAME TEXT: the check that follows; ok/fail print its verdict.
check=start
step() {
    check=$1
    shift
    echo "== $*"
}
ok() { echo "PASS tape.$check: $*"; }
fail() {
    echo "FAIL tape.$check: $*"
    echo "tape.sh: scratch (logs): $WORK" >&2
    exit 1
}
# json FILE EXPR: evaluate EXPR on the last JSON line of FILE (as `d`).
json() {
    python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print(eval(sys.argv[2]))' "$1" "$2"
}
same_tree() {
    diff -r --no-dereference "$1" "$2" >"$WORK/diff.txt" 2>&1 || {
        head -20 "$WORK/diff.txt" >&2
        fail "restored tree $2 differs from $1"
    }
}

if [[ -z "$EMULATED" ]] && command -v mt >/dev/null; then
    step status "drive status"
    mt -f "$TAPE" status || true
fi

step qualify "pbio qualify --force on $DEV (overwrites the cartridge)"
# shellcheck disable=SC2086 # the extra arguments are words
"$PBIO" qualify --dev "$DEV" --force ${PBIO_HW_QUALIFY_ARGS:-} >"$WORK/qualify.txt" 2>&1 && qrc=0 || qrc=$?
while read -r verdict name rest; do
    # The closing summary repeats each FAIL as "FAIL name: detail".
    [[ $name == *: ]] && continue
    case $verdict in
    PASS | FAIL | SKIP) echo "$verdict tape.qualify.$name: $rest" ;;
    esac
done <"$WORK/qualify.txt"
[[ $qrc == 0 ]] || fail "pbio qualify --dev $DEV exited $qrc: $(grep '^verdict:' "$WORK/qualify.txt")"
ok "$(grep '^verdict:' "$WORK/qualify.txt")"

step tree "source tree under $WORK/src"
rm -rf "$WORK/src" && mkdir -p "$WORK/src/tree/small"
python3 - "$WORK/src/tree" "${PBIO_TAPE_TREE_MIB:-1024}" "${PBIO_TAPE_SMALL_FILES:-2000}" <<'EOF'
import os, random, sys
root = sys.argv[1]
r = random.Random(7)
with open(os.path.join(root, "large.bin"), "wb") as f:
    for _ in range(int(sys.argv[2])):
        f.write(os.urandom(1 << 20))
for i in range(int(sys.argv[3])):
    d = os.path.join(root, "small", f"d{i % 20:02}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05}"), "wb") as f:
        f.write(os.urandom(r.randint(1, 64 << 10)))
open(os.path.join(root, "empty"), "wb").close()
os.symlink("large.bin", os.path.join(root, "link"))
EOF
SRC="$WORK/src/tree"
ok "$(find "$SRC" -type f | wc -l) files, $(du -sk "$SRC" | cut -f1) KiB"

step backup "backup to the tape and a file device"
rm -f "$DISK"
"$PBIO" backup --force "$SRC" --dev "$DEV" --dev "$DISK,size=4G" --json >"$WORK/backup.json" ||
    fail "backup (exit $?)"
[[ $(json "$WORK/backup.json" "d['devices'][0]['state']") == complete ]] || fail "tape not complete"
[[ $(json "$WORK/backup.json" "d['devices'][0]['payload_bytes'] > 0") == True ]] || fail "tape got no data"
ok "tape: $(json "$WORK/backup.json" "'%d records, %.0f MiB/s, %d underruns (%.0f ms)' % tuple(d['devices'][0][k] for k in ('records','mib_per_sec','underruns','underrun_ms'))")"

step list "list from the tape alone (rewind, space over the data file, read the catalog)"
"$PBIO" list --dev "$DEV" --json >"$WORK/list.json" || fail "list from the tape"
[[ $(json "$WORK/list.json" "len(d['files'])") == $(json "$WORK/backup.json" "d['files']") ]] ||
    fail "the tape's catalog does not list every entry"
ok "$(json "$WORK/list.json" "len(d['files'])") entries"

step restore "restore from tape and disk, verify"
rm -rf "$WORK/r1"
"$PBIO" restore --dev "$DEV" --dev "$DISK" --to "$WORK/r1" || fail "restore"
same_tree "$SRC" "$WORK/r1/tree"
"$PBIO" verify --dev "$DISK" --dev "$DEV" || fail "verify"
ok "byte-identical, verified"

step scan "scan and restore --scan (records in order, no catalog)"
"$PBIO" scan --dev "$DEV" --json >"$WORK/scan.json" || fail "scan"
[[ $(json "$WORK/scan.json" "d['end_found']") == True ]] || fail "scan did not find the End record"
[[ $(json "$WORK/scan.json" "d['data_records']") == $(json "$WORK/backup.json" "d['devices'][0]['records']") ]] ||
    fail "scan found a different number of data records"
rm -rf "$WORK/r2"
"$PBIO" restore --scan --dev "$DEV" --dev "$DISK" --to "$WORK/r2" || fail "restore --scan"
(cd "$SRC" && find . -type f -size +0 -print0) | while IFS= read -r -d '' f; do
    cmp -s "$SRC/$f" "$WORK/r2/tree/$f" || fail "restore --scan: $f differs"
done
ok "every non-empty file byte-identical from the records alone"

step alone "the tape alone"
"$PBIO" backup --force "$SRC" --dev "$DEV" --json >"$WORK/alone.json" || fail "backup to the tape alone"
rm -rf "$WORK/r3"
"$PBIO" restore --dev "$DEV" --to "$WORK/r3" || fail "restore from the tape alone"
same_tree "$SRC" "$WORK/r3/tree"
ok "byte-identical"

if [[ -n "${PBIO_TAPE_EOT:-}" ]]; then
    step eot "end of tape: back up $PBIO_TAPE_EOT (more than the cartridge holds) to the tape and a disk"
    [[ -d "$PBIO_TAPE_EOT" ]] || fail "PBIO_TAPE_EOT=$PBIO_TAPE_EOT is not a directory"
    SPILL=${PBIO_TAPE_SPILL:-$WORK/spill.img}
    rm -f "$SPILL"
    CAP=$(json "$WORK/list.json" "d['devices'][0]['capacity_bytes']")
    # The plan must give the tape more than it holds before early warning:
    # declared much faster than the disk (--balance time), it is planned
    # up to its capacity; a drive is declared twice its size, an emulated
    # cartridge's size is its physical length (which early warning precedes).
    if [[ -n "$EMULATED" ]]; then EOT_DEV="$TAPE"; else EOT_DEV="$TAPE,size=$((CAP * 2))"; fi
    "$PBIO" backup --force "$PBIO_TAPE_EOT" --balance time --dev "$EOT_DEV,rate=1000M" \
        --dev "$SPILL,size=$((CAP * 2)),rate=1M" --json >"$WORK/eot.json" || fail "backup (exit $?)"
    [[ $(json "$WORK/eot.json" "d['devices'][0]['state']") == full ]] || fail "the tape did not report full"
    [[ $(json "$WORK/eot.json" "d['devices'][0]['redirected_bytes'] > 0") == True ]] || fail "nothing redirected"
    [[ $(json "$WORK/eot.json" "d['devices'][0]['catalog_end'] is not None") == True ]] ||
        fail "no catalog after early warning"
    "$PBIO" list --dev "$EOT_DEV" >/dev/null || fail "list from the full tape"
    rm -rf "$WORK/r4"
    "$PBIO" restore --dev "$EOT_DEV" --dev "$SPILL" --to "$WORK/r4" || fail "restore"
    same_tree "$PBIO_TAPE_EOT" "$WORK/r4/$(basename "$PBIO_TAPE_EOT")"
    ok "full at early warning, catalog on the tape, the rest on the disk, byte-identical"
fi

echo "tape.sh: all checks passed on $TAPE (scratch: $WORK)"
