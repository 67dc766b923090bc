//! `backup --parity` with `--compress` and `--encrypt` on real loop devices
//! (issues 19 and 22): parity is computed over the records as stored
//! (docs/FORMAT.md 5.1), so a restore without any one of four devices is
//! byte-identical, scrub sees a flipped byte in a parity record, and
//! `scrub --repair --replace` rebuilds a wiped device of an encrypted,
//! compressed set onto a new one.

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
    /// Arguments every reader of the set needs (the key file).
    key: Vec<String>,
}

/// `n` loop devices of 64 MiB, a fixture tree of about 20 MiB (text that
/// compresses and random bytes that do not), backed up with `--parity 1`
/// on the first four with `extra` arguments (`KEY` stands for a new key
/// file, which readers then get too).
fn bed(test: &str, n: usize, extra: &[&str]) -> Option<Bed> {
    if !loop_devices_available(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let src = root.join("src/tree");
    common::make_fixture_tree(&src, 300, 12 << 20);
    // Compressible files too: zstd must shrink some records.
    let text = "pbio parity over stored records\n".repeat(40_000);
    for i in 0..4 {
        std::fs::write(src.join(format!("text{i}.txt")), &text).unwrap();
    }
    let devs: Vec<LoopDev> = (0..n)
        .map(|i| LoopDev::new(&root.join(format!("d{i}.img")), 64 << 20))
        .collect();
    let key_path = root.join("key");
    let mut key = Vec::new();
    let mut args = vec![
        "backup".to_string(),
        src.display().to_string(),
        "--parity".into(),
        "1".into(),
        "--json".into(),
    ];
    for a in extra {
        if *a == "KEY" {
            let (code, out, err) = pbio(&["key", "new", key_path.to_str().unwrap()]);
            assert_eq!(code, 0, "{out}\n{err}");
            key = vec!["--key-file".to_string(), key_path.display().to_string()];
            args.push(key_path.display().to_string());
        } else {
            args.push(a.to_string());
        }
    }
    args.extend(dev_args(&devs[..4].iter().collect::<Vec<_>>()));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "backup failed: {out}\n{err}");
    let summary = json(&out);
    assert!(
        summary["parity"]["records"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(
        summary["parity"]["warnings"].as_array().unwrap().len(),
        0,
        "{summary}"
    );
    // Compressed or sealed records' parity, too, is computed from the
    // records as stored while they are written: nothing read back.
    assert_eq!(summary["parity"]["read_back_bytes"], 0, "{summary}");
    Some(Bed {
        _dir: dir,
        root,
        src,
        devs,
        key,
    })
}

/// Restore from the first four devices but `gone`: byte-identical, and
/// the summary says what was rebuilt.
fn restores_without_each(bed: &Bed) {
    for gone in 0..4 {
        let given: Vec<&LoopDev> = (0..4)
            .filter(|&i| i != gone)
            .map(|i| &bed.devs[i])
            .collect();
        let to = bed.root.join(format!("out{gone}"));
        let mut args = vec![
            "restore".to_string(),
            "--to".into(),
            to.display().to_string(),
            "--json".into(),
        ];
        args.extend(bed.key.iter().cloned());
        args.extend(dev_args(&given));
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "restore without device {gone}: {out}\n{err}");
        let summary = json(&out);
        let diffs = common::compare_trees(&bed.src, &to.join("tree"));
        assert!(diffs.is_empty(), "without device {gone}: {diffs:?}");
        assert_eq!(
            summary["rebuild"]["missing_devices"][0]["index"], gone as u64,
            "{summary}"
        );
        assert!(
            summary["rebuild"]["bytes"].as_u64().unwrap() > 0,
            "without device {gone}: nothing rebuilt: {summary}"
        );
        std::fs::remove_dir_all(&to).unwrap();
    }
}

/// `pbio scrub --json` over `devs` plus the key and `extra`.
fn scrub(bed: &Bed, devs: &[&LoopDev], extra: &[String]) -> (i32, Value, String) {
    let mut args = vec!["scrub".to_string(), "--json".into()];
    args.extend(bed.key.iter().cloned());
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

/// Offsets of the records of `kind` (1 data, 4 parity) on a device.
fn records(backing: &Path, kind: u32) -> Vec<u64> {
    let bytes = std::fs::read(backing).unwrap();
    bytes
        .chunks(4096)
        .enumerate()
        .filter(|(_, b)| &b[..8] == b"PBIORECD" && b[12..16] == kind.to_le_bytes())
        .map(|(i, _)| i as u64 * 4096)
        .collect()
}

/// Flip one byte of the first parity record found (in its payload, its
/// header intact); scrub then reports exactly that record, rebuildable.
fn scrub_sees_a_flipped_parity_byte(bed: &Bed) {
    let d: Vec<&LoopDev> = bed.devs[..4].iter().collect();
    let (code, report, err) = scrub(bed, &d, &[]);
    assert_eq!(code, 0, "scrub of an intact set: {report}\n{err}");
    assert_eq!(report["whole"], true, "{report}");
    let (holder, offset) = (0..4)
        .find_map(|i| records(&bed.devs[i].backing, 4).first().map(|&o| (i, o)))
        .expect("no parity record on any device");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&bed.devs[holder].backing)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset + 4096 + 4321).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, offset + 4096 + 4321).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let (code, report, err) = scrub(bed, &d, &[]);
    assert_eq!(code, 1, "a flipped parity byte: {report}\n{err}");
    assert_eq!(report["whole"], false, "{report}");
    let bad = report["bad"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{report}");
    assert_eq!(bad[0]["device"], holder as u64, "{report}");
    assert_eq!(bad[0]["offset"], offset, "{report}");
    assert_eq!(bad[0]["kind"], "parity", "{report}");
    assert_eq!(bad[0]["rebuildable"], true, "{report}");
}

