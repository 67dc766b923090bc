//! Issue 20: restore, verify and list with `--changer` load each cartridge
//! of the set once (N loads, whatever the number of drives), only the
//! cartridges holding what `--only` wants (and the catalog's), and never
//! take a cartridge for what it is not (a swapped medium is refused by its
//! label when loaded, named; no wrong byte is restored).

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use loopdev::pbio;
use serde_json::Value;

/// The loads the emulated library in `dir` did since it was created.
fn loads(dir: &Path) -> u64 {
    let state = std::fs::read_to_string(dir.join("vlib.state")).unwrap();
    state
        .lines()
        .find_map(|l| l.strip_prefix("loads "))
        .map_or(0, |n| n.parse().unwrap())
}

fn last_json(out: &str) -> Value {
    out.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("no JSON in: {out}"))
}

/// A library (no reads in slots: every label read is a load) with a set
/// spanning at least `at_least` cartridges written through two drives.
struct Library {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dir: PathBuf,
    lib: String,
    src: PathBuf,
    /// The set's cartridges (barcodes), in volume order.
    used: Vec<String>,
}

impl Library {
    fn new(files: usize, at_least: usize) -> Library {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let dir = root.join("lib");
        let lib = format!("vlib:{}", dir.display());
        let src = root.join("src");
        std::fs::create_dir_all(&src).unwrap();
        for i in 0..files {
            let mut buf = vec![0u8; 4 << 20];
            common::Rng::new(100 + i as u64).fill(&mut buf);
            std::fs::write(src.join(format!("f{i:02}")), &buf).unwrap();
        }
        // ew=1M: the set fits its cartridges before their early-warning
        // zones, so no spare is loaded.
        let created = format!("{lib},slots=8,drives=2,size=16M,ew=1M,move_ms=0,inplace=0");
        let (code, out, err) = pbio(&[
            "backup",
            src.to_str().unwrap(),
            "--changer",
            &created,
            "--json",
        ]);
        assert_eq!(code, 0, "{err}");
        let done = out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["event"] == "finished")
            .unwrap();
        let used: Vec<String> = done["cartridges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_str().unwrap().to_string())
            .collect();
        assert!(used.len() >= at_least, "{done}");
        Library {
            _tmp: tmp,
            root,
            dir,
            lib,
            src,
            used,
        }
    }

    /// `pbio ARGS --changer LIB --drive D...`: exit code, stdout, stderr,
    /// and the loads it took.
    fn run(&self, args: &[&str], drives: &[&str]) -> (i32, String, String, u64) {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--changer", &self.lib]);
        for d in drives {
            all.extend(["--drive", d]);
        }
        let before = loads(&self.dir);
        let (code, out, err) = pbio(&all);
        (code, out, err, loads(&self.dir) - before)
    }

