//! Walking sources: files and directory trees into a flat entry list.
//!
//! INTERFACE (fixed): `walk(&[PathBuf]) -> Result<Walk, SourceError>`.

use std::path::PathBuf;

/// Metadata kept for every entry.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Meta {
    /// Full st_mode (type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file. `data` lists the byte ranges holding data
    /// `(offset, length)`, block aligned, ascending, when the file is sparse;
    /// `None` means the whole file is data.
    File {
        size_bytes: u64,
        data: Option<Vec<(u64, u64)>>,
    },
    Dir,
    Symlink {
        target: Vec<u8>,
    },
    /// A second (third, ...) name of a regular file seen earlier: `target` is
    /// the index in `Walk::entries` of the first name, which holds the data.
    HardLink {
        target: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path stored in the set: relative to the source's parent directory
    /// (as `tar -C parent name`), '/' separated, raw bytes (may be non-UTF-8).
    pub path: Vec<u8>,
    /// Where to read it from now.
    pub source: PathBuf,
    pub kind: EntryKind,
    pub meta: Meta,
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
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no sources given")]
    NoSources,
    #[error("source {path}: {error}")]
    Source {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("two sources store entries under the same name '{name}'")]
    DuplicateName { name: String },
}

pub fn walk(sources: &[PathBuf]) -> Result<Walk, SourceError> {
    let _ = sources;
    unimplemented!("source walk: see issue 3")
}
