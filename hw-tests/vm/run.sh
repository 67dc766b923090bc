#!/usr/bin/env bash
# Run hw-tests/ on real kernel drivers (nvme, nd_pmem, st over scsi_debug)
# in a QEMU guest, on a machine that has none of that hardware.
#
#   hw-tests/vm/run.sh               fetch (cached), build, boot, test; exit with the guest's verdict
#   hw-tests/vm/run.sh --self-check  print the host facts this depends on, in a few seconds,
#                                    without network, download or build: each tool (path or
#                                    missing), KVM or TCG, the kernel it would boot and whether
#                                    it is cached and verified, the host's modprobe files (not
#                                    used), static busybox, cache folder, free disk; exit 0 when
#                                    everything needed is there, 2 otherwise
#   hw-tests/vm/run.sh --self-test   only the module-resolution self-test
#                                    (modules-selftest.sh) over the chosen kernel
#
# Steps: (1) choose the kernel (the pinned version; when the archive no
# longer offers it, the newest 7.x there, with a warning), fetch Debian's
# kernel and modules packages through a private apt configuration under the
# cache folder (the host's apt setup is only read: the archive URL it uses),
# check each .deb's SHA256 against the signed index (apt-cache show), unpack
# them once and record a sha256 manifest of the tree; each later run checks
# vmlinuz, modules.dep and the modules it uses against that manifest;
# (2) build pbio statically (crt-static) and hw-tests/tools/mtprobe.c;
# (3) resolve the guest's modules from the guest kernel's own modules.dep
# (hw-tests/vm/modules.sh: the host's modprobe configuration is never read;
# modules-selftest.sh proves it with a hostile one), build a small initramfs:
# busybox-static as /init's shell, the modules in dependency order,
# hw-tests/vm/init; then check that the archive holds every module named and
# all their dependencies, each after what it needs (modinfo's depends);
# (4) boot it under TCG with an NVMe namespace, a pmem namespace (qemu
# nvdimm) and a scsi_debug tape (ptype=1), a host folder shared over 9p for
# the binaries and scripts, and (when the tests include changer or
# library) a tape library: tgt's virtual library (hw-tests/vm/vtl.sh, two
# SSC drives and an SMC changer served by tgtd on 127.0.0.1) passed to the
# guest over QEMU's iSCSI driver as SCSI generic devices on virtio-scsi;
# (5) the guest makes the second nvdimm device-DAX and runs
# hw-tests/all.sh with PBIO_NVME=/dev/nvme0n1, PBIO_PMEM=/dev/pmem0,
# PBIO_DAX=/dev/dax1.0, PBIO_TAPE (the scsi_debug tape's st node),
# PBIO_CHANGER (the library's changer, /dev/sgN), and reports its verdict
# through isa-debug-exit.
#
# Exit codes: 0 every check passed; 1 a check failed in the guest (named);
# 2 the host side failed (missing tool, download, verification, module
# resolution or initramfs check, build); 3 the guest did not boot, hung, or
# died without a verdict (timeout, panic).
#
# Environment:
#   PBIO_VM_CACHE [/var/cache/pbio-vm, or ~/.cache/pbio-vm when that is not
#                  writable]  downloads, private apt state, unpacked kernels
#   PBIO_VM_KVER [the pin, 7.3.4+deb13-amd64]  the Debian kernel ABI to boot; it
#                  needs 7.x (6.12's scsi_debug tape fails filemarks). The pin
#                  falls back to the newest 7.x of the suite when the archive no
#                  longer offers it (a warning names the one chosen); a version
#                  given here is taken as is, without fallback
#   PBIO_VM_SUITE [trixie-backports]  the suite holding that kernel
#   PBIO_VM_MIRROR [the Debian archive the host's apt uses, else
#                  http://deb.debian.org/debian/]
#   PBIO_VM_PBIO   a prebuilt static pbio to use instead of building one
#   PBIO_VM_TIMEOUT [900]       seconds for the whole guest run (host-side kill;
#                  a loaded 2-core host took 288 s under TCG)
#   PBIO_VM_BOOT_TIMEOUT [120]  seconds until the guest's init must have started
#   PBIO_VM_MEM [2G]            guest RAM (the test tree lives in its tmpfs)
#   PBIO_VM_CPUS [2]
#   PBIO_VM_NVME_SIZE [1G]  PBIO_VM_PMEM_SIZE [256M]  PBIO_VM_DAX_SIZE [256M]
#                     (the second nvdimm, made device-DAX by the guest; the scsi_debug tape
#                     has a fixed capacity: 10000 blocks and filemarks)
#   PBIO_VM_TESTS ["nvme pmem dax set tape-control changer library"]  which
#                     hw-tests/*.sh the guest runs; changer and library need
#                     the tape library: tgt (tgtd, tgtadm, tgtimg), libiscsi-bin
#                     (iscsi-ls) and qemu-block-extra (QEMU's iSCSI driver). Without
#                     them the run fails (exit 2) under CI=true; otherwise it
#                     warns and leaves changer and library out
#   PBIO_VM_VTL_PORT [3271], PBIO_VM_VTL_CONTROL [71], PBIO_VM_VTL_CARTRIDGES [6],
#   PBIO_VM_VTL_SIZE [32] (MB a cartridge)  the library (hw-tests/vm/vtl.sh)
#   PBIO_VM_BREAK=1   deliberately break one check (set.sh compares a
#                     restored file that was altered after the restore), to
#                     show that a failing check fails the run
#   PBIO_VM_KEEP=1    keep the run folder (images, share, console log); without
#                     it a failed run keeps only its console log, under
#                     $PBIO_VM_CACHE/logs (the last 10)
#   PBIO_VM_CMD=FILE  run this shell script in the guest instead of the tests
#                     (exploring the drivers; its exit code is the verdict)
#   PBIO_VM_DROP_MODULE=NAME  leave this module out of the initramfs, to show
#                     that the check before boot stops the run (exit 2)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

