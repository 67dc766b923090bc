//! `restore --scan` and `verify --scan` of a `--parity` set with no usable
//! catalog (issue 19): the data records of devices not given (or damaged)
//! are rebuilt from the stripes the parity records describe, on real loop
//! devices; more missing than parity covers names the files (exit 3),
//! never restores wrong bytes; lying parity records rebuild nothing.

mod common;
#[path = "common/faults.rs"]
mod faults;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use loopdev::{dev_args, loop_devices_available, pbio_owned as run, LoopDev};
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("bad JSON {e}: {text}"))
}

struct Bed {
    _dir: tempfile::TempDir,
    root: PathBuf,
    src: PathBuf,
    devs: Vec<LoopDev>,
}

/// `n` loop devices of 64 MiB, a fixture tree of about 20 MiB backed up
/// with `--parity m` (and `extra`), then every device's catalog wiped
/// (`data_end..catalog_end` zeroed), and with `labels` its label too.
fn bed(test: &str, n: usize, m: usize, extra: &[&str], labels: bool) -> Option<Bed> {
    if !loop_devices_available(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let src = root.join("src/tree");
    common::make_fixture_tree(&src, 300, 12 << 20);
    let devs: Vec<LoopDev> = (0..n)
        .map(|i| LoopDev::new(&root.join(format!("d{i}.img")), 64 << 20))
        .collect();
    let mut args = vec![
        "backup".to_string(),
        src.display().to_string(),
        "--parity".into(),
        m.to_string(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(dev_args(&devs.iter().collect::<Vec<_>>()));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "backup failed: {out}\n{err}");
    let summary = json(&out);
    for (i, d) in summary["devices"].as_array().unwrap().iter().enumerate() {
        let (start, end) = (
            d["data_end"].as_u64().unwrap(),
            d["catalog_end"].as_u64().unwrap(),
        );
        assert!(start > 4096 && end > start, "{d}");
        zero(&devs[i], start, end - start);
        if labels {
            zero(&devs[i], 0, 4096);
        }
    }
    // The catalog restore cannot read the set any more.
    let mut args = vec!["verify".to_string()];
    args.extend(dev_args(&devs.iter().collect::<Vec<_>>()));
    let (code, out, err) = run(&args);
    assert_ne!(code, 0, "the catalog still reads: {out}\n{err}");
    Some(Bed {
        _dir: dir,
        root,
        src,
        devs,
    })
}

fn zero(dev: &LoopDev, offset: u64, len: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&dev.backing)
        .unwrap();
    f.write_all_at(&vec![0u8; len as usize], offset).unwrap();
    f.sync_all().unwrap();
}

/// `restore --scan --json` (or `verify --scan --json` when `to` is None)
/// from the devices but `without`: (code, summary, stderr).
fn scan(bed: &Bed, without: &[usize], to: Option<&Path>) -> (i32, Value, String) {
    let given: Vec<&LoopDev> = (0..bed.devs.len())
        .filter(|i| !without.contains(i))
        .map(|i| &bed.devs[i])
        .collect();
    let mut args = match to {
        Some(to) => vec![
            "restore".to_string(),
            "--scan".into(),
            "--to".into(),
            to.display().to_string(),
        ],
        None => vec!["verify".to_string(), "--scan".into()],
    };
    args.push("--json".into());
    args.extend(dev_args(&given));
    let (code, out, err) = run(&args);
    (code, json(&out), err)
}

/// The regular files below `root`, by relative path, with their bytes.
fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let path = rel.join(e.file_name());
            let t = e.file_type().unwrap();
            if t.is_dir() {
                walk(root, &path, out);
            } else if t.is_file() {
                out.insert(path.clone(), std::fs::read(root.join(&path)).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    if root.exists() {
        walk(root, Path::new(""), &mut out);
    }
    out
}

/// Every file restored below `to` has the source's bytes; their names.
fn identical(bed: &Bed, to: &Path) -> Vec<PathBuf> {
    let restored = files(&to.join("tree"));
    for (path, bytes) in &restored {
        let source = std::fs::read(bed.src.join(path)).unwrap();
        assert!(
            *bytes == source,
            "{} restored with wrong content",
            path.display()
        );
    }
    restored.into_keys().collect()
}

fn missing_devices(summary: &Value) -> Vec<u64> {
    summary["rebuild"]["missing_devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["index"].as_u64().unwrap())
        .collect()
}

#[test]
fn parity_1_on_4_devices_scan_restores_without_any_one() {
    let Some(bed) = bed("parity_1_scan_without_any_one", 4, 1, &[], false) else {
        return;
    };
    // Every device: all complete, nothing rebuilt (the baseline set of files).
    let all = bed.root.join("all");
    let (code, summary, err) = scan(&bed, &[], Some(&all));
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(summary["rebuild"]["records"], 0, "{summary}");
    let baseline = identical(&bed, &all);
    assert!(baseline.len() > 100, "{} files", baseline.len());
    for gone in 0..4 {
        let to = bed.root.join(format!("out{gone}"));
        let (code, summary, err) = scan(&bed, &[gone], Some(&to));
        assert_eq!(code, 0, "without device {gone}: {summary}\n{err}");
        assert_eq!(identical(&bed, &to), baseline, "without device {gone}");
        assert_eq!(missing_devices(&summary), [gone as u64], "{summary}");
        assert!(
            summary["rebuild"]["bytes"].as_u64().unwrap() > 0,
            "without device {gone}: nothing rebuilt: {summary}"
        );
        // verify --scan says the same, and writes nothing.
        let (code, verified, err) = scan(&bed, &[gone], None);
        assert_eq!(
            code, 0,
            "verify --scan without device {gone}: {verified}\n{err}"
        );
        assert_eq!(verified["files"], baseline.len() as u64, "{verified}");
        assert_eq!(verified["rebuild"]["bytes"], summary["rebuild"]["bytes"]);
        std::fs::remove_dir_all(&to).unwrap();
    }
    // A damaged data record on a given device (one payload byte changed):
    // rebuilt from its stripe, named as damaged, exit 0.
    let records: Vec<u64> = std::fs::read(&bed.devs[0].backing)
        .unwrap()
        .chunks(4096)
        .enumerate()
        .filter(|(_, b)| &b[..8] == b"PBIORECD" && b[12..16] == 1u32.to_le_bytes())
        .map(|(i, _)| i as u64 * 4096)
        .collect();
    let at = records[records.len() / 2] + 4096 + 10;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&bed.devs[0].backing)
        .unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ 0x5a], at).unwrap();
    f.sync_all().unwrap();
    let to = bed.root.join("damaged");
    let (code, summary, err) = scan(&bed, &[], Some(&to));
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(identical(&bed, &to), baseline);
    assert!(
        summary["rebuild"]["records"].as_u64().unwrap() >= 1,
        "{summary}"
    );
    let damaged = summary["rebuild"]["damaged"].to_string();
    assert!(damaged.contains(&bed.devs[0].arg()), "{summary}");
    f.write_all_at(&byte, at).unwrap();
    f.sync_all().unwrap();
    // Two missing: more than parity covers. Every file restored is
    // identical, the others are named (exit 3).
    let to = bed.root.join("two");
    let (code, summary, err) = scan(&bed, &[1, 2], Some(&to));
    assert_eq!(code, 3, "{summary}\n{err}");
    let restored = identical(&bed, &to);
    assert!(restored.len() < baseline.len(), "{summary}");
    assert!(
        !summary["incomplete"].as_array().unwrap().is_empty()
            || !summary["lost"].as_array().unwrap().is_empty(),
        "{summary}"
    );
    for i in summary["incomplete"].as_array().unwrap() {
        let path = i["path"].as_str().unwrap();
        assert!(!to.join(path).exists(), "{path} named and restored");
    }
}

