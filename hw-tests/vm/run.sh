#!/usr/bin/env bash
# Run hw-tests/ on real kernel drivers (nvme, nd_pmem, st over scsi_debug)
# in a QEMU guest, on a machine that has none of that hardware.
#
#   hw-tests/vm/run.sh            fetch (cached), build, boot, test; exit with the guest's verdict
#
# Steps: (1) fetch Debian's kernel and modules packages through a private apt
# configuration under the cache folder (the host's apt setup is only read:
# the archive URL it uses) and unpack them once; (2) build pbio statically
# (crt-static) and hw-tests/tools/mtprobe.c; (3) build a small initramfs:
# busybox-static as /init's shell, the needed modules in dependency order
# (modprobe --show-depends over the unpacked tree), hw-tests/vm/init;
# (4) boot it under TCG with an NVMe namespace, a pmem namespace (qemu
# nvdimm) and a scsi_debug tape (ptype=1), a host folder shared over 9p for
# the binaries and scripts; (5) the guest makes the second nvdimm
# device-DAX and runs hw-tests/all.sh with PBIO_NVME=/dev/nvme0n1,
# PBIO_PMEM=/dev/pmem0, PBIO_DAX=/dev/dax1.0, PBIO_TAPE=/dev/nst0, and
# reports its verdict through isa-debug-exit.
#
# Exit codes: 0 every check passed; 1 a check failed in the guest (named);
# 2 the host side failed (missing tool, download, build); 3 the guest did
# not boot, hung, or died without a verdict (timeout, panic).
#
# Environment:
#   PBIO_VM_CACHE [/var/cache/pbio-vm, or ~/.cache/pbio-vm when that is not
#                  writable]  downloads, private apt state, unpacked kernels
#   PBIO_VM_KVER [7.3.4+deb13-amd64]  the Debian kernel ABI to boot; it
#                  needs 7.x (6.12's scsi_debug tape fails filemarks)
#   PBIO_VM_SUITE [trixie-backports]  the suite holding that kernel
#   PBIO_VM_MIRROR [the Debian archive the host's apt uses, else
#                  http://deb.debian.org/debian/]
#   PBIO_VM_PBIO   a prebuilt static pbio to use instead of building one
#   PBIO_VM_TIMEOUT [300]       seconds for the whole guest run (host-side kill)
#   PBIO_VM_BOOT_TIMEOUT [120]  seconds until the guest's init must have started
#   PBIO_VM_MEM [2G]            guest RAM (the test tree lives in its tmpfs)
#   PBIO_VM_CPUS [2]
#   PBIO_VM_NVME_SIZE [1G]  PBIO_VM_PMEM_SIZE [256M]  PBIO_VM_DAX_SIZE [256M]
#                     (the second nvdimm, made device-DAX by the guest; the scsi_debug tape
#                     has a fixed capacity: 10000 blocks and filemarks)
#   PBIO_VM_TESTS ["nvme pmem dax set tape-control"]  which hw-tests/*.sh the guest runs
#   PBIO_VM_BREAK=1   deliberately break one check (set.sh compares a
#                     restored file that was altered after the restore), to
#                     show that a failing check fails the run
#   PBIO_VM_KEEP=1    keep the run folder (images, share, console log); without
#                     it a failed run keeps only its console log, under
#                     $PBIO_VM_CACHE/logs (the last 10)
#   PBIO_VM_CMD=FILE  run this shell script in the guest instead of the tests
#                     (exploring the drivers; its exit code is the verdict)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

