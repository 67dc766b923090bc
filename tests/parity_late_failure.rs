//! `backup --parity M` with a device that fails after its data (issue 19):
//! while the parity records are written (its sync fails), or while the
//! catalogs are (its catalog write fails). As for a failure in the data
//! phase: exit 1, the device named failed, its ranges written again on
//! the survivors and its stripes made again, so that the survivors less
//! any M of them restore byte-identical. Real loop devices; the failing
//! one is a FUSE-backed loop device (tests/common/faults.rs) armed by
//! fsync count, so the failure lands in the phase deterministically.

mod common;
#[path = "common/faults.rs"]
mod faults;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::path::PathBuf;

use loopdev::{dev_args, loop_devices_available, pbio_owned as run, LoopDev};
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("bad JSON {e}: {text}"))
}

/// Where the failing device dies.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Its first sync (the parity phase's, after its parity records)
    /// fails, and everything after.
    Parity,
    /// The first write after its first sync (its catalog) fails.
    Catalog,
}

/// `survivors` loop devices of 64 MiB and a failing device (index 1 of
/// the set) that dies in `phase`; a fixture tree of about 20 MiB backed
/// up with `--parity m`. Asserts the run's outcome (exit 1, device 1
/// failed in the JSON and text summaries, nothing missing, no parity
/// warning), then restores from the survivors less every set of `m` of
/// them and compares with the source.
fn late_failure(test: &str, survivors: usize, m: usize, phase: Phase) {
    if !faults::faults_available(test) || !loop_devices_available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let src = root.join("src/tree");
    common::make_fixture_tree(&src, 300, 12 << 20);
    let devs: Vec<LoopDev> = (0..survivors)
        .map(|i| LoopDev::new(&root.join(format!("d{i}.img")), 64 << 20))
        .collect();
    let failing = faults::FailingDevice::new(&root, 64 << 20, None);
    match phase {
        Phase::Parity => failing.fail_at_fsync(1),
        Phase::Catalog => failing.fail_after_fsyncs(1),
    }
    let mut args = vec![
        "backup".to_string(),
        src.display().to_string(),
        "--parity".into(),
        m.to_string(),
        "--json".into(),
        "--dev".into(),
        devs[0].arg(),
        "--dev".into(),
        failing.arg(),
    ];
    args.extend(dev_args(&devs[1..].iter().collect::<Vec<_>>()));
    let (code, out, err) = run(&args);
    let stats = failing.stats();
    eprintln!("{phase:?}: failing device {stats:?}");
    assert_eq!(code, 1, "{phase:?}: {out}\n{err}");
    let summary = json(&out);
    assert_eq!(summary["devices"][1]["state"], "failed", "{summary}");
    assert_eq!(summary["missing_bytes"], 0, "{summary}");
    assert_eq!(
        summary["parity"]["warnings"].as_array().unwrap().len(),
        0,
        "{summary}"
    );
    for (i, d) in summary["devices"].as_array().unwrap().iter().enumerate() {
        if i != 1 {
            assert_eq!(d["state"], "complete", "{summary}");
        }
    }
    // The failed device's data was written again on the survivors.
    assert!(
        summary["devices"][1]["redirected_bytes"].as_u64().unwrap() > 0,
        "{summary}"
    );
    // Every survivor less any `m` of them restores the tree whole.
    let mut sets: Vec<Vec<usize>> = (0..survivors).map(|i| vec![i]).collect();
    if m == 2 {
        sets = (0..survivors)
            .flat_map(|a| (a + 1..survivors).map(move |b| vec![a, b]))
            .collect();
    }
    for gone in sets {
        let given: Vec<&LoopDev> = (0..survivors)
            .filter(|i| !gone.contains(i))
            .map(|i| &devs[i])
            .collect();
        let to: PathBuf = root.join(format!("out{gone:?}"));
        let mut args = vec![
            "restore".to_string(),
            "--to".into(),
            to.display().to_string(),
            "--json".into(),
        ];
        args.extend(dev_args(&given));
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "survivors without {gone:?}: {out}\n{err}");
        let diffs = common::compare_trees(&src, &to.join("tree"));
        assert!(diffs.is_empty(), "survivors without {gone:?}: {diffs:?}");
        let _ = std::fs::remove_dir_all(&to);
    }
    drop(failing);
}

#[test]
fn parity_1_a_device_failing_in_the_parity_phase() {
    late_failure("parity_1_failing_in_parity_phase", 4, 1, Phase::Parity);
}

#[test]
fn parity_1_a_device_failing_in_the_catalog_phase() {
    late_failure("parity_1_failing_in_catalog_phase", 4, 1, Phase::Catalog);
}

#[test]
fn parity_2_a_device_failing_in_the_parity_phase() {
    late_failure("parity_2_failing_in_parity_phase", 5, 2, Phase::Parity);
}

#[test]
fn parity_2_a_device_failing_in_the_catalog_phase() {
    late_failure("parity_2_failing_in_catalog_phase", 5, 2, Phase::Catalog);
}
