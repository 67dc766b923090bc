//! Encoding a catalog: the bytes `Catalog::decode` reads back, its MAC
//! and its seal.

use super::{layout, Catalog, FileKind, CATALOG_BYTES_MIN, CATALOG_CRC_BYTES, CATALOG_MAC_BYTES};
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
            w.varint(f.flags.into());
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
                FileKind::CharDevice | FileKind::BlockNode => w.varint(f.rdev),
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
        if let Some(parity) = &self.parity {
            super::parity::encode(&mut w, parity);
        }
        w.raw(&self.mac);
        let crc = crc32c(&w.0);
        w.raw(&crc.to_le_bytes());
        w.0
    }
}

pub(super) const fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Appends catalog encodings.
pub(super) struct Writer(pub(super) Vec<u8>);

impl Writer {
    pub(super) fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }

    /// Unsigned LEB128, shortest form.
    pub(super) fn varint(&mut self, mut v: u64) {
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
    pub(super) fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.raw(b);
    }
}
