//! Tape libraries (issue 20, first part): the emulated library
//! `vlib:DIR`, driven through `pbio changer`, with backups and restores
//! through its drives `vtape:DIR/driveN`.

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::path::Path;

use loopdev::pbio;
use serde_json::Value;

fn json(out: &str) -> Value {
    serde_json::from_str(out.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("bad JSON {e}: {out}"))
}

fn changer(args: &[&str], lib: &str) -> (i32, String, String) {
    let mut all = vec!["changer"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--changer", lib]);
    pbio(&all)
}

fn status(lib: &str) -> Value {
    let (code, out, err) = changer(&["status", "--json"], lib);
    assert_eq!(code, 0, "{err}");
    json(&out)
}

fn inventory(lib: &str) -> Value {
    let (code, out, err) = changer(&["inventory", "--json"], lib);
    assert_eq!(code, 0, "{err}");
    json(&out)
}

fn set_of(element: &Value) -> Option<String> {
    element["sets"][0]["set_id"].as_str().map(str::to_string)
}

fn restore(devs: &[String], to: &Path) {
    let mut args = vec!["restore", "--to", to.to_str().unwrap()];
    for d in devs {
        args.extend(["--dev", d.as_str()]);
    }
    let (code, _, err) = pbio(&args);
    assert_eq!(code, 0, "restore: {err}");
}

#[test]
fn a_library_loads_backs_up_inventories_and_unloads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lib");
    let lib = format!("vlib:{}", dir.display());
    let src = tmp.path().join("src");
    common::make_fixture_tree(&src, 40, 6 << 20);

    // Created on first use: 6 slots with a cartridge each, 2 empty drives.
    let s = status(&format!("{lib},slots=6,drives=2,size=64M,move_ms=20"));
    assert_eq!(s["cartridges"], 6);
    assert_eq!(s["slots"].as_array().unwrap().len(), 6);
    assert!(s["slots"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["full"] == true));
    assert_eq!(s["slots"][0]["barcode"], "PB0001L6");
    assert_eq!(s["drives"].as_array().unwrap().len(), 2);
    assert!(s["drives"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["full"] == false));
    let drive0 = s["drives"][0]["device"].as_str().unwrap().to_string();
    let drive1 = s["drives"][1]["device"].as_str().unwrap().to_string();
    assert_eq!(drive0, format!("vtape:{}/drive0", dir.display()));

    // An empty drive holds no tape: a backup to it is refused, nothing made.
    let (code, _, err) = pbio(&["backup", src.to_str().unwrap(), "--dev", &drive0]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("drive0"), "{err}");
    assert!(
        dir.join("drive0").is_file(),
        "no tape was created in the empty drive"
    );

    let (code, out, err) = changer(&["load", "1", "0"], &lib);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("PB0001L6"), "{out}");
    // Nothing to load from an empty slot.
    let (code, _, err) = changer(&["load", "1", "1"], &lib);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("slot 1 is empty"), "{err}");
    let (code, _, err) = changer(&["load", "2", "1", "--json"], &lib);
    assert_eq!(code, 0, "{err}");
    let s = status(&lib);
    assert_eq!(s["drives"][0]["barcode"], "PB0001L6");
    assert_eq!(s["drives"][0]["source_slot"], 1);
    assert_eq!(s["drives"][1]["barcode"], "PB0002L6");
    assert_eq!(s["slots"][0]["full"], false);
    assert_eq!(s["cartridges"], 6);

    // A backup across both drives.
    let (code, out, err) = pbio(&[
        "backup",
        src.to_str().unwrap(),
        "--dev",
        &drive0,
        "--dev",
        &drive1,
        "--json",
    ]);
    assert_eq!(code, 0, "backup: {err}");
    let set = json(&out)["set_id"].as_str().unwrap().to_string();

    // Inventory: the set on both loaded cartridges, the others blank.
    let inv = inventory(&lib);
    for d in 0..2 {
        assert_eq!(
            set_of(&inv["drives"][d]).as_deref(),
            Some(set.as_str()),
            "{inv}"
        );
        assert_eq!(inv["drives"][d]["sets"][0]["complete"], true, "{inv}");
        assert_eq!(inv["drives"][d]["sets"][0]["device_index"], d);
    }
    for s in 3..=6 {
        assert_eq!(inv["slots"][s - 1]["blank"], true, "{inv}");
    }
    let (code, text, _) = changer(&["inventory"], &lib);
    assert_eq!(code, 0);
    assert!(
        text.contains(&format!("set {set} (device 0 of 2, complete")),
        "{text}"
    );

    // A drive that holds a cartridge cannot be loaded: refused (exit 2),
    // naming the drive and its cartridge, nothing moved.
    let (code, _, err) = changer(&["load", "3", "0"], &lib);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("drive 0 already holds a cartridge (PB0001L6)"),
        "{err}"
    );
    let (code, _, err) = changer(&["load", "7", "1"], &lib);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no slot 7"), "{err}");
    assert_eq!(status(&lib)["slots"][2]["full"], true);

    // Unload returns each cartridge to its slot; the set is then read there.
    let (code, out, err) = changer(&["unload", "0", "--json"], &lib);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["unloaded"]["slot"], 1);
    let (code, _, err) = changer(&["unload", "1"], &lib);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = changer(&["unload", "1"], &lib);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("drive 1 is empty"), "{err}");
    let inv = inventory(&lib);
    assert_eq!(inv["cartridges"], 6);
    assert!(inv["drives"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["full"] == false));
    assert_eq!(inv["slots"][0]["barcode"], "PB0001L6");
    assert_eq!(set_of(&inv["slots"][0]).as_deref(), Some(set.as_str()));
    assert_eq!(set_of(&inv["slots"][1]).as_deref(), Some(set.as_str()));
    assert_eq!(inv["slots"][1]["sets"][0]["device_index"], 1);

    // Loaded the other way round, the set restores whole: the drives are
    // told apart by their labels, not by which drive holds which.
    for (slot, drive) in [("2", "0"), ("1", "1")] {
        let (code, _, err) = changer(&["load", slot, drive], &lib);
        assert_eq!(code, 0, "{err}");
    }
    let to = tmp.path().join("restored");
    restore(&[drive0.clone(), drive1.clone()], &to);
    let diffs = common::compare_trees(&src, &to.join("src"));
    assert!(
        diffs.is_empty(),
        "restored tree differs:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn bad_changers_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = format!("vlib:{}", tmp.path().join("none").display());
    let (code, _, err) = changer(&["status"], &missing);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("give ,size=N"), "{err}");
    let (code, _, err) = changer(&["status"], "/dev/null");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("/dev/null: is not a SCSI generic node"),
        "{err}"
    );
    let (code, _, err) = changer(&["status"], &tmp.path().join("sg9").display().to_string());
    assert_eq!(code, 2, "{err}");
    let lib = format!(
        "vlib:{},slots=2,drives=1,size=8M",
        tmp.path().join("l").display()
    );
    assert_eq!(changer(&["status"], &lib).0, 0);
    let (code, _, err) = changer(&["status"], &format!("{lib},slots=3"));
    assert_eq!(code, 2, "{err}");
    // A damaged library state is a failing library (3), named.
    let state = tmp.path().join("l/vlib.state");
    std::fs::write(&state, "slot 1 X\n").unwrap();
    let (code, _, err) = changer(
        &["status"],
        &format!("vlib:{}", tmp.path().join("l").display()),
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("vlib.state is damaged"), "{err}");
}

