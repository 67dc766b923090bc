#![allow(dead_code)]
//! Hostile media, written through pbio's own format module: labels, data
//! records (with file info), catalog records and End records, with any
//! field chosen. Include with `#[path = "common/craft.rs"] mod craft;`
//! (unlike `common/mod.rs`, this file uses the `pbio` library: it writes
//! the real format, so that a test can change exactly one thing).
//!
//! The usual shape of a test: back up a small tree with the real `pbio`,
//! read one device into a [`Medium`] (its label, every data record with
//! its payload, its catalog), change what the attack changes (a field of
//! the label, a record's header, its payload, the catalog), and write it
//! back, onto the same device or another one (a loop device or a plain
//! file: anything `std::fs::File` opens read-write).
//!
//! - [`Medium::write`] lays the device out as a writer would: records one
//!   after another from offset 4096 (positions and sequence numbers
//!   renumbered), the catalog after them, an End record, and a Complete
//!   label whose `catalog_offset`, `catalog_bytes`, `data_end` and
//!   `catalog_digest` describe what was written; with [`Medium::key`] the
//!   label and catalog MACs are sealed with it (a forger *with* the key).
//! - [`Medium::write_as_is`] writes every structure exactly as it stands
//!   (positions, sequences, label fields, CRCs as the header says): for a
//!   forger who keeps what he cannot recompute (a MAC without the key).
//! - The free functions write one structure anywhere: [`write_label`],
//!   [`write_record`], [`write_catalog`], [`write_end`], [`write_bytes`].
//! - [`forge_crc32c`] changes bytes of a payload and patches 4 others so
//!   that its CRC32C stays the same (CRC32C is linear): a substituted
//!   record whose header still checks.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use pbio::format::{
    crc32c, round_up_block, Catalog, FileInfo, Label, LabelState, MacKey, RecordHeader, RecordKind,
    BLOCK_BYTES, HEADER_BYTES,
};

/// A data record as it is (or will be) on a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Media offset of its header (`Medium::write` renumbers it).
    pub position: u64,
    pub header: RecordHeader,
    /// The file info its header carries (pbio writes one on every data record).
    pub info: Option<FileInfo>,
    pub payload: Vec<u8>,
}

impl Record {
    /// A data record of `payload` for file `file_id` at `file_offset`,
    /// with the CRC of the payload; the other header fields from `like`.
    pub fn data_like(like: &Record, file_id: u32, file_offset: u64, payload: Vec<u8>) -> Record {
        let mut r = Record {
            position: like.position,
            header: RecordHeader {
                file_id,
                file_offset,
                payload_bytes: payload.len() as u32,
                ..like.header
            },
            info: like.info.clone(),
            payload,
        };
        r.reseal();
        r
    }

    /// Set `payload_bytes` and `payload_crc` from the payload.
    pub fn reseal(&mut self) {
        self.header.payload_bytes = self.payload.len() as u32;
        self.header.payload_crc = crc32c(&self.payload);
    }

    /// The record's media image: header block (with file info), payload,
    /// zero padding to a block. The header is encoded through the format
    /// module, so it must satisfy `RecordHeader::validate` (a hostile
    /// header that a reader rejects at once is [`write_bytes`]' job).
    pub fn image(&self) -> Vec<u8> {
        let padded = round_up_block(self.payload.len() as u64) as usize;
        let mut buf = vec![0u8; HEADER_BYTES + padded];
        self.header
            .encode_with_info(self.info.as_ref(), &mut buf[..HEADER_BYTES]);
        buf[HEADER_BYTES..HEADER_BYTES + self.payload.len()].copy_from_slice(&self.payload);
        buf
    }

    /// Media bytes the record takes.
    pub fn media_bytes(&self) -> u64 {
        HEADER_BYTES as u64 + round_up_block(self.payload.len() as u64)
    }
}

/// One device of a set, read into memory to be changed and written back.
#[derive(Clone, Debug)]
pub struct Medium {
    pub label: Label,
    pub records: Vec<Record>,
    pub catalog: Catalog,
    /// Written instead of `catalog.encode()` when set: a catalog that does
    /// not decode, or whose MAC or CRC was left as a forger left it.
    pub catalog_bytes: Option<Vec<u8>>,
    /// `write` seals the label's and the catalog's MAC with this key.
    pub key: Option<MacKey>,
    /// Payload bytes of one catalog record (`write` slices the catalog).
    pub catalog_slice_bytes: usize,
}

