# hw-tests/lib.sh: sourced by every hw-tests script. POSIX sh: the same
# scripts run under busybox in the QEMU guest (hw-tests/vm/run.sh) and under
# dash or bash on a lab machine with the real hardware.
#
# Every check prints one line, "PASS suite.name: detail",
# "FAIL suite.name: detail" or "SKIP suite.name: reason"; a script exits 1
# when any of its checks failed, 2 when it refused to run (a missing
# variable or tool), 0 otherwise.
#
# Common environment:
#   PBIO          the pbio binary [pbio on PATH]
#   PBIO_WORK     scratch folder for trees, restores, file devices and logs
#                 [a new folder under ${TMPDIR:-/tmp}, removed on success]
#   PBIO_HW_SIZE  bytes per device for throughput runs [256M]
#   PBIO_VM=1     set by the guest's init: the numbers are emulation speed
#   PBIO_HW_EMULATED=1  set by hw-tests/emulated.sh: the devices are stand-ins
#                 on this machine (loop devices, vtape:, a pmem file), which
#                 the suites accept in place of the real kind, also under CI

PBIO=${PBIO:-pbio}
PBIO_HW_SIZE=${PBIO_HW_SIZE:-256M}
hw_failed=0
hw_suite=${hw_suite:-hw}

pass() { echo "PASS $hw_suite.$1${2:+: $2}"; }
fail() {
    echo "FAIL $hw_suite.$1${2:+: $2}"
    hw_failed=1
}
skip() { echo "SKIP $hw_suite.$1: $2"; }
note() { echo "  $hw_suite: $*"; }

# refuse VAR WHAT: stop (exit 2) unless $VAR is set.
require_var() {
    eval "hw_val=\${$1:-}"
    if [ -z "$hw_val" ]; then
        echo "$0: refusing to run: set $1 to the $2 to test (its contents are destroyed)" >&2
        exit 2
    fi
}

# refuse_ci: a suite pointed at real hardware never runs in CI (CI set);
# the emulated test bed (PBIO_HW_EMULATED=1) and the QEMU guest may.
refuse_ci() {
    if [ -n "${CI:-}" ] && [ "${PBIO_HW_EMULATED:-0}" != 1 ]; then
        echo "$0: refusing to run in CI (CI=$CI): this erases real hardware; hw-tests/emulated.sh runs the suites on stand-ins" >&2
        exit 2
    fi
}

require_tool() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "$0: refusing to run: needs $1 on PATH${2:+ ($2)}" >&2
        exit 2
    }
}

# A scratch folder; its logs stay when a check failed.
work_init() {
    if [ -z "${PBIO_WORK:-}" ]; then
        PBIO_WORK=$(mktemp -d "${TMPDIR:-/tmp}/pbio-hw.XXXXXX")
        hw_work_owned=1
    fi
    hw_dir=$PBIO_WORK/$hw_suite
    rm -rf "$hw_dir"
    mkdir -p "$hw_dir"
}

finish() {
    if [ "$hw_failed" = 0 ]; then
        [ "${hw_work_owned:-0}" = 1 ] && rm -rf "$PBIO_WORK"
        exit 0
    fi
    echo "  $hw_suite: logs in $hw_dir"
    exit 1
}

# run LOG CMD...: run a command with its output in $hw_dir/LOG; its exit
# code is in $rc, its duration in $secs. show_log shows the output's end.
# shellcheck disable=SC2034 # rc, secs: read by the suites
run() {
    hw_log=$hw_dir/$1
    shift
    hw_t0=$(uptime_s)
    "$@" >"$hw_log" 2>&1
    rc=$?
    secs=$(elapsed "$hw_t0")
    return 0
}

uptime_s() { cut -d' ' -f1 /proc/uptime; }
# elapsed T0: seconds since uptime_s said T0.
elapsed() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }'; }

# shellcheck disable=SC2120 # show_log [FILE [LINES]], FILE defaulting to the last run's log
show_log() {
    tail -n "${2:-15}" "${1:-$hw_log}" | sed "s/^/    | /"
}

# json_field KEY FILE: the first value of "KEY" in a JSON text (numbers,
# booleans and strings; enough for pbio's flat fields, no jq in the guest).
json_field() {
    grep -oE "\"$1\":(\"[^\"]*\"|[^,}]*)" "$2" | head -n1 | sed "s/^\"$1\"://; s/^\"//; s/\"\$//"
}

# json_count KEY VALUE FILE: how many times "KEY":VALUE occurs.
json_count() {
    grep -o "\"$1\":$2[,}]" "$3" | wc -l | tr -d ' '
}

