use super::*;
use crate::format::{CatalogFile, Stat};
use crate::source::test_fixture::{compare_trees, make_fixture_tree};
use crate::source::{walk, EntryKind};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};

fn make_catalog(files: Vec<CatalogFile>) -> Catalog {
    Catalog {
        set_id: crate::format::SetId([7; 16]),
        created_unix_ns: 0,
        chunk_bytes: 1 << 20,
        devices: Vec::new(),
        files,
        segments: Vec::new(),
        ancestors: Vec::new(),
        removed: Vec::new(),
        renamed: Vec::new(),
        parity: None,
        stored_bytes: Vec::new(),
        mac: [0; 32],
    }
}

fn file(path: &[u8], kind: FileKind, mode: u32) -> CatalogFile {
    CatalogFile {
        path: path.to_vec(),
        kind,
        stat: Stat {
            mode,
            mtime_sec: 1_500_000_000,
            mtime_nsec: 123_456_789,
            ..Stat::default()
        },
        size_bytes: 0,
        link_target: Vec::new(),
        hardlink_to: 0,
        digest: [0; 32],
        origin: 0,
        origin_file_id: 0,
        xattrs: Vec::new(),
    }
}

fn why(result: Result<(), TreeError>) -> &'static str {
    match result {
        Err(TreeError::Unsafe { why, .. }) => why,
        other => panic!("expected Unsafe, got {other:?}"),
    }
}

/// Every data file good.
fn all_good(catalog: &Catalog) -> Vec<Verdict> {
    vec![Verdict::Good; catalog.files.len()]
}

/// prepare, then `write` for each catalog file with data, then finish.
fn restore_with(
    root: &Path,
    resolve: at::Resolve,
    catalog: &Catalog,
    selected: &[bool],
    verdicts: &[Verdict],
    write: impl Fn(usize, &fs::File),
) -> Finished {
    let staged = prepare_in(Root::open_with(root, resolve).unwrap(), catalog, selected);
    assert!(staged.errors.is_empty(), "{:?}", staged.errors);
    for (i, f) in catalog.files.iter().enumerate() {
        if selected[i] && f.kind.has_data() {
            write(i, &staged.open_for_write(i).unwrap());
        }
    }
    finish(staged, catalog, selected, verdicts, false)
}

#[test]
fn check_rel_accepts_plain_relative_paths() {
    for ok in [&b"a"[..], b"a/b/c", b"..a/b..", b".hidden", b"caf\xe9/x"] {
        check_rel(ok).unwrap();
    }
}

#[test]
fn check_rel_refuses_escapes_and_malformed_paths() {
    assert_eq!(why(check_rel(b"")), "empty path");
    assert_eq!(why(check_rel(b"/etc/passwd")), "absolute path");
    assert_eq!(why(check_rel(b"..")), "'..' path component");
    assert_eq!(why(check_rel(b"a/../../etc")), "'..' path component");
    assert_eq!(why(check_rel(b"a/..")), "'..' path component");
    assert_eq!(why(check_rel(b"a/./b")), "'.' path component");
    assert_eq!(why(check_rel(b".")), "'.' path component");
    assert_eq!(
        why(check_rel(b"a//b")),
        "empty path component ('//' or trailing '/')"
    );
    assert_eq!(
        why(check_rel(b"a/")),
        "empty path component ('//' or trailing '/')"
    );
    assert_eq!(why(check_rel(b"a\0b")), "path contains a NUL byte");
    let error = check_rel(b"x/../\x1b[2Jy").unwrap_err();
    assert_eq!(
        error.to_string(),
        "refusing to restore 'x/../\\e[2Jy': '..' path component"
    );
}