impl Medium {
    /// Read a device holding a Complete label of a real set (disk layout):
    /// its label, every data record up to `data_end`, and its catalog.
    pub fn read(path: &Path) -> Medium {
        let file = open(path);
        let label = read_label_from(&file, path);
        assert_eq!(
            label.state,
            LabelState::Complete,
            "{}: craft reads complete devices",
            path.display()
        );
        let mut records = Vec::new();
        let mut at = BLOCK_BYTES as u64;
        while at < label.data_end {
            let record = read_record_from(&file, at)
                .unwrap_or_else(|e| panic!("{}: record at {at}: {e}", path.display()));
            at += record.media_bytes();
            records.push(record);
        }
        let bytes = read_catalog_bytes(&file, &label);
        let catalog =
            Catalog::decode(&bytes).unwrap_or_else(|e| panic!("{}: catalog: {e}", path.display()));
        Medium {
            label,
            records,
            catalog,
            catalog_bytes: None,
            key: None,
            catalog_slice_bytes: label.chunk_bytes as usize,
        }
    }

    /// The encoded catalog `write` puts on the device (sealed with `key`
    /// first, unless `catalog_bytes` is given).
    pub fn encoded_catalog(&mut self) -> Vec<u8> {
        if let Some(bytes) = &self.catalog_bytes {
            return bytes.clone();
        }
        if self.key.is_some() {
            self.catalog.seal(self.key.as_ref());
        }
        self.catalog.encode()
    }

    /// Lay the device out as pbio's writer does and write it: records from
    /// offset 4096 (positions and sequence numbers renumbered; headers
    /// otherwise as they are), catalog records of `catalog_slice_bytes`,
    /// an End record, and the label, Complete, with `catalog_offset`,
    /// `catalog_bytes`, `data_end` and `catalog_digest` of what was
    /// written (and its MAC sealed with `key`, when set). Returns the
    /// media offset past the End record.
    pub fn write(&mut self, path: &Path) -> u64 {
        let file = open(path);
        let mut at = BLOCK_BYTES as u64;
        for (sequence, r) in self.records.iter_mut().enumerate() {
            r.position = at;
            r.header.sequence = sequence as u64;
            write_record_to(&file, r);
            at += r.media_bytes();
        }
        let data_end = at;
        let bytes = self.encoded_catalog();
        let end = write_catalog_to(
            &file,
            &self.label,
            self.records.len() as u64,
            data_end,
            &bytes,
            self.catalog_slice_bytes,
        );
        self.label = Label {
            state: LabelState::Complete,
            data_end,
            catalog_offset: data_end,
            catalog_bytes: bytes.len() as u64,
            catalog_digest: *blake3::hash(&bytes).as_bytes(),
            ..self.label
        };
        if let Some(key) = &self.key {
            self.label = self.label.sealed(Some(key));
        }
        write_label_to(&file, &self.label);
        file.sync_all().expect("sync crafted device");
        end
    }

    /// Write every structure exactly as it stands: each record at its
    /// `position`, the catalog at `label.catalog_offset` (then an End
    /// record), the label as it is (its MAC and digest included).
    pub fn write_as_is(&mut self, path: &Path) {
        let file = open(path);
        for r in &self.records {
            write_record_to(&file, r);
        }
        let bytes = self.encoded_catalog();
        write_catalog_to(
            &file,
            &self.label,
            self.records.len() as u64,
            self.label.catalog_offset,
            &bytes,
            self.catalog_slice_bytes,
        );
        write_label_to(&file, &self.label);
        file.sync_all().expect("sync crafted device");
    }

    /// The records of file `file_id`, in media order.
    pub fn records_of(&self, file_id: u32) -> Vec<usize> {
        (0..self.records.len())
            .filter(|&i| self.records[i].header.file_id == file_id)
            .collect()
    }

    /// The catalog file id of `path` (panics if absent).
    pub fn file_id(&self, path: &[u8]) -> u32 {
        self.catalog
            .files
            .iter()
            .position(|f| f.path == path)
            .unwrap_or_else(|| panic!("no file {:?} in the catalog", String::from_utf8_lossy(path)))
            as u32
    }
}

