//! Devices that fill up or fail mid-run, for real (issue 5, claims 13-15):
//! a loop device over a small tmpfs that runs out of space (ENOSPC), and
//! loop devices over a FUSE file that starts returning EIO.

mod common;
#[path = "common/faults.rs"]
mod faults;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::path::{Path, PathBuf};

use faults::{faults_available, full_device_available, FailingDevice, FullDevice};
use loopdev::{pbio, LoopDev};
use serde_json::Value;

fn tree(root: &Path) -> PathBuf {
    tree_with(root, 40 << 20)
}

fn tree_with(root: &Path, large_bytes: u64) -> PathBuf {
    let src = root.join("src/tree");
    std::fs::create_dir_all(&src).unwrap();
    common::make_fixture_tree(&src, 600, large_bytes);
    src
}

fn run(args: &[String]) -> (i32, String, String) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    pbio(&refs)
}

fn backup(src: &Path, devs: &[String]) -> (i32, Value, String) {
    backup_with(src, devs, &[])
}

/// `backup` with extra arguments.
fn backup_with(src: &Path, devs: &[String], extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec![
        "backup".to_string(),
        src.display().to_string(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    for d in devs {
        args.extend(["--dev".to_string(), d.clone()]);
    }
    let (code, out, err) = run(&args);
    let summary = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .unwrap_or(Value::Null);
    (code, summary, err)
}

fn restore(devs: &[String], to: &Path) -> (i32, String, String) {
    let mut args = vec![
        "restore".to_string(),
        "--to".into(),
        to.display().to_string(),
    ];
    for d in devs {
        args.extend(["--dev".to_string(), d.clone()]);
    }
    run(&args)
}

fn verify(devs: &[String]) -> (i32, String, String) {
    let mut args = vec!["verify".to_string()];
    for d in devs {
        args.extend(["--dev".to_string(), d.clone()]);
    }
    run(&args)
}

fn states(summary: &Value) -> Vec<String> {
    summary["devices"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|d| d["state"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn assert_identical(src: &Path, restored: &Path) {
    let diffs = common::compare_trees(src, restored);
    assert!(
        diffs.is_empty(),
        "restored tree differs:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn a_device_that_fills_up_mid_run() {
    if !full_device_available("a_device_that_fills_up_mid_run") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // About 32 MiB per device.
    let src = tree_with(dir.path(), 100 << 20);
    let loops: Vec<LoopDev> = (0..3)
        .map(|i| LoopDev::new(&dir.path().join(format!("l{i}.img")), 96 << 20))
        .collect();
    // Claims 96 MiB, has 24 MiB of backing store: ENOSPC before its share,
    // after more than the records in flight (8 x 1 MiB) could cover. The
    // loop driver may complete writes out of order, so with as many
    // records in flight as the backing store holds (the default queue
    // depth, 32), the first ENOSPC could land on the first record and
    // leave nothing to keep: the queue depth is pinned below it.
    let full = FullDevice::new(dir.path(), 96 << 20, 24 << 20);
    let mut devs: Vec<String> = loops.iter().map(|l| l.arg()).collect();
    devs.insert(1, full.arg());
    let (code, summary, err) = backup_with(&src, &devs, &["--qd", "8"]);
    assert_eq!(
        code, 0,
        "a full device is healthy: the set completes\n{summary}\n{err}"
    );
    assert_eq!(
        states(&summary),
        ["complete", "full", "complete", "complete"],
        "{summary}"
    );
    let d = &summary["devices"][1];
    assert!(d["redirected_bytes"].as_u64().unwrap() > 0, "{d}");
    assert!(
        d["payload_bytes"].as_u64().unwrap() > 0,
        "what reached it stays: {d}"
    );
    assert!(
        d["error"].as_str().unwrap().contains("No space left"),
        "{d}"
    );
    assert_eq!(summary["missing_bytes"], 0);

    let (code, out, err) = verify(&devs);
    assert_eq!(code, 0, "verify: {out}\n{err}");
    let out_dir = dir.path().join("restored");
    let (code, out, err) = restore(&devs, &out_dir);
    assert_eq!(code, 0, "restore: {out}\n{err}");
    assert_identical(&src, &out_dir.join("tree"));
    // The full device carries the catalog too: it can be listed alone.
    let (code, _, err) = pbio(&["list", "--dev", &full.arg()]);
    assert_eq!(code, 0, "list of the full device: {err}");
}

#[test]
fn a_device_that_fails_with_eio_mid_run() {
    if !faults_available("a_device_that_fails_with_eio_mid_run") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let loops: Vec<LoopDev> = (0..3)
        .map(|i| LoopDev::new(&dir.path().join(format!("l{i}.img")), 96 << 20))
        .collect();
    let failing = FailingDevice::new(dir.path(), 96 << 20, Some(6 << 20));
    let mut devs: Vec<String> = loops.iter().map(|l| l.arg()).collect();
    devs.insert(2, failing.arg());
    let (code, summary, err) = backup(&src, &devs);
    assert_eq!(
        code, 1,
        "a failed device makes the set degraded\n{summary}\n{err}"
    );
    assert_eq!(
        states(&summary),
        ["complete", "complete", "failed", "complete"],
        "{summary}"
    );
    assert!(
        err.contains(&failing.arg()) && err.contains("Input/output error"),
        "{err}"
    );
    assert!(failing.stats().failed_writes > 0);
    assert_eq!(summary["missing_bytes"], 0);

    // The survivors alone hold the complete set.
    let survivors: Vec<String> = loops.iter().map(|l| l.arg()).collect();
    let (code, out, err) = verify(&survivors);
    assert_eq!(code, 0, "verify survivors: {out}\n{err}");
    let out_dir = dir.path().join("restored");
    let (code, out, err) = restore(&survivors, &out_dir);
    assert_eq!(code, 0, "restore from survivors: {out}\n{err}");
    assert_identical(&src, &out_dir.join("tree"));
    // Given as well (it reads back), the failed device's copies do no harm.
    let out_all = dir.path().join("restored-all");
    let (code, out, err) = restore(&devs, &out_all);
    assert_eq!(code, 0, "restore with the failed device: {out}\n{err}");
    assert_identical(&src, &out_all.join("tree"));
    // And when it cannot even be read any more, the others restore all.
    failing.fail_reads(true);
    let out_unreadable = dir.path().join("restored-unreadable");
    let (code, out, err) = restore(&devs, &out_unreadable);
    assert_eq!(
        code, 0,
        "restore with the failed device unreadable: {out}\n{err}"
    );
    assert!(err.contains("unreadable device"), "{err}");
    assert_identical(&src, &out_unreadable.join("tree"));
}

#[test]
fn two_of_four_devices_fail_at_different_moments() {
    if !faults_available("two_of_four_devices_fail_at_different_moments") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let a = LoopDev::new(&dir.path().join("a.img"), 128 << 20);
    let b = LoopDev::new(&dir.path().join("b.img"), 128 << 20);
    let early = FailingDevice::new(dir.path(), 96 << 20, Some(2 << 20));
    let late = FailingDevice::new(dir.path(), 96 << 20, Some(14 << 20));
    let devs = vec![early.arg(), a.arg(), late.arg(), b.arg()];
    let (code, summary, err) = backup(&src, &devs);
    assert_eq!(code, 1, "{summary}\n{err}");
    assert_eq!(
        states(&summary),
        ["failed", "complete", "failed", "complete"],
        "{summary}"
    );
    let survivors = vec![a.arg(), b.arg()];
    let out_dir = dir.path().join("restored");
    let (code, out, err) = restore(&survivors, &out_dir);
    assert_eq!(code, 0, "restore from the two survivors: {out}\n{err}");
    assert_identical(&src, &out_dir.join("tree"));
}

#[test]
fn every_device_failing_is_exit_3_and_nothing_claimed_safe() {
    if !faults_available("every_device_failing_is_exit_3_and_nothing_claimed_safe") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let failing: Vec<FailingDevice> = (0..4)
        .map(|i| FailingDevice::new(dir.path(), 64 << 20, Some((2 + 2 * i) << 20)))
        .collect();
    let devs: Vec<String> = failing.iter().map(|f| f.arg()).collect();
    let (code, out, err) = {
        let mut args = vec!["backup".to_string(), src.display().to_string()];
        for d in &devs {
            args.extend(["--dev".to_string(), d.clone()]);
        }
        run(&args)
    };
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(err.contains("failed"), "{err}");
    assert!(
        !out.contains("complete"),
        "nothing may be reported complete: {out}"
    );
    // No device claims a completed set.
    for f in &failing {
        f.heal();
        let (code, _, err) = pbio(&["list", "--dev", &f.arg()]);
        assert_ne!(
            code,
            0,
            "{} must not list as a complete set: {err}",
            f.arg()
        );
    }
}

#[test]
fn survivors_too_small_is_exit_3_naming_the_missing_bytes() {
    if !faults_available("survivors_too_small_is_exit_3_naming_the_missing_bytes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let small = LoopDev::new(&dir.path().join("small.img"), 40 << 20);
    let failing: Vec<FailingDevice> = (0..3)
        .map(|i| FailingDevice::new(dir.path(), 64 << 20, Some((1 + i) << 20)))
        .collect();
    let mut devs: Vec<String> = failing.iter().map(|f| f.arg()).collect();
    devs.push(small.arg());
    let (code, summary, err) = backup(&src, &devs);
    assert_eq!(code, 3, "{summary}\n{err}");
    let missing = summary["missing_bytes"].as_u64().unwrap();
    assert!(missing > 0, "{summary}");
    assert!(
        err.contains("INCOMPLETE") && err.contains(&missing.to_string()),
        "{err}"
    );
    // What the survivor holds is restorable and right; the rest is named missing.
    let out_dir = dir.path().join("restored");
    let (code, _, err) = restore(&[small.arg()], &out_dir);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("missing:"), "{err}");
    let walked = pbio::source::walk(&[out_dir.join("tree")]).unwrap();
    let mut restored_files = 0;
    for e in &walked.entries {
        if let pbio::source::EntryKind::File { .. } = e.kind {
            let source = e.source();
            let rel = source.strip_prefix(&out_dir).unwrap();
            let original = src.parent().unwrap().join(rel);
            assert_eq!(
                std::fs::read(e.source()).unwrap(),
                std::fs::read(&original).unwrap(),
                "{} restored with wrong content",
                rel.display()
            );
            restored_files += 1;
        }
    }
    assert!(restored_files > 0);
}

/// Claim 15: the unwritten share of a device that fails mid-run is spread
/// over every survivor (least filled first, re-split on chunk boundaries),
/// not handed to whichever survivor runs out of its own work first.
#[test]
fn survivors_of_a_failure_share_its_load_evenly() {
    if !faults_available("survivors_of_a_failure_share_its_load_evenly") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // About 140 MiB: 35 MiB per device, 46 MiB per survivor.
    let src = tree_with(dir.path(), 120 << 20);
    let loops: Vec<LoopDev> = (0..3)
        .map(|i| LoopDev::new(&dir.path().join(format!("l{i}.img")), 96 << 20))
        .collect();
    let failing = FailingDevice::new(dir.path(), 96 << 20, Some(6 << 20));
    let mut devs: Vec<String> = loops.iter().map(|l| l.arg()).collect();
    devs.insert(1, failing.arg());
    let (code, summary, err) = backup(&src, &devs);
    assert_eq!(code, 1, "{summary}\n{err}");
    assert_eq!(
        states(&summary),
        ["complete", "failed", "complete", "complete"],
        "{summary}"
    );
    assert_eq!(summary["missing_bytes"], 0, "{summary}");
    let payload: Vec<u64> = [0, 2, 3]
        .iter()
        .map(|&i| summary["devices"][i]["payload_bytes"].as_u64().unwrap())
        .collect();
    eprintln!("survivors' payload bytes: {payload:?}");
    let (min, max) = (
        *payload.iter().min().unwrap(),
        *payload.iter().max().unwrap(),
    );
    assert!(
        max - min <= max / 10,
        "survivors must end within 10% of each other: {payload:?}\n{summary}"
    );
    let failed = summary["devices"][1]["redirected_bytes"].as_u64().unwrap();
    assert!(failed > 0, "{summary}");

    let out_dir = dir.path().join("restored");
    let survivors: Vec<String> = loops.iter().map(|l| l.arg()).collect();
    let (code, out, err) = restore(&survivors, &out_dir);
    assert_eq!(code, 0, "restore from survivors: {out}\n{err}");
    assert_identical(&src, &out_dir.join("tree"));
}

/// A tmpfs mounted for one test, unmounted (lazily) on drop.
struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    fn new(at: &Path, bytes: u64) -> SmallTmpfs {
        std::fs::create_dir_all(at).unwrap();
        let options = format!("size={bytes},mode=0700");
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .unwrap_or_else(|e| panic!("mount tmpfs ({options}) on {at:?}: {e}"));
        SmallTmpfs(at.to_path_buf())
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Issue 23: the walk's entries go to a temporary file in `$TMPDIR`. A
/// temporary directory that fills up ends the backup before anything is
/// written: exit 2, the temporary directory named, no panic, the device's
/// first block untouched. (Reading the file back failing is the spill's
/// unit test, `a_file_that_cannot_be_read_back_is_an_error`.)
#[test]
fn a_temporary_directory_that_fills_up_ends_the_backup_cleanly() {
    if !full_device_available("a_temporary_directory_that_fills_up_ends_the_backup_cleanly") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src/many");
    for d in 0..10 {
        let sub = src.join(format!("d{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..500 {
            std::fs::write(sub.join(format!("file-with-a-longish-name-{f}")), b"").unwrap();
        }
    }
    // 5000 entries spill ~300 KiB: more than the 64 KiB it has.
    let tmp = SmallTmpfs::new(&dir.path().join("tmp"), 64 << 10);
    let dev = LoopDev::new(&dir.path().join("d.img"), 16 << 20);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pbio"))
        .args(["backup", &src.display().to_string(), "--dev", &dev.arg()])
        .env("TMPDIR", &tmp.0)
        .output()
        .expect("run pbio");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("temporary file"), "{err}");
    assert!(err.contains(&tmp.0.display().to_string()), "{err}");
    assert!(err.contains("No space left"), "{err}");
    let mut first = vec![0u8; 4096];
    use std::os::unix::fs::FileExt;
    std::fs::File::open(&dev.backing)
        .unwrap()
        .read_exact_at(&mut first, 0)
        .unwrap();
    assert!(
        first.iter().all(|&b| b == 0),
        "nothing written to the device"
    );
}

/// 4000 files of 4 KiB (one record each) in 40 directories, each its own bytes.
fn small_files(root: &Path) -> PathBuf {
    let src = root.join("src/small");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for d in 0..40 {
        let sub = src.join(format!("d{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..100 {
            let bytes: Vec<u8> = (0..4096)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            std::fs::write(sub.join(format!("f{f}")), bytes).unwrap();
        }
    }
    src
}

/// Issue 23: a ring settles the records far behind its durable end as it
/// goes (`engine/ring/settle.rs`); with a small chunk and queue depth
/// that is most of the ~1500 records a device takes before it fails. A
/// failed device's settled items go back like the rest: the survivor
/// alone restores every file.
#[test]
fn a_device_failing_after_many_small_records_gives_them_all_back() {
    if !faults_available("a_device_failing_after_many_small_records_gives_them_all_back") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = small_files(dir.path());
    let survivor = LoopDev::new(&dir.path().join("l.img"), 96 << 20);
    let failing = FailingDevice::new(dir.path(), 96 << 20, Some(12 << 20));
    let devs = vec![survivor.arg(), failing.arg()];
    let (code, summary, err) = backup_with(&src, &devs, &["--chunk", "64K", "--qd", "8"]);
    assert_eq!(code, 1, "{summary}\n{err}");
    assert_eq!(states(&summary), ["complete", "failed"], "{summary}");
    assert_eq!(summary["missing_bytes"], 0, "{summary}");
    let d = &summary["devices"][1];
    assert!(d["redirected_bytes"].as_u64().unwrap() > 4 << 20, "{d}");
    let out_dir = dir.path().join("restored");
    let (code, out, err) = restore(&[survivor.arg()], &out_dir);
    assert_eq!(code, 0, "restore from the survivor: {out}\n{err}");
    assert_identical(&src, &out_dir.join("small"));
}

/// The same on a medium that runs out of space: what the ring settled
/// stays on it (only records near the durable end are read back or given
/// up for the catalog), and the set restores whole from both.
#[test]
fn a_device_filling_up_after_many_small_records_keeps_what_it_settled() {
    if !full_device_available("a_device_filling_up_after_many_small_records_keeps_what_it_settled")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = small_files(dir.path());
    let other = LoopDev::new(&dir.path().join("l.img"), 96 << 20);
    let full = FullDevice::new(dir.path(), 96 << 20, 12 << 20);
    let devs = vec![other.arg(), full.arg()];
    let (code, summary, err) = backup_with(&src, &devs, &["--chunk", "64K", "--qd", "8"]);
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(states(&summary), ["complete", "full"], "{summary}");
    assert_eq!(summary["missing_bytes"], 0, "{summary}");
    let d = &summary["devices"][1];
    assert!(d["payload_bytes"].as_u64().unwrap() > 4 << 20, "{d}");
    let (code, out, err) = verify(&devs);
    assert_eq!(code, 0, "verify: {out}\n{err}");
    let out_dir = dir.path().join("restored");
    let (code, out, err) = restore(&devs, &out_dir);
    assert_eq!(code, 0, "restore: {out}\n{err}");
    assert_identical(&src, &out_dir.join("small"));
}
