//! Walking sources: files, directory trees and raw block devices into a
//! flat entry list; the incremental filter (`incremental`); the check for
//! files that changed while they were read (`recheck`).
//!
//! INTERFACE (fixed): `walk(&[PathBuf]) -> Result<Walk, SourceError>`.
//!
//! Choices (how sources are named, `.` and `/`, symlinks, mount points,
//! special files, sparse ranges, block devices): see `walk`.

pub mod incremental;
pub mod select;
pub mod spill;
pub mod xattr;

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use select::{Excluded, Reason, Selection};

/// Metadata kept for every entry.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Meta {
    /// Mode, owner, times, identity, rdev and flags (the part a catalog
    /// keeps as it is).
    pub stat: crate::format::Stat,
    pub nlink: u64,
    /// Extended attributes (POSIX ACLs among them), sorted by name.
    pub xattrs: Vec<crate::format::Xattr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file, or a block device given as a source (read as one
    /// large file; `meta.mode` says which: see `Entry::is_block_device`).
    /// `data` lists the byte ranges holding data
    /// `(offset, length)`, block aligned, ascending, when the file is sparse;
    /// `None` means the whole file is data (always for a block device).
    File {
        size_bytes: u64,
        data: Option<Vec<(u64, u64)>>,
    },
    Dir,
    Symlink {
        target: Vec<u8>,
    },
    /// A second (third, ...) name of a regular or special file seen
    /// earlier: `target` is the index in `Walk::entries` of the first name,
    /// which holds the data and the metadata.
    HardLink {
        target: u32,
    },
    /// A fifo, character or block device node inside a tree: no data;
    /// `meta.mode` says which, `meta.rdev` the device a node stands for.
    Special,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path stored in the set: relative to the source's parent directory
    /// (as `tar -C parent name`), '/' separated, raw bytes (may be non-UTF-8).
    pub path: Vec<u8>,
    /// The source this entry was found under, shared by all its entries:
    /// where to read it from is `source()`, built on demand, so that an
    /// entry does not carry a second copy of its path (issue 23: per-file
    /// memory; PERF.md "#23 memory").
    top: Arc<Top>,
    pub kind: EntryKind,
    pub meta: Meta,
}

/// A source as given: where to read it, and the length of the name it is
/// stored under (the first `stored_len` bytes of each of its entries' paths).
#[derive(Debug, PartialEq, Eq)]
struct Top {
    source: PathBuf,
    stored_len: usize,
}

impl Entry {
    /// An entry read from `source` (a source of its own: the walk shares
    /// one `Top` between all the entries of a tree instead).
    pub fn new(path: Vec<u8>, source: PathBuf, kind: EntryKind, meta: Meta) -> Entry {
        let top = Arc::new(Top {
            source,
            stored_len: path.len(),
        });
        Entry {
            path,
            top,
            kind,
            meta,
        }
    }

    /// Where to read it from now: the source's path, joined with the
    /// entry's path below the source's stored name.
    pub fn source(&self) -> PathBuf {
        let top = &self.top;
        match self.path.get(top.stored_len + 1..) {
            Some(below) if self.path.len() > top.stored_len => {
                top.source.join(std::ffi::OsStr::from_bytes(below))
            }
            _ => top.source.clone(),
        }
    }

    /// A block device read as one large file (a source that is a block
    /// device, or a symlink to one).
    pub fn is_block_device(&self) -> bool {
        matches!(self.kind, EntryKind::File { .. })
            && self.meta.stat.mode & libc::S_IFMT == libc::S_IFBLK
    }
}

#[derive(Debug)]
pub struct WalkError {
    pub path: PathBuf,
    pub error: std::io::Error,
}

