//! Crash safety (issue 5): `kill -9` of pbio at random moments, then a
//! restore from the records alone (`restore --scan`) returns every file
//! that was complete on media byte-identical, and never a file with wrong
//! content. And: any single corrupted byte of a set is detected.

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::process::Command;
use std::time::Duration;

use loopdev::{loop_devices_available, pbio, LoopDev};
use serde_json::Value;

/// xorshift64*: reproducible "random" moments.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn runs() -> usize {
    std::env::var("PBIO_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

#[test]
fn kill_9_at_random_moments_then_scan_restore() {
    if !loop_devices_available("kill_9_at_random_moments_then_scan_restore") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src/tree");
    std::fs::create_dir_all(&src).unwrap();
    common::make_fixture_tree(&src, 1500, 48 << 20);
    let devs: Vec<LoopDev> = (0..4)
        .map(|i| LoopDev::new(&dir.path().join(format!("l{i}.img")), 64 << 20))
        .collect();
    // How long a whole backup takes here, to spread the kills over it.
    let started = std::time::Instant::now();
    let mut args = vec!["backup".to_string(), src.display().to_string()];
    for d in &devs {
        args.extend(["--dev".to_string(), d.arg()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = pbio(&refs);
    assert_eq!(code, 0, "{err}");
    let full_ms = (started.elapsed().as_millis() as u64).max(50);
    // Every run below writes over the (possibly half-written) set the run
    // before left: the overwrite guard would refuse that without --force.
    args.push("--force".to_string());

    let mut rng = Rng(0x5EED_0FC4_A511);
    let (mut total_restored, mut killed_runs) = (0usize, 0usize);
    for run in 0..runs() {
        let delay = rng.next() % (full_ms + full_ms / 4);
        let mut child = Command::new(env!("CARGO_BIN_EXE_pbio"))
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok(); // SIGKILL
        child.wait().unwrap();
        killed_runs += usize::from(!finished);

        let to = dir.path().join(format!("scan-{run}"));
        let mut rargs = vec![
            "restore".to_string(),
            "--scan".into(),
            "--json".into(),
            "--to".into(),
            to.display().to_string(),
        ];
        for d in &devs {
            rargs.extend(["--dev".to_string(), d.arg()]);
        }
        let rrefs: Vec<&str> = rargs.iter().map(String::as_str).collect();
        let (code, out, err) = pbio(&rrefs);
        if code == 2 {
            // Killed while writing the labels: the devices name two sets,
            // and restore --scan refuses to pick one itself.
            assert!(
                err.contains("different sets") && err.contains("--set"),
                "run {run}: {err}"
            );
            continue;
        }
        assert!(
            code == 0 || code == 3,
            "run {run}: restore --scan exit {code}: {err}"
        );
        let report: Value = serde_json::from_str(
            out.lines()
                .last()
                .unwrap_or_else(|| panic!("run {run}: no report: {err}")),
        )
        .unwrap();
        // Every file restored is byte-identical to its source.
        let walked = pbio::source::walk(std::slice::from_ref(&to)).unwrap();
        let mut restored = 0;
        for e in &walked.entries {
            if let pbio::source::EntryKind::File { .. } = e.kind {
                let source = e.source();
                let rel = source.strip_prefix(&to).unwrap();
                let original = src.parent().unwrap().join(rel);
                assert!(
                    std::fs::read(e.source()).unwrap() == std::fs::read(&original).unwrap(),
                    "run {run} (killed after {delay} ms): {} restored with wrong content",
                    rel.display()
                );
                restored += 1;
            }
        }
        assert_eq!(
            restored,
            report["files"].as_u64().unwrap() as usize,
            "run {run}: {report}"
        );
        if finished {
            // A run that completed: every non-empty regular file comes back.
            assert!(
                report["incomplete"].as_array().unwrap().is_empty(),
                "run {run}: {report}"
            );
        }
        total_restored += restored;
        std::fs::remove_dir_all(&to).unwrap();
    }
    eprintln!(
        "kill -9: {} runs ({killed_runs} killed mid-run, full run {full_ms} ms), {total_restored} files restored byte-identical",
        runs()
    );
    assert!(
        killed_runs > 0,
        "no run was killed mid-run: the test did not test anything"
    );
}

/// Any single byte changed anywhere in the written part of a device
/// (label, record headers, payloads, padding, catalog, End record) makes
/// `verify` fail. File devices: no root needed.
#[test]
fn any_single_corrupted_byte_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    let mut rng = Rng(0xC0FF_EE00_1234);
    for i in 0..12 {
        let len = (rng.next() % 300_000) as usize + 1;
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        std::fs::write(src.join(format!("d/f{i}")), data).unwrap();
    }
    let devs: Vec<String> = (0..2)
        .map(|i| dir.path().join(format!("d{i}.img")).display().to_string())
        .collect();
    let (code, out, err) = pbio(&[
        "backup",
        src.to_str().unwrap(),
        "--chunk",
        "64K",
        "--json",
        "--dev",
        &format!("{},size=8M", devs[0]),
        "--dev",
        &format!("{},size=8M", devs[1]),
    ]);
    assert_eq!(code, 0, "{err}");
    let summary: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let ends: Vec<u64> = summary["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["catalog_end"].as_u64().unwrap())
        .collect();
    let (code, _, err) = pbio(&["verify", "--dev", &devs[0], "--dev", &devs[1]]);
    assert_eq!(code, 0, "the clean set verifies: {err}");
    let originals: Vec<Vec<u8>> = devs.iter().map(|d| std::fs::read(d).unwrap()).collect();
    let cases: usize = std::env::var("PBIO_CORRUPTION_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    for case in 0..cases {
        let device = (rng.next() % 2) as usize;
        let at = (rng.next() % ends[device]) as usize;
        let flip = (rng.next() % 255 + 1) as u8;
        let mut image = originals[device].clone();
        image[at] ^= flip;
        std::fs::write(&devs[device], &image).unwrap();
        let (code, out, err) = pbio(&["verify", "--dev", &devs[0], "--dev", &devs[1]]);
        assert!(
            code == 3,
            "case {case}: byte {at} of device {device} xor {flip:#04x} went undetected (exit {code})\n{out}\n{err}"
        );
        std::fs::write(&devs[device], &originals[device]).unwrap();
    }
    let (code, _, err) = pbio(&["verify", "--dev", &devs[0], "--dev", &devs[1]]);
    assert_eq!(code, 0, "restored images verify again: {err}");
}
