use super::test_fixture::{lstat_tree, make_fixture_tree, OTHER_ID, SPARSE_FILE_BYTES};
use super::*;
use std::os::unix::fs::{FileExt, PermissionsExt};

fn entry<'a>(walk: &'a Walk, path: &[u8]) -> (usize, &'a Entry) {
    walk.entries
        .iter()
        .enumerate()
        .find(|(_, e)| e.path == path)
        .unwrap_or_else(|| panic!("no entry {}", path.escape_ascii()))
}

fn components(path: &[u8]) -> Vec<&[u8]> {
    path.split(|&b| b == b'/').collect()
}

#[test]
fn no_sources_is_an_error() {
    assert!(matches!(walk(&[]), Err(SourceError::NoSources)));
}

#[test]
fn missing_source_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    match walk(std::slice::from_ref(&missing)) {
        Err(SourceError::Source { path, error }) => {
            assert_eq!(path, missing);
            assert_eq!(error.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("expected Source error, got {other:?}"),
    }
}

#[test]
fn duplicate_top_level_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in ["x/data", "y/data"] {
        fs::create_dir_all(tmp.path().join(dir)).unwrap();
    }
    let sources = [tmp.path().join("x/data"), tmp.path().join("y/data/")];
    match walk(&sources) {
        Err(SourceError::DuplicateName { name }) => assert_eq!(name, "data"),
        other => panic!("expected DuplicateName, got {other:?}"),
    }
}

#[test]
fn root_is_refused_with_a_reason() {
    match walk(&[PathBuf::from("/")]) {
        Err(SourceError::Source { error, .. }) => {
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
            assert!(error.to_string().contains("no name"), "{error}");
        }
        other => panic!("expected Source error, got {other:?}"),
    }
}

#[test]
fn sources_without_a_final_name_use_the_canonical_one() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("proj");
    fs::create_dir_all(proj.join("sub")).unwrap();
    assert_eq!(stored_name(&proj.join("sub/..")).unwrap(), b"proj");
    assert_eq!(stored_name(&proj.join(".")).unwrap(), b"proj");
    assert_eq!(stored_name(&proj.join("sub/")).unwrap(), b"sub");
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        stored_name(Path::new(".")).unwrap(),
        cwd.file_name().unwrap().as_bytes()
    );
    let walk = walk(&[proj.join("sub/..")]).unwrap();
    let paths: Vec<&[u8]> = walk.entries.iter().map(|e| e.path.as_slice()).collect();
    assert_eq!(paths, [&b"proj"[..], b"proj/sub"]);
}

#[test]
fn single_file_and_symlink_sources() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("f"), b"hello").unwrap();
    std::os::unix::fs::symlink("f", tmp.path().join("l")).unwrap();
    let walk = walk(&[tmp.path().join("f"), tmp.path().join("l")]).unwrap();
    assert!(walk.errors.is_empty());
    assert_eq!(walk.entries.len(), 2);
    assert_eq!(walk.entries[0].path, b"f");
    assert_eq!(
        walk.entries[0].kind,
        EntryKind::File {
            size_bytes: 5,
            data: None
        }
    );
    assert_eq!(walk.entries[1].path, b"l");
    assert_eq!(
        walk.entries[1].kind,
        EntryKind::Symlink {
            target: b"f".to_vec()
        }
    );
}