#[derive(Debug, Default)]
pub struct Walk {
    /// Pre-order: a directory comes before its contents; siblings sorted by name.
    pub entries: Vec<Entry>,
    /// Entries that could not be read, by path. Never silently dropped.
    pub errors: Vec<WalkError>,
    /// What the selection left out, in walk order (see `select`).
    pub excluded: Vec<Excluded>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no sources given")]
    NoSources,
    #[error("source {}: {error}", crate::units::shown_path(path))]
    Source {
        path: PathBuf,
        error: std::io::Error,
    },
    /// `name` escaped for the terminal (`units::shown_name`).
    #[error("two sources store entries under the same name '{name}'")]
    DuplicateName { name: String },
    /// The temporary file the walk spills its entries to
    /// (`walk_spilled`) could not be made or written.
    #[error("the walk's temporary file (in {}): {error}", crate::units::shown_path(&std::env::temp_dir()))]
    Spill { error: std::io::Error },
}

/// Data ranges of a sparse file are rounded out to this alignment: a range
/// starts at a multiple of it and ends at a multiple of it or at end of file.
pub const SPARSE_ALIGN_BYTES: u64 = 4096;

/// Walk `sources` into a flat entry list.
///
/// Choices (see also the module docs):
/// - Each source is stored under its own name, as `tar -C parent name` would:
///   `/a/b/dir` yields `dir`, `dir/x`, ... A trailing `/` or `/.` is ignored
///   (`dir/` and `dir/.` are stored as `dir`; note the kernel resolves a
///   symlink named with a trailing slash, so `link/` walks the directory it
///   points to, as tar does).
/// - A source with no final name (`.`, `..`, `x/..`) is canonicalized and
///   stored under the canonical name: `.` in `/home/u/proj` is `proj`.
/// - `/` (or anything that canonicalizes to it) is refused with
///   `SourceError::Source` (`InvalidInput`): it has no name to store it
///   under. Give its top-level directories instead (`/etc /home ...`).
/// - A source that cannot be lstat'ed is fatal (`SourceError::Source`);
///   anything below a source that cannot be read goes to `Walk::errors` and
///   the walk continues.
/// - Symlinks are never followed (lstat), including a source that is itself
///   a symlink: it is stored as a symlink.
/// - Mount points are crossed: a tree is walked whole, whatever filesystems
///   it spans (`dev` is kept in `Meta`), unless the selection says
///   `one_file_system` (`walk_selected`).
/// - FIFOs, character and block device nodes inside a tree are stored as
///   `EntryKind::Special` (the node, never a device's data). Sockets are
///   not stored: each is reported in `Walk::errors` as `Unsupported`
///   ("unsupported file type") and skipped.
/// - Every entry's extended attributes are read (`xattr::read`, never
///   following a symlink), and the file flags of regular files and
///   directories; hard-link names get none of their own (they share the
///   first name's inode).
/// - A source that is a block device (a disk, a partition, an md array, an
///   LVM volume or snapshot, a loop device) is read as one large file: an
///   `EntryKind::File` of the device's size (BLKGETSIZE64), all data,
///   whose `meta.mode` says S_IFBLK. A source that is a symlink to a block
///   device (`/dev/vg/lv`, `/dev/disk/by-id/...`, `/dev/mapper/...`) is
///   followed, stored under the symlink's name, and read from the device.
pub fn walk(sources: &[PathBuf]) -> Result<Walk, SourceError> {
    walk_selected(sources, &Selection::default())
}

/// `walk`, leaving out what `selection` excludes (see `select`): an
/// excluded name is not read further (an excluded directory is not
/// listed) and is listed in `Walk::excluded`, never in `Walk::entries`.
pub fn walk_selected(sources: &[PathBuf], selection: &Selection) -> Result<Walk, SourceError> {
    let (entries, errors, excluded) = walk_into(sources, selection, Vec::new())?;
    Ok(Walk {
        entries,
        errors,
        excluded,
    })
}

/// `walk_selected` with the entries spilled to a temporary file as they
/// are found (`spill`): what a backup holds of the walk stays small
/// whatever the number of entries (issue 23).
pub fn walk_spilled(
    sources: &[PathBuf],
    selection: &Selection,
) -> Result<SpilledWalk, SourceError> {
    let spill_error = |error| SourceError::Spill { error };
    let writer = spill::SpillWriter::new().map_err(spill_error)?;
    let (writer, errors, excluded) = walk_into(sources, selection, writer)?;
    Ok(SpilledWalk {
        entries: writer.finish().map_err(spill_error)?,
        errors,
        excluded,
    })
}

