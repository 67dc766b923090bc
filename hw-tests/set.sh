#!/bin/sh
# One backup set across the NVMe namespace, the pmem namespace (as a block
# device until pbio has a pmem kind) and a file device, then: verify, the
# catalog from each device alone, a full restore compared with the source
# file by file (cmp) and entry by entry (type, size, mode, mtime, link
# targets, hard links, holes), and a restore from one device alone, which
# must name what the others hold.
#
#   PBIO_NVME=/dev/nvme1n1 PBIO_PMEM=/dev/pmem0 hw-tests/set.sh
#   (either may be left out; both are overwritten)
#
#   PBIO_HW_SRC=DIR     back up this tree instead of a generated one
#   PBIO_HW_TREE_MB=48  size of the generated tree's large file (MiB)
#   PBIO_VM_BREAK=1     alter one restored file before the comparison, so
#                       that the comparison must fail (shows that a failing
#                       check fails the run)
hw_suite="set"
. "$(dirname "$0")/lib.sh"
if [ -z "${PBIO_NVME:-}" ] && [ -z "${PBIO_PMEM:-}" ]; then
    require_var PBIO_NVME "NVMe namespace (and/or PBIO_PMEM, a pmem namespace)"
fi
refuse_ci
for t in cmp find sort stat awk head; do require_tool "$t"; done
work_init

devs=
for d in ${PBIO_NVME:-} ${PBIO_PMEM:-}; do
    devs="$devs --dev $d"
done
file_dev=$hw_dir/file-device.img
devs="$devs --dev $file_dev,size=${PBIO_HW_FILE_DEV_SIZE:-256M}"
ndev=$(echo "$devs" | grep -o -- '--dev' | wc -l | tr -d ' ')

# A tree with what a backup tool gets wrong: a large file split across the
# devices, unaligned sizes, many small files, an empty file, a symlink, a
# hard link, a sparse file, a name that is not UTF-8. Few processes: under
# TCG every fork costs milliseconds.
gen_tree() {
    top=$1
    mkdir -p "$top/a" "$top/b/c" "$top/d"
    head -c $((${PBIO_HW_TREE_MB:-48} * 1048576 + 4321)) /dev/urandom >"$top/big.bin"
    i=1
    while [ $i -le 6 ]; do
        head -c $((i * 524288 + i * 977)) /dev/urandom >"$top/a/medium$i.bin"
        i=$((i + 1))
    done
    # 400 small files (0-16 KiB) cut from one random pool by one awk.
    head -c 49152 /dev/urandom | od -An -tx1 -v | tr -d ' \n' >"$hw_dir/pool"
    awk -v dir="$top/b/c" '{ pool = $0 } END {
        for (i = 0; i < 400; i++) {
            len = (i * 7919) % 16385; off = (i * 104729) % (length(pool) - 16385) + 1
            f = sprintf("%s/small%03d.txt", dir, i)
            printf "%s", substr(pool, off, len) > f; close(f)
        } }' "$hw_dir/pool"
    : >"$top/empty"
    ln -s a/medium1.bin "$top/link-to-medium1"
    ln "$top/a/medium2.bin" "$top/d/hardlink-to-medium2"
    # 16 MiB with 128 KiB of data at 6.25 MiB: holes before and after.
    dd if=/dev/urandom of="$top/sparse.bin" bs=65536 count=2 seek=100 2>/dev/null
    truncate -s 16M "$top/sparse.bin" 2>/dev/null || dd if=/dev/null of="$top/sparse.bin" bs=1 seek=16777216 2>/dev/null
    printf 'not utf-8\n' >"$top/d/$(printf 'caf\351')"
    chmod 0640 "$top/a/medium3.bin"
    chmod 0755 "$top/d"
}

if [ -n "${PBIO_HW_SRC:-}" ]; then
    src=$PBIO_HW_SRC
    note "source: $src (PBIO_HW_SRC)"
else
    src=$hw_dir/src
    t0=$(uptime_s)
    gen_tree "$src"
    note "generated the source tree in $(elapsed "$t0") s"
fi
entries=$(find "$src" | wc -l | tr -d ' ')
note "source: $entries entries, $(du -sk "$src" | cut -f1) KiB; devices:$devs"

# 1. backup
# shellcheck disable=SC2086
run backup.json "$PBIO" backup "$src" $devs --force --json
summary=$hw_dir/summary.json
summary_of "$hw_log" >"$summary"
if [ "$rc" != 0 ]; then
    fail backup "pbio backup exited $rc"
    show_log
    finish
fi
summary_devices "$summary" >"$hw_dir/devices"
summary_top "$summary" >"$hw_dir/set"
complete=$(grep -c '"state":"complete"' "$hw_dir/devices")
missing=$(field missing_bytes <"$hw_dir/set")
empty=$(grep -c '"payload_bytes":0,' "$hw_dir/devices")
shares=$(while read -r d; do
    echo "$(echo "$d" | field path | xargs basename) $(($(echo "$d" | field payload_bytes) / 1048576)) MiB"
done <"$hw_dir/devices" | tr '\n' ',' | sed 's/,$//; s/,/, /g')
if [ "$complete" = "$ndev" ] && [ "$missing" = 0 ] && [ "$empty" = 0 ]; then
    pass backup "$ndev devices complete ($shares), no missing bytes; $(field mib_per_sec <"$hw_dir/set" | cut -d. -f1) MiB/s, ${secs} s ($(speed_note))"