mode=run
case ${1:-} in
    "") ;;
    --self-check) mode=self-check ;;
    --self-test) mode=self-test ;;
    -h | --help)
        sed -n '2,/^set -euo pipefail$/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: $0 [--self-check | --self-test | --help]" >&2
        exit 2
        ;;
esac

say() { echo "vm: $*" >&2; }
die() { say "error: $*"; exit 2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

default_cache=/var/cache/pbio-vm
if ! { mkdir -p "$default_cache" 2>/dev/null && [ -w "$default_cache" ]; }; then
    default_cache=${XDG_CACHE_HOME:-$HOME/.cache}/pbio-vm
fi
cache=${PBIO_VM_CACHE:-$default_cache}
# The kernel this test bed was last validated with (58 checks passed).
kver_pin=7.3.4+deb13-amd64
kver_wanted=${PBIO_VM_KVER:-$kver_pin}
if [ -n "${PBIO_VM_KVER:-}" ]; then kver_how="PBIO_VM_KVER"; else kver_how="pinned"; fi
kver=
suite=${PBIO_VM_SUITE:-trixie-backports}
timeout_s=${PBIO_VM_TIMEOUT:-900}
boot_timeout_s=${PBIO_VM_BOOT_TIMEOUT:-120}
mem=${PBIO_VM_MEM:-2G}
cpus=${PBIO_VM_CPUS:-2}
nvme_size=${PBIO_VM_NVME_SIZE:-1G}
pmem_size=${PBIO_VM_PMEM_SIZE:-256M}
dax_size=${PBIO_VM_DAX_SIZE:-256M}
tests=${PBIO_VM_TESTS:-nvme pmem dax set tape-control changer library}
aptdir=$cache/apt

# Modules the guest loads (their dependencies are added in order).
modules=(9pnet_virtio 9p nvme nfit nd_pmem dax_pmem device_dax scsi_debug st sg virtio_scsi)

case $kver_wanted in
    7.*) ;;
    *) say "warning: PBIO_VM_KVER=$kver_wanted is not a 7.x kernel; scsi_debug's tape mode needs 7.x for filemarks" ;;
esac

# Host tools: the run needs all of them (--self-check lists each).
tools=(apt-get apt-cache dpkg-deb depmod modprobe modinfo xz cpio gzip readelf numfmt sha256sum
    awk flock timeout qemu-system-x86_64 cargo cc)
