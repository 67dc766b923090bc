//! `pbio diff` (issue 21): a set on real loop devices against the live
//! tree it was made from. Exit 0 after no change; exit 1 naming the file
//! after its content changed with its size and mtime kept (only the
//! digest can see that), after a chmod, after deleting one file and adding
//! another; a symlink put where a stored directory was is reported, never
//! followed; bad input is exit 2. A user xattr changed, removed or added,
//! a file flag set and a device node's number changed are each reported
//! naming the file (and the attribute), exit 1; put back, exit 0.

mod common;
#[path = "common/loopdev.rs"]
mod loopdev;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::Rng;
use loopdev::{loop_devices_available, pbio, LoopDev};

const DEVICE_BYTES: u64 = 64 << 20;
const LARGE_FILE_BYTES: usize = (5 << 20) + 12345;

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, bytes).unwrap();
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    src: PathBuf,
    devs: Vec<LoopDev>,
}

impl Fixture {
    /// A tree under `dir/src` (with a sparse file and a large one spread
    /// over both devices), backed up onto two loop devices.
    fn new() -> Fixture {
        Fixture::with(|_| {})
    }

    /// `new`, with `more` done to the source before the backup.
    fn with(more: impl FnOnce(&Path)) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let src = dir.join("src");
        write(&src, "a.txt", b"alpha\n");
        write(&src, "docs/b.txt", b"bravo\n");
        write(&src, "docs/c.txt", b"charlie\n");
        let mut large = vec![0u8; LARGE_FILE_BYTES];
        Rng::new(7).fill(&mut large);
        write(&src, "data/large.bin", &large);
        let sparse = fs::File::create(src.join("data/sparse.bin")).unwrap();
        sparse.set_len(8 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&sparse, b"in the middle", 3 << 20).unwrap();
        drop(sparse);
        std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
        fs::hard_link(src.join("a.txt"), src.join("docs/hard")).unwrap();
        more(&src);
        let devs: Vec<LoopDev> = (0..2)
            .map(|i| LoopDev::new(&dir.join(format!("dev{i}.img")), DEVICE_BYTES))
            .collect();
        let mut args = vec!["backup".to_string(), src.display().to_string()];
        for d in &devs {
            args.extend(["--dev".to_string(), d.arg()]);
        }
        args.push("--force".into());
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "backup: {out}\n{err}");
        Fixture {
            _tmp: tmp,
            dir,
            src,
            devs,
        }
    }

    /// `pbio diff --dev ... --to DIR` with `options`.
    fn diff(&self, options: &[&str]) -> (i32, String, String) {
        let mut args = vec![
            "diff".to_string(),
            "--to".into(),
            self.dir.display().to_string(),
        ];
        for d in &self.devs {
            args.extend(["--dev".to_string(), d.arg()]);
        }
        args.extend(options.iter().map(|s| s.to_string()));
        run(&args)
    }

    /// The differences of `diff --json`, as (path, what).
    fn differences(&self) -> (i32, Vec<(String, String)>) {
        let (code, out, err) = self.diff(&["--json"]);
        let summary: serde_json::Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
        assert_eq!(summary["same"], code == 0, "{summary}");
        let found = summary["differences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["path"].as_str().unwrap().to_string(),
                    d["what"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        (code, found)
    }
}

fn run(args: &[String]) -> (i32, String, String) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    pbio(&refs)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(p, w)| (p.to_string(), w.to_string()))
        .collect()
}

