//! Backup, restore, verify and scan on four real loop devices of different
//! sizes (issue 4's acceptance).

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use loopdev::{loop_devices_available, pbio, LoopDev};
use serde_json::Value;

const SMALL_FILES: usize = 3000;
const LARGE_BYTES: u64 = 80 << 20;

fn json(text: &str) -> Value {
    serde_json::from_str(text.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("bad JSON {e}: {text}"))
}

struct Bed {
    _dir: tempfile::TempDir,
    src: std::path::PathBuf,
    root: std::path::PathBuf,
    devs: Vec<LoopDev>,
}

fn bed(test: &str) -> Option<Bed> {
    if !loop_devices_available(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let src = root.join("src/tree");
    std::fs::create_dir_all(&src).unwrap();
    common::make_fixture_tree(&src, SMALL_FILES, LARGE_BYTES);
    // Different sizes, all large enough for a quarter of the tree plus headers.
    let devs = [72u64, 88, 104, 128]
        .iter()
        .enumerate()
        .map(|(i, mib)| LoopDev::new(&root.join(format!("loop{i}.img")), mib << 20))
        .collect();
    Some(Bed {
        _dir: dir,
        src,
        root,
        devs,
    })
}

fn dev_args(devs: &[&LoopDev]) -> Vec<String> {
    devs.iter()
        .flat_map(|d| ["--dev".to_string(), d.arg()])
        .collect()
}

fn run(args: Vec<String>) -> (i32, String, String) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    pbio(&refs)
}

fn backup(bed: &Bed, strategy: &str) -> Value {
    let mut args = vec!["backup".to_string(), bed.src.display().to_string()];
    args.extend(dev_args(&bed.devs.iter().collect::<Vec<_>>()));
    args.extend(["--strategy".into(), strategy.into(), "--json".into()]);
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "backup failed: {out}\n{err}");
    json(&out)
}

fn restore(devs: &[&LoopDev], to: &Path) -> (i32, Value, String) {
    let mut args = vec![
        "restore".to_string(),
        "--to".into(),
        to.display().to_string(),
        "--json".into(),
    ];
    args.extend(dev_args(devs));
    let (code, out, err) = run(args);
    (code, json(&out), err)
}

fn list(dev: &LoopDev) -> Value {
    let (code, out, err) = pbio(&["list", "--dev", &dev.arg(), "--json"]);
    assert_eq!(code, 0, "list failed: {err}");
    json(&out)
}

