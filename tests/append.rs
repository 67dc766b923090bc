//! Several sets on one tape (issue 20, "Appending"): `backup --append`
//! writes a new set after the last complete one on an emulated tape,
//! `list` shows every set, `restore`/`verify`/`list --set` choose one,
//! `--retention` refuses overwriting a young set, an interrupted last set
//! refuses `--append`, and a disk refuses it.

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::fs;
use std::path::Path;

use loopdev::pbio;
use serde_json::Value;

fn source(root: &Path, seed: u64, mib: usize) {
    common::make_fixture_tree(root, 8, 256 << 10);
    let mut rng = common::Rng::new(seed);
    let mut buf = vec![0u8; mib << 20];
    rng.fill(&mut buf);
    fs::write(root.join("data"), &buf).unwrap();
}

/// Back up `src` to `dev` with `extra` options: exit code, set id (from
/// the JSON summary) and stderr.
fn backup(src: &Path, dev: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["backup", src.to_str().unwrap(), "--dev", dev, "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = pbio(&args);
    let id = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .map(|v| v["set_id"].as_str().unwrap().to_string())
        .unwrap_or_default();
    (code, id, err)
}

fn restore_same(dev: &str, set: Option<&str>, src: &Path, to: &Path) {
    let to_s = to.to_str().unwrap();
    let mut args = vec!["restore", "--dev", dev, "--to", to_s];
    if let Some(set) = set {
        args.extend(["--set", set]);
    }
    let (code, out, err) = pbio(&args);
    assert_eq!(code, 0, "restore --set {set:?}: {out}{err}");
    let name = src.file_name().unwrap();
    let diffs = common::compare_trees(src, &to.join(name));
    assert!(
        diffs.is_empty(),
        "restored tree differs:\n{}",
        diffs.join("\n")
    );
}

fn listed_sets(dev: &str) -> Vec<Value> {
    let (code, out, err) = pbio(&["list", "--dev", dev, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    v["sets"].as_array().cloned().unwrap_or_default()
}

#[test]
fn two_sets_on_one_tape_are_listed_and_restored_by_set() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    source(&one, 1, 3);
    source(&two, 2, 2);
    let tape = format!("vtape:{},size=64M", tmp.path().join("t").display());

    let (code, id1, err) = backup(&one, &tape, &[]);
    assert_eq!(code, 0, "{err}");
    let (code, id2, err) = backup(&two, &tape, &["--append"]);
    assert_eq!(code, 0, "--append: {err}");
    assert_ne!(id1, id2);

    // list: both sets, in tape order, with their files and bytes.
    let sets = listed_sets(&tape);
    assert_eq!(sets.len(), 2, "{sets:?}");
    assert_eq!(sets[0]["set_id"], id1.as_str());
    assert_eq!(sets[1]["set_id"], id2.as_str());
    assert_eq!(sets[0]["state"], "complete");
    assert!(sets[1]["bytes"].as_u64().unwrap() >= 2 << 20, "{sets:?}");
    let (code, out, _) = pbio(&["list", "--dev", &tape]);
    assert_eq!(code, 0);
    assert!(out.contains(&id1) && out.contains(&id2), "{out}");

    // Without --set: refused, both named, nothing written.
    let to = tmp.path().join("r0");
    let (code, _, err) = pbio(&["restore", "--dev", &tape, "--to", to.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&id1) && err.contains(&id2), "{err}");
    assert!(!to.join("one").exists() && !to.join("two").exists());

    // --set with a unique prefix chooses each.
    restore_same(&tape, Some(&id1[..8]), &one, &tmp.path().join("r1"));
    restore_same(
        &tape,
        Some(&id2[..8].to_uppercase()),
        &two,
        &tmp.path().join("r2"),
    );
    let (code, out, err) = pbio(&["verify", "--dev", &tape, "--set", &id2]);
    assert_eq!(code, 0, "verify --set: {out}{err}");
    let (code, out, err) = pbio(&["list", "--dev", &tape, "--set", &id1[..6]]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id1) && out.contains("data"), "{out}");
    let (code, _, err) = pbio(&["list", "--dev", &tape, "--set", "ffffffffffffffffff0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no set whose id starts with"), "{err}");

    // A third set: over the two only when allowed, never over a young one
    // without --force.
    let (code, _, err) = backup(&one, &tape, &[]);
    assert_eq!(code, 2, "overwrite without --overwrite/--force: {err}");
    assert!(err.contains(&id1) && err.contains(&id2), "{err}");
    let (code, _, err) = backup(
        &one,
        &tape,
        &[
            "--overwrite",
            &id1,
            "--overwrite",
            &id2,
            "--retention",
            "30d",
        ],
    );
    assert_eq!(code, 2, "--retention: {err}");
    assert!(
        err.contains("younger than --retention 30d") && err.contains(&id2),
        "{err}"
    );
    let (code, id3, err) = backup(&one, &tape, &["--force", "--retention", "30d"]);
    assert_eq!(code, 0, "--force overrides --retention: {err}");
    assert!(listed_sets(&tape).is_empty(), "one set left: no table");
    restore_same(&tape, None, &one, &tmp.path().join("r3"));
    restore_same(&tape, Some(&id3[..4]), &one, &tmp.path().join("r4"));
}

#[test]
fn append_is_refused_over_an_interrupted_set_and_on_a_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    source(&one, 3, 1);
    source(&two, 4, 1);
    let dir = tmp.path().join("t");
    let tape = format!("vtape:{},size=64M", dir.display());
    let (code, id1, err) = backup(&one, &tape, &[]);
    assert_eq!(code, 0, "{err}");
    // Interrupted before its end: the End record and the closing
    // filemark never reached the tape.
    let index = dir.join("vtape.index");
    let entries = fs::read(&index).unwrap();
    fs::write(&index, &entries[..entries.len() - 32]).unwrap();

    let (code, _, err) = backup(&two, &tape, &["--append"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("vtape:{}", dir.display()))
            && err.contains(&id1)
            && err.contains("not complete"),
        "{err}"
    );
    let (code, out, _) = pbio(&["list", "--dev", &tape, "--json"]);
    assert_ne!(code, 0, "the interrupted set has no catalog: {out}");

    // --force: the new set takes the interrupted one's place.
    let (code, id2, err) = backup(&two, &tape, &["--append", "--force"]);
    assert_eq!(code, 0, "{err}");
    assert_ne!(id1, id2);
    restore_same(&tape, None, &two, &tmp.path().join("r"));

    // A disk holds one set: --append is refused before anything is written.
    let file = tmp.path().join("disk.img");
    let disk = format!("{},size=32M", file.display());
    let (code, _, err) = backup(&one, &disk, &["--append"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("random-access") && err.contains("disk.img"),
        "{err}"
    );
    assert!(!file.exists(), "nothing written on the disk");
}

/// The `"event": "finished"` line of a `--json` backup.
fn finished(out: &str) -> Value {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "finished")
        .unwrap_or_else(|| panic!("no finished event in: {out}"))
}

