#!/usr/bin/env bash
# Self-test: the guest's module list does not depend on the host's modprobe
# configuration (issue 16). hw-tests/vm/run.sh runs it before every
# initramfs it builds; it can run by itself over an unpacked kernel tree:
#
#   hw-tests/vm/modules-selftest.sh KDIR KVER MODULE...
#
# It writes a hostile modprobe configuration into a temporary folder (never
# into /etc/modprobe.d or /lib/modprobe.d):
#   install libnvdimm /bin/false     (as ndctl's nvdimm-security.conf does with
#                                     `install libnvdimm ...`)
#   blacklist nd_pmem
#   options nvme io_queue_depth=2
#   softdep nvme pre: scsi_debug
#   alias sg scsi_debug
# and checks, printing one PASS/FAIL line each:
#   hostile-config-bites: the old resolution (modprobe --show-depends over the
#     tree, its insmod lines) with that configuration (-C DIR) differs from
#     the one with an empty configuration, and lacks libnvdimm: issue 16
#     reproduced, so the checks below prove something;
#   empty-config-agrees: modules.sh's list (modules.dep of the tree) equals
#     modprobe's with an empty configuration: same modules, same order;
#   hostile-env: modules.sh's list is the same with the hostile
#     configuration in effect for every modprobe run (MODPROBE_OPTIONS=-C DIR);
#   hostile-default-dirs: the same with the hostile file in the default
#     folders: a private mount namespace (unshare -m) mounts DIR over
#     /lib/modprobe.d, /usr/lib/modprobe.d and, when they exist,
#     /etc/modprobe.d and /run/modprobe.d, for modules.sh and for modprobe
#     without -C (which must see it, else the check proves nothing); the
#     host's folders are not touched. Needs root and mount namespaces.
#
# Exit 0 every check passed; 1 a check failed; 2 a prerequisite is missing
# (modprobe, the tree). Without root or mount namespaces, hostile-default-dirs
# is a SKIP, except under CI=true, where every missing prerequisite is a
# FAIL.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
old_only=0
if [ "${1:-}" = --old-resolution ]; then
    # Internal: print the old resolution (with the default configuration
    # folders) and stop; the mount namespace below runs this.
    old_only=1
    shift
fi
if [ $# -lt 3 ]; then
    echo "usage: $0 KDIR KVER MODULE..." >&2
    exit 2
fi
kdir=$1
kver=$2
shift 2
mods=("$@")
ci=0
[ "${CI:-}" = true ] && ci=1
fails=0

pass() { echo "PASS vm.modules.$1: $2"; }
fail() { echo "FAIL vm.modules.$1: $2"; fails=$((fails + 1)); }
skip() {
    if [ "$ci" = 1 ]; then
        fail "$1" "$2 (CI=true: a missing prerequisite is a failure)"
    else
        echo "SKIP vm.modules.$1: $2"
    fi
}
prereq() {
    echo "FAIL vm.modules.prerequisites: $*" >&2
    exit 2
}
command -v modprobe >/dev/null 2>&1 || prereq "no modprobe (apt-get install kmod)"
[ -r "$kdir/lib/modules/$kver/modules.dep" ] ||
    prereq "no $kdir/lib/modules/$kver/modules.dep (an unpacked kernel tree after depmod -b)"
[ -x "$here/modules.sh" ] || prereq "no $here/modules.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pbio-modtest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/empty" "$tmp/hostile"
cat >"$tmp/hostile/hostile.conf" <<'EOF'
# hw-tests/vm/modules-selftest.sh: a hostile host configuration
install libnvdimm /bin/false
blacklist nd_pmem
options nvme io_queue_depth=2
softdep nvme pre: scsi_debug
alias sg scsi_debug
EOF

# Module names of a list of paths, one a line.
names() { sed 's|.*/||; s/\.ko\(\.[a-z]*\)\{0,1\}$//'; }
# The old resolution (run.sh before issue 16): modprobe --show-depends for
# each module, its insmod lines, each module once. Extra modprobe options
# (-C DIR) come first.
old_resolution() {
    local m w p seen=" "
    for m in "${mods[@]}"; do
        modprobe "$@" -d "$kdir" -S "$kver" --show-depends "$m" 2>/dev/null |
            while read -r w p _; do
                [ "$w" = insmod ] && echo "$p"
            done
    done | names | while read -r m; do
        case $seen in *" $m "*) continue ;; esac
        seen+="$m "
        echo "$m"
    done
}
if [ "$old_only" = 1 ]; then
    old_resolution
    exit 0