/// A `Walk` whose entries are spilled (`walk_spilled`).
#[derive(Debug)]
pub struct SpilledWalk {
    pub entries: spill::SpilledEntries,
    pub errors: Vec<WalkError>,
    pub excluded: Vec<Excluded>,
}

/// Where the walk puts its entries, in file-id order.
trait Sink {
    fn count(&self) -> usize;
    fn push(&mut self, entry: Entry);
}

impl Sink for Vec<Entry> {
    fn count(&self) -> usize {
        self.len()
    }
    fn push(&mut self, entry: Entry) {
        Vec::push(self, entry)
    }
}

impl Sink for spill::SpillWriter {
    fn count(&self) -> usize {
        spill::SpillWriter::count(self)
    }
    fn push(&mut self, entry: Entry) {
        spill::SpillWriter::push(self, &entry)
    }
}

type Walked<S> = (S, Vec<WalkError>, Vec<Excluded>);

fn walk_into<S: Sink>(
    sources: &[PathBuf],
    selection: &Selection,
    entries: S,
) -> Result<Walked<S>, SourceError> {
    if sources.is_empty() {
        return Err(SourceError::NoSources);
    }
    let mut names: HashSet<Vec<u8>> = HashSet::with_capacity(sources.len());
    let mut tops = Vec::with_capacity(sources.len());
    for source in sources {
        let name = stored_name(source)?;
        let source_error = |error| SourceError::Source {
            path: source.clone(),
            error,
        };
        let mut metadata = fs::symlink_metadata(source).map_err(source_error)?;
        let mut read_from = source.clone();
        if metadata.file_type().is_symlink() {
            // A symlink to a block device is the device (udev names volumes by symlinks).
            if let Ok(target) = fs::metadata(source) {
                if target.file_type().is_block_device() {
                    read_from = fs::canonicalize(source).map_err(source_error)?;
                    metadata = target;
                }
            }
        }
        if !names.insert(name.clone()) {
            return Err(SourceError::DuplicateName {
                name: crate::units::shown_name(&name),
            });
        }
        tops.push((name, read_from, metadata));
    }

    let mut walker = Walker {
        entries,
        errors: Vec::new(),
        excluded: Vec::new(),
        links: HashMap::new(),
        selection,
    };
    for (name, source, metadata) in tops {
        if metadata.file_type().is_block_device() {
            walker.block_device(name, source, &metadata);
        } else {
            walker.tree(name, source, metadata);
        }
    }
    Ok((walker.entries, walker.errors, walker.excluded))
}

/// The name a source is stored under (see `walk`).
fn stored_name(source: &Path) -> Result<Vec<u8>, SourceError> {
    let invalid = |why: &str| SourceError::Source {
        path: source.to_path_buf(),
        error: io::Error::new(io::ErrorKind::InvalidInput, why.to_string()),
    };
    if source.as_os_str().is_empty() {
        return Err(invalid("empty source path"));
    }
    if let Some(name) = source.file_name() {
        return Ok(name.as_bytes().to_vec());
    }
    // ".", "..", "x/..", "/": no final name; use the canonical one.
    let canonical = fs::canonicalize(source).map_err(|error| SourceError::Source {
        path: source.to_path_buf(),
        error,
    })?;
    match canonical.file_name() {
        Some(name) => Ok(name.as_bytes().to_vec()),
        None => Err(invalid(
            "the root directory has no name to store it under; \
             give its top-level directories as sources instead (e.g. /etc /home)",
        )),
    }
}

struct Walker<'a, S> {
    entries: S,
    errors: Vec<WalkError>,
    excluded: Vec<Excluded>,
    /// First name of every regular file with nlink > 1: (dev, ino) -> entry index.
    links: HashMap<(u64, u64), u32>,
    selection: &'a Selection,
}

