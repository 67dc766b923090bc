//! Sets that span the cartridges of a tape library (issue 20): `backup
//! --changer` over the emulated library `vlib:`, restore and verify with
//! `--changer` through fewer drives than the set has cartridges, the end of
//! a medium reached mid-stream, a set too large for the library, and
//! crafted cartridges refused by name.

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::fs;
use std::path::Path;

use loopdev::pbio;
use serde_json::Value;

/// The `"event": "finished"` line of a `--json` backup.
fn finished(out: &str) -> Value {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "finished")
        .unwrap_or_else(|| panic!("no finished event in: {out}"))
}

fn status(lib: &str) -> Value {
    let (code, out, err) = pbio(&["changer", "status", "--json", "--changer", lib]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// 150 MiB of incompressible data: a 70 MiB file (larger than a
/// cartridge), two of 30 MiB, and the fixture tree (its large file 14 MiB).
fn source(root: &Path) {
    common::make_fixture_tree(root, 30, 14 << 20);
    let mut rng = common::Rng::new(20);
    for (name, mib) in [("big", 70u64), ("mid-a", 30), ("mid-b", 30)] {
        let mut buf = vec![0u8; (mib << 20) as usize];
        rng.fill(&mut buf);
        fs::write(root.join(name), &buf).unwrap();
    }
}

fn backup(src: &Path, lib: &str, extra: &[&str]) -> (i32, Value, String) {
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

fn restore_with_one_drive(lib: &str, src: &Path, to: &Path, drive: &str) {
    restore_set_with_one_drive(lib, None, src, to, drive)
}

fn restore_set_with_one_drive(lib: &str, set: Option<&str>, src: &Path, to: &Path, drive: &str) {
    let to_s = to.to_str().unwrap();
    let mut args = vec!["restore", "--changer", lib, "--drive", drive, "--to", to_s];
    if let Some(set) = set {
        args.extend(["--set", set]);
    }
    let (code, _, err) = pbio(&args);
    assert_eq!(code, 0, "restore with drive {drive} alone: {err}");
    let diffs = common::compare_trees(src, &to.join(src.file_name().unwrap()));
    assert!(
        diffs.is_empty(),
        "restored tree differs:\n{}",
        diffs.join("\n")
    );
    // Every cartridge back in its slot.
    let s = status(lib);
    assert!(
        s["drives"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["full"] == false),
        "a drive still holds a cartridge after the restore: {s}"
    );
}

#[test]
fn a_set_spans_cartridges_and_one_drive_restores_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source(&src);
    let dir = tmp.path().join("lib");
    let lib = format!("vlib:{}", dir.display());
    let created = format!("{lib},slots=8,drives=2,size=40M,move_ms=20");

    let (code, done, err) = backup(&src, &created, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(done["ok"], true, "{done}");
    let used = done["cartridges"].as_array().unwrap();
    assert!(used.len() >= 4, "150 MiB on 40 MiB cartridges: {done}");
    assert_eq!(done["loads"].as_u64().unwrap(), used.len() as u64);
    let s = status(&lib);
    assert!(
        s["drives"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["full"] == false),
        "{s}"
    );

    // Every cartridge used says which volume of the set it is; those
    // closed before the catalog say where it is.
    let (code, out, err) = pbio(&["changer", "inventory", "--changer", &lib]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("continued: its catalog is on the set's last cartridges"),
        "{out}"
    );
    assert!(out.contains("complete:"), "{out}");

    // The catalog, found on the cartridges through one drive, names each
    // cartridge by barcode and says which holds which records.
    let (code, out, err) = pbio(&["list", "--changer", &lib, "--drive", "0", "--json"]);
    assert_eq!(code, 0, "list --changer: {err}");
    let listed: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let devices: Vec<&str> = listed["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no devices in {listed}"))
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    for b in used {
        assert!(
            devices.contains(&b.as_str().unwrap()),
            "{b} not in {devices:?}"
        );
    }
    restore_with_one_drive(&lib, &src, &tmp.path().join("one"), "0");
    let (code, out, err) = pbio(&["verify", "--changer", &lib, "--drive", "1"]);
    assert_eq!(code, 0, "verify with drive 1 alone: {out}{err}");

    // A second set appended (`--append`): written after the sets on the
    // cartridges that have room, never over them.
    let first = done["set_id"].as_str().unwrap().to_string();
    let src2 = tmp.path().join("src2");
    common::make_fixture_tree(&src2, 10, 6 << 20);
    let (code, done2, err) = backup(&src2, &lib, &["--append"]);
    assert_eq!(code, 0, "--append: {err}");
    assert_eq!(done2["ok"], true, "{done2}");
    let second = done2["set_id"].as_str().unwrap().to_string();
    let used2 = done2["cartridges"].as_array().unwrap();
    assert!(
        used2.iter().any(|b| used.contains(b)),
        "the appended set shares no cartridge with the first: {done2} {done}"
    );
    // Both sets in the library: --set chooses (a prefix), one drive reads each.
    let (code, _, err) = pbio(&["list", "--changer", &lib]);
    assert_eq!(code, 2, "two sets, no --set: {err}");
    assert!(err.contains(&first) && err.contains(&second), "{err}");
    restore_set_with_one_drive(&lib, Some(&first[..8]), &src, &tmp.path().join("a1"), "1");
    restore_set_with_one_drive(&lib, Some(&second[..8]), &src2, &tmp.path().join("a2"), "0");
}

#[test]
fn end_of_medium_mid_stream_moves_to_the_next_cartridge() {
    // A 12 MiB early-warning zone: every cartridge ends (ENOSPC) before the
    // part of the set planned on it; its rest goes on with the next one.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source(&src);
    let lib = format!("vlib:{}", tmp.path().join("lib").display());
    let created = format!("{lib},slots=10,drives=2,size=40M,ew=12M,move_ms=20");

    // A small set first, on one cartridge: the large set is then written
    // on the scratch cartridges left. (Written second, the small set would
    // need a cartridge the large one left blank, and pbio promises none:
    // how many spares a set takes after ends of medium depends on the
    // drives' timing; 7 or 8 of 8 were seen.)
    let small = tmp.path().join("second");
    fs::create_dir(&small).unwrap();
    fs::write(small.join("f"), b"the second set").unwrap();
    let (code, done_small, err) = backup(&small, &created, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        done_small["cartridges"].as_array().unwrap().len(),
        1,
        "{done_small}"
    );

    let (code, done, err) = backup(&src, &lib, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(done["ok"], true, "{done}");
    assert_eq!(done["missing_bytes"], 0, "{done}");
    assert!(
        err.contains(" full: "),
        "no cartridge reached its end: {err}"
    );
    let used = done["cartridges"].as_array().unwrap();
    assert!(used.len() >= 6, "{done}");
    assert!(
        !used.contains(&done_small["cartridges"][0]),
        "the small set's cartridge was overwritten: {done} {done_small}"
    );

    // Two sets in the library: a restore must choose (--set, a prefix of
    // the id), and gets the one chosen.
    let (code, _, err) = pbio(&["list", "--changer", &lib]);
    assert_ne!(code, 0, "two sets in the library, none chosen: {err}");
    assert!(err.contains("several sets"), "{err}");
    let id = done["set_id"].as_str().unwrap();
    restore_set_with_one_drive(&lib, Some(&id[..8]), &src, &tmp.path().join("one"), "1");
    let to = tmp.path().join("chosen");
    let (code, _, err) = pbio(&[
        "restore",
        "--changer",
        &lib,
        "--set",
        &id[..8],
        "--drive",
        "0",
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "restore --set {}: {err}", &id[..8]);
    let diffs = common::compare_trees(&src, &to.join("src"));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    let id_small = done_small["set_id"].as_str().unwrap();
    restore_set_with_one_drive(
        &lib,
        Some(&id_small[..8]),
        &small,
        &tmp.path().join("small"),
        "0",
    );
}

/// A cartridge whose medium ends early (its early-warning zone made 16 MiB
/// of 32): the volume written on it hands work back while the other drive
/// holds a volume that ran dry with room left. That drive goes on writing
/// on it; no spare is loaded (issue 20: both drives loaded one).
#[test]
fn a_drive_with_room_takes_the_work_handed_back_instead_of_a_spare() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut rng = common::Rng::new(21);
    for (name, mib) in [("a", 40u64), ("b", 20)] {
        let mut buf = vec![0u8; (mib << 20) as usize];
        rng.fill(&mut buf);
        fs::write(src.join(name), &buf).unwrap();
    }
    let dir = tmp.path().join("lib");
    let lib = format!("vlib:{}", dir.display());
    // Moves of 300 ms: the third volume starts well after the first two
    // ran dry, so the drive that does not load it waits with room.
    status(&format!("{lib},slots=6,drives=2,size=32M,move_ms=300"));
    // The third cartridge (volume 2 of 3: 60 MiB on 32 MiB cartridges,
    // planned 90 % full) reaches its end of medium after 16 MiB.
    let conf = dir.join("cartridges/PB0003L6/vtape.conf");
    let text = fs::read_to_string(&conf).unwrap();
    assert!(text.starts_with("size=33554432\n"), "{text}");
    fs::write(&conf, "size=33554432\new=16777216\n").unwrap();

    let (code, done, err) = backup(&src, &lib, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(done["ok"], true, "{done}");
    assert_eq!(done["missing_bytes"], 0, "{done}");
    assert!(err.contains(" full: "), "PB0003L6 did not end early: {err}");
    let used = done["cartridges"].as_array().unwrap();
    assert_eq!(
        used.len(),
        3,
        "a spare was loaded while a drive's cartridge had room: {done}"
    );
    assert_eq!(done["loads"].as_u64().unwrap(), 3, "{done}");
    restore_with_one_drive(&lib, &src, &tmp.path().join("one"), "1");
    let (code, out, err) = pbio(&["verify", "--changer", &lib, "--drive", "0"]);
    assert_eq!(code, 0, "verify with drive 0 alone: {out}{err}");
}

#[test]
fn a_set_larger_than_the_library_is_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source(&src);
    let lib = format!("vlib:{}", tmp.path().join("lib").display());
    let created = format!("{lib},slots=3,drives=2,size=40M,move_ms=0");

    let (code, _, err) = backup(&src, &created, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("than the 3 scratch cartridges hold together"),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    let (code, out, err) = pbio(&["changer", "inventory", "--changer", &lib]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("blank").count(), 3, "{out}");
}

#[test]
fn crafted_cartridges_are_refused_naming_slot_and_barcode() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source(&src);
    let dir = tmp.path().join("lib");
    let lib = format!("vlib:{}", dir.display());
    let created = format!("{lib},slots=8,drives=2,size=40M,move_ms=0");
    let (code, done, err) = backup(&src, &created, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(done["cartridges"].as_array().unwrap().len() >= 4);

    let cartridge = |b: &str| dir.join("cartridges").join(b);
    let copy_medium = |from: &Path, to: &Path| {
        for f in ["vtape.data", "vtape.index", "vtape.conf"] {
            fs::copy(from.join(f), to.join(f)).unwrap();
        }
    };
    let restore = |to: &str| {
        let out = tmp.path().join(to);
        pbio(&[
            "restore",
            "--changer",
            &lib,
            "--drive",
            "0",
            "--to",
            out.to_str().unwrap(),
        ])
    };

    // Wrong sequence: PB0002L6 made a copy of PB0001L6 (volume 0 twice),
    // behind the back of what the catalog says (volume 1 is PB0002L6):
    // its label, read when it is loaded for its records, refuses it, and
    // nothing is read from it; what the other volumes hold is restored.
    let saved = tmp.path().join("saved");
    fs::create_dir(&saved).unwrap();
    copy_medium(&cartridge("PB0002L6"), &saved);
    copy_medium(&cartridge("PB0001L6"), &cartridge("PB0002L6"));
    let (code, _, err) = restore("twice");
    assert_ne!(code, 0, "a volume given twice was restored: {err}");
    assert!(
        err.contains("slot 2 (PB0002L6): the set's catalog names it volume 1")
            && err.contains("its label says volume 0, which the catalog names PB0001L6"),
        "the refusal names neither cartridge: {err}"
    );
    let diffs = common::compare_trees(&src, &tmp.path().join("twice").join("src"));
    assert!(
        diffs.iter().all(|d| d.ends_with(": missing in b")),
        "wrong bytes restored: {diffs:?}"
    );
    assert!(!diffs.is_empty(), "volume 1's files restored from volume 0");
    copy_medium(&saved, &cartridge("PB0002L6"));

    // Wrong set: PB0003L6 holds a volume of another set.
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("f"), b"another set").unwrap();
    let vtape = tmp.path().join("vt");
    let vt = format!("vtape:{},size=40M", vtape.display());
    let (code, _, err) = pbio(&["backup", other.to_str().unwrap(), "--dev", &vt]);
    assert_eq!(code, 0, "{err}");
    copy_medium(&vtape, &cartridge("PB0003L6"));
    let (code, _, err) = restore("foreign");
    assert_ne!(code, 0, "a cartridge of another set was taken: {err}");
    assert!(
        err.contains("slot 3 (PB0003L6)"),
        "the refusal does not name the cartridge: {err}"
    );
    assert!(!tmp.path().join("foreign").join("src").exists());
}
