//! `backup --changer --resume` (issue 20): a set spanning the cartridges
//! of an emulated library (two drives, 16 MiB cartridges, at least four
//! used) killed with -9 at random moments, during a cartridge swap, and
//! with its cartridges moved to other slots before the resume; each time
//! `--resume` exits 0, the set restores byte-identical through ONE drive
//! and verifies, and a run killed after half of its bytes writes less than
//! 90% of the set again.

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::Rng;
use loopdev::pbio;
use serde_json::Value;

/// About 54 MiB in files of 1-12 MiB (seeded): five or more 16 MiB
/// cartridges (4 MiB of each is its early-warning zone).
fn make_tree(root: &Path, rng: &mut Rng) {
    std::fs::create_dir_all(root).unwrap();
    let mut left: u64 = 54 << 20;
    let mut i = 0;
    while left > 0 {
        let n = rng.range(1 << 20, 12 << 20).min(left);
        let mut buf = vec![0u8; n as usize];
        rng.fill(&mut buf);
        std::fs::write(root.join(format!("f{i:02}")), &buf).unwrap();
        left -= n;
        i += 1;
    }
}

fn spawn_backup(src: &Path, lib: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pbio"))
        .args([
            "backup",
            src.to_str().unwrap(),
            "--changer",
            lib,
            "--json",
            "--json-interval",
            "0.01",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Start the backup and kill -9 it once its progress events say
/// `fraction` of the set's payload is written (or let it end). Returns
/// the fraction last seen written and whether it was killed.
fn backup_killed_at(src: &Path, lib: &str, fraction: f64) -> (f64, bool) {
    let mut child = spawn_backup(src, lib);
    let out = BufReader::new(child.stdout.take().unwrap());
    let (mut total, mut seen) = (0u64, Vec::<u64>::new());
    let mut killed = false;
    for line in out.lines() {
        let Ok(v) = serde_json::from_str::<Value>(&line.unwrap()) else {
            continue;
        };
        match v["event"].as_str() {
            Some("start") => total = v["payload_bytes"].as_u64().unwrap(),
            Some("progress") => {
                let d = v["device"].as_u64().unwrap() as usize;
                if seen.len() <= d {
                    seen.resize(d + 1, 0);
                }
                seen[d] = v["bytes"].as_u64().unwrap();
                let written: u64 = seen.iter().sum();
                if written > 0 && written as f64 >= fraction * total as f64 {
                    child.kill().unwrap(); // SIGKILL
                    killed = true;
                    break;
                }
            }
            _ => {}
        }
    }
    child.wait().unwrap();
    let written: u64 = seen.iter().sum();
    (written as f64 / total.max(1) as f64, killed)
}

/// `pbio backup --resume --changer LIB`: (exit code, "finished", stderr).
fn resume(src: &Path, lib: &str) -> (i32, Value, String) {
    let (code, out, err) = pbio(&[
        "backup",
        "--resume",
        src.to_str().unwrap(),
        "--changer",
        lib,
        "--json",
    ]);
    let finished = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "finished")
        .unwrap_or(Value::Null);
    (code, finished, err)
}

/// Exit 0, every drive empty, and when the kill came after half of the
/// set, less than 90% of it written again.
fn check_resumed(what: &str, code: i32, finished: &Value, err: &str, written_before: f64) {
    assert_eq!(code, 0, "{what}: resume exit {code}: {err}");
    assert_eq!(finished["ok"], true, "{what}: {finished}");
    let r = &finished["resumed"];
    let (written, set) = (
        r["written_payload_bytes"].as_u64().unwrap(),
        r["set_payload_bytes"].as_u64().unwrap(),
    );
    assert!(set >= 54 << 20, "{what}: the set's bytes: {finished}");
    if written_before >= 0.5 {
        assert!(
            (written as f64) < 0.9 * set as f64,
            "{what}: killed after {:.0}% written, the resume wrote {written} of {set} bytes",
            written_before * 100.0
        );
    }
}

/// Verify, then restore with drive 0 alone: the tree must equal `src`,
/// and the set must span at least four cartridges.
fn restore_equals(src: &Path, lib: &str, to: &Path, what: &str) {
    let (code, out, err) = pbio(&["verify", "--changer", lib, "--drive", "1"]);
    assert_eq!(code, 0, "{what}: verify: {out}{err}");
    let (code, out, err) = pbio(&["list", "--changer", lib, "--drive", "0", "--json"]);
    assert_eq!(code, 0, "{what}: list: {err}");
    let listed: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let mut holding: Vec<u64> = listed["segments"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no segments in {listed}"))
        .iter()
        .map(|s| s["device"].as_u64().unwrap())
        .collect();
    holding.sort_unstable();
    holding.dedup();
    let holding = holding.len();
    assert!(
        holding >= 4,
        "{what}: the set on {holding} cartridges: {listed}"
    );
    let to_s = to.to_str().unwrap();
    let (code, _, err) = pbio(&["restore", "--changer", lib, "--drive", "0", "--to", to_s]);
    assert_eq!(code, 0, "{what}: restore with one drive: {err}");
    let diffs = common::compare_trees(src, &to.join(src.file_name().unwrap()));
    assert!(
        diffs.is_empty(),
        "{what}: restored tree differs:\n{}",
        diffs.join("\n")
    );
    std::fs::remove_dir_all(to).unwrap();
}

fn seed() -> u64 {
    std::env::var("PBIO_RESUME_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

#[test]
fn kill_9_changer_backup_then_resume() {
    let seed = seed();
    let runs: usize = std::env::var("PBIO_RESUME_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    eprintln!("kill_9_changer_backup_then_resume: PBIO_RESUME_SEED={seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, &mut rng);
    let (mut after_half, mut killed_runs) = (0, 0);
    for run in 0..runs {
        let lib_dir = dir.path().join(format!("lib{run}"));
        let lib = format!("vlib:{}", lib_dir.display());
        let created = format!("{lib},slots=8,drives=2,size=16M,move_ms=50");
        // Every other run is killed after half of the set, the others before.
        let fraction = match run % 2 {
            0 => rng.range(50, 97),
            _ => rng.range(3, 49),
        } as f64
            / 100.0;
        let (before, killed) = backup_killed_at(&src, &created, fraction);
        killed_runs += usize::from(killed);
        let what = format!(
            "seed {seed} run {run} (kill at {:.0}%, {before:.2} seen)",
            fraction * 100.0
        );
        let (code, finished, err) = resume(&src, &lib);
        check_resumed(&what, code, &finished, &err, before);
        after_half += usize::from(killed && before >= 0.5);
        restore_equals(&src, &lib, &dir.path().join("to"), &what);
        std::fs::remove_dir_all(&lib_dir).unwrap();
    }
    assert!(
        killed_runs >= runs / 2,
        "seed {seed}: only {killed_runs} of {runs} runs were killed mid-run"
    );
    assert!(
        after_half > 0,
        "seed {seed}: no run was killed after half of the set"
    );
    eprintln!("{runs} runs, {killed_runs} killed mid-run, {after_half} after half of the set");
}

/// Whether `path` (a drive of the library) holds a cartridge: a loaded
/// drive is the cartridge's directory, an empty one a file.
fn loaded(path: &Path) -> bool {
    path.is_dir()
}

#[test]
fn kill_9_during_a_cartridge_swap_then_resume() {
    let seed = seed();
    eprintln!("kill_9_during_a_cartridge_swap_then_resume: PBIO_RESUME_SEED={seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, &mut rng);
    let lib_dir = dir.path().join("lib");
    let lib = format!("vlib:{}", lib_dir.display());
    // Moves of 1.5 s: a swap (unload, load) lasts 3 s.
    let created = format!("{lib},slots=8,drives=2,size=16M,move_ms=1500");
    let mut child = spawn_backup(&src, &created);
    let drive0 = lib_dir.join("drive0");
    // Drive 0 loaded, then emptied: its first cartridge is back in its
    // slot and the next one on its way; killed somewhere in that load.
    let started = Instant::now();
    while !loaded(&drive0) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "drive 0 never loaded"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    while loaded(&drive0) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "drive 0 never swapped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(rng.range(0, 1400)));
    child.kill().unwrap();
    child.wait().unwrap();
    // The library's state is whole after the kill.
    let (code, out, err) = pbio(&["changer", "status", "--changer", &lib, "--json"]);
    assert_eq!(code, 0, "status after the kill: {out}{err}");
    let (code, finished, err) = resume(&src, &format!("{lib},move_ms=20"));
    check_resumed("swap", code, &finished, &err, 0.0);
    restore_equals(&src, &lib, &dir.path().join("to"), "swap");
}

/// Rearrange the cartridges in the slots as an operator would with the
/// library's door open: the slots' contents in reverse order.
fn reverse_slots(lib_dir: &Path) {
    let state = lib_dir.join("vlib.state");
    let text = std::fs::read_to_string(&state).unwrap();
    let slots: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("slot "))
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    let mut n = slots.len();
    let swapped: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("slot ") {
                let i = slots.len() - n;
                n -= 1;
                format!("slot {} {}", i + 1, slots[slots.len() - 1 - i])
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&state, swapped.join("\n") + "\n").unwrap();
}

#[test]
fn resume_after_the_cartridges_were_moved_to_other_slots() {
    let seed = seed();
    eprintln!("resume_after_the_cartridges_were_moved_to_other_slots: PBIO_RESUME_SEED={seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, &mut rng);
    let lib_dir = dir.path().join("lib");
    let lib = format!("vlib:{}", lib_dir.display());
    // A library that reads labels only in a drive.
    let created = format!("{lib},slots=8,drives=2,size=16M,move_ms=20,inplace=0");
    let (before, killed) = backup_killed_at(&src, &created, 0.6);
    assert!(killed, "the backup ended before 60% of it was seen");
    // The cartridges in the drives back by hand, then every cartridge in
    // another slot.
    let status: Value = {
        let (code, out, err) = pbio(&["changer", "status", "--changer", &lib, "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(out.lines().last().unwrap()).unwrap()
    };
    for d in status["drives"].as_array().unwrap() {
        if d["full"] == true {
            let n = d["drive"].as_u64().unwrap().to_string();
            let (code, _, err) = pbio(&["changer", "unload", &n, "--changer", &lib]);
            assert_eq!(code, 0, "unload {n}: {err}");
        }
    }
    reverse_slots(&lib_dir);
    let (code, out, err) = pbio(&["changer", "status", "--changer", &lib]);
    assert_eq!(code, 0, "status after the move: {out}{err}");
    assert!(out.contains("slot    1  PB0008L6"), "{out}");
    let (code, finished, err) = resume(&src, &lib);
    check_resumed("moved", code, &finished, &err, before);
    restore_equals(&src, &lib, &dir.path().join("to"), "moved");
}
