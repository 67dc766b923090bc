//! Decoding a catalog: structure first (length, magic, CRC, version,
//! counts against the bytes present, varints, exact end), then
//! `Catalog::validate`.

use super::{
    layout, Catalog, CatalogDevice, CatalogFile, CatalogSegment, DeviceState, FileKind, Renamed,
    Xattr, CATALOG_BYTES_MIN, CATALOG_CRC_BYTES, CATALOG_MAC_BYTES,
};
use crate::format::{crc32c, FormatError, SetId, Stat, CATALOG_MAGIC, FORMAT_VERSION, HASH_BYTES};

/// Fewest bytes one valid table entry takes on media (every varint at
/// least one byte, every string at least its length byte, a file path at
/// least one byte more). Counts in the header are checked against these
/// before anything is allocated.
const DEVICE_ENTRY_BYTES_MIN: u64 = 4; // path length, capacity, state, data_end
/// path length, 1 path byte, kind, mode, uid, gid, mtime sec, nsec,
/// ctime sec, nsec, dev, ino, flags, xattr count.
const FILE_ENTRY_BYTES_MIN: u64 = 14;
/// name length, 1 name byte, value length.
const XATTR_ENTRY_BYTES_MIN: u64 = 3;
const SEGMENT_ENTRY_BYTES_MIN: u64 = 6; // six varints
const CHAIN_BYTES_MIN: u64 = 3; // the three counts of the chain section
const ANCESTOR_BYTES: u64 = SetId::BYTES as u64;
// The chain tables do not count a path byte: an empty path then reaches
// `validate`, which names the entry.
const REMOVED_ENTRY_BYTES_MIN: u64 = 1; // path length
const RENAMED_ENTRY_BYTES_MIN: u64 = 2; // file id, path length
/// The first byte of the stored section (a parity section starts with a
/// varint `m >= 1`, never a zero byte).
pub(super) const STORED_SECTION_TAG: u8 = 0;

impl Catalog {
    /// Decode; rejects anything malformed (bad magic/version/checksum,
    /// truncation, out-of-range ids, trailing bytes) without panicking.
    pub fn decode(buf: &[u8]) -> Result<Catalog, FormatError> {
        let parsed = parse_head(buf)?;
        let mut files = Vec::with_capacity(parsed.file_count as usize);
        let mut segments = Vec::with_capacity(parsed.segment_count as usize);
        let mut head = parsed.walk(|f| files.push(f), |s| segments.push(s))?;
        head.files = files;
        head.segments = segments;
        head.validate()?;
        Ok(head)
    }
}

/// A catalog's fixed header and device table, checked (length, magic,
/// CRC, version, counts against the bytes present), and the bytes of the
/// tables after the device table (files, segments, chain, parity).
pub(super) struct Parsed<'a> {
    /// Everything but the files, the segments and the chain section.
    pub(super) head: Catalog,
    pub(super) file_count: u32,
    pub(super) segment_count: u32,
    pub(super) tables: &'a [u8],
}

impl<'a> Parsed<'a> {
    /// Read the tables through, handing each file and each segment to
    /// `file` and `segment` as it is decoded, and return the head (every
    /// field but those two tables). Only the structure is checked here;
    /// `validate`'s rules are the caller's.
    pub(super) fn walk(
        self,
        mut file: impl FnMut(CatalogFile),
        mut segment: impl FnMut(CatalogSegment),
    ) -> Result<Catalog, FormatError> {
        let Parsed {
            mut head,
            file_count,
            segment_count,
            tables,
        } = self;
        let mut r = Reader(tables);
        for _ in 0..file_count {
            file(r.file()?);
        }
        for _ in 0..segment_count {
            segment(r.segment()?);
        }
        decode_tail(&mut r, &mut head, file_count)?;
        Ok(head)
    }
}

pub(super) fn parse_head(buf: &[u8]) -> Result<Parsed<'_>, FormatError> {
    let len = buf.len() as u64;
    let stored_crc = if buf.len() >= CATALOG_BYTES_MIN {
        read_u32(&buf[buf.len() - CATALOG_CRC_BYTES..])
    } else {
        0
    };
    check_frame(buf, len, stored_crc, || {
        Ok(crc32c(&buf[..buf.len() - CATALOG_CRC_BYTES]))
    })?;
    let tables_end = buf.len() - CATALOG_MAC_BYTES - CATALOG_CRC_BYTES;
    let mut mac = [0u8; HASH_BYTES];
    mac.copy_from_slice(&buf[tables_end..tables_end + CATALOG_MAC_BYTES]);
    let fixed = parse_fixed(&buf[..tables_end], tables_end as u64, mac)?;
    Ok(Parsed {
        head: fixed.head,
        file_count: fixed.file_count,
        segment_count: fixed.segment_count,
        tables: &buf[fixed.devices_end..tables_end],
    })
}

