//! The catalog: every file and every segment of the set. Replicated on
//! every device, so any one device says what the whole set holds.
//!
//! Encoding (docs/FORMAT.md, "Catalog"): a 52-byte fixed header (magic,
//! version, chunk size, set id, creation time, the three table counts),
//! then the device, file and segment tables and the chain section (the
//! earlier sets of an incremental set, removed and renamed paths) with
//! every integer an LEB128 varint and every byte string length-prefixed,
//! then a MAC (keyed BLAKE3 of the bytes before it, zero without a key),
//! then a CRC32C of all the bytes before it. Decoding checks structure first (length, magic, CRC,
//! version, counts against the bytes present, varints, exact end), then the
//! same semantic rules `Catalog::validate` applies before an encode.

use std::collections::HashSet;

use super::{
    chunk_bytes_valid, crc32c, FormatError, MacKey, SetId, CATALOG_MAGIC, FORMAT_VERSION,
    HASH_BYTES,
};

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
            _ => None,
        }
    }

    /// Whether entries of this kind carry data (size, digest, segments,
    /// origin): regular files and block devices.
    pub const fn has_data(self) -> bool {
        matches!(self, FileKind::Regular | FileKind::BlockDevice)
    }
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
    /// st_ctime at backup time: with `dev`, `ino`, `size_bytes` and the
    /// mtime, what an incremental backup compares to find changed entries.
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    /// st_dev and st_ino at backup time.
    pub dev: u64,
    pub ino: u64,
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

/// Fewest bytes one valid table entry takes on media (every varint at
/// least one byte, every string at least its length byte, a file path at
/// least one byte more). Counts in the header are checked against these
/// before anything is allocated.
const DEVICE_ENTRY_BYTES_MIN: u64 = 4; // path length, capacity, state, data_end
                                       // path length, 1 path byte, kind, mode, uid, gid, mtime sec, nsec, ctime sec, nsec, dev, ino
const FILE_ENTRY_BYTES_MIN: u64 = 12;
const SEGMENT_ENTRY_BYTES_MIN: u64 = 6; // six varints
const CHAIN_BYTES_MIN: u64 = 3; // the three counts of the chain section
const ANCESTOR_BYTES: u64 = SetId::BYTES as u64;
// The chain tables do not count a path byte: an empty path then reaches
// `validate`, which names the entry.
const REMOVED_ENTRY_BYTES_MIN: u64 = 1; // path length
const RENAMED_ENTRY_BYTES_MIN: u64 = 2; // file id, path length