# summary_of LOG: the summary event of `backup --json` (keys in
# alphabetical order; "changed" and "complete" come before "devices").
summary_of() {
    grep '"event":"summary"' "$1" | tail -n1
}

# summary_top FILE: the summary without its devices array, so that
# json_field finds the set's own fields.
summary_top() {
    # Wherever the array stands among the keys (its objects are flat: it
    # ends at the first "}]" after its start).
    awk '{ s = $0; i = index(s, "\"devices\":[{"); if (i == 0) { print s; next }
           t = substr(s, i); j = index(t, "}]"); if (j == 0) { print s; next }
           print substr(s, 1, i - 1) substr(t, j + 2) }' "$1"
}

# summary_devices FILE: one line per device object of a summary, in --dev order.
summary_devices() {
    # The summary's keys come in any order, and other keys (parity's) hold
    # "payload_bytes" too: take the "devices" array alone. Its objects are
    # flat, so the array ends at the first "}]" after its start.
    awk '{ s = $0; i = index(s, "\"devices\":[{"); if (i == 0) next
           s = substr(s, i + 12); j = index(s, "}]"); if (j > 0) s = substr(s, 1, j - 1)
           n = split(s, a, /\},\{/); for (i = 1; i <= n; i++) print a[i] }' "$1"
}

# field KEY: json_field over stdin.
field() {
    grep -oE "\"$1\":(\"[^\"]*\"|[^,}]*)" | head -n1 | sed "s/^\"$1\"://; s/^\"//; s/\"\$//"
}

has_subcommand() {
    "$PBIO" --help 2>/dev/null | grep -q "^  $1 "
}

speed_note() {
    if [ "${PBIO_VM:-0}" = 1 ]; then
        echo "emulated device under TCG: emulation speed, not hardware speed"
    else
        echo "this machine"
    fi
}

# bench_device NAME DEV [DIRECT]: sequential write then read through
# pbio's rings. DIRECT=1 (default) requires O_DIRECT (block devices);
# DIRECT=0 for mapped kinds (pmem), whose stderr line naming the mapping's
# durability (DAX + cache-line flushes, or msync) is shown instead.
bench_device() {
    for rw in write read; do
        run "bench-$rw.json" "$PBIO" bench --dev "$2" --rw "$rw" --size "$PBIO_HW_SIZE" --bs 1M --force --json
        f=$hw_dir/bench-$rw.json
        if [ "$rc" != 0 ]; then
            fail "bench-$rw" "pbio bench --rw $rw on $2 exited $rc"
            show_log
            continue
        fi
        bytes=$(grep '^{' "$f" | field bytes)
        short=$(grep '^{' "$f" | field short_ios)
        retries=$(grep '^{' "$f" | field retries)
        direct=$(grep '^{' "$f" | field direct_io)
        mibs=$(grep '^{' "$f" | field mib_per_sec | cut -d. -f1)
        p99=$(grep -o '"p99":[0-9.]*' "$f" | tail -n1 | cut -d: -f2 | cut -d. -f1)
        want=$(size_bytes "$PBIO_HW_SIZE")
        how="O_DIRECT"
        if [ "${3:-1}" = 0 ]; then
            how=$(grep -o 'mapped (.*)' "$f" | head -n1)
            how=${how:-through the mapping}
        fi
        if [ "$bytes" = "$want" ] && [ "$short" = 0 ] && [ "$retries" = 0 ] &&
            { [ "$direct" = true ] || [ "${3:-1}" = 0 ]; }; then
            pass "bench-$rw" "$bytes bytes, $how, no short I/O, no retries; ${mibs} MiB/s, p99 ${p99} us at 1 MiB qd 32 ($(speed_note))"
        else
            fail "bench-$rw" "bytes=$bytes (want $want) short_ios=$short retries=$retries direct_io=$direct"
            show_log
        fi
    done
}

# size_bytes 256M -> 268435456 (powers of 1024, as pbio reads them).
size_bytes() {
    echo "$1" | awk '{
        n = $0; m = 1; u = toupper(substr(n, length(n), 1))
        if (u == "K") m = 1024; else if (u == "M") m = 1048576; else if (u == "G") m = 1073741824; else if (u == "T") m = 1099511627776
        if (m > 1) n = substr(n, 1, length(n) - 1)
        printf "%.0f\n", n * m }'
}

