//! pmem devices (issue 8): a file on tmpfs as the emulated persistent
//! memory (mapped, not DAX: made durable with msync), next to a loop
//! device. Under CI (`CI=true`) a missing capability fails, never skips.

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::path::{Path, PathBuf};

use loopdev::{loop_devices_available, pbio, LoopDev};
use pbio::device::persist::{self, Flush};
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("bad JSON {e}: {text}"))
}

/// A directory on tmpfs for the emulated pmem file (None: skipped).
fn shm_dir(test: &str) -> Option<tempfile::TempDir> {
    match tempfile::tempdir_in("/dev/shm") {
        Ok(d) => Some(d),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: needs a tmpfs at /dev/shm under CI, but: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: no tmpfs at /dev/shm: {e}");
            None
        }
    }
}

fn run(args: &[String]) -> (i32, String, String) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    pbio(&refs)
}

fn devs(args: &[&str]) -> Vec<String> {
    args.iter()
        .flat_map(|d| ["--dev".to_string(), d.to_string()])
        .collect()
}

fn restore_and_compare(src: &Path, to: &Path, dev_args: &[&str]) {
    let mut args = vec![
        "restore".to_string(),
        "--to".into(),
        to.display().to_string(),
        "--json".into(),
    ];
    args.extend(devs(dev_args));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "restore failed: {out}\n{err}");
    let diffs = common::compare_trees(src, &to.join("tree"));
    assert!(
        diffs.is_empty(),
        "restored tree differs:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn pmem_and_loop_round_trip_in_place() {
    let test = "pmem_and_loop_round_trip_in_place";
    if !loop_devices_available(test) {
        return;
    }
    let Some(shm) = shm_dir(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src/tree");
    common::make_fixture_tree(&src, 400, 40 << 20);
    let lo = LoopDev::new(&dir.path().join("loop.img"), 64 << 20);
    let pmem_file = shm.path().join("pmem.img");
    let pmem = format!("pmem:{}", pmem_file.display());
    let mut args = vec!["backup".to_string(), src.display().to_string()];
    args.extend(devs(&[&format!("{pmem},size=64M"), &lo.arg()]));
    args.push("--json".into());
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "backup failed: {out}\n{err}");
    assert!(
        err.contains("msync"),
        "the durability choice is logged: {err}"
    );
    let summary = json(&out);
    let devices = summary["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    for d in devices {
        let payload = d["payload_bytes"].as_u64().unwrap();
        assert!(payload > 0, "every device got work: {summary}");
        assert_eq!(d["payload_bytes_zero_copy"], d["payload_bytes"], "{d}");
    }
    let pm = devices.iter().find(|d| d["path"] == pmem.as_str()).unwrap();
    let lp = devices
        .iter()
        .find(|d| d["path"] == lo.arg().as_str())
        .unwrap();
    // The pmem device's payload was read straight into the mapping: no
    // buffer in between, no write of its own.
    assert_eq!(pm["payload_bytes_in_place"], pm["payload_bytes"], "{pm}");
    assert_eq!(lp["payload_bytes_in_place"], 0, "{lp}");
    assert_eq!(pm["short_writes"], 0);
    assert_eq!(std::fs::metadata(&pmem_file).unwrap().len(), 64 << 20);

    restore_and_compare(&src, &dir.path().join("out"), &[&pmem, &lo.arg()]);
    restore_and_compare(&src, &dir.path().join("out-rev"), &[&lo.arg(), &pmem]);
    let mut args = vec!["verify".to_string()];
    args.extend(devs(&[&pmem, &lo.arg()]));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "verify failed: {out}\n{err}");
}

#[test]
fn pmem_file_given_without_size_round_trip() {
    let test = "pmem_file_given_without_size_round_trip";
    let Some(shm) = shm_dir(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src/tree");
    common::make_fixture_tree(&src, 50, 3 << 20);
    // A file the user made: its length is the capacity.
    let file: PathBuf = shm.path().join("made.img");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let pmem = format!("pmem:{}", file.display());
    let mut args = vec!["backup".to_string(), src.display().to_string()];
    args.extend(devs(&[&pmem]));
    args.push("--json".into());
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "backup failed: {out}\n{err}");
    let d = &json(&out)["devices"][0];
    assert_eq!(d["payload_bytes_in_place"], d["payload_bytes"], "{d}");
    restore_and_compare(&src, &dir.path().join("out"), &[&pmem]);
    // Restore and verify read records as slices of the mapping: a byte
    // changed in the first record's payload is seen there.
    let (code, out, err) = run(&["verify".to_string(), "--dev".into(), pmem.clone()]);
    assert_eq!(code, 0, "verify failed: {out}\n{err}");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file)
            .unwrap();
        let at = 2 * 4096 + 100;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[!b[0]], at).unwrap();
    }
    let (code, out, err) = run(&["verify".to_string(), "--dev".into(), pmem.clone()]);
    assert_ne!(code, 0, "verify of a changed record passed: {out}\n{err}");
    assert!(err.contains("checksum mismatch"), "{out}\n{err}");
    // A pmem name whose file does not exist and no size: refused, named.
    let missing = format!("pmem:{}", shm.path().join("nope.img").display());
    let mut args = vec!["backup".to_string(), src.display().to_string()];
    args.extend(devs(&[&missing]));
    let (code, _, err) = run(&args);
    assert_ne!(code, 0);
    assert!(err.contains("nope.img"), "{err}");
}

#[test]
fn flush_selection_from_cpuid_bits() {
    assert_eq!(persist::select(0), Flush::Clflush);
    assert_eq!(persist::select(1 << 23), Flush::ClflushOpt);
    assert_eq!(persist::select(1 << 24), Flush::Clwb);
    assert_eq!(persist::select((1 << 24) | (1 << 23)), Flush::Clwb);
    assert_eq!(persist::select(!((1 << 24) | (1 << 23))), Flush::Clflush);
    // This CPU's answer is one of them and flushing with it works.
    let flush = persist::detect();
    let buf = vec![1u8; 4096];
    persist::flush_slice(flush, &buf);
    assert_eq!(buf.iter().map(|&b| b as usize).sum::<usize>(), 4096);
}
