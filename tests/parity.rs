//! `backup --parity M` on real loop devices (issue 19): a restore from
//! any N - M of the N devices is byte-identical; with more missing every
//! intact file is restored and the rest named (exit 3); a damaged parity
//! record is never used to rebuild.

mod common;
#[path = "common/faults.rs"]
mod faults;
#[path = "common/loopdev.rs"]
mod loopdev;

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

/// `n` loop devices of 64 MiB and a fixture tree of about 20 MiB (small
/// files, a large one, a sparse one, links).
fn bed(test: &str, n: usize) -> Option<Bed> {
    if !loop_devices_available(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let src = root.join("src/tree");
    common::make_fixture_tree(&src, 300, 12 << 20);
    let devs = (0..n)
        .map(|i| LoopDev::new(&root.join(format!("d{i}.img")), 64 << 20))
        .collect();
    Some(Bed {
        _dir: dir,
        root,
        src,
        devs,
    })
}

fn backup(bed: &Bed, m: usize) -> Value {
    let mut args = vec![
        "backup".to_string(),
        bed.src.display().to_string(),
        "--parity".into(),
        m.to_string(),
        "--json".into(),
    ];
    args.extend(dev_args(&bed.devs.iter().collect::<Vec<_>>()));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "backup failed: {out}\n{err}");
    let summary = json(&out);
    assert_eq!(summary["parity"]["m"], m as u64, "{summary}");
    assert!(summary["parity"]["records"].as_u64().unwrap() > 0);
    assert_eq!(summary["parity"]["warnings"].as_array().unwrap().len(), 0);
    summary
}

/// Restore from the devices except those at `without`: (exit code, JSON
/// summary, stderr, destination).
fn restore_without(bed: &Bed, without: &[usize], name: &str) -> (i32, Value, String, PathBuf) {
    let given: Vec<&LoopDev> = (0..bed.devs.len())
        .filter(|i| !without.contains(i))
        .map(|i| &bed.devs[i])
        .collect();
    let to = bed.root.join(name);
    let mut args = vec![
        "restore".to_string(),
        "--to".into(),
        to.display().to_string(),
        "--json".into(),
    ];
    args.extend(dev_args(&given));
    let (code, out, err) = run(&args);
    (code, json(&out), err, to)
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
fn parity_1_on_4_devices_restores_without_any_one() {
    let Some(bed) = bed("parity_1_on_4_devices_restores_without_any_one", 4) else {
        return;
    };
    let summary = backup(&bed, 1);
    // All devices healthy: every stripe's parity was computed while the
    // data was written, from the records in memory: nothing read back.
    assert_eq!(summary["parity"]["read_back_bytes"], 0, "{summary}");
    assert_eq!(
        summary["parity"]["inline_stripes"], summary["parity"]["stripes"],
        "{summary}"
    );
    // ... and written among the data records (docs/FORMAT.md 5.1).
    let interleaved = bed.devs.iter().any(|d| {
        let (parity, data) = (parity_records(&d.backing), data_records(&d.backing));
        parity
            .first()
            .zip(data.last())
            .is_some_and(|((p, _), last)| p < last)
    });
    assert!(interleaved, "no parity record among the data records");
    for gone in 0..4 {
        let (code, summary, err, to) = restore_without(&bed, &[gone], &format!("out{gone}"));
        assert_eq!(code, 0, "without device {gone}: {summary}\n{err}");
        let diffs = common::compare_trees(&bed.src, &to.join("tree"));
        assert!(diffs.is_empty(), "without device {gone}: {diffs:?}");
        assert_eq!(missing_devices(&summary), [gone as u64]);
        assert!(
            summary["rebuild"]["bytes"].as_u64().unwrap() > 0,
            "without device {gone}: nothing rebuilt: {summary}"
        );
    }
    // verify too, without device 2.
    let given: Vec<&LoopDev> = [0, 1, 3].iter().map(|&i| &bed.devs[i]).collect();
    let mut args = vec!["verify".to_string(), "--json".into()];
    args.extend(dev_args(&given));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "verify without device 2: {out}\n{err}");
    assert_eq!(missing_devices(&json(&out)), [2]);
}