# The Debian package each tool comes from, for the messages.
tool_pkg() {
    case $1 in
        apt-get | apt-cache) echo apt ;;
        dpkg-deb) echo dpkg ;;
        depmod | modprobe | modinfo) echo kmod ;;
        xz) echo xz-utils ;;
        readelf) echo binutils ;;
        numfmt | sha256sum | timeout) echo coreutils ;;
        flock) echo util-linux ;;
        qemu-system-x86_64) echo qemu-system-x86 ;;
        cargo) echo "rustup/cargo" ;;
        cc) echo "gcc libc6-dev" ;;
        *) echo "$1" ;;
    esac
}
need_tools() {
    local missing=() pkgs=() t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || { missing+=("$t"); pkgs+=("$(tool_pkg "$t")"); }
    done
    [ "${#missing[@]}" -eq 0 ] ||
        die "missing tools: ${missing[*]} (apt-get install ${pkgs[*]}; hw-tests/vm/run.sh --self-check lists what is there)"
}
# A static busybox for the guest: sets busybox; fails when there is none.
find_busybox() {
    local b
    busybox=
    for b in /bin/busybox /usr/bin/busybox; do
        [ -x "$b" ] && { busybox=$b; break; }
    done
    [ -n "$busybox" ] && ! readelf -l "$busybox" 2>/dev/null | grep -q 'program interpreter'
}

