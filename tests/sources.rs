//! Kinds of source (issue 10, claims 2-7): a raw block device holding a
//! filesystem, several independent trees in one set, incremental sets and
//! their chains, and files that change while they are read.

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use loopdev::{loop_devices_available, pbio, LoopDev};
use serde_json::Value;

fn run(args: &[String]) -> (i32, String, String) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    pbio(&refs)
}

/// The `summary` object of a `--json` run (other events may precede it).
fn summary(out: &str) -> Value {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .unwrap_or_else(|| panic!("no JSON summary in: {out}"))
}

fn with_devs(mut args: Vec<String>, devs: &[String]) -> Vec<String> {
    for d in devs {
        args.extend(["--dev".to_string(), d.clone()]);
    }
    args
}

fn backup(sources: &[&Path], devs: &[String], extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["backup".to_string()];
    args.extend(sources.iter().map(|s| s.display().to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--json".into());
    let (code, out, err) = run(&with_devs(args, devs));
    assert!(
        code == 0 || code == 1,
        "backup failed ({code}): {out}\n{err}"
    );
    (code, summary(&out), err)
}

fn restore(devs: &[String], to: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "restore".to_string(),
        "--to".into(),
        to.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    run(&with_devs(args, devs))
}

fn list(dev: &str) -> Value {
    let (code, out, err) = pbio(&["list", "--dev", dev, "--json"]);
    assert_eq!(code, 0, "list failed: {err}");
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap()
}

/// A file device of `mib` MiB in `dir`.
fn file_dev(dir: &Path, name: &str, mib: u64) -> String {
    format!("{},size={mib}M", dir.join(name).display())
}

/// The plain path of a file device given as `PATH,size=N`.
fn plain(spec: &str) -> String {
    spec.split(',').next().unwrap_or(spec).to_string()
}

/// True when the tools a test needs are installed; under CI a missing tool fails.
fn tools_available(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{} not installed", missing.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs {why} under CI");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
struct Mount(PathBuf);

impl Mount {
    fn new(what: &str, at: &Path, options: &[&str]) -> Mount {
        fs::create_dir_all(at).unwrap();
        let mut args: Vec<&str> = options.to_vec();
        let at_text = at.to_str().unwrap();
        args.extend([what, at_text]);
        sh("mount", &args);
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn assert_same_bytes(a: &Path, b: &Path, len: u64) {
    let (fa, fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut offset = 0u64;
    while offset < len {
        let n = (len - offset).min(1 << 20) as usize;
        fa.read_exact_at(&mut ba[..n], offset).unwrap();
        fb.read_exact_at(&mut bb[..n], offset).unwrap();
        if ba[..n] != bb[..n] {
            let i = (0..n).find(|&i| ba[i] != bb[i]).unwrap();
            panic!(
                "{} and {} differ at byte {}",
                a.display(),
                b.display(),
                offset + i as u64
            );
        }
        offset += n as u64;
    }
}

const IMAGE_BYTES: u64 = 64 << 20;

/// A loop device holding an ext4 filesystem with files, backed up raw over
/// three loop devices: the planner splits it; restored as an image file it
/// is byte-identical and mounts; restored onto a block device it is too,
/// and a device target needs --force and must not be mounted.
#[test]
fn raw_block_device_round_trip() {
    let test = "raw_block_device_round_trip";
    if !loop_devices_available(test) || !tools_available(test, &["mkfs.ext4", "mount", "umount"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let source = LoopDev::new(&root.join("fs.img"), IMAGE_BYTES);
    sh("mkfs.ext4", &["-q", "-F", &source.arg()]);
    let originals = root.join("originals");
    fs::create_dir_all(&originals).unwrap();
    {
        let mounted = Mount::new(&source.arg(), &root.join("mnt-src"), &[]);
        let mut rng = common::Rng::new(10);
        for (name, bytes) in [("a.bin", 5 << 20), ("b.txt", 12_345), ("c.bin", 1 << 20)] {
            let mut data = vec![0u8; bytes];
            rng.fill(&mut data);
            fs::write(mounted.0.join(name), &data).unwrap();
            fs::write(originals.join(name), &data).unwrap();
        }
        fs::create_dir(mounted.0.join("sub")).unwrap();
        fs::write(mounted.0.join("sub/hello"), b"hello from ext4\n").unwrap();
        // A source mounted read-write is backed up with a warning.
        let (code, _, err) = pbio(&["plan", &source.arg(), "--dev", &file_dev(root, "p.img", 80)]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("mounted read-write"), "{err}");
    }
    // A symlink to a block device (as /dev/vg/lv is) is the device, under the link's name.
    let link = root.join("disk-link");
    std::os::unix::fs::symlink(&source.path, &link).unwrap();
    let (code, out, err) = pbio(&[
        "plan",
        link.to_str().unwrap(),
        "--dev",
        &file_dev(root, "p.img", 80),
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let plan: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let segments = plan["segments"].as_array().unwrap();
    assert!(segments.iter().all(|s| s["path"] == "disk-link"), "{plan}");
    let planned: u64 = segments.iter().map(|s| s["length"].as_u64().unwrap()).sum();
    assert_eq!(planned, IMAGE_BYTES, "{plan}");

    let backups: Vec<LoopDev> = (0..3)
        .map(|i| LoopDev::new(&root.join(format!("backup{i}.img")), 28 << 20))
        .collect();
    let devs: Vec<String> = backups.iter().map(LoopDev::arg).collect();

    let (code, sum, err) = backup(&[source.path.as_path()], &devs, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sum["payload_bytes"].as_u64().unwrap(), IMAGE_BYTES, "{sum}");
    for d in sum["devices"].as_array().unwrap() {
        assert!(
            d["payload_bytes"].as_u64().unwrap() > 0,
            "every device holds part of the image: {sum}"
        );
        assert!(
            d["reads_direct"].as_u64().unwrap() > 0 && d["reads_buffered"] == 0,
            "the device is read with O_DIRECT: {d}"
        );
    }
    let name = source
        .path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let catalog = list(&devs[0]);
    let files = catalog["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{catalog}");
    assert_eq!(files[0]["path"], name.as_str());
    assert_eq!(files[0]["kind"], "blockdev");
    assert_eq!(files[0]["size_bytes"].as_u64().unwrap(), IMAGE_BYTES);

    // Restored as an image file in the --to directory.
    let out = root.join("restored");
    let (code, stdout, err) = restore(&devs, &out, &[]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    let image = out.join(&name);
    assert!(fs::symlink_metadata(&image).unwrap().is_file());
    assert_eq!(fs::metadata(&image).unwrap().len(), IMAGE_BYTES);
    assert_same_bytes(&source.path, &image, IMAGE_BYTES);
    {
        let mounted = Mount::new(
            image.to_str().unwrap(),
            &root.join("mnt-image"),
            &["-o", "ro,loop"],
        );
        for name in ["a.bin", "b.txt", "c.bin"] {
            assert_eq!(
                fs::read(mounted.0.join(name)).unwrap(),
                fs::read(originals.join(name)).unwrap(),
                "{name}"
            );
        }
        assert_eq!(
            fs::read(mounted.0.join("sub/hello")).unwrap(),
            b"hello from ext4\n"
        );
    }

    // Restored onto a block device: refused without --force, then written.
    let target = LoopDev::new(&root.join("target.img"), IMAGE_BYTES + (4 << 20));
    {
        let garbage = vec![0xa5u8; 1 << 20];
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&target.path)
            .unwrap();
        for i in 0..(IMAGE_BYTES >> 20) + 4 {
            f.write_all_at(&garbage, i << 20).unwrap();
        }
        f.sync_all().unwrap();
    }
    let (code, _, err) = restore(&devs, &target.path, &[]);
    assert_eq!(code, 2, "a device target needs --force: {err}");
    assert!(err.contains("--force"), "{err}");
    let mut head = [0u8; 4];
    fs::File::open(&target.path)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    assert_eq!(head, [0xa5; 4], "nothing written without --force");
    let (code, stdout, err) = restore(&devs, &target.path, &["--force"]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert_same_bytes(&source.path, &target.path, IMAGE_BYTES);
    {
        let mounted = Mount::new(&target.arg(), &root.join("mnt-target"), &["-o", "ro"]);
        assert_eq!(
            fs::read(mounted.0.join("a.bin")).unwrap(),
            fs::read(originals.join("a.bin")).unwrap()
        );
        // A mounted target is refused, even with --force.
        let (code, _, err) = restore(&devs, &target.path, &["--force"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("mounted"), "{err}");
    }
    let (code, out, err) = run(&with_devs(vec!["verify".into()], &devs));
    assert_eq!(code, 0, "{out}\n{err}");
}

/// Two independent trees in one set: each under its own name, each
/// restored to its own directory, identical to its source.
#[test]
fn two_independent_trees() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let alpha = root.join("one/alpha");
    let beta = root.join("two/beta");
    common::make_fixture_tree(&alpha, 200, 6 << 20);
    common::make_fixture_tree(&beta, 120, 3 << 20);
    let devs: Vec<String> = (0..2)
        .map(|i| file_dev(root, &format!("d{i}.img"), 48))
        .collect();
    let (code, sum, err) = backup(&[&alpha, &beta], &devs, &[]);
    assert_eq!(code, 0, "{err}");
    for d in sum["devices"].as_array().unwrap() {
        assert!(d["payload_bytes"].as_u64().unwrap() > 0, "{sum}");
    }
    let plain: Vec<String> = devs.iter().map(|d| plain(d)).collect();
    let catalog = list(&plain[1]);
    let tops: Vec<&str> = catalog["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .filter(|p| !p.contains('/'))
        .collect();
    assert_eq!(tops, ["alpha", "beta"]);
    let out = root.join("out");
    let (code, stdout, err) = restore(&plain, &out, &[]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    for (src, name) in [(&alpha, "alpha"), (&beta, "beta")] {
        let diffs = common::compare_trees(src, &out.join(name));
        assert!(diffs.is_empty(), "{name}:\n{}", diffs.join("\n"));
    }
    // One of them alone.
    let only = root.join("only-beta");
    let (code, stdout, err) = restore(&plain, &only, &["--only", "beta"]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    assert!(!only.join("alpha").exists());
    let diffs = common::compare_trees(&beta, &only.join("beta"));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// A FIFO inside a tree is stored and restored as one; a socket is named
/// and skipped; the rest of the tree is backed up and restores whole.
#[test]
fn special_files_in_a_tree_are_kept_and_sockets_skipped_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let tree = root.join("tree");
    common::make_fixture_tree(&tree, 20, 1 << 20);
    let fifo = tree.join("a-fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let socket = tree.join("a-socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let devs: Vec<String> = (0..2)
        .map(|i| file_dev(root, &format!("d{i}.img"), 32))
        .collect();
    let (code, sum, err) = backup(&[&tree], &devs, &[]);
    assert_eq!(code, 0, "{sum}\n{err}");
    let skipped: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("pbio: skipped "))
        .collect();
    assert_eq!(skipped.len(), 1, "{err}");
    assert!(skipped[0].contains("a-socket"), "{err}");
    let plain: Vec<String> = devs.iter().map(|d| plain(d)).collect();
    let files = list(&plain[0])["files"].as_array().unwrap().clone();
    let kind_of = |name: &str| {
        files
            .iter()
            .find(|f| f["path"].as_str().unwrap().ends_with(name))
            .map(|f| f["kind"].as_str().unwrap().to_string())
    };
    assert_eq!(kind_of("a-fifo").as_deref(), Some("fifo"));
    assert_eq!(kind_of("a-socket"), None);
    let out = root.join("out");
    let (code, stdout, err) = restore(&plain, &out, &[]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    // Compare with the tree as stored: without the socket, its mtime as it was.
    let mtime = fs::metadata(&tree).unwrap().modified().unwrap();
    fs::remove_file(&socket).unwrap();
    fs::File::open(&tree).unwrap().set_modified(mtime).unwrap();
    let diffs = common::compare_trees(&tree, &out.join("tree"));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::symlink_metadata(out.join("tree/a-fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
}

fn write_random(path: &Path, bytes: usize, seed: u64) -> u64 {
    let mut data = vec![0u8; bytes];
    common::Rng::new(seed).fill(&mut data);
    fs::write(path, &data).unwrap();
    bytes as u64
}

/// A full set, changes (new, modified, deleted, renamed files and a renamed
/// directory), an incremental set that stores only the changed bytes, a
/// second increment over an exported catalog, and restores of the chain
/// (devices in any order) that equal the final tree exactly.
#[test]
fn incremental_chain() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let src = root.join("src/tree");
    common::make_fixture_tree(&src, 300, 8 << 20);
    let full: Vec<String> = (0..2)
        .map(|i| file_dev(root, &format!("full{i}.img"), 40))
        .collect();
    let (code, sum, err) = backup(&[&src], &full, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(sum["payload_bytes"].as_u64().unwrap() > 8 << 20, "{sum}");
    let full_plain: Vec<String> = full.iter().map(|d| plain(d)).collect();

    // Changes.
    let mut changed_bytes = 0;
    changed_bytes += write_random(&src.join("new.bin"), 300_000, 1);
    fs::create_dir(src.join("new-dir")).unwrap();
    changed_bytes += write_random(&src.join("new-dir/inner"), 4097, 2);
    // Modified in place; its hard link small/hard-b sees the change too.
    fs::OpenOptions::new()
        .write(true)
        .open(src.join("hard-a"))
        .unwrap()
        .write_all_at(b"changed", 100)
        .unwrap();
    changed_bytes += 3000;
    // Modified: grown.
    fs::OpenOptions::new()
        .append(true)
        .open(src.join("setuid-prog"))
        .unwrap()
        .write_all(&[7u8; 100])
        .unwrap();
    changed_bytes += 600;
    fs::remove_file(src.join("small/d00/e00/f000000")).unwrap();
    fs::remove_file(src.join("dangling")).unwrap();
    fs::rename(src.join("large.bin"), src.join("renamed-large.bin")).unwrap();
    let odd = src.join(std::ffi::OsStr::from_bytes(b"dir\xff"));
    fs::rename(&odd, src.join("dir-renamed")).unwrap();

    // The earlier set cannot be a target of the increment.
    let (code, _, err) = run(&with_devs(
        vec![
            "backup".into(),
            src.display().to_string(),
            "--since".into(),
            full_plain[0].clone(),
            // Past the overwrite guard, which refuses a device holding a set anyway.
            "--force".into(),
        ],
        &[full_plain[0].clone()],
    ));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("would be overwritten"), "{err}");
    let inc1: Vec<String> = (0..2)
        .map(|i| file_dev(root, &format!("inc1-{i}.img"), 8))
        .collect();
    let (code, sum, err) = backup(&[&src], &inc1, &["--since", &full_plain[1]]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        sum["payload_bytes"].as_u64().unwrap(),
        changed_bytes,
        "only the new and modified files are stored: {sum}\n{err}"
    );
    let inc1_plain: Vec<String> = inc1.iter().map(|d| plain(d)).collect();
    let catalog = list(&inc1_plain[0]);
    let full_id = list(&full_plain[0])["set_id"].clone();
    assert_eq!(catalog["ancestors"], serde_json::json!([full_id]));
    let removed: Vec<&str> = catalog["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for path in [
        "tree/dangling",
        "tree/small/d00/e00/f000000",
        "tree/large.bin",
    ] {
        assert!(
            removed.contains(&path),
            "{path} not in removed: {removed:?}"
        );
    }
    let renamed = catalog["renamed"].as_array().unwrap();
    assert!(
        renamed.contains(
            &serde_json::json!({"path": "tree/renamed-large.bin", "from": "tree/large.bin"})
        ),
        "{renamed:?}"
    );
    assert!(
        renamed
            .iter()
            .any(|r| r["path"].as_str().unwrap().starts_with("tree/dir-renamed/")),
        "{renamed:?}"
    );

    // The chain, devices in any order: exactly the tree as it is now.
    let mut chain: Vec<String> = vec![
        inc1_plain[1].clone(),
        full_plain[0].clone(),
        inc1_plain[0].clone(),
        full_plain[1].clone(),
    ];
    let out = root.join("restore-1");
    let (code, stdout, err) = restore(&chain, &out, &[]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    let diffs = common::compare_trees(&src, &out.join("tree"));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    let (code, stdout, err) = run(&with_devs(vec!["verify".into()], &chain));
    assert_eq!(code, 0, "{stdout}\n{err}");

    // The increment alone: its own changes restore, the rest is named missing.
    let (code, stdout, err) = restore(&inc1_plain, &root.join("restore-inc-only"), &["--json"]);
    assert_eq!(code, 3, "{stdout}\n{err}");
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let missing = report["missing"].as_array().unwrap();
    assert!(missing.iter().any(|m| m["path"] == "tree/renamed-large.bin"
        && m["set_given"] == false
        && m["set_id"] == full_id));
    assert_eq!(
        fs::read(root.join("restore-inc-only/tree/new.bin")).unwrap(),
        fs::read(src.join("new.bin")).unwrap()
    );

    // A second increment, over the first's exported catalog.
    let exported = root.join("inc1.pbio");
    let (code, _, err) = pbio(&[
        "list",
        "--dev",
        &inc1_plain[0],
        "--export",
        exported.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    changed_bytes = write_random(&src.join("new.bin"), 200_000, 3);
    fs::remove_file(src.join("renamed-large.bin")).unwrap();
    fs::rename(src.join("sparse.img"), src.join("small/sparse-moved.img")).unwrap();
    let inc2: Vec<String> = vec![file_dev(root, "inc2.img", 8)];
    let (code, sum, err) = backup(&[&src], &inc2, &["--since", exported.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        sum["payload_bytes"].as_u64().unwrap(),
        changed_bytes,
        "{sum}\n{err}"
    );
    let inc2_plain = plain(&inc2[0]);
    let catalog = list(&inc2_plain);
    assert_eq!(catalog["ancestors"].as_array().unwrap().len(), 2);
    // Flattened: the moved sparse file refers to the full set, not to inc1.
    let moved = catalog["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "tree/small/sparse-moved.img")
        .unwrap();
    assert_eq!(moved["data_in_set"], full_id);

    chain.insert(1, inc2_plain.clone());
    chain.reverse();
    let out = root.join("restore-2");
    let (code, stdout, err) = restore(&chain, &out, &[]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    let diffs = common::compare_trees(&src, &out.join("tree"));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));

    // Sets that are not one chain are refused.
    let other = vec![file_dev(root, "other.img", 40)];
    backup(&[&src], &other, &[]);
    let (code, _, err) = restore(
        &[full_plain[0].clone(), plain(&other[0])],
        &root.join("x"),
        &[],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("not one chain"), "{err}");
}

/// A large file appended to while pbio reads it is reported by path, the
/// exit code is 1, and the set still restores (the file as it was at the
/// walk: the bytes up to its size then).
#[test]
fn file_changed_during_backup_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let src = root.join("src");
    fs::create_dir_all(&src).unwrap();
    write_random(&src.join("steady.bin"), 1 << 20, 4);
    let growing = src.join("growing.bin");
    write_random(&growing, 96 << 20, 5);
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let stop = stop.clone();
        let growing = growing.clone();
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(&growing).unwrap();
            let block = vec![0x42u8; 64 << 10];
            while !stop.load(Ordering::Relaxed) {
                f.write_all(&block).unwrap();
                f.sync_data().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    let devs: Vec<String> = (0..2)
        .map(|i| file_dev(root, &format!("d{i}.img"), 80))
        .collect();
    let result = std::panic::catch_unwind(|| backup(&[&src], &devs, &["--chunk", "256K"]));
    stop.store(true, Ordering::Relaxed);
    appender.join().unwrap();
    let (code, sum, err) = result.unwrap();
    assert_eq!(
        code, 1,
        "a changed file makes the exit code 1: {sum}\n{err}"
    );
    assert!(
        err.contains("src/growing.bin") && err.contains("changed while it was being backed up"),
        "{err}"
    );
    let changed = sum["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "{sum}");
    assert_eq!(changed[0]["path"], "src/growing.bin");
    assert!(
        changed[0]["what"].as_str().unwrap().contains("size"),
        "{sum}"
    );

    let plain: Vec<String> = devs.iter().map(|d| plain(d)).collect();
    let out = root.join("out");
    let (code, stdout, err) = restore(&plain, &out, &[]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    let restored = fs::read(out.join("src/growing.bin")).unwrap();
    let now = fs::read(&growing).unwrap();
    assert!(restored.len() >= 96 << 20 && restored.len() < now.len());
    assert!(
        now.starts_with(&restored),
        "the bytes up to the walked size"
    );
    assert_eq!(
        fs::read(out.join("src/steady.bin")).unwrap(),
        fs::read(src.join("steady.bin")).unwrap()
    );
}

/// A 1 GiB sparse file holding 64 MiB of data and 64 MiB of dense files
/// over two loop devices: the planner weighs the sparse file by what it
/// stores, so the devices end within a chunk or two of each other in
/// payload bytes (by apparent size one device would get 1 GiB against
/// 64 MiB, and in stored bytes 64 MiB against 128 MiB or so). The restore
/// equals the source, the sparse file still sparse.
#[test]
fn sparse_file_balanced_by_stored_bytes() {
    if !loop_devices_available("sparse_file_balanced_by_stored_bytes") {
        return;
    }
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let src = root.join("src");
    fs::create_dir_all(&src).unwrap();
    let sparse = fs::File::create(src.join("sparse.img")).unwrap();
    sparse.set_len(1 << 30).unwrap();
    let mut rng = common::Rng::new(21);
    let mut run_bytes = vec![0u8; (4 * MIB) as usize];
    for i in 0..16u64 {
        rng.fill(&mut run_bytes);
        sparse.write_all_at(&run_bytes, i * 64 * MIB).unwrap();
    }
    sparse.sync_all().unwrap();
    drop(sparse);
    for i in 0..16u64 {
        write_random(
            &src.join(format!("dense{i:02}")),
            (4 * MIB) as usize,
            100 + i,
        );
    }
    let loops: Vec<LoopDev> = (0..2)
        .map(|i| LoopDev::new(&root.join(format!("dev{i}.img")), 96 * MIB))
        .collect();
    let devs: Vec<String> = loops.iter().map(LoopDev::arg).collect();
    let (code, sum, err) = backup(&[&src], &devs, &["--force"]);
    assert_eq!(code, 0, "{err}");
    let payload: Vec<u64> = sum["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["payload_bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(payload.iter().sum::<u64>(), 128 * MIB, "{sum}");
    assert!(
        payload[0].abs_diff(payload[1]) <= 2 * MIB,
        "payload per device {payload:?} (stored bytes should balance)"
    );
    let out = root.join("out");
    let (code, stdout, err) = restore(&devs, &out, &[]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    let diffs = common::compare_trees(&src, &out.join("src"));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}