#[test]
fn parity_1_without_two_devices_restores_the_intact_files_and_names_the_rest() {
    let Some(bed) = bed("parity_1_without_two_devices", 4) else {
        return;
    };
    backup(&bed, 1);
    let (code, summary, err, to) = restore_without(&bed, &[1, 2], "out");
    assert_eq!(code, 3, "{summary}\n{err}");
    let missing = summary["missing"].as_array().unwrap();
    assert!(!missing.is_empty(), "{summary}");
    for m in missing {
        let path = m["path"].as_str().unwrap();
        assert!(
            !to.join(path).exists(),
            "{path} is named missing but was restored"
        );
        for r in m["ranges"].as_array().unwrap() {
            let d = r["device"].as_u64().unwrap();
            assert!(d == 1 || d == 2, "missing range on a given device: {m}");
        }
    }
    // Every file that was restored is byte-identical; the rest are the named ones.
    let diffs = common::compare_trees(&bed.src, &to.join("tree"));
    let named: Vec<String> = missing
        .iter()
        .map(|m| {
            m["path"]
                .as_str()
                .unwrap()
                .trim_start_matches("tree/")
                .to_string()
        })
        .collect();
    for d in &diffs {
        assert!(
            d.ends_with(": missing in b") && named.iter().any(|n| d.starts_with(n.as_str())),
            "a difference that is not a named missing file: {d}\nnamed: {named:?}"
        );
    }
    assert!(summary["files"].as_u64().unwrap() > 0, "nothing restored");
}

#[test]
fn parity_2_on_6_devices_restores_without_any_two() {
    let Some(bed) = bed("parity_2_on_6_devices_restores_without_any_two", 6) else {
        return;
    };
    backup(&bed, 2);
    for a in 0..6 {
        for b in a + 1..6 {
            let (code, summary, err, to) = restore_without(&bed, &[a, b], &format!("out{a}{b}"));
            assert_eq!(code, 0, "without devices {a} and {b}: {summary}\n{err}");
            let diffs = common::compare_trees(&bed.src, &to.join("tree"));
            assert!(diffs.is_empty(), "without devices {a} and {b}: {diffs:?}");
            assert_eq!(missing_devices(&summary), [a as u64, b as u64]);
            std::fs::remove_dir_all(&to).unwrap();
        }
    }
}

/// Offsets of the parity records on a device (read through its backing
/// file): 4 KiB blocks with the record magic and kind 4.
fn parity_records(backing: &Path) -> Vec<(u64, Vec<u8>)> {
    let bytes = std::fs::read(backing).unwrap();
    bytes
        .chunks(4096)
        .enumerate()
        .filter(|(_, b)| &b[..8] == b"PBIORECD" && b[12..16] == 4u32.to_le_bytes())
        .map(|(i, b)| (i as u64 * 4096, b.to_vec()))
        .collect()
}

#[test]
fn a_damaged_parity_record_is_never_used_to_rebuild() {
    let Some(bed) = bed("a_damaged_parity_record_is_never_used_to_rebuild", 4) else {
        return;
    };
    backup(&bed, 1);
    // A parity record on some device, and a data member of its stripe.
    let (holder, (offset, header)) = (0..4)
        .find_map(|d| {
            parity_records(&bed.devs[d].backing)
                .into_iter()
                .next()
                .map(|r| (d, r))
        })
        .expect("no parity record found on any device");
    let data_member = u32::from_le_bytes(header[68..72].try_into().unwrap()) as usize;
    assert_ne!(data_member, holder);
    // Flip one byte of its payload: its header still checks, its CRC not.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&bed.devs[holder].backing)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, offset + 4096 + 17).unwrap();
        b[0] ^= 0x40;
        f.write_all_at(&b, offset + 4096 + 17).unwrap();
        f.sync_all().unwrap();
    }
    let (code, summary, err, to) = restore_without(&bed, &[data_member], "out");
    assert_eq!(
        code, 3,
        "a stripe rebuilt from a damaged parity record: {summary}\n{err}"
    );
    let errors = summary["errors"].to_string();
    assert!(errors.contains("cannot rebuild from parity"), "{summary}");
    assert!(errors.contains("checksum mismatch"), "{summary}");
    // What was restored is identical; what is not was named, not made up.
    for d in common::compare_trees(&bed.src, &to.join("tree")) {
        assert!(d.ends_with(": missing in b"), "wrong content restored: {d}");
    }
    // With every device given, the damaged parity is not needed: all good.
    let (code, summary, err, to) = restore_without(&bed, &[], "all");
    assert_eq!(code, 0, "{summary}\n{err}");
    assert!(common::compare_trees(&bed.src, &to.join("tree")).is_empty());
}