#[test]
fn prepare_and_finish_a_small_catalog() {
    for resolve in [at::Resolve::Openat2, at::Resolve::Walk] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("out");
        let mut files = vec![
            file(b"top", FileKind::Directory, 0o40755),
            file(b"top/ro", FileKind::Directory, 0o40555),
            file(b"top/data", FileKind::Regular, 0o100640),
            file(b"top/implicit/deep/file", FileKind::Regular, 0o100600),
            file(b"top/ro/setuid", FileKind::Regular, 0o104755),
            file(b"top/link", FileKind::Symlink, 0o120777),
            file(b"top/ro/second-name", FileKind::HardLink, 0o100640),
            file(b"top/caf\xe9", FileKind::Regular, 0o100644),
        ];
        files[2].size_bytes = 1 << 20;
        files[2].stat.uid = 1234;
        files[2].stat.gid = 4321;
        files[2].stat.mtime_sec = -1000; // before 1970
        files[3].size_bytes = 10;
        files[4].size_bytes = 3;
        files[5].link_target = b"data".to_vec();
        files[5].stat.mtime_sec = 1_400_000_000;
        files[6].hardlink_to = 2;
        files[1].stat.mtime_nsec = 1;
        let catalog = make_catalog(files);
        let selected = vec![true; catalog.files.len()];

        let staged = prepare_in(
            Root::open_with(&root, resolve).unwrap(),
            &catalog,
            &selected,
        );
        assert!(staged.errors.is_empty(), "{:?}", staged.errors);
        // Nothing is under its final name before finish.
        assert!(fs::symlink_metadata(root.join("top/data")).is_err());
        assert_eq!(
            fs::metadata(root.join("top/ro")).unwrap().mode() & 0o7777,
            DIR_MODE_WHILE_RESTORING
        );
        let data = staged.open_for_write(2).unwrap();
        let m = data.metadata().unwrap();
        assert_eq!(
            (m.len(), m.blocks()),
            (1 << 20, 0),
            "logical size set, all hole"
        );
        data.write_all_at(b"xyz", 4096).unwrap();
        staged
            .open_for_write(4)
            .unwrap()
            .write_all_at(b"#!\n", 0)
            .unwrap();
        let finished = finish(staged, &catalog, &selected, &all_good(&catalog), false);
        assert!(finished.errors.is_empty(), "{:?}", finished.errors);
        assert!(finished.done.iter().all(|&d| d));
        let only_ours: Vec<_> = fs::read_dir(root.join("top"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.as_bytes().starts_with(b"."))
            .collect();
        assert!(only_ours.is_empty(), "temporary names left: {only_ours:?}");
        let data = root.join("top/data");
        for (i, f) in catalog.files.iter().enumerate() {
            let m = fs::symlink_metadata(root.join(OsStr::from_bytes(&f.path))).unwrap();
            let expect = if f.kind == FileKind::HardLink {
                &catalog.files[f.hardlink_to as usize]
            } else {
                f
            };
            let name = f.path.escape_ascii().to_string();
            assert_eq!(m.mode(), expect.stat.mode, "{name}");
            assert_eq!(
                (m.uid(), m.gid()),
                (expect.stat.uid, expect.stat.gid),
                "{name}"
            );
            assert_eq!(
                (m.mtime(), m.mtime_nsec()),
                (expect.stat.mtime_sec, expect.stat.mtime_nsec as i64),
                "{name} ({i})"
            );
        }
        assert_eq!(
            fs::read_link(root.join("top/link")).unwrap(),
            Path::new("data")
        );
        let (a, b) = (
            fs::metadata(&data).unwrap(),
            fs::metadata(root.join("top/ro/second-name")).unwrap(),
        );
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        assert!(a.blocks() * 512 < 64 << 10, "holes kept");
        let mut buf = [0u8; 3];
        fs::File::open(&data)
            .unwrap()
            .read_exact_at(&mut buf, 4096)
            .unwrap();
        assert_eq!(&buf, b"xyz");

        // Idempotent: a second restore over the first gives the same tree.
        let finished = restore_with(
            &root,
            resolve,
            &catalog,
            &selected,
            &all_good(&catalog),
            |i, f| {
                if i == 4 {
                    f.write_all_at(b"#!\n", 0).unwrap()
                }
            },
        );
        assert!(finished.errors.is_empty(), "{:?}", finished.errors);
        assert_eq!(
            fs::metadata(root.join("top/ro/setuid")).unwrap().mode(),
            0o104755
        );
        assert_eq!(fs::read(root.join("top/ro/setuid")).unwrap(), b"#!\n");
        assert_eq!(fs::metadata(&data).unwrap().nlink(), 2);
    }
}