/// Nanoseconds in a second: `mtime_nsec` is below this.
const NSEC_PER_SEC: u32 = 1_000_000_000;

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
    /// Encode, with the `mac` as it is (`seal` sets it). Panics if the
    /// catalog is invalid (`validate`): a caller bug, and nothing a reader
    /// would reject is ever written.
    pub fn encode(&self) -> Vec<u8> {
        if let Err(e) = self.validate() {
            panic!("Catalog::encode of an invalid catalog (caller bug): {e}");
        }
        self.encode_unchecked()
    }

    /// The catalog's MAC with `key`: keyed BLAKE3 over its encoding up to
    /// the MAC (everything but the MAC and the CRC). Panics on an invalid
    /// catalog, as `encode` does.
    pub fn mac_for(&self, key: &MacKey) -> [u8; HASH_BYTES] {
        let encoded = self.encode();
        super::mac(
            key,
            &encoded[..encoded.len() - CATALOG_MAC_BYTES - CATALOG_CRC_BYTES],
        )
    }

    /// Set `mac` for `key`, or to zero without one.
    pub fn seal(&mut self, key: Option<&MacKey>) {
        self.mac = [0; HASH_BYTES];
        if let Some(key) = key {
            self.mac = self.mac_for(key);
        }
    }

    /// The encoding, without `validate` (tests use it to build bad input;
    /// counts beyond u32 are truncated, which `validate` rules out).
    pub(crate) fn encode_unchecked(&self) -> Vec<u8> {
        // A guess that avoids most regrowth; exactness does not matter.
        let path_bytes: usize = self.files.iter().map(|f| f.path.len()).sum();
        let estimate = CATALOG_BYTES_MIN
            + self.devices.len() * 32
            + self.files.len() * 72
            + path_bytes
            + self.segments.len() * 24
            + self.ancestors.len() * SetId::BYTES;
        let mut w = Writer(Vec::with_capacity(estimate));
        w.raw(&CATALOG_MAGIC);
        w.raw(&FORMAT_VERSION.to_le_bytes());
        w.raw(&self.chunk_bytes.to_le_bytes());
        w.raw(self.set_id.as_bytes());
        w.raw(&self.created_unix_ns.to_le_bytes());
        for count in [self.devices.len(), self.files.len(), self.segments.len()] {
            w.raw(&(count as u32).to_le_bytes());
        }
        debug_assert_eq!(w.0.len(), layout::TABLES);
        for d in &self.devices {
            w.bytes(&d.path);
            w.varint(d.capacity_bytes);
            w.0.push(d.state.code());
            w.varint(d.data_end);
        }
        for f in &self.files {
            w.bytes(&f.path);
            w.0.push(f.kind.code());
            w.varint(f.mode.into());
            w.varint(f.uid.into());
            w.varint(f.gid.into());
            w.varint(zigzag(f.mtime_sec));
            w.varint(f.mtime_nsec.into());
            w.varint(zigzag(f.ctime_sec));
            w.varint(f.ctime_nsec.into());
            w.varint(f.dev);
            w.varint(f.ino);
            // Fields that do not apply to the kind are zero (validate) and not stored.
            match f.kind {
                FileKind::Regular | FileKind::BlockDevice => {
                    w.varint(f.size_bytes);
                    w.raw(&f.digest);
                    w.varint(f.origin.into());
                    if f.origin != 0 {
                        w.varint(f.origin_file_id.into());
                    }
                }
                FileKind::Directory => {}
                FileKind::Symlink => w.bytes(&f.link_target),
                FileKind::HardLink => w.varint(f.hardlink_to.into()),
            }
        }
        for s in &self.segments {
            w.varint(s.file_id.into());
            w.varint(s.offset);
            w.varint(s.length);
            w.varint(s.device.into());
            w.varint(s.position);
            w.varint(s.records.into());
        }
        w.varint(self.ancestors.len() as u64);
        for id in &self.ancestors {
            w.raw(id.as_bytes());
        }
        w.varint(self.removed.len() as u64);
        for path in &self.removed {
            w.bytes(path);
        }
        w.varint(self.renamed.len() as u64);
        for r in &self.renamed {
            w.varint(r.file_id.into());
            w.bytes(&r.from);
        }
        w.raw(&self.mac);
        let crc = crc32c(&w.0);
        w.raw(&crc.to_le_bytes());
        w.0
    }

    /// Decode; rejects anything malformed (bad magic/version/checksum,
    /// truncation, out-of-range ids, trailing bytes) without panicking.
    pub fn decode(buf: &[u8]) -> Result<Catalog, FormatError> {
        if buf.len() < CATALOG_BYTES_MIN {
            return Err(FormatError::Short {
                have: buf.len(),
                need: CATALOG_BYTES_MIN,
            });
        }
        let (header, rest) = buf.split_at(layout::TABLES);
        let (rest, crc_bytes) = rest.split_at(rest.len() - CATALOG_CRC_BYTES);
        let (tables, mac_bytes) = rest.split_at(rest.len() - CATALOG_MAC_BYTES);
        let u32_at = |off: usize| read_u32(&header[off..off + 4]);
        if header[layout::MAGIC..layout::MAGIC + 8] != CATALOG_MAGIC {
            return Err(FormatError::BadMagic { what: "catalog" });
        }
        let stored = read_u32(crc_bytes);
        let computed = crc32c(&buf[..buf.len() - CATALOG_CRC_BYTES]);
        // Under the fuzzer (`cargo fuzz` sets cfg(fuzzing)) checksums are not
        // checked, so that mutated input reaches the field rules behind them.
        if stored != computed && !cfg!(fuzzing) {
            return Err(FormatError::Checksum {
                what: "catalog",
                stored,
                computed,
            });
        }
        let version = u32_at(layout::VERSION);
        if version != FORMAT_VERSION {
            return Err(FormatError::Version(version));
        }
        let mut set_id = SetId::default();
        set_id
            .0
            .copy_from_slice(&header[layout::SET_ID..layout::SET_ID + SetId::BYTES]);
        let mut created = [0u8; 8];
        created.copy_from_slice(&header[layout::CREATED_UNIX_NS..layout::CREATED_UNIX_NS + 8]);
        let device_count = u32_at(layout::DEVICE_COUNT);
        let file_count = u32_at(layout::FILE_COUNT);
        let segment_count = u32_at(layout::SEGMENT_COUNT);

        // No allocation larger than the bytes present could describe.
        let need = u64::from(device_count) * DEVICE_ENTRY_BYTES_MIN
            + u64::from(file_count) * FILE_ENTRY_BYTES_MIN
            + u64::from(segment_count) * SEGMENT_ENTRY_BYTES_MIN
            + CHAIN_BYTES_MIN;
        if need > tables.len() as u64 {
            return Err(FormatError::Catalog(
                "table counts exceed the catalog's length",
            ));
        }

        let mut r = Reader(tables);
        let mut devices = Vec::with_capacity(device_count as usize);
        for _ in 0..device_count {
            let path = r.bytes()?.to_vec();
            let capacity_bytes = r.varint()?;
            let code = r.byte()?;
            let state = DeviceState::from_code(code).ok_or(FormatError::Field {
                field: "catalog.device.state",
                value: code.into(),
            })?;
            devices.push(CatalogDevice {
                path,
                capacity_bytes,
                state,
                data_end: r.varint()?,
            });
        }
        let mut files = Vec::with_capacity(file_count as usize);
        for _ in 0..file_count {
            files.push(r.file()?);
        }
        let mut segments = Vec::with_capacity(segment_count as usize);
        for _ in 0..segment_count {
            segments.push(CatalogSegment {
                file_id: r.varint_u32()?,
                offset: r.varint()?,
                length: r.varint()?,
                device: r.varint_u32()?,
                position: r.varint()?,
                records: r.varint_u32()?,
            });
        }
        let ancestor_count = r.count(ANCESTOR_BYTES)?;
        let mut ancestors = Vec::with_capacity(ancestor_count);
        for _ in 0..ancestor_count {
            let mut id = SetId::default();
            id.0.copy_from_slice(r.take(ANCESTOR_BYTES)?);
            ancestors.push(id);
        }
        let removed_count = r.count(REMOVED_ENTRY_BYTES_MIN)?;
        let mut removed = Vec::with_capacity(removed_count);
        for _ in 0..removed_count {
            removed.push(r.bytes()?.to_vec());
        }
        let renamed_count = r.count(RENAMED_ENTRY_BYTES_MIN)?;
        let mut renamed = Vec::with_capacity(renamed_count);
        for _ in 0..renamed_count {
            renamed.push(Renamed {
                file_id: r.varint_u32()?,
                from: r.bytes()?.to_vec(),
            });
        }
        if !r.0.is_empty() {
            return Err(FormatError::Catalog(
                "trailing bytes after the chain section",
            ));
        }
        let mut mac = [0u8; HASH_BYTES];
        mac.copy_from_slice(mac_bytes);
        let catalog = Catalog {
            set_id,
            created_unix_ns: u64::from_le_bytes(created),
            chunk_bytes: u32_at(layout::CHUNK_BYTES),
            devices,
            files,
            segments,
            ancestors,
            removed,
            renamed,
            mac,
        };
        catalog.validate()?;
        Ok(catalog)
    }

    /// The semantic rules a decoder enforces (docs/FORMAT.md, "Catalog
    /// rules"), in that order; `encode` panics on a catalog that breaks one.
    pub fn validate(&self) -> Result<(), FormatError> {
        if !chunk_bytes_valid(self.chunk_bytes) {
            return Err(FormatError::Field {
                field: "catalog.chunk_bytes",
                value: self.chunk_bytes.into(),
            });
        }
        if self.devices.is_empty() {
            return Err(FormatError::Catalog("no devices"));
        }
        let max = u32::MAX as usize;
        if [
            self.devices.len(),
            self.files.len(),
            self.segments.len(),
            self.ancestors.len(),
            self.removed.len(),
            self.renamed.len(),
        ]
        .iter()
        .any(|&n| n > max)
        {
            return Err(FormatError::Catalog(
                "a table has more than u32::MAX entries",
            ));
        }
        self.check_chain().map_err(FormatError::Catalog)?;
        let entry = |table, index: usize, why| FormatError::CatalogEntry {
            table,
            index: index as u64,
            why,
        };
        // Each piece of earlier data is referenced once.
        let mut referenced = HashSet::new();
        for (index, file) in self.files.iter().enumerate() {
            check_file(file, &self.files, self.ancestors.len())
                .map_err(|why| entry("file", index, why))?;
            if file.origin != 0 && !referenced.insert((file.origin, file.origin_file_id)) {
                return Err(entry(
                    "file",
                    index,
                    "references the same data of an earlier set as another file",
                ));
            }
        }
        for (index, segment) in self.segments.iter().enumerate() {
            check_segment(segment, &self.files, self.devices.len())
                .map_err(|why| entry("segment", index, why))?;
        }
        for (index, path) in self.removed.iter().enumerate() {
            if path.is_empty() {
                return Err(entry("removed", index, "empty path"));
            }
        }
        let mut renamed = HashSet::new();
        for (index, r) in self.renamed.iter().enumerate() {
            let why = match self.files.get(r.file_id as usize) {
                None => Some("file_id out of range"),
                Some(f) if f.origin == 0 => {
                    Some("file_id names a file whose data is not in an earlier set")
                }
                Some(_) if r.from.is_empty() => Some("empty path"),
                Some(_) if !renamed.insert(r.file_id) => Some("file_id listed twice"),
                Some(_) => None,
            };
            if let Some(why) = why {
                return Err(entry("renamed", index, why));
            }
        }
        Ok(())
    }

    /// The chain section's own rules.
    fn check_chain(&self) -> Result<(), &'static str> {
        if self.ancestors.is_empty() && !(self.removed.is_empty() && self.renamed.is_empty()) {
            return Err("removed or renamed paths in a full set (no ancestors)");
        }
        let mut seen = HashSet::with_capacity(self.ancestors.len());
        for id in &self.ancestors {
            if *id == self.set_id {
                return Err("the set is its own ancestor");
            }
            if !seen.insert(id) {
                return Err("an ancestor is listed twice");
            }
        }
        Ok(())
    }

    /// Whether the set is incremental (has earlier sets it refers to).
    pub fn is_incremental(&self) -> bool {
        !self.ancestors.is_empty()
    }
}

