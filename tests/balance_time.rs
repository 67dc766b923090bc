//! `--balance time` (issue 19): the dispatcher follows the plan's rates at
//! run time. Two emulated tapes at 5 and 15 MiB/s: the fast one carries
//! about three times the bytes of the slow one, never fewer. Wall-time
//! targets are measured by scripts/balance-time.sh, not asserted here (a
//! loaded machine makes timed assertions flaky).

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;

use loopdev::pbio;
use serde_json::Value;

fn summary(out: &str) -> Value {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .unwrap_or(Value::Null)
}

/// One backup of `tree` onto a 5 and a 15 MiB/s tape: (slow, fast) payload bytes.
fn split(tree: &std::path::Path, dir: &std::path::Path, run: usize) -> (u64, u64, Value) {
    let slow = format!(
        "vtape:{},size=256M,rate=5M",
        dir.join(format!("slow{run}")).display()
    );
    let fast = format!(
        "vtape:{},size=256M,rate=15M",
        dir.join(format!("fast{run}")).display()
    );
    let tree = tree.display().to_string();
    let (code, out, err) = pbio(&[
        "backup",
        &tree,
        "--json",
        "--balance",
        "time",
        "--dev",
        &slow,
        "--dev",
        &fast,
    ]);
    let s = summary(&out);
    assert_eq!(code, 0, "{out}\n{err}");
    let bytes = |i: usize| s["devices"][i]["payload_bytes"].as_u64().unwrap();
    (bytes(0), bytes(1), s)
}

#[test]
fn two_tapes_split_by_their_rates() {
    let dir = tempfile::tempdir().unwrap();
    // Two shapes: one large file (split by the plan into a 1:3 pair of
    // segments, each read into buffers long before it is on tape), and
    // the fixture tree (many small files, one large).
    let big = dir.path().join("big");
    std::fs::create_dir_all(&big).unwrap();
    let mut data = vec![0u8; 64 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
    }
    std::fs::write(big.join("one.bin"), &data).unwrap();
    let tree = dir.path().join("tree");
    common::make_fixture_tree(&tree, 300, 32 << 20);
    for (run, src) in [&big, &tree, &big].into_iter().enumerate() {
        let (slow, fast, s) = split(src, dir.path(), run);
        eprintln!("run {run}: slow {slow} fast {fast} bytes");
        assert!(
            slow <= fast,
            "the slow tape carries more than the fast one: {s}"
        );
        let ratio = fast as f64 / slow as f64;
        assert!(
            (2.4..=3.6).contains(&ratio),
            "the fast tape must carry about 3x the slow one's bytes: {ratio:.2}\n{s}"
        );
    }
}
