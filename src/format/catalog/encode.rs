//! Encoding a catalog: the bytes `Catalog::decode` reads back, its MAC
//! and its seal.

use std::collections::HashSet;

use super::validate::Summary;
use super::{
    layout, Catalog, CatalogFile, FileKind, CATALOG_BYTES_MIN, CATALOG_CRC_BYTES, CATALOG_MAC_BYTES,
};
use crate::format::{crc32c, MacKey, SetId, CATALOG_MAGIC, FORMAT_VERSION, HASH_BYTES};

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
        crate::format::mac(
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
        self.encode_head(&mut w, self.files.len());
        for f in &self.files {
            encode_file(&mut w, f);
        }
        self.encode_tail(&mut w);
        w.raw(&self.mac);
        let crc = crc32c(&w.0);
        w.raw(&crc.to_le_bytes());
        w.0
    }

    /// Encode a catalog whose files are given one at a time, so that they
    /// are never all held decoded (issue 23: a backup of millions of files
    /// holds the encoding, not a `CatalogFile` per file). `self` is the
    /// rest of the catalog: its own `files` must be empty and its `mac` is
    /// ignored. `file(i)` is file `i` of `file_count`; it is asked for
    /// each file twice (a first pass learns what the rules need of every
    /// file: 16 bytes a file). Sealed with `key` (a zero MAC without one).
    /// The same bytes as `encode` of the catalog with those files, sealed:
    /// panics as `encode` does if the catalog is invalid.
    pub fn encode_streamed(
        &self,
        file_count: usize,
        file: &dyn Fn(usize) -> CatalogFile,
        key: Option<&MacKey>,
    ) -> Vec<u8> {
        assert!(self.files.is_empty(), "encode_streamed: files given twice");
        let invalid =
            |e| panic!("Catalog::encode_streamed of an invalid catalog (caller bug): {e}");
        if let Err(e) = self.check_head(file_count) {
            invalid(e);
        }
        // First pass: what the rules need of every file, and the exact
        // length, so that the encoding is allocated once.
        let mut length = Counter(0);
        self.encode_head(&mut length, file_count);
        let summaries: Vec<Summary> = (0..file_count)
            .map(|i| {
                let f = file(i);
                encode_file(&mut length, &f);
                Summary::of(&f)
            })
            .collect();
        self.encode_tail(&mut length);
        let lookup = |i: usize| summaries.get(i).copied();
        let mut w = Writer(Vec::with_capacity(
            length.len() + CATALOG_MAC_BYTES + CATALOG_CRC_BYTES,
        ));
        self.encode_head(&mut w, file_count);
        let mut referenced = HashSet::new();
        for i in 0..file_count {
            let f = file(i);
            if let Err(e) = self.check_file(i, &f, &lookup, &mut referenced) {
                invalid(e);
            }
            encode_file(&mut w, &f);
        }
        if let Err(e) = self.check_rest(&lookup) {
            invalid(e);
        }
        drop(summaries);
        self.encode_tail(&mut w);
        let mac = key.map_or([0; HASH_BYTES], |key| crate::format::mac(key, &w.0));
        w.raw(&mac);
        let crc = crc32c(&w.0);
        w.raw(&crc.to_le_bytes());
        w.0
    }

    /// The length of `encode_streamed`'s bytes for the same files,
    /// counted without keeping them (the rules are not checked).
    pub fn encoded_len_streamed(
        &self,
        file_count: usize,
        file: &dyn Fn(usize) -> CatalogFile,
    ) -> usize {
        assert!(
            self.files.is_empty(),
            "encoded_len_streamed: files given twice"
        );
        let mut w = Counter(0);
        self.encode_head(&mut w, file_count);
        for i in 0..file_count {
            encode_file(&mut w, &file(i));
        }
        self.encode_tail(&mut w);
        w.len() + CATALOG_MAC_BYTES + CATALOG_CRC_BYTES
    }

    /// The fixed header and the devices (`file_count` files follow).
    fn encode_head(&self, w: &mut impl Sink, file_count: usize) {
        w.raw(&CATALOG_MAGIC);
        w.raw(&FORMAT_VERSION.to_le_bytes());
        w.raw(&self.chunk_bytes.to_le_bytes());
        w.raw(self.set_id.as_bytes());
        w.raw(&self.created_unix_ns.to_le_bytes());
        for count in [self.devices.len(), file_count, self.segments.len()] {
            w.raw(&(count as u32).to_le_bytes());
        }
        debug_assert_eq!(w.len(), layout::TABLES);
        for d in &self.devices {
            w.bytes(&d.path);
            w.varint(d.capacity_bytes);
            w.raw(&[d.state.code()]);
            w.varint(d.data_end);
        }
    }

    /// What follows the files: the segments and the chain (not the MAC).
    fn encode_tail(&self, w: &mut impl Sink) {
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
        if let Some(parity) = &self.parity {
            super::parity::encode(w, parity);
        }
        if !self.stored_bytes.is_empty() {
            w.raw(&[super::decode::STORED_SECTION_TAG]);
            for &bytes in &self.stored_bytes {
                w.varint(bytes);
            }
        }
    }
}

/// One entry of the files table.
fn encode_file(w: &mut impl Sink, f: &CatalogFile) {
    w.bytes(&f.path);
    w.raw(&[f.kind.code()]);
    w.varint(f.stat.mode.into());
    w.varint(f.stat.uid.into());
    w.varint(f.stat.gid.into());
    w.varint(zigzag(f.stat.mtime_sec));
    w.varint(f.stat.mtime_nsec.into());
    w.varint(zigzag(f.stat.ctime_sec));
    w.varint(f.stat.ctime_nsec.into());
    w.varint(f.stat.dev);
    w.varint(f.stat.ino);
    w.varint(f.stat.flags.into());
    w.varint(f.xattrs.len() as u64);
    for x in &f.xattrs {
        w.bytes(&x.name);
        w.bytes(&x.value);
    }
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
        FileKind::Directory | FileKind::Fifo => {}
        FileKind::CharDevice | FileKind::BlockNode => w.varint(f.stat.rdev),
        FileKind::Symlink => w.bytes(&f.link_target),
        FileKind::HardLink => w.varint(f.hardlink_to.into()),
    }
}

pub(super) const fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Where catalog encodings go: bytes appended (`Writer`) or only counted
/// (`Counter`, for the size of a catalog that is not kept).
pub(super) trait Sink {
    fn raw(&mut self, b: &[u8]);

    /// Bytes taken so far.
    fn len(&self) -> usize;

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
        self.raw(&buf[..=n]);
    }

    /// Length (varint), then the bytes.
    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.raw(b);
    }
}

/// Appends catalog encodings.
pub(super) struct Writer(pub(super) Vec<u8>);

impl Sink for Writer {
    fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Counts the bytes of catalog encodings.
struct Counter(usize);

impl Sink for Counter {
    fn raw(&mut self, b: &[u8]) {
        self.0 += b.len();
    }

    fn len(&self) -> usize {
        self.0
    }
}