# QEMU's iSCSI block driver (qemu-block-extra), for the tape library.
iscsi_module() {
    local f
    for f in /usr/lib/*/qemu/block-iscsi.so /usr/lib/qemu/block-iscsi.so /usr/lib64/qemu/block-iscsi.so; do
        [ -f "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}

# ---------------------------------------------------------------- (1) kernel
# Every apt call goes through the private configuration.
papt() { APT_CONFIG=$aptdir/apt.conf "$@"; }

private_apt() {
    local mirror keyring k
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
    cat >"$aptdir/apt.conf" <<EOC
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
EOC
    apt_mirror=$mirror
}

# The index of $suite, fetched into the private lists (network).
apt_update() {
    private_apt
    say "apt: fetching the index of $suite from $apt_mirror (private config $aptdir/apt.conf)"
    papt apt-get -q -o APT::Update::Error-Mode=any update >"$aptdir/update.log" 2>&1
}

# Both packages of kernel ABI $1 are in the private index.
kernel_offered() {
    papt apt-cache show "linux-binary-$1" >/dev/null 2>&1 &&
        papt apt-cache show "linux-modules-$1" >/dev/null 2>&1
}
# The 7.x kernel ABIs of the private index whose two packages are there, newest first.
kernels_offered() {
    local k
    papt apt-cache search --names-only '^linux-binary-7\.[0-9.]+\+deb[0-9]+-amd64$' 2>/dev/null |
        awk '{ sub(/^linux-binary-/, "", $1); print $1 }' | sort -rV |
        while read -r k; do
            papt apt-cache show "linux-modules-$k" >/dev/null 2>&1 && echo "$k"
        done
}

# A path of the unpacked tree as the manifest names it (usr/lib/..., not lib/...).
manifest_path() {
    local p=${1#"$2"/}
    case $p in lib/*) p=usr/$p ;; esac
    echo "$p"
}
# Check files of the tree $1 (paths relative to it, as in its manifest)
# against its .sha256 manifest; prints what does not match.
verify_files() {
    local k=$1 f line out sub=
    shift
    for f in "$@"; do
        f=$(manifest_path "$f" "$k")
        line=$(awk -v p="$f" '$2 == p { print; exit }' "$k/.sha256")
        [ -n "$line" ] || { echo "$f is not in the manifest $k/.sha256"; return 1; }
        sub+=$line$'\n'
    done
    out=$(cd "$k" && sha256sum --quiet -c - <<<"$sub" 2>&1) && return 0
    grep -v '^sha256sum: WARNING' <<<"$out" || true
    return 1
}
# The cached tree of kernel $1 is complete and its vmlinuz and modules.dep
# match the manifest recorded when it was unpacked from the verified .debs.
# Prints the reason when not (cheap: about 15 MB hashed).
kernel_verified() {
    local k=$cache/kernel/$1 out
    [ -f "$k/.complete" ] || { echo "not cached"; return 1; }
    if [ ! -f "$k/.sha256" ] || [ ! -f "$k/.debs" ]; then
        echo "cached by an older run.sh, without the checksums of its .debs"
        return 1
    fi
    out=$(verify_files "$k" "usr/lib/modules/$1/vmlinuz" "usr/lib/modules/$1/modules.dep") ||
        { echo "the cached tree does not match its manifest: $out"; return 1; }
}
# The newest cached 7.x kernel that verifies, other than $1.
newest_cached() {
    local k
    [ -d "$cache/kernel" ] || return 1
    for k in $(find "$cache/kernel" -mindepth 1 -maxdepth 1 -type d -name '7.*' ! -name '*.tmp' -printf '%f\n' | sort -rV); do
        [ "$k" = "$1" ] && continue
        kernel_verified "$k" >/dev/null 2>&1 && { echo "$k"; return 0; }
    done
    return 1
}

# Download linux-binary-$1 and linux-modules-$1, check each .deb against the
# SHA256 of the signed index, unpack, depmod, write the manifest. The lock
# is held by the caller.
fetch_kernel() {
    local k=$1 kd=$cache/kernel/$1 dl=$cache/download deb pkg ver want got
    rm -rf "$dl" "$kd.tmp"
    mkdir -p "$dl" "$kd.tmp"
    say "downloading linux-binary-$k and linux-modules-$k (about 120 MB)"
    (cd "$dl" && papt apt-get -q download "linux-binary-$k" "linux-modules-$k") >"$dl/download.log" 2>&1 || {
        cat "$dl/download.log" >&2
        rm -rf "$dl"
        die "downloading the kernel packages failed (apt-get download above)"
    }
    : >"$kd.tmp/.debs"
    for deb in "$dl"/*.deb; do
        pkg=$(dpkg-deb -f "$deb" Package) || die "$deb is not a readable .deb"
        ver=$(dpkg-deb -f "$deb" Version) || die "$deb is not a readable .deb"
        # apt-get download already checks the file against the index, whose
        # Release file is signed; this makes the check explicit and recorded.
        want=$(papt apt-cache show "$pkg=$ver" 2>/dev/null | awk '$1 == "SHA256:" { print $2; exit }')
        got=$(sha256sum "$deb" | cut -d' ' -f1)
        [ -n "$want" ] || die "apt-cache show $pkg=$ver gives no SHA256 field: cannot verify $deb"
        [ "$want" = "$got" ] ||
            die "$deb: its SHA256 is $got, the signed index of $suite says $want: not using it"
        say "verified $pkg $ver: SHA256 $got matches the signed index"
        echo "$pkg $ver $got" >>"$kd.tmp/.debs"
        dpkg-deb -x "$deb" "$kd.tmp" || die "unpacking $deb failed"
    done
    [ -f "$kd.tmp/usr/lib/modules/$k/vmlinuz" ] || die "no usr/lib/modules/$k/vmlinuz in linux-binary-$k"
    ln -s usr/lib "$kd.tmp/lib"
    # depmod -b looks under BASE/lib/modules; the package ships no modules.builtin (harmless warnings).
    depmod -b "$kd.tmp" "$k" 2>/dev/null || die "depmod over the unpacked modules failed"
    # The manifest each run checks vmlinuz, modules.dep and the modules it uses against.
    (cd "$kd.tmp" && find usr -type f -print0 | sort -z | xargs -0 sha256sum) >"$kd.tmp/.sha256" ||
        die "writing the manifest of $kd.tmp failed"
    rm -rf "$dl" "$kd"
    mv "$kd.tmp" "$kd"
    touch "$kd/.complete"
}

# Sets kver (and kdir) to the kernel to boot, fetching it when it is not
# cached and verified: the wanted one (the pin, or PBIO_VM_KVER); for the pin
# only, when the archive no longer offers it, the newest 7.x it offers, or
# when the archive cannot be reached, the newest verified 7.x in the cache.
choose_kernel() {
    local why alt offered
    if why=$(kernel_verified "$kver_wanted"); then
        kver=$kver_wanted
        say "kernel $kver: cached in $cache/kernel/$kver, verified (sha256 of vmlinuz and modules.dep)"
        return
    fi
    say "kernel $kver_wanted: $why"
    mkdir -p "$cache"
    exec 9>"$cache/.lock"
    flock 9
    if kernel_verified "$kver_wanted" >/dev/null 2>&1; then
        kver=$kver_wanted # fetched by another run meanwhile
    elif ! apt_update; then
        cat "$aptdir/update.log" >&2
        if [ "$kver_how" = pinned ] && alt=$(newest_cached "$kver_wanted"); then
            kver=$alt
            kver_how="fallback: the archive cannot be reached"
            say "WARNING: the archive cannot be reached (apt-get update above failed); using the newest verified 7.x kernel in the cache instead of the pin $kver_pin: $kver"
        else
            die "could not fetch the package index of $suite (apt-get update above failed): offline, or the mirror lacks $suite? PBIO_VM_MIRROR=URL picks another archive"
        fi
    elif kernel_offered "$kver_wanted"; then
        kver=$kver_wanted
    else
        offered=$(kernels_offered)
        say "7.x kernels in $suite now: $(tr '\n' ' ' <<<"$offered")"
        [ "$kver_how" = pinned ] ||
            die "linux-binary-$kver_wanted or linux-modules-$kver_wanted is not in $suite; set PBIO_VM_KVER to one listed above"
        kver=${offered%%$'\n'*}
        [ -n "$kver" ] || die "the pinned kernel $kver_pin is no longer in $suite, and no other 7.x kernel is; PBIO_VM_SUITE or PBIO_VM_MIRROR picks another"
        say "WARNING: the pinned kernel $kver_pin is no longer offered by $suite; falling back to the newest 7.x there: $kver (not the version this test bed was validated with; update kver_pin in hw-tests/vm/run.sh once it passes)"
        kver_how="fallback from the pin $kver_pin"
    fi
    if ! why=$(kernel_verified "$kver"); then
        fetch_kernel "$kver"
        why=$(kernel_verified "$kver") || die "kernel $kver: $why, right after fetching it"
    fi
    flock -u 9
}

# ---------------------------------------------------------------- --self-check
# Free KiB of the file system holding $1 (or its nearest existing parent).
free_kib() {
    local d=$1
    while [ ! -e "$d" ] && [ "$d" != / ]; do d=$(dirname "$d"); done
    df -Pk "$d" | awk 'NR == 2 { print $4 }'
}
self_check() {
    local bad=() t p why alt idx lists f dir real seen=" " n hits other line w1 w2 closure=() mods
    echo "vm: self-check of this host for hw-tests/vm/run.sh (nothing is downloaded, built or booted)"
    echo "tools:"
    for t in "${tools[@]}"; do
        if p=$(command -v "$t" 2>/dev/null); then
            printf '  ok       %-20s %s\n' "$t" "$p"
        else
            printf '  MISSING  %-20s (apt-get install %s)\n' "$t" "$(tool_pkg "$t")"
            bad+=("$t")
        fi
    done
    if find_busybox; then
        echo "busybox: ok: $busybox is static (the guest's /init shell)"
    else
        echo "busybox: MISSING: ${busybox:+$busybox is dynamically linked; }the guest needs a static one (apt-get install busybox-static)"
        bad+=("static busybox")
    fi
    p=$(readlink -f "$(cc -print-file-name=libc.a 2>/dev/null)" || true)
    if [ -n "$p" ] && [ -f "$p" ]; then
        echo "static libc: ok: $p (hw-tests/tools/mtprobe.c is linked with -static)"
    else
        echo "static libc: MISSING: no libc.a for cc -static (apt-get install libc6-dev)"
        bad+=("static libc")
    fi
    if command -v qemu-system-x86_64 >/dev/null 2>&1; then
        echo "qemu: $(qemu-system-x86_64 --version | head -n1)"
    fi
    if out=$("$here/vtl.sh" check 2>&1) && p=$(iscsi_module); then
        echo "tape library (tests changer, library): ok: tgt, iscsi-ls, QEMU's iSCSI driver $p"
    else
        iscsi_module >/dev/null || out="${out:+$out; }no QEMU iSCSI driver (apt-get install qemu-block-extra)"
        echo "tape library (tests changer, library): MISSING: ${out#vtl: }"
        bad+=("tape library")
    fi

    # run.sh boots under TCG in any case: the /dev/kvm of these machines is
    # nested without vmx/svm and cannot run stock kernels.
    local kvm="absent"
    if [ -e /dev/kvm ]; then
        if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then kvm="present, read-write"; else kvm="present, not accessible to $(id -un)"; fi
        if grep -qwE 'vmx|svm' /proc/cpuinfo; then
            kvm+=", the CPU offers vmx/svm"
        else
            kvm+=", but the CPU offers no vmx/svm (nested without hardware virtualization: stock kernels do not run on it)"
        fi
    fi
    echo "accelerator: TCG (run.sh always uses -accel tcg); /dev/kvm: $kvm"

    echo "kernel: the pin is $kver_pin; wanted: $kver_wanted ($kver_how), suite $suite"
    if why=$(kernel_verified "$kver_wanted"); then
        echo "  $kver_wanted: cached in $cache/kernel/$kver_wanted, verified (vmlinuz and modules.dep match the manifest written when it was unpacked); a run needs no network"
        sed 's/^/  from the .deb (SHA256 checked against the signed index): /' "$cache/kernel/$kver_wanted/.debs"
        echo "  a run boots: $kver_wanted"
    else
        echo "  $kver_wanted: $why"
        lists=$(find "$aptdir/lists" -maxdepth 1 -name '*_Packages*' 2>/dev/null | head -n1)
        if [ -f "$aptdir/apt.conf" ] && [ -n "$lists" ]; then
            idx="the index of $suite fetched $(date -r "$lists" '+%Y-%m-%d %H:%M') (a run fetches it anew)"
            if kernel_offered "$kver_wanted"; then
                echo "  offered by $idx: a run downloads it (about 120 MB; network to the Debian archive needed)"
                echo "  a run boots: $kver_wanted"
            elif [ "$kver_how" = pinned ]; then
                alt=$(kernels_offered)
                alt=${alt%%$'\n'*}
                echo "  NOT offered by $idx: a run falls back to the newest 7.x there: ${alt:-none (a run fails)}, with a warning"
                [ -z "$alt" ] || echo "  a run boots: $alt"
            else
                echo "  NOT offered by $idx: a run fails (PBIO_VM_KVER is taken as is)"
            fi
        else
            echo "  no index of $suite fetched yet: a run fetches it and downloads the kernel (about 120 MB; network to the Debian archive needed)"
        fi
        if alt=$(newest_cached "$kver_wanted"); then
            echo "  also cached and verified: $alt (what a run boots when the archive cannot be reached)"
        fi
    fi

    # The host's modprobe configuration: listed, never used for the guest.
    if kernel_verified "$kver_wanted" >/dev/null 2>&1; then
        mapfile -t closure < <("$here/modules.sh" "$cache/kernel/$kver_wanted" "$kver_wanted" "${modules[@]}" 2>/dev/null |
            sed 's|.*/||; s/\.ko.*//; s/-/_/g')
    fi
    mods=" ${modules[*]} ${closure[*]:-} "
    echo "modprobe configuration of this host: NOT USED for the guest (its modules come from the guest kernel's modules.dep: hw-tests/vm/modules.sh)"
    n=0
    for dir in /etc/modprobe.d /run/modprobe.d /usr/local/lib/modprobe.d /lib/modprobe.d /usr/lib/modprobe.d /etc/modprobe.conf; do
        for f in "$dir" "$dir"/*.conf; do
            [ -f "$f" ] || continue
            real=$(readlink -f "$f")
            case $seen in *" $real "*) continue ;; esac
            seen+="$real "
            n=$((n + 1))
            hits=
            other=0
            while read -r line; do
                read -r w1 w2 _ <<<"$line"
                case ${w1:-} in install | remove | blacklist | options | softdep | alias) ;; *) continue ;; esac
                if [[ $mods == *" ${w2//-/_} "* ]]; then
                    hits+=$'\n'"    $line   <- would change the guest's ${w2//-/_} under modprobe"
                else
                    other=$((other + 1))
                fi
            done < <(sed 's/#.*//' "$f")
            echo "  $f: present, not used ($other other directive lines)${hits}"
        done
    done
    [ "$n" -gt 0 ] || echo "  (no files in /etc/modprobe.d, /run/modprobe.d, /usr/local/lib/modprobe.d, /lib/modprobe.d, /usr/lib/modprobe.d)"

    local need_cache=$((1024 * 1024)) need_tmp=$((2 * 1024 * 1024)) fc ft tmp=${TMPDIR:-/tmp}
    kernel_verified "$kver_wanted" >/dev/null 2>&1 && need_cache=$((64 * 1024))
    mkdir -p "$cache" 2>/dev/null || true
    if [ -d "$cache" ] && [ -w "$cache" ]; then
        echo "cache: $cache (writable; $(du -sh "$cache" 2>/dev/null | cut -f1) used; kernels: $(find "$cache/kernel" -mindepth 1 -maxdepth 1 -type d ! -name '*.tmp' -printf '%f ' 2>/dev/null))"
    else
        echo "cache: $cache: NOT WRITABLE (PBIO_VM_CACHE picks another folder)"
        bad+=("cache folder")
    fi
    fc=$(free_kib "$cache")
    ft=$(free_kib "$tmp")
    echo "free disk: $((fc / 1024)) MiB for the cache (needs $((need_cache / 1024))), $((ft / 1024)) MiB in $tmp for a run's images (needs $((need_tmp / 1024)))"
    [ "$fc" -ge "$need_cache" ] || bad+=("disk space for the cache")
    [ "$ft" -ge "$need_tmp" ] || bad+=("disk space in $tmp")

    if [ "${#bad[@]}" -eq 0 ]; then
        echo "vm: self-check: ready"
        return 0
    fi
    echo "vm: self-check: NOT READY: missing ${bad[*]}"
    return 2
}