# qualify_device DEV [NAME TEXT WHY]: `pbio qualify --force` (plus
# $PBIO_HW_QUALIFY_ARGS, e.g. --quick) when this pbio has it. Each of
# qualify's own checks becomes a line here (suite.qualify.NAME), its exit
# code decides. With NAME TEXT WHY, a FAIL of check NAME whose detail holds
# TEXT is what this device must give (WHY says why, e.g. an emulated drive
# that keeps no payload): it counts as a PASS, and so does the run's exit
# code 3 when nothing else failed. Returns 1 when qualify is missing or has
# no checks for this kind of device (the caller may fall back to bench),
# 0 otherwise.
qualify_device() {
    if ! has_subcommand qualify; then
        skip qualify "this pbio has no qualify subcommand"
        return 1
    fi
    # shellcheck disable=SC2086 # the extra arguments are words
    run qualify.txt "$PBIO" qualify --dev "$1" --force ${PBIO_HW_QUALIFY_ARGS:-}
    if [ "$rc" = 2 ] && grep -q 'has no checks for' "$hw_log"; then
        skip qualify "$(grep -o 'qualify has no checks for.*' "$hw_log" | head -n1)"
        return 1
    fi
    hw_fails_before=$hw_failed
    hw_failed=0
    hw_expected=0
    while read -r verdict name rest; do
        # The closing summary repeats each FAIL as "FAIL name: detail".
        case $name in *:) continue ;; esac
        case $verdict in
        PASS) pass "qualify.$name" "$rest" ;;
        FAIL)
            if [ -n "${2:-}" ] && [ "$name" = "$2" ] && case $rest in *"$3"*) true ;; *) false ;; esac; then
                pass "qualify.$name" "FAIL as expected ($4): $rest"
                hw_expected=1
            else
                fail "qualify.$name" "$rest"
            fi
            ;;
        SKIP) skip "qualify.$name" "$rest" ;;
        esac
    done <"$hw_log"
    verdict=$(grep '^verdict:' "$hw_log" | sed 's/^verdict: //')
    if [ "$rc" = 0 ] && [ -z "${2:-}" ]; then
        pass qualify "${verdict:-exit 0} ($(speed_note))"
    elif [ "$rc" = 3 ] && [ "$hw_expected" = 1 ] && [ "$hw_failed" = 0 ]; then
        pass qualify "exit 3 as expected, only $2 failed ($4); ${verdict:-} ($(speed_note))"
    elif [ "$hw_failed" = 0 ]; then
        fail qualify "pbio qualify --dev $1 exited $rc${verdict:+: $verdict}${2:+ (expected only $2 to fail: $4)}"
        show_log
    fi
    [ "$hw_fails_before" = 1 ] && hw_failed=1
    return 0
}

# roundtrip DEV [MIB]: a full backup/restore round trip on DEV alone: a
# small tree (a MIB-MiB file split in records, small files, an empty file,
# a symlink) backed up with --force, verified, restored and compared with
# cmp file by file.
roundtrip() {
    rt_src=$hw_dir/rt-src
    rt_out=$hw_dir/rt-restore
    rm -rf "$rt_src" "$rt_out"
    mkdir -p "$rt_src/sub"
    head -c $((${2:-8} * 1048576 + 1234)) /dev/urandom >"$rt_src/big.bin"
    i=0
    while [ $i -lt 24 ]; do
        head -c $((i * 3001 + 1)) /dev/urandom >"$rt_src/sub/f$i"
        i=$((i + 1))
    done
    : >"$rt_src/empty"
    ln -s big.bin "$rt_src/link"
    run roundtrip-backup.json "$PBIO" backup "$rt_src" --dev "$1" --force --json
    if [ "$rc" != 0 ]; then
        fail roundtrip "pbio backup --dev $1 exited $rc"
        show_log
        return 0
    fi
    b_secs=$secs
    run roundtrip-verify.txt "$PBIO" verify --dev "$1"
    if [ "$rc" != 0 ]; then
        fail roundtrip "pbio verify --dev $1 exited $rc"
        show_log
        return 0
    fi
    run roundtrip-restore.txt "$PBIO" restore --dev "$1" --to "$rt_out"
    if [ "$rc" != 0 ]; then
        fail roundtrip "pbio restore --dev $1 exited $rc"
        show_log
        return 0
    fi
    rt_bad=
    rt_files=0
    for f in "$rt_src/big.bin" "$rt_src/empty" "$rt_src"/sub/*; do
        rel=${f#"$rt_src"/}
        rt_files=$((rt_files + 1))
        cmp -s "$f" "$rt_out/rt-src/$rel" || rt_bad="$rt_bad $rel"
    done
    [ "$(readlink "$rt_out/rt-src/link")" = big.bin ] || rt_bad="$rt_bad link"
    if [ -z "$rt_bad" ]; then
        pass roundtrip "backup to $1 alone (${b_secs} s), verify, restore: $rt_files files and a symlink byte-identical ($(du -sk "$rt_src" | cut -f1) KiB)"
    else
        fail roundtrip "restored from $1, differ from the source:$rt_bad"
    fi
    return 0
}