fn round_trip(strategy: &str) {
    let Some(bed) = bed(&format!("round_trip_{strategy}")) else {
        return;
    };
    let summary = backup(&bed, strategy);
    let devices = summary["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 4);
    for d in devices {
        assert!(
            d["payload_bytes"].as_u64().unwrap() > 0,
            "every device got work: {summary}"
        );
        // Zero copy: every payload byte was written from the buffer the read landed in.
        assert_eq!(d["payload_bytes_zero_copy"], d["payload_bytes"], "{d}");
    }
    let catalog = list(&bed.devs[0]);
    // The large file is split: its segments land on more than one device.
    let large_devices: BTreeSet<u64> = catalog["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["path"] == "tree/large.bin")
        .map(|s| s["device"].as_u64().unwrap())
        .collect();
    assert!(
        large_devices.len() > 1,
        "large file not split: {large_devices:?}"
    );

    // All devices, in order and reversed: identical trees.
    let all: Vec<&LoopDev> = bed.devs.iter().collect();
    let out = bed.root.join("restore-all");
    let (code, report, err) = restore(&all, &out);
    assert_eq!(code, 0, "restore failed: {report}\n{err}");
    let diffs = common::compare_trees(&bed.src, &out.join("tree"));
    assert!(
        diffs.is_empty(),
        "restored tree differs:\n{}",
        diffs.join("\n")
    );
    let reversed: Vec<&LoopDev> = bed.devs.iter().rev().collect();
    let out_rev = bed.root.join("restore-rev");
    let (code, report, err) = restore(&reversed, &out_rev);
    assert_eq!(code, 0, "restore (reversed) failed: {report}\n{err}");
    let diffs = common::compare_trees(&bed.src, &out_rev.join("tree"));
    assert!(
        diffs.is_empty(),
        "restored tree (reversed) differs:\n{}",
        diffs.join("\n")
    );

    let (code, out, err) = run(["verify".to_string()]
        .into_iter()
        .chain(dev_args(&all))
        .collect());
    assert_eq!(code, 0, "verify failed: {out}\n{err}");

    // Each device alone: exactly the files it holds completely, and the
    // missing ranges of the others.
    let mut segments_by_file: BTreeMap<String, Vec<(u64, u64, u64)>> = BTreeMap::new();
    for s in catalog["segments"].as_array().unwrap() {
        segments_by_file
            .entry(s["path"].as_str().unwrap().to_string())
            .or_default()
            .push((
                s["offset"].as_u64().unwrap(),
                s["length"].as_u64().unwrap(),
                s["device"].as_u64().unwrap(),
            ));
    }
    // The fixture's hard link (`hard-a` and `small/hard-b`, one inode):
    // the name without data is missing where its target's data is.
    for (a, b) in [
        ("tree/hard-a", "tree/small/hard-b"),
        ("tree/small/hard-b", "tree/hard-a"),
    ] {
        if let (Some(target), false) = (
            segments_by_file.get(a).cloned(),
            segments_by_file.contains_key(b),
        ) {
            segments_by_file.insert(b.to_string(), target);
        }
    }
    for (i, dev) in bed.devs.iter().enumerate() {
        let out = bed.root.join(format!("restore-{i}"));
        let (code, report, _) = restore(&[dev], &out);
        assert_eq!(
            code, 3,
            "a single device cannot hold the whole set: {report}"
        );
        let mut expected_missing: BTreeMap<String, Vec<(u64, u64, u64)>> = BTreeMap::new();
        for (path, segs) in &segments_by_file {
            let mut absent: Vec<_> = segs.iter().filter(|s| s.2 != i as u64).cloned().collect();
            absent.sort();
            if !absent.is_empty() {
                expected_missing.insert(path.clone(), absent);
            }
        }
        let mut got_missing: BTreeMap<String, Vec<(u64, u64, u64)>> = BTreeMap::new();
        for m in report["missing"].as_array().unwrap() {
            let ranges = m["ranges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["offset"].as_u64().unwrap(),
                        r["length"].as_u64().unwrap(),
                        r["device"].as_u64().unwrap(),
                    )
                })
                .collect();
            got_missing.insert(m["path"].as_str().unwrap().to_string(), ranges);
        }
        assert_eq!(got_missing, expected_missing, "device {i}: missing ranges");
        // Files held completely here are restored byte for byte; the others are absent.
        for (path, segs) in &segments_by_file {
            if path.contains('\u{FFFD}') {
                continue; // a non-UTF-8 name: JSON carries it lossily; compare_trees covered it above
            }
            let restored = out.join(path);
            if segs.iter().all(|s| s.2 == i as u64) {
                let a = std::fs::read(bed.src.parent().unwrap().join(path)).unwrap();
                let b = std::fs::read(&restored)
                    .unwrap_or_else(|e| panic!("device {i}: {path} not restored: {e}"));
                assert!(a == b, "device {i}: {path} differs");
            } else {
                assert!(
                    !restored.exists(),
                    "device {i}: incomplete {path} was restored"
                );
            }
        }
    }
}

#[test]
fn round_trip_fill() {
    round_trip("fill");
}

#[test]
fn round_trip_split() {
    round_trip("split");
}