#[test]
fn parity_needs_more_devices_than_m() {
    let Some(bed) = bed("parity_needs_more_devices_than_m", 2) else {
        return;
    };
    let mut args = vec![
        "backup".to_string(),
        bed.src.display().to_string(),
        "--parity".into(),
        "2".into(),
    ];
    args.extend(dev_args(&bed.devs.iter().collect::<Vec<_>>()));
    let (code, out, err) = run(&args);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("--parity 2 needs more than 2 devices"),
        "{err}"
    );
    // A tape cannot hold parity (a restore reads stripe members by offset).
    let tape = format!("vtape:{},size=64M", bed.root.join("tape").display());
    let args: Vec<String> = [
        "backup",
        &bed.src.display().to_string(),
        "--parity",
        "1",
        "--dev",
        &bed.devs[0].arg(),
        "--dev",
        &tape,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (code, out, err) = run(&args);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("parity needs devices read at any offset"),
        "{err}"
    );
}

#[test]
fn a_device_failing_mid_run_leaves_the_survivors_protected() {
    if !faults::faults_available("a_device_failing_mid_run_leaves_the_survivors_protected") {
        return;
    }
    let Some(bed) = bed("a_device_failing_mid_run_leaves_the_survivors_protected", 4) else {
        return;
    };
    // Device 1 of five fails with EIO after 4 MiB; parity is striped over
    // the four survivors (k = 3, M = 1).
    let failing = faults::FailingDevice::new(&bed.root, 64 << 20, Some(4 << 20));
    let mut devs: Vec<String> = bed.devs.iter().map(LoopDev::arg).collect();
    devs.insert(1, failing.arg());
    let mut args = vec![
        "backup".to_string(),
        bed.src.display().to_string(),
        "--parity".into(),
        "1".into(),
        "--json".into(),
    ];
    args.extend(devs.iter().flat_map(|d| ["--dev".to_string(), d.clone()]));
    let (code, out, err) = run(&args);
    assert_eq!(code, 1, "{out}\n{err}");
    let summary = json(&out);
    assert_eq!(summary["devices"][1]["state"], "failed", "{summary}");
    assert_eq!(summary["missing_bytes"], 0, "{summary}");
    assert_eq!(summary["parity"]["warnings"].as_array().unwrap().len(), 0);
    // The stripes that lost a member to the failed device are made again
    // after the data, from the survivors' records read back: usually some
    // (read_back_bytes > 0), but none when the failed device's records
    // were all in stripes still open when it failed (it leaves them
    // before they close: 1 run in 30 here, and once in CI). What the
    // issue asks is the outcome, asserted below.
    // The survivors less any one of them restore the tree whole.
    for gone in 0..4 {
        let (code, summary, err, to) = restore_without(&bed, &[gone], &format!("out{gone}"));
        assert_eq!(code, 0, "survivors without {gone}: {summary}\n{err}");
        let diffs = common::compare_trees(&bed.src, &to.join("tree"));
        assert!(diffs.is_empty(), "survivors without {gone}: {diffs:?}");
        // The failed device and the one left out are both missing.
        assert_eq!(missing_devices(&summary).len(), 2, "{summary}");
    }
}

/// Offsets of the data records (kind 1) on a device, read through its
/// backing file.
fn data_records(backing: &Path) -> Vec<u64> {
    let bytes = std::fs::read(backing).unwrap();
    bytes
        .chunks(4096)
        .enumerate()
        .filter(|(_, b)| &b[..8] == b"PBIORECD" && b[12..16] == 1u32.to_le_bytes())
        .map(|(i, _)| i as u64 * 4096)
        .collect()
}