say() { echo "vm: $*" >&2; }
die() { say "error: $*"; exit 2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

default_cache=/var/cache/pbio-vm
if ! { mkdir -p "$default_cache" 2>/dev/null && [ -w "$default_cache" ]; }; then
    default_cache=${XDG_CACHE_HOME:-$HOME/.cache}/pbio-vm
fi
cache=${PBIO_VM_CACHE:-$default_cache}
kver=${PBIO_VM_KVER:-7.3.4+deb13-amd64}
suite=${PBIO_VM_SUITE:-trixie-backports}
timeout_s=${PBIO_VM_TIMEOUT:-300}
boot_timeout_s=${PBIO_VM_BOOT_TIMEOUT:-120}
mem=${PBIO_VM_MEM:-2G}
cpus=${PBIO_VM_CPUS:-2}
nvme_size=${PBIO_VM_NVME_SIZE:-1G}
pmem_size=${PBIO_VM_PMEM_SIZE:-256M}
dax_size=${PBIO_VM_DAX_SIZE:-256M}
tests=${PBIO_VM_TESTS:-nvme pmem dax set tape-control}

# Modules the guest loads (their dependencies are added in order).
modules=(9pnet_virtio 9p nvme nfit nd_pmem dax_pmem device_dax scsi_debug st sg)

case $kver in
    7.*) ;;
    *) say "warning: PBIO_VM_KVER=$kver is not a 7.x kernel; scsi_debug's tape mode needs 7.x for filemarks" ;;
esac

need_tools() {
    local missing=() t
    for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
    [ "${#missing[@]}" -eq 0 ] ||
        die "missing tools: ${missing[*]} (apt-get install qemu-system-x86 busybox-static kmod xz-utils cpio)"
}
need_tools apt-get apt-cache dpkg-deb depmod modprobe xz cpio gzip readelf numfmt qemu-system-x86_64 timeout flock cargo cc
busybox=
for b in /bin/busybox /usr/bin/busybox; do
    [ -x "$b" ] && { busybox=$b; break; }
done
if [ -z "$busybox" ] || readelf -l "$busybox" 2>/dev/null | grep -q 'program interpreter'; then
    die "need a static busybox for the guest (apt-get install busybox-static); found '${busybox:-none}'"
fi
to_mib() { echo $(($(numfmt --from=iec "${1%B}") / 1048576)); }
mem_mib=$(to_mib "$mem") || die "bad PBIO_VM_MEM '$mem'"
pmem_mib=$(to_mib "$pmem_size") || die "bad PBIO_VM_PMEM_SIZE '$pmem_size'"
dax_mib=$(to_mib "$dax_size") || die "bad PBIO_VM_DAX_SIZE '$dax_size'"

t_total=$(now)

# ---------------------------------------------------------------- (1) kernel
kdir=$cache/kernel/$kver
aptdir=$cache/apt