/// One name waiting to be visited: stored path, where to read it, its lstat.
type Pending = (Vec<u8>, PathBuf, io::Result<fs::Metadata>);

impl<S: Sink> Walker<'_, S> {
    /// A block device source: one entry, its data the whole device.
    fn block_device(&mut self, path: Vec<u8>, source: PathBuf, metadata: &fs::Metadata) {
        if self.entries.count() >= u32::MAX as usize {
            let error = io::Error::other("more than 2^32 - 1 entries in one set");
            self.error(source, error);
            return;
        }
        let size_bytes = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&source)
            .and_then(|device| crate::device::block::size_bytes(&device));
        match size_bytes {
            Ok(size_bytes) => self.entries.push(Entry::new(
                path,
                source,
                EntryKind::File {
                    size_bytes,
                    data: None,
                },
                meta_of(metadata),
            )),
            Err(error) => self.error(source, error),
        }
    }

    /// Walk one source tree, pre-order, siblings sorted by name bytes,
    /// leaving out what the selection excludes.
    fn tree(&mut self, name: Vec<u8>, source: PathBuf, metadata: fs::Metadata) {
        let top_len = name.len();
        let top_dev = metadata.dev();
        let selection = self.selection;
        let top = Arc::new(Top {
            source: source.clone(),
            stored_len: top_len,
        });
        let mut stack: Vec<Pending> = vec![(name, source, Ok(metadata))];
        while let Some((stored, source, metadata)) = stack.pop() {
            // Only the source itself has a path this short.
            let is_top = stored.len() == top_len;
            if !is_top && !selection.is_empty() {
                let relative = &stored[top_len + 1..];
                let name = relative.rsplit(|&b| b == b'/').next().unwrap_or(relative);
                let is_dir = metadata.as_ref().is_ok_and(|m| m.file_type().is_dir());
                if let Some(reason) = selection.pattern_for(relative, name, is_dir) {
                    self.exclude(stored, reason, false);
                    continue;
                }
            }
            let metadata = match metadata {
                Ok(metadata) => metadata,
                Err(error) => {
                    self.error(source, error);
                    continue;
                }
            };
            let file_type = metadata.file_type();
            let is_dir = file_type.is_dir();
            let mut descend = is_dir;
            if !is_top {
                if let Some(limit) = selection.larger_than_bytes {
                    if file_type.is_file() && metadata.len() > limit {
                        self.exclude(stored, Reason::LargerThan(limit), false);
                        continue;
                    }
                }
                if selection.one_file_system && metadata.dev() != top_dev {
                    if !is_dir {
                        self.exclude(stored, Reason::OtherFilesystem, false);
                        continue;
                    }
                    // A mount point: kept, as an empty directory.
                    self.exclude(stored.clone(), Reason::OtherFilesystem, true);
                    descend = false;
                }
            }
            let Some(entry) = self.entry(stored, &source, &top, &metadata) else {
                continue;
            };
            if descend {
                let mut children = self.children(&source);
                let names = children.iter().map(|(name, _)| name.as_bytes());
                if let Some(reason) = selection.tag_in(names) {
                    self.exclude(entry.path.clone(), reason, is_top);
                    if !is_top {
                        continue;
                    }
                    // The source itself is kept, empty.
                    children.clear();
                }
                if selection.exclude_caches {
                    let tag = children.iter().position(|(name, _)| {
                        name.as_bytes() == select::CACHEDIR_TAG_NAME.as_bytes()
                    });
                    if let Some(i) = tag {
                        if select::is_cachedir_tag(&children[i].1.path()) {
                            self.exclude(entry.path.clone(), Reason::CacheDirectory, true);
                            let tag = children.swap_remove(i);
                            children = vec![tag];
                        }
                    }
                }
                // Only queues the children: they become entries after this one.
                push_children(&entry.path, children, &mut stack);
            }
            self.entries.push(entry);
        }
    }

    /// Record a name left out (`kept`: only its contents).
    fn exclude(&mut self, path: Vec<u8>, reason: Reason, kept: bool) {
        self.excluded.push(Excluded { path, reason, kept });
    }

    /// Read directory `source`: its children sorted by name. A directory
    /// that cannot be read (wholly or partly) is reported in `errors`; its
    /// entry stays, with what could be read.
    fn children(&mut self, source: &Path) -> Vec<(OsString, fs::DirEntry)> {
        let read_dir = match fs::read_dir(source) {
            Ok(read_dir) => read_dir,
            Err(error) => {
                self.error(source.to_path_buf(), error);
                return Vec::new();
            }
        };
        let mut children: Vec<(OsString, fs::DirEntry)> = Vec::new();
        for dir_entry in read_dir {
            match dir_entry {
                Ok(dir_entry) => children.push((dir_entry.file_name(), dir_entry)),
                Err(error) => {
                    // Keep what was read; report the rest as lost.
                    self.error(source.to_path_buf(), error);
                    break;
                }
            }
        }
        children.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        children
    }

    /// Build the entry for one lstat'ed name, or report why it is not stored.
    fn entry(
        &mut self,
        path: Vec<u8>,
        source: &Path,
        top: &Arc<Top>,
        metadata: &fs::Metadata,
    ) -> Option<Entry> {
        let top = Arc::clone(top);
        let index = match u32::try_from(self.entries.count()) {
            Ok(index) if index < u32::MAX => index,
            _ => {
                let error = io::Error::other("more than 2^32 - 1 entries in one set");
                self.error(source.to_path_buf(), error);
                return None;
            }
        };
        let mut meta = meta_of(metadata);
        let file_type = metadata.file_type();
        let special =
            file_type.is_fifo() || file_type.is_char_device() || file_type.is_block_device();
        let key = (meta.stat.dev, meta.stat.ino);
        if (file_type.is_file() || special) && meta.nlink > 1 {
            if let Some(&target) = self.links.get(&key) {
                return Some(Entry {
                    path,
                    top,
                    kind: EntryKind::HardLink { target },
                    meta,
                });
            }
        }
        if file_type.is_file() || file_type.is_dir() {
            match xattr::flags(source, file_type.is_dir()) {
                Ok(flags) => meta.stat.flags = flags,
                Err(error) => {
                    self.error(
                        source.to_path_buf(),
                        io::Error::new(error.kind(), format!("file flags: {error}")),
                    );
                    return None;
                }
            }
        }
        if !file_type.is_socket() {
            match xattr::read(source) {
                Ok(xattrs) => meta.xattrs = xattrs,
                Err(error) => {
                    let error =
                        io::Error::new(error.kind(), format!("extended attributes: {error}"));
                    self.error(source.to_path_buf(), error);
                    return None;
                }
            }
        }
        let kind = if file_type.is_file() {
            let size_bytes = metadata.len();
            let data = match data_ranges(source, size_bytes, metadata.blocks()) {
                Ok(data) => data,
                Err(error) => {
                    self.error(source.to_path_buf(), error);
                    return None;
                }
            };
            if meta.nlink > 1 {
                self.links.insert(key, index);
            }
            EntryKind::File { size_bytes, data }
        } else if file_type.is_dir() {
            EntryKind::Dir
        } else if file_type.is_symlink() {
            match fs::read_link(source) {
                Ok(target) => EntryKind::Symlink {
                    target: target.into_os_string().into_vec(),
                },
                Err(error) => {
                    self.error(source.to_path_buf(), error);
                    return None;
                }
            }
        } else if special {
            if meta.nlink > 1 {
                self.links.insert(key, index);
            }
            EntryKind::Special
        } else {
            let what = if file_type.is_socket() {
                "socket"
            } else {
                "unknown"
            };
            let error = io::Error::new(
                io::ErrorKind::Unsupported,
                format!("unsupported file type ({what}); not backed up"),
            );
            self.error(source.to_path_buf(), error);
            return None;
        };
        Some(Entry {
            path,
            top,
            kind,
            meta,
        })
    }

    fn error(&mut self, path: PathBuf, error: io::Error) {
        self.errors.push(WalkError { path, error });
    }
}

