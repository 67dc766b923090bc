//! The catalog: every file and every segment of the set. Replicated on
//! every device, so any one device says what the whole set holds.

use super::{FormatError, SetId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    /// Another name of the regular file `CatalogFile::hardlink_to`.
    HardLink,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogFile {
    /// Relative path, raw bytes, '/' separated.
    pub path: Vec<u8>,
    pub kind: FileKind,
    /// Full st_mode.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    /// Logical size (Regular); 0 otherwise.
    pub size_bytes: u64,
    /// Symlink target (Symlink), else empty.
    pub link_target: Vec<u8>,
    /// File id of the data-holding name (HardLink), else 0.
    pub hardlink_to: u32,
    /// BLAKE3 over the file's records in offset order, each as
    /// (file_offset u64 LE, payload_bytes u32 LE, payload_crc u32 LE). Zero for non-regular.
    pub digest: [u8; 32],
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogDevice {
    /// The path the device had at backup time (informational).
    pub path: Vec<u8>,
    pub capacity_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Catalog {
    pub set_id: SetId,
    pub created_unix_ns: u64,
    pub chunk_bytes: u32,
    pub devices: Vec<CatalogDevice>,
    pub files: Vec<CatalogFile>,
    pub segments: Vec<CatalogSegment>,
}

impl Catalog {
    pub fn encode(&self) -> Vec<u8> {
        unimplemented!()
    }

    /// Decode; rejects anything malformed (bad magic/version/checksum,
    /// truncation, out-of-range ids, trailing bytes) without panicking.
    pub fn decode(buf: &[u8]) -> Result<Catalog, FormatError> {
        let _ = buf;
        unimplemented!()
    }
}

/// TEMPORARY stub until the format branch lands.
pub fn file_digest(records: &mut [(u64, u32, u32)]) -> [u8; 32] {
    let _ = records;
    unimplemented!()
}
