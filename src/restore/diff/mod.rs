//! `pbio diff`: the newest set of a chain against the live filesystem, as
//! `tar --compare` does: per stored entry, whether it is missing on disk,
//! and its kind, size, mode, owner, mtime, symlink target, hard link,
//! device number (character and block nodes), file flags (the bits restore
//! applies, `at::FLAGS_SETTABLE`, of regular files and directories),
//! extended attributes (each name added, removed or changed) and content
//! (the file digest of docs/FORMAT.md §7 computed over the live bytes and
//! compared with the catalog's); and the names on disk, inside a stored
//! directory, that the set does not hold.
//!
//! The live side is only read, and through the restore root's discipline
//! (`at`): stored paths are checked as restore checks them, every path is
//! resolved below `--to` without following any symlink (`openat2
//! RESOLVE_NO_SYMLINKS`, or a walk with `O_NOFOLLOW`), entries are looked
//! at with `fstatat(AT_SYMLINK_NOFOLLOW)` and files opened `O_NOFOLLOW |
//! O_NONBLOCK`, then checked to be the inode looked at. Extended
//! attributes are read with the walk's reader (`source::xattr::read`) on
//! `/proc/self/fd/DIR/NAME`: the open parent directory, the final name not
//! followed.
//!
//! Choices: a directory's mtime is not compared (it changes with its
//! contents, which are compared themselves; tar does the same), nor a
//! symlink's mode (meaningless on Linux). A hard link is compared by
//! identity: it must be the same inode as its target's name on disk. The
//! content is compared only when the sizes agree. The digest depends on
//! where the records were cut: at chunk (or a tape's smaller record)
//! boundaries, and around the holes of a sparse file. Records are cut
//! again from the catalog's segments (the record size of each is the one
//! giving its record count) over the live file's data ranges
//! (SEEK_DATA/SEEK_HOLE, as backup finds them), then over the file as
//! dense, and for a file stored sparse, over its non-zero blocks (a copy
//! that lost its holes). A file whose holes moved otherwise (a zero block
//! that was allocated at backup time, and is not now) is reported changed
//! although its bytes are not.

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::FileStat;

use super::at::{self, Root};
use super::chain::Chain;
use super::choose::Only;
use super::tree::check_rel;
use crate::format::{
    file_digest, payload_hash, Catalog, CatalogFile, DeviceState, DigestRecord, FileKind, SetId,
    Xattr,
};

/// Smallest record payload a device writes (a tape's is the largest power
/// of two under its block that is at least this).
const RECORD_PAYLOAD_BYTES_MIN: u64 = 4096;

mod what;
pub use what::What;

/// One difference of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// The stored path (relative to `--to`).
    pub path: Vec<u8>,
    pub what: What,
}

#[derive(Debug, Default)]
pub struct DiffReport {
    pub set_id: Option<SetId>,
    /// Stored entries compared.
    pub entries: usize,
    /// Bytes read from disk to compare contents.
    pub content_bytes: u64,
    /// Sorted by path (an entry's differences in the order compared).
    pub differences: Vec<Difference>,
}

impl DiffReport {
    pub fn same(&self) -> bool {
        self.differences.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("--to {path}: {error}")]
    Root { path: String, error: io::Error },
    /// Paths that take no entry of the set.
    #[error("{} {}: not in the set", if .patterns.len() == 1 { "path" } else { "paths" }, .patterns.iter().map(|p| format!("'{p}'")).collect::<Vec<_>>().join(", "))]
    NoMatch { patterns: Vec<String> },
}

/// Compare the newest set of `chain` (the entries `only` takes; every
/// entry when empty) with the tree under `root`.
pub fn diff(chain: &Chain, root: &Path, only: &Only) -> Result<DiffReport, DiffError> {
    let catalog = &chain.tip().catalog;
    let (taken, unmatched) = only.choose(&catalog.files);
    if !unmatched.is_empty() {
        return Err(DiffError::NoMatch {
            patterns: unmatched.iter().map(|&i| only.shown(i)).collect(),
        });
    }
    let root = Root::open_existing(root).map_err(|error| DiffError::Root {
        path: root.display().to_string(),
        error,
    })?;
    let mut out = DiffReport {
        set_id: Some(catalog.set_id),
        ..DiffReport::default()
    };
    let stored: HashSet<&[u8]> = catalog.files.iter().map(|f| &f.path[..]).collect();
    let mut compare = Compare {
        root: &root,
        chain,
        segments: chain.sets.iter().map(|_| OnceCell::new()).collect(),
        content_bytes: 0,
    };
    for (i, f) in catalog.files.iter().enumerate() {
        if !taken[i] {
            continue;
        }
        out.entries += 1;
        let mut push = |what| {
            out.differences.push(Difference {
                path: f.path.clone(),
                what,
            })
        };
        if let Err(e) = check_rel(&f.path) {
            push(What::Refused { why: e.to_string() });
            continue;
        }
        for what in compare.entry(catalog, i as u32, f) {
            push(what);
        }
        if f.kind == FileKind::Directory {
            for (name, kind) in compare.new_names(&f.path, &stored) {
                out.differences.push(Difference {
                    path: name,
                    what: What::New { kind },
                });
            }
        }
    }
    out.content_bytes = compare.content_bytes;
    out.differences.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Per file id of `catalog`, its segments' indexes.
fn segments_by_file(catalog: &Catalog) -> HashMap<u32, Vec<usize>> {
    let mut by_file: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, s) in catalog.segments.iter().enumerate() {
        by_file.entry(s.file_id).or_default().push(i);
    }
    by_file
}