private_apt() {
    local mirror keyring
    mirror=${PBIO_VM_MIRROR:-}
    if [ -z "$mirror" ]; then
        # The Debian archive the host already uses (read only), not its security suite.
        # shellcheck disable=SC2016 # $(REPO_URI) is apt's field, not the shell's
        mirror=$(apt-get indextargets --format '$(REPO_URI)' 2>/dev/null |
            grep -E '/debian/?$' | grep -v security | head -n1 || true)
    fi
    mirror=${mirror:-http://deb.debian.org/debian/}
    keyring=
    for k in /usr/share/keyrings/debian-archive-keyring.gpg /usr/share/keyrings/debian-archive-keyring.pgp; do
        [ -f "$k" ] && { keyring=$k; break; }
    done
    [ -n "$keyring" ] || die "no Debian archive keyring in /usr/share/keyrings (apt-get install debian-archive-keyring)"
    mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial" \
        "$aptdir/etc/sources.list.d" "$aptdir/etc/preferences.d" "$aptdir/etc/apt.conf.d"
    echo "deb [signed-by=$keyring] $mirror $suite main" >"$aptdir/etc/sources.list"
    cat >"$aptdir/apt.conf" <<EOF
// pbio hw-tests/vm: a private apt configuration; the host's is not touched.
Dir::Etc::SourceList "$aptdir/etc/sources.list";
Dir::Etc::SourceParts "$aptdir/etc/sources.list.d";
Dir::Etc::Preferences "$aptdir/etc/preferences";
Dir::Etc::PreferencesParts "$aptdir/etc/preferences.d";
Dir::Etc::Parts "$aptdir/etc/apt.conf.d";
Dir::State::Lists "$aptdir/lists";
Dir::State::status "/dev/null";
Dir::Cache "$aptdir/cache";
Dir::Log "$aptdir/log";
APT::Architectures { "amd64"; };
APT::Sandbox::User "$(id -un)";
Acquire::Languages "none";
EOF
    say "apt: $suite from $mirror (private config $aptdir/apt.conf)"
}

fetch_kernel() {
    if [ -f "$kdir/.complete" ]; then
        say "kernel $kver: cached in $kdir"
        return
    fi
    mkdir -p "$cache"
    exec 9>"$cache/.lock"
    flock 9
    if [ -f "$kdir/.complete" ]; then
        flock -u 9
        return
    fi
    private_apt
    export APT_CONFIG=$aptdir/apt.conf
    apt-get -q -o APT::Update::Error-Mode=any update >"$aptdir/update.log" 2>&1 || {
        cat "$aptdir/update.log" >&2
        die "could not fetch the package index of $suite (apt-get update above failed): offline, or the mirror lacks $suite? PBIO_VM_MIRROR=URL picks another archive"
    }
    local pkg missing=()
    for pkg in "linux-binary-$kver" "linux-modules-$kver"; do
        apt-cache show "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        say "kernels in $suite now:"
        apt-cache search --names-only '^linux-binary-7\.[0-9.]+\+deb[0-9]+-amd64$' | sort -V | sed 's/^/vm:   /' >&2
        die "${missing[*]} not in $suite; set PBIO_VM_KVER to one listed above"
    fi
    local dl=$cache/download
    rm -rf "$dl" "$kdir.tmp"
    mkdir -p "$dl" "$kdir.tmp"
    say "downloading linux-binary-$kver and linux-modules-$kver (about 120 MB)"
    (cd "$dl" && apt-get -q download "linux-binary-$kver" "linux-modules-$kver") >"$dl/download.log" 2>&1 || {
        cat "$dl/download.log" >&2
        rm -rf "$dl"
        die "downloading the kernel packages failed (apt-get download above)"
    }
    local deb
    for deb in "$dl"/*.deb; do
        dpkg-deb -x "$deb" "$kdir.tmp" || die "unpacking $deb failed"
    done
    [ -f "$kdir.tmp/usr/lib/modules/$kver/vmlinuz" ] || die "no usr/lib/modules/$kver/vmlinuz in linux-binary-$kver"
    ln -s usr/lib "$kdir.tmp/lib"
    # depmod -b looks under BASE/lib/modules; the package ships no modules.builtin (harmless warnings).
    depmod -b "$kdir.tmp" "$kver" 2>/dev/null || die "depmod over the unpacked modules failed"
    rm -rf "$dl" "$kdir"
    mv "$kdir.tmp" "$kdir"
    touch "$kdir/.complete"
    flock -u 9
}

t=$(now)
fetch_kernel
t_fetch=$(since "$t")

# ---------------------------------------------------------------- (2) build
run=$(mktemp -d "${TMPDIR:-/tmp}/pbio-vm.XXXXXX")
share=$run/share
mkdir -p "$share/bin" "$share/hw-tests"
keep=${PBIO_VM_KEEP:-0}
qpid=
tpid=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [ -n "$qpid" ]; then kill "$qpid" 2>/dev/null || true; fi
    if [ -n "$tpid" ]; then kill "$tpid" 2>/dev/null || true; fi
    if [ "${PBIO_VM_KEEP:-0}" = 1 ]; then
        say "run folder kept: $run"
    elif [ "$keep" = 1 ] && [ -s "$run/console.log" ]; then
        # A failed run keeps its console log, not its images.
        mkdir -p "$cache/logs"
        cp "$run/console.log" "$cache/logs/console-$(date +%Y%m%d-%H%M%S).log"
        say "console log kept: $(ls -t "$cache/logs"/console-*.log | head -n1)"
        ls -t "$cache/logs"/console-*.log | tail -n +11 | xargs -r rm -f
        rm -rf "$run"
    else
        rm -rf "$run"
    fi
}
trap cleanup EXIT

t=$(now)
if [ -n "${PBIO_VM_PBIO:-}" ]; then
    pbio_bin=$PBIO_VM_PBIO
    say "pbio: using $pbio_bin"
else
    say "building pbio (static, release)"
    (cd "$repo" && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build -q --release --locked --target x86_64-unknown-linux-gnu --bin pbio) ||
        die "building a static pbio failed (cargo output above)"
    pbio_bin=$repo/target/x86_64-unknown-linux-gnu/release/pbio
fi
[ -x "$pbio_bin" ] || die "no pbio binary at $pbio_bin"
if readelf -l "$pbio_bin" | grep -q 'program interpreter'; then
    die "$pbio_bin is dynamically linked; the guest has no libc (build with -C target-feature=+crt-static)"
fi
cp "$pbio_bin" "$share/bin/pbio"
cc -O2 -static -Wall -o "$share/bin/mtprobe" "$repo/hw-tests/tools/mtprobe.c" ||
    die "building hw-tests/tools/mtprobe.c failed (needs libc6-dev's static libc)"
cp "$repo"/hw-tests/*.sh "$share/hw-tests/"
t_build=$(since "$t")

# ---------------------------------------------------------------- (3) initramfs
t=$(now)
root=$run/initramfs
mkdir -p "$root"/{bin,dev,proc,sys,tmp,mnt/host,lib/modules}
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
install -m 0755 "$here/init" "$root/init"
order=()
for m in "${modules[@]}"; do
    deps=$(modprobe -d "$kdir" -S "$kver" --show-depends "$m" 2>&1) ||
        die "module $m: $deps"
    while read -r word path _; do
        [ "$word" = insmod ] || continue
        name=$(basename "$path")
        name=${name%.xz}
        name=${name%.zst}
        case " ${order[*]:-} " in *" $name "*) continue ;; esac
        case $path in
            *.xz) xz -dc "$path" >"$root/lib/modules/$name" ;;
            *) cp "$path" "$root/lib/modules/$name" ;;
        esac
        order+=("$name")
    done <<<"$deps"
done
printf '%s\n' "${order[@]}" >"$root/lib/modules/order"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$run/initramfs.gz"
t_initramfs=$(since "$t")
say "initramfs: ${#order[@]} modules ($(du -h "$run/initramfs.gz" | cut -f1)), pbio $(du -h "$share/bin/pbio" | cut -f1)"

# What the guest's init reads from the share.
{
    echo "PBIO_VM_TESTS='$tests'"
    echo "PBIO_VM_BREAK=${PBIO_VM_BREAK:-0}"
} >"$share/vm.env"
if [ -n "${PBIO_VM_CMD:-}" ]; then
    cp "$PBIO_VM_CMD" "$share/cmd.sh"
fi

# ---------------------------------------------------------------- (4) boot
truncate -s "$nvme_size" "$run/nvme.img"
truncate -s "$pmem_size" "$run/pmem.img"
truncate -s "$dax_size" "$run/dax.img"
log=$run/console.log
: >"$log"
# shellcheck disable=SC2054 # the commas are qemu's
qemu=(qemu-system-x86_64
    -accel tcg -cpu max -smp "$cpus"
    -machine pc,nvdimm=on -m "${mem_mib}M,slots=4,maxmem=$((mem_mib + pmem_mib + dax_mib + 1024))M"
    -nodefaults -display none -no-reboot -serial "file:$log"
    -kernel "$kdir/usr/lib/modules/$kver/vmlinuz" -initrd "$run/initramfs.gz"
    -append "console=ttyS0 panic=-1 quiet loglevel=4 mitigations=off"
    -device isa-debug-exit,iobase=0xf4,iosize=0x04
    -drive "file=$run/nvme.img,if=none,id=nv0,format=raw,cache=unsafe"
    -device nvme,serial=pbio0,drive=nv0
    -object "memory-backend-file,id=mem1,share=on,mem-path=$run/pmem.img,size=$pmem_size"
    -device nvdimm,id=nv1,memdev=mem1
    -object "memory-backend-file,id=mem2,share=on,mem-path=$run/dax.img,size=$dax_size"
    -device nvdimm,id=nv2,memdev=mem2
    -device virtio-9p-pci,fsdev=host0,mount_tag=host0
    -fsdev "local,id=host0,path=$share,security_model=none"
)
say "booting $kver under TCG ($cpus cpus, $mem): nvme $nvme_size, pmem $pmem_size, devdax $dax_size, scsi_debug tape"
t_boot_start=$(now)
timeout -k 5 "$timeout_s" "${qemu[@]}" &
qpid=$!
tail -n +1 -F --pid="$qpid" "$log" 2>/dev/null &
tpid=$!

booted=
ready=
t_ready=
while kill -0 "$qpid" 2>/dev/null; do
    if [ -z "$booted" ] && grep -q '^pbio-vm: init started' "$log"; then
        booted=$(since "$t_boot_start")
    fi
    if [ -z "$ready" ] && grep -q '^pbio-vm: devices ready' "$log"; then
        ready=$(since "$t_boot_start")
        t_ready=$(now)
    fi
    if [ -z "$booted" ] && [ "$(since "$t_boot_start" | cut -d. -f1)" -ge "$boot_timeout_s" ]; then
        kill "$qpid" 2>/dev/null || true
        wait "$qpid" 2>/dev/null || true
        sleep 0.3
        say "error: the guest did not start its init within ${boot_timeout_s}s (console above)"
        keep=1
        exit 3
    fi
    sleep 0.2
done
set +e
wait "$qpid"
qrc=$?
set -e
qpid=
sleep 0.3
kill "$tpid" 2>/dev/null || true
wait "$tpid" 2>/dev/null || true
tpid=
t_tests=
[ -n "$t_ready" ] && t_tests=$(since "$t_ready")

echo "vm: timings: fetch ${t_fetch}s, build ${t_build}s, initramfs ${t_initramfs}s, boot to init ${booted:-?}s, to devices ready ${ready:-?}s, tests ${t_tests:-?}s, total $(since "$t_total")s" >&2

fails=$(grep -a '^FAIL ' "$log" | sed 's/\r$//' || true)
passes=$(grep -ac '^PASS ' "$log" || true)
skips=$(grep -ac '^SKIP ' "$log" || true)
# The verdict the guest's init printed before writing it to isa-debug-exit;
# qemu's own exit code alone cannot tell "the guest said 0" (1) from qemu
# failing to start (also 1).
said=$(grep -a '^pbio-vm: verdict ' "$log" | tail -n1 | sed 's/\r$//' | cut -d' ' -f3 || true)
keep=1
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
    say "error: the guest run exceeded ${timeout_s}s and was killed (PBIO_VM_TIMEOUT); last console lines above"
    exit 3
fi
if [ -z "$said" ]; then
    if [ -z "$booted" ]; then
        say "error: qemu exited with $qrc before the guest's init started (qemu's message or the kernel's above)"
    else
        say "error: the guest stopped without a verdict (qemu exit $qrc: kernel panic or init crash?); console above"
    fi
    exit 3
fi
if [ $((qrc & 1)) != 1 ] || [ $((qrc >> 1)) != "$said" ]; then
    say "error: the guest said verdict $said but qemu exited with $qrc (isa-debug-exit not reached?)"
    exit 3
fi
case $said in
    0)
        if [ -n "$fails" ]; then
            say "FAILED: the guest reported success but printed:"
            echo "$fails" | sed 's/^/vm:   /' >&2
            exit 1
        fi
        keep=0
        say "PASSED: $passes checks passed, $skips skipped, in the guest ($kver)"
        exit 0
        ;;
    96 | 97 | 98 | 99)
        case $said in
            96) what="making the second nvdimm device-DAX failed" ;;
            97) what="a device node did not appear" ;;
            98) what="mounting the host share over 9p failed" ;;
            99) what="loading a kernel module failed" ;;
        esac
        say "error: the guest's setup failed: $what (console above)"
        exit 3
        ;;
    *)
        say "FAILED: the guest's verdict is $said; failing checks:"
        if [ -n "$fails" ]; then
            echo "$fails" | sed 's/^/vm:   /' >&2
        else
            say "  (none printed: see the console above)"
        fi
        exit 1
        ;;
esac