#[test]
fn diff_sees_content_mode_deletions_and_additions() {
    if !loop_devices_available("diff") {
        return;
    }
    let f = Fixture::new();

    // No change: exit 0.
    let (code, out, err) = f.diff(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(": same"), "{out}");
    assert!(out.contains("10 entries"), "{out}");

    // One byte of the large file changed, size and mtime kept (ns too):
    // only the digest sees it.
    let large = f.src.join("data/large.bin");
    let before = fs::metadata(&large).unwrap();
    let file = fs::OpenOptions::new().write(true).open(&large).unwrap();
    let mut byte = [0u8; 1];
    std::os::unix::fs::FileExt::read_exact_at(&fs::File::open(&large).unwrap(), &mut byte, 3 << 20)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[byte[0] ^ 0x5a], 3 << 20).unwrap();
    file.set_modified(before.modified().unwrap()).unwrap();
    drop(file);
    let after = fs::metadata(&large).unwrap();
    assert_eq!(
        (after.len(), after.mtime(), after.mtime_nsec()),
        (before.len(), before.mtime(), before.mtime_nsec())
    );
    let (code, found) = f.differences();
    assert_eq!(code, 1);
    assert_eq!(found, pairs(&[("src/data/large.bin", "content")]));
    let (code, out, _) = f.diff(&[]);
    assert_eq!(code, 1);
    assert!(out.contains("src/data/large.bin: content differs"), "{out}");
    // Put back: the same again.
    let file = fs::OpenOptions::new().write(true).open(&large).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &byte, 3 << 20).unwrap();
    file.set_modified(before.modified().unwrap()).unwrap();
    drop(file);
    assert_eq!(f.differences(), (0, Vec::new()));

    // The sparse file copied without its holes (same bytes, size, mode
    // and mtime): the same.
    let sparse = f.src.join("data/sparse.bin");
    let stat = fs::metadata(&sparse).unwrap();
    assert!(
        common::is_sparse(&stat),
        "the fixture's file must be sparse"
    );
    let bytes = fs::read(&sparse).unwrap();
    let copy = f.src.join("data/.copy");
    fs::write(&copy, &bytes).unwrap();
    fs::set_permissions(&copy, stat.permissions()).unwrap();
    fs::File::options()
        .write(true)
        .open(&copy)
        .unwrap()
        .set_modified(stat.modified().unwrap())
        .unwrap();
    fs::rename(&copy, &sparse).unwrap();
    assert!(!common::is_sparse(&fs::metadata(&sparse).unwrap()));
    assert_eq!(f.differences(), (0, Vec::new()));

    // chmod.
    fs::set_permissions(f.src.join("docs/b.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out, _) = f.diff(&[]);
    assert_eq!(code, 1);
    assert!(
        out.contains("src/docs/b.txt: mode differs: 0644 in the set, 0600 on disk"),
        "{out}"
    );
    let (_, found) = f.differences();
    assert_eq!(found, pairs(&[("src/docs/b.txt", "mode")]));

    // One deleted, one added.
    fs::remove_file(f.src.join("docs/c.txt")).unwrap();
    fs::write(f.src.join("docs/new.txt"), b"new\n").unwrap();
    let (code, found) = f.differences();
    assert_eq!(code, 1);
    assert_eq!(
        found,
        pairs(&[
            ("src/docs/b.txt", "mode"),
            ("src/docs/c.txt", "missing"),
            ("src/docs/new.txt", "new"),
        ])
    );

    // Only some paths: what is outside them is not looked at.
    let (code, out, err) = f.diff(&["src/data", "link"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, _, err) = f.diff(&["src/nothing"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("'src/nothing'"), "{err}");
}

#[test]
fn diff_never_follows_a_symlink_on_the_live_side() {
    if !loop_devices_available("diff_symlink") {
        return;
    }
    let f = Fixture::new();
    // The stored directory src/docs becomes a symlink to an identical copy
    // elsewhere: reported as a kind change, its contents as missing.
    let elsewhere = f.dir.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    for name in ["b.txt", "c.txt", "hard"] {
        fs::copy(f.src.join("docs").join(name), elsewhere.join(name)).unwrap();
    }
    fs::remove_dir_all(f.src.join("docs")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, f.src.join("docs")).unwrap();
    // And the symlink `link` points elsewhere.
    fs::remove_file(f.src.join("link")).unwrap();
    std::os::unix::fs::symlink("docs/b.txt", f.src.join("link")).unwrap();
    let (code, found) = f.differences();
    assert_eq!(code, 1);
    let expected = pairs(&[
        ("src/docs", "kind"),
        ("src/docs/b.txt", "missing"),
        ("src/docs/c.txt", "missing"),
        ("src/docs/hard", "missing"),
        ("src/link", "mtime"),
        ("src/link", "symlink_target"),
    ]);
    assert_eq!(found, expected);

    // Bad input: --to not a directory.
    let (code, _, err) = run(&[
        "diff".to_string(),
        "--dev".into(),
        f.devs[0].arg(),
        "--to".into(),
        f.dir.join("nope").display().to_string(),
    ]);
    assert_eq!(code, 2, "{err}");
}

fn c_path(path: &Path) -> std::ffi::CString {
    std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())).unwrap()
}

/// `setfattr -n NAME -v VALUE PATH` (not following a symlink).
fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let (c, n) = (c_path(path), std::ffi::CString::new(name).unwrap());
    // SAFETY: NUL-terminated path and name; `value` valid for its length.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "lsetxattr {name}: {}",
        std::io::Error::last_os_error()
    );
}

/// `setfattr -x NAME PATH`.
fn remove_xattr(path: &Path, name: &str) {
    let (c, n) = (c_path(path), std::ffi::CString::new(name).unwrap());
    // SAFETY: NUL-terminated path and name.
    let r = unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) };
    assert_eq!(
        r,
        0,
        "lremovexattr {name}: {}",
        std::io::Error::last_os_error()
    );
}

