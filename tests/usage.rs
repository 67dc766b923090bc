//! The command line as people use it, on file devices: the no-subcommand
//! form, bare `pbio`, completions and man pages, the `--json` event stream,
//! the overwrite guard on file devices, and the bad inputs tests/cli.rs
//! does not cover (each one exit 2, naming the culprit, nothing written).

mod common;
#[path = "common/events.rs"]
mod events;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::path::{Path, PathBuf};
use std::process::Command;

use loopdev::pbio;
use serde_json::Value;

fn tree(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let mut rng = common::Rng::new(11);
    let mut big = vec![0u8; 5 << 20];
    rng.fill(&mut big);
    std::fs::write(src.join("big.bin"), big).unwrap();
    std::fs::write(src.join("sub/small.txt"), b"small").unwrap();
    src
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Run pbio with owned arguments.
fn run(args: &[String]) -> (i32, String, String) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    pbio(&refs)
}

fn refused(args: &[String], needles: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 2, "{args:?}: expected exit 2\n{out}\n{err}");
    for needle in needles {
        assert!(
            err.contains(needle),
            "{args:?}: error lacks {needle:?}: {err}"
        );
    }
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn set_id_of(summary_text: &str) -> String {
    let v: Value = serde_json::from_str(summary_text.lines().last().unwrap()).unwrap();
    v["set_id"].as_str().unwrap().to_string()
}

