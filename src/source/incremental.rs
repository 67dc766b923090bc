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

use super::spill::EntryList;
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
    pub fn referenced_bytes(&self, entries: &(impl EntryList + ?Sized)) -> u64 {
        self.origins
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_some())
            .map(|(i, _)| match entries.entry(i).kind {
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
pub fn since(entries: &(impl EntryList + ?Sized), parent: &Catalog) -> Increment {
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
    // The paths walked, as owned keys: the entries may be read back one
    // at a time (`spill`).
    let current: HashSet<Vec<u8>> = (0..entries.count())
        .map(|i| entries.entry(i).into_owned().path)
        .collect();

    let mut origins: Vec<Option<Origin>> = vec![None; entries.count()];
    let mut used: HashSet<usize> = HashSet::new();
    // First the same path, then other names of the same inode (renames).
    for (i, origin) in origins.iter_mut().enumerate() {
        let entry = entries.entry(i);
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
            && same_data_keys(&entry, size_bytes, f)
            && (f.stat.ctime_sec, f.stat.ctime_nsec)
                == (entry.meta.stat.ctime_sec, entry.meta.stat.ctime_nsec)
            && used.insert(p)
        {
            *origin = Some(origin_of(p));
        }
    }
    let mut renamed = Vec::new();
    for (i, origin) in origins.iter_mut().enumerate() {
        let entry = entries.entry(i);
        let EntryKind::File { size_bytes, .. } = entry.kind else {
            continue;
        };
        if origin.is_some() || entry.is_block_device() {
            continue;
        }
        let Some(&p) = by_inode.get(&(entry.meta.stat.dev, entry.meta.stat.ino)) else {
            continue;
        };
        let f = &parent.files[p];
        if f.path != entry.path && same_data_keys(&entry, size_bytes, f) && used.insert(p) {
            *origin = Some(origin_of(p));
            if !current.contains(&f.path) {
                renamed.push((i as u32, f.path.clone()));
            }
        }
    }
    let removed = parent
        .files
        .iter()
        .filter(|f| !current.contains(&f.path))
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
#[path = "incremental_tests.rs"]
mod tests;