struct Compare<'a> {
    root: &'a Root,
    chain: &'a Chain,
    /// Per set of the chain, its segments by file id (made when first needed).
    segments: Vec<OnceCell<HashMap<u32, Vec<usize>>>>,
    content_bytes: u64,
}

/// What stands at a stored name on disk: its directory and its lstat.
enum Live {
    Missing,
    There { dir: OwnedFd, st: FileStat },
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn kind_of(st: &FileStat) -> &'static str {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => "regular file",
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        libc::S_IFSOCK => "socket",
        _ => "unknown kind",
    }
}

fn stored_kind(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Regular | FileKind::HardLink => "regular file",
        FileKind::Directory => "directory",
        FileKind::Symlink => "symlink",
        FileKind::BlockDevice | FileKind::BlockNode => "block device",
        FileKind::Fifo => "fifo",
        FileKind::CharDevice => "character device",
    }
}

impl Compare<'_> {
    fn live(&self, path: &[u8]) -> io::Result<Live> {
        let (parent, name) = at::split_parent(path);
        let dir = match self
            .root
            .open_at(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
        {
            Ok(dir) => dir,
            // Nothing there, or a non-directory (a symlink) where a
            // directory of it must be: the entry is not on disk.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV)
                ) =>
            {
                return Ok(Live::Missing)
            }
            Err(e) => return Err(e),
        };
        match nix::sys::stat::fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Live::There { dir, st }),
            Err(Errno::ENOENT) => Ok(Live::Missing),
            Err(e) => Err(errno(e)),
        }
    }

    /// The differences of one stored entry (its path checked).
    fn entry(&mut self, catalog: &Catalog, file_id: u32, f: &CatalogFile) -> Vec<What> {
        let (dir, st) = match self.live(&f.path) {
            Ok(Live::There { dir, st }) => (dir, st),
            Ok(Live::Missing) => return vec![What::Missing],
            Err(e) => {
                return vec![What::Unreadable {
                    why: format!("lstat: {e}"),
                }]
            }
        };
        let disk_kind = kind_of(&st);
        let name = at::split_parent(&f.path).1;
        let kind_ok = match f.kind {
            FileKind::BlockDevice => disk_kind == "regular file" || disk_kind == "block device",
            // A hard link is of its target's kind (a regular or special file).
            FileKind::HardLink => catalog
                .files
                .get(f.hardlink_to as usize)
                .is_some_and(|t| disk_kind == stored_kind(t.kind)),
            kind => disk_kind == stored_kind(kind),
        };
        if !kind_ok {
            return vec![What::Kind {
                set: stored_kind(f.kind),
                disk: disk_kind,
            }];
        }
        let mut out = Vec::new();
        if f.kind == FileKind::HardLink {
            return self.hard_link(catalog, f, &st);
        }
        if f.kind == FileKind::BlockDevice && disk_kind == "block device" {
            // A device written back with `restore --to /dev/X`: its bytes only.
            match self.content(&f.path, file_id, f, &st) {
                Ok(Some(what)) => out.push(what),
                Ok(None) => {}
                Err(e) => out.push(What::Unreadable { why: e.to_string() }),
            }
            return out;
        }
        if f.kind.has_data() && (st.st_size as u64) != f.size_bytes {
            out.push(What::Size {
                set: f.size_bytes,
                disk: st.st_size as u64,
            });
        }
        if f.kind != FileKind::Symlink && (f.stat.mode & 0o7777) != (st.st_mode & 0o7777) {
            out.push(What::Mode {
                set: f.stat.mode & 0o7777,
                disk: st.st_mode & 0o7777,
            });
        }
        if (f.stat.uid, f.stat.gid) != (st.st_uid, st.st_gid) {
            out.push(What::Owner {
                set: (f.stat.uid, f.stat.gid),
                disk: (st.st_uid, st.st_gid),
            });
        }
        if f.kind != FileKind::Directory
            && (f.stat.mtime_sec, f.stat.mtime_nsec as i64) != (st.st_mtime, st.st_mtime_nsec)
        {
            out.push(What::Mtime {
                set: (f.stat.mtime_sec, f.stat.mtime_nsec),
                disk: (st.st_mtime, st.st_mtime_nsec as u32),
            });
        }
        if matches!(f.kind, FileKind::CharDevice | FileKind::BlockNode) && f.stat.rdev != st.st_rdev
        {
            out.push(What::Rdev {
                set: f.stat.rdev,
                disk: st.st_rdev,
            });
        }
        if matches!(f.kind, FileKind::Regular | FileKind::Directory) {
            match self.flags(&f.path, f.kind == FileKind::Directory, &st) {
                Ok(Some(disk)) if disk != f.stat.flags & at::FLAGS_SETTABLE => {
                    out.push(What::Flags {
                        set: f.stat.flags & at::FLAGS_SETTABLE,
                        disk,
                    })
                }
                Ok(_) => {}
                Err(e) => out.push(What::Unreadable {
                    why: format!("file flags: {e}"),
                }),
            }
        }
        match live_xattrs(&dir, name) {
            Ok(disk) => out.extend(xattr_differences(&f.xattrs, disk)),
            Err(e) => out.push(What::Unreadable {
                why: format!("extended attributes: {e}"),
            }),
        }
        if f.kind == FileKind::Symlink {
            match nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name) {
                Ok(target) => {
                    let target = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str());
                    if target != f.link_target.as_slice() {
                        out.push(What::LinkTarget {
                            set: f.link_target.clone(),
                            disk: target.to_vec(),
                        });
                    }
                }
                Err(e) => out.push(What::Unreadable {
                    why: format!("readlink: {}", errno(e)),
                }),
            }
        }
        if f.kind.has_data() && (st.st_size as u64) == f.size_bytes {
            match self.content(&f.path, file_id, f, &st) {
                Ok(Some(what)) => out.push(what),
                Ok(None) => {}
                Err(e) => out.push(What::Unreadable { why: e.to_string() }),
            }
        }
        out
    }

    /// The settable file flags of the regular file or directory `path`
    /// (the inode `st`), as the walk reads them; `None` when it cannot be
    /// opened for lack of permission (the walk records no flags then).
    fn flags(&self, path: &[u8], is_dir: bool, st: &FileStat) -> io::Result<Option<u32>> {
        let mut how = OFlag::O_RDONLY | OFlag::O_NONBLOCK;
        if is_dir {
            how |= OFlag::O_DIRECTORY;
        }
        let fd = match self.root.open_at(path, how) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(None),
            Err(e) => return Err(with_op("open", e)),
        };
        let now = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| with_op("fstat", errno(e)))?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
            return Err(io::Error::other("replaced while being compared"));
        }
        Ok(Some(
            crate::source::xattr::flags_of(&fd)? & at::FLAGS_SETTABLE,
        ))
    }

    /// A hard link on disk must be its target's inode.
    fn hard_link(&self, catalog: &Catalog, f: &CatalogFile, st: &FileStat) -> Vec<What> {
        let Some(target) = catalog.files.get(f.hardlink_to as usize) else {
            return vec![What::Refused {
                why: "hard link to no entry of the catalog".into(),
            }];
        };
        let same = check_rel(&target.path).is_ok()
            && matches!(
                self.live(&target.path),
                Ok(Live::There { st: t, .. }) if (t.st_dev, t.st_ino) == (st.st_dev, st.st_ino)
            );
        if same {
            Vec::new()
        } else {
            vec![What::NotLinked {
                target: target.path.clone(),
            }]
        }
    }

    /// Where the records of file `file_id` of the tip (`f`) were cut, from
    /// the catalog holding its data: (segments as (offset, length,
    /// records), chunk bytes); no segments when that set is not given.
    fn layout(&self, file_id: u32, f: &CatalogFile) -> (Vec<(u64, u64, u32)>, u64) {
        let tip = &self.chain.tip().catalog;
        let (set, file_id) = if f.origin == 0 {
            (0, file_id)
        } else {
            let n = f.origin as usize - 1;
            let Some(s) = self.chain.ancestor_sets.get(n).copied().flatten() else {
                return (Vec::new(), tip.chunk_bytes as u64);
            };
            (s, f.origin_file_id)
        };
        let catalog = &self.chain.sets[set].catalog;
        let indexes = self.segments[set]
            .get_or_init(|| segments_by_file(catalog))
            .get(&file_id)
            .cloned()
            .unwrap_or_default();
        let usable = |device: u32| {
            catalog.devices.get(device as usize).map(|d| d.state) != Some(DeviceState::Failed)
        };
        let segments = indexes
            .into_iter()
            .map(|i| catalog.segments[i])
            .filter(|s| usable(s.device))
            .map(|s| (s.offset, s.length, s.records))
            .collect();
        (segments, catalog.chunk_bytes as u64)
    }

    /// `Some(What::Content)` when the live bytes of `f` do not give its
    /// digest (or, for a block device, their size differs).
    fn content(
        &mut self,
        path: &[u8],
        file_id: u32,
        f: &CatalogFile,
        st: &FileStat,
    ) -> io::Result<Option<What>> {
        // Below the root, no symlink followed (O_NOFOLLOW added); a FIFO
        // swapped in does not block (O_NONBLOCK).
        let fd = self
            .root
            .open_at(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK)
            .map_err(|e| with_op("open", e))?;
        let file = File::from(fd);
        let now =
            nix::sys::stat::fstat(file.as_raw_fd()).map_err(|e| with_op("fstat", errno(e)))?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
            return Err(io::Error::other("replaced while being compared"));
        }
        let is_block = st.st_mode & libc::S_IFMT == libc::S_IFBLK;
        let size = if is_block {
            crate::device::block::size_bytes(&file).map_err(|e| with_op("BLKGETSIZE64", e))?
        } else {
            st.st_size as u64
        };
        if size != f.size_bytes {
            return Ok(Some(What::Size {
                set: f.size_bytes,
                disk: size,
            }));
        }
        let (segments, chunk) = self.layout(file_id, f);
        let live_data = if !is_block && (st.st_blocks as u64).saturating_mul(512) < size {
            crate::source::data_ranges_of(&file, size).map_err(|e| with_op("SEEK_DATA", e))?
        } else {
            None
        };
        let dense = vec![(0, size)];
        let mut layouts = Vec::new();
        if let Some(data) = live_data {
            layouts.push(data);
        }
        layouts.push(dense.clone());
        let stored_records: u64 = segments.iter().map(|s| s.2 as u64).sum();
        let mut tried = 0;
        while tried < layouts.len() {
            let cut = records(&segments, &layouts[tried], size, chunk);
            tried += 1;
            if crate::format::hash_eq(&self.digest_of(&file, &cut)?, &f.digest) {
                return Ok(None);
            }
            // Stored sparse, not sparse (or sparse otherwise) on disk now:
            // holes where the bytes are zero, as a last try.
            let dense_records = records(&segments, &dense, size, chunk).len() as u64;
            if tried == layouts.len() && tried < 3 && stored_records < dense_records {
                let zeros = zero_holes(&file, size).map_err(|e| with_op("read", e))?;
                self.content_bytes += size;
                layouts.push(zeros);
            }
        }
        Ok(Some(What::Content))
    }

    /// The file digest of `file` cut into `cut` (offset, length) records.
    fn digest_of(&mut self, file: &File, cut: &[(u64, u32)]) -> io::Result<[u8; 32]> {
        let mut hashed: Vec<DigestRecord> = Vec::with_capacity(cut.len());
        let mut buf = vec![0u8; cut.iter().map(|r| r.1 as usize).max().unwrap_or(0)];
        for &(offset, length) in cut {
            let buf = &mut buf[..length as usize];
            file.read_exact_at(buf, offset)
                .map_err(|e| with_op("read", e))?;
            self.content_bytes += length as u64;
            hashed.push((offset, length, payload_hash(buf)));
        }
        Ok(file_digest(&mut hashed))
    }

    /// Names in the directory `path` on disk that the set does not hold.
    fn new_names(&self, path: &[u8], stored: &HashSet<&[u8]>) -> Vec<(Vec<u8>, &'static str)> {
        let Ok(fd) = self
            .root
            .open_at(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
        else {
            return Vec::new(); // not a directory on disk: said already
        };
        let dir_fd = fd.as_raw_fd();
        let Ok(mut dir) = nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in dir.iter().flatten() {
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let mut child = path.to_vec();
            child.push(b'/');
            child.extend_from_slice(name);
            if stored.contains(&child[..]) {
                continue;
            }
            let kind = nix::sys::stat::fstatat(Some(dir_fd), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .map(|st| kind_of(&st))
                .unwrap_or("unknown kind");
            out.push((child, kind));
        }
        out
    }
}

/// The extended attributes of `name` in the open directory `dir`, read as
/// the walk reads them (`source::xattr::read`, not following a symlink)
/// on `/proc/self/fd/DIR/NAME`: the magic link is the open directory
/// itself, not a path walked again from the root.
fn live_xattrs(dir: &OwnedFd, name: &[u8]) -> io::Result<Vec<Xattr>> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    crate::source::xattr::read(Path::new(std::ffi::OsStr::from_bytes(&path)))
}

