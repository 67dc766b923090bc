//! The catalog: every file and every segment of the set. Replicated on
//! every device, so any one device says what the whole set holds.
//!
//! Encoding (docs/FORMAT.md, "Catalog"): a 52-byte fixed header (magic,
//! version, chunk size, set id, creation time, the three table counts),
//! then the device, file and segment tables and the chain section (the
//! earlier sets of an incremental set, removed and renamed paths) with
//! every integer an LEB128 varint and every byte string length-prefixed,
//! then a MAC (keyed BLAKE3 of the bytes before it, zero without a key),
//! then a CRC32C of all the bytes before it. Decoding checks structure
//! first (length, magic, CRC, version, counts against the bytes present,
//! varints, exact end), then the same semantic rules `Catalog::validate`
//! applies before an encode.
//!
//! This file holds the types, the header layout and the file digest;
//! `encode`, `decode` and `validate` hold the three concerns their names say.

mod decode;
mod encode;
mod parity;
mod stream;
mod validate;

#[cfg(test)]
mod rules_tests;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod streamed_tests;
#[cfg(test)]
pub(crate) mod tests;

pub use parity::{CatalogParity, CatalogStripe, StripeRecord};
pub use stream::{CatalogStream, Entries, FileSummary, FilesWhere, Spilled};

use super::{SetId, Stat, HASH_BYTES};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    /// Another name of the regular file `CatalogFile::hardlink_to`.
    HardLink,
    /// A raw block device (disk, partition, md array, LVM volume or
    /// snapshot) read as one large file: data like a regular file, restored
    /// onto a block device or as an image file.
    BlockDevice,
    /// A named pipe (FIFO) inside a tree: no data, made with mknod.
    Fifo,
    /// A character device node inside a tree (`rdev` says which device).
    CharDevice,
    /// A block device node inside a tree (`rdev` says which device): only
    /// the node, no data; not the `BlockDevice` source kind.
    BlockNode,
}

impl FileKind {
    /// The value stored on media (one byte).
    pub const fn code(self) -> u8 {
        match self {
            FileKind::Regular => 1,
            FileKind::Directory => 2,
            FileKind::Symlink => 3,
            FileKind::HardLink => 4,
            FileKind::BlockDevice => 5,
            FileKind::Fifo => 6,
            FileKind::CharDevice => 7,
            FileKind::BlockNode => 8,
        }
    }

    /// The kind stored on media as `code`, if known.
    pub const fn from_code(code: u8) -> Option<FileKind> {
        match code {
            1 => Some(FileKind::Regular),
            2 => Some(FileKind::Directory),
            3 => Some(FileKind::Symlink),
            4 => Some(FileKind::HardLink),
            5 => Some(FileKind::BlockDevice),
            6 => Some(FileKind::Fifo),
            7 => Some(FileKind::CharDevice),
            8 => Some(FileKind::BlockNode),
            _ => None,
        }
    }

    /// Whether entries of this kind carry data (size, digest, segments,
    /// origin): regular files and block devices.
    pub const fn has_data(self) -> bool {
        matches!(self, FileKind::Regular | FileKind::BlockDevice)
    }

    /// Special files made with mknod: fifos, character and block device nodes.
    pub const fn is_special(self) -> bool {
        matches!(
            self,
            FileKind::Fifo | FileKind::CharDevice | FileKind::BlockNode
        )
    }

    /// Kinds that store `rdev`: device nodes.
    pub const fn has_rdev(self) -> bool {
        matches!(self, FileKind::CharDevice | FileKind::BlockNode)
    }

    /// Kinds a HardLink may name: those whose inode can have several
    /// names (regular files and special files).
    pub const fn can_be_hard_linked(self) -> bool {
        matches!(self, FileKind::Regular) || self.is_special()
    }

    /// Kinds that may carry file flags (FS_IOC_GETFLAGS).
    pub const fn has_flags(self) -> bool {
        matches!(self, FileKind::Regular | FileKind::Directory)
    }
}

/// Longest extended attribute name (Linux XATTR_NAME_MAX).
pub const XATTR_NAME_MAX: usize = 255;
/// Largest extended attribute value (Linux XATTR_SIZE_MAX).
pub const XATTR_VALUE_MAX: usize = 65536;

