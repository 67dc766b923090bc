//! Tapes (issue 7): emulated tape drives (`vtape:DIR`, the st driver's
//! semantics) together with real loop devices. Round trips, a tape that
//! reaches early warning mid-set, `restore --scan` from tapes, the tape
//! layout on the cartridge, and the st ioctl encoding.

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::path::{Path, PathBuf};

use loopdev::{loop_devices_available, pbio, LoopDev};
use serde_json::Value;

fn run(args: &[String]) -> (i32, String, String) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    pbio(&refs)
}

fn last_json(out: &str) -> Value {
    serde_json::from_str(out.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("bad JSON {e}: {out}"))
}

fn with_devs(mut args: Vec<String>, devs: &[String]) -> Vec<String> {
    for d in devs {
        args.extend(["--dev".to_string(), d.clone()]);
    }
    args
}

fn backup(src: &Path, devs: &[String], extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec![
        "backup".to_string(),
        src.display().to_string(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let (code, out, err) = run(&with_devs(args, devs));
    // A refused backup (exit 2) prints no summary.
    let summary = if code == 2 {
        Value::Null
    } else {
        last_json(&out)
    };
    (code, summary, err)
}

fn restore(devs: &[String], to: &Path) -> (i32, Value, String) {
    let args = vec![
        "restore".to_string(),
        "--json".into(),
        "--to".into(),
        to.display().to_string(),
    ];
    let (code, out, err) = run(&with_devs(args, devs));
    (code, last_json(&out), err)
}

fn verify(devs: &[String]) -> (i32, String, String) {
    run(&with_devs(vec!["verify".to_string()], devs))
}

fn list(dev: &str) -> (i32, Value, String) {
    let (code, out, err) = pbio(&["list", "--dev", dev, "--json"]);
    let v = if code == 0 {
        last_json(&out)
    } else {
        Value::Null
    };
    (code, v, err)
}

fn assert_identical(src: &Path, restored: &Path) {
    let diffs = common::compare_trees(src, restored);
    assert!(
        diffs.is_empty(),
        "restored tree differs:\n{}",
        diffs.join("\n")
    );
}

fn tree(root: &Path, small_files: usize, large_bytes: u64) -> PathBuf {
    let src = root.join("src/tree");
    std::fs::create_dir_all(&src).unwrap();
    common::make_fixture_tree(&src, small_files, large_bytes);
    src
}

fn vtape(dir: &Path, name: &str, opts: &str) -> (String, PathBuf) {
    let d = dir.join(name);
    (format!("vtape:{}{opts}", d.display()), d)
}

/// One object of an emulated cartridge, from its index (docs in
/// src/device/vtape.rs): a block of `bytes` at `offset` of vtape.data, or
/// a filemark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Object {
    offset: u64,
    bytes: u32,
    filemark: bool,
}

fn cartridge(dir: &Path) -> Vec<Object> {
    let index = std::fs::read(dir.join("vtape.index")).unwrap();
    index
        .chunks_exact(16)
        .map(|e| {
            let kind = u32::from_le_bytes(e[12..16].try_into().unwrap());
            assert!(kind == 1 || kind == 2, "index entry kind {kind}");
            Object {
                offset: u64::from_le_bytes(e[..8].try_into().unwrap()),
                bytes: u32::from_le_bytes(e[8..12].try_into().unwrap()),
                filemark: kind == 2,
            }
        })
        .collect()
}

/// The layout docs/FORMAT.md gives for a tape: the 4096-byte label block,
/// the data records one per block, a filemark, the catalog records and
/// the End record, a filemark; every block at most `block_max` bytes.
/// Returns (data blocks, catalog blocks including the End record).
fn assert_tape_layout(dir: &Path, block_max: u32) -> (usize, usize) {
    let objects = cartridge(dir);
    let marks: Vec<usize> = objects
        .iter()
        .enumerate()
        .filter(|(_, o)| o.filemark)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(marks.len(), 2, "two tape files, two filemarks: {marks:?}");
    assert_eq!(
        *marks.last().unwrap(),
        objects.len() - 1,
        "ends with a filemark"
    );
    assert!(
        !objects[0].filemark && objects[0].bytes == 4096,
        "label block"
    );
    for o in objects.iter().filter(|o| !o.filemark) {
        assert!(o.bytes <= block_max, "block of {} bytes", o.bytes);
        assert_eq!(o.bytes % 4096, 0, "a record image is whole 4 KiB blocks");
    }
    let data = marks[0] - 1;
    let catalog = marks[1] - marks[0] - 1;
    assert!(catalog >= 2, "catalog records and the End record");
    // The End record is a header alone.
    assert_eq!(objects[marks[1] - 1].bytes, 4096);
    (data, catalog)
}

fn segments_on(catalog: &Value, device: u64) -> Vec<&Value> {
    catalog["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["device"] == device)
        .collect()
}

#[test]
fn one_tape_and_one_loop_device() {
    if !loop_devices_available("one_tape_and_one_loop_device") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 800, 40 << 20);
    let (tape, tape_dir) = vtape(dir.path(), "tape0", ",size=256M");
    let disk = LoopDev::new(&dir.path().join("l0.img"), 128 << 20);
    let devs = vec![tape.clone(), disk.arg()];
    let (code, summary, err) = backup(&src, &devs, &[]);
    assert_eq!(code, 0, "{summary}\n{err}");
    for d in summary["devices"].as_array().unwrap() {
        assert_eq!(d["state"], "complete", "{d}");
        assert!(d["payload_bytes"].as_u64().unwrap() > 0, "{d}");
        assert_eq!(d["payload_bytes_zero_copy"], d["payload_bytes"], "{d}");
    }
    let t = &summary["devices"][0];
    assert!(t["underruns"].is_u64(), "underruns are reported: {t}");
    let (data_blocks, _) = assert_tape_layout(&tape_dir, 1 << 20);
    assert_eq!(data_blocks as u64, t["records"].as_u64().unwrap());
    // The tape's data_end is the object number of the filemark after its data.
    assert_eq!(t["data_end"].as_u64().unwrap(), data_blocks as u64 + 1);

    // The catalog from the tape alone is the set's catalog.
    let (code, from_tape, err) = list(&tape);
    assert_eq!(code, 0, "list from the tape: {err}");
    let (code, from_disk, err) = list(&disk.arg());
    assert_eq!(code, 0, "{err}");
    assert_eq!(from_tape["files"], from_disk["files"]);
    assert_eq!(from_tape["segments"], from_disk["segments"]);
    assert!(!segments_on(&from_tape, 0).is_empty());

    for (name, order) in [
        ("fwd", devs.clone()),
        ("rev", vec![disk.arg(), tape.clone()]),
    ] {
        let out = dir.path().join(format!("restore-{name}"));
        let (code, report, err) = restore(&order, &out);
        assert_eq!(code, 0, "restore {name}: {report}\n{err}");
        assert_identical(&src, &out.join("tree"));
    }
    let (code, out, err) = verify(&devs);
    assert_eq!(code, 0, "verify: {out}\n{err}");
}

#[test]
fn two_tapes_and_two_loop_devices() {
    if !loop_devices_available("two_tapes_and_two_loop_devices") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 1500, 64 << 20);
    // One tape at a simulated speed, one as fast as the host.
    let (tape0, tape0_dir) = vtape(dir.path(), "tape0", ",size=128M,rate=400M");
    let (tape1, tape1_dir) = vtape(dir.path(), "tape1", ",size=128M");
    let disks: Vec<LoopDev> = (0..2)
        .map(|i| LoopDev::new(&dir.path().join(format!("l{i}.img")), 96 << 20))
        .collect();
    let devs = vec![tape0.clone(), disks[0].arg(), tape1.clone(), disks[1].arg()];
    let (code, summary, err) = backup(&src, &devs, &["--strategy", "split"]);
    assert_eq!(code, 0, "{summary}\n{err}");
    for d in summary["devices"].as_array().unwrap() {
        assert_eq!(d["state"], "complete", "{d}");
        assert!(d["payload_bytes"].as_u64().unwrap() > 0, "{d}");
    }
    assert_tape_layout(&tape0_dir, 1 << 20);
    assert_tape_layout(&tape1_dir, 1 << 20);
    // The large file is split over the devices, tapes among them.
    let (code, catalog, err) = list(&tape1);
    assert_eq!(code, 0, "{err}");
    let large: Vec<u64> = catalog["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["path"] == "tree/large.bin")
        .map(|s| s["device"].as_u64().unwrap())
        .collect();
    assert!(
        large.len() > 1 && large.iter().any(|&d| d == 0 || d == 2),
        "large.bin segments on devices {large:?}"
    );
    let out = dir.path().join("restore");
    let (code, report, err) = restore(&devs, &out);
    assert_eq!(code, 0, "{report}\n{err}");
    assert_identical(&src, &out.join("tree"));
    let (code, out, err) = verify(&devs);
    assert_eq!(code, 0, "verify: {out}\n{err}");
    // The tapes alone restore what they hold and name the rest.
    let (code, report, _) = restore(&[tape0.clone(), tape1.clone()], &dir.path().join("tapes"));
    assert_eq!(code, 3, "{report}");
    assert!(!report["missing"].as_array().unwrap().is_empty());
}

/// A tape reaches early warning before its share is written: the set
/// completes (exit 0), the tape is "full" with what reached it, its
/// catalog lies in the zone after early warning, the rest of its work
/// went to the loop devices, and the restore is byte-identical.
#[test]
fn a_tape_that_hits_early_warning_mid_set() {
    if !loop_devices_available("a_tape_that_hits_early_warning_mid_set") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 800, 90 << 20);
    // Planned as 32 MiB; early warning 8 MiB before the end, at 24 MiB.
    let size: u64 = 32 << 20;
    let ew: u64 = 8 << 20;
    let (tape, tape_dir) = vtape(dir.path(), "tape", &format!(",size={size},ew={ew}"));
    let disks: Vec<LoopDev> = (0..2)
        .map(|i| LoopDev::new(&dir.path().join(format!("l{i}.img")), 96 << 20))
        .collect();
    let devs = vec![disks[0].arg(), tape.clone(), disks[1].arg()];
    let (code, summary, err) = backup(&src, &devs, &[]);
    assert_eq!(code, 0, "the set completes:\n{summary}\n{err}");
    let states: Vec<&str> = summary["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["complete", "full", "complete"], "{summary}");
    let t = &summary["devices"][1];
    assert!(t["redirected_bytes"].as_u64().unwrap() > 0, "{t}");
    assert!(t["payload_bytes"].as_u64().unwrap() > 16 << 20, "{t}");
    assert!(t["catalog_end"].is_u64(), "catalog written: {t}");
    assert!(
        t["error"].as_str().unwrap().contains("No space left"),
        "{t}"
    );
    assert!(err.contains("full"), "{err}");

    // On the cartridge: the data ends just past early warning, the
    // catalog file lies in the zone after it.
    assert_tape_layout(&tape_dir, 1 << 20);
    let objects = cartridge(&tape_dir);
    let first_mark = objects.iter().position(|o| o.filemark).unwrap();
    let early_warning_at = size - ew;
    assert!(objects[first_mark].offset > early_warning_at, "{objects:?}");
    assert!(objects[first_mark - 1].offset < early_warning_at);

    // The catalog is on the tape: list works from the tape alone, and
    // says the tape is full and the rest went to the loop devices.
    let (code, catalog, err) = list(&tape);
    assert_eq!(code, 0, "list from the tape alone: {err}");
    assert_eq!(
        catalog["files"].as_array().unwrap().len(),
        summary["files"].as_u64().unwrap() as usize
    );
    let on_tape: u64 = segments_on(&catalog, 1)
        .iter()
        .map(|s| s["length"].as_u64().unwrap())
        .sum();
    // Segment lengths include holes of sparse files, which are not stored.
    assert!(
        on_tape >= t["payload_bytes"].as_u64().unwrap(),
        "{on_tape} {t}"
    );
    let devices = &catalog["devices"];
    assert_eq!(devices.as_array().unwrap().len(), 3);

    let out = dir.path().join("restore");
    let (code, report, err) = restore(&devs, &out);
    assert_eq!(code, 0, "{report}\n{err}");
    assert_identical(&src, &out.join("tree"));
    let (code, out, err) = verify(&devs);
    assert_eq!(code, 0, "verify: {out}\n{err}");
}

/// Backup to tapes alone (no root needed), then `scan` and `restore
/// --scan` read the records sequentially: every regular file comes back
/// byte-identical from the records alone, also once the catalog file of a
/// tape is lost.
#[test]
fn restore_scan_from_tapes() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 300, 12 << 20);
    let (tape0, tape0_dir) = vtape(dir.path(), "tape0", ",size=64M");
    let (tape1, _) = vtape(dir.path(), "tape1", ",size=64M");
    let devs = vec![tape0.clone(), tape1.clone()];
    let (code, summary, err) = backup(&src, &devs, &["--tape-buffer", "8"]);
    assert_eq!(code, 0, "{summary}\n{err}");

    // scan: every data record of tape 0, then the End record.
    let (code, out, err) = pbio(&["scan", "--dev", &tape0, "--json"]);
    assert_eq!(code, 0, "{err}");
    let summary_scan = last_json(&out);
    assert_eq!(
        summary_scan["data_records"], summary["devices"][0]["records"],
        "{summary_scan}"
    );
    assert_eq!(summary_scan["end_found"], true);
    // Positions are logical object numbers: the first record is object 1.
    let first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["position"], 1);

    let check_scan_restore = |to: &Path| {
        let args = vec![
            "restore".to_string(),
            "--scan".into(),
            "--json".into(),
            "--to".into(),
            to.display().to_string(),
        ];
        let (code, out, err) = run(&with_devs(args, &devs));
        assert_eq!(code, 0, "restore --scan: {out}\n{err}");
        let report = last_json(&out);
        let walked = pbio::source::walk(std::slice::from_ref(&src)).unwrap();
        let mut expected = 0;
        for e in &walked.entries {
            if let pbio::source::EntryKind::File { size_bytes, .. } = e.kind {
                if size_bytes == 0 {
                    continue; // no records: a scan does not recover empty files
                }
                let source = e.source();
                let rel = source.strip_prefix(src.parent().unwrap()).unwrap();
                let restored = to.join(rel);
                assert!(
                    std::fs::read(&restored).ok() == Some(std::fs::read(e.source()).unwrap()),
                    "{} not restored byte-identical",
                    rel.display()
                );
                expected += 1;
            }
        }
        assert_eq!(report["files"].as_u64().unwrap(), expected, "{report}");
    };
    check_scan_restore(&dir.path().join("scan-1"));

    // Lose tape 0's catalog file: cut the cartridge after its data file.
    let objects = cartridge(&tape0_dir);
    let first_mark = objects.iter().position(|o| o.filemark).unwrap();
    let index = std::fs::OpenOptions::new()
        .write(true)
        .open(tape0_dir.join("vtape.index"))
        .unwrap();
    index.set_len(16 * (first_mark as u64 + 1)).unwrap();
    drop(index);
    let (code, _, err) = pbio(&["list", "--dev", &tape0]);
    assert_eq!(code, 3, "no catalog on tape 0 any more: {err}");
    assert!(
        err.contains("End record") || err.contains("tape file 1"),
        "{err}"
    );
    let (code, out, err) = pbio(&["scan", "--dev", &tape0, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(last_json(&out)["end_found"], false);
    check_scan_restore(&dir.path().join("scan-2"));
}

/// The smallest buffer and a simulated drive speed (writes held until the
/// drive has taken them): one record at a time still streams and the set
/// restores; underruns are counted (every record, with one slot).
#[test]
fn one_record_buffer_at_a_simulated_speed() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 100, 6 << 20);
    let (tape, _) = vtape(dir.path(), "tape", ",size=64M,rate=256M");
    let devs = vec![tape.clone()];
    let (code, summary, err) = backup(&src, &devs, &["--tape-buffer", "1"]);
    assert_eq!(code, 0, "{summary}\n{err}");
    let t = &summary["devices"][0];
    let records = t["records"].as_u64().unwrap();
    assert!(records > 100, "{t}");
    // With one slot, the next record is read only after the last write:
    // the drive waits for it every time.
    assert_eq!(t["underruns"].as_u64().unwrap(), records - 1, "{t}");
    let out = dir.path().join("restore");
    let (code, report, err) = restore(&devs, &out);
    assert_eq!(code, 0, "{report}\n{err}");
    assert_identical(&src, &out.join("tree"));
}