#[test]
fn parity_with_compress_restores_without_any_one_device() {
    let Some(bed) = bed("parity_with_compress", 4, &["--compress", "zstd"]) else {
        return;
    };
    // Some records are stored compressed (codec at 4084 non-zero).
    let compressed = (0..4)
        .flat_map(|i| {
            let bytes = std::fs::read(&bed.devs[i].backing).unwrap();
            records(&bed.devs[i].backing, 1)
                .into_iter()
                .map(move |o| {
                    u32::from_le_bytes(bytes[o as usize + 4084..][..4].try_into().unwrap())
                })
                .collect::<Vec<_>>()
        })
        .filter(|&c| c != 0)
        .count();
    assert!(compressed > 0, "no record was stored compressed");
    restores_without_each(&bed);
    scrub_sees_a_flipped_parity_byte(&bed);
}

#[test]
fn parity_with_encrypt_restores_without_any_one_device() {
    let Some(bed) = bed(
        "parity_with_encrypt",
        4,
        &["--encrypt", "--key-file", "KEY"],
    ) else {
        return;
    };
    // Without the key, a restore from three devices refuses (exit 2)
    // before rebuilding anything.
    let to = bed.root.join("nokey");
    let mut args = vec![
        "restore".to_string(),
        "--to".into(),
        to.display().to_string(),
    ];
    args.extend(dev_args(&bed.devs[1..4].iter().collect::<Vec<_>>()));
    let (code, out, err) = run(&args);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("encrypted"), "{err}");
    restores_without_each(&bed);
    scrub_sees_a_flipped_parity_byte(&bed);
}

#[test]
fn repair_rebuilds_a_wiped_device_of_an_encrypted_compressed_set() {
    let Some(bed) = bed(
        "parity_stored_repair",
        5,
        &["--encrypt", "--key-file", "KEY", "--compress", "zstd:1"],
    ) else {
        return;
    };
    let d = &bed.devs;
    let held = records(&d[2].backing, 1).len() + records(&d[2].backing, 4).len();
    assert!(held > 0);
    // Device 2 wiped (through the loop device, as tests/scrub.rs does).
    let out = std::process::Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", d[2].arg()),
            "bs=1M",
            "oflag=direct",
            "status=none",
        ])
        .output()
        .unwrap();
    assert!(
        std::fs::read(&d[2].backing)
            .unwrap()
            .iter()
            .all(|&b| b == 0),
        "dd did not wipe {}: {}",
        d[2].arg(),
        String::from_utf8_lossy(&out.stderr)
    );
    let originals: Vec<&LoopDev> = d[..4].iter().collect();
    let (code, report, err) = scrub(
        &bed,
        &originals,
        &[
            "--repair".into(),
            "--replace".into(),
            format!("2={}", d[4].arg()),
        ],
    );
    assert_eq!(code, 0, "{report}\n{err}");
    assert_eq!(report["repair"]["replacement_complete"], true, "{report}");
    assert_eq!(report["repair"]["records_written"], held as u64, "{report}");
    // The rebuilt records are the ones written: sealed data records keep
    // their seal (no file name in clear on the new device).
    let image = std::fs::read(&d[4].backing).unwrap();
    assert!(
        !image
            .windows(b"pbio parity over stored".len())
            .any(|w| w == b"pbio parity over stored"),
        "plaintext on the rebuilt device"
    );
    // With the new device in place of device 2: whole, and it survives
    // the loss of another original device.
    let with_new: Vec<&LoopDev> = vec![&d[0], &d[1], &d[4], &d[3]];
    let (code, report, err) = scrub(&bed, &with_new, &[]);
    assert_eq!(code, 0, "{report}\n{err}");
    assert_eq!(report["whole"], true, "{report}");
    let to = bed.root.join("out");
    let mut args = vec![
        "restore".to_string(),
        "--to".into(),
        to.display().to_string(),
        "--json".into(),
    ];
    args.extend(bed.key.iter().cloned());
    args.extend(dev_args(&[&d[1], &d[4], &d[3]]));
    let (code, out, err) = run(&args);
    assert_eq!(
        code, 0,
        "restore with the new device, without 0: {out}\n{err}"
    );
    let diffs = common::compare_trees(&bed.src, &to.join("tree"));
    assert!(diffs.is_empty(), "{diffs:?}");
}