#[test]
fn parity_2_on_6_devices_scan_restores_without_two_and_no_labels() {
    let Some(bed) = bed("parity_2_scan_without_two", 6, 2, &[], true) else {
        return;
    };
    let all = bed.root.join("all");
    let (code, summary, err) = scan(&bed, &[], Some(&all));
    assert_eq!(code, 0, "{summary}\n{err}");
    let baseline = identical(&bed, &all);
    assert!(baseline.len() > 100, "{} files", baseline.len());
    for (a, b) in [(0, 1), (2, 5), (3, 4)] {
        let to = bed.root.join(format!("out{a}{b}"));
        let (code, summary, err) = scan(&bed, &[a, b], Some(&to));
        assert_eq!(code, 0, "without devices {a} and {b}: {summary}\n{err}");
        assert_eq!(identical(&bed, &to), baseline, "without {a} and {b}");
        // No label: the missing devices are the stripes' members not given.
        assert_eq!(missing_devices(&summary), [a as u64, b as u64], "{summary}");
        assert!(summary["rebuild"]["bytes"].as_u64().unwrap() > 0);
        std::fs::remove_dir_all(&to).unwrap();
    }
}

/// The parity record headers on a device (through its backing file):
/// (offset, header block).
fn parity_headers(dev: &LoopDev) -> Vec<(u64, Vec<u8>)> {
    let bytes = std::fs::read(&dev.backing).unwrap();
    bytes
        .chunks(4096)
        .enumerate()
        .filter(|(_, b)| &b[..8] == b"PBIORECD" && b[12..16] == 4u32.to_le_bytes())
        .map(|(i, b)| (i as u64 * 4096, b.to_vec()))
        .collect()
}