/// Push the children of the directory stored as `stored` on `stack` so
/// that they pop in ascending name order (`children` is sorted).
fn push_children(stored: &[u8], children: Vec<(OsString, fs::DirEntry)>, stack: &mut Vec<Pending>) {
    stack.reserve(children.len());
    for (name, dir_entry) in children.into_iter().rev() {
        // DirEntry::metadata is fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW):
        // one syscall, no path resolution from the top.
        let metadata = dir_entry.metadata();
        let mut child = Vec::with_capacity(stored.len() + 1 + name.len());
        child.extend_from_slice(stored);
        child.push(b'/');
        child.extend_from_slice(name.as_bytes());
        stack.push((child, dir_entry.path(), metadata));
    }
}

fn meta_of(metadata: &fs::Metadata) -> Meta {
    Meta {
        stat: crate::format::Stat {
            mode: metadata.mode(),
            uid: metadata.uid(),
            gid: metadata.gid(),
            mtime_sec: metadata.mtime(),
            mtime_nsec: metadata.mtime_nsec() as u32,
            ctime_sec: metadata.ctime(),
            ctime_nsec: metadata.ctime_nsec() as u32,
            dev: metadata.dev(),
            ino: metadata.ino(),
            rdev: if metadata.file_type().is_block_device() || metadata.file_type().is_char_device()
            {
                metadata.rdev()
            } else {
                0
            },
            flags: 0,
        },
        nlink: metadata.nlink(),
        xattrs: Vec::new(),
    }
}

