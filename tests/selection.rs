//! Choosing what to back up (issue 21): `--exclude` (by name, anchored,
//! directories only, `**`), `--exclude-from`, `--exclude-caches`,
//! `--exclude-if-present`, `--one-file-system` (a real tmpfs mounted inside
//! the tree) and `--exclude-larger-than`, each backed up to real loop
//! devices, restored, and the restored tree compared with the expected
//! subset; `pbio plan --verbose` names what was left out and why; a bad
//! glob and a missing `--exclude-from` file are usage errors (exit 2).

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::lstat_tree;
use loopdev::{loop_devices_available, pbio, LoopDev};

const DEVICE_BYTES: u64 = 64 << 20;
const CACHEDIR_TAG: &[u8] =
    b"Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag.\n";

fn run(args: &[String]) -> (i32, String, String) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    pbio(&refs)
}

/// Two loop devices over files in `dir`.
fn devices(dir: &Path) -> Vec<LoopDev> {
    (0..2)
        .map(|i| LoopDev::new(&dir.join(format!("dev{i}.img")), DEVICE_BYTES))
        .collect()
}

fn with_devs(command: &str, src: &Path, devs: &[LoopDev], options: &[&str]) -> Vec<String> {
    let mut args = vec![command.to_string(), src.display().to_string()];
    for d in devs {
        args.extend(["--dev".to_string(), d.arg()]);
    }
    args.extend(options.iter().map(|s| s.to_string()));
    args
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, bytes).unwrap();
}

/// Back `src` up with `options` onto two loop devices, restore into
/// `dir/out`, and check that the restored tree holds exactly `expected`
/// (paths below `src`; "" is `src` itself), each file with its content.
/// Returns `pbio plan --verbose` output for the same options.
fn backup_restore_expect(dir: &Path, src: &Path, options: &[&str], expected: &[&str]) -> String {
    let devs = devices(dir);
    let mut plan_options = options.to_vec();
    plan_options.push("--verbose");
    let (code, plan_out, err) = run(&with_devs("plan", src, &devs, &plan_options));
    assert_eq!(code, 0, "plan: {plan_out}\n{err}");
    let mut backup_options = options.to_vec();
    backup_options.push("--force");
    let (code, out, err) = run(&with_devs("backup", src, &devs, &backup_options));
    assert_eq!(code, 0, "backup: {out}\n{err}");

    let to = dir.join("out");
    let mut args = vec![
        "restore".to_string(),
        "--to".into(),
        to.display().to_string(),
    ];
    for d in &devs {
        args.extend(["--dev".to_string(), d.arg()]);
    }
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "restore: {out}\n{err}");

    let restored_root = to.join(src.file_name().unwrap());
    let restored = lstat_tree(&restored_root);
    let got: BTreeSet<String> = restored
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        got, want,
        "restored tree (left) is not the expected subset (right); plan said:\n{plan_out}"
    );
    for (rel, metadata) in &restored {
        if metadata.is_file() {
            let rel = String::from_utf8_lossy(rel);
            assert_eq!(
                fs::read(restored_root.join(&*rel)).unwrap(),
                fs::read(src.join(&*rel)).unwrap(),
                "{rel}: content differs"
            );
        }
    }
    plan_out
}

#[test]
fn exclude_patterns_by_name_anchored_dir_only_double_star_and_from_file() {
    if !loop_devices_available("exclude_patterns") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for rel in [
        "keep.txt",
        "scratch.tmp",
        "a/b/deep.tmp",
        "a/b/deep.txt",
        "build/out/o.bin",
        "build/keep.c",
        "x/build/out/o.bin",
        "logs/today.log",
        "x/logs",
        "data/2024/01/a.gz",
        "data/a.gz",
        "data/a.txt",
        "other/a.gz",
        "secret.key",
        "x/secret.pem",
        "#hash",
    ] {
        write(&src, rel, rel.as_bytes());
    }
    let from = tmp.path().join("excludes");
    fs::write(
        &from,
        "# keys are never backed up\nsecret.*\n\n   \n# and neither is this\n\\#hash\n",
    )
    .unwrap();
    let from_arg = from.display().to_string();
    let plan = backup_restore_expect(
        tmp.path(),
        &src,
        &[
            "--exclude",
            "*.tmp",
            "--exclude",
            "build/out",
            "--exclude",
            "logs/",
            "--exclude",
            "data/**/*.gz",
            "--exclude-from",
            &from_arg,
        ],
        &[
            "",
            "keep.txt",
            "a",
            "a/b",
            "a/b/deep.txt",
            "build",
            "build/keep.c",
            "x",
            "x/build",
            "x/build/out",
            "x/build/out/o.bin",
            "x/logs",
            "data",
            "data/2024",
            "data/2024/01",
            "data/a.txt",
            "other",
            "other/a.gz",
        ],
    );
    for line in [
        "excluded src/scratch.tmp: pattern '*.tmp'",
        "excluded src/a/b/deep.tmp: pattern '*.tmp'",
        "excluded src/build/out: pattern 'build/out'",
        "excluded src/logs: pattern 'logs/'",
        "excluded src/data/2024/01/a.gz: pattern 'data/**/*.gz'",
        "excluded src/data/a.gz: pattern 'data/**/*.gz'",
        "excluded src/secret.key: pattern 'secret.*'",
        "excluded src/x/secret.pem: pattern 'secret.*'",
        "excluded src/#hash: pattern '\\#hash'",
    ] {
        assert!(
            plan.contains(line),
            "plan --verbose lacks '{line}':\n{plan}"
        );
    }
    assert!(plan.contains("9 names excluded"), "{plan}");
}

