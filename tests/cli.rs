//! The command line on file devices (no root needed): bad input gets a
//! clear error and exit 2, the plan's JSON, a file-device round trip, demo.

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;

use loopdev::pbio;
use serde_json::Value;

fn tree(dir: &std::path::Path) -> std::path::PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.bin"), vec![7u8; 3 << 20]).unwrap();
    std::fs::write(src.join("sub/b.txt"), b"hello").unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    src
}

#[test]
fn bad_input_is_a_usage_error_naming_the_culprit() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let s = src.to_str().unwrap();
    let img = dir.path().join("d0.img");
    let d0 = format!("{},size=64M", img.display());
    let missing = dir.path().join("nope");

    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "backup".into(),
                missing.display().to_string(),
                "--dev".into(),
                d0.clone(),
            ],
            "nope",
        ),
        (
            vec![
                "backup".into(),
                s.into(),
                "--dev".into(),
                dir.path().display().to_string(),
            ],
            "is a directory",
        ),
        (
            vec![
                "backup".into(),
                s.into(),
                "--dev".into(),
                d0.clone(),
                "--dev".into(),
                d0.clone(),
            ],
            "given twice",
        ),
        (
            vec![
                "backup".into(),
                s.into(),
                "--dev".into(),
                format!("{},size=64K", img.display()),
            ],
            "does not fit",
        ),
        (
            vec![
                "backup".into(),
                s.into(),
                "--dev".into(),
                format!("{},size=8K", img.display()),
            ],
            "too small",
        ),
        (
            vec![
                "plan".into(),
                s.into(),
                "--dev".into(),
                format!("{},size=1M", img.display()),
                "--dev".into(),
                format!("{},size=1M", dir.path().join("d1.img").display()),
            ],
            "more bytes",
        ),
        (vec!["backup".into(), s.into()], "--dev"),
        (
            vec![
                "backup".into(),
                s.into(),
                "--dev".into(),
                d0.clone(),
                "--frobnicate".into(),
            ],
            "frobnicate",
        ),
        (
            vec![
                "backup".into(),
                s.into(),
                "--dev".into(),
                format!("{},size=12Q", img.display()),
            ],
            "unknown unit",
        ),
        (
            vec![
                "backup".into(),
                s.into(),
                "--dev".into(),
                d0.clone(),
                "--chunk".into(),
                "1000".into(),
            ],
            "power of two",
        ),
        (
            vec![
                "plan".into(),
                s.into(),
                "--dev".into(),
                d0.clone(),
                "--balance".into(),
                "time".into(),
            ],
            "rate",
        ),
    ];
    for (args, needle) in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = pbio(&refs);
        assert_eq!(
            code, 2,
            "{args:?}: expected exit 2, got {code}\n{out}\n{err}"
        );
        assert!(
            err.contains(needle),
            "{args:?}: error does not mention {needle:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // Nothing was written by any refused backup.
    assert!(!img.exists() || std::fs::metadata(&img).unwrap().len() == 0);
}

#[test]
fn plan_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let d0 = format!("{},size=64M", dir.path().join("d0.img").display());
    let d1 = format!("{},size=64M", dir.path().join("d1.img").display());
    let (code, out, err) = pbio(&[
        "plan",
        src.to_str().unwrap(),
        "--dev",
        &d0,
        "--dev",
        &d1,
        "--strategy",
        "split",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    let total = (3u64 << 20) + 5;
    assert_eq!(plan["threshold_bytes"].as_u64().unwrap(), total / 2);
    let devices = plan["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    let assigned: u64 = devices
        .iter()
        .map(|d| d["assigned_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(assigned, total);
    let segments = plan["segments"].as_array().unwrap();
    let a: Vec<&Value> = segments
        .iter()
        .filter(|s| s["path"] == "src/a.bin")
        .collect();
    assert!(a.len() >= 2, "a.bin (larger than T) is split: {a:?}");
    assert!(segments
        .iter()
        .all(|s| s["offset"].as_u64().unwrap() % (1 << 20) == 0));
    // Neither device was created by plan.
    assert!(!dir.path().join("d0.img").exists());
}

#[test]
fn file_device_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let devs: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "{},size=32M",
                dir.path().join(format!("d{i}.img")).display()
            )
        })
        .collect();
    let mut args = vec!["backup", src.to_str().unwrap(), "--chunk", "256K"];
    for d in &devs {
        args.extend(["--dev", d.as_str()]);
    }
    let (code, out, err) = pbio(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    let to = dir.path().join("out");
    let plain: Vec<String> = (0..3)
        .map(|i| dir.path().join(format!("d{i}.img")).display().to_string())
        .collect();
    let mut args = vec!["restore", "--to", to.to_str().unwrap()];
    for d in plain.iter().rev() {
        args.extend(["--dev", d.as_str()]);
    }
    let (code, out, err) = pbio(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        std::fs::read(to.join("src/a.bin")).unwrap(),
        vec![7u8; 3 << 20]
    );
    assert_eq!(std::fs::read(to.join("src/sub/b.txt")).unwrap(), b"hello");
    assert_eq!(std::fs::read(to.join("src/empty")).unwrap(), b"");
    let diffs = common::compare_trees(&src, &to.join("src"));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    // Restore refuses to mix devices of different sets.
    let other = format!("{},size=32M", dir.path().join("other.img").display());
    let (code, _, err) = pbio(&["backup", src.to_str().unwrap(), "--dev", &other]);
    assert_eq!(code, 0, "{err}");
    let other_plain = dir.path().join("other.img").display().to_string();
    let (code, _, err) = pbio(&["verify", "--dev", &plain[0], "--dev", &other_plain]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("different sets"), "{err}");
}

#[test]
fn demo_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = pbio(&[
        "demo",
        "--dir",
        dir.path().to_str().unwrap(),
        "--large-mib",
        "8",
        "--small-files",
        "100",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("identical"), "{out}");
}