#[test]
fn failed_files_are_removed_or_kept_partial_and_their_links_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("out");
    let mut files = vec![
        file(b"bad", FileKind::Regular, 0o100644),
        file(b"link-to-bad", FileKind::HardLink, 0o100644),
        file(b"good", FileKind::Regular, 0o100644),
    ];
    files[0].size_bytes = 8;
    files[2].size_bytes = 4;
    files[1].hardlink_to = 0;
    let catalog = make_catalog(files);
    let selected = [true, true, true];
    let verdicts = [
        Verdict::Failed("digest mismatch".into()),
        Verdict::Good,
        Verdict::Good,
    ];
    for keep_partial in [false, true] {
        let staged = prepare_in(Root::open(&root).unwrap(), &catalog, &selected);
        staged
            .open_for_write(0)
            .unwrap()
            .write_all_at(b"half", 0)
            .unwrap();
        staged
            .open_for_write(2)
            .unwrap()
            .write_all_at(b"good", 0)
            .unwrap();
        let finished = finish(staged, &catalog, &selected, &verdicts, keep_partial);
        let text: Vec<String> = finished.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text[0].starts_with("bad: not restored"), "{text:?}");
        assert!(
            text[1].contains("link-to-bad: hard link not made: its target bad was not restored (digest mismatch)"),
            "{text:?}"
        );
        assert_eq!(finished.done, [false, false, true]);
        assert!(fs::symlink_metadata(root.join("bad")).is_err());
        assert!(fs::symlink_metadata(root.join("link-to-bad")).is_err());
        assert_eq!(fs::read(root.join("good")).unwrap(), b"good");
        let partial = root.join("bad.pbio-partial");
        if keep_partial {
            assert!(text[0].contains("kept as bad.pbio-partial"), "{text:?}");
            assert_eq!(&fs::read(&partial).unwrap()[..4], b"half");
        } else {
            assert!(fs::symlink_metadata(&partial).is_err());
        }
        let names = fs::read_dir(&root).unwrap().count();
        assert_eq!(names, 1 + usize::from(keep_partial));
    }
}

#[test]
fn unsafe_names_are_refused_one_by_one() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("out");
    let mut files = vec![
        file(b"a", FileKind::Regular, 0o100644),
        file(b"../escape", FileKind::Regular, 0o100644),
        file(b"/abs", FileKind::Symlink, 0o120777),
        file(b"b", FileKind::Regular, 0o100644),
    ];
    files[2].link_target = b"x".to_vec();
    let catalog = make_catalog(files);
    let selected = [true; 4];
    let mut staged = prepare_in(Root::open(&root).unwrap(), &catalog, &selected);
    let errors = staged.take_errors();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(staged.refused(1) && staged.refused(2));
    assert!(!staged.refused(0) && !staged.refused(3));
    let finished = finish(staged, &catalog, &selected, &all_good(&catalog), false);
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);
    assert_eq!(finished.done, [true, false, false, true]);
    assert!(root.join("a").is_file() && root.join("b").is_file());
    assert!(!tmp.path().join("escape").exists());
}

#[test]
fn hard_link_to_an_unselected_target_is_reported_and_the_rest_done() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = vec![
        file(b"target", FileKind::Regular, 0o100644),
        file(b"link", FileKind::HardLink, 0o100644),
        file(b"other", FileKind::Regular, 0o100600),
    ];
    files[1].hardlink_to = 0;
    let catalog = make_catalog(files);
    let selected = [false, true, true];
    let finished = restore_with(
        tmp.path(),
        at::Resolve::Openat2,
        &catalog,
        &selected,
        &all_good(&catalog),
        |_, _| {},
    );
    assert_eq!(finished.errors.len(), 1, "{:?}", finished.errors);
    let text = finished.errors[0].to_string();
    assert!(
        text.starts_with("link: hard link not made")
            && text.contains("target is not being restored"),
        "{text}"
    );
    assert!(!tmp.path().join("link").exists());
    assert!(!tmp.path().join("target").exists());
    assert_eq!(
        fs::metadata(tmp.path().join("other")).unwrap().mode(),
        0o100600
    );
}