/// The overwrite guard reads a tape's first block: a tape holding a pbio
/// set is refused unless that set is given with --overwrite, one holding
/// another program's data unless --force; a new cartridge is written.
#[test]
fn the_guard_reads_a_tapes_first_block() {
    use pbio::device::{vtape::VirtualTape, write_block, DeviceSpec, Mode, TapeOp};
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), 20, 1 << 20);
    let (tape, tape_dir) = vtape(dir.path(), "tape", ",size=32M");
    let (code, summary, err) = backup(&src, std::slice::from_ref(&tape), &[]);
    assert_eq!(code, 0, "{summary}\n{err}");
    let set = summary["set_id"].as_str().unwrap().to_string();
    let (code, _, err) = backup(&src, std::slice::from_ref(&tape), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("holds pbio set") && err.contains(&set),
        "{err}"
    );
    let (code, summary, err) = backup(&src, std::slice::from_ref(&tape), &["--overwrite", &set]);
    assert_eq!(code, 0, "{summary}\n{err}");

    // Another program's archive on the cartridge.
    {
        let spec = DeviceSpec::parse(&tape).unwrap();
        let t = VirtualTape::open(&spec, Mode::Write).unwrap();
        use pbio::device::Device;
        t.tape_op(TapeOp::Rewind).unwrap();
        write_block(&t, &[0x55u8; 10240]).unwrap();
        t.tape_op(TapeOp::WriteFilemarks(1)).unwrap();
    }
    let (code, _, err) = backup(&src, std::slice::from_ref(&tape), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a pbio set"), "{err}");
    let (code, summary, err) = backup(&src, std::slice::from_ref(&tape), &["--force"]);
    assert_eq!(code, 0, "{summary}\n{err}");
    assert!(tape_dir.join("vtape.index").exists());
}

