//! The test helpers judge the restore tests, so they are tested first:
//! a `cp -a --sparse=always` copy of the fixture must compare equal, and a
//! single changed byte, mode, mtime, link or hole must be reported.

mod common;

use common::{compare_trees, make_fixture_tree};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

fn cp(args: &[&str], from: &Path, to: &Path) {
    let status = Command::new("cp")
        .args(args)
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp");
    assert!(status.success(), "cp {args:?} failed: {status}");
}

/// Fixture in `tmp/src`, copy in `tmp/dst`.
fn fixture_and_copy(
    cp_args: &[&str],
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    make_fixture_tree(&src, 60, 3 << 20);
    cp(cp_args, &src, &dst);
    (tmp, src, dst)
}

fn has(diffs: &[String], needle: &str) -> bool {
    diffs.iter().any(|d| d.contains(needle))
}

#[test]
fn fixture_has_what_it_promises() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("fx");
    make_fixture_tree(&root, 20, 1 << 20);
    let sparse = fs::metadata(root.join("sparse.img")).unwrap();
    assert_eq!(sparse.len(), common::SPARSE_FILE_BYTES);
    assert!(
        common::is_sparse(&sparse),
        "sparse.img allocated {} blocks",
        sparse.blocks()
    );
    let a = fs::metadata(root.join("hard-a")).unwrap();
    let b = fs::metadata(root.join("small/hard-b")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    let setuid = fs::metadata(root.join("setuid-prog")).unwrap();
    assert_eq!(setuid.mode() & 0o7777, 0o4755);
    let old = fs::symlink_metadata(root.join("old")).unwrap();
    assert!(old.mtime() < 0);
    assert_eq!(
        fs::read_link(root.join("link-to-large")).unwrap(),
        Path::new("large.bin")
    );
    let large = fs::read(root.join("large.bin")).unwrap();
    assert_eq!(large.len(), 1 << 20);
    assert!(large.iter().any(|&b| b != 0));
    let tree = common::lstat_tree(&root);
    assert!(tree.contains_key(b"caf\xe9".as_slice()));
    assert!(tree.contains_key(b"dir\xff/inner\xfe.txt".as_slice()));
    assert_eq!(
        tree.keys()
            .filter(|k| k.starts_with(b"small/d"))
            .filter(|k| tree[*k].is_file())
            .count(),
        20
    );
    // Deterministic: a second fixture with the same arguments compares equal
    // in content (inode-independent parts), so tests can rebuild it.
    let again = tmp.path().join("fx2");
    make_fixture_tree(&again, 20, 1 << 20);
    assert_eq!(fs::read(again.join("large.bin")).unwrap(), large);
}

#[test]
fn identical_copy_has_no_differences() {
    let (_tmp, src, dst) = fixture_and_copy(&["-a", "--sparse=always"]);
    let diffs = compare_trees(&src, &dst);
    assert!(diffs.is_empty(), "unexpected differences: {diffs:#?}");
}

#[test]
fn changed_byte_is_reported() {
    let (_tmp, src, dst) = fixture_and_copy(&["-a", "--sparse=always"]);
    let path = dst.join("small/d03/e00/f000003");
    let metadata = fs::metadata(&path).unwrap();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let offset = metadata.len() / 2;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], offset).unwrap();
    drop(file);
    // Put the mtime back so only the content differs.
    utimensat(
        None,
        &path,
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::new(metadata.mtime(), metadata.mtime_nsec()),
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let diffs = compare_trees(&src, &dst);
    assert_eq!(
        diffs,
        vec![format!(
            "small/d03/e00/f000003: content differs at byte {offset}"
        )]
    );
}

#[test]
fn changed_mode_is_reported() {
    let (_tmp, src, dst) = fixture_and_copy(&["-a", "--sparse=always"]);
    fs::set_permissions(dst.join("setuid-prog"), fs::Permissions::from_mode(0o755)).unwrap();
    let diffs = compare_trees(&src, &dst);
    assert_eq!(
        diffs,
        vec!["setuid-prog: mode 0o104755 != 0o100755".to_string()]
    );
}

#[test]
fn changed_mtime_is_reported() {
    let (_tmp, src, dst) = fixture_and_copy(&["-a", "--sparse=always"]);
    let path = dst.join("small/d01");
    let metadata = fs::symlink_metadata(&path).unwrap();
    // One nanosecond is enough.
    let nsec = (metadata.mtime_nsec() + 1) % 1_000_000_000;
    utimensat(
        None,
        &path,
        &TimeSpec::UTIME_OMIT,
        &TimeSpec::new(metadata.mtime(), nsec),
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let diffs = compare_trees(&src, &dst);
    assert_eq!(diffs.len(), 1, "{diffs:#?}");
    assert!(diffs[0].starts_with("small/d01: mtime "), "{diffs:#?}");
}

#[test]
fn structure_changes_are_reported() {
    let (_tmp, src, dst) = fixture_and_copy(&["-a", "--sparse=always"]);
    // Break the hard link (same content, same metadata, separate inode).
    let b = dst.join("small/hard-b");
    let metadata = fs::metadata(&b).unwrap();
    let content = fs::read(&b).unwrap();
    fs::remove_file(&b).unwrap();
    fs::write(&b, content).unwrap();
    fs::set_permissions(&b, fs::Permissions::from_mode(metadata.mode())).unwrap();
    std::os::unix::fs::lchown(&b, Some(metadata.uid()), Some(metadata.gid())).unwrap();
    // Retarget a symlink, drop a file, add a file.
    fs::remove_file(dst.join("dangling")).unwrap();
    std::os::unix::fs::symlink("elsewhere", dst.join("dangling")).unwrap();
    fs::remove_file(dst.join("empty")).unwrap();
    fs::write(dst.join("new-file"), b"x").unwrap();
    let diffs = compare_trees(&src, &dst);
    assert!(
        has(
            &diffs,
            "hard-a and small/hard-b: hard links of each other in a, not in b"
        ),
        "{diffs:#?}"
    );
    assert!(has(&diffs, "dangling: symlink target"), "{diffs:#?}");
    assert!(has(&diffs, "empty: missing in b"), "{diffs:#?}");
    assert!(has(&diffs, "new-file: extra in b"), "{diffs:#?}");
}

#[test]
fn filled_holes_are_reported() {
    let (_tmp, src, dst) = fixture_and_copy(&["-a", "--sparse=never"]);
    let diffs = compare_trees(&src, &dst);
    assert_eq!(diffs.len(), 1, "{diffs:#?}");
    assert!(
        diffs[0].starts_with("sparse.img: sparse file not sparse"),
        "{diffs:#?}"
    );
}