# ---------------------------------------------------------------- main
if [ "$mode" = self-check ]; then
    rc=0
    self_check || rc=$?
    exit "$rc"
fi

need_tools "${tools[@]}"
find_busybox ||
    die "need a static busybox for the guest (apt-get install busybox-static); found '${busybox:-none}'"
to_mib() { echo $(($(numfmt --from=iec "${1%B}") / 1048576)); }
mem_mib=$(to_mib "$mem") || die "bad PBIO_VM_MEM '$mem'"
pmem_mib=$(to_mib "$pmem_size") || die "bad PBIO_VM_PMEM_SIZE '$pmem_size'"
dax_mib=$(to_mib "$dax_size") || die "bad PBIO_VM_DAX_SIZE '$dax_size'"

# The tape library (tests changer and library): tgt on the host, QEMU's
# iSCSI driver (qemu-block-extra) to reach it.
library=0
case " $tests " in *" changer "* | *" library "*) library=1 ;; esac
if [ "$library" = 1 ]; then
    why=
    out=$("$here/vtl.sh" check 2>&1) || why=$out
    iscsi_module >/dev/null ||
        why="${why:+$why; }QEMU has no iSCSI block driver (block-iscsi.so; apt-get install qemu-block-extra)"
    if [ -n "$why" ]; then
        if [ -n "${CI:-}" ]; then
            die "the tests changer and library need the tape library: $why"
        fi
        say "WARNING: leaving changer and library out (no tape library: $why)"
        tests=$(echo " $tests " | sed 's/ changer / /; s/ library / /; s/^ *//; s/ *$//')
        library=0
    fi
