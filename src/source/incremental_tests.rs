//! Unit tests of `incremental` (moved out of the module file).

use super::*;
use crate::format::{CatalogDevice, CatalogSegment, Stat};
use crate::source::Meta;
use std::path::PathBuf;

fn entry(path: &str, kind: EntryKind, ino: u64, mtime: i64, ctime: i64) -> Entry {
    Entry::new(
        path.as_bytes().to_vec(),
        PathBuf::from(path),
        kind,
        Meta {
            stat: Stat {
                mode: 0o100644,
                mtime_sec: mtime,
                ctime_sec: ctime,
                dev: 7,
                ino,
                ..Stat::default()
            },
            nlink: 1,
            ..Meta::default()
        },
    )
}

fn file(path: &str, size_bytes: u64, ino: u64, mtime: i64, ctime: i64) -> Entry {
    entry(
        path,
        EntryKind::File {
            size_bytes,
            data: None,
        },
        ino,
        mtime,
        ctime,
    )
}

/// A parent catalog for `entries`, every file's data on device 0
/// except those listed in `failed_only`, which are on a failed device 1.
fn parent_of(entries: &[Entry], failed_only: &[&str]) -> Catalog {
    let mut files = Vec::new();
    let mut segments = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let (kind, size_bytes) = match e.kind {
            EntryKind::File { size_bytes, .. } => (FileKind::Regular, size_bytes),
            EntryKind::Dir => (FileKind::Directory, 0),
            _ => unreachable!("test entries are files and directories"),
        };
        files.push(CatalogFile {
            path: e.path.clone(),
            kind,
            stat: Stat {
                mode: e.meta.stat.mode,
                mtime_sec: e.meta.stat.mtime_sec,
                ctime_sec: e.meta.stat.ctime_sec,
                dev: e.meta.stat.dev,
                ino: e.meta.stat.ino,
                ..Stat::default()
            },
            size_bytes,
            link_target: Vec::new(),
            hardlink_to: 0,
            digest: [i as u8; 32],
            origin: 0,
            origin_file_id: 0,
            xattrs: Vec::new(),
        });
        if size_bytes > 0 {
            let failed = failed_only.iter().any(|p| p.as_bytes() == e.path);
            segments.push(CatalogSegment {
                file_id: i as u32,
                offset: 0,
                length: size_bytes,
                device: u32::from(failed),
                position: 4096,
                records: 1,
            });
        }
    }
    let device = |state| CatalogDevice {
        path: Vec::new(),
        capacity_bytes: 1 << 30,
        state,
        data_end: 4096,
    };
    Catalog {
        set_id: SetId([1; 16]),
        created_unix_ns: 0,
        chunk_bytes: 1 << 20,
        devices: vec![device(DeviceState::Complete), device(DeviceState::Failed)],
        files,
        segments,
        ancestors: vec![SetId([0; 16])],
        removed: Vec::new(),
        renamed: Vec::new(),
        parity: None,
        stored_bytes: Vec::new(),
        mac: [0; 32],
    }
}

#[test]
fn unchanged_changed_new_removed_and_renamed() {
    let before = vec![
        entry("t", EntryKind::Dir, 1, 0, 0),
        file("t/same", 100, 2, 10, 10),
        file("t/grown", 100, 3, 10, 10),
        file("t/touched", 100, 4, 10, 10),
        file("t/chmod", 100, 5, 10, 10),
        file("t/old-name", 100, 6, 10, 10),
        file("t/deleted", 100, 7, 10, 10),
        file("t/replaced", 100, 8, 10, 10),
        file("t/lost", 100, 9, 10, 10),
    ];
    let mut parent = parent_of(&before, &["t/lost"]);
    // The parent is itself an increment: "same" has its data in the full set.
    parent.files[1].origin = 1;
    parent.files[1].origin_file_id = 41;
    parent.segments.retain(|s| s.file_id != 1);
    let now = vec![
        entry("t", EntryKind::Dir, 1, 20, 20),
        file("t/same", 100, 2, 10, 10),
        file("t/grown", 200, 3, 20, 20),
        file("t/touched", 100, 4, 20, 20),
        file("t/chmod", 100, 5, 10, 20),
        file("t/lost", 100, 9, 10, 10),
        file("t/new", 100, 10, 20, 20),
        file("t/new-name", 100, 6, 10, 20),
        // Same path, another inode (rewritten by rename over it).
        file("t/replaced", 100, 11, 10, 10),
    ];
    let inc = since(&now, &parent);
    assert_eq!(inc.ancestors, vec![SetId([1; 16]), SetId([0; 16])]);
    assert_eq!(inc.parent(), SetId([1; 16]));
    let origin = |i: usize| inc.origins[i].map(|o| (o.ancestor, o.file_id));
    assert_eq!(origin(0), None, "directories carry no data");
    assert_eq!(origin(1), Some((2, 41)), "flattened to the full set");
    assert_eq!(inc.origins[1].unwrap().digest, [1; 32]);
    assert_eq!(origin(2), None, "size changed");
    assert_eq!(origin(3), None, "mtime changed");
    assert_eq!(origin(4), None, "ctime changed");
    assert_eq!(origin(5), None, "only on a failed device in the parent");
    assert_eq!(origin(6), None, "new");
    assert_eq!(origin(7), Some((1, 5)), "renamed");
    assert_eq!(origin(8), None, "another inode");
    assert_eq!(inc.renamed, vec![(7, b"t/old-name".to_vec())]);
    assert_eq!(
        inc.removed,
        vec![b"t/old-name".to_vec(), b"t/deleted".to_vec()]
    );
    assert_eq!(inc.referenced_files(), 2);
    assert_eq!(inc.referenced_bytes(&now), 200);
}

#[test]
fn a_new_device_number_keeps_same_path_files_but_not_renames() {
    let before = vec![file("s/a", 10, 2, 10, 10), file("s/b", 10, 3, 10, 10)];
    let parent = parent_of(&before, &[]);
    // The next snapshot: mounted with another st_dev, "b" renamed.
    let mut now = vec![file("s/a", 10, 2, 10, 10), file("s/c", 10, 3, 10, 20)];
    for e in &mut now {
        e.meta.stat.dev = 8;
    }
    let inc = since(&now, &parent);
    assert_eq!(inc.origins[0].map(|o| o.file_id), Some(0));
    assert_eq!(inc.origins[1], None, "inode numbers repeat across devices");
    assert!(inc.renamed.is_empty());
}

#[test]
fn block_devices_are_always_stored() {
    let mut dev = file("sdb", 1 << 20, 2, 10, 10);
    dev.meta.stat.mode = libc::S_IFBLK | 0o660;
    let parent = parent_of(std::slice::from_ref(&dev), &[]);
    let inc = since(&[dev][..], &parent);
    assert_eq!(inc.origins, vec![None]);
}

#[test]
fn one_parent_file_is_referenced_once() {
    let before = vec![file("a", 10, 2, 10, 10)];
    let parent = parent_of(&before, &[]);
    // "a" unchanged, and "b" a new name of the same inode (a hard link
    // the walker saw first under "b" would be a HardLink entry; two
    // File entries of one inode only arise from separate walks).
    let now = vec![file("a", 10, 2, 10, 10), file("b", 10, 2, 10, 10)];
    let inc = since(&now, &parent);
    assert!(inc.origins[0].is_some());
    assert_eq!(inc.origins[1], None);
    assert!(inc.renamed.is_empty());
}
