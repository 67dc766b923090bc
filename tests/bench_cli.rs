//! `pbio bench` on file devices (no root needed): both modes, the JSON
//! fields, and the refusals that protect data.

#[path = "common/loopdev.rs"]
mod loopdev;

use loopdev::pbio;
use serde_json::Value;

const SIZE_BYTES: u64 = 3 << 20;

fn summary(stdout: &str) -> Value {
    let line = stdout.lines().last().expect("bench printed a line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn check_latency(lat: &Value, what: &str) {
    let get = |k: &str| {
        lat[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: lat_us.{k} missing: {lat}"))
    };
    let (min, p50, p99, p999, max) = (get("min"), get("p50"), get("p99"), get("p999"), get("max"));
    assert!(min > 0.0, "{what}: {lat}");
    assert!(
        min <= p50 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "{what}: percentiles out of order: {lat}"
    );
}

fn check(json: &Value, rw: &str, devices: usize) {
    assert_eq!(json["event"], "summary");
    assert_eq!(json["rw"], rw);
    assert_eq!(json["bs"], 256 << 10);
    assert_eq!(json["qd"], 4);
    assert_eq!(json["size_bytes"], SIZE_BYTES);
    assert_eq!(json["bytes"], SIZE_BYTES * devices as u64);
    assert!(json["seconds"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["mib_per_sec"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["cpu_seconds"].as_f64().unwrap() >= 0.0, "{json}");
    check_latency(&json["lat_us"], "aggregate");
    let devs = json["devices"].as_array().expect("devices array");
    assert_eq!(devs.len(), devices);
    for d in devs {
        assert_eq!(d["bytes"], SIZE_BYTES, "{d}");
        assert_eq!(d["ios"], SIZE_BYTES / (256 << 10), "{d}");
        assert_eq!(d["retries"], 0, "{d}");
        assert!(d["mib_per_sec"].as_f64().unwrap() > 0.0, "{d}");
        check_latency(&d["lat_us"], d["path"].as_str().unwrap());
    }
}

#[test]
fn bench_writes_then_reads_file_devices() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    let common = ["--bs", "256K", "--qd", "4", "--size", "3M", "--json"];

    let (da, db) = (
        format!("{},size=8M", a.display()),
        format!("{},size=8M", b.display()),
    );
    let mut args = vec!["bench", "--rw", "write", "--dev", &da, "--dev", &db];
    args.extend(common);
    let (code, out, err) = pbio(&args);
    assert_eq!(code, 0, "{err}");
    check(&summary(&out), "write", 2);
    // Written bytes are not zeros (a pattern), and nothing past --size.
    let data = std::fs::read(&a).unwrap();
    assert_eq!(data.len(), 8 << 20);
    assert!(data[..SIZE_BYTES as usize].iter().any(|&x| x != 0));
    assert!(data[SIZE_BYTES as usize..].iter().all(|&x| x == 0));

    let (sa, sb) = (a.display().to_string(), b.display().to_string());
    let mut args = vec!["bench", "--rw", "read", "--dev", &sa, "--dev", &sb];
    args.extend(common);
    let (code, out, err) = pbio(&args);
    assert_eq!(code, 0, "{err}");
    check(&summary(&out), "read", 2);

    // The human form names every device and the aggregate.
    let (code, out, err) = pbio(&["bench", "--dev", &sa, "--size", "1M", "--qd", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("a.img") && out.contains("aggregate:"), "{out}");
}

#[test]
fn bench_refuses_what_would_lose_data_or_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.img");
    let dev = format!("{},size=4M", img.display());
    let path = img.display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["bench", "--dev", &dev, "--rw", "write", "--size", "8M"],
            "larger than",
        ),
        (vec!["bench", "--dev", &dev, "--bs", "1000"], "--bs"),
        (vec!["bench", "--dev", &dev, "--size", "5000"], "--size"),
        (vec!["bench", "--dev", &dev, "--dev", &path], "given twice"),
        (
            vec!["bench", "--dev", "/nonexistent/x.img", "--rw", "read"],
            "x.img",
        ),
    ];
    for (args, needle) in cases {
        let (code, _, err) = pbio(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }

    // A file holding a pbio set is not overwritten without --force.
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    let (code, _, err) = pbio(&["backup", src.to_str().unwrap(), "--dev", &dev]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = pbio(&["bench", "--rw", "write", "--dev", &path, "--size", "1M"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds pbio set"), "{err}");
    let (code, _, err) = pbio(&["bench", "--rw", "read", "--dev", &path, "--size", "1M"]);
    assert_eq!(code, 0, "reading is harmless: {err}");
    let (code, _, err) = pbio(&[
        "bench", "--rw", "write", "--dev", &path, "--size", "1M", "--force",
    ]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn bench_write_to_a_block_device_needs_force() {
    if !loopdev::loop_devices_available("bench_write_to_a_block_device_needs_force") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lo = loopdev::LoopDev::new(&dir.path().join("lo.img"), 16 << 20);
    let dev = lo.arg();
    let (code, _, err) = pbio(&["bench", "--rw", "write", "--dev", &dev, "--size", "1M"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force"), "{err}");
    let (code, out, err) = pbio(&[
        "bench", "--rw", "write", "--dev", &dev, "--size", "2M", "--bs", "256K", "--qd", "4",
        "--force", "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary(&out)["bytes"], 2 << 20);
    let (code, out, err) = pbio(&[
        "bench", "--rw", "read", "--dev", &dev, "--size", "2M", "--bs", "256K", "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary(&out)["bytes"], 2 << 20);
}