fi

t_total=$(now)
t=$(now)
choose_kernel
kdir=$cache/kernel/$kver
say "kernel: $kver ($kver_how)"
t_fetch=$(since "$t")

# Proves, over this kernel's tree, that the guest's module list does not
# depend on the host's modprobe configuration (a hostile one in a temporary
# folder: modprobe's answer changes, modules.sh's does not).
module_selftest() {
    local out rc=0
    out=$("$here/modules-selftest.sh" "$kdir" "$kver" "${modules[@]}" 2>&1) || rc=$?
    sed 's/^/vm:   /' <<<"$out" >&2
    [ "$rc" = 0 ] || die "the module-resolution self-test failed (hw-tests/vm/modules-selftest.sh, above)"
}
if [ "$mode" = self-test ]; then
    module_selftest
    say "module-resolution self-test passed ($kver)"
    exit 0
fi

# ---------------------------------------------------------------- (2) build
run=$(mktemp -d "${TMPDIR:-/tmp}/pbio-vm.XXXXXX")
share=$run/share
mkdir -p "$share/bin" "$share/hw-tests"
keep=${PBIO_VM_KEEP:-0}
qpid=
tpid=
vtl=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [ -n "$qpid" ]; then kill "$qpid" 2>/dev/null || true; fi
    if [ -n "$tpid" ]; then kill "$tpid" 2>/dev/null || true; fi
    if [ -n "$vtl" ]; then "$here/vtl.sh" stop "$vtl" || true; fi
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
    target_dir=${CARGO_TARGET_DIR:-target}
    case $target_dir in /*) ;; *) target_dir=$repo/$target_dir ;; esac
    pbio_bin=$target_dir/x86_64-unknown-linux-gnu/release/pbio
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
# The guest's modules: from the guest kernel's modules.dep alone, never the
# host's modprobe configuration (issue 16); checked against the manifest.
module_selftest
modlist=$("$here/modules.sh" "$kdir" "$kver" "${modules[@]}") ||
    die "resolving the guest's modules from $kdir/lib/modules/$kver/modules.dep failed (above)"
mapfile -t modfiles <<<"$modlist"
bad_files=$(verify_files "$kdir" "${modfiles[@]}") ||
    die "kernel $kver: module files of the cache differ from its manifest: $bad_files (remove $kdir to fetch it again)"
root=$run/initramfs
mkdir -p "$root"/{bin,dev,proc,sys,tmp,mnt/host,lib/modules}
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
install -m 0755 "$here/init" "$root/init"
order=()
for path in "${modfiles[@]}"; do
    name=$(basename "$path")
    name=${name%.xz}
    name=${name%.zst}
    mod=${name%.ko}
    # PBIO_VM_DROP_MODULE (a test of the check below) leaves one out.
    [ "${mod//-/_}" = "${PBIO_VM_DROP_MODULE:-}" ] && { say "PBIO_VM_DROP_MODULE: leaving $name out"; continue; }
    case $path in
        *.xz) xz -dc "$path" >"$root/lib/modules/$name" ;;
        *.zst)
            command -v zstd >/dev/null || die "$path is zstd-compressed: apt-get install zstd"
            zstd -qdc "$path" >"$root/lib/modules/$name"
            ;;
        *) cp "$path" "$root/lib/modules/$name" ;;
    esac
    order+=("$name")
done
printf '%s\n' "${order[@]}" >"$root/lib/modules/order"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$run/initramfs.gz"

# Before booting: the archive itself holds every module named above and
# every dependency of them (modules.dep), the order file lists only modules
# it holds, and each module comes after every module its own file says it
# depends on (modinfo's depends field, read from the .ko, not modules.dep).
# The named modules whose dependencies (modules.dep) include module $1.
needed_by() {
    local m who=()
    for m in "${modules[@]}"; do
        "$here/modules.sh" "$kdir" "$kver" "$m" | grep -q "/$1\.ko" && who+=("$m")
    done
    echo "${who[*]}"
}
check_initramfs() {
    local f n m d have=" " loaded=" " what
    while read -r f; do
        f=${f#./}
        case $f in lib/modules/*.ko) n=${f#lib/modules/}; n=${n%.ko}; have+="${n//-/_} " ;; esac
    done < <(gzip -dc "$run/initramfs.gz" | cpio -it --quiet)
    for m in "${modules[@]}"; do
        [[ $have == *" ${m//-/_} "* ]] ||
            die "initramfs check: module ${m//-/_} (named in run.sh's module list) is not in the initramfs"
    done
    for f in "${modfiles[@]}"; do
        n=$(basename "$f")
        n=${n%%.ko*}
        [[ $have == *" ${n//-/_} "* ]] ||
            die "initramfs check: module ${n//-/_} (needed by $(needed_by "$n"), by modules.dep) is not in the initramfs"
    done
    while read -r f; do
        n=${f%.ko}
        n=${n//-/_}
        [[ $have == *" $n "* ]] || die "initramfs check: lib/modules/order names $f, which is not in the initramfs"
        what=$(modinfo -F depends "$root/lib/modules/$f") || die "initramfs check: modinfo $f failed"
        for d in ${what//,/ }; do
            d=${d//-/_}
            [[ $have == *" $d "* ]] ||
                die "initramfs check: module $d (needed by $n, by its depends field) is not in the initramfs"
            [[ $loaded == *" $d "* ]] ||
                die "initramfs check: module $d (needed by $n) is loaded after it (lib/modules/order)"
        done
        loaded+="$n "
    done <"$root/lib/modules/order"
}
check_initramfs
t_initramfs=$(since "$t")
say "initramfs: ${#order[@]} modules, each named module and its dependencies checked in the archive ($(du -h "$run/initramfs.gz" | cut -f1)), pbio $(du -h "$share/bin/pbio" | cut -f1)"

# What the guest's init reads from the share.
{
    echo "PBIO_VM_TESTS='$tests'"
    echo "PBIO_VM_BREAK=${PBIO_VM_BREAK:-0}"
    echo "PBIO_VM_LIBRARY=$library"
    echo "PBIO_VM_VTL_SIZE=${PBIO_VM_VTL_SIZE:-32}"
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
if [ "$library" = 1 ]; then
    # tgtd serves the library; QEMU's iSCSI driver opens each LUN and
    # passes it through as a SCSI generic device (a tape or changer LUN
    # can only be passed through: QEMU opens them in sg mode).
    vtl=$run/vtl
    url=$("$here/vtl.sh" start "$vtl") || die "starting the tape library failed (hw-tests/vm/vtl.sh, above)"
    say "tape library: $url (LUN 1, 2: drives; LUN 3: changer; ${PBIO_VM_VTL_CARTRIDGES:-6} cartridges of ${PBIO_VM_VTL_SIZE:-32} MB)"
    qemu+=(-device virtio-scsi-pci,id=vscsi)
    for lun in 1 2 3; do
        qemu+=(-drive "if=none,id=vtl$lun,file=$url/$lun,format=raw,cache=none"
            -device "scsi-generic,drive=vtl$lun,bus=vscsi.0,channel=0,scsi-id=0,lun=$lun")
    done
fi
say "booting $kver under TCG ($cpus cpus, $mem): nvme $nvme_size, pmem $pmem_size, devdax $dax_size, scsi_debug tape${vtl:+, tgt tape library}"
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
            97) what="a device node did not appear (or the tape library's)" ;;
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