/// The checks of a catalog's frame, in `decode`'s order: its length
/// (`len` bytes in all), the magic in `first` (its first bytes, at least
/// the fixed header when `len` allows), then the CRC32C stored in its last
/// 4 bytes against `computed` (over every byte before them).
pub(super) fn check_frame(
    first: &[u8],
    len: u64,
    stored: u32,
    computed: impl FnOnce() -> Result<u32, FormatError>,
) -> Result<(), FormatError> {
    if len < CATALOG_BYTES_MIN as u64 {
        return Err(FormatError::Short {
            have: len as usize,
            need: CATALOG_BYTES_MIN,
        });
    }
    if first[layout::MAGIC..layout::MAGIC + 8] != CATALOG_MAGIC {
        return Err(FormatError::BadMagic { what: "catalog" });
    }
    let computed = computed()?;
    // Under the fuzzer (`cargo fuzz` sets cfg(fuzzing)) checksums are not
    // checked, so that mutated input reaches the field rules behind them.
    if stored != computed && !cfg!(fuzzing) {
        return Err(FormatError::Checksum {
            what: "catalog",
            stored,
            computed,
        });
    }
    Ok(())
}

/// A catalog's fixed header and device table (`parse_fixed`).
pub(super) struct Fixed {
    /// Everything but the files, the segments and the chain section.
    pub(super) head: Catalog,
    pub(super) file_count: u32,
    pub(super) segment_count: u32,
    /// Where the device table ends (the file table starts), from the
    /// encoding's first byte.
    pub(super) devices_end: usize,
}

/// The fixed header and the device table from `prefix`, the first bytes
/// of an encoding whose tables end at `tables_end` (where the MAC starts;
/// the frame checked by `check_frame`). `prefix` may stop short of
/// `tables_end`: a device table cut by its end is `TRUNCATED`, and the
/// caller reads more (an error of the same bytes is the same error).
pub(super) fn parse_fixed(
    prefix: &[u8],
    tables_end: u64,
    mac: [u8; HASH_BYTES],
) -> Result<Fixed, FormatError> {
    let header = &prefix[..layout::TABLES];
    let u32_at = |off: usize| read_u32(&header[off..off + 4]);
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
    if need > tables_end - layout::TABLES as u64 {
        return Err(COUNTS_EXCEED);
    }

    let mut r = Reader(&prefix[layout::TABLES..]);
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
    let head = Catalog {
        set_id,
        created_unix_ns: u64::from_le_bytes(created),
        chunk_bytes: u32_at(layout::CHUNK_BYTES),
        devices,
        files: Vec::new(),
        segments: Vec::new(),
        ancestors: Vec::new(),
        removed: Vec::new(),
        renamed: Vec::new(),
        parity: None,
        stored_bytes: Vec::new(),
        mac,
    };
    Ok(Fixed {
        head,
        file_count,
        segment_count,
        devices_end: prefix.len() - r.0.len(),
    })
}

/// The chain section, the parity section and the stored section (the
/// bytes after the segment table) into `head`, and nothing after them.
pub(super) fn decode_tail(
    r: &mut Reader,
    head: &mut Catalog,
    file_count: u32,
) -> Result<(), FormatError> {
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
    head.ancestors = ancestors;
    head.removed = removed;
    head.renamed = renamed;
    // The parity section, only in a set written with `--parity`: it
    // starts with `m >= 1`, so never with a zero byte.
    head.parity = match r.0.first() {
        Some(&b) if b != STORED_SECTION_TAG => Some(super::parity::decode(r)?),
        _ => None,
    };
    // The stored section (amendment ten), absent from older catalogs.
    if r.0.first() == Some(&STORED_SECTION_TAG) {
        r.take(1)?;
        if file_count == 0 {
            // Written only with files: one encoding per catalog.
            return Err(FormatError::Catalog(
                "stored section in a catalog without files",
            ));
        }
        if u64::from(file_count) > r.0.len() as u64 {
            return Err(FormatError::Catalog(
                "stored section shorter than the file count",
            ));
        }
        head.stored_bytes = (0..file_count)
            .map(|_| r.varint())
            .collect::<Result<_, _>>()?;
    }
    if !r.0.is_empty() {
        return Err(FormatError::Catalog(
            "trailing bytes after the parity and stored sections",
        ));
    }
    Ok(())
}