fn check_file(
    f: &CatalogFile,
    files: &[CatalogFile],
    ancestors: usize,
) -> Result<(), &'static str> {
    if f.path.is_empty() {
        return Err("empty path");
    }
    if f.mtime_nsec >= NSEC_PER_SEC {
        return Err("mtime_nsec is not below 1e9");
    }
    if f.ctime_nsec >= NSEC_PER_SEC {
        return Err("ctime_nsec is not below 1e9");
    }
    let data = f.kind.has_data();
    if !data && f.size_bytes != 0 {
        return Err("size_bytes is not 0 for a kind without data");
    }
    if !data && f.digest != [0u8; 32] {
        return Err("digest is not zero for a kind without data");
    }
    if f.kind == FileKind::Symlink {
        if f.link_target.is_empty() {
            return Err("symlink with an empty target");
        }
    } else if !f.link_target.is_empty() {
        return Err("link_target is not empty for a non-symlink");
    }
    if f.kind == FileKind::HardLink {
        match files.get(f.hardlink_to as usize) {
            None => return Err("hardlink_to out of range"),
            Some(target) if target.kind != FileKind::Regular => {
                return Err("hardlink_to names a file that is not Regular");
            }
            Some(_) => {}
        }
    } else if f.hardlink_to != 0 {
        return Err("hardlink_to is not 0 for a non-hardlink");
    }
    if !data && f.origin != 0 {
        return Err("origin is not 0 for a kind without data");
    }
    if f.origin as usize > ancestors {
        return Err("origin names no ancestor");
    }
    if f.origin == 0 && f.origin_file_id != 0 {
        return Err("origin_file_id is not 0 for data in this set");
    }
    Ok(())
}

fn check_segment(
    s: &CatalogSegment,
    files: &[CatalogFile],
    device_count: usize,
) -> Result<(), &'static str> {
    let Some(file) = files.get(s.file_id as usize) else {
        return Err("file_id out of range");
    };
    if !file.kind.has_data() {
        return Err("file_id names a file without data");
    }
    if file.origin != 0 {
        return Err("file_id names a file whose data is in an earlier set");
    }
    if s.device as usize >= device_count {
        return Err("device out of range");
    }
    match s.offset.checked_add(s.length) {
        None => Err("offset + length overflows"),
        Some(end) if end > file.size_bytes => {
            Err("offset + length is beyond the file's size_bytes")
        }
        Some(_) => Ok(()),
    }
}

const fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

const fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

fn read_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_le_bytes(a)
}

/// Appends catalog encodings.
struct Writer(Vec<u8>);

impl Writer {
    fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }

    /// Unsigned LEB128, shortest form.
    fn varint(&mut self, mut v: u64) {
        let mut buf = [0u8; 10];
        let mut n = 0;
        while v >= 0x80 {
            buf[n] = v as u8 | 0x80;
            v >>= 7;
            n += 1;
        }
        buf[n] = v as u8;
        self.0.extend_from_slice(&buf[..=n]);
    }

    /// Length (varint), then the bytes.
    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.raw(b);
    }
}

/// Consumes catalog encodings from the front of the bytes not read yet.
struct Reader<'a>(&'a [u8]);

const TRUNCATED: FormatError = FormatError::Catalog("truncated");

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], FormatError> {
        if n > self.0.len() as u64 {
            return Err(TRUNCATED);
        }
        let (head, tail) = self.0.split_at(n as usize);
        self.0 = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, FormatError> {
        let (&b, tail) = self.0.split_first().ok_or(TRUNCATED)?;
        self.0 = tail;
        Ok(b)
    }

    /// Unsigned LEB128; rejects values over 64 bits and non-shortest forms,
    /// so every value has exactly one encoding.
    fn varint(&mut self) -> Result<u64, FormatError> {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return Err(FormatError::Catalog("varint exceeds 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if b == 0 && shift > 0 {
                    return Err(FormatError::Catalog("varint not in shortest form"));
                }
                return Ok(v);
            }
            shift += 7;
        }
    }

    fn varint_u32(&mut self) -> Result<u32, FormatError> {
        u32::try_from(self.varint()?).map_err(|_| FormatError::Catalog("varint exceeds 32 bits"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], FormatError> {
        let n = self.varint()?;
        self.take(n)
    }

    /// A table count (varint) whose entries, each at least
    /// `entry_bytes_min` long, fit in the bytes left: checked before
    /// anything is allocated.
    fn count(&mut self, entry_bytes_min: u64) -> Result<usize, FormatError> {
        let n = self.varint_u32()?;
        if u64::from(n) * entry_bytes_min > self.0.len() as u64 {
            return Err(FormatError::Catalog(
                "table counts exceed the catalog's length",
            ));
        }
        Ok(n as usize)
    }

    fn file(&mut self) -> Result<CatalogFile, FormatError> {
        let path = self.bytes()?.to_vec();
        let code = self.byte()?;
        let kind = FileKind::from_code(code).ok_or(FormatError::Field {
            field: "catalog.file.kind",
            value: code.into(),
        })?;
        let mut f = CatalogFile {
            path,
            kind,
            mode: self.varint_u32()?,
            uid: self.varint_u32()?,
            gid: self.varint_u32()?,
            mtime_sec: unzigzag(self.varint()?),
            mtime_nsec: self.varint_u32()?,
            ctime_sec: unzigzag(self.varint()?),
            ctime_nsec: self.varint_u32()?,
            dev: self.varint()?,
            ino: self.varint()?,
            size_bytes: 0,
            link_target: Vec::new(),
            hardlink_to: 0,
            digest: [0u8; 32],
            origin: 0,
            origin_file_id: 0,
        };
        match kind {
            FileKind::Regular | FileKind::BlockDevice => {
                f.size_bytes = self.varint()?;
                f.digest.copy_from_slice(self.take(32)?);
                f.origin = self.varint_u32()?;
                if f.origin != 0 {
                    f.origin_file_id = self.varint_u32()?;
                }
            }
            FileKind::Directory => {}
            FileKind::Symlink => f.link_target = self.bytes()?.to_vec(),
            FileKind::HardLink => f.hardlink_to = self.varint_u32()?,
        }
        Ok(f)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn file(path: &str, kind: FileKind) -> CatalogFile {
        CatalogFile {
            path: path.as_bytes().to_vec(),
            kind,
            mode: 0o100644,
            uid: 1000,
            gid: 100,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 999_999_999,
            ctime_sec: 1_700_000_001,
            ctime_nsec: 5,
            dev: 0x803,
            ino: 12,
            size_bytes: 0,
            link_target: Vec::new(),
            hardlink_to: 0,
            digest: [0; 32],
            origin: 0,
            origin_file_id: 0,
        }
    }

    /// An incremental set over `sample`'s shape: two ancestors, a block
    /// device stored here, files whose data is in the parent and in the
    /// full set, a removed path and a rename.
    pub(crate) fn incremental_sample() -> Catalog {
        let mut c = sample();
        c.ancestors = vec![SetId([0x22; 16]), SetId([0x33; 16])];
        c.files.push(CatalogFile {
            mode: 0o60660,
            size_bytes: 1 << 30,
            digest: [9; 32],
            ..file("sda1", FileKind::BlockDevice)
        });
        c.files.push(CatalogFile {
            size_bytes: 123_456,
            digest: [3; 32],
            origin: 1,
            origin_file_id: 7,
            ctime_sec: -1,
            ..file("d/renamed", FileKind::Regular)
        });
        c.files.push(CatalogFile {
            size_bytes: 5,
            digest: [4; 32],
            origin: 2,
            origin_file_id: 0,
            ..file("d/unchanged", FileKind::Regular)
        });
        c.segments.push(CatalogSegment {
            file_id: 5,
            offset: 0,
            length: 1 << 30,
            device: 0,
            position: 8192,
            records: 1024,
        });
        c.removed = vec![b"d/gone".to_vec(), b"d/old-name".to_vec()];
        c.renamed = vec![Renamed {
            file_id: 6,
            from: b"d/old-name".to_vec(),
        }];
        c
    }

    pub(crate) fn sample() -> Catalog {
        let mut files = vec![
            CatalogFile {
                mode: 0o40755,
                ..file("d", FileKind::Directory)
            },
            CatalogFile {
                size_bytes: 10 << 20,
                digest: [7; 32],
                ..file("d/big \u{e9}", FileKind::Regular)
            },
            CatalogFile {
                link_target: b"big \xe9".to_vec(),
                mtime_sec: -5,
                ..file("d/link", FileKind::Symlink)
            },
            CatalogFile {
                hardlink_to: 1,
                ..file("d/other-name", FileKind::HardLink)
            },
            CatalogFile {
                digest: file_digest(&mut []),
                ..file("d/empty", FileKind::Regular)
            },
        ];
        files[1].path.push(0xff); // paths are raw bytes
        Catalog {
            set_id: SetId([0x11; 16]),
            created_unix_ns: u64::MAX,
            chunk_bytes: 1 << 20,
            devices: vec![
                CatalogDevice {
                    path: b"dev0".to_vec(),
                    capacity_bytes: 1000,
                    state: DeviceState::Complete,
                    data_end: 4096,
                },
                CatalogDevice {
                    path: Vec::new(),
                    capacity_bytes: u64::MAX,
                    state: DeviceState::Complete,
                    data_end: 4096,
                },
            ],
            files,
            segments: vec![
                CatalogSegment {
                    file_id: 1,
                    offset: 0,
                    length: 6 << 20,
                    device: 0,
                    position: 4096,
                    records: 6,
                },
                CatalogSegment {
                    file_id: 1,
                    offset: 6 << 20,
                    length: 4 << 20,
                    device: 1,
                    position: 4096,
                    records: 4,
                },
                CatalogSegment {
                    file_id: 4,
                    offset: 0,
                    length: 0,
                    device: 1,
                    position: 0,
                    records: 0,
                },
            ],
            ancestors: Vec::new(),
            removed: Vec::new(),
            renamed: Vec::new(),
            mac: [0x5A; 32],
        }
    }

    /// Replace the trailing CRC so the bytes pass the checksum.
    pub(crate) fn reseal(buf: &mut [u8]) {
        let n = buf.len() - CATALOG_CRC_BYTES;
        let crc = crc32c(&buf[..n]);
        buf[n..].copy_from_slice(&crc.to_le_bytes());
    }

    fn entry_err(table: &'static str, index: u64, why: &'static str) -> FormatError {
        FormatError::CatalogEntry { table, index, why }
    }

    #[test]
    fn round_trips() {
        let c = sample();
        let buf = c.encode();
        assert_eq!(Catalog::decode(&buf), Ok(c.clone()));
        let empty = Catalog {
            files: vec![],
            segments: vec![],
            ..c
        };
        let buf = empty.encode();
        // Two devices of 10 and 14 bytes, three empty chain counts.
        assert_eq!(buf.len(), CATALOG_BYTES_MIN + 10 + 14 + 3);
        assert_eq!(Catalog::decode(&buf), Ok(empty));
        let c = incremental_sample();
        assert_eq!(c.validate(), Ok(()));
        assert!(c.is_incremental() && !sample().is_incremental());
        assert_eq!(Catalog::decode(&c.encode()), Ok(c));
    }

    #[test]
    fn chain_section_layout_is_pinned() {
        let c = incremental_sample();
        let buf = c.encode();
        let body = buf.len() - CATALOG_MAC_BYTES - CATALOG_CRC_BYTES;
        let mut chain = vec![2u8];
        chain.extend_from_slice(&[0x22; 16]);
        chain.extend_from_slice(&[0x33; 16]);
        chain.extend_from_slice(&[2, 6]);
        chain.extend_from_slice(b"d/gone");
        chain.extend_from_slice(&[10]);
        chain.extend_from_slice(b"d/old-name");
        chain.extend_from_slice(&[1, 6, 10]);
        chain.extend_from_slice(b"d/old-name");
        assert_eq!(buf[body - chain.len()..body], chain[..]);
        // A referenced file: size, digest, origin 1, origin_file_id 7.
        let mut tail = Writer(Vec::new());
        tail.varint(123_456);
        tail.raw(&[3; 32]);
        tail.varint(1);
        tail.varint(7);
        let at = buf
            .windows(tail.0.len())
            .position(|w| w == tail.0)
            .expect("referenced file's data fields");
        // Just before them: ctime -1 (zigzag 1), nsec 5, dev 0x803, ino 12.
        assert_eq!(buf[at - 5..at], [1, 5, 0x83, 0x10, 12]);
    }

    #[test]
    fn layout_is_pinned() {
        let buf = sample().encode();
        assert_eq!(&buf[0..8], b"PBIOCATL");
        assert_eq!(buf[8..12], 1u32.to_le_bytes());
        assert_eq!(buf[12..16], (1u32 << 20).to_le_bytes());
        assert_eq!(buf[16..32], [0x11; 16]);
        assert_eq!(buf[32..40], u64::MAX.to_le_bytes());
        assert_eq!(buf[40..44], 2u32.to_le_bytes());
        assert_eq!(buf[44..48], 5u32.to_le_bytes());
        assert_eq!(buf[48..52], 3u32.to_le_bytes());
        // Device 0: path "dev0", capacity 1000 = varint e8 07, state 1
        // (complete), data_end 4096 = varint 80 20.
        assert_eq!(
            buf[52..62],
            [4, b'd', b'e', b'v', b'0', 0xe8, 0x07, 1, 0x80, 0x20]
        );
        // File 0: path "d", kind 2, mode 0o40755 = 16877 = ed 83 01, uid 1000,
        // gid 100, mtime zigzag(1_700_000_000), nsec 999_999_999.
        let mut f0 = vec![1, b'd', 2, 0xed, 0x83, 0x01, 0xe8, 0x07, 100];
        let mut w = Writer(Vec::new());
        w.varint(3_400_000_000);
        w.varint(999_999_999);
        f0.extend_from_slice(&w.0);
        assert_eq!(buf[76..76 + f0.len()], f0[..]);
        let n = buf.len();
        assert_eq!(buf[n - 36..n - 4], [0x5A; 32]);
        assert_eq!(buf[n - 4..], crc32c(&buf[..n - 4]).to_le_bytes());
    }

    #[test]
    #[should_panic(expected = "invalid catalog")]
    fn encode_of_invalid_catalog_panics() {
        let mut c = sample();
        c.files[0].path.clear();
        c.encode();
    }

    #[test]
    fn frame_errors() {
        let good = sample().encode();
        for len in [0, 1, 8, CATALOG_BYTES_MIN - 1] {
            assert_eq!(
                Catalog::decode(&good[..len]),
                Err(FormatError::Short {
                    have: len,
                    need: CATALOG_BYTES_MIN
                })
            );
        }
        for i in 0..good.len() {
            let mut buf = good.clone();
            buf[i] ^= 0x40;
            let got = Catalog::decode(&buf);
            if i < 8 {
                assert_eq!(got, Err(FormatError::BadMagic { what: "catalog" }));
            } else {
                assert!(
                    matches!(
                        got,
                        Err(FormatError::Checksum {
                            what: "catalog",
                            ..
                        })
                    ),
                    "{i}"
                );
            }
        }
        let mut buf = good.clone();
        buf[8] = 2;
        reseal(&mut buf);
        assert_eq!(Catalog::decode(&buf), Err(FormatError::Version(2)));
    }

    #[test]
    fn truncation_and_trailing_bytes() {
        let good = sample().encode();
        let body_end = good.len() - CATALOG_CRC_BYTES;
        for len in CATALOG_BYTES_MIN..good.len() {
            // Cut, with the CRC still at the end and correct: only structure catches it.
            let mut buf = good[..len - CATALOG_CRC_BYTES].to_vec();
            buf.extend_from_slice(&[0; CATALOG_CRC_BYTES]);
            reseal(&mut buf);
            assert!(Catalog::decode(&buf).is_err(), "len {len}");
            assert!(Catalog::decode(&good[..len]).is_err(), "len {len}");
        }
        let mut buf = good[..body_end].to_vec();
        buf.extend_from_slice(&[0, 0, 0, 0, 0]);
        reseal(&mut buf);
        assert_eq!(
            Catalog::decode(&buf),
            Err(FormatError::Catalog(
                "trailing bytes after the chain section"
            ))
        );
        // One byte short of the chain section's last count.
        let mut buf = good[..body_end - 1].to_vec();
        buf.extend_from_slice(&[0; 4]);
        reseal(&mut buf);
        assert_eq!(
            Catalog::decode(&buf),
            Err(FormatError::Catalog("truncated"))
        );
    }

    #[test]
    fn counts_are_checked_before_allocating() {
        let good = sample().encode();
        for (off, count) in [
            (layout::DEVICE_COUNT, u32::MAX),
            (layout::FILE_COUNT, u32::MAX),
            (layout::SEGMENT_COUNT, u32::MAX),
            (layout::FILE_COUNT, 1 << 20),
        ] {
            let mut buf = good.clone();
            buf[off..off + 4].copy_from_slice(&count.to_le_bytes());
            reseal(&mut buf);
            assert_eq!(
                Catalog::decode(&buf),
                Err(FormatError::Catalog(
                    "table counts exceed the catalog's length"
                ))
            );
        }
    }

    #[test]
    fn chain_counts_are_checked_before_allocating() {
        let good = sample().encode();
        let body_end = good.len() - CATALOG_MAC_BYTES - CATALOG_CRC_BYTES;
        assert_eq!(good[body_end - 3..body_end], [0, 0, 0]);
        for at in 0..3 {
            let mut buf = good[..body_end - 3].to_vec();
            for k in 0..3 {
                if k == at {
                    buf.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
                } else {
                    buf.push(0);
                }
            }
            buf.extend_from_slice(&good[body_end..]);
            reseal(&mut buf);
            assert_eq!(
                Catalog::decode(&buf),
                Err(FormatError::Catalog(
                    "table counts exceed the catalog's length"
                )),
                "count {at}"
            );
        }
    }

    #[test]
    fn unknown_file_kind() {
        let good = sample().encode();
        // Tables start at 52; device 0 takes 10 bytes, device 1 takes 14;
        // file 0 is path length 1, 'd', then its kind byte.
        let kind_at = layout::TABLES + 10 + 14 + 2;
        assert_eq!(good[kind_at], FileKind::Directory.code());
        for code in [0u8, 6, 0xff] {
            let mut buf = good.clone();
            buf[kind_at] = code;
            reseal(&mut buf);
            assert_eq!(
                Catalog::decode(&buf),
                Err(FormatError::Field {
                    field: "catalog.file.kind",
                    value: code.into()
                })
            );
        }
    }

    /// Each broken rule, through `validate` and through `decode` of an
    /// encoding that skipped `validate`.
    #[test]
    fn semantic_rules() {
        type Edit = fn(&mut Catalog);
        let cases: Vec<(Edit, FormatError)> = vec![
            (
                |c| c.chunk_bytes = 1000,
                FormatError::Field {
                    field: "catalog.chunk_bytes",
                    value: 1000,
                },
            ),
            (
                |c| c.chunk_bytes = 128 << 20,
                FormatError::Field {
                    field: "catalog.chunk_bytes",
                    value: 128 << 20,
                },
            ),
            (
                |c| {
                    c.devices.clear();
                    c.segments.clear();
                },
                FormatError::Catalog("no devices"),
            ),
            (
                |c| c.files[2].path.clear(),
                entry_err("file", 2, "empty path"),
            ),
            (
                |c| c.files[0].mtime_nsec = 1_000_000_000,
                entry_err("file", 0, "mtime_nsec is not below 1e9"),
            ),
            (
                |c| c.files[2].link_target.clear(),
                entry_err("file", 2, "symlink with an empty target"),
            ),
            (
                |c| c.files[3].hardlink_to = 5,
                entry_err("file", 3, "hardlink_to out of range"),
            ),
            (
                |c| c.files[3].hardlink_to = u32::MAX,
                entry_err("file", 3, "hardlink_to out of range"),
            ),
            (
                |c| c.files[3].hardlink_to = 0,
                entry_err("file", 3, "hardlink_to names a file that is not Regular"),
            ),
            (
                |c| c.files[3].hardlink_to = 3,
                entry_err("file", 3, "hardlink_to names a file that is not Regular"),
            ),
            (
                |c| c.segments[1].file_id = 5,
                entry_err("segment", 1, "file_id out of range"),
            ),
            (
                |c| c.segments[1].file_id = 2,
                entry_err("segment", 1, "file_id names a file without data"),
            ),
            (
                |c| c.segments[2].device = 2,
                entry_err("segment", 2, "device out of range"),
            ),
            (
                |c| {
                    c.segments[0].offset = u64::MAX;
                    c.segments[0].length = 1;
                },
                entry_err("segment", 0, "offset + length overflows"),
            ),
            (
                |c| c.segments[1].length += 1,
                entry_err(
                    "segment",
                    1,
                    "offset + length is beyond the file's size_bytes",
                ),
            ),
            (
                |c| c.segments[2].length = 1,
                entry_err(
                    "segment",
                    2,
                    "offset + length is beyond the file's size_bytes",
                ),
            ),
        ];
        for (i, (edit, want)) in cases.into_iter().enumerate() {
            let mut c = sample();
            edit(&mut c);
            assert_eq!(c.validate(), Err(want.clone()), "case {i}");
            assert_eq!(
                Catalog::decode(&c.encode_unchecked()),
                Err(want),
                "case {i}"
            );
        }
    }

    /// The rules of incremental sets (chain, origins, removed, renamed),
    /// through `validate` and through `decode`.
    #[test]
    fn chain_rules() {
        type Edit = fn(&mut Catalog);
        let cases: Vec<(Edit, FormatError)> = vec![
            (
                |c| c.ancestors[1] = c.set_id,
                FormatError::Catalog("the set is its own ancestor"),
            ),
            (
                |c| c.ancestors[1] = c.ancestors[0],
                FormatError::Catalog("an ancestor is listed twice"),
            ),
            (
                |c| {
                    c.ancestors.clear();
                    c.renamed.clear();
                },
                FormatError::Catalog("removed or renamed paths in a full set (no ancestors)"),
            ),
            (
                |c| c.files[7].ctime_nsec = 1_000_000_000,
                entry_err("file", 7, "ctime_nsec is not below 1e9"),
            ),
            (
                |c| c.files[7].origin = 3,
                entry_err("file", 7, "origin names no ancestor"),
            ),
            (
                |c| {
                    c.files[7].origin = 1;
                    c.files[7].origin_file_id = 7;
                },
                entry_err(
                    "file",
                    7,
                    "references the same data of an earlier set as another file",
                ),
            ),
            (
                |c| c.files[3].hardlink_to = 5,
                entry_err("file", 3, "hardlink_to names a file that is not Regular"),
            ),
            (
                |c| c.segments[3].file_id = 6,
                entry_err(
                    "segment",
                    3,
                    "file_id names a file whose data is in an earlier set",
                ),
            ),
            (
                |c| c.removed[1].clear(),
                entry_err("removed", 1, "empty path"),
            ),
            (
                |c| c.renamed[0].file_id = 8,
                entry_err("renamed", 0, "file_id out of range"),
            ),
            (
                |c| c.renamed[0].file_id = 5,
                entry_err(
                    "renamed",
                    0,
                    "file_id names a file whose data is not in an earlier set",
                ),
            ),
            (
                |c| c.renamed[0].from.clear(),
                entry_err("renamed", 0, "empty path"),
            ),
            (
                |c| c.renamed.push(c.renamed[0].clone()),
                entry_err("renamed", 1, "file_id listed twice"),
            ),
        ];
        for (i, (edit, want)) in cases.into_iter().enumerate() {
            let mut c = incremental_sample();
            edit(&mut c);
            assert_eq!(c.validate(), Err(want.clone()), "case {i}");
            assert_eq!(
                Catalog::decode(&c.encode_unchecked()),
                Err(want),
                "case {i}"
            );
        }
        // Fields not stored for the kind: only `validate` sees them.
        let mut c = incremental_sample();
        c.files[0].origin = 1;
        assert_eq!(
            c.validate(),
            Err(entry_err(
                "file",
                0,
                "origin is not 0 for a kind without data"
            ))
        );
        let mut c = incremental_sample();
        c.files[5].origin_file_id = 1;
        assert_eq!(
            c.validate(),
            Err(entry_err(
                "file",
                5,
                "origin_file_id is not 0 for data in this set"
            ))
        );
    }

    /// Fields that do not apply to a kind are not stored, so only `validate` sees them.
    #[test]
    fn fields_that_do_not_apply_are_zero() {
        type Edit = fn(&mut Catalog);
        let cases: Vec<(Edit, FormatError)> = vec![
            (
                |c| c.files[0].size_bytes = 4096,
                entry_err("file", 0, "size_bytes is not 0 for a kind without data"),
            ),
            (
                |c| c.files[3].digest[31] = 1,
                entry_err("file", 3, "digest is not zero for a kind without data"),
            ),
            (
                |c| c.files[1].link_target = b"x".to_vec(),
                entry_err("file", 1, "link_target is not empty for a non-symlink"),
            ),
            (
                |c| c.files[4].hardlink_to = 1,
                entry_err("file", 4, "hardlink_to is not 0 for a non-hardlink"),
            ),
        ];
        for (i, (edit, want)) in cases.into_iter().enumerate() {
            let mut c = sample();
            edit(&mut c);
            assert_eq!(c.validate(), Err(want), "case {i}");
        }
    }

    #[test]
    fn varints() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut w = Writer(Vec::new());
            w.varint(v);
            let mut r = Reader(&w.0);
            assert_eq!(r.varint(), Ok(v));
            assert!(r.0.is_empty());
        }
        let bad: [(&[u8], FormatError); 6] = [
            (&[], TRUNCATED),
            (&[0x80], TRUNCATED),
            (
                &[0x80, 0x00],
                FormatError::Catalog("varint not in shortest form"),
            ),
            (
                &[0xff, 0x80, 0x00],
                FormatError::Catalog("varint not in shortest form"),
            ),
            (&[0xff; 10], FormatError::Catalog("varint exceeds 64 bits")),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                FormatError::Catalog("varint exceeds 64 bits"),
            ),
        ];
        for (bytes, want) in bad {
            assert_eq!(Reader(bytes).varint(), Err(want), "{bytes:x?}");
        }
        assert_eq!(
            Reader(&[0x80, 0x80, 0x80, 0x80, 0x10]).varint_u32(),
            Err(FormatError::Catalog("varint exceeds 32 bits"))
        );
        assert_eq!(
            Reader(&[0xff, 0xff, 0xff, 0xff, 0x0f]).varint_u32(),
            Ok(u32::MAX)
        );
        for v in [0, 1, -1, i64::MIN, i64::MAX, -1_700_000_000] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!([zigzag(0), zigzag(-1), zigzag(1), zigzag(-2)], [0, 1, 2, 3]);
    }

    #[test]
    fn digest_is_order_independent_and_pinned() {
        assert_eq!(file_digest(&mut []), *blake3::hash(b"").as_bytes());
        let mut records: Vec<DigestRecord> = (0..1000u64)
            .map(|i| (i << 20, 1 << 20, payload_hash(&i.to_le_bytes())))
            .collect();
        let mut manual = blake3::Hasher::new();
        for (o, l, h) in &records {
            manual.update(&o.to_le_bytes());
            manual.update(&l.to_le_bytes());
            manual.update(h);
        }
        let want = *manual.finalize().as_bytes();
        assert_eq!(file_digest(&mut records.clone()), want);
        records.reverse();
        records.swap(3, 500);
        assert_eq!(file_digest(&mut records), want);
        // A different payload hash changes it, whatever bit.
        for bit in 0..256 {
            let mut changed = records.clone();
            changed[7].2[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(file_digest(&mut changed), want, "bit {bit}");
        }
        // One record, pinned: 44 bytes of offset, length, payload hash.
        let mut entry = Vec::new();
        entry.extend_from_slice(&4096u64.to_le_bytes());
        entry.extend_from_slice(&3u32.to_le_bytes());
        entry.extend_from_slice(blake3::hash(b"abc").as_bytes());
        assert_eq!(entry.len(), FILE_DIGEST_ENTRY_BYTES);
        assert_eq!(
            file_digest(&mut [(4096, 3, payload_hash(b"abc"))]),
            *blake3::hash(&entry).as_bytes()
        );
    }

    #[test]
    fn mac_covers_the_encoding() {
        let key = crate::format::mac_key(b"0123456789abcdef0123456789abcdef");
        let mut c = incremental_sample();
        c.seal(Some(&key));
        let buf = c.encode();
        let n = buf.len();
        assert_eq!(buf[n - 36..n - 4], c.mac);
        assert_eq!(c.mac, *blake3::keyed_hash(&key, &buf[..n - 36]).as_bytes());
        assert_eq!(Catalog::decode(&buf), Ok(c.clone()));
        assert_eq!(c.mac_for(&key), c.mac);
        // The decoder does not judge the MAC: a wrong one still decodes,
        // and its holder sees it does not match.
        let mut forged = c.clone();
        forged.files[1].mode ^= 1;
        let forged_bytes = forged.encode();
        let decoded = Catalog::decode(&forged_bytes).expect("decodes");
        assert_ne!(decoded.mac_for(&key), decoded.mac);
        // Without a key: zero.
        c.seal(None);
        assert_eq!(c.mac, [0; 32]);
        assert_eq!(c.encode()[n - 36..n - 4], [0; 32]);
        // Every byte before the MAC is covered.
        c.seal(Some(&key));
        let buf = c.encode();
        for i in 0..n - 36 {
            let mut damaged = buf.clone();
            damaged[i] ^= 0x01;
            reseal(&mut damaged);
            if let Ok(d) = Catalog::decode(&damaged) {
                assert_ne!(d.mac_for(&key), d.mac, "byte {i}");
            }
        }
    }
}
