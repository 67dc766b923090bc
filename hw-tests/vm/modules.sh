#!/usr/bin/env bash
# The guest's kernel modules, resolved from the guest kernel's own tree.
#
#   hw-tests/vm/modules.sh KDIR KVER MODULE...
#
# Prints the module files (absolute paths) needed to load each MODULE, every
# dependency before the modules that need it, each file once, in the order
# the guest loads them. It reads KDIR/lib/modules/KVER/modules.dep (written
# by `depmod -b KDIR KVER` over the unpacked kernel) and, when present, the
# tree's own modules.softdep (the softdeps the modules themselves declare),
# and nothing else: no modprobe, so no modprobe configuration of the host
# (/etc/modprobe.d, /lib/modprobe.d, ...: `install`, `blacklist`, `options`,
# `softdep`, `alias` lines) can change the list. That configuration belongs
# to the host's kernel, not to the guest's (issue 16: ndctl's
# nvdimm-security.conf, `install libnvdimm ...`, made `modprobe
# --show-depends` print an install command instead of libnvdimm.ko).
#
# The order matches `modprobe -C EMPTY_DIR -d KDIR -S KVER --show-depends`
# (depmod lists each module's whole dependency closure, sorted so that its
# reverse is a load order; hw-tests/vm/modules-selftest.sh compares the two).
# MODULE names may use - or _ (nvme-core, nvme_core). A name that is not a
# module of KVER is an error: exit 2, naming it. Exit 0 otherwise.
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 KDIR KVER MODULE..." >&2
    exit 2
fi
kdir=$1
kver=$2
shift 2
mdir=$kdir/lib/modules/$kver
dep=$mdir/modules.dep
[ -r "$dep" ] || {
    echo "modules.sh: no $dep (run depmod -b $kdir $kver over the unpacked kernel)" >&2
    exit 2
}
softdep=$mdir/modules.softdep
[ -r "$softdep" ] || softdep=/dev/null

awk -v mdir="$mdir" -v want="$*" -v depfile="$dep" '
# A module name from a path or a name: basename, no .ko[.xz|.zst|.gz], - as _.
function norm(p,   n) {
    n = p
    sub(/.*\//, "", n)
    sub(/\.ko(\.(xz|zst|gz))?$/, "", n)
    gsub(/-/, "_", n)
    return n
}
function visit(n, from,   i, k, d) {
    if (n in done) return
    if (!(n in path)) {
        printf "modules.sh: module %s (needed by %s): not in %s\n", n, from, depfile > "/dev/stderr"
        bad = 1
        return
    }
    if (n in busy) {
        printf "modules.sh: dependency cycle through %s\n", n > "/dev/stderr"
        bad = 1
        return
    }
    busy[n] = 1
    # Pre-softdeps the module declares (modules.softdep of the guest tree);
    # one missing from the tree is skipped, as modprobe does.
    k = split(pre[n], d, " ")
    for (i = 1; i <= k; i++) if (d[i] in path) visit(d[i], n)
    # modules.dep lists the whole closure, a module after those it needs:
    # load from the end.
    k = split(deps[n], d, " ")
    for (i = k; i >= 1; i--) visit(norm(d[i]), n)
    delete busy[n]
    done[n] = 1
    out[++nout] = path[n]
    k = split(post[n], d, " ")
    for (i = 1; i <= k; i++) if (d[i] in path) visit(d[i], n)
}
FILENAME == depfile {
    f = $1
    sub(/:$/, "", f)
    n = norm(f)
    path[n] = (f ~ /^\//) ? f : mdir "/" f
    $1 = ""
    deps[n] = $0
    next
}
# modules.softdep: "softdep MODULE pre: A B post: C"
$1 == "softdep" {
    n = norm($2)
    where = ""
    for (i = 3; i <= NF; i++) {
        if ($i == "pre:" || $i == "post:") { where = $i; continue }
        if (where == "pre:") pre[n] = pre[n] " " norm($i)
        else if (where == "post:") post[n] = post[n] " " norm($i)
    }
}
END {
    k = split(want, w, " ")
    for (j = 1; j <= k; j++) {
        n = norm(w[j])
        if (!(n in path)) {
            printf "modules.sh: module %s: not a module of this kernel (not in %s)\n", w[j], depfile > "/dev/stderr"
            bad = 1
            continue
        }
        visit(n, "the command line")
    }
    if (bad) exit 2
    for (j = 1; j <= nout; j++) print out[j]
}' "$dep" "$softdep"