/// Open a device (or file) read-write, caches of earlier reads dropped.
pub fn open(path: &Path) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: a plain advisory call on an open fd.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    file
}

fn read_exact_at(file: &File, len: usize, offset: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .unwrap_or_else(|e| panic!("read {len} bytes at {offset}: {e}"));
    buf
}

fn read_label_from(file: &File, path: &Path) -> Label {
    Label::decode(&read_exact_at(file, BLOCK_BYTES, 0))
        .unwrap_or_else(|e| panic!("{}: label: {e}", path.display()))
}

/// The label of a device.
pub fn read_label(path: &Path) -> Label {
    read_label_from(&open(path), path)
}

fn read_record_from(file: &File, at: u64) -> Result<Record, String> {
    let block = read_exact_at(file, HEADER_BYTES, at);
    let header = RecordHeader::decode(&block).map_err(|e| e.to_string())?;
    let info = RecordHeader::decode_info(&block);
    let payload = read_exact_at(
        file,
        header.payload_bytes as usize,
        at + HEADER_BYTES as u64,
    );
    Ok(Record {
        position: at,
        header,
        info,
        payload,
    })
}

/// The record whose header is at `at`.
pub fn read_record(path: &Path, at: u64) -> Record {
    read_record_from(&open(path), at).unwrap_or_else(|e| panic!("record at {at}: {e}"))
}

fn read_catalog_bytes(file: &File, label: &Label) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut at = label.catalog_offset;
    while (bytes.len() as u64) < label.catalog_bytes {
        let r = read_record_from(file, at).unwrap_or_else(|e| panic!("catalog record: {e}"));
        assert_eq!(r.header.kind, RecordKind::Catalog, "catalog record at {at}");
        bytes.extend_from_slice(&r.payload);
        at += r.media_bytes();
    }
    bytes
}

fn write_label_to(file: &File, label: &Label) {
    let mut block = vec![0u8; BLOCK_BYTES];
    label.encode_into(&mut block);
    file.write_all_at(&block, 0).expect("write label");
}

/// Write `label` at offset 0 (it must be valid: `Label::encode_into`).
pub fn write_label(path: &Path, label: &Label) {
    let file = open(path);
    write_label_to(&file, label);
    file.sync_all().expect("sync");
}

fn write_record_to(file: &File, r: &Record) {
    file.write_all_at(&r.image(), r.position)
        .unwrap_or_else(|e| panic!("write record at {}: {e}", r.position));
}

/// Write one record at its `position`.
pub fn write_record(path: &Path, r: &Record) {
    let file = open(path);
    write_record_to(&file, r);
    file.sync_all().expect("sync");
}

/// Write `bytes` at `offset` as they are (a block no decoder accepts, a
/// torn record, random bytes).
pub fn write_bytes(path: &Path, offset: u64, bytes: &[u8]) {
    let file = open(path);
    file.write_all_at(bytes, offset).expect("write bytes");
    file.sync_all().expect("sync");
}

/// The header of a catalog record (a slice at `file_offset` of an encoded
/// catalog of `catalog_bytes`) or, with `RecordKind::End`, an End record.
pub fn catalog_header(
    label: &Label,
    kind: RecordKind,
    sequence: u64,
    file_offset: u64,
    payload: &[u8],
    catalog_bytes: u64,
) -> RecordHeader {
    RecordHeader {
        kind,
        set_id: label.set_id,
        device_index: label.device_index,
        sequence,
        file_id: 0,
        segment_id: 0,
        file_offset,
        payload_bytes: payload.len() as u32,
        file_size: if kind == RecordKind::End {
            0
        } else {
            catalog_bytes
        },
        payload_crc: crc32c(payload),
        transform: pbio::format::Transform::RAW,
    }
}

fn write_catalog_to(
    file: &File,
    label: &Label,
    mut sequence: u64,
    at: u64,
    bytes: &[u8],
    slice_bytes: usize,
) -> u64 {
    let mut at = at;
    for (i, slice) in bytes.chunks(slice_bytes.max(1)).enumerate() {
        let r = Record {
            position: at,
            header: catalog_header(
                label,
                RecordKind::Catalog,
                sequence,
                (i * slice_bytes) as u64,
                slice,
                bytes.len() as u64,
            ),
            info: None,
            payload: slice.to_vec(),
        };
        write_record_to(file, &r);
        at += r.media_bytes();
        sequence += 1;
    }
    let end = Record {
        position: at,
        header: catalog_header(label, RecordKind::End, sequence, 0, &[], 0),
        info: None,
        payload: Vec::new(),
    };
    write_record_to(file, &end);
    at + end.media_bytes()
}

