//! The incremental filter: which walked entries changed since an earlier
//! set (`pbio backup --since PREVIOUS`).
//!
//! Chain semantics (docs/FORMAT.md "Incremental sets" is the reference):
//!
//! - An incremental set's catalog lists the **whole** tree as it is now
//!   (every entry, with its metadata), exactly as a full set would. Only the
//!   data of unchanged files is not stored again: such a file refers to
//!   the earlier set that holds its data (`origin`, `origin_file_id`).
//! - References are flattened: a file unchanged since the full set refers
//!   to the full set even three increments later, never to an increment
//!   that itself only refers to it. So a restore reads each byte from the
//!   one set that holds it, and an increment whose changes were all
//!   superseded is not needed.
//! - `ancestors` lists the parent (the set `--since` named) and all of its
//!   ancestors, newest first: the chain. Given devices of several sets in
//!   any order, restore takes the set whose ancestors include every other
//!   given set as the one to rebuild.
//! - Deletions are implicit in the complete listing (restore rebuilds
//!   exactly the tree the catalog lists) and recorded in `removed`; a file
//!   found unchanged under a new name is a reference and is recorded in
//!   `renamed`.
//!
//! What "unchanged" means, per regular file:
//! - same path in the parent, same kind, and the same size, mtime, ctime
//!   and inode. The device number is not compared here: a filesystem
//!   backed up through successive snapshots is mounted with a new st_dev
//!   each time (btrfs subvolume snapshots, LVM snapshots) while its files
//!   keep their inode and ctime, and a different filesystem that has a
//!   file at the same path with the same inode, size, mtime and ctime to
//!   the nanosecond is not a case that arises; or
//! - (a rename or move) another path in the parent with the same device
//!   and inode, size and mtime. Inode numbers repeat across filesystems,
//!   so here the device must match (a rename seen through two different
//!   snapshots is stored again). The ctime is not compared: rename(2)
//!   itself sets it on Linux. A file that is renamed *and* rewritten with
//!   its size and mtime restored by hand (`touch -d`) is therefore not
//!   detected; a rewrite in place always is (the ctime moves).
//! - and its data is complete in the parent set (covered by segments on
//!   devices that did not fail), so a reference never points at missing bytes.
//!
//! Block devices are always stored whole: a device node's metadata does
//! not change when its contents do. Directories, symlinks and hard links
//! carry no data and are always listed.

use std::collections::{HashMap, HashSet};

use super::{Entry, EntryKind};
use crate::format::{Catalog, CatalogFile, DeviceState, FileKind, SetId};

/// Where the data of an unchanged file already is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// 1-based index into `Increment::ancestors` (1 = the parent).
    pub ancestor: u32,
    /// The file's id in that set's catalog.
    pub file_id: u32,
    /// Its digest there (`CatalogFile::digest`).
    pub digest: [u8; 32],
}

/// What an incremental set refers to instead of storing, entry by entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Increment {
    /// The parent and its ancestors, newest first.
    pub ancestors: Vec<SetId>,
    /// One per walked entry: `Some` when its data is not stored again.
    pub origins: Vec<Option<Origin>>,
    /// Paths of the parent that no longer exist.
    pub removed: Vec<Vec<u8>>,
    /// (entry index, path in the parent) of files found unchanged under a new name.
    pub renamed: Vec<(u32, Vec<u8>)>,
}

impl Increment {
    /// The parent set (the set `--since` named).
    pub fn parent(&self) -> SetId {
        self.ancestors[0]
    }

    pub fn referenced_files(&self) -> usize {
        self.origins.iter().flatten().count()
    }

    /// Logical bytes of the files whose data is referenced, not stored.
    pub fn referenced_bytes(&self, entries: &[Entry]) -> u64 {
        entries
            .iter()
            .zip(&self.origins)
            .filter(|(_, o)| o.is_some())
            .map(|(e, _)| match e.kind {
                EntryKind::File { size_bytes, .. } => size_bytes,
                _ => 0,
            })
            .sum()
    }

    /// The origin of entry `index`, if its data is in an earlier set.
    pub fn origin(&self, index: usize) -> Option<Origin> {
        self.origins.get(index).copied().flatten()
    }
}

