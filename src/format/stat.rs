//! The metadata of one entry as stat(2) and FS_IOC_GETFLAGS report it: what
//! a source walk reads (`source::Meta`) and what a catalog keeps for every
//! file (`CatalogFile::stat`), one struct for both so the two cannot drift.
//! Its bytes on media are the catalog's (`catalog::encode`); this is only the
//! in-memory shape.

/// Metadata kept for every entry (full st_mode, owner, times, identity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stat {
    /// Full st_mode (type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    /// st_ctime: with `dev`, `ino`, the size and the mtime, what an
    /// incremental backup compares to find changed entries.
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    /// st_dev and st_ino.
    pub dev: u64,
    pub ino: u64,
    /// The device a character or block device node stands for (st_rdev);
    /// 0 for every other kind.
    pub rdev: u64,
    /// File flags (FS_IOC_GETFLAGS: immutable, append-only, ...) of a
    /// regular file or directory; 0 for every other kind.
    pub flags: u32,
}