/// The differences between the stored extended attributes `set` and
/// those on disk, `disk` (both sorted by name): one per name added,
/// removed or changed, by name.
fn xattr_differences(set: &[Xattr], mut disk: Vec<Xattr>) -> Vec<What> {
    disk.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < set.len() || j < disk.len() {
        let order = match (set.get(i), disk.get(j)) {
            (Some(s), Some(d)) => s.name.cmp(&d.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, _) => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                out.push(What::Xattr {
                    name: set[i].name.clone(),
                    set: Some(set[i].value.clone()),
                    disk: None,
                });
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(What::Xattr {
                    name: disk[j].name.clone(),
                    set: None,
                    disk: Some(std::mem::take(&mut disk[j].value)),
                });
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                if set[i].value != disk[j].value {
                    out.push(What::Xattr {
                        name: set[i].name.clone(),
                        set: Some(set[i].value.clone()),
                        disk: Some(std::mem::take(&mut disk[j].value)),
                    });
                }
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// The data ranges of `file` as its bytes say: runs of
/// `SPARSE_ALIGN_BYTES` blocks that are not all zero (what backup would
/// have found had every zero block been a hole).
fn zero_holes(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    const READ_BYTES: usize = 1 << 20;
    let align = crate::source::SPARSE_ALIGN_BYTES;
    let mut buf = vec![0u8; READ_BYTES];
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut at = 0;
    while at < size {
        let n = (size - at).min(READ_BYTES as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        for (k, block) in buf[..n].chunks(align as usize).enumerate() {
            if block.iter().all(|&b| b == 0) {
                continue;
            }
            let start = at + k as u64 * align;
            let end = (start + align).min(size);
            match out.last_mut() {
                Some(last) if last.0 + last.1 == start => last.1 = end - last.0,
                _ => out.push((start, end - start)),
            }
        }
        at += n as u64;
    }
    Ok(out)
}

fn with_op(op: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{op}: {e}"))
}

/// The records (offset, length) a file of `size` with data ranges `data`
/// (offset, length) was cut into: per segment (offset, length, records),
/// at multiples of the record size that gives the segment's record count
/// (the chunk, or a tape's smaller power of two); the whole file at
/// `chunk` when there are no segments (data held by a set not given).
/// A range stored twice (a failed device's copy) counts once.
pub fn records(
    segments: &[(u64, u64, u32)],
    data: &[(u64, u64)],
    size: u64,
    chunk: u64,
) -> Vec<(u64, u32)> {
    let whole = [(0, size, u32::MAX)];
    let segments = if segments.is_empty() {
        &whole[..]
    } else {
        segments
    };
    let mut out = Vec::new();
    for &(offset, length, count) in segments {
        let end = offset.saturating_add(length).min(size);
        let mut record = chunk.max(1);
        let mut chosen = chunk.max(1);
        while record >= RECORD_PAYLOAD_BYTES_MIN.min(chunk.max(1)) {
            if count == u32::MAX || cut(data, offset, end, record, &mut |_, _| {}) == count as u64 {
                chosen = record;
                break;
            }
            record /= 2;
        }
        cut(data, offset, end, chosen, &mut |o, l| out.push((o, l)));
    }
    out.sort_unstable();
    out.dedup_by_key(|r| r.0);
    out
}

/// Cut the data of [start, end) at multiples of `record`; calls `each`
/// per record and returns how many.
fn cut(
    data: &[(u64, u64)],
    start: u64,
    end: u64,
    record: u64,
    each: &mut dyn FnMut(u64, u32),
) -> u64 {
    let mut n = 0;
    for &(offset, length) in data {
        let mut at = offset.max(start);
        let stop = offset.saturating_add(length).min(end);
        while at < stop {
            let next = stop.min((at / record + 1) * record);
            each(at, (next - at) as u32);
            n += 1;
            at = next;
        }
    }
    n
}

#[cfg(test)]
mod tests;