/// One extended attribute: its full name (`user.x`, `security.capability`,
/// `system.posix_acl_access`, ...) and raw value. POSIX ACLs travel as
/// their `system.posix_acl_*` values.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// Why an xattr list breaks the rules (docs/FORMAT.md, "Catalog rules"):
/// names 1..=255 bytes without NUL, values at most 65536 bytes, names
/// strictly ascending (sorted, no duplicates).
pub fn check_xattrs(xattrs: &[Xattr]) -> Result<(), &'static str> {
    for (i, x) in xattrs.iter().enumerate() {
        if x.name.is_empty() {
            return Err("xattr with an empty name");
        }
        if x.name.len() > XATTR_NAME_MAX {
            return Err("xattr name longer than 255 bytes");
        }
        if x.name.contains(&0) {
            return Err("xattr name contains a NUL byte");
        }
        if x.value.len() > XATTR_VALUE_MAX {
            return Err("xattr value longer than 65536 bytes");
        }
        if i > 0 && xattrs[i - 1].name >= x.name {
            return Err("xattr names not strictly ascending (unsorted or duplicate)");
        }
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogFile {
    /// Relative path, raw bytes, '/' separated.
    pub path: Vec<u8>,
    pub kind: FileKind,
    /// Mode, owner, times, st_dev/st_ino at backup time; `rdev` only for a
    /// CharDevice or BlockNode, `flags` only for a Regular file or Directory
    /// (else 0).
    pub stat: Stat,
    /// Logical size (Regular, BlockDevice); 0 otherwise.
    pub size_bytes: u64,
    /// Symlink target (Symlink), else empty.
    pub link_target: Vec<u8>,
    /// File id of the data-holding name (HardLink), else 0.
    pub hardlink_to: u32,
    /// BLAKE3 over the file's records in offset order, each as
    /// (file_offset u64 LE, payload_bytes u32 LE, BLAKE3 of the payload).
    /// Zero for kinds without data. Computed by [`file_digest`]. For a file whose data is in an earlier
    /// set (`origin` >= 1), the digest recorded there.
    pub digest: [u8; 32],
    /// Where the data is (Regular, BlockDevice): 0 in this set (its
    /// segments); n >= 1 in the earlier set `Catalog::ancestors[n - 1]`,
    /// unchanged since. 0 for other kinds.
    pub origin: u32,
    /// With `origin` >= 1: the file's id in that earlier set's catalog; else 0.
    pub origin_file_id: u32,
    /// Extended attributes, strictly ascending by name (`check_xattrs`).
    /// Empty for a HardLink (its target's inode holds them).
    pub xattrs: Vec<Xattr>,
}

/// A file of an incremental set found under another name in the previous
/// set, unchanged: its data is referenced, not stored again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renamed {
    /// The file (id in this catalog); its `origin` is >= 1.
    pub file_id: u32,
    /// Its path in the previous set.
    pub from: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatalogSegment {
    pub file_id: u32,
    pub offset: u64,
    pub length: u64,
    /// Device index (label's device_index) holding this segment.
    pub device: u32,
    /// Media offset of the segment's first record on that device.
    pub position: u64,
    /// Number of records written for it (holes of sparse files have none).
    pub records: u32,
}

/// How a device ended the backup run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceState {
    /// All its work written; catalog and label complete.
    #[default]
    Complete,
    /// It filled up (ENOSPC, end of medium): what reached it is good, the
    /// rest was redirected to the other devices.
    Full,
    /// It failed (EIO, vanished): not trusted. Everything assigned to it was
    /// written again on the survivors; its segments stay listed as copies.
    Failed,
}

impl DeviceState {
    pub const fn code(self) -> u8 {
        match self {
            DeviceState::Complete => 1,
            DeviceState::Full => 2,
            DeviceState::Failed => 3,
        }
    }

