#!/usr/bin/env python3
"""PERF.md "#20 resume --changer": a full backup of SRC over an emulated
library (two drives, 40 MiB cartridges, 8 slots), then the same backup on a
fresh library killed (SIGKILL) once its --json progress says half of the set
is written, then `backup --changer --resume`: its wall and CPU time against
the remaining bytes' share of the full run's, and a dd read of the kept
bytes from the cartridges (what the resume reads back to hash) as the
reference. Each repetition alternates full and resumed runs; medians printed.
Usage: scripts/bench-resume-changer.py SRC [REPS]   (PBIO=binary, TMPDIR=where the libraries go)
"""
import json, os, resource, shutil, statistics, subprocess, sys, tempfile, time

P = os.environ.get("PBIO", "target/release/pbio")
SRC = sys.argv[1]
REPS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
LIB_OPTS = ",slots=8,drives=2,size=40M,move_ms=100"


def cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(args, **kw):
    t, c = time.time(), cpu()
    out = subprocess.run(args, capture_output=True, text=True, **kw)
    return out, time.time() - t, cpu() - c


rows = []
for rep in range(REPS):
    work = tempfile.mkdtemp(prefix="pbio-bench-resume-changer-")
    lib = "vlib:" + os.path.join(work, "full")
    out, full, full_cpu = timed([P, "backup", SRC, "--changer", lib + LIB_OPTS])
    if out.returncode:
        sys.exit("full run failed: " + out.stderr)
    lib = "vlib:" + os.path.join(work, "killed")
    p = subprocess.Popen(
        [P, "backup", SRC, "--changer", lib + LIB_OPTS, "--json", "--json-interval", "0.01"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    tot, seen, at = 0, {}, None
    for line in p.stdout:
        v = json.loads(line)
        if v["event"] == "start":
            tot = v["payload_bytes"]
        if v["event"] == "progress":
            seen[v["device"]] = v["bytes"]
            if sum(seen.values()) >= tot * 0.5:
                p.kill()
                at = sum(seen.values()) / tot
                break
    p.wait()
    # The kept bytes as dd reads them (every cartridge's data file).
    carts = os.path.join(work, "killed", "cartridges")
    datas = [os.path.join(carts, c, "vtape.data") for c in sorted(os.listdir(carts))]
    datas += [os.path.join(work, "killed", d, "vtape.data") for d in ("drive0", "drive1")]
    datas = [d for d in datas if os.path.exists(d)]
    t = time.time()
    for d in datas:
        subprocess.run(["dd", "if=" + d, "of=/dev/null", "bs=1M", "status=none"], check=True)
    dd = time.time() - t
    out, res, res_cpu = timed([P, "backup", "--resume", SRC, "--changer", lib, "--json"])
    if out.returncode:
        sys.exit("resume failed: %d %s" % (out.returncode, out.stderr))
    fin = [json.loads(l) for l in out.stdout.splitlines() if '"finished"' in l][0]
    r = fin["resumed"]
    share = r["written_payload_bytes"] / r["set_payload_bytes"]
    rows.append((full, full_cpu, at, res, res_cpu, share, dd, fin["loads"]))
    print(f"rep {rep}: full {full:.2f} s ({full_cpu:.2f} s CPU); killed at {at:.2f}; "
          f"resume {res:.2f} s ({res_cpu:.2f} s CPU, {fin['loads']} loads) wrote {share:.3f} of the set; "
          f"share*full {share * full:.2f} s; dd of the cartridges {dd:.2f} s")
    shutil.rmtree(work)

med = lambda i: statistics.median(r[i] for r in rows)
print(f"median of {len(rows)}: full {med(0):.2f} s ({med(1):.2f} s CPU); resume {med(3):.2f} s "
      f"({med(4):.2f} s CPU) writing {med(5):.3f} of the set; resume / (share*full) "
      f"{med(3) / (med(5) * med(0)):.2f}; dd read of the kept cartridges {med(6):.2f} s")