/// Entries with data of the parent catalog that a reference may point to:
/// complete there, by index.
fn complete_files(parent: &Catalog) -> Vec<bool> {
    let mut covered: Vec<Vec<(u64, u64)>> = vec![Vec::new(); parent.files.len()];
    for s in &parent.segments {
        if parent.devices[s.device as usize].state != DeviceState::Failed {
            covered[s.file_id as usize].push((s.offset, s.offset + s.length));
        }
    }
    parent
        .files
        .iter()
        .zip(covered.iter_mut())
        .map(|(f, ranges)| {
            if !f.kind.has_data() {
                return false;
            }
            if f.origin != 0 {
                // Checked when that reference was made.
                return true;
            }
            ranges.sort_unstable();
            let mut at = 0u64;
            for &(start, end) in ranges.iter() {
                if start > at {
                    return false;
                }
                at = at.max(end);
            }
            at >= f.size_bytes
        })
        .collect()
}

/// Same kind, size, mtime and inode (not device: see the module docs).
fn same_data_keys(entry: &Entry, size_bytes: u64, f: &CatalogFile) -> bool {
    f.kind == FileKind::Regular
        && f.size_bytes == size_bytes
        && (f.stat.mtime_sec, f.stat.mtime_nsec)
            == (entry.meta.stat.mtime_sec, entry.meta.stat.mtime_nsec)
        && f.stat.ino == entry.meta.stat.ino
}

/// Which of `entries` (a fresh walk) are unchanged since the set whose
/// catalog is `parent`; see the module docs for the rules.
pub fn since(entries: &[Entry], parent: &Catalog) -> Increment {
    let mut ancestors = Vec::with_capacity(parent.ancestors.len() + 1);
    ancestors.push(parent.set_id);
    ancestors.extend_from_slice(&parent.ancestors);
    // The reference that file `p` of the parent turns into here.
    let origin_of = |p: usize| {
        let f = &parent.files[p];
        if f.origin == 0 {
            Origin {
                ancestor: 1,
                file_id: p as u32,
                digest: f.digest,
            }
        } else {
            Origin {
                ancestor: f.origin + 1,
                file_id: f.origin_file_id,
                digest: f.digest,
            }
        }
    };
    let complete = complete_files(parent);
    let by_path: HashMap<&[u8], usize> = parent
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.path.as_slice(), i))
        .collect();
    // Renames: by device and inode (inode numbers repeat across devices).
    let by_inode: HashMap<(u64, u64), usize> = parent
        .files
        .iter()
        .enumerate()
        .filter(|(i, f)| f.kind == FileKind::Regular && complete[*i])
        .map(|(i, f)| ((f.stat.dev, f.stat.ino), i))
        .collect();
    let current: HashSet<&[u8]> = entries.iter().map(|e| e.path.as_slice()).collect();

    let mut origins: Vec<Option<Origin>> = vec![None; entries.len()];
    let mut used: HashSet<usize> = HashSet::new();
    // First the same path, then other names of the same inode (renames).
    for (i, entry) in entries.iter().enumerate() {
        let EntryKind::File { size_bytes, .. } = entry.kind else {
            continue;
        };
        if entry.is_block_device() {
            continue;
        }
        let Some(&p) = by_path.get(entry.path.as_slice()) else {
            continue;
        };
        let f = &parent.files[p];
        if complete[p]
            && same_data_keys(entry, size_bytes, f)
            && (f.stat.ctime_sec, f.stat.ctime_nsec)
                == (entry.meta.stat.ctime_sec, entry.meta.stat.ctime_nsec)
            && used.insert(p)
        {
            origins[i] = Some(origin_of(p));
        }
    }
    let mut renamed = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let EntryKind::File { size_bytes, .. } = entry.kind else {
            continue;
        };
        if origins[i].is_some() || entry.is_block_device() {
            continue;
        }
        let Some(&p) = by_inode.get(&(entry.meta.stat.dev, entry.meta.stat.ino)) else {
            continue;
        };
        let f = &parent.files[p];
        if f.path != entry.path && same_data_keys(entry, size_bytes, f) && used.insert(p) {
            origins[i] = Some(origin_of(p));
            if !current.contains(f.path.as_slice()) {
                renamed.push((i as u32, f.path.clone()));
            }
        }
    }
    let removed = parent
        .files
        .iter()
        .filter(|f| !current.contains(f.path.as_slice()))
        .map(|f| f.path.clone())
        .collect();
    Increment {
        ancestors,
        origins,
        removed,
        renamed,
    }
}

#[cfg(test)]
mod tests {
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
        let inc = since(&[dev], &parent);
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
}