/// Whether `entry` (a regular file that was read) changed since the walk
/// looked at it, by a fresh lstat: a description of what changed (size,
/// mtime, ctime, inode, or that it is gone), or None. A file that changes
/// while it is read may be stored torn (part old, part new); compare after
/// the whole set has been read to catch every change during the read.
///
/// Block devices are not checked: their node's metadata does not change
/// when their contents do (back up a snapshot for a consistent image).
pub fn changed_since_walk(entry: &Entry) -> Option<Changed> {
    let EntryKind::File { size_bytes, .. } = entry.kind else {
        return None;
    };
    if entry.is_block_device() {
        return None;
    }
    let now = match fs::symlink_metadata(entry.source()) {
        Ok(now) => now,
        Err(error) => return Some(Changed::Gone(error)),
    };
    let then = &entry.meta;
    let replaced = (now.dev(), now.ino()) != (then.stat.dev, then.stat.ino);
    let size_bytes = (now.len() != size_bytes).then_some((size_bytes, now.len()));
    let mtime =
        (now.mtime(), now.mtime_nsec() as u32) != (then.stat.mtime_sec, then.stat.mtime_nsec);
    let ctime =
        (now.ctime(), now.ctime_nsec() as u32) != (then.stat.ctime_sec, then.stat.ctime_nsec);
    (replaced || size_bytes.is_some() || mtime || ctime).then_some(Changed::Differs {
        replaced,
        size_bytes,
        mtime,
        ctime,
    })
}

/// What changed of a file since the walk looked at it
/// (`changed_since_walk`).
#[derive(Debug, thiserror::Error)]
pub enum Changed {
    /// It cannot be looked at again (removed, or no longer readable).
    #[error("cannot be looked at again ({0})")]
    Gone(io::Error),
    /// What differs from the walk's lstat: another inode, the size (then,
    /// now), the mtime, the ctime.
    #[error("{}", differs(*.replaced, *.size_bytes, *.mtime, *.ctime))]
    Differs {
        replaced: bool,
        size_bytes: Option<(u64, u64)>,
        mtime: bool,
        ctime: bool,
    },
}

fn differs(replaced: bool, size_bytes: Option<(u64, u64)>, mtime: bool, ctime: bool) -> String {
    let mut what = Vec::new();
    if replaced {
        what.push("replaced by another file".to_string());
    }
    if let Some((then, now)) = size_bytes {
        what.push(format!("size {then} -> {now}"));
    }
    if mtime {
        what.push("mtime changed".to_string());
    }
    if ctime {
        what.push("ctime changed".to_string());
    }
    what.join(", ")
}