/// FS_IOC_SETFLAGS on the regular file `path` (`chattr`).
fn set_flags(path: &Path, flags: u32) {
    let file = fs::File::open(path).unwrap();
    let flags = flags as libc::c_int;
    // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer, which
    // points at `flags`, alive for the call; `file` is open.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::FS_IOC_SETFLAGS,
            &flags,
        )
    };
    assert_eq!(r, 0, "FS_IOC_SETFLAGS: {}", std::io::Error::last_os_error());
}

/// The character device `path` made anew as `major:minor`, its mode and
/// mtime kept.
fn remake_char_node(path: &Path, major: u64, minor: u64) {
    use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let before = fs::symlink_metadata(path).unwrap();
    let _ = fs::remove_file(path);
    mknod(
        path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(before.mode() & 0o7777),
        nix::sys::stat::makedev(major, minor),
    )
    .unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(before.mode() & 0o7777)).unwrap();
    let when = TimeSpec::new(before.mtime(), before.mtime_nsec());
    utimensat(None, path, &when, &when, UtimensatFlags::NoFollowSymlink).unwrap();
}

/// The JSON difference objects of `diff --json`.
fn json_differences(f: &Fixture) -> Vec<serde_json::Value> {
    let (_, out, err) = f.diff(&["--json"]);
    let summary: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    summary["differences"].as_array().unwrap().clone()
}

#[test]
fn diff_sees_xattr_flag_and_device_number_changes() {
    if !loop_devices_available("diff_metadata") {
        return;
    }
    let f = Fixture::with(|src| {
        set_xattr(&src.join("docs/b.txt"), "user.note", b"one");
        nix::sys::stat::mknod(
            &src.join("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o640),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
    });
    let b = f.src.join("docs/b.txt");
    let (code, out, err) = f.diff(&[]);
    assert_eq!(code, 0, "{out}\n{err}");

    // The value changed.
    set_xattr(&b, "user.note", b"two!");
    let (code, found) = f.differences();
    assert_eq!(code, 1);
    assert_eq!(found, pairs(&[("src/docs/b.txt", "xattr")]));
    let d = &json_differences(&f)[0];
    assert_eq!(
        (&d["name"], &d["set"], &d["disk"]),
        (&"user.note".into(), &"6f6e65".into(), &"74776f21".into()),
        "{d}"
    );
    let (code, out, _) = f.diff(&[]);
    assert_eq!(code, 1);
    assert!(
        out.contains("src/docs/b.txt: xattr user.note changed: 3 bytes in the set, 4 on disk"),
        "{out}"
    );

    // Removed.
    remove_xattr(&b, "user.note");
    let (code, out, _) = f.diff(&[]);
    assert_eq!(code, 1);
    assert!(
        out.contains("src/docs/b.txt: xattr user.note removed on disk (in the set)"),
        "{out}"
    );
    assert_eq!(json_differences(&f)[0]["disk"], serde_json::Value::Null);

    // Put back: the same.
    set_xattr(&b, "user.note", b"one");
    assert_eq!(f.differences(), (0, Vec::new()));

    // One added on another file (a directory).
    set_xattr(&f.src.join("docs"), "user.extra", b"x");
    let (code, out, _) = f.diff(&[]);
    assert_eq!(code, 1);
    assert!(
        out.contains("src/docs: xattr user.extra added on disk (not in the set)"),
        "{out}"
    );
    remove_xattr(&f.src.join("docs"), "user.extra");
    assert_eq!(f.differences(), (0, Vec::new()));

    // A settable file flag (nodump, FS_NODUMP_FL) set, then cleared.
    const NODUMP: u32 = 0x40;
    let c = f.src.join("docs/c.txt");
    set_flags(&c, NODUMP);
    let (code, found) = f.differences();
    assert_eq!(code, 1);
    assert_eq!(found, pairs(&[("src/docs/c.txt", "flags")]));
    let (_, out, _) = f.diff(&[]);
    assert!(
        out.contains("src/docs/c.txt: file flags differ: 0x0 in the set, 0x40 on disk"),
        "{out}"
    );
    set_flags(&c, 0);
    assert_eq!(f.differences(), (0, Vec::new()));

    // The character device made anew as 1:5, mode and mtime kept.
    let null = f.src.join("null");
    remake_char_node(&null, 1, 5);
    let (code, found) = f.differences();
    assert_eq!(code, 1);
    assert_eq!(found, pairs(&[("src/null", "rdev")]));
    let (_, out, _) = f.diff(&[]);
    assert!(
        out.contains("src/null: device number differs: 1:3 in the set, 1:5 on disk"),
        "{out}"
    );
    remake_char_node(&null, 1, 3);
    assert_eq!(f.differences(), (0, Vec::new()));
}