/// Write an encoded catalog as catalog records from `at` (numbered from
/// `sequence`, slices of `slice_bytes`), then an End record. Returns the
/// offset past the End record. The label is not touched.
pub fn write_catalog(
    path: &Path,
    label: &Label,
    sequence: u64,
    at: u64,
    bytes: &[u8],
    slice_bytes: usize,
) -> u64 {
    let file = open(path);
    let end = write_catalog_to(&file, label, sequence, at, bytes, slice_bytes);
    file.sync_all().expect("sync");
    end
}

/// Write one End record at `at`.
pub fn write_end(path: &Path, label: &Label, sequence: u64, at: u64) {
    write_record(
        path,
        &Record {
            position: at,
            header: catalog_header(label, RecordKind::End, sequence, 0, &[], 0),
            info: None,
            payload: Vec::new(),
        },
    );
}

/// Copy the first `bytes` of one device onto another (a clone to craft on).
pub fn copy_device(from: &Path, to: &Path, bytes: u64) {
    let (src, dst) = (open(from), open(to));
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < bytes {
        let n = (bytes - at).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], at).expect("read");
        dst.write_all_at(&buf[..n], at).expect("write");
        at += n as u64;
    }
    dst.sync_all().expect("sync");
}

// ---------------------------------------------------------------- CRC32C forgery

const CRC32C_POLY: u32 = 0x82F6_3B78;

fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    for (i, e) in t.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ CRC32C_POLY
            } else {
                c >> 1
            };
        }
        *e = c;
    }
    t
}

/// The CRC32C register after `bytes`, from the initial 0xFFFFFFFF (no
/// final xor).
fn crc_state(table: &[u32; 256], bytes: &[u8]) -> u32 {
    bytes.iter().fold(0xFFFF_FFFF, |s, &b| {
        (s >> 8) ^ table[((s ^ u32::from(b)) & 0xff) as usize]
    })
}

/// The 4 bytes that take the CRC32C register from `from` to `to`: after 4
/// steps nothing of `from` is left but the table indexes, and the top
/// byte of each table entry is unique, so `to` determines the indexes
/// (walked back from the last) and `from` the bytes that select them.
fn crc_patch(table: &[u32; 256], from: u32, to: u32) -> [u8; 4] {
    let mut indexes = [0u8; 4];
    let mut s = to;
    for k in (0..4).rev() {
        let i = (0..256)
            .find(|&i| table[i] >> 24 == s >> 24)
            .expect("CRC32C table top bytes are unique");
        indexes[k] = i as u8;
        s = (s ^ table[i]) << 8;
    }
    let mut patch = [0u8; 4];
    let mut state = from;
    for k in 0..4 {
        patch[k] = ((state ^ u32::from(indexes[k])) & 0xff) as u8;
        state = (state >> 8) ^ table[indexes[k] as usize];
    }
    assert_eq!(state, to, "CRC32C patch");
    patch
}

/// `payload` with `evil` written at `at` and 4 bytes right after it
/// patched so that the CRC32C is unchanged. Panics if the result does
/// not have the same CRC (checked with pbio's own CRC32C).
pub fn forge_crc32c(payload: &[u8], at: usize, evil: &[u8]) -> Vec<u8> {
    let patch_at = at + evil.len();
    assert!(
        patch_at + 4 <= payload.len(),
        "no room for the 4-byte patch"
    );
    let table = crc_table();
    let mut forged = payload.to_vec();
    forged[at..patch_at].copy_from_slice(evil);
    let from = crc_state(&table, &forged[..patch_at]);
    let to = crc_state(&table, &payload[..patch_at + 4]);
    forged[patch_at..patch_at + 4].copy_from_slice(&crc_patch(&table, from, to));
    assert_eq!(crc32c(&forged), crc32c(payload), "forged CRC32C");
    assert_ne!(forged, payload);
    forged
}
