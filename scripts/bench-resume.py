#!/usr/bin/env python3
"""PERF.md "#20 resume": a full backup of ./src to two block devices, then a
run killed (SIGKILL, by its pid) once its --json progress says half of the
set is written, then `backup --resume`: its time against the remaining
bytes' share of the full run's time, and a dd read of the kept bytes (what
the resume reads back to hash) as the reference.
Usage: scripts/bench-resume.py DEV0 DEV1 [REPS]  (destroys what DEV0/DEV1 hold)
"""
import sys, json, subprocess, time, os
P=os.environ.get("PBIO","target/release/pbio"); L0, L1 = sys.argv[1], sys.argv[2]
def wipe():
    for d in (L0, L1):
        subprocess.run(["dd","if=/dev/zero","of="+d,"bs=1M","count=1","oflag=direct","status=none"],check=True)
devs=["--dev",L0,"--dev",L1]
for rep in range(int(sys.argv[3]) if len(sys.argv)>3 else 1):
    wipe(); t=time.time()
    subprocess.run([P,"backup","src",*devs,"--force"],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL,check=True)
    full=time.time()-t
    wipe()
    p=subprocess.Popen([P,"backup","src",*devs,"--json","--json-interval","0.01","--force"],stdout=subprocess.PIPE,stderr=subprocess.DEVNULL,text=True)
    tot=0; seen={}; at=None
    for l in p.stdout:
        v=json.loads(l)
        if v["event"]=="start": tot=v["payload_bytes"]
        if v["event"]=="progress":
            seen[v["device"]]=v["bytes"]
            if sum(seen.values())>=tot*0.5:
                p.kill(); at=sum(seen.values())/tot; break
    p.wait()
    time.sleep(1.0)  # the kernel tears down the killed ring's io_uring asynchronously
    t=time.time()
    out=subprocess.run([P,"backup","--resume","src",*devs,"--json"],capture_output=True,text=True)
    res=time.time()-t
    if out.returncode: print("resume failed", out.returncode, out.stderr); continue
    fin=[json.loads(l) for l in out.stdout.splitlines() if '"finished"' in l][0]["resumed"]
    share=fin["written_payload_bytes"]/fin["set_payload_bytes"]
    kept=fin["kept_payload_bytes"]
    t=time.time()
    ps=[subprocess.Popen(["dd","if="+d,"of=/dev/null","bs=1M","count=%d"%(kept//2//(1<<20)+1),"iflag=direct","status=none"]) for d in (L0,L1)]
    [q.wait() for q in ps]
    ddr=time.time()-t
    print(f"dd read of the kept bytes (both devices at once) {ddr:.3f} s; ", end="")
    print(f"full {full:.3f} s; killed at {at:.2f}; resume {res:.3f} s wrote {fin['written_payload_bytes']} of {fin['set_payload_bytes']} ({share:.3f}); share*full {share*full:.3f} s; ratio {res/(share*full):.2f}")