#[test]
fn fixture_tree_walks_completely_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("fixture");
    make_fixture_tree(&root, 50, 1 << 20);
    let walk = walk(std::slice::from_ref(&root)).unwrap();
    assert!(walk.errors.is_empty(), "{:?}", walk.errors);

    // Exactly the names lstat sees, each with its own source path.
    let expected: Vec<Vec<u8>> = lstat_tree(&root)
        .into_keys()
        .map(|rel| {
            if rel.is_empty() {
                b"fixture".to_vec()
            } else {
                [&b"fixture/"[..], &rel].concat()
            }
        })
        .collect();
    let mut got: Vec<Vec<u8>> = walk.entries.iter().map(|e| e.path.clone()).collect();
    // Pre-order with siblings sorted by name == component-wise sort.
    let mut sorted = got.clone();
    sorted.sort_by(|a, b| components(a).cmp(&components(b)));
    assert_eq!(got, sorted, "not pre-order with sorted siblings");
    got.sort();
    assert_eq!(got, expected);
    for e in &walk.entries {
        let rel = &e.path[b"fixture".len()..];
        assert_eq!(
            e.source().as_os_str().as_bytes(),
            [root.as_os_str().as_bytes(), rel].concat()
        );
    }

    // Metadata is lstat's.
    for e in &walk.entries {
        let m = fs::symlink_metadata(e.source()).unwrap();
        assert_eq!(e.meta.stat.mode, m.mode());
        assert_eq!((e.meta.stat.uid, e.meta.stat.gid), (m.uid(), m.gid()));
        assert_eq!(
            (e.meta.stat.mtime_sec, e.meta.stat.mtime_nsec as i64),
            (m.mtime(), m.mtime_nsec())
        );
        assert_eq!(
            (e.meta.stat.dev, e.meta.stat.ino, e.meta.nlink),
            (m.dev(), m.ino(), m.nlink())
        );
    }
    let (_, owned) = entry(&walk, b"fixture/owned-by-1234");
    if nix::unistd::geteuid().is_root() {
        assert_eq!(
            (owned.meta.stat.uid, owned.meta.stat.gid),
            (OTHER_ID, OTHER_ID)
        );
    }
    assert_eq!(
        entry(&walk, b"fixture/setuid-prog").1.meta.stat.mode & 0o7777,
        0o4755
    );
    assert!(entry(&walk, b"fixture/old").1.meta.stat.mtime_sec < 0);

    // Kinds.
    assert_eq!(entry(&walk, b"fixture").1.kind, EntryKind::Dir);
    assert_eq!(entry(&walk, b"fixture/dir\xff").1.kind, EntryKind::Dir);
    assert_eq!(
        entry(&walk, b"fixture/large.bin").1.kind,
        EntryKind::File {
            size_bytes: 1 << 20,
            data: None
        }
    );
    assert_eq!(
        entry(&walk, b"fixture/empty").1.kind,
        EntryKind::File {
            size_bytes: 0,
            data: None
        }
    );
    assert_eq!(
        entry(&walk, b"fixture/caf\xe9").1.kind,
        EntryKind::File {
            size_bytes: 1234,
            data: None
        }
    );
    assert_eq!(
        entry(&walk, b"fixture/link-to-large").1.kind,
        EntryKind::Symlink {
            target: b"large.bin".to_vec()
        }
    );
    assert_eq!(
        entry(&walk, b"fixture/dangling").1.kind,
        EntryKind::Symlink {
            target: b"does/not/exist".to_vec()
        }
    );
    let (first, _) = entry(&walk, b"fixture/hard-a");
    assert!(matches!(
        entry(&walk, b"fixture/hard-a").1.kind,
        EntryKind::File {
            size_bytes: 3000,
            ..
        }
    ));
    assert_eq!(
        entry(&walk, b"fixture/small/hard-b").1.kind,
        EntryKind::HardLink {
            target: first as u32
        }
    );
    // Data at 0..64K, 3M..3M+4K+100 (end rounded up), last 5000 bytes
    // (start rounded down).
    let end = SPARSE_FILE_BYTES;
    assert_eq!(
        entry(&walk, b"fixture/sparse.img").1.kind,
        EntryKind::File {
            size_bytes: end,
            data: Some(vec![(0, 64 << 10), (3 << 20, 8 << 10), (end - 8192, 8192)])
        }
    );
    let files = walk
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .count();
    // large, empty, sparse, hard-a, caf, inner, setuid, owned, old
    assert_eq!(files, 50 + 9);
}