/// What `backup --changer ... --json` says when it is done.
fn finished(out: &str) -> Value {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "finished")
        .unwrap_or_else(|| panic!("no finished event in: {out}"))
}

fn backup_to(src: &Path, lib: &str, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["backup", src.to_str().unwrap(), "--changer", lib, "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = pbio(&args);
    let v = if code == 0 || code == 1 {
        finished(&out)
    } else {
        Value::Null
    };
    (code, v, err)
}

/// Restore from the library with the drives given (and the set chosen by
/// `set`), byte-identical to `src`, every drive empty after.
fn restore_from(lib: &str, drives: &[&str], set: Option<&str>, src: &Path, to: &Path) {
    let mut args = vec!["restore", "--changer", lib, "--to", to.to_str().unwrap()];
    for d in drives {
        args.extend(["--drive", d]);
    }
    if let Some(set) = set {
        args.extend(["--set", set]);
    }
    let (code, _, err) = pbio(&args);
    assert_eq!(code, 0, "restore --drive {drives:?}: {err}");
    let diffs = common::compare_trees(src, &to.join(src.file_name().unwrap()));
    assert!(
        diffs.is_empty(),
        "restored tree differs:\n{}",
        diffs.join("\n")
    );
    assert!(
        status(lib)["drives"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["full"] == false),
        "a drive still holds a cartridge after the restore"
    );
}

/// The loads the emulated library in `dir` did since it was created.
fn loads(dir: &Path) -> u64 {
    let state = std::fs::read_to_string(dir.join("vlib.state")).unwrap();
    state
        .lines()
        .find_map(|l| l.strip_prefix("loads "))
        .map_or(0, |n| n.parse().unwrap())
}

/// The label cache's line of `barcode` in the emulated library `dir`.
fn cached(dir: &Path, barcode: &str) -> String {
    let text = std::fs::read_to_string(dir.join("vlib.labels")).unwrap_or_default();
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(barcode))
        .unwrap_or("")
        .to_string()
}

