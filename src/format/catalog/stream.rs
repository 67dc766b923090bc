//! A catalog read entry by entry (issue 23): the same checks as
//! `Catalog::decode` (structure, then the rules of `validate`), but the
//! file and segment tables are never held decoded. `CatalogStream::open`
//! walks the encoding once for its structure (keeping 9 bytes a file of
//! what the rules need of other files: kind, whether its data is in an
//! earlier set, size), then applies the rules file by file and segment by
//! segment; afterwards `files()` and `segments()` decode one entry at a
//! time from the bytes, which the caller keeps (about 50-90 bytes a file
//! instead of `CatalogFile`'s 192 plus its path).

use std::collections::HashSet;

use super::decode::{parse_head, Reader, Walked};
use super::validate::{check_segment, Summary};
use super::{Catalog, CatalogFile, CatalogSegment, FileKind, CATALOG_CRC_BYTES, CATALOG_MAC_BYTES};
use crate::format::{FormatError, MacKey, HASH_BYTES};

/// A decoded and validated catalog whose files and segments stay encoded.
#[derive(Debug)]
pub struct CatalogStream<'a> {
    /// Every field but `files` and `segments` (left empty).
    head: Catalog,
    file_count: u32,
    segment_count: u32,
    /// The file table's bytes.
    files: &'a [u8],
    /// The segment table's bytes.
    segments: &'a [u8],
    /// The encoding before the MAC (what `mac_for` covers).
    macced: &'a [u8],
}

impl<'a> CatalogStream<'a> {
    /// Check `buf` as `Catalog::decode` does (the same catalogs are
    /// accepted, the same refused) without holding its files or segments
    /// decoded.
    pub fn open(buf: &'a [u8]) -> Result<CatalogStream<'a>, FormatError> {
        let parsed = parse_head(buf)?;
        // Pass 1: the structure, and what the rules need of each file.
        let mut sizes = Vec::with_capacity(parsed.file_count as usize);
        let mut kinds = Vec::with_capacity(parsed.file_count as usize);
        let Walked {
            head,
            file_count,
            segment_count,
            files,
            segments,
        } = parsed.walk(
            |f| {
                sizes.push(f.size_bytes);
                kinds.push(f.kind.code() | if f.origin != 0 { ORIGIN_BIT } else { 0 });
            },
            |_| {},
        )?;
        let lookup = |i: usize| {
            let code = *kinds.get(i)?;
            Some(Summary {
                kind: FileKind::from_code(code & !ORIGIN_BIT)?,
                origin: u32::from(code & ORIGIN_BIT != 0),
                size_bytes: sizes[i],
            })
        };
        // Pass 2: the rules, in `validate`'s order.
        head.check_head(file_count as usize)?;
        let mut referenced = HashSet::new();
        let mut r = Reader(files);
        for index in 0..file_count as usize {
            head.check_file(index, &r.file()?, &lookup, &mut referenced)?;
        }
        head.check_rest(&lookup)?;
        let mut r = Reader(segments);
        let device_count = head.devices.len();
        for index in 0..segment_count as usize {
            check_segment(&r.segment()?, &lookup, device_count).map_err(|why| {
                FormatError::CatalogEntry {
                    table: "segment",
                    index: index as u64,
                    why,
                }
            })?;
        }
        let macced = &buf[..buf.len() - CATALOG_MAC_BYTES - CATALOG_CRC_BYTES];
        Ok(CatalogStream {
            head,
            file_count,
            segment_count,
            files,
            segments,
            macced,
        })
    }

    /// The catalog without its files and segments (set id, devices, chain,
    /// parity, MAC).
    pub fn head(&self) -> &Catalog {
        &self.head
    }

    pub fn file_count(&self) -> usize {
        self.file_count as usize
    }

    pub fn segment_count(&self) -> usize {
        self.segment_count as usize
    }

    /// The MAC of the encoding with `key` (`Catalog::mac_for`, without
    /// encoding again).
    pub fn mac_for(&self, key: &MacKey) -> [u8; HASH_BYTES] {
        crate::format::mac(key, self.macced)
    }

    /// The files in id order, one decoded at a time.
    pub fn files(&self) -> Entries<'a, CatalogFile> {
        Entries {
            r: Reader(self.files),
            left: self.file_count,
            next: Reader::file,
        }
    }

    /// The segments in table order, one decoded at a time.
    pub fn segments(&self) -> Entries<'a, CatalogSegment> {
        Entries {
            r: Reader(self.segments),
            left: self.segment_count,
            next: Reader::segment,
        }
    }
}

/// `kinds` keeps a file's kind code and this bit when its data is in an
/// earlier set (kind codes are below it).
const ORIGIN_BIT: u8 = 0x80;

/// The entries of one table, decoded one at a time. `open` decoded them
/// all once, so an error here is not expected; it is returned, not
/// panicked on, all the same.
pub struct Entries<'a, T> {
    r: Reader<'a>,
    left: u32,
    next: fn(&mut Reader<'a>) -> Result<T, FormatError>,
}

impl<T> Iterator for Entries<'_, T> {
    type Item = Result<T, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let item = (self.next)(&mut self.r);
        if item.is_err() {
            self.left = 0;
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left as usize))
    }
}
