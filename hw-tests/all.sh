#!/bin/sh
# Run hw-tests suites and sum up. With no arguments, every suite whose
# device variable is set: disk (PBIO_DISK), nvme (PBIO_NVME), pmem (PBIO_PMEM), dax
# (PBIO_DAX), set (PBIO_NVME and/or PBIO_PMEM), tape-control (PBIO_TAPE) and, on a drive that keeps
# what it writes, tape (PBIO_TAPE; the payload round trips). Or name them:
# all.sh nvme tape-control.
#
# Exit 1 when any check failed (the failing checks are listed at the end),
# 0 otherwise. A suite that exits non-zero without printing a FAIL line
# (refused, crashed, or a script that reports by exit code) counts as one
# failed check named after it.
#
# The suites overwrite the devices named by the variables.
here=$(cd "$(dirname "$0")" && pwd)
suites=$*
if [ -z "$suites" ]; then
    [ -n "${PBIO_DISK:-}" ] && suites="$suites disk"
    [ -n "${PBIO_NVME:-}" ] && suites="$suites nvme"
    [ -n "${PBIO_PMEM:-}" ] && suites="$suites pmem"
    [ -n "${PBIO_DAX:-}" ] && suites="$suites dax"
    { [ -n "${PBIO_NVME:-}" ] || [ -n "${PBIO_PMEM:-}" ]; } && suites="$suites set"
    if [ -n "${PBIO_TAPE:-}" ]; then
        suites="$suites tape-control"
        [ "${PBIO_TAPE_KEEPS_DATA:-1}" != 0 ] && [ -f "$here/tape.sh" ] && suites="$suites tape"
    fi
fi
if [ -z "$suites" ]; then
    echo "all.sh: nothing to run: set PBIO_DISK, PBIO_NVME, PBIO_PMEM, PBIO_DAX and/or PBIO_TAPE to the devices to test (they are overwritten)" >&2
    exit 2
fi
PBIO=${PBIO:-pbio}
# tape.sh (the payload round trips on a real drive) names its binary PBIO_BIN.
PBIO_BIN=${PBIO_BIN:-$(command -v "$PBIO" || echo "$PBIO")}
export PBIO PBIO_BIN
echo "hw-tests: $("$PBIO" --version 2>&1), kernel $(uname -r), suites:$suites"
out=$(mktemp "${TMPDIR:-/tmp}/pbio-hw-all.XXXXXX")
for s in $suites; do
    if [ ! -f "$here/$s.sh" ]; then
        echo "FAIL $s: no suite $here/$s.sh" | tee -a "$out"
        continue
    fi
    start=$(date +%s)
    : >"$out.one"
    { "$here/$s.sh" 2>&1; echo $? >"$out.rc"; } | tee "$out.one"
    rc=$(cat "$out.rc")
    cat "$out.one" >>"$out"
    if [ "$rc" != 0 ] && ! grep -q '^FAIL ' "$out.one"; then
        echo "FAIL $s: $s.sh exited $rc" | tee -a "$out"
    elif [ "$rc" = 0 ] && ! grep -q '^\(PASS\|FAIL\|SKIP\) ' "$out.one"; then
        echo "PASS $s: $s.sh exited 0" | tee -a "$out"
    fi
    echo "hw-tests: $s took $(($(date +%s) - start)) s"
done
npass=$(grep -c '^PASS ' "$out")
nskip=$(grep -c '^SKIP ' "$out")
nfail=$(grep -c '^FAIL ' "$out")
echo "hw-tests: $npass passed, $nfail failed, $nskip skipped"
if [ "$nfail" -gt 0 ]; then
    echo "hw-tests: failing checks:"
    grep '^FAIL ' "$out" | sed 's/^/  /'
fi
rm -f "$out" "$out.one" "$out.rc"
[ "$nfail" = 0 ]