/// Where the block device `rdev` is mounted read-write, from
/// /proc/self/mountinfo: the mount points. Its image, read while mounted
/// read-write, may be inconsistent.
pub fn mounted_read_write(rdev: u64) -> Vec<String> {
    mounts_of(rdev, true)
}

/// Where the block device `rdev` is mounted at all.
pub fn mounted(rdev: u64) -> Vec<String> {
    mounts_of(rdev, false)
}

fn mounts_of(rdev: u64, read_write_only: bool) -> Vec<String> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let want = format!("{}:{}", libc::major(rdev), libc::minor(rdev));
    text.lines()
        .filter_map(|line| {
            // id parent major:minor root mount-point options ...
            let fields: Vec<&str> = line.split(' ').collect();
            let (dev, mount_point, options) = (fields.get(2)?, fields.get(4)?, fields.get(5)?);
            let writable = options.split(',').any(|o| o == "rw");
            (*dev == want && (writable || !read_write_only)).then(|| mount_point.to_string())
        })
        .collect()
}

/// The data ranges of a regular file of `size_bytes` with `blocks` 512-byte
/// blocks allocated: `None` when the file is dense (the cheap pre-check
/// `blocks * 512 >= size` says so, or the holes found cover nothing),
/// otherwise the ranges holding data, each rounded out to
/// `SPARSE_ALIGN_BYTES` (start down, end up, clipped at EOF), merged,
/// ascending. A file that is all hole gives `Some(vec![])`.
fn data_ranges(path: &Path, size_bytes: u64, blocks: u64) -> io::Result<Option<Vec<(u64, u64)>>> {
    if blocks.saturating_mul(512) >= size_bytes {
        return Ok(None);
    }
    // O_NOFOLLOW | O_NONBLOCK: if the name was swapped for a symlink or a
    // FIFO since lstat, fail or return at once rather than follow or hang.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    data_ranges_of(&file, size_bytes)
}

/// `data_ranges` of an open file of `size_bytes` that the cheap pre-check
/// found sparse (also what `pbio diff` cuts a live file's records by).
pub fn data_ranges_of(file: &fs::File, size_bytes: u64) -> io::Result<Option<Vec<(u64, u64)>>> {
    let fd = file.as_raw_fd();
    let align = SPARSE_ALIGN_BYTES;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut position = 0u64;
    while position < size_bytes {
        let data = match lseek(fd, position as libc::off_t, Whence::SeekData) {
            Ok(offset) => offset as u64,
            // No data at or after `position`: the rest is a hole.
            Err(Errno::ENXIO) => break,
            // The filesystem cannot say: treat the file as dense.
            Err(Errno::EINVAL) => return Ok(None),
            Err(errno) => return Err(errno.into()),
        };
        if data >= size_bytes {
            break;
        }
        let hole = match lseek(fd, data as libc::off_t, Whence::SeekHole) {
            Ok(offset) => (offset as u64).min(size_bytes),
            // Shrunk under us: data runs to (our) end of file.
            Err(Errno::ENXIO) => size_bytes,
            Err(errno) => return Err(errno.into()),
        };
        if hole <= data {
            // The file changed under us; store what we have as dense data.
            return Ok(None);
        }
        let start = data / align * align;
        let end = hole.div_ceil(align).saturating_mul(align).min(size_bytes);
        match ranges.last_mut() {
            Some(last) if last.0 + last.1 >= start => last.1 = end.max(last.0 + last.1) - last.0,
            _ => ranges.push((start, end - start)),
        }
        position = hole;
    }
    if ranges.len() == 1 && ranges[0] == (0, size_bytes) {
        return Ok(None);
    }
    Ok(Some(ranges))
}

/// The integration tests' fixture and tree comparison, shared with the
/// unit tests of `source` and `restore::tree`.
#[cfg(test)]
#[path = "../../tests/common/mod.rs"]
pub(crate) mod test_fixture;

#[cfg(test)]
mod tests;