#[test]
fn existing_names_are_replaced_without_following_them() {
    for resolve in [at::Resolve::Openat2, at::Resolve::Walk] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("out");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::write(&outside, b"precious").unwrap();
        let mode_before = fs::metadata(&outside).unwrap().mode();
        // A symlink and a hard link where regular files will go, a file
        // where a symlink will go, a directory where a file will go.
        std::os::unix::fs::symlink(&outside, root.join("file")).unwrap();
        fs::hard_link(&outside, root.join("hard")).unwrap();
        fs::write(root.join("sym"), b"old").unwrap();
        fs::create_dir(root.join("dir")).unwrap();
        let mut files = vec![
            file(b"file", FileKind::Regular, 0o100600),
            file(b"sym", FileKind::Symlink, 0o120777),
            file(b"hard", FileKind::Regular, 0o100600),
            file(b"dir", FileKind::Regular, 0o100600),
        ];
        files[0].size_bytes = 5;
        files[2].size_bytes = 5;
        files[1].link_target = b"file".to_vec();
        let catalog = make_catalog(files);
        let selected = [true; 4];
        let mut staged = prepare_in(
            Root::open_with(&root, resolve).unwrap(),
            &catalog,
            &selected,
        );
        let errors = staged.take_errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].to_string().contains("a directory stands where"));
        for i in [0, 2] {
            staged
                .open_for_write(i)
                .unwrap()
                .write_all_at(b"fresh", 0)
                .unwrap();
        }
        let finished = finish(staged, &catalog, &selected, &all_good(&catalog), false);
        assert!(finished.errors.is_empty(), "{:?}", finished.errors);
        assert_eq!(fs::read(&outside).unwrap(), b"precious");
        let m = fs::metadata(&outside).unwrap();
        assert_eq!((m.mode(), m.nlink()), (mode_before, 1));
        for name in ["file", "hard"] {
            let m = fs::symlink_metadata(root.join(name)).unwrap();
            assert!(m.is_file() && m.len() == 5, "{name}");
            assert_eq!(fs::read(root.join(name)).unwrap(), b"fresh");
        }
        assert_eq!(fs::read_link(root.join("sym")).unwrap(), Path::new("file"));
        assert!(root.join("dir").is_dir());
    }
}

#[test]
fn symlinks_in_the_way_are_replaced_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("out");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
    let catalog = make_catalog(vec![file(b"evil/x", FileKind::Regular, 0o100644)]);
    let finished = restore_with(
        &root,
        at::Resolve::Walk,
        &catalog,
        &[true],
        &all_good(&catalog),
        |_, _| {},
    );
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);
    assert!(fs::symlink_metadata(root.join("evil")).unwrap().is_dir());
    assert!(root.join("evil/x").is_file());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

    // Within one catalog: a symlink and an entry below the same name.
    let mut files = vec![
        file(b"a", FileKind::Symlink, 0o120777),
        file(b"a/x", FileKind::Symlink, 0o120777),
    ];
    files[0].link_target = outside.as_os_str().as_bytes().to_vec();
    files[1].link_target = b"y".to_vec();
    let catalog = make_catalog(files);
    let root2 = tmp.path().join("out2");
    let finished = restore_with(
        &root2,
        at::Resolve::Openat2,
        &catalog,
        &[true, true],
        &all_good(&catalog),
        |_, _| {},
    );
    assert_eq!(finished.errors.len(), 1, "{:?}", finished.errors);
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