#[test]
fn sparse_ranges_are_aligned_and_clipped() {
    let tmp = tempfile::tempdir().unwrap();
    let hole = tmp.path().join("hole");
    fs::File::create(&hole).unwrap().set_len(1 << 20).unwrap();
    let unaligned = tmp.path().join("unaligned");
    let file = fs::File::create(&unaligned).unwrap();
    file.set_len(1 << 20).unwrap();
    file.write_all_at(b"0123456789", 5000).unwrap();
    file.write_all_at(b"tail", (1 << 20) + 100).unwrap(); // extends: size 1M+104
    file.sync_all().unwrap();
    let walk = walk(&[hole, unaligned]).unwrap();
    assert_eq!(
        walk.entries[0].kind,
        EntryKind::File {
            size_bytes: 1 << 20,
            data: Some(vec![])
        }
    );
    assert_eq!(
        walk.entries[1].kind,
        EntryKind::File {
            size_bytes: (1 << 20) + 104,
            data: Some(vec![(4096, 4096), (1 << 20, 104)])
        }
    );
}

#[test]
fn special_files_are_entries_and_sockets_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("a"), b"a").unwrap();
    nix::unistd::mkfifo(
        &dir.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    fs::hard_link(dir.join("fifo"), dir.join("fifo2")).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(dir.join("sock")).unwrap();
    fs::write(dir.join("z"), b"z").unwrap();
    let walk = walk(std::slice::from_ref(&dir)).unwrap();
    let paths: Vec<&[u8]> = walk.entries.iter().map(|e| e.path.as_slice()).collect();
    assert_eq!(paths, [&b"d"[..], b"d/a", b"d/fifo", b"d/fifo2", b"d/z"]);
    assert_eq!(walk.entries[2].kind, EntryKind::Special);
    assert_eq!(walk.entries[2].meta.stat.mode & libc::S_IFMT, libc::S_IFIFO);
    assert!(!walk.entries[2].is_block_device());
    // The second name of the fifo is a hard link to the first.
    assert_eq!(walk.entries[3].kind, EntryKind::HardLink { target: 2 });
    let errors: Vec<(PathBuf, String)> = walk
        .errors
        .iter()
        .map(|e| (e.path.clone(), e.error.to_string()))
        .collect();
    assert_eq!(
        errors,
        [(
            dir.join("sock"),
            "unsupported file type (socket); not backed up".to_string()
        )]
    );
    assert!(walk
        .errors
        .iter()
        .all(|e| e.error.kind() == io::ErrorKind::Unsupported));
}

#[test]
fn excluded_names_never_become_entries_nor_link_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().join("top");
    fs::create_dir_all(top.join("d")).unwrap();
    fs::write(top.join("a.tmp"), b"data").unwrap();
    fs::hard_link(top.join("a.tmp"), top.join("d/b")).unwrap();
    fs::write(top.join(".nobackup"), b"").unwrap();
    fs::write(top.join("d/.nobackup-not"), b"").unwrap();
    let selection = Selection::new(
        &["*.tmp".to_string()],
        &[],
        false,
        &[".nobackup".to_string()],
        false,
        None,
    )
    .unwrap();
    // The tag in the source itself: the source is kept, empty.
    let walk = walk_selected(std::slice::from_ref(&top), &selection).unwrap();
    let paths: Vec<&[u8]> = walk.entries.iter().map(|e| e.path.as_slice()).collect();
    assert_eq!(paths, [&b"top"[..]]);
    assert_eq!(walk.excluded.len(), 1);
    assert!(walk.excluded[0].kept);

    fs::remove_file(top.join(".nobackup")).unwrap();
    let walk = walk_selected(std::slice::from_ref(&top), &selection).unwrap();
    let paths: Vec<&[u8]> = walk.entries.iter().map(|e| e.path.as_slice()).collect();
    assert_eq!(
        paths,
        [&b"top"[..], b"top/d", b"top/d/.nobackup-not", b"top/d/b"]
    );
    // The second name of the excluded file holds the data itself.
    assert!(matches!(
        entry(&walk, b"top/d/b").1.kind,
        EntryKind::File { size_bytes: 4, .. }
    ));
    assert_eq!(
        walk.excluded,
        [Excluded {
            path: b"top/a.tmp".to_vec(),
            reason: Reason::Pattern("*.tmp".to_string()),
            kept: false
        }]
    );
}