else
    fail backup "devices complete: $complete of $ndev, missing_bytes=$missing, devices with no payload: $empty"
    show_log "$summary" 3
fi

# 2. verify: every record's CRC and every file's digest
# shellcheck disable=SC2086
run verify.log "$PBIO" verify $devs
if [ "$rc" = 0 ]; then pass verify "every CRC and file digest checked, ${secs} s"; else
    fail verify "pbio verify exited $rc"
    show_log
fi

# 3. the catalog from each device alone
for d in $devs; do
    [ "$d" = --dev ] && continue
    d=${d%%,*}
    run list.json "$PBIO" list --dev "$d" --json
    if [ "$rc" = 0 ]; then
        pass "list-$(basename "$d")" "the catalog read from $d alone"
    else
        fail "list-$(basename "$d")" "pbio list --dev $d exited $rc"
        show_log
    fi
done

# 4. full restore, compared file by file
to=$hw_dir/restore
# shellcheck disable=SC2086
run restore.log "$PBIO" restore $devs --to "$to"
if [ "$rc" != 0 ]; then
    fail restore "pbio restore exited $rc"
    show_log
    finish
fi
pass restore "exit 0, ${secs} s"
got=$to/$(basename "$src")
if [ "${PBIO_VM_BREAK:-0}" = 1 ]; then
    note "PBIO_VM_BREAK=1: altering restored a/medium4.bin before the comparison (this check must FAIL)"
    printf 'X' | dd of="$got/a/medium4.bin" bs=1 seek=1000 conv=notrunc 2>/dev/null
    touch -r "$src/a/medium4.bin" "$got/a/medium4.bin" # only its content differs
fi
(cd "$src" && find . -type f) | sed 's|^\./||' | sort >"$hw_dir/files"
nfiles=$(wc -l <"$hw_dir/files" | tr -d ' ')
differ=0
t0=$(uptime_s)
: >"$hw_dir/cmp.log"
while IFS= read -r f; do
    if ! cmp "$src/$f" "$got/$f" >>"$hw_dir/cmp.log" 2>&1; then
        differ=$((differ + 1))
        [ $differ -le 5 ] && echo "$f" >>"$hw_dir/differ"
    fi
done <"$hw_dir/files"
if [ $differ = 0 ]; then
    pass restore-identical "all $nfiles regular files byte-identical (cmp, $(elapsed "$t0") s)"
else
    fail restore-identical "$differ of $nfiles files differ from the source: $(tr '\n' ' ' <"$hw_dir/differ" | sed 's/ $//')"
    show_log "$hw_dir/cmp.log" 5
fi

# Entries: type, size, mode for all; mtime for all but directories; link
# targets; hard links share an inode; the sparse file keeps its holes.
manifest() {
    (cd "$1" && find . ! -type d -exec stat -c '%n|%F|%s|%a|%Y' {} + && find . -type d -exec stat -c '%n|%F|%a' {} +) | sort
}
manifest "$src" >"$hw_dir/manifest.src"
manifest "$got" >"$hw_dir/manifest.restored"
if cmp -s "$hw_dir/manifest.src" "$hw_dir/manifest.restored"; then
    pass restore-metadata "$entries entries: type, size, mode, mtime match"
else
    diff "$hw_dir/manifest.src" "$hw_dir/manifest.restored" 2>&1 | grep '^[<>+-][^-+]' >"$hw_dir/manifest.diff"
    fail restore-metadata "$(grep -c '^[<-]' "$hw_dir/manifest.diff") entries differ (path|type|size|mode|mtime), first: $(head -n 2 "$hw_dir/manifest.diff" | tr '\n' ' ')"
    head -n 8 "$hw_dir/manifest.diff" | sed 's/^/    | /'
fi
if [ -z "${PBIO_HW_SRC:-}" ]; then
    t1=$(readlink "$got/link-to-medium1")
    i1=$(stat -c %i "$got/a/medium2.bin")
    i2=$(stat -c %i "$got/d/hardlink-to-medium2")
    b_src=$(stat -c %b "$src/sparse.bin")
    b_got=$(stat -c %b "$got/sparse.bin")
    if [ "$t1" = a/medium1.bin ] && [ "$i1" = "$i2" ] && [ "$b_got" -le $((b_src + 8)) ]; then
        pass restore-links "symlink target, hard link (one inode), sparse file ($b_got blocks allocated for 16 MiB)"
    else
        fail restore-links "symlink -> '$t1', hard link inodes $i1/$i2, sparse blocks $b_got (source $b_src)"
    fi
fi

# 5. one device alone restores what it holds and names the rest (exit 3)
first=$(echo "$devs" | awk '{ print $2 }')
if [ "$ndev" -gt 1 ]; then
    run restore-one.log "$PBIO" restore --dev "$first" --to "$hw_dir/restore-one"
    if [ "$rc" = 3 ] && grep -q 'big.bin' "$hw_log"; then
        pass restore-subset "$first alone: exit 3, names the missing ranges of big.bin"
    elif [ "$rc" = 0 ]; then
        fail restore-subset "$first alone restored everything: the set was not spread over the devices"
    else
        fail restore-subset "$first alone: exit $rc, expected 3 naming big.bin"
        show_log
    fi
fi
finish