#[test]
fn caches_tags_and_size_limit() {
    if !loop_devices_available("caches_tags_and_size_limit") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src, "cache/CACHEDIR.TAG", CACHEDIR_TAG);
    write(&src, "cache/blob", b"cached");
    write(&src, "cache/sub/more", b"cached too");
    // A tag without the signature is just a file.
    write(&src, "notcache/CACHEDIR.TAG", b"Signature: 0000\n");
    write(&src, "notcache/blob", b"kept");
    write(&src, "private/.nobackup", b"");
    write(&src, "private/diary", b"dear diary");
    write(&src, "public/.nobackupx", b"");
    write(&src, "exact.bin", &vec![7u8; 1 << 20]);
    write(&src, "big.bin", &vec![8u8; (1 << 20) + 1]);
    let plan = backup_restore_expect(
        tmp.path(),
        &src,
        &[
            "--exclude-caches",
            "--exclude-if-present",
            ".nobackup",
            "--exclude-larger-than",
            "1M",
        ],
        &[
            "",
            "cache",
            "cache/CACHEDIR.TAG",
            "notcache",
            "notcache/CACHEDIR.TAG",
            "notcache/blob",
            "public",
            "public/.nobackupx",
            "exact.bin",
        ],
    );
    for line in [
        "excluded src/cache/* (contents): cache directory",
        "excluded src/private: contains '.nobackup'",
        "excluded src/big.bin: larger than 1.00 MiB",
    ] {
        assert!(
            plan.contains(line),
            "plan --verbose lacks '{line}':\n{plan}"
        );
    }
}

/// A tmpfs mounted on `path`, unmounted on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(test: &str, path: &Path) -> Option<Mount> {
    fs::create_dir_all(path).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(path)
        .output();
    let why = match out {
        Ok(out) if out.status.success() => return Some(Mount(path.to_path_buf())),
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => format!("mount: {e}"),
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs to mount a tmpfs under CI, but {why}");
    }
    eprintln!("SKIPPED {test}: cannot mount a tmpfs: {why}");
    None
}

#[test]
fn one_file_system_keeps_mount_points_empty() {
    let test = "one_file_system_keeps_mount_points_empty";
    if !loop_devices_available(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src, "home/file", b"on the source's filesystem");
    let Some(_mount) = mount_tmpfs(test, &src.join("mnt")) else {
        return;
    };
    write(&src, "mnt/elsewhere", b"on the tmpfs");
    write(&src, "mnt/sub/deeper", b"on the tmpfs too");

    // Without the option the tmpfs is walked like the rest.
    let devs = devices(tmp.path());
    let (code, out, err) = run(&with_devs("plan", &src, &devs, &["--json"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("src/mnt/elsewhere"), "{out}");
    drop(devs);

    let plan = backup_restore_expect(
        tmp.path(),
        &src,
        &["--one-file-system"],
        &["", "home", "home/file", "mnt"],
    );
    assert!(
        plan.contains("excluded src/mnt/* (contents): other filesystem"),
        "{plan}"
    );
}

#[test]
fn bad_glob_and_missing_exclude_from_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src, "f", b"f");
    let dev = format!("{},size=16M", tmp.path().join("dev").display());
    let src_arg = src.display().to_string();
    for command in ["plan", "backup"] {
        let (code, out, err) = pbio(&[command, &src_arg, "--dev", &dev, "--exclude", "a[b"]);
        assert_eq!(code, 2, "{command}: {out}\n{err}");
        assert!(err.contains("'a[b'"), "{command}: {err}");
        let missing = tmp.path().join("no-such-list");
        let missing_arg = missing.display().to_string();
        let (code, out, err) = pbio(&[
            command,
            &src_arg,
            "--dev",
            &dev,
            "--exclude-from",
            &missing_arg,
        ]);
        assert_eq!(code, 2, "{command}: {out}\n{err}");
        assert!(err.contains(&missing_arg), "{command}: {err}");
    }
    // Nothing was written.
    assert!(!tmp.path().join("dev").exists());
}