#[test]
fn no_subcommand_runs_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let d0 = dir.path().join("d0.img");
    let d1 = dir.path().join("d1.img");
    let (code, out, err) = run(&[
        "--dev".into(),
        format!("{},size=16M", s(&d0)),
        "--dev".into(),
        format!("{},size=16M", s(&d1)),
        s(&src),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("set "), "{out}");
    assert!(out.contains("complete"), "{out}");
    assert!(out.contains("total"), "{out}");
    // The same as `pbio backup`: a complete set that lists and verifies.
    let (code, out, err) = pbio(&["list", "--dev", &s(&d1), "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = pbio(&["verify", "--dev", &s(&d0), "--dev", &s(&d1)]);
    assert_eq!(code, 0, "{out}\n{err}");
    // Sources before options work too.
    let d2 = dir.path().join("d2.img");
    let (code, out, err) = run(&[s(&src), "--dev".into(), format!("{},size=16M", s(&d2))]);
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
fn bare_pbio_prints_a_short_usage() {
    let (code, out, err) = pbio(&[]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("usage: pbio --dev"), "{err}");
    assert!(err.lines().count() <= 8, "short: {err}");
    assert!(out.is_empty());
    // --help and --version go to stdout, exit 0.
    let (code, out, _) = pbio(&["--help"]);
    assert_eq!(code, 0);
    for needle in [
        "--dev",
        "--force",
        "--overwrite",
        "completions",
        "man",
        "Exit codes",
    ] {
        assert!(out.contains(needle), "--help lacks {needle}: {out}");
    }
    let (code, out, _) = pbio(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("pbio "), "{out}");
}

#[test]
fn completions_and_man_pages() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = pbio(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains("pbio"), "{shell}: {out}");
        assert!(
            out.contains("overwrite"),
            "{shell} completes backup options"
        );
    }
    let (code, _, err) = pbio(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = pbio(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(".TH pbio 1"), "{out}");
    assert!(out.contains("completions"), "{out}");
    let (code, out, err) = pbio(&["man", "backup"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(".TH pbio-backup 1"), "{out}");
    assert!(out.contains("overwrite"), "{out}");
    let (code, _, err) = pbio(&["man", "frob"]);
    assert_eq!(code, 2);
    assert!(err.contains("frob"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = pbio(&["man", "--dir", &s(dir.path())]);
    assert_eq!(code, 0, "{err}");
    for page in ["pbio.1", "pbio-backup.1", "pbio-restore.1", "pbio-man.1"] {
        assert!(dir.path().join(page).is_file(), "{page}: {out}");
    }
    // A reader that stops early is not an error.
    for args in [&["man"][..], &["completions", "bash"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pbio"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

#[test]
fn json_stream_is_complete_and_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let mut args = vec!["backup".to_string(), s(&src), "--json".into()];
    args.extend(["--json-interval".into(), "0.01".into()]);
    args.extend(["--chunk".into(), "64K".into(), "--qd".into(), "1".into()]);
    for i in 0..3 {
        args.push("--dev".into());
        args.push(format!(
            "{},size=16M",
            s(&dir.path().join(format!("d{i}.img")))
        ));
    }
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    let summary = events::check_stream(&out, 3);
    assert_eq!(summary["payload_bytes"], (5 << 20) + 5);
    // The same stream with no progress display on stderr (not a terminal).
    assert!(
        !err.contains('\u{1b}'),
        "no escape codes when stderr is a pipe: {err:?}"
    );
}

#[test]
fn guard_on_file_devices() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let img = dir.path().join("set.img");
    let dev = format!("{},size=16M", s(&img));
    let (code, out, err) = run(&[
        "backup".into(),
        s(&src),
        "--dev".into(),
        dev.clone(),
        "--json".into(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let id = set_id_of(&out);
    let before = std::fs::read(&img).unwrap();

    // Another backup onto it is refused, naming the set and the way out.
    let base = vec!["backup".to_string(), s(&src), "--dev".into(), s(&img)];
    refused(
        &base,
        &[&s(&img), &id, "--overwrite", "nothing was written"],
    );
    // A different set id is not enough; a malformed one is a usage error.
    let mut wrong = base.clone();
    wrong.extend(["--overwrite".into(), "0".repeat(32)]);
    refused(&wrong, &[&id, "not a set given with --overwrite"]);
    let mut bad = base.clone();
    bad.extend(["--overwrite".into(), "xyz".into()]);
    refused(&bad, &["32 hex digits"]);
    assert!(
        std::fs::read(&img).unwrap() == before,
        "refusals wrote nothing"
    );

    // --overwrite with its id: accepted, and the device holds the new set.
    let mut ok = base.clone();
    ok.extend(["--overwrite".into(), id.clone(), "--json".into()]);
    let (code, out, err) = run(&ok);
    assert_eq!(code, 0, "{out}\n{err}");
    let id2 = set_id_of(&out);
    assert_ne!(id, id2);
    // --force too.
    let mut forced = base.clone();
    forced.push("--force".into());
    let (code, out, err) = run(&forced);
    assert_eq!(code, 0, "{out}\n{err}");

    // A damaged label is refused until --force.
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&img, &bytes).unwrap();
    refused(&base, &["damaged pbio label", "--force"]);

    // A new or empty file is fine; so is a file of zeros.
    let zeros = dir.path().join("zeros.img");
    std::fs::write(&zeros, vec![0u8; 16 << 20]).unwrap();
    let (code, out, err) = pbio(&["backup", &s(&src), "--dev", &s(&zeros)]);
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
fn filesystem_image_file_is_refused() {
    let Some(mkfs) = events::tool("mkfs.ext4") else {
        eprintln!("SKIPPED filesystem_image_file_is_refused: mkfs.ext4 not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let img = dir.path().join("fs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let st = Command::new(mkfs)
        .args(["-q", "-F", "-L", "precious"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let before = std::fs::read(&img).unwrap();
    // plan says so, and still plans.
    let (code, out, err) = pbio(&["plan", &s(&src), "--dev", &s(&img)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("backup would refuse") && err.contains("(ext4)"),
        "{err}"
    );
    let args = vec!["backup".to_string(), s(&src), "--dev".into(), s(&img)];
    refused(&args, &[&s(&img), "ext4", "\"precious\"", "--force"]);
    assert!(std::fs::read(&img).unwrap() == before);
    let mut forced = args.clone();
    forced.push("--force".into());
    let (code, out, err) = run(&forced);
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
fn bad_inputs_not_covered_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path());
    let d0 = format!("{},size=16M", s(&dir.path().join("d0.img")));
    let b = |more: &[String]| -> Vec<String> {
        let mut v = vec!["backup".to_string(), s(&src), "--dev".into(), d0.clone()];
        v.extend(more.iter().cloned());
        v
    };
    // A file device inside the source tree, though it does not exist yet.
    let inside = src.join("sub/new.img");
    refused(
        &b(&["--dev".into(), format!("{},size=16M", s(&inside))]),
        &["inside source tree", "new.img"],
    );
    assert!(!inside.exists());
    // ... also through `plan`, and through a relative spelling.
    let mut plan = b(&["--dev".into(), format!("{},size=16M", s(&inside))]);
    plan[0] = "plan".into();
    refused(&plan, &["inside source tree"]);
    // A file device that is itself a source.
    let file_src = src.join("big.bin");
    refused(
        &["backup".into(), s(&file_src), "--dev".into(), s(&file_src)],
        &["also a source"],
    );
    // The same new file device under two spellings.
    let other = dir.path().join("x.img");
    let spelled = dir.path().join("sub/../x.img");
    std::fs::create_dir_all(dir.path().join("sub")).unwrap();
    refused(
        &[
            "backup".into(),
            s(&src),
            "--dev".into(),
            format!("{},size=16M", s(&other)),
            "--dev".into(),
            format!("{},size=16M", s(&spelled)),
        ],
        &["given twice"],
    );
    // A device that does not exist and has no size.
    refused(
        &["backup".into(), s(&src), "--dev".into(), s(&other)],
        &["x.img", "does not exist"],
    );
    // A device whose directory does not exist.
    refused(
        &[
            "backup".into(),
            s(&src),
            "--dev".into(),
            format!("{},size=1M", s(&dir.path().join("no/such/x.img"))),
        ],
        &["does not exist"],
    );
    // Options before a subcommand make a backup of a source named like it.
    let (code, _, err) = pbio(&["--json", "list", "--dev", "x.img"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("pbio list [OPTIONS]"), "{err}");
    // Bad option values.
    refused(
        &b(&["--json-interval".into(), "0".into()]),
        &["json-interval"],
    );
    refused(&b(&["--qd".into(), "0".into()]), &["qd"]);
    refused(&b(&["--overwrite".into()]), &["overwrite"]);
    assert!(!dir.path().join("d0.img").exists(), "nothing was created");
}

#[test]
fn no_permission() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED no_permission: needs root to switch to user nobody");
        return;
    }
    let Some(setpriv) = events::tool("setpriv") else {
        eprintln!("SKIPPED no_permission: setpriv not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let src = tree(root);
    let open_src = root.join("open");
    std::fs::create_dir(&open_src).unwrap();
    std::fs::write(open_src.join("f"), b"x").unwrap();
    std::fs::set_permissions(
        &open_src,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let existing = root.join("root.img");
    std::fs::write(&existing, vec![0u8; 1 << 20]).unwrap();
    let as_nobody = |args: &[String]| {
        let out = Command::new(&setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_pbio"))
            .args(args)
            .current_dir("/")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A source tree nobody may read (tempdir trees are 0755, the dir is 0700 below).
    std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let (code, err) = as_nobody(&[
        "backup".into(),
        s(&src),
        "--dev".into(),
        "/tmp/pbio-nobody-never.img,size=16M".into(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("ermission denied") && err.contains("src"),
        "{err}"
    );
    // A device that cannot be created, or written.
    let (code, err) = as_nobody(&[
        "backup".into(),
        s(&open_src),
        "--dev".into(),
        format!("{},size=16M", s(&root.join("new.img"))),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("new.img") && err.contains("ermission denied"),
        "{err}"
    );
    assert!(!root.join("new.img").exists());
    let (code, err) = as_nobody(&["backup".into(), s(&open_src), "--dev".into(), s(&existing)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("root.img") && err.contains("ermission denied"),
        "{err}"
    );
}