/// Garbage (a fixed pseudo-random sequence) over the middle half of the
/// data records of device `d`, like `dd if=/dev/urandom conv=notrunc`:
/// the byte range overwritten.
fn garble_data_records(bed: &Bed, d: usize, seed: u64) -> (u64, u64) {
    use std::os::unix::fs::FileExt;
    let records = data_records(&bed.devs[d].backing);
    assert!(records.len() >= 8, "too few data records on device {d}");
    let (start, end) = (records[records.len() / 4], records[records.len() * 3 / 4]);
    let mut x = seed | 1;
    let garbage: Vec<u8> = (start..end)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&bed.devs[d].backing)
        .unwrap();
    f.write_all_at(&garbage, start).unwrap();
    f.sync_all().unwrap();
    (start, end)
}

/// Garbage over the header blocks of two data records of one stripe, on
/// two devices: the stripe is chosen from what the set holds (the parity
/// records' members and data entries), not from where records are assumed
/// to lie, because online stripes are formed in arrival order and which
/// device's records share a stripe varies between runs. The stripe chosen
/// is the middle one (by `stripe_id`) of those with at least two data
/// members: (device, media offset) of each record garbled.
fn garble_two_members_of_a_stripe(bed: &Bed) -> [(usize, u64); 2] {
    let members = stripe_with_two_members(bed);
    let mut garbled = [(0, 0); 2];
    for (slot, &(d, sequence)) in garbled.iter_mut().zip(&members[..2]) {
        *slot = (d, garble_record(bed, d, sequence));
    }
    garbled
}

/// The data members (device, sequence) of the middle stripe (by
/// `stripe_id`) of those with at least two, from the parity records.
fn stripe_with_two_members(bed: &Bed) -> Vec<(usize, u64)> {
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    // stripe_id -> (data member devices, their sequences), from the parity
    // records of every device (M = 1: one parity record per stripe).
    let mut stripes: Vec<(u64, Vec<(usize, u64)>)> = bed
        .devs
        .iter()
        .flat_map(|d| parity_records(&d.backing))
        .map(|(_, h)| {
            let (k, m) = (h[64] as usize, h[65] as usize);
            let entries = 68 + 4 * (k + m);
            let members = (0..k)
                .map(|i| {
                    (
                        u32_at(&h, 68 + 4 * i) as usize,
                        u64_at(&h, entries + 32 * i),
                    )
                })
                .collect();
            (u64_at(&h, 48), members)
        })
        .filter(|(_, members): &(u64, Vec<_>)| members.len() >= 2)
        .collect();
    stripes.sort_by_key(|(id, _)| *id);
    assert!(!stripes.is_empty(), "no stripe with two data members");
    stripes.swap_remove(stripes.len() / 2).1
}

/// Garbage over the header block of data record `sequence` of device
/// `d`: its media offset.
fn garble_record(bed: &Bed, d: usize, sequence: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let at = data_records(&bed.devs[d].backing)
        .into_iter()
        .find(|&o| {
            let mut h = [0u8; 48];
            let f = std::fs::File::open(&bed.devs[d].backing).unwrap();
            f.read_exact_at(&mut h, o).unwrap();
            u64_at(&h, 40) == sequence
        })
        .unwrap_or_else(|| panic!("no record {sequence} on device {d}"));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&bed.devs[d].backing)
        .unwrap();
    f.write_all_at(&[0xa5; 4096], at).unwrap();
    f.sync_all().unwrap();
    at
}