    pub const fn from_code(code: u8) -> Option<DeviceState> {
        match code {
            1 => Some(DeviceState::Complete),
            2 => Some(DeviceState::Full),
            3 => Some(DeviceState::Failed),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogDevice {
    /// The path the device had at backup time (informational).
    pub path: Vec<u8>,
    pub capacity_bytes: u64,
    pub state: DeviceState,
    /// Media offset just past the device's last data record.
    pub data_end: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Catalog {
    pub set_id: SetId,
    pub created_unix_ns: u64,
    pub chunk_bytes: u32,
    pub devices: Vec<CatalogDevice>,
    pub files: Vec<CatalogFile>,
    pub segments: Vec<CatalogSegment>,
    /// The chain of an incremental set: the earlier sets, newest first (the
    /// parent, the set `--since` named, then its parent, ... down to the
    /// full set). Empty for a full set.
    pub ancestors: Vec<SetId>,
    /// Paths of the parent set that no longer exist (deleted, or the old
    /// name of a renamed entry). Empty for a full set.
    pub removed: Vec<Vec<u8>>,
    /// Files found unchanged under another name than in the parent set.
    pub renamed: Vec<Renamed>,
    /// `--parity M`: the stripes and where their records are (the parity
    /// section, after the chain section). None: a set without parity (its
    /// encoding has no parity section, as before issue 19).
    pub parity: Option<CatalogParity>,
    /// Per file (by file id): the bytes its data records take as stored
    /// in this set (`stored_bytes` of a compressed record, else its
    /// `payload_bytes`; headers and padding not counted), over the
    /// devices that did not fail, each record once; 0 for a file without
    /// data in this set. Empty: not recorded (a catalog from before
    /// FORMAT.md amendment ten; its encoding has no stored section).
    pub stored_bytes: Vec<u64>,
    /// Keyed BLAKE3 of the encoding's bytes before it with the set's MAC
    /// key (`Catalog::mac_for`, set by `Catalog::seal`); zero for a set
    /// written without a key. Not checked by `decode` (it has no key).
    pub mac: [u8; HASH_BYTES],
}

/// Byte offsets of the catalog's fixed header (docs/FORMAT.md, "Catalog").
pub mod layout {
    pub const MAGIC: usize = 0; // [u8; 8] "PBIOCATL"
    pub const VERSION: usize = 8; // u32
    pub const CHUNK_BYTES: usize = 12; // u32
    pub const SET_ID: usize = 16; // [u8; 16]
    pub const CREATED_UNIX_NS: usize = 32; // u64
    pub const DEVICE_COUNT: usize = 40; // u32
    pub const FILE_COUNT: usize = 44; // u32
    pub const SEGMENT_COUNT: usize = 48; // u32
    /// Start of the tables; the fixed header's length.
    pub const TABLES: usize = 52;

    const _: () = assert!(VERSION == MAGIC + 8);
    const _: () = assert!(CHUNK_BYTES == VERSION + 4);
    const _: () = assert!(SET_ID == CHUNK_BYTES + 4);
    const _: () = assert!(CREATED_UNIX_NS == SET_ID + 16);
    const _: () = assert!(DEVICE_COUNT == CREATED_UNIX_NS + 8);
    const _: () = assert!(FILE_COUNT == DEVICE_COUNT + 4);
    const _: () = assert!(SEGMENT_COUNT == FILE_COUNT + 4);
    const _: () = assert!(TABLES == SEGMENT_COUNT + 4);
}

/// Bytes of the trailing CRC32C.
pub const CATALOG_CRC_BYTES: usize = 4;
/// Bytes of the MAC, just before the CRC.
pub const CATALOG_MAC_BYTES: usize = HASH_BYTES;
/// The smallest encoded catalog (fixed header, MAC and CRC, empty tables).
pub const CATALOG_BYTES_MIN: usize = layout::TABLES + CATALOG_MAC_BYTES + CATALOG_CRC_BYTES;

/// Bytes one record contributes to a [`file_digest`].
pub const FILE_DIGEST_ENTRY_BYTES: usize = 8 + 4 + HASH_BYTES;

/// One Data record as a [`file_digest`] sees it: `(file_offset,
/// payload_bytes, BLAKE3 of the payload)`.
pub type DigestRecord = (u64, u32, [u8; HASH_BYTES]);

/// The BLAKE3 of a record's payload, as [`file_digest`] takes it.
pub fn payload_hash(payload: &[u8]) -> [u8; HASH_BYTES] {
    *blake3::hash(payload).as_bytes()
}

/// The per-file digest stored in `CatalogFile::digest` (docs/FORMAT.md,
/// "File digest"): sorts `records` (one per Data record of the file) by
/// offset, then BLAKE3 over each as `file_offset` u64 LE, `payload_bytes`
/// u32 LE, the payload's BLAKE3 (32 bytes). Ties (which a valid set does
/// not have) are ordered by length, then hash, so the result never depends
/// on the input order. A file with no records (empty, or all hole) has the
/// digest of no bytes, `blake3("")`. The digest proves the bytes, not only
/// their checksums: a payload replaced by one with the same CRC32C changes it.
pub fn file_digest(records: &mut [DigestRecord]) -> [u8; HASH_BYTES] {
    const BATCH: usize = 128;
    records.sort_unstable();
    let mut hasher = blake3::Hasher::new();
    let mut buf = [0u8; BATCH * FILE_DIGEST_ENTRY_BYTES];
    for batch in records.chunks(BATCH) {
        for (entry, (offset, length, hash)) in
            buf.chunks_exact_mut(FILE_DIGEST_ENTRY_BYTES).zip(batch)
        {
            entry[0..8].copy_from_slice(&offset.to_le_bytes());
            entry[8..12].copy_from_slice(&length.to_le_bytes());
            entry[12..].copy_from_slice(hash);
        }
        hasher.update(&buf[..batch.len() * FILE_DIGEST_ENTRY_BYTES]);
    }
    *hasher.finalize().as_bytes()
}

impl Catalog {
    /// Whether the set is incremental (has earlier sets it refers to).
    pub fn is_incremental(&self) -> bool {
        !self.ancestors.is_empty()
    }
}