/// The st request codes and structures, as linux/mtio.h gives them on
/// x86_64 (also unit-tested next to the code).
#[test]
#[cfg(target_arch = "x86_64")]
fn st_ioctl_encoding() {
    use pbio::device::tape::{op, MtGet, MtOp, MTIOCGET, MTIOCPOS, MTIOCTOP};
    assert_eq!(MTIOCTOP, 0x4008_6d01);
    assert_eq!(MTIOCGET, 0x8030_6d02);
    assert_eq!(MTIOCPOS, 0x8008_6d03);
    assert_eq!(std::mem::size_of::<MtOp>(), 8);
    assert_eq!(std::mem::size_of::<MtGet>(), 48);
    assert_eq!(
        (
            op::MTFSF,
            op::MTBSF,
            op::MTWEOF,
            op::MTREW,
            op::MTEOM,
            op::MTSETBLK
        ),
        (1, 2, 5, 6, 12, 20)
    );
}

/// A device name for a tape that is not one: the errors say what to do.
#[test]
fn tape_device_names_and_options() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("vtape:{}", dir.path().join("none").display());
    let (code, _, err) = pbio(&["list", "--dev", &missing]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("size=N"), "{err}");
    let (code, _, err) = pbio(&["plan", "/etc/hostname", "--dev", "x.img,size=1M,ew=1M"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ew="), "{err}");
    let (code, _, err) = pbio(&[
        "backup",
        "/etc/hostname",
        "--dev",
        &format!("vtape:{}/t,size=16M", dir.path().display()),
        "--tape-block",
        "1000",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("tape block"), "{err}");
}

/// A source file removed after the walk, before its turn comes, does not
/// stop the set: the other files are written and restorable, the removed
/// one is named (`unreadable`, its bytes `unplaced`, exit 3: the set lacks
/// it), and a restore names it missing while restoring the rest. A slow
/// emulated tape with a 2-record buffer makes the turn of the last (the
/// smallest) file come seconds after the backup started.
#[test]
fn a_source_removed_before_its_turn_is_left_out_and_named() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let mut rng = common::Rng::new(41);
    // Distinct sizes: written largest first, f00 (the smallest) last.
    for i in 0..16u64 {
        let mut data = vec![0u8; (((i + 1) * 192) << 10) as usize];
        rng.fill(&mut data);
        std::fs::write(src.join(format!("f{i:02}")), data).unwrap();
    }
    let tape = format!(
        "vtape:{},size=256M,rate=6M",
        dir.path().join("tape").display()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_pbio"))
        .args([
            "backup",
            src.to_str().unwrap(),
            "--dev",
            &tape,
            "--tape-buffer",
            "2",
            "--json",
            "--json-interval",
            "0.05",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = String::new();
    // Once the tape has written something, remove the file written last.
    for line in lines.by_ref() {
        let line = line.unwrap();
        out.push_str(&line);
        out.push('\n');
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["event"] == "progress" && v["bytes"].as_u64().unwrap_or(0) > 0 {
            assert!(
                v["bytes"].as_u64().unwrap() + (1 << 20) < v["total"].as_u64().unwrap(),
                "the run is too far along to test this: {line}"
            );
            std::fs::remove_file(src.join("f00")).unwrap();
            break;
        }
    }
    for line in lines {
        out.push_str(&line.unwrap());
        out.push('\n');
    }
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let code = child.wait().unwrap().code().unwrap_or(-1);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(code, 3, "the set lacks the removed file: {out}\n{err}");
    let summary = last_json(&out);
    assert_eq!(summary["devices"][0]["state"], "complete", "{summary}");
    assert_eq!(summary["unreadable"][0]["path"], "src/f00", "{summary}");
    assert!(
        summary["unreadable"][0]["error"]
            .as_str()
            .unwrap()
            .contains("No such file"),
        "{summary}"
    );
    assert_eq!(summary["missing_bytes"], 192 << 10, "{summary}");
    assert!(
        err.contains("src/f00") && err.contains("could not be opened"),
        "{err}"
    );
    assert!(err.contains("sources that could not be opened"), "{err}");

    let to = dir.path().join("restored");
    let (code, report, err) = restore(std::slice::from_ref(&tape), &to);
    assert_eq!(code, 3, "restore names the missing file: {report} {err}");
    assert!(
        report["missing"].to_string().contains("src/f00"),
        "restore lists the removed file as missing: {report} {err}"
    );
    for i in 1..16 {
        let name = format!("f{i:02}");
        assert_eq!(
            std::fs::read(to.join("src").join(&name)).unwrap(),
            std::fs::read(src.join(&name)).unwrap(),
            "{name} restored"
        );
    }
    assert!(
        !to.join("src/f00").exists(),
        "the removed file is not made up"
    );
}
