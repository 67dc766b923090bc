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
