//! `backup --resume` (issue 20): kill -9 a backup at random moments, then
//! `--resume` finishes the same set: exit 0, `verify` passes, the restore
//! is byte-identical, and a run killed after half of its bytes writes
//! less than 90% of the set again. Two emulated tapes and two loop
//! devices, an NBD export beside a file; a source file changed between the kill and the resume is
//! named and restored with its new content.

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;
#[path = "common/netns.rs"]
mod netns;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use common::Rng;
use loopdev::{loop_devices_available, pbio, LoopDev};
use serde_json::Value;

/// Files f00.. of random sizes (seeded), about `total_bytes` in all.
fn make_tree(root: &Path, files: usize, total_bytes: u64, rng: &mut Rng) {
    std::fs::create_dir_all(root).unwrap();
    let each = total_bytes / files as u64;
    for i in 0..files {
        let size = rng.range(each / 4, each * 7 / 4) as usize;
        let mut bytes = vec![0u8; size];
        rng.fill(&mut bytes);
        std::fs::write(root.join(format!("f{i:02}")), bytes).unwrap();
    }
}

fn strings(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn dev_args(devs: &[String]) -> Vec<String> {
    devs.iter()
        .flat_map(|d| ["--dev".to_string(), d.clone()])
        .collect()
}

/// Start `pbio backup SRC DEVS... --json` and kill -9 it once its progress
/// events say `fraction` of the set's payload is written (or let it end).
/// Returns (the fraction last seen written, whether it was killed).
fn backup_killed_at(src: &Path, devs: &[String], extra: &[&str], fraction: f64) -> (f64, bool) {
    let mut args = vec!["backup".to_string(), src.display().to_string()];
    args.extend(dev_args(devs));
    args.extend(["--json", "--json-interval", "0.01"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_pbio"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (mut total, mut seen) = (0u64, vec![0u64; devs.len()]);
    let mut killed = false;
    for line in out.lines() {
        let Ok(v) = serde_json::from_str::<Value>(&line.unwrap()) else {
            continue;
        };
        match v["event"].as_str() {
            Some("start") => total = v["payload_bytes"].as_u64().unwrap(),
            Some("progress") => {
                seen[v["device"].as_u64().unwrap() as usize] = v["bytes"].as_u64().unwrap();
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
    wait_released(devs);
    let written: u64 = seen.iter().sum();
    (written as f64 / total.max(1) as f64, killed)
}

/// The kernel tears a killed process's io_uring down after the process is
/// gone, and holds its devices until then: wait (at most 10 s) until each
/// block device opens exclusively again, as pbio's guard opens it.
fn wait_released(devs: &[String]) {
    use std::os::unix::fs::OpenOptionsExt;
    for d in devs.iter().filter(|d| d.starts_with("/dev/")) {
        let started = std::time::Instant::now();
        while std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(d)
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{d} still held 10 s after the kill"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `pbio backup --resume`: (exit code, its "finished" event, stderr).
fn resume(src: &Path, devs: &[String]) -> (i32, Value, String) {
    let mut args = vec![
        "backup".to_string(),
        "--resume".into(),
        src.display().to_string(),
        "--json".into(),
    ];
    args.extend(dev_args(devs));
    let (code, out, err) = pbio(&strings(&args));
    let finished = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "finished")
        .unwrap_or(Value::Null);
    (code, finished, err)
}

/// `n` blank 32 MiB file devices `DIR/PREFIX0..` (paths as given to --dev).
fn file_devices(dir: &Path, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("{prefix}{i}"));
            std::fs::File::create(&p)
                .unwrap()
                .set_len(32 << 20)
                .unwrap();
            p.display().to_string()
        })
        .collect()
}

/// Every byte of each file device, to show a refused run wrote nothing.
fn contents(devs: &[String]) -> Vec<Vec<u8>> {
    devs.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Restore and verify the set on `devs`; the restored tree must equal `src`.
fn restore_equals(src: &Path, devs: &[String], to: &Path, what: &str) {
    let mut args = vec!["verify".to_string()];
    args.extend(dev_args(devs));
    let (code, _, err) = pbio(&strings(&args));
    assert_eq!(code, 0, "{what}: verify: {err}");
    let mut args = vec![
        "restore".to_string(),
        "--to".into(),
        to.display().to_string(),
    ];
    args.extend(dev_args(devs));
    let (code, _, err) = pbio(&strings(&args));
    assert_eq!(code, 0, "{what}: restore: {err}");
    let restored = to.join(src.file_name().unwrap());
    let mut names: Vec<PathBuf> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for name in &names {
        let back = restored.join(name.file_name().unwrap());
        assert!(
            std::fs::read(name).unwrap() == std::fs::read(&back).unwrap(),
            "{what}: {} restored with other content",
            name.display()
        );
    }
    assert_eq!(
        std::fs::read_dir(&restored).unwrap().count(),
        names.len(),
        "{what}: restored names"
    );
    std::fs::remove_dir_all(to).unwrap();
}

/// Paths `pbio list` shows for the set on `dev`, sorted.
fn listed(dev: &str) -> Vec<String> {
    let (code, out, err) = pbio(&["list", "--dev", dev]);
    assert_eq!(code, 0, "list: {err}");
    let mut paths: Vec<String> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().last().map(String::from))
        .collect();
    paths.sort();
    paths
}

/// Check one resumed run: exit 0 and, when the kill came after half of the
/// set was written, less than 90% of the set written again.
fn check_resumed(what: &str, code: i32, finished: &Value, err: &str, written_before: f64) {
    assert_eq!(code, 0, "{what}: resume exit {code}: {err}");
    let r = &finished["resumed"];
    let (written, set) = (
        r["written_payload_bytes"].as_u64().unwrap(),
        r["set_payload_bytes"].as_u64().unwrap(),
    );
    if written_before >= 0.5 {
        assert!(
            (written as f64) < 0.9 * set as f64,
            "{what}: killed after {:.0}% written, the resume wrote {written} of {set} bytes",
            written_before * 100.0
        );
    }
}

#[test]
fn kill_9_tape_backup_then_resume() {
    let seed: u64 = std::env::var("PBIO_RESUME_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let runs: usize = std::env::var("PBIO_RESUME_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    eprintln!("kill_9_tape_backup_then_resume: PBIO_RESUME_SEED={seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 24, 24 << 20, &mut rng);
    let (mut after_half, mut killed_runs) = (0, 0);
    for run in 0..runs {
        let what = format!("seed {seed} run {run}");
        let tapes: Vec<PathBuf> = (0..2)
            .map(|i| dir.path().join(format!("r{run}-t{i}")))
            .collect();
        // The emulated drives move 3 MB/s past their 8 MiB buffer: the
        // run lasts long enough to be killed anywhere.
        let throttled: Vec<String> = tapes
            .iter()
            .map(|t| format!("vtape:{},size=64M,rate=3M", t.display()))
            .collect();
        // Every other run is killed after half of the set, the others before.
        let fraction = match run % 2 {
            0 => rng.range(50, 97),
            _ => rng.range(3, 49),
        } as f64
            / 100.0;
        let (before, killed) = backup_killed_at(&src, &throttled, &[], fraction);
        killed_runs += usize::from(killed);
        let plain: Vec<String> = tapes
            .iter()
            .map(|t| format!("vtape:{}", t.display()))
            .collect();
        let (code, finished, err) = resume(&src, &plain);
        let what = format!(
            "{what} (kill at {:.0}%, {before:.2} seen)",
            fraction * 100.0
        );
        check_resumed(&what, code, &finished, &err, before);
        after_half += usize::from(killed && before >= 0.5);
        restore_equals(&src, &plain, &dir.path().join("to"), &what);
        if run == 0 {
            let mut want: Vec<String> = (0..24).map(|i| format!("src/f{i:02}")).collect();
            want.push("src".into());
            want.sort();
            assert_eq!(listed(&plain[1]), want, "{what}: list");
        }
        for t in &tapes {
            std::fs::remove_dir_all(t).unwrap();
        }
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

#[test]
fn kill_9_disk_backup_then_resume_with_a_changed_file() {
    if !loop_devices_available("kill_9_disk_backup_then_resume_with_a_changed_file") {
        return;
    }
    let seed: u64 = std::env::var("PBIO_RESUME_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_2020);
    eprintln!("kill_9_disk_backup_then_resume_with_a_changed_file: PBIO_RESUME_SEED={seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 24, 24 << 20, &mut rng);
    let loops: Vec<LoopDev> = (0..2)
        .map(|i| LoopDev::new(&dir.path().join(format!("l{i}.img")), 64 << 20))
        .collect();
    let devs: Vec<String> = loops.iter().map(LoopDev::arg).collect();
    let mut changed_named = 0;
    for run in 0..3 {
        let what = format!("seed {seed} run {run}");
        // Each run writes over the set the run before finished.
        let fraction = rng.range(20, 80) as f64 / 100.0;
        let (before, _) = backup_killed_at(&src, &devs, &["--force"], fraction);
        // The first record on device 0, if it is durable: change its file.
        let (_, out, _) = pbio(&["scan", "--dev", &devs[0], "--json"]);
        let first = out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["kind"] == "data");
        let mut changed = None;
        if let Some(r) = first.filter(|r| r["sequence"] == 0 && r["payload_ok"] == true) {
            // File ids follow the walk: the directory, then f00, f01, ...
            let id = r["file_id"].as_u64().unwrap();
            let name = format!("f{:02}", id - 1);
            let path = src.join(&name);
            let mut bytes = std::fs::read(&path).unwrap();
            for b in bytes.iter_mut().take(4096) {
                *b = !*b;
            }
            bytes.extend_from_slice(b"grown after the kill");
            std::fs::write(&path, &bytes).unwrap();
            let f = std::fs::File::options().write(true).open(&path).unwrap();
            f.set_modified(SystemTime::now() + Duration::from_secs(5))
                .unwrap();
            changed = Some(format!("src/{name}"));
        }
        let (code, finished, err) = resume(&src, &devs);
        let what = format!(
            "{what} (kill at {:.0}%, {before:.2} seen)",
            fraction * 100.0
        );
        if let Some(name) = &changed {
            assert!(
                err.contains(name.as_str()) && err.contains("changed since"),
                "{what}: {name} not named: {err}"
            );
            let listed = finished["resumed"]["changed"].as_array().unwrap();
            assert!(
                listed.iter().any(|p| p == name.as_str()),
                "{what}: {finished}"
            );
            changed_named += 1;
        }
        // A changed file is written again: the 90% bound is for the rest.
        let before = if changed.is_some() { 0.0 } else { before };
        check_resumed(&what, code, &finished, &err, before);
        restore_equals(&src, &devs, &dir.path().join("to"), &what);
    }
    assert!(
        changed_named > 0,
        "seed {seed}: no run had a durable first record to change"
    );
}

#[test]
fn resume_refuses_what_does_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 4, 2 << 20, &mut Rng::new(7));
    let d = file_devices(dir.path(), "d", 2);
    let s = src.display().to_string();
    // Nothing to resume on blank devices.
    let (code, _, err) = pbio(&["backup", "--resume", &s, "--dev", &d[0], "--dev", &d[1]]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nothing to resume"), "{err}");
    let (code, _, err) = pbio(&["backup", &s, "--dev", &d[0], "--dev", &d[1]]);
    assert_eq!(code, 0, "{err}");
    // Without --resume, the set on the devices is still protected.
    let (code, _, err) = pbio(&["backup", &s, "--dev", &d[0], "--dev", &d[1]]);
    assert_eq!(code, 2, "{err}");
    // Another chunk: named, with the device.
    let (code, _, err) = pbio(&[
        "backup", "--resume", &s, "--dev", &d[0], "--dev", &d[1], "--chunk", "256K",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--chunk") && err.contains(&d[0]), "{err}");
    // The devices in another order.
    let (code, _, err) = pbio(&["backup", "--resume", &s, "--dev", &d[1], "--dev", &d[0]]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("order") && err.contains(&d[1]), "{err}");
    // One device short.
    let (code, _, err) = pbio(&["backup", "--resume", &s, "--dev", &d[0]]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("2 devices, 1 given"), "{err}");
    // A key the set was not written with.
    let key = dir.path().join("key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let k = key.display().to_string();
    let (code, _, err) = pbio(&[
        "backup", "--resume", &s, "--dev", &d[0], "--dev", &d[1], "--key", &k,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--key"), "{err}");
    let (code, _, err) = pbio(&[
        "backup", "--resume", &s, "--dev", &d[0], "--dev", &d[1], "--parity", "1",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--parity"), "{err}");
    // A complete set resumes to itself: nothing written, still whole.
    let (code, finished, err) = resume(&src, &d);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        finished["resumed"]["written_payload_bytes"], 0,
        "{finished}"
    );
    restore_equals(&src, &d, &dir.path().join("to"), "complete set resumed");
    // A device blank again (its label gone) joins at its index.
    std::fs::write(&d[1], vec![0u8; 1 << 20]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&d[1])
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let (code, finished, err) = resume(&src, &d);
    assert_eq!(code, 0, "{err}");
    assert!(
        finished["resumed"]["written_payload_bytes"]
            .as_u64()
            .unwrap()
            > 0,
        "{finished}"
    );
    restore_equals(&src, &d, &dir.path().join("to"), "device 1 blank");
}

/// A set written with --parity is never finished by a resume (it would lose
/// its parity): complete, or with a device's label gone, its devices show
/// parity records and the resume is refused before anything is written.
#[test]
fn a_parity_set_is_never_resumed_without_its_parity() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 6, 3 << 20, &mut Rng::new(11));
    let d = file_devices(dir.path(), "p", 3);
    let s = src.display().to_string();
    let (code, _, err) = pbio(&[
        "backup", &s, "--dev", &d[0], "--dev", &d[1], "--dev", &d[2], "--parity", "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let before = contents(&d);
    let (code, _, err) = resume(&src, &d);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("parity records"), "{err}");
    assert!(before == contents(&d), "a refused resume wrote to a device");
    // Device 1's label gone: the others are walked and show parity records.
    std::fs::File::options()
        .write(true)
        .open(&d[1])
        .unwrap()
        .write_all_at(&[0u8; 4096], 0)
        .unwrap();
    let before = contents(&d);
    let (code, _, err) = resume(&src, &d);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("parity records"), "{err}");
    assert!(before == contents(&d), "a refused resume wrote to a device");
}

/// An encrypted set is refused by name before anything is written (its
/// records are sealed under the interrupted run's keys).
#[test]
fn an_encrypted_set_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 3, 1 << 20, &mut Rng::new(13));
    let key = dir.path().join("key");
    std::fs::write(&key, [9u8; 32]).unwrap();
    let k = key.display().to_string();
    let d: Vec<String> = (0..2)
        .map(|i| dir.path().join(format!("e{i}")).display().to_string())
        .collect();
    let s = src.display().to_string();
    let (code, _, err) = pbio(&[
        "backup",
        &s,
        "--encrypt",
        "--key-file",
        &k,
        "--dev",
        &format!("{},size=32M", d[0]),
        "--dev",
        &format!("{},size=32M", d[1]),
    ]);
    assert_eq!(code, 0, "{err}");
    let before = contents(&d);
    let (code, _, err) = pbio(&[
        "backup",
        "--resume",
        &s,
        "--encrypt",
        "--key-file",
        &k,
        "--dev",
        &d[0],
        "--dev",
        &d[1],
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("encrypted set"), "{err}");
    assert!(before == contents(&d), "a refused resume wrote to a device");
}

#[test]
fn a_damaged_record_ends_the_kept_stream() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 6, 12 << 20, &mut Rng::new(11));
    let d = file_devices(dir.path(), "d", 2);
    let s = src.display().to_string();
    let (code, _, err) = pbio(&["backup", &s, "--dev", &d[0], "--dev", &d[1]]);
    assert_eq!(code, 0, "{err}");
    // One payload byte of device 0's third record flipped: its CRC fails.
    let (_, out, _) = pbio(&["scan", "--dev", &d[0], "--json"]);
    let records: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "data")
        .collect();
    assert!(records.len() > 3, "{out}");
    let at = records[2]["position"].as_u64().unwrap() + 4096 + 100;
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&d[0])
        .unwrap();
    let mut byte = [0u8; 1];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut byte, at).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[!byte[0]], at).unwrap();
    drop(f);
    let mut args = vec![
        "backup".to_string(),
        "--resume".into(),
        s.clone(),
        "--json".into(),
    ];
    args.extend(dev_args(&d));
    let (code, out, err) = pbio(&strings(&args));
    assert_eq!(code, 0, "{err}");
    let events: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    let resume = events.iter().find(|v| v["event"] == "resume").unwrap();
    let dev0 = &resume["devices"][0];
    assert_eq!(dev0["kept_records"], 2, "{resume}");
    assert_eq!(dev0["end_position"], records[2]["position"], "{resume}");
    assert!(dev0["end"].as_str().unwrap().contains("CRC"), "{resume}");
    assert_eq!(resume["devices"][1]["end"], "clean", "{resume}");
    let finished = events.iter().find(|v| v["event"] == "finished").unwrap();
    let written = finished["resumed"]["written_payload_bytes"]
        .as_u64()
        .unwrap();
    let dropped: u64 = records[2..]
        .iter()
        .map(|r| r["payload_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(written, dropped, "{finished}");
    restore_equals(&src, &d, &dir.path().join("to"), "damaged record");
}

#[test]
fn kill_9_nbd_backup_then_resume() {
    use netns::{nbd_available, NbdSite, Server, Shape};
    if !nbd_available(
        "kill_9_nbd_backup_then_resume",
        Server::QemuNbd,
        true,
        false,
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src, 12, 16 << 20, &mut Rng::new(20));
    // A 40 Mbit/s site: the file device's half is written at once, the
    // export's over about 1.6 s, killed in the middle of it.
    let site = NbdSite::tcp(Server::QemuNbd, 64 << 20, Some(Shape::WAN));
    let file = dir.path().join("d1");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let devs = vec![site.url(), file.display().to_string()];
    let (before, killed) = backup_killed_at(&src, &devs, &[], 0.75);
    assert!(
        killed,
        "the backup ended before 75% of it was reported written"
    );
    let (code, finished, err) = resume(&src, &devs);
    check_resumed("nbd", code, &finished, &err, before);
    eprintln!("nbd: killed at {before:.2}, {}", finished["resumed"]);
    restore_equals(&src, &devs, &dir.path().join("to"), "nbd");
}

#[test]
fn compressed_records_are_kept_and_need_compress() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        let text: String = (0..60_000)
            .map(|n| format!("line {n} of file {i}\n"))
            .collect();
        std::fs::write(src.join(format!("f{i:02}")), text).unwrap();
    }
    let d = file_devices(dir.path(), "d", 2);
    let s = src.display().to_string();
    let mut args = vec![
        "backup".to_string(),
        s.clone(),
        "--compress".into(),
        "zstd".into(),
    ];
    args.extend(dev_args(&d));
    let (code, _, err) = pbio(&strings(&args));
    assert_eq!(code, 0, "{err}");
    // Without --compress the compressed records refuse the resume.
    let (code, _, err) = pbio(&["backup", "--resume", &s, "--dev", &d[0], "--dev", &d[1]]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--compress") && err.contains(&d[0]), "{err}");
    // With it, the compressed records are kept (their payloads hashed
    // decompressed for the file digests) and the set verifies.
    args.insert(1, "--resume".into());
    args.push("--json".into());
    let (code, out, err) = pbio(&strings(&args));
    assert_eq!(code, 0, "{err}");
    let finished: Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "finished")
        .unwrap();
    assert_eq!(
        finished["resumed"]["written_payload_bytes"], 0,
        "{finished}"
    );
    assert!(
        finished["resumed"]["kept_records"].as_u64().unwrap() >= 4,
        "{finished}"
    );
    restore_equals(&src, &d, &dir.path().join("to"), "compressed");
}