pub(super) const fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

fn read_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_le_bytes(a)
}

/// Consumes catalog encodings from the front of the bytes not read yet.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

pub(super) const TRUNCATED: FormatError = FormatError::Catalog("truncated");
/// A table count larger than the bytes left could hold.
pub(super) const COUNTS_EXCEED: FormatError =
    FormatError::Catalog("table counts exceed the catalog's length");

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: u64) -> Result<&'a [u8], FormatError> {
        if n > self.0.len() as u64 {
            return Err(TRUNCATED);
        }
        let (head, tail) = self.0.split_at(n as usize);
        self.0 = tail;
        Ok(head)
    }

    pub(super) fn byte(&mut self) -> Result<u8, FormatError> {
        let (&b, tail) = self.0.split_first().ok_or(TRUNCATED)?;
        self.0 = tail;
        Ok(b)
    }

    /// Unsigned LEB128; rejects values over 64 bits and non-shortest forms,
    /// so every value has exactly one encoding.
    pub(super) fn varint(&mut self) -> Result<u64, FormatError> {
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

    pub(super) fn varint_u32(&mut self) -> Result<u32, FormatError> {
        u32::try_from(self.varint()?).map_err(|_| FormatError::Catalog("varint exceeds 32 bits"))
    }

    pub(super) fn bytes(&mut self) -> Result<&'a [u8], FormatError> {
        let n = self.varint()?;
        self.take(n)
    }

    /// A table count (varint) whose entries, each at least
    /// `entry_bytes_min` long, fit in the bytes left: checked before
    /// anything is allocated.
    fn count(&mut self, entry_bytes_min: u64) -> Result<usize, FormatError> {
        let n = self.varint_u32()?;
        if u64::from(n) * entry_bytes_min > self.0.len() as u64 {
            return Err(COUNTS_EXCEED);
        }
        Ok(n as usize)
    }

    pub(super) fn segment(&mut self) -> Result<CatalogSegment, FormatError> {
        Ok(CatalogSegment {
            file_id: self.varint_u32()?,
            offset: self.varint()?,
            length: self.varint()?,
            device: self.varint_u32()?,
            position: self.varint()?,
            records: self.varint_u32()?,
        })
    }

    pub(super) fn file(&mut self) -> Result<CatalogFile, FormatError> {
        let path = self.bytes()?.to_vec();
        let code = self.byte()?;
        let kind = FileKind::from_code(code).ok_or(FormatError::Field {
            field: "catalog.file.kind",
            value: code.into(),
        })?;
        let mut f = CatalogFile {
            path,
            kind,
            stat: Stat {
                mode: self.varint_u32()?,
                uid: self.varint_u32()?,
                gid: self.varint_u32()?,
                mtime_sec: unzigzag(self.varint()?),
                mtime_nsec: self.varint_u32()?,
                ctime_sec: unzigzag(self.varint()?),
                ctime_nsec: self.varint_u32()?,
                dev: self.varint()?,
                ino: self.varint()?,
                rdev: 0,
                flags: 0,
            },
            size_bytes: 0,
            link_target: Vec::new(),
            hardlink_to: 0,
            digest: [0u8; 32],
            origin: 0,
            origin_file_id: 0,
            xattrs: Vec::new(),
        };
        f.stat.flags = self.varint_u32()?;
        // Checked against the bytes left before anything is allocated.
        let xattr_count = self.count(XATTR_ENTRY_BYTES_MIN)?;
        f.xattrs.reserve_exact(xattr_count);
        for _ in 0..xattr_count {
            f.xattrs.push(Xattr {
                name: self.bytes()?.to_vec(),
                value: self.bytes()?.to_vec(),
            });
        }
        match kind {
            FileKind::Regular | FileKind::BlockDevice => {
                f.size_bytes = self.varint()?;
                f.digest.copy_from_slice(self.take(32)?);
                f.origin = self.varint_u32()?;
                if f.origin != 0 {
                    f.origin_file_id = self.varint_u32()?;
                }
            }
            FileKind::Directory | FileKind::Fifo => {}
            FileKind::CharDevice | FileKind::BlockNode => f.stat.rdev = self.varint()?,
            FileKind::Symlink => f.link_target = self.bytes()?.to_vec(),
            FileKind::HardLink => f.hardlink_to = self.varint_u32()?,
        }
        Ok(f)
    }
}