/// Overwrite a device's catalog: `scan` still recovers every data record;
/// corrupt one payload byte: `verify` and `restore` name file, offset, device.
#[test]
fn scan_and_corruption() {
    let Some(bed) = bed("scan_and_corruption") else {
        return;
    };
    backup(&bed, "fill");
    let catalog = list(&bed.devs[1]);
    let on_dev1: Vec<&Value> = catalog["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["device"] == 1)
        .collect();
    let expected_records: u64 = on_dev1.iter().map(|s| s["records"].as_u64().unwrap()).sum();
    assert!(expected_records > 0);

    // Corrupt one byte in the middle of the payload of a record on device 1.
    let victim = on_dev1
        .iter()
        .find(|s| s["length"].as_u64().unwrap() > 8192 && s["records"].as_u64().unwrap() > 0)
        .expect("a segment with payload on device 1");
    let position = victim["position"].as_u64().unwrap();
    let path = victim["path"].as_str().unwrap().to_string();
    let byte_at = position + 4096 + 100;
    let dev1 = &bed.devs[1];
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev1.path)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, byte_at).unwrap();
        b[0] ^= 0x5a;
        f.write_all_at(&b, byte_at).unwrap();
        f.sync_all().unwrap();
    }
    let all: Vec<&LoopDev> = bed.devs.iter().collect();
    let (code, out, verify_err) = run(["verify".to_string()]
        .into_iter()
        .chain(dev_args(&all))
        .collect());
    let err = verify_err.clone();
    assert_eq!(code, 3, "verify must fail on a corrupted payload: {out}");
    for needle in [path.as_str(), "file offset", &dev1.arg()] {
        assert!(
            err.contains(needle),
            "verify error does not name {needle}: {err}"
        );
    }
    let (code, report, _) = restore(&all, &bed.root.join("restore-corrupt"));
    assert_eq!(code, 3, "restore must fail on a corrupted payload");
    let errors = report["errors"].to_string();
    assert!(
        errors.contains(&path) && errors.contains(&dev1.arg()),
        "{errors}"
    );

    // Overwrite the catalog (everything from the end of the data) with zeros.
    let (_, label) = {
        let spec = pbio::device::DeviceSpec::parse(&dev1.arg()).unwrap();
        let dev = pbio::device::open(&spec, pbio::device::Mode::Read).unwrap();
        let label = pbio::media::read_label(dev.as_ref()).unwrap();
        (dev, label)
    };
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&dev1.path)
            .unwrap();
        f.write_all_at(&vec![0u8; 1 << 20], label.catalog_offset)
            .unwrap();
        f.sync_all().unwrap();
    }
    let (code, _, err) = pbio(&["list", "--dev", &dev1.arg()]);
    assert_eq!(code, 3, "list must fail on an overwritten catalog: {err}");
    let (_, out, _) = pbio(&["scan", "--dev", &dev1.arg(), "--json"]);
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = records.last().unwrap();
    assert_eq!(
        summary["data_records"].as_u64().unwrap(),
        expected_records,
        "{summary}"
    );
    // Exactly one record fails its payload CRC: the one corrupted above.
    let bad: Vec<&Value> = records
        .iter()
        .filter(|r| r["payload_ok"] == false)
        .collect();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0]["position"].as_u64().unwrap(), position);
    let needle = format!("file offset {}", bad[0]["file_offset"]);
    assert!(
        verify_err.contains(&needle),
        "verify error does not name {needle}: {verify_err}"
    );
}

/// A sparse file whose data fits one record (16 MiB, 128 KiB of data at
/// 6.25 MiB, as hw-tests/set.sh makes it) next to a small dense one: the
/// catalog shows the sparse file as one segment [0, size) of one record,
/// like a small file, and restore makes it by the small-file path: its
/// record written at its offset, the length set after (e64d25b). In the
/// VM run (hw-tests/set.sh on nvme, pmem and st) the code before that fix
/// skipped it as "not whole" ("its data was not written"); on these loop
/// devices the code before the fix restored it too (by the ordinary
/// path), so this test covers the sparse small-file path, it does not
/// reproduce the VM failure. Byte-identical, holes kept.
#[test]
fn a_sparse_file_of_one_record_restores_with_its_holes() {
    if !loop_devices_available("a_sparse_file_of_one_record_restores_with_its_holes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data: Vec<u8> = (0..128u32 << 10)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let sparse = std::fs::File::create(src.join("sparse.bin")).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &data, 100 << 16).unwrap();
    sparse.set_len(16 << 20).unwrap();
    drop(sparse);
    std::fs::write(src.join("a.txt"), b"dense\n").unwrap();
    let stat = std::fs::metadata(src.join("sparse.bin")).unwrap();
    assert!(
        common::is_sparse(&stat),
        "the fixture's file must be sparse"
    );

    let devs: Vec<LoopDev> = (0..2)
        .map(|i| LoopDev::new(&root.join(format!("d{i}.img")), 64 << 20))
        .collect();
    let refs: Vec<&LoopDev> = devs.iter().collect();
    let mut args = vec!["backup".to_string(), src.display().to_string()];
    args.extend(dev_args(&refs));
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "backup failed: {out}\n{err}");
    // The case this test is about: one segment of one record for the whole file.
    let listed: Vec<String> = refs
        .iter()
        .map(|d| pbio(&["list", "--dev", &d.arg(), "--segments"]).1)
        .collect();
    assert!(
        listed
            .iter()
            .any(|l| l.contains("src/sparse.bin 0..16777216") && l.contains("records 1")),
        "expected one segment of one record: {listed:?}"
    );

    let to = root.join("out");
    let (code, summary, err) = restore(&refs, &to);
    assert_eq!(code, 0, "restore failed: {summary}\n{err}");
    let diffs = common::compare_trees(&src, &to.join("src"));
    assert!(diffs.is_empty(), "restored tree differs: {diffs:?}");
    let got = std::fs::metadata(to.join("src/sparse.bin")).unwrap();
    assert!(common::is_sparse(&got), "holes kept: {got:?}");
}
