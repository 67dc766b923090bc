//! `pbio scrub` and `scrub --repair` on real loop devices (issue 19): a
//! wiped device is reported (exit 1) and rebuilt onto a new device, after
//! which the set verifies with the new device and restores without
//! another original one; bad records on given devices are rewritten in
//! place; more damage than parity covers is exit 3.

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use loopdev::{dev_args, loop_devices_available, pbio, pbio_owned as run, LoopDev};
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

/// `n` loop devices of 64 MiB, a fixture tree of about 20 MiB, backed up
/// with `--parity 1` on the first four.
fn bed(test: &str, n: usize) -> Option<Bed> {
    bed_with(test, n, |_| Vec::new())
}

/// `bed` with more backup arguments, made from the bed's directory.
fn bed_with(test: &str, n: usize, extra: impl Fn(&Path) -> Vec<String>) -> Option<Bed> {
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
        "1".into(),
        "--json".into(),
    ];
    args.extend(dev_args(&devs[..4].iter().collect::<Vec<_>>()));
    args.extend(extra(&root));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "backup failed: {out}\n{err}");
    Some(Bed {
        _dir: dir,
        root,
        src,
        devs,
    })
}

/// `pbio scrub --json` over `devs` plus `extra` arguments: (code, report, stderr).
fn scrub(devs: &[&LoopDev], extra: &[String]) -> (i32, Value, String) {
    let mut args = vec!["scrub".to_string(), "--json".into()];
    args.extend(dev_args(devs));
    args.extend(extra.iter().cloned());
    let (code, out, err) = run(&args);
    let report = if out.trim().is_empty() {
        Value::Null
    } else {
        json(&out)
    };
    (code, report, err)
}

fn zero(dev: &LoopDev) {
    let out = std::process::Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", dev.arg()),
            "bs=1M",
            "oflag=direct",
            "status=none",
        ])
        .output()
        .unwrap();
    // dd ends with ENOSPC at the device's end: the whole device is zero.
    let bytes = std::fs::read(&dev.backing).unwrap();
    assert!(
        bytes.iter().all(|&b| b == 0),
        "dd did not wipe {}: {}",
        dev.arg(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Offsets of the records of `kind` (1 data, 4 parity) on a device,
/// read through its backing file.
fn records(backing: &Path, kind: u32) -> Vec<u64> {
    let bytes = std::fs::read(backing).unwrap();
    bytes
        .chunks(4096)
        .enumerate()
        .filter(|(_, b)| &b[..8] == b"PBIORECD" && b[12..16] == kind.to_le_bytes())
        .map(|(i, _)| i as u64 * 4096)
        .collect()
}

/// Flip one payload byte of the record at `offset` (header intact).
fn flip(dev: &LoopDev, offset: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev.backing)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset + 4096 + 100).unwrap();
    b[0] ^= 0x21;
    f.write_all_at(&b, offset + 4096 + 100).unwrap();
    f.sync_all().unwrap();
}