    fn restore(&self, name: &str, drives: &[&str], extra: &[&str]) -> (i32, String, PathBuf, u64) {
        let to = self.root.join(name);
        let mut args = vec!["restore", "--to", to.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (code, _, err, loads) = self.run(&args, drives);
        (code, err, to.join("src"), loads)
    }

    fn drives_empty(&self) -> bool {
        let (code, out, err) = pbio(&["changer", "status", "--json", "--changer", &self.lib]);
        assert_eq!(code, 0, "{err}");
        let status = last_json(&out);
        status["drives"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["full"] == false)
    }
}

fn each_loaded_once(files: usize, at_least: usize) {
    let l = Library::new(files, at_least);
    let n = l.used.len() as u64;
    for drives in [&["0"][..], &["0", "1"][..], &["1"][..]] {
        let name = format!("r{}", drives.join(""));
        let (code, err, to, loads) = l.restore(&name, drives, &[]);
        assert_eq!(code, 0, "restore --drive {drives:?}: {err}");
        let diffs = common::compare_trees(&l.src, &to);
        assert!(diffs.is_empty(), "{diffs:?}");
        assert_eq!(loads, n, "restore --drive {drives:?}: {n} cartridges");
        assert!(l.drives_empty(), "a cartridge left in a drive");

        let (code, out, err, loads) = l.run(&["verify", "--json"], drives);
        assert_eq!(code, 0, "verify --drive {drives:?}: {out}{err}");
        assert_eq!(last_json(&out)["ok"], true, "{out}");
        assert_eq!(loads, n, "verify --drive {drives:?}: {n} cartridges");
        assert!(l.drives_empty(), "a cartridge left in a drive");
    }
    // restore --scan does not read a library (scan --changer does): said,
    // not a silent empty restore.
    let (code, _, err, loads) = l.run(&["restore", "--scan", "--to", "/nonexistent"], &[]);
    assert_eq!((code, loads), (2, 0), "{err}");
    assert!(err.contains("--changer"), "{err}");
    // list needs the catalog only: the last volume holds it.
    let (code, out, err, loads) = l.run(&["list", "--json"], &["0"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(loads, 1, "list loaded more than the catalog's cartridge");
    let listed = last_json(&out);
    let paths: Vec<&str> = listed["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    // The catalog names every volume planned, spares left blank included.
    assert_eq!(paths[..l.used.len()], l.used, "{listed}");

    // --only a file: the cartridges holding it, and the one whose catalog
    // is read (the last volume), nothing else.
    let segments = listed["segments"].as_array().unwrap();
    let mut fewest: Option<(String, BTreeSet<u64>)> = None;
    for f in 0..files {
        let path = format!("src/f{f:02}");
        let on: BTreeSet<u64> = segments
            .iter()
            .filter(|s| s["path"] == path.as_str())
            .map(|s| s["device"].as_u64().unwrap())
            .collect();
        if fewest.as_ref().is_none_or(|(_, d)| on.len() < d.len()) {
            fewest = Some((path, on));
        }
    }
    let (path, mut on) = fewest.unwrap();
    on.insert(n - 1);
    assert!((on.len() as u64) < n, "every file spans the set: {listed}");
    for drives in [&["0"][..], &["0", "1"][..]] {
        let name = format!("only{}", drives.join(""));
        let (code, err, to, loads) = l.restore(&name, drives, &["--only", &path]);
        assert_eq!(code, 0, "{err}");
        let file = Path::new(&path).file_name().unwrap();
        assert_eq!(
            std::fs::read(to.join(file)).unwrap(),
            std::fs::read(l.src.join(file)).unwrap()
        );
        assert_eq!(
            loads,
            on.len() as u64,
            "--only {path}: volumes {on:?} (the last for the catalog)"
        );
    }
}

#[test]
fn three_cartridges_through_one_or_two_drives_are_each_loaded_once() {
    each_loaded_once(10, 3);
}

#[test]
fn five_cartridges_through_one_or_two_drives_are_each_loaded_once() {
    each_loaded_once(17, 5);
}

/// Copy an emulated tape's medium (not its barcode) from one directory to another.
fn copy_medium(from: &Path, to: &Path) {
    for f in ["vtape.data", "vtape.index", "vtape.conf"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

#[test]
fn a_library_that_lies_gives_a_clear_error_never_wrong_bytes() {
    let l = Library::new(10, 3);
    let cartridge = |b: &str| l.dir.join("cartridges").join(b);
    let (first, second) = (&l.used[0], &l.used[1]);
    // The media of volumes 0 and 1 swapped behind pbio's back: the label
    // cache and the catalog still say volume 0 is the first barcode.
    let saved = l.root.join("saved");
    std::fs::create_dir(&saved).unwrap();
    copy_medium(&cartridge(first), &saved);
    copy_medium(&cartridge(second), &cartridge(first));
    copy_medium(&saved, &cartridge(second));
    for drives in [&["0"][..], &["0", "1"][..]] {
        let name = format!("swapped{}", drives.join(""));
        let (code, err, to, _) = l.restore(&name, drives, &[]);
        assert_ne!(code, 0, "swapped volumes restored: {err}");
        assert!(
            err.contains(&format!(
                "({first}): the set's catalog names it volume 0 of set"
            )) && err.contains(&format!(
                "its label says volume 1, which the catalog names {second}"
            )),
            "{err}"
        );
        let diffs = common::compare_trees(&l.src, &to);
        assert!(
            diffs.iter().all(|d| d.ends_with(": missing in b")),
            "wrong bytes restored: {diffs:?}"
        );
        assert!(l.drives_empty(), "a cartridge left in a drive");
        let (code, out, err, _) = l.run(&["verify", "--json"], drives);
        assert_ne!(code, 0, "swapped volumes verified: {out}{err}");
        assert_eq!(last_json(&out)["ok"], false, "{out}");
    }
    // Put back: restored whole again.
    copy_medium(&cartridge(first), &saved);
    copy_medium(&cartridge(second), &cartridge(first));
    copy_medium(&saved, &cartridge(second));
    let (code, err, to, loads) = l.restore("back", &["0"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(common::compare_trees(&l.src, &to).is_empty());
    assert_eq!(loads, l.used.len() as u64);

    // The last volume (the catalog's) replaced by a blank medium which the
    // cache still says holds the set: refused when loaded, named with the
    // cache; the catalog comes from the next volume, and the files of the
    // last volume are missing, none restored wrong.
    let last = l.used.last().unwrap();
    let spare = (1..=8)
        .map(|s| format!("PB{s:04}L6"))
        .find(|b| !l.used.contains(b))
        .unwrap();
    copy_medium(&cartridge(&spare), &cartridge(last));
    let (code, err, to, _) = l.restore("blank", &["0"], &[]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains(&format!("({last})")), "{err}");
    let diffs = common::compare_trees(&l.src, &to);
    assert!(
        diffs.iter().all(|d| d.ends_with(": missing in b")),
        "wrong bytes restored: {diffs:?}"
    );
}

/// The last volume's copy of the catalog damaged: the catalog comes from
/// the next volume back; with two drives the damaged one stays in its
/// drive and its records are read in that same load (N loads); with one
/// drive it is loaded once more after (N + 1).
#[test]
fn a_damaged_catalog_copy_is_taken_from_the_next_volume() {
    let l = Library::new(10, 3);
    let last = l.dir.join("cartridges").join(l.used.last().unwrap());
    let data = last.join("vtape.data");
    let mut bytes = std::fs::read(&data).unwrap();
    // The catalog is the medium's tail (tape file 1, after the records).
    let len = bytes.len();
    for b in &mut bytes[len - 2048..] {
        *b ^= 0x5a;
    }
    std::fs::write(&data, &bytes).unwrap();
    let n = l.used.len() as u64;
    for (drives, expected) in [(&["0", "1"][..], n), (&["0"][..], n + 1)] {
        let name = format!("d{}", drives.join(""));
        let (code, err, to, loads) = l.restore(&name, drives, &[]);
        assert_eq!(code, 0, "{err}");
        assert!(common::compare_trees(&l.src, &to).is_empty());
        assert_eq!(loads, expected, "--drive {drives:?}: {err}");
    }
}