/// Runs `f` with this thread's filesystem uid/gid set to nobody, so that
/// permission checks apply even when the tests run as root (setfsuid is
/// per thread and drops the filesystem capabilities while nonzero).
fn as_nobody<T>(f: impl FnOnce() -> T) -> T {
    const NOBODY: libc::uid_t = 65534;
    // SAFETY: plain syscalls changing this thread's credentials only.
    let (old_uid, old_gid) = unsafe { (libc::setfsuid(NOBODY), libc::setfsgid(NOBODY)) };
    let result = f();
    // SAFETY: as above, back to the previous ids.
    unsafe {
        libc::setfsuid(old_uid as libc::uid_t);
        libc::setfsgid(old_gid as libc::gid_t);
    }
    result
}

#[test]
fn unreadable_directory_is_reported_and_the_walk_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().join("top");
    for dir in ["a", "locked/inner", "z"] {
        fs::create_dir_all(top.join(dir)).unwrap();
    }
    fs::write(top.join("locked/secret"), b"s").unwrap();
    fs::write(top.join("z/after"), b"z").unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let locked = top.join("locked");
    let walk = if nix::unistd::geteuid().is_root() {
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
        as_nobody(|| walk(std::slice::from_ref(&top))).unwrap()
    } else {
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        let walk = walk(std::slice::from_ref(&top)).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
        walk
    };
    let paths: Vec<&[u8]> = walk.entries.iter().map(|e| e.path.as_slice()).collect();
    assert_eq!(
        paths,
        [
            &b"top"[..],
            b"top/a",
            b"top/locked",
            b"top/z",
            b"top/z/after"
        ]
    );
    assert_eq!(walk.errors.len(), 1, "{:?}", walk.errors);
    assert_eq!(walk.errors[0].path, top.join("locked"));
    assert_eq!(walk.errors[0].error.kind(), io::ErrorKind::PermissionDenied);
}

/// `cargo test --release -- --ignored walk_100k --nocapture`
#[test]
#[ignore = "slow: creates 100,000 files"]
fn walk_100k_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("many");
    for d in 0..100 {
        let dir = root.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..1000 {
            fs::File::create(dir.join(format!("f{f:04}"))).unwrap();
        }
    }
    let start = std::time::Instant::now();
    let walk = walk(&[root]).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(walk.entries.len(), 1 + 100 + 100_000);
    // The benchmark's own result, shown with --nocapture (test output,
    // not the walker's: the library never prints).
    let shown = format!("walked {} entries in {elapsed:?}\n", walk.entries.len());
    std::io::Write::write_all(&mut std::io::stderr(), shown.as_bytes()).unwrap();
}

/// The spilled walk (what a backup takes) reads back the same entries as
/// the walk in memory, with the same source paths and sparse ranges.
#[test]
fn spilled_walk_reads_back_the_walk_in_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("fixture");
    make_fixture_tree(&root, 50, 1 << 20);
    let sources = [root, tmp.path().join("fixture/small")];
    let selection = Selection::default();
    let walk = walk_selected(&sources, &selection).unwrap();
    let spilled = walk_spilled(&sources, &selection).unwrap();
    assert_eq!(spilled.entries.len(), walk.entries.len());
    assert!(walk.entries.len() > 50, "{} entries", walk.entries.len());
    let mut sparse = 0;
    for (i, e) in spilled.entries.iter().enumerate() {
        assert_eq!(e, walk.entries[i], "entry {i}");
        assert_eq!(e.source(), walk.entries[i].source(), "entry {i}");
        use spill::EntryList;
        assert_eq!(spilled.entries.sparse(i), walk.entries.sparse(i));
        sparse += usize::from(spilled.entries.sparse(i).is_some());
    }
    assert!(sparse > 0, "the fixture has a sparse file");
    assert_eq!(spilled.errors.len(), walk.errors.len());
}