fn backup_changer(src: &Path, lib: &str, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["backup", src.to_str().unwrap(), "--changer", lib, "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = pbio(&args);
    let v = if code == 0 {
        finished(&out)
    } else {
        Value::Null
    };
    (code, v, err)
}

#[test]
fn a_library_appends_scans_and_keeps_young_sets() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    source(&one, 5, 2);
    source(&two, 6, 1);
    let dir = tmp.path().join("lib");
    let lib = format!("vlib:{}", dir.display());
    let created = format!("{lib},slots=3,drives=1,size=32M,move_ms=1");
    let (code, first, err) = backup_changer(&one, &created, &[]);
    assert_eq!(code, 0, "{err}");
    let (code, second, err) = backup_changer(&two, &lib, &["--append"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        first["cartridges"], second["cartridges"],
        "appended on the same cartridge"
    );
    let (id1, id2) = (
        first["set_id"].as_str().unwrap(),
        second["set_id"].as_str().unwrap(),
    );

    // scan --changer: every set of every cartridge, blank ones skipped.
    let (code, out, err) = pbio(&["scan", "--changer", &lib, "--json"]);
    assert_eq!(code, 0, "{err}");
    let ids: Vec<String> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "summary")
        .map(|v| v["set_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, [id1, id2], "{out}");
    assert!(err.contains("blank, nothing to scan"), "{err}");

    // Two sets: named without --set; each restored with it.
    let (code, _, err) = pbio(&["verify", "--changer", &lib]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(id1) && err.contains(id2), "{err}");
    for (id, src, to) in [(id1, &one, "r1"), (id2, &two, "r2")] {
        let to = tmp.path().join(to);
        let (code, out, err) = pbio(&[
            "restore",
            "--changer",
            &lib,
            "--set",
            &id[..8],
            "--to",
            to.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}{err}");
        let diffs = common::compare_trees(src, &to.join(src.file_name().unwrap()));
        assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    }

    // --retention: the cartridge holding young sets is not scratch (not
    // even with --overwrite); once they are older, it is.
    let used = first["cartridges"][0].clone();
    let (code, third, err) =
        backup_changer(&one, &lib, &["--retention", "30d", "--overwrite", id1]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !third["cartridges"].as_array().unwrap().contains(&used),
        "{third}"
    );
    assert!(err.contains("younger than --retention 30d"), "{err}");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (code, fourth, err) = backup_changer(&two, &lib, &["--retention", "2s"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fourth["cartridges"][0], used, "{fourth}");
}

/// Data after a tape's last set that is neither the end of recorded data
/// nor a pbio label (another program's file, or a drive that keeps old
/// blocks past the last filemark, as tgt's emulated drives do): the set
/// before it is still listed and restored, and `--append` is refused
/// (exit 2, the device named) rather than writing over that data.
#[test]
fn data_after_the_last_set_is_read_past_but_never_appended_over() {
    use pbio::device::{self, DeviceSpec, Mode, TapeOp};
    let tmp = tempfile::tempdir().unwrap();
    let one = tmp.path().join("one");
    source(&one, 3, 2);
    let tape = format!("vtape:{},size=64M", tmp.path().join("t").display());
    let (code, id, err) = backup(&one, &tape, &[]);
    assert_eq!(code, 0, "{err}");

    // Another program's file after the set: one block of text at the end
    // of recorded data, closed by a filemark.
    {
        let spec = DeviceSpec::parse(&tape).unwrap();
        let dev = device::open(&spec, Mode::Write).unwrap();
        dev.attach().unwrap();
        dev.tape_op(TapeOp::EndOfData).unwrap();
        let block = vec![b'x'; 4096];
        assert_eq!(device::write_block(dev.as_ref(), &block).unwrap(), 4096);
        dev.tape_op(TapeOp::WriteFilemarks(1)).unwrap();
        dev.detach();
    }
    let recorded = |name: &str| fs::read(tmp.path().join("t").join(name)).unwrap();
    let before = (recorded("vtape.data"), recorded("vtape.index"));

    let (code, out, err) = pbio(&["list", "--dev", &tape]);
    assert_eq!(code, 0, "list: {err}");
    assert!(out.contains(&id), "{out}");
    restore_same(&tape, None, &one, &tmp.path().join("r"));
    // scan walks the sets (as a library's inventory does): the set, whole.
    let (code, out, err) = pbio(&["scan", "--dev", &tape]);
    assert_eq!(code, 0, "scan: {out}{err}");
    assert!(out.contains(&format!("set {id}")), "{out}");

    let two = tmp.path().join("two");
    source(&two, 4, 1);
    let (code, _, err) = backup(&two, &tape, &["--append"]);
    assert_eq!(code, 2, "--append over another program's data: {err}");
    assert!(err.contains("--append"), "{err}");
    assert!(
        (recorded("vtape.data"), recorded("vtape.index")) == before,
        "the tape was written"
    );
    let (code, out, err) = pbio(&["list", "--dev", &tape]);
    assert_eq!(code, 0, "list after the refused append: {err}");
    assert!(out.contains(&id), "{out}");
}