/// `mib` MiB of incompressible data in `root/name`.
fn random_file(root: &Path, name: &str, mib: usize, seed: u64) {
    std::fs::create_dir_all(root).unwrap();
    let mut buf = vec![0u8; mib << 20];
    common::Rng::new(seed).fill(&mut buf);
    std::fs::write(root.join(name), &buf).unwrap();
}

/// Copy an emulated tape's medium (not its barcode) from one directory to another.
fn copy_medium(from: &Path, to: &Path) {
    for f in ["vtape.data", "vtape.index", "vtape.conf"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

#[test]
fn a_library_without_in_place_reads_backs_up_through_its_drives() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lib");
    let lib = format!("vlib:{}", dir.display());
    let src = tmp.path().join("src");
    common::make_fixture_tree(&src, 20, 4 << 20);
    random_file(&src, "big", 24, 1);
    random_file(&src, "mid", 12, 2);

    // inplace=0: no label is read in a slot; every cartridge is judged
    // (blank) through a drive, then the set spans them.
    let created = format!("{lib},slots=8,drives=2,size=16M,move_ms=0,inplace=0");
    let (code, done, err) = backup_to(&src, &created, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(done["ok"], true, "{done}");
    let used: Vec<String> = done["cartridges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    assert!(used.len() >= 3, "40 MiB on 16 MiB cartridges: {done}");
    let set = done["set_id"].as_str().unwrap().to_string();
    // Each of the 8 judged in a drive, then each volume loaded to be written.
    assert_eq!(loads(&dir), 8 + used.len() as u64, "{done}");
    // The cache: the set on the cartridges written, the others blank.
    for b in &used {
        assert!(cached(&dir, b).contains(&set), "{b}: {}", cached(&dir, b));
    }
    let unused = (1..=8)
        .map(|s| format!("PB{s:04}L6"))
        .find(|b| !used.contains(b))
        .unwrap();
    assert_eq!(cached(&dir, &unused), format!("{unused} blank"));

    // One drive restores it, loading only the set's cartridges (from the
    // cache: no pass over the blank ones), each once: the last for its
    // label and catalog (and read first, still in the drive), the others
    // only to read their records, their labels checked then.
    let before = loads(&dir);
    restore_from(&lib, &["0"], None, &src, &tmp.path().join("one"));
    let restore_loads = loads(&dir) - before;
    assert_eq!(
        restore_loads,
        used.len() as u64,
        "{restore_loads} loads for {} cartridges",
        used.len()
    );
    // With the cache gone, the cartridges are read through a drive again.
    std::fs::remove_file(dir.join("vlib.labels")).unwrap();
    let (code, out, err) = pbio(&["verify", "--changer", &lib, "--drive", "1"]);
    assert_eq!(code, 0, "verify without a cache: {out}{err}");
    assert!(cached(&dir, &used[0]).contains(&set));

    // `changer inventory --cached` shows the cache, moving nothing;
    // without it every cartridge is loaded and read.
    let before = loads(&dir);
    let (code, out, err) = changer(&["inventory", "--cached", "--json"], &lib);
    assert_eq!(code, 0, "{err}");
    let inv = json(&out);
    assert_eq!(loads(&dir), before, "--cached loaded a cartridge");
    assert_eq!(inv["slots"][0]["cached"], true, "{inv}");
    assert_eq!(set_of(&inv["slots"][0]).as_deref(), Some(set.as_str()));
    let inv = inventory(&lib);
    assert_eq!(loads(&dir), before + 8);
    assert_eq!(set_of(&inv["slots"][0]).as_deref(), Some(set.as_str()));
    assert_eq!(inv["slots"][0]["device_index"], Value::Null);
    assert_eq!(inv["slots"][0]["sets"][0]["device_index"], 0);
}

#[test]
fn a_set_on_as_many_drives_as_cartridges_loads_each_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lib");
    let lib = format!("vlib:{}", dir.display());
    let src = tmp.path().join("src");
    random_file(&src, "a", 20, 3);
    // ew=1M: 20 MiB fits two cartridges before their early-warning zones,
    // so no spare is loaded and the load count below is exact.
    let created = format!("{lib},slots=4,drives=2,size=16M,ew=1M,move_ms=0,inplace=0");
    let (code, done, err) = backup_to(&src, &created, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(done["cartridges"].as_array().unwrap().len(), 2, "{done}");
    // Its label, its catalog and its records: one load per cartridge.
    let before = loads(&dir);
    restore_from(&lib, &["0", "1"], None, &src, &tmp.path().join("r"));
    assert_eq!(loads(&dir) - before, 2);
}

#[test]
fn append_on_a_library_without_in_place_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lib");
    let lib = format!("vlib:{}", dir.display());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    random_file(&a, "f", 4, 4);
    random_file(&b, "g", 3, 5);
    let created = format!("{lib},slots=3,drives=1,size=16M,move_ms=0,inplace=0");
    let (code, first, err) = backup_to(&a, &created, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(first["cartridges"], serde_json::json!(["PB0001L6"]));
    let (code, second, err) = backup_to(&b, &lib, &["--append"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        second["cartridges"],
        serde_json::json!(["PB0001L6"]),
        "appended after the first set: {second}"
    );
    let (id1, id2) = (
        first["set_id"].as_str().unwrap(),
        second["set_id"].as_str().unwrap(),
    );
    // The cache knows both sets on the cartridge, each after its filemarks.
    let line = cached(&dir, "PB0001L6");
    assert!(line.contains(id1) && line.contains(id2), "{line}");
    // Two sets: a restore must choose; each restores whole.
    let (code, _, err) = pbio(&["list", "--changer", &lib]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(id1) && err.contains(id2), "{err}");
    restore_from(&lib, &["0"], Some(&id1[..8]), &a, &tmp.path().join("ra"));
    restore_from(&lib, &["0"], Some(&id2[..8]), &b, &tmp.path().join("rb"));
}

#[test]
fn a_cartridge_swapped_behind_the_cache_is_judged_by_its_label() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lib");
    let lib = format!("vlib:{}", dir.display());
    let cartridge = |b: &str| dir.join("cartridges").join(b);
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    random_file(&a, "f", 2, 6);
    random_file(&b, "g", 2, 7);
    random_file(&c, "h", 2, 8);
    let created = format!("{lib},slots=4,drives=1,size=16M,move_ms=0,inplace=0");
    let (code, first, err) = backup_to(&a, &created, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(first["cartridges"], serde_json::json!(["PB0001L6"]));
    let id_a = first["set_id"].as_str().unwrap().to_string();
    assert_eq!(cached(&dir, "PB0002L6"), "PB0002L6 blank");

    // Set B written elsewhere, its medium put on PB0002L6, which the
    // cache says is blank.
    let vt = tmp.path().join("vt");
    let (code, out, err) = pbio(&[
        "backup",
        b.to_str().unwrap(),
        "--dev",
        &format!("vtape:{},size=16M", vt.display()),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let id_b = finished(&out)["set_id"].as_str().unwrap().to_string();
    copy_medium(&vt, &cartridge("PB0002L6"));

    // A backup loads it to judge it: its label (a young set) decides, it is
    // left alone, and the cache learns it.
    let (code, third, err) = backup_to(&c, &lib, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        third["cartridges"],
        serde_json::json!(["PB0003L6"]),
        "{err}"
    );
    assert!(
        err.contains("slot 2 (PB0002L6) is not scratch, left alone"),
        "{err}"
    );
    assert!(cached(&dir, "PB0002L6").contains(&id_b));
    restore_from(&lib, &["0"], Some(&id_b[..8]), &b, &tmp.path().join("rb"));

    // The cache says A on PB0001L6, which now holds B: the restore of A
    // loads it, reads B's label, refuses it and corrects the cache.
    let saved = tmp.path().join("saved");
    std::fs::create_dir(&saved).unwrap();
    copy_medium(&cartridge("PB0001L6"), &saved);
    copy_medium(&vt, &cartridge("PB0001L6"));
    let to = tmp.path().join("stale");
    let (code, _, err) = pbio(&[
        "restore",
        "--changer",
        &lib,
        "--set",
        &id_a[..8],
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_ne!(
        code, 0,
        "a cartridge of another set was restored as A: {err}"
    );
    assert!(
        err.contains(&format!("the label cache said it holds set {id_a}"))
            && err.contains(&format!("is of set {id_b}")),
        "{err}"
    );
    assert!(!to.join("a").exists());
    let line = cached(&dir, "PB0001L6");
    assert!(line.contains(&id_b) && !line.contains(&id_a), "{line}");

    // A put back behind the cache's back: the cache (B) makes the restore
    // of A skip it, never write; `changer inventory` reads it again.
    copy_medium(&saved, &cartridge("PB0001L6"));
    let (code, _, err) = pbio(&[
        "restore",
        "--changer",
        &lib,
        "--set",
        &id_a[..8],
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("pbio changer inventory"), "{err}");
    let (code, _, err) = changer(&["inventory"], &lib);
    assert_eq!(code, 0, "{err}");
    restore_from(&lib, &["0"], Some(&id_a[..8]), &a, &tmp.path().join("ra"));
    // The cache says A (young) on PB0001L6, which is blank now (given
    // the blank medium of PB0004L6): a backup leaves it in its slot
    // unread; a wrong entry costs a scratch cartridge, never a set.
    copy_medium(&cartridge("PB0004L6"), &cartridge("PB0001L6"));
    let blank = std::fs::read(cartridge("PB0001L6").join("vtape.data")).unwrap();
    let before = loads(&dir);
    let (code, fourth, err) = backup_to(&c, &lib, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        fourth["cartridges"],
        serde_json::json!(["PB0004L6"]),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "slot 1 (PB0001L6) is not scratch, left alone: the label cache says it holds set {id_a}"
        )),
        "{err}"
    );
    assert_eq!(
        std::fs::read(cartridge("PB0001L6").join("vtape.data")).unwrap(),
        blank
    );
    // Judged without a load: PB0001 (cache: A), PB0002 (B), PB0003 (C);
    // PB0004 loaded to be judged, then to be written.
    assert_eq!(loads(&dir) - before, 2);
}

/// Issue 20: with the default early-warning zone (4 MiB, a quarter of a
/// 16 MiB cartridge), every volume ends before the part of the set planned
/// on it; the spares take the rest, as many as it needs. It ended
/// incomplete (exit 3) in 3 of 6 runs while scratch cartridges were left
/// when only one spare per drive was taken.
///
/// A second cause, fixed with it: a spare given handed-back work larger
/// than its room stopped as full at the first record that did not fit,
/// before writing any of the records it had read ahead.
#[test]
fn a_set_that_fits_the_scratch_cartridges_always_completes() {
    for run in 0..4u64 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lib");
        let lib = format!("vlib:{}", dir.display());
        let src = tmp.path().join("src");
        common::make_fixture_tree(&src, 20, 4 << 20);
        random_file(&src, "big", 24, 10 + run);
        random_file(&src, "mid", 12, 20 + run);
        let created = format!("{lib},slots=8,drives=2,size=16M,move_ms=0");
        let (code, done, err) = backup_to(&src, &created, &[]);
        assert_eq!(code, 0, "run {run}: {err}");
        assert_eq!(done["ok"], true, "run {run}: {done}");
        assert_eq!(done["missing_bytes"], 0, "run {run}: {done}");
        let used = done["cartridges"].as_array().unwrap().len();
        // 12 MiB before each early-warning zone: more than 36 MiB needs 4.
        assert!((4..=8).contains(&used), "run {run}: {done}");
        restore_from(&lib, &["0"], None, &src, &tmp.path().join("r"));
    }
}

/// A set that fits the cartridges' capacity but not what they hold
/// before their early-warning zones is refused before writing, with the
/// numbers (it would end incomplete with no scratch left).
#[test]
fn a_set_beyond_the_early_warning_zones_is_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lib");
    let lib = format!("vlib:{}", dir.display());
    let src = tmp.path().join("src");
    // 40 MiB: less than 3 x 16 MiB, more than 3 x 12 MiB.
    random_file(&src, "a", 40, 30);
    let created = format!("{lib},slots=3,drives=2,size=16M,move_ms=0");
    let (code, _, err) = backup_to(&src, &created, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("more than the 3 scratch cartridges hold together")
            && err.contains("before its early-warning zone")
            && err.contains("nothing was written"),
        "{err}"
    );
    for s in 1..=3 {
        let data = dir.join(format!("cartridges/PB{s:04}L6/vtape.data"));
        let len = std::fs::metadata(&data).map_or(0, |m| m.len());
        assert_eq!(len, 0, "{} was written", data.display());
    }
}