/// Under `--parity 1`, a stripe with one member damaged (device a) and
/// another on a device not given (device b): the file of b's record
/// cannot be rebuilt. `restore --only` it exits 3 naming it in `missing`
/// with its range on device b (as a file with too many devices missing
/// is), not as a digest mismatch.
#[test]
fn a_damaged_member_and_a_missing_device_name_the_missing_ranges() {
    let Some(bed) = bed("a_damaged_member_and_a_missing_device", 4) else {
        return;
    };
    backup(&bed, 1);
    let members = stripe_with_two_members(&bed);
    let ((a, sequence), (b, _)) = (members[0], members[1]);
    garble_record(&bed, a, sequence);
    let (code, summary, err, _) = restore_without(&bed, &[b], "all");
    assert_eq!(code, 3, "{summary}\n{err}");
    let missing = summary["missing"].as_array().unwrap();
    let on_b = |m: &Value| {
        m["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["device"] == b as u64 && r["length"].as_u64().unwrap() > 0)
    };
    let named = missing
        .iter()
        .find(|m| on_b(m))
        .unwrap_or_else(|| panic!("no file named with a range on device {b}: {summary}"));
    let path = named["path"].as_str().unwrap().to_string();
    // The same file alone.
    let given: Vec<&LoopDev> = (0..4).filter(|&i| i != b).map(|i| &bed.devs[i]).collect();
    let to = bed.root.join("only");
    let mut args = vec![
        "restore".to_string(),
        "--to".into(),
        to.display().to_string(),
        "--json".into(),
        "--only".into(),
        path.clone(),
    ];
    args.extend(dev_args(&given));
    let (code, out, err) = run(&args);
    assert_eq!(code, 3, "{out}\n{err}");
    let summary = json(&out);
    let missing = summary["missing"].as_array().unwrap();
    assert!(
        missing
            .iter()
            .any(|m| m["path"] == path.as_str() && on_b(m)),
        "{path} not named with its range on device {b}: {summary}"
    );
    assert!(
        !summary["errors"]
            .to_string()
            .contains("content digest mismatch"),
        "{summary}"
    );
    assert!(!to.join(&path).exists(), "{path} restored");
}

#[test]
fn damaged_data_records_on_a_given_device_are_rebuilt_from_parity() {
    let Some(bed) = bed("damaged_data_records_are_rebuilt", 4) else {
        return;
    };
    backup(&bed, 1);
    garble_data_records(&bed, 2, 0x9e37_79b9_7f4a_7c15);
    // Every device given: device 2's damaged records count as missing and
    // are rebuilt from the other members of their stripes.
    let (code, summary, err, to) = restore_without(&bed, &[], "out");
    assert_eq!(code, 0, "{summary}\n{err}");
    assert!(
        common::compare_trees(&bed.src, &to.join("tree")).is_empty(),
        "{summary}"
    );
    assert!(missing_devices(&summary).is_empty(), "{summary}");
    assert!(
        summary["rebuild"]["bytes"].as_u64().unwrap() > 0,
        "{summary}"
    );
    let damaged = summary["rebuild"]["damaged"].as_array().unwrap();
    assert!(!damaged.is_empty(), "{summary}");
    for d in damaged {
        let d = d.as_str().unwrap();
        assert!(
            d.contains(&bed.devs[2].arg()) && d.contains("damaged record"),
            "a damaged record not on device 2: {d}"
        );
    }
    // verify too.
    let mut args = vec!["verify".to_string(), "--json".into()];
    args.extend(dev_args(&bed.devs.iter().collect::<Vec<_>>()));
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "verify: {out}\n{err}");
    let summary = json(&out);
    assert!(
        summary["rebuild"]["bytes"].as_u64().unwrap() > 0,
        "{summary}"
    );
}

#[test]
fn damage_on_two_devices_of_a_stripe_under_parity_1_names_the_files() {
    let Some(bed) = bed("damage_on_two_devices_of_a_stripe", 4) else {
        return;
    };
    backup(&bed, 1);
    let garbled = garble_two_members_of_a_stripe(&bed);
    let (code, summary, err, to) = restore_without(&bed, &[], "out");
    assert_eq!(code, 3, "garbled {garbled:?}: {summary}\n{err}");
    let errors = summary["errors"].to_string();
    assert!(errors.contains("cannot rebuild from parity"), "{summary}");
    // The records not rebuilt are named with their file and range.
    assert!(errors.contains("is not rebuilt"), "{summary}");
    assert!(errors.contains("at file offset"), "{summary}");
    // Every file restored is identical; every other one is named.
    let diffs = common::compare_trees(&bed.src, &to.join("tree"));
    assert!(!diffs.is_empty(), "{summary}");
    for d in &diffs {
        let (path, why) = d.split_once(": ").unwrap();
        assert_eq!(why, "missing in b", "wrong content restored: {d}");
        assert!(
            errors.contains(&format!("tree/{path}: content digest mismatch")),
            "{path} not named: {summary}"
        );
    }
    assert!(summary["files"].as_u64().unwrap() > 0, "nothing restored");
}