fn write_block(dev: &LoopDev, offset: u64, block: &[u8]) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&dev.backing)
        .unwrap();
    f.write_all_at(block, offset).unwrap();
    f.sync_all().unwrap();
}

/// Parity records that lie (each a valid header, CRC and all, written
/// through pbio's own encoder): every parity record on the given devices
/// changed one way, device 0 not given. A lie never gives wrong bytes or
/// a panic; a harmless one (a stripe id reused) still rebuilds all.
#[test]
fn lying_parity_records_rebuild_nothing_wrong() {
    use pbio::format::parity::ParityHeader;
    let Some(bed) = bed("lying_parity_records", 4, 1, &[], false) else {
        return;
    };
    let all = bed.root.join("all");
    let (code, summary, err) = scan(&bed, &[], Some(&all));
    assert_eq!(code, 0, "{summary}\n{err}");
    let baseline = identical(&bed, &all);
    let originals: Vec<Vec<(u64, Vec<u8>)>> = bed.devs.iter().map(parity_headers).collect();
    // (Which devices take parity follows arrival: one may hold none. The
    // stripes of device 0's records have theirs on the others.)
    assert!(
        originals[1..].iter().any(|p| !p.is_empty()),
        "no parity record"
    );
    type Lie = fn(&mut ParityHeader) -> bool;
    let lies: [(&str, Lie, bool); 6] = [
        // Two data members' devices swapped.
        (
            "members swapped",
            |h| {
                if h.k() < 2 {
                    return false;
                }
                h.members.swap(0, 1);
                true
            },
            false,
        ),
        // One data member fewer (k - 1), its device dropped.
        (
            "k one less",
            |h| {
                if h.k() < 2 {
                    return false;
                }
                let last = h.data.len() - 1;
                h.data.pop();
                h.members.remove(last);
                h.position -= 1;
                h.shard_bytes = pbio::format::parity::shard_bytes_for(
                    h.data.iter().map(|e| e.payload_bytes).max().unwrap(),
                );
                true
            },
            false,
        ),
        // Every data entry claims a shorter payload than it has.
        (
            "lengths shortened",
            |h| {
                for e in &mut h.data {
                    if e.payload_bytes > 4096 {
                        e.payload_bytes -= 4096;
                    }
                }
                h.shard_bytes = pbio::format::parity::shard_bytes_for(
                    h.data.iter().map(|e| e.payload_bytes).max().unwrap(),
                );
                true
            },
            false,
        ),
        // A shard far larger than the set's chunk (64 MiB).
        (
            "huge shard",
            |h| {
                h.data[0].payload_bytes = 64 << 20;
                h.shard_bytes = pbio::format::parity::shard_bytes_for(64 << 20);
                true
            },
            false,
        ),
        // Sequences that name other records of the devices.
        (
            "sequences moved",
            |h| {
                for e in &mut h.data {
                    e.sequence += 1;
                }
                true
            },
            false,
        ),
        // Every stripe claims id 0: the rest of what they say tells them apart.
        (
            "stripe id reused",
            |h| {
                h.stripe_id = 0;
                true
            },
            true,
        ),
    ];
    for (what, lie, harmless) in lies {
        let mut changed = 0;
        for (d, headers) in originals.iter().enumerate().skip(1) {
            for (offset, block) in headers {
                let mut h = ParityHeader::decode(block).unwrap();
                if !lie(&mut h) {
                    continue;
                }
                let mut crafted = vec![0u8; 4096];
                h.encode_into(&mut crafted);
                write_block(&bed.devs[d], *offset, &crafted);
                changed += 1;
            }
        }
        assert!(changed > 0, "{what}: no parity record changed");
        let to = bed.root.join(format!("lie-{}", what.replace(' ', "-")));
        let (code, summary, err) = scan(&bed, &[0], Some(&to));
        assert!(
            code == 0 || code == 3,
            "{what}: exit {code}: {summary}\n{err}"
        );
        let restored = identical(&bed, &to);
        if harmless {
            assert_eq!(code, 0, "{what}: {summary}\n{err}");
            assert_eq!(restored, baseline, "{what}");
        } else {
            assert_eq!(code, 3, "{what}: a lie went unnoticed: {summary}\n{err}");
            assert!(restored.len() < baseline.len(), "{what}: {summary}");
        }
        // verify --scan agrees, and does not panic either.
        let (vcode, verified, err) = scan(&bed, &[0], None);
        assert_eq!(vcode, code, "{what}: verify --scan: {verified}\n{err}");
        for (d, headers) in originals.iter().enumerate().skip(1) {
            for (offset, block) in headers {
                write_block(&bed.devs[d], *offset, block);
            }
        }
    }
    // The honest records back: everything again.
    let to = bed.root.join("honest");
    let (code, summary, err) = scan(&bed, &[0], Some(&to));
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(identical(&bed, &to), baseline);
}

