//! The `--json` event stream of backups where a device fills up or fails,
//! on the real fault fixtures (tmpfs ENOSPC, FUSE EIO): the device event
//! arrives, names the device, and agrees with the summary.

mod common;
#[path = "common/events.rs"]
mod events;
#[path = "common/faults.rs"]
mod faults;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::path::{Path, PathBuf};

use faults::{faults_available, full_device_available, FailingDevice, FullDevice};
use loopdev::{pbio, LoopDev};

fn tree(root: &Path, large_bytes: u64) -> PathBuf {
    let src = root.join("src/tree");
    std::fs::create_dir_all(&src).unwrap();
    common::make_fixture_tree(&src, 300, large_bytes);
    src
}

fn backup_json(src: &Path, devs: &[String]) -> (i32, String, String) {
    let mut args = vec![
        "backup".to_string(),
        src.display().to_string(),
        "--json".into(),
        "--json-interval".into(),
        "0.05".into(),
    ];
    for d in devs {
        args.extend(["--dev".to_string(), d.clone()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    pbio(&refs)
}

#[test]
fn device_full_event() {
    if !full_device_available("device_full_event") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 100 << 20);
    let loops: Vec<LoopDev> = (0..2)
        .map(|i| LoopDev::new(&dir.path().join(format!("l{i}.img")), 128 << 20))
        .collect();
    let full = FullDevice::new(dir.path(), 96 << 20, 24 << 20);
    let devs = vec![loops[0].arg(), full.arg(), loops[1].arg()];
    let (code, out, err) = backup_json(&src, &devs);
    assert_eq!(code, 0, "{out}\n{err}");
    let summary = events::check_stream_with(&out, &["complete", "full", "complete"]);
    let event = events::device_events(&out)
        .into_iter()
        .find(|e| e["event"] == "device_full")
        .unwrap_or_else(|| panic!("no device_full event: {out}"));
    assert_eq!(event["device"], 1);
    assert_eq!(event["path"], full.arg());
    assert!(
        event["error"].as_str().unwrap().contains("No space left"),
        "{event}"
    );
    let d = &summary["devices"][1];
    assert_eq!(
        event["redirected_bytes"], d["redirected_bytes"],
        "{event}\n{d}"
    );
    assert!(event["durable_bytes"].as_u64().unwrap() <= d["payload_bytes"].as_u64().unwrap());
}

#[test]
fn device_failed_event() {
    if !faults_available("device_failed_event") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 40 << 20);
    let loops: Vec<LoopDev> = (0..2)
        .map(|i| LoopDev::new(&dir.path().join(format!("l{i}.img")), 96 << 20))
        .collect();
    let failing = FailingDevice::new(dir.path(), 96 << 20, Some(6 << 20));
    let devs = vec![loops[0].arg(), loops[1].arg(), failing.arg()];
    let (code, out, err) = backup_json(&src, &devs);
    assert_eq!(code, 1, "a failed device: degraded\n{out}\n{err}");
    let summary = events::check_stream_with(&out, &["complete", "complete", "failed"]);
    let event = events::device_events(&out)
        .into_iter()
        .find(|e| e["event"] == "device_failed")
        .unwrap_or_else(|| panic!("no device_failed event: {out}"));
    assert_eq!(event["device"], 2);
    assert_eq!(event["path"], failing.arg());
    let d = &summary["devices"][2];
    assert_eq!(
        event["redirected_bytes"], d["redirected_bytes"],
        "{event}\n{d}"
    );
}