fi
new_resolution() { "$here/modules.sh" "$kdir" "$kver" "${mods[@]}" | names; }
one_line() { tr '\n' ' ' | sed 's/ $//'; }
# How list $2 differs from list $1: modules lost, modules added, order.
differ() {
    local lost added
    lost=$(comm -23 <(sort <<<"$1") <(sort <<<"$2") | one_line)
    added=$(comm -13 <(sort <<<"$1") <(sort <<<"$2") | one_line)
    echo "lost: ${lost:-none}; added: ${added:-none}; order $([ "$(grep -xFf <(echo "$2") <<<"$1")" = "$(grep -xFf <(echo "$1") <<<"$2")" ] && echo kept || echo changed)"
}

old_empty=$(old_resolution -C "$tmp/empty")
old_hostile=$(old_resolution -C "$tmp/hostile")
new_plain=$(new_resolution) || { echo "FAIL vm.modules.resolve: modules.sh failed"; exit 1; }

if [ "$old_hostile" != "$old_empty" ] && ! grep -qx libnvdimm <<<"$old_hostile"; then
    pass hostile-config-bites "the old resolution (modprobe --show-depends, insmod lines) with -C HOSTILE: $(differ "$old_empty" "$old_hostile") (issue 16 reproduced)"
else
    fail hostile-config-bites "the hostile configuration did not change modprobe's answer (libnvdimm kept), so this test proves nothing"
fi

if [ "$new_plain" = "$old_empty" ]; then
    pass empty-config-agrees "modules.sh = modprobe -C EMPTY, $(wc -l <<<"$new_plain") modules: $(one_line <<<"$new_plain")"
else
    fail empty-config-agrees "modules.sh and modprobe -C EMPTY differ: $(differ "$old_empty" "$new_plain")"
fi

new_env=$(MODPROBE_OPTIONS="-C $tmp/hostile" new_resolution) || new_env="(modules.sh failed)"
if [ "$new_env" = "$new_plain" ]; then
    pass hostile-env "modules.sh gives the same list with MODPROBE_OPTIONS=-C HOSTILE"
else
    fail hostile-env "with MODPROBE_OPTIONS=-C HOSTILE modules.sh's list changed: $(differ "$new_plain" "$new_env")"
fi

# The default folders, in a private mount namespace: what a host with ndctl
# installed looks like to modprobe and to modules.sh.
if [ "$(id -u)" != 0 ]; then
    skip hostile-default-dirs "not root: no private mount namespace"
elif ! command -v unshare >/dev/null 2>&1 || ! unshare -m true 2>/dev/null; then
    skip hostile-default-dirs "unshare -m does not work here (util-linux, CAP_SYS_ADMIN)"
else
    # The script the namespace runs: mounts, then both resolutions.
    cat >"$tmp/ns.sh" <<'EOF'
set -eu
hostile=$1
shift
mount --make-rprivate / 2>/dev/null || true
for d in /etc/modprobe.d /run/modprobe.d /lib/modprobe.d /usr/lib/modprobe.d; do
    [ -d "$d" ] || continue
    mount --bind "$hostile" "$d"
done
"$@"
EOF
    # Without -C modprobe reads the default folders: it must see the file.
    ns_old=$(env -u MODPROBE_OPTIONS unshare -m bash "$tmp/ns.sh" "$tmp/hostile" \
        "$here/modules-selftest.sh" --old-resolution "$kdir" "$kver" "${mods[@]}") || ns_old="(failed)"
    ns_new=$(unshare -m bash "$tmp/ns.sh" "$tmp/hostile" "$here/modules.sh" "$kdir" "$kver" "${mods[@]}" | names) ||
        ns_new="(modules.sh failed)"
    if [ "$ns_old" = "$old_empty" ]; then
        fail hostile-default-dirs "modprobe did not see the hostile file mounted over the default folders, so this check proves nothing"
    elif [ "$ns_new" != "$new_plain" ]; then
        fail hostile-default-dirs "with the hostile file in the default folders modules.sh's list changed: $(differ "$new_plain" "$ns_new")"
    else
        pass hostile-default-dirs "the hostile file mounted over the default modprobe folders (a private mount namespace): modprobe's answer changed ($(differ "$old_empty" "$ns_old")), modules.sh's list did not"
    fi
fi

if [ "$fails" -gt 0 ]; then
    echo "vm.modules: $fails check(s) failed"
    exit 1
fi
exit 0
