#![allow(dead_code)]
//! Checks on `pbio backup --json` output shared by tests, and finding
//! optional system tools. Uses only std and serde_json: it judges pbio's
//! output independently of pbio's code.

use std::path::PathBuf;

use serde_json::Value;

/// An executable by name on PATH or in the sbin directories (which a
/// non-root PATH may lack).
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file());
    found
}

/// Parse a `--json` backup stream of `devices` devices and check that it is
/// complete and consistent: every line one JSON object; `start` first;
/// progress per device never going back and its last value equal to the
/// summary's bytes for that device; `finished` then `summary` last; the
/// same set id and payload total everywhere. Returns the summary.
pub fn check_stream(out: &str, devices: usize) -> Value {
    check_stream_with(out, &vec!["complete"; devices])
}

/// The `device_full` / `device_failed` events of a stream.
pub fn device_events(out: &str) -> Vec<Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "device_full" || v["event"] == "device_failed")
        .collect()
}

/// As `check_stream`, for a run whose devices end in `states` (complete,
/// full, failed): each full or failed device has its event, the others
/// none; exit code 1 when one failed; every written byte accounted for.
pub fn check_stream_with(out: &str, states: &[&str]) -> Value {
    let devices = states.len();
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3 + devices, "too few events: {out}");
    let kind = |v: &Value| {
        v["event"]
            .as_str()
            .unwrap_or_else(|| panic!("no event: {v}"))
            .to_string()
    };
    let kinds: Vec<String> = lines.iter().map(kind).collect();
    assert_eq!(kinds[0], "start", "{kinds:?}");
    assert_eq!(kinds[kinds.len() - 2], "finished", "{kinds:?}");
    assert_eq!(kinds[kinds.len() - 1], "summary", "{kinds:?}");
    for k in &kinds[1..kinds.len() - 2] {
        assert!(
            ["progress", "device_full", "device_failed"].contains(&k.as_str()),
            "unexpected event {k} in {kinds:?}"
        );
    }
    let start = &lines[0];
    let finished = &lines[lines.len() - 2];
    let summary = &lines[lines.len() - 1];
    let set_id = start["set_id"].as_str().expect("start.set_id");
    assert_eq!(set_id.len(), 32);
    assert_eq!(finished["set_id"], set_id);
    assert_eq!(summary["set_id"], set_id);
    let any_failed = states.contains(&"failed");
    assert_eq!(finished["ok"], true);
    assert_eq!(finished["exit_code"], i32::from(any_failed));
    assert_eq!(summary["exit_code"], i32::from(any_failed));
    let start_devices = start["devices"].as_array().expect("start.devices");
    assert_eq!(start_devices.len(), devices);
    let planned: u64 = start_devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["device"], i);
            assert!(d["path"].is_string());
            assert!(d["capacity_bytes"].as_u64().unwrap() > 0);
            d["planned_bytes"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(start["payload_bytes"], planned);
    let sum_devices = summary["devices"].as_array().expect("summary.devices");
    assert_eq!(sum_devices.len(), devices);
    // Device events: one for each device that did not complete, none otherwise.
    let mut durable = vec![None::<u64>; devices];
    for (i, state) in states.iter().enumerate() {
        assert_eq!(sum_devices[i]["state"], *state, "device {i}");
        let evs: Vec<&Value> = lines
            .iter()
            .filter(|l| l["device"] == i && l["event"] != "progress")
            .collect();
        match *state {
            "complete" => assert!(evs.is_empty(), "device {i}: {evs:?}"),
            "full" | "failed" => {
                assert_eq!(evs.len(), 1, "device {i}: {evs:?}");
                assert_eq!(evs[0]["event"], format!("device_{state}"));
                assert_eq!(evs[0]["path"], start_devices[i]["path"]);
                assert!(evs[0]["error"].is_string());
                durable[i] = evs[0]["durable_bytes"].as_u64();
            }
            other => panic!("unknown state {other}"),
        }
    }
    let mut last = vec![None::<u64>; devices];
    for l in lines.iter().filter(|l| l["event"] == "progress") {
        let i = l["device"].as_u64().unwrap() as usize;
        let bytes = l["bytes"].as_u64().unwrap();
        assert!(l["total"].as_u64().is_some());
        assert!(l["seconds"].as_f64().unwrap() >= 0.0);
        // Monotonic, except that a full device drops to its durable bytes.
        if let (Some(prev), "complete") = (last[i], states[i]) {
            assert!(
                bytes >= prev,
                "device {i} progress went back: {prev} -> {bytes}"
            );
        }
        last[i] = Some(bytes);
    }
    // Every planned byte is on exactly one healthy device: the complete
    // ones whole, a full one its durable bytes; a failed one's count not.
    let mut placed = 0u64;
    for (i, d) in sum_devices.iter().enumerate() {
        let bytes = last[i].unwrap_or_else(|| panic!("no progress event for device {i}"));
        if states[i] == "failed" {
            // Its counter stops where it failed; the summary counts what it kept.
            assert!(
                bytes >= d["payload_bytes"].as_u64().unwrap(),
                "device {i}: {d}"
            );
        } else {
            assert_eq!(
                d["payload_bytes"], bytes,
                "device {i}: final progress = summary"
            );
        }
        // A device that kept payload kept records. (Compared with the
        // summary's bytes, not the progress counter: a device that fails
        // before anything it wrote was durable keeps nothing although its
        // counter moved; seen under load.)
        assert!(
            d["records"].as_u64().unwrap() > 0 || d["payload_bytes"].as_u64().unwrap() == 0,
            "device {i}: {d}"
        );
        placed += match states[i] {
            "complete" => bytes,
            "full" => durable[i].expect("durable_bytes of a full device"),
            _ => 0,
        };
        if states.iter().all(|s| *s == "complete") {
            assert_eq!(d["payload_bytes"], start_devices[i]["planned_bytes"]);
        }
    }
    assert_eq!(placed, planned, "every planned byte placed once");
    assert_eq!(summary["missing_bytes"], 0);
    // The final progress events are the last lines before `finished`, one per device.
    let tail = &lines[lines.len() - 2 - devices..lines.len() - 2];
    for (i, l) in tail.iter().enumerate() {
        assert_eq!(l["event"], "progress");
        assert_eq!(l["device"], i);
        if states[i] == "complete" {
            assert_eq!(l["bytes"], l["total"], "device {i} ends at its total");
        }
    }
    summary.clone()
}