/// Walk the fixture, restore it through prepare / data copy / finish
/// (the media in between left out), compare with the original.
#[test]
fn walk_then_restore_reproduces_the_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("fixture");
    make_fixture_tree(&source, 40, 2 << 20);
    let walk = walk(std::slice::from_ref(&source)).unwrap();
    assert!(walk.errors.is_empty(), "{:?}", walk.errors);
    let files: Vec<CatalogFile> = walk
        .entries
        .iter()
        .map(|e| {
            let mut f = file(&e.path, FileKind::Regular, e.meta.stat.mode);
            (f.stat.uid, f.stat.gid) = (e.meta.stat.uid, e.meta.stat.gid);
            (f.stat.mtime_sec, f.stat.mtime_nsec) = (e.meta.stat.mtime_sec, e.meta.stat.mtime_nsec);
            match &e.kind {
                EntryKind::File { size_bytes, .. } => f.size_bytes = *size_bytes,
                EntryKind::Dir => f.kind = FileKind::Directory,
                EntryKind::Symlink { target } => {
                    (f.kind, f.link_target) = (FileKind::Symlink, target.clone())
                }
                EntryKind::HardLink { target } => {
                    (f.kind, f.hardlink_to) = (FileKind::HardLink, *target)
                }
                EntryKind::Special => unreachable!("the fixture has no special files"),
            }
            f
        })
        .collect();
    let catalog = make_catalog(files);
    let selected = vec![true; catalog.files.len()];
    let out = tmp.path().join("out");
    let staged = prepare(&out, &catalog, &selected).unwrap();
    for (i, e) in walk.entries.iter().enumerate() {
        let EntryKind::File { size_bytes, data } = &e.kind else {
            continue;
        };
        let ranges = data.clone().unwrap_or(vec![(0, *size_bytes)]);
        let from = fs::File::open(e.source()).unwrap();
        let to = staged.open_for_write(i).unwrap();
        for (offset, len) in ranges {
            let mut buf = vec![0u8; len as usize];
            from.read_exact_at(&mut buf, offset).unwrap();
            to.write_all_at(&buf, offset).unwrap();
        }
    }
    let finished = finish(staged, &catalog, &selected, &all_good(&catalog), false);
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);
    let diffs = compare_trees(&source, &out.join("fixture"));
    assert!(diffs.is_empty(), "{diffs:#?}");
}

fn xattr(name: &str, value: &[u8]) -> Xattr {
    Xattr {
        name: name.as_bytes().to_vec(),
        value: value.to_vec(),
    }
}

/// An xattr the destination refuses (here one of a namespace no
/// filesystem knows: EOPNOTSUPP everywhere) is a warning naming the file
/// and the attribute; the entry is restored with the rest. Fifos and their
/// hard links are made as such.
#[test]
fn refused_xattrs_warn_and_special_files_are_made() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut files = vec![
        file(b"d", FileKind::Directory, 0o40755),
        file(b"d/f", FileKind::Regular, 0o100640),
        file(b"d/fifo", FileKind::Fifo, 0o10604),
        file(b"d/fifo2", FileKind::HardLink, 0),
        file(b"d/link", FileKind::Symlink, 0o120777),
    ];
    files[0].xattrs = vec![xattr("bogus.dir", b"1")];
    files[1].size_bytes = 3;
    files[1].xattrs = vec![xattr("bogus.file", b"2"), xattr("user.kept", b"yes")];
    files[2].xattrs = vec![xattr("bogus.fifo", b"3")];
    files[3].hardlink_to = 2;
    files[4].link_target = b"f".to_vec();
    files[4].xattrs = vec![xattr("bogus.link", b"4")];
    let catalog = make_catalog(files);
    let selected = vec![true; catalog.files.len()];
    let finished = restore_with(
        &out,
        at::Resolve::Openat2,
        &catalog,
        &selected,
        &all_good(&catalog),
        |_, f| f.write_all_at(b"abc", 0).unwrap(),
    );
    assert!(finished.errors.is_empty(), "{:?}", finished.errors);
    assert!(finished.done.iter().all(|&d| d));
    for (path, name) in [
        ("d", "bogus.dir"),
        ("d/f", "bogus.file"),
        ("d/fifo", "bogus.fifo"),
        ("d/link", "bogus.link"),
    ] {
        assert!(
            finished
                .warnings
                .iter()
                .any(|w| w.starts_with(&format!("{path}: extended attribute {name} not restored"))),
            "{path} {name}: {:?}",
            finished.warnings
        );
    }
    // Only those four (user.kept is either set or, on a filesystem without
    // user xattrs, a fifth warning naming it).
    let user_kept = crate::source::xattr::read(&out.join("d/f"))
        .unwrap()
        .iter()
        .any(|x| x == &xattr("user.kept", b"yes"));
    assert_eq!(finished.warnings.len(), if user_kept { 4 } else { 5 });
    assert_eq!(fs::read(out.join("d/f")).unwrap(), b"abc");
    let fifo = fs::symlink_metadata(out.join("d/fifo")).unwrap();
    let fifo2 = fs::symlink_metadata(out.join("d/fifo2")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&fifo.file_type()));
    assert_eq!(fifo.mode() & 0o7777, 0o604 & !Meta::of_process().umask);
    assert_eq!((fifo.ino(), fifo.nlink()), (fifo2.ino(), 2));
    assert_eq!(
        (fifo.mtime(), fifo.mtime_nsec()),
        (1_500_000_000, 123_456_789)
    );
}