fn device(report: &Value, index: u64) -> &Value {
    report["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["index"] == index)
        .unwrap_or_else(|| panic!("no device {index}: {report}"))
}

#[test]
fn scrub_reports_a_wiped_device_and_repair_rebuilds_it_onto_a_new_one() {
    let Some(bed) = bed("scrub_repair_replace", 6) else {
        return;
    };
    let d = &bed.devs;
    let originals: Vec<&LoopDev> = d[..4].iter().collect();
    // A whole set: exit 0, every device's records checked, nothing bad.
    let (code, report, err) = scrub(&originals, &[]);
    assert_eq!(code, 0, "{report}\n{err}");
    assert_eq!(report["whole"], true, "{report}");
    assert!(report["stripes"].as_u64().unwrap() > 4, "{report}");
    for i in 0..4 {
        let dev = device(&report, i);
        assert!(dev["data_records"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(dev["bad_records"], 0, "{report}");
    }
    let parity_total: u64 = (0..4)
        .map(|i| device(&report, i)["parity_records"].as_u64().unwrap())
        .sum();
    assert_eq!(
        parity_total,
        report["stripes"].as_u64().unwrap(),
        "{report}"
    );
    // The device to wipe: one that holds data and parity records (which
    // devices take parity depends on how the records arrived: online
    // stripes, src/plan/stripe/online.rs; a device writing many small
    // records may take none), the last such one.
    let w = (0..4usize)
        .rev()
        .find(|&i| {
            let dev = device(&report, i as u64);
            dev["data_records"].as_u64().unwrap() > 0 && dev["parity_records"].as_u64().unwrap() > 0
        })
        .unwrap_or_else(|| panic!("no device holds data and parity: {report}"));
    let held = {
        let dev = device(&report, w as u64);
        dev["data_records"].as_u64().unwrap() + dev["parity_records"].as_u64().unwrap()
    };

    // Device w wiped: every record it held is reported, all rebuildable: exit 1.
    zero(&d[w]);
    let (code, report, err) = scrub(&originals, &[]);
    assert_eq!(code, 1, "{report}\n{err}");
    assert_eq!(report["whole"], false);
    assert_eq!(report["rebuildable"], true);
    assert_eq!(device(&report, w as u64)["given"], Value::Null, "{report}");
    assert_eq!(device(&report, w as u64)["bad_records"], held, "{report}");
    let bad = report["bad"].as_array().unwrap();
    assert_eq!(bad.len() as u64, held);
    assert!(bad
        .iter()
        .all(|b| b["device"] == w && b["rebuildable"] == true));
    assert!(bad.iter().any(|b| b["kind"] == "parity"));
    assert!(bad.iter().any(|b| b["kind"] == "data"));

    // --repair without --replace has nothing to write in place: what the
    // wiped device held stays missing, rebuildable (exit 1).
    let (code, report, err) = scrub(&originals, &["--repair".into()]);
    assert_eq!(code, 1, "{report}\n{err}");
    assert_eq!(report["repair"]["records_written"], 0, "{report}");

    // The overwrite guard applies to the new device: it holds another set.
    let other = bed.root.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("f"), b"another set").unwrap();
    let (code, out, err) = run(&[
        "backup".into(),
        other.display().to_string(),
        "--dev".into(),
        d[4].arg(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let replace = |new: &LoopDev, force: bool| {
        let mut extra = vec![
            "--repair".to_string(),
            "--replace".into(),
            format!("{}={}", d[w].arg(), new.arg()),
        ];
        if force {
            extra.push("--force".into());
        }
        scrub(&originals, &extra)
    };
    let (code, _, err) = replace(&d[4], false);
    assert_eq!(code, 2, "repair wrote over a device holding a set: {err}");
    assert!(err.contains("holds pbio set"), "{err}");
    // The new device given among the set's devices is refused too.
    let (code, _, err) = scrub(
        &originals,
        &[
            "--repair".into(),
            "--replace".into(),
            format!("{w}={}", d[(w + 1) % 4].arg()),
        ],
    );
    assert_eq!(code, 2, "{err}");

    // Repair onto device 4 (--force: it holds the small set).
    let (code, report, err) = replace(&d[4], true);
    assert_eq!(code, 0, "{report}\n{err}");
    let repair = &report["repair"];
    assert_eq!(repair["replacement_complete"], true, "{report}");
    assert_eq!(repair["records_written"], held, "{report}");
    assert_eq!(repair["replaced"]["index"], w);

    // The set with the new device in place of device w: whole, verifies.
    let with_new: Vec<&LoopDev> = (0..4).map(|i| if i == w { &d[4] } else { &d[i] }).collect();
    let (code, report, err) = scrub(&with_new, &[]);
    assert_eq!(code, 0, "{report}\n{err}");
    assert_eq!(report["whole"], true, "{report}");
    let mut args = vec!["verify".to_string(), "--json".into()];
    args.extend(dev_args(&with_new));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "verify with the new device: {out}\n{err}");
    let v = json(&out);
    assert_eq!(v["rebuild"]["missing_devices"].as_array().unwrap().len(), 0);
    assert_eq!(v["rebuild"]["bytes"], 0, "{v}");

    // And it survives one more loss: restore without another original
    // device, device w's records read from the new device: byte-identical.
    for gone in (0..4usize).filter(|&i| i != w) {
        let given: Vec<&LoopDev> = with_new
            .iter()
            .copied()
            .filter(|x| x.arg() != d[gone].arg())
            .collect();
        let to = bed.root.join(format!("out{gone}"));
        let mut args = vec![
            "restore".to_string(),
            "--to".into(),
            to.display().to_string(),
            "--json".into(),
        ];
        args.extend(dev_args(&given));
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "restore without device {gone}: {out}\n{err}");
        let diffs = common::compare_trees(&bed.src, &to.join("tree"));
        assert!(diffs.is_empty(), "without device {gone}: {diffs:?}");
        let summary = json(&out);
        assert_eq!(
            summary["rebuild"]["missing_devices"][0]["index"], gone as u64,
            "{summary}"
        );
    }
}

#[test]
fn repair_rewrites_bad_records_in_place() {
    let Some(bed) = bed("repair_in_place", 4) else {
        return;
    };
    let d: Vec<&LoopDev> = bed.devs.iter().collect();
    // A device holding parity records, and a data record on another one.
    let p = (0..4)
        .find(|&i| !records(&d[i].backing, 4).is_empty())
        .expect("no parity record on any device");
    let q = (p + 1) % 4;
    let parity = records(&d[p].backing, 4);
    let data = records(&d[q].backing, 1);
    assert!(!data.is_empty());
    flip(d[q], data[data.len() / 2]);
    flip(d[p], parity[0]);
    let (code, report, err) = scrub(&d, &[]);
    assert_eq!(code, 1, "{report}\n{err}");
    let bad = report["bad"].as_array().unwrap();
    assert_eq!(bad.len(), 2, "{report}");
    let data_bad = bad.iter().find(|b| b["kind"] == "data").unwrap();
    assert_eq!(data_bad["device"], q as u64);
    assert_eq!(data_bad["offset"], data[data.len() / 2]);
    assert!(
        data_bad["why"].as_str().unwrap().contains("checksum"),
        "{report}"
    );
    let parity_bad = bad.iter().find(|b| b["kind"] == "parity").unwrap();
    assert_eq!(parity_bad["device"], p as u64);
    assert_eq!(parity_bad["offset"], parity[0]);

    let (code, report, err) = scrub(&d, &["--repair".into()]);
    assert_eq!(code, 0, "{report}\n{err}");
    assert_eq!(report["repair"]["in_place"].as_array().unwrap().len(), 2);
    let (code, report, err) = scrub(&d, &[]);
    assert_eq!(code, 0, "after the repair: {report}\n{err}");
    assert_eq!(report["whole"], true);
    let to = bed.root.join("out");
    let mut args = vec![
        "restore".to_string(),
        "--to".into(),
        to.display().to_string(),
    ];
    args.extend(dev_args(&d));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(common::compare_trees(&bed.src, &to.join("tree")).is_empty());
}

#[test]
fn scrub_with_two_devices_wiped_under_parity_1_is_not_rebuildable() {
    let Some(bed) = bed("scrub_two_wiped", 4) else {
        return;
    };
    let d: Vec<&LoopDev> = bed.devs.iter().collect();
    zero(d[0]);
    zero(d[3]);
    let (code, report, err) = scrub(&d, &[]);
    assert_eq!(code, 3, "{report}\n{err}");
    assert_eq!(report["rebuildable"], false);
    assert!(report["stripes_lost"].as_u64().unwrap() > 0, "{report}");
    // A repair cannot make it whole: exit 3, and the new label is not Complete.
    let mut args = vec!["scrub".to_string(), "--repair".into()];
    args.extend(dev_args(&d));
    let (code, out, err) = run(&args);
    assert_eq!(code, 3, "{out}\n{err}");
}

#[test]
fn scrub_refuses_a_set_without_parity() {
    if !loop_devices_available("scrub_refuses_a_set_without_parity") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), vec![7u8; 100_000]).unwrap();
    let dev = LoopDev::new(&dir.path().join("d.img"), 16 << 20);
    let (code, out, err) = pbio(&["backup", &src.display().to_string(), "--dev", &dev.arg()]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, _, err) = pbio(&["scrub", "--dev", &dev.arg()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("without --parity"), "{err}");
}

#[test]
fn repair_of_a_keyed_set_needs_its_key_and_seals_the_new_label() {
    let Some(bed) = bed_with("repair_keyed", 5, |root| {
        let key = root.join("key");
        let (code, out, err) = pbio(&["key", "new", key.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}\n{err}");
        vec!["--key".into(), key.display().to_string()]
    }) else {
        return;
    };
    let d: Vec<&LoopDev> = bed.devs.iter().collect();
    let key = bed.root.join("key").display().to_string();
    zero(d[1]);
    let originals = &d[..4];
    let replace = vec![
        "--repair".to_string(),
        "--replace".into(),
        format!("1={}", d[4].arg()),
    ];
    // Without the key: refused before anything is written (exit 2).
    let (code, _, err) = scrub(originals, &replace);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--key"), "{err}");
    assert!(
        records(&d[4].backing, 1).is_empty(),
        "written without the key"
    );
    // With it: repaired, and the new label's MAC checks with the key.
    let mut keyed = replace.clone();
    keyed.extend(["--key".to_string(), key.clone()]);
    let (code, report, err) = scrub(originals, &keyed);
    assert_eq!(code, 0, "{report}\n{err}");
    let mut args = vec!["verify".to_string(), "--key".into(), key];
    args.extend(dev_args(&[d[0], d[4], d[2], d[3]]));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "verify --key with the new device: {out}\n{err}");
    // Restore without device 0: device 1's records come from the new one.
    let to = bed.root.join("out");
    let mut args = vec![
        "restore".to_string(),
        "--to".into(),
        to.display().to_string(),
    ];
    args.extend(dev_args(&[d[4], d[2], d[3]]));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(common::compare_trees(&bed.src, &to.join("tree")).is_empty());
}

#[test]
fn scan_counts_parity_records_and_never_takes_them_for_data() {
    let Some(bed) = bed("scan_parity", 4) else {
        return;
    };
    let d: Vec<&LoopDev> = bed.devs.iter().collect();
    let mut parity_seen = 0;
    for dev in &d {
        let (code, out, err) = pbio(&["scan", "--json", "--dev", &dev.arg()]);
        assert_eq!(code, 0, "{err}");
        let summary = json(&out);
        let parity = records(&dev.backing, 4).len() as u64;
        parity_seen += parity;
        assert_eq!(summary["parity_records"], parity, "{summary}");
        assert_eq!(summary["bad_parity_payloads"], 0, "{summary}");
        assert_eq!(
            summary["data_records"],
            records(&dev.backing, 1).len() as u64,
            "{summary}"
        );
        // A parity record's payload is not reported as unreadable blocks.
        assert_eq!(summary["bad_blocks"], 0, "{summary}");
        let parity_lines = out
            .lines()
            .filter(|l| l.contains("\"kind\":\"parity\""))
            .count() as u64;
        assert_eq!(parity_lines, parity);
    }
    assert!(parity_seen > 0);
    // restore --scan of every device: the data records only, identical.
    let to = bed.root.join("out");
    let mut args = vec![
        "restore".to_string(),
        "--scan".into(),
        "--to".into(),
        to.display().to_string(),
    ];
    args.extend(dev_args(&d));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    // (Without a catalog, directories, links and empty files are not
    // restored: every regular file it restored has the source's bytes.)
    let mut files = Vec::new();
    regular_files(&to.join("tree"), Path::new(""), &mut files);
    assert!(files.len() > 100, "{} files restored by scan", files.len());
    for f in &files {
        let a = std::fs::read(bed.src.join(f)).unwrap();
        let b = std::fs::read(to.join("tree").join(f)).unwrap();
        assert!(a == b, "{} differs after restore --scan", f.display());
    }
}

/// The regular files under `root` (relative paths).
fn regular_files(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(root.join(rel)).unwrap() {
        let e = e.unwrap();
        let path = rel.join(e.file_name());
        let t = e.file_type().unwrap();
        if t.is_dir() {
            regular_files(root, &path, out);
        } else if t.is_file() {
            out.push(path);
        }
    }
}

#[test]
fn repair_onto_a_new_file_device() {
    let Some(bed) = bed("repair_onto_a_file", 4) else {
        return;
    };
    let d: Vec<&LoopDev> = bed.devs.iter().collect();
    zero(d[3]);
    let new = bed.root.join("new.img");
    let (code, report, err) = scrub(
        &d,
        &[
            "--repair".into(),
            "--replace".into(),
            format!("3={},size=64M", new.display()),
        ],
    );
    assert_eq!(code, 0, "{report}\n{err}");
    assert_eq!(report["repair"]["replacement_complete"], true);
    let mut args = vec!["verify".to_string(), "--json".into()];
    args.extend(dev_args(&d[..3]));
    args.extend(["--dev".to_string(), new.display().to_string()]);
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(json(&out)["rebuild"]["bytes"], 0);
}