/// A device failing with EIO mid-run under `--parity 2` (five survivors):
/// exit 1; then `restore --scan` (which reads no catalog) from the
/// survivors less any two, the failed device given too (its records
/// untrusted, its stripes made again after the data), restores the files
/// a scan of every device does, byte-identical.
#[test]
fn a_device_failing_mid_run_under_parity_2_then_scan_without_two() {
    let test = "parity_2_failing_then_scan_without_two";
    if !faults::faults_available(test) || !loop_devices_available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let src = root.join("src/tree");
    common::make_fixture_tree(&src, 300, 12 << 20);
    let devs: Vec<LoopDev> = (0..5)
        .map(|i| LoopDev::new(&root.join(format!("d{i}.img")), 64 << 20))
        .collect();
    let failing = faults::FailingDevice::new(&root, 64 << 20, Some(1 << 20));
    let mut args = vec![
        "backup".to_string(),
        src.display().to_string(),
        "--parity".into(),
        "2".into(),
        "--json".into(),
        "--dev".into(),
        devs[0].arg(),
        "--dev".into(),
        failing.arg(),
    ];
    args.extend(dev_args(&devs[1..].iter().collect::<Vec<_>>()));
    let (code, out, err) = run(&args);
    assert_eq!(code, 1, "{out}\n{err}");
    let summary = json(&out);
    assert_eq!(summary["devices"][1]["state"], "failed", "{summary}");
    assert_eq!(summary["missing_bytes"], 0, "{summary}");
    let bed = Bed {
        _dir: dir,
        root: root.clone(),
        src,
        devs,
    };
    let failed = LoopDev {
        path: failing.path.clone(),
        backing: failing.backing.clone(),
    };
    let scan_of = |given: Vec<&LoopDev>, to: &Path| {
        let mut args = vec![
            "restore".to_string(),
            "--scan".into(),
            "--json".into(),
            "--to".into(),
            to.display().to_string(),
        ];
        args.extend(dev_args(&given));
        let (code, out, err) = run(&args);
        (code, json(&out), err)
    };
    let mut all: Vec<&LoopDev> = bed.devs.iter().collect();
    all.push(&failed);
    let to = root.join("all");
    let (code, summary, err) = scan_of(all, &to);
    assert_eq!(code, 0, "{summary}\n{err}");
    let baseline = identical(&bed, &to);
    assert!(baseline.len() > 100, "{} files", baseline.len());
    for (a, b) in [(0, 1), (1, 3), (2, 4)] {
        let mut given: Vec<&LoopDev> = (0..5)
            .filter(|i| *i != a && *i != b)
            .map(|i| &bed.devs[i])
            .collect();
        given.push(&failed);
        let to = root.join(format!("out{a}{b}"));
        let (code, summary, err) = scan_of(given, &to);
        assert_eq!(code, 0, "survivors without {a} and {b}: {summary}\n{err}");
        assert_eq!(identical(&bed, &to), baseline, "without {a} and {b}");
        assert!(
            summary["rebuild"]["bytes"].as_u64().unwrap() > 0,
            "{summary}"
        );
    }
    // The failed device is only a loop over the fault's file: not detached twice.
    std::mem::forget(failed);
}