#[test]
fn files_of_more_directories_than_are_kept_open_interleaved_all_land() {
    // 40 directories (more than `dirs` keeps open), their files listed
    // round robin so every directory is dropped and opened again; one
    // file in three failed (removed), symlinks beside them.
    const DIRS: usize = 40;
    for resolve in [at::Resolve::Openat2, at::Resolve::Walk] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("out");
        let mut files = Vec::new();
        for d in 0..DIRS {
            files.push(file(format!("d{d}").as_bytes(), FileKind::Directory, 0o755));
        }
        for i in 0..DIRS * 3 {
            let mut f = file(
                format!("d{}/f{i}", i % DIRS).as_bytes(),
                FileKind::Regular,
                0o640,
            );
            f.size_bytes = 3;
            files.push(f);
            let mut s = file(
                format!("d{}/s{i}", i % DIRS).as_bytes(),
                FileKind::Symlink,
                0o777,
            );
            s.link_target = format!("f{i}").into_bytes();
            files.push(s);
        }
        let catalog = make_catalog(files);
        let selected = vec![true; catalog.files.len()];
        let mut verdicts = all_good(&catalog);
        for (i, f) in catalog.files.iter().enumerate() {
            if f.kind == FileKind::Regular && i % 3 == 0 {
                verdicts[i] = Verdict::Failed("test".into());
            }
        }
        let finished = restore_with(&root, resolve, &catalog, &selected, &verdicts, |_, f| {
            f.write_all_at(b"abc", 0).unwrap()
        });
        for (i, f) in catalog.files.iter().enumerate() {
            let path = root.join(OsStr::from_bytes(&f.path));
            let failed = verdicts[i] != Verdict::Good;
            assert_eq!(finished.done[i], !failed, "{resolve:?} {}", path.display());
            match f.kind {
                FileKind::Regular if failed => assert!(!path.exists()),
                FileKind::Regular => {
                    assert_eq!(fs::read(&path).unwrap(), b"abc");
                    assert_eq!(
                        fs::metadata(&path).unwrap().mode() & 0o777,
                        0o640 & !at::umask()
                    );
                }
                FileKind::Symlink => {
                    assert_eq!(
                        fs::read_link(&path).unwrap().as_os_str().as_bytes(),
                        &f.link_target[..]
                    );
                }
                _ => assert!(fs::metadata(&path).unwrap().is_dir()),
            }
        }
        // No temporary name left anywhere.
        for d in 0..DIRS {
            for e in fs::read_dir(root.join(format!("d{d}"))).unwrap() {
                let name = e.unwrap().file_name();
                assert!(!name.as_bytes().starts_with(b"."), "{resolve:?} {name:?}");
            }
        }
        assert_eq!(finished.errors.len(), DIRS, "{resolve:?}: the failed files");
    }
}
