//! The record header: one 4096-byte block in front of every payload.

use super::block::{self, get, get_u32, get_u64, put, put_u32, put_u64, Block};
use super::{FormatError, SetId, Xattr, PAYLOAD_BYTES_MAX, RECORD_MAGIC};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Data,
    Catalog,
    /// Marks the end of a device's records (after the catalog). No payload.
    End,
}

impl RecordKind {
    /// The value stored on media.
    pub const fn code(self) -> u32 {
        match self {
            RecordKind::Data => 1,
            RecordKind::Catalog => 2,
            RecordKind::End => 3,
        }
    }

    /// The kind stored on media as `code`, if known.
    pub const fn from_code(code: u32) -> Option<RecordKind> {
        match code {
            1 => Some(RecordKind::Data),
            2 => Some(RecordKind::Catalog),
            3 => Some(RecordKind::End),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: RecordKind,
    pub set_id: SetId,
    pub device_index: u32,
    /// Record sequence number on this device, from 0.
    pub sequence: u64,
    /// Index into the catalog's file table (Data only, else 0).
    pub file_id: u32,
    /// Index into the catalog's segment table (Data only, else 0).
    pub segment_id: u32,
    /// Offset of this payload in its file (Data) or in the encoded catalog (Catalog).
    pub file_offset: u64,
    pub payload_bytes: u32,
    /// Total size of the file (Data) or of the encoded catalog (Catalog).
    pub file_size: u64,
    /// CRC32C of the payload as stored (compressed, when it is).
    pub payload_crc: u32,
    /// How the payload is stored: raw, or compressed (Data only).
    pub transform: Transform,
}

/// How a record's payload is stored on media (docs/FORMAT.md §5, `codec`
/// and `stored_bytes`): `payload_bytes` is always the payload's own
/// length; a compressed payload takes `stored_bytes` on media, fewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Transform {
    pub codec: Codec,
    /// Bytes on media when compressed (`1 ..= payload_bytes - 1`); 0 raw.
    pub stored_bytes: u32,
    /// `--encrypt`: how the file info and stored payload are sealed
    /// (`RecordSeal::NONE` when they are not; Data records only).
    pub seal: super::seal::RecordSeal,
}

impl Transform {
    /// The payload as it is, `payload_bytes` on media.
    pub const RAW: Transform = Transform {
        codec: Codec::Raw,
        stored_bytes: 0,
        seal: super::seal::RecordSeal::NONE,
    };
}

/// The compression of one record's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Codec {
    /// Stored as it is (also a record that did not shrink).
    #[default]
    Raw,
    /// One or more Zstandard frames (RFC 8878).
    Zstd,
    /// One LZ4 block (no frame, no size prefix: `payload_bytes` says it).
    Lz4,
}

impl Codec {
    /// The value stored on media.
    pub const fn code(self) -> u32 {
        match self {
            Codec::Raw => 0,
            Codec::Zstd => 1,
            Codec::Lz4 => 2,
        }
    }

    /// The codec stored on media as `code`, if known.
    pub const fn from_code(code: u32) -> Option<Codec> {
        match code {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            2 => Some(Codec::Lz4),
            _ => None,
        }
    }
}

/// What a data record says about its file, so that a device can be read
/// with no catalog at all (`pbio restore --scan`): the stored path, owner,
/// mode, mtime, and how many payload bytes the whole file stores (its data
/// ranges; holes are not stored), which tells when a file is complete; the
/// file's first record also its extended attributes, those that fit.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FileInfo {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    /// Payload bytes of all the file's records together.
    pub data_bytes: u64,
    /// The stored path, at most `layout::PATH_BYTES_MAX` bytes.
    pub path: Vec<u8>,
    /// The path was longer than the header holds and is cut short.
    pub path_truncated: bool,
    /// The file's extended attributes (sorted by name), carried by its
    /// first record only (the one at its first data offset); None on the
    /// others. Those that do not fit the header after the path are left
    /// out, and `xattrs_cut` says so.
    pub xattrs: Option<Vec<Xattr>>,
    /// Some extended attributes of the file did not fit and are not here.
    pub xattrs_cut: bool,
}

impl FileInfo {
    /// The same file as `other` says, apart from the xattrs only a file's
    /// first record carries.
    pub fn same_file(&self, other: &FileInfo) -> bool {
        (
            self.mode,
            self.uid,
            self.gid,
            self.mtime_sec,
            self.mtime_nsec,
            self.data_bytes,
            &self.path,
            self.path_truncated,
        ) == (
            other.mode,
            other.uid,
            other.gid,
            other.mtime_sec,
            other.mtime_nsec,
            other.data_bytes,
            &other.path,
            other.path_truncated,
        )
    }

    /// The info area's bytes after the path's length field: path, then
    /// (first record) the xattr area; and the flags.
    fn tail(&self) -> (Vec<u8>, u16) {
        let path_bytes = self.path.len().min(layout::PATH_BYTES_MAX);
        let mut flags = 0u16;
        if self.path_truncated || path_bytes < self.path.len() {
            flags |= layout::INFO_FLAG_PATH_TRUNCATED;
        }
        let mut out = self.path[..path_bytes].to_vec();
        if let Some(xattrs) = &self.xattrs {
            let mut room = layout::PATH_BYTES_MAX - path_bytes;
            if room < 2 {
                // Not even the count fits.
                if !xattrs.is_empty() || self.xattrs_cut {
                    flags |= layout::INFO_FLAG_XATTRS_CUT;
                }
                return (out, flags);
            }
            flags |= layout::INFO_FLAG_XATTRS;
            room -= 2;
            let count_at = out.len();
            out.extend_from_slice(&[0, 0]);
            let mut count = 0u16;
            let mut cut = self.xattrs_cut;
            for x in xattrs {
                let bytes = 3 + x.name.len() + x.value.len();
                let fits = bytes <= room
                    && !x.name.is_empty()
                    && x.name.len() <= super::XATTR_NAME_MAX
                    && !x.name.contains(&0);
                if !fits {
                    cut = true;
                    continue;
                }
                out.push(x.name.len() as u8);
                out.extend_from_slice(&(x.value.len() as u16).to_le_bytes());
                out.extend_from_slice(&x.name);
                out.extend_from_slice(&x.value);
                room -= bytes;
                count += 1;
            }
            out[count_at..count_at + 2].copy_from_slice(&count.to_le_bytes());
            if cut {
                flags |= layout::INFO_FLAG_XATTRS_CUT;
            }
        } else if self.xattrs_cut {
            // As decoded from a first record with no room for the area.
            flags |= layout::INFO_FLAG_XATTRS_CUT;
        }
        (out, flags)
    }
}

/// The xattr area of a record's file info (docs/FORMAT.md §5): a u16
/// count, then per attribute `name_bytes` u8 (>= 1), `value_bytes` u16,
/// the name (no NUL), the value; names strictly ascending; nothing after
/// the last. None when it breaks any of this.
fn parse_info_xattrs(area: &[u8]) -> Option<Vec<Xattr>> {
    let (count, mut rest) = area.split_first_chunk::<2>()?;
    let count = u16::from_le_bytes(*count) as usize;
    // Each entry takes at least 4 bytes: bounded before allocating.
    if count * 4 > rest.len() {
        return None;
    }
    let mut out: Vec<Xattr> = Vec::with_capacity(count);
    for _ in 0..count {
        let (head, tail) = rest.split_first_chunk::<3>()?;
        let name_bytes = head[0] as usize;
        let value_bytes = u16::from_le_bytes([head[1], head[2]]) as usize;
        if name_bytes == 0 || tail.len() < name_bytes + value_bytes {
            return None;
        }
        let (name, tail) = tail.split_at(name_bytes);
        let (value, tail) = tail.split_at(value_bytes);
        if name.contains(&0) || out.last().is_some_and(|last| last.name[..] >= *name) {
            return None;
        }
        out.push(Xattr {
            name: name.to_vec(),
            value: value.to_vec(),
        });
        rest = tail;
    }
    rest.is_empty().then_some(out)
}

/// Byte offsets of the header's fields in its block (docs/FORMAT.md, "Record header").
pub mod layout {
    use super::block;
    pub const MAGIC: usize = block::MAGIC; // [u8; 8] "PBIORECD"
    pub const VERSION: usize = block::VERSION; // u32
    pub const KIND: usize = 12; // u32: 1 data, 2 catalog, 3 end
    pub const SET_ID: usize = 16; // [u8; 16]
    pub const DEVICE_INDEX: usize = 32; // u32
    pub const PAYLOAD_BYTES: usize = 36; // u32
    pub const SEQUENCE: usize = 40; // u64
    pub const FILE_ID: usize = 48; // u32
    pub const SEGMENT_ID: usize = 52; // u32
    pub const FILE_OFFSET: usize = 56; // u64
    pub const FILE_SIZE: usize = 64; // u64
    pub const PAYLOAD_CRC: usize = 72; // u32
    /// u32: length of the file-info area that follows (0: none; Data only).
    pub const INFO_BYTES: usize = 76;
    /// The file-info area: `FileInfo`, `INFO_BYTES` long.
    pub const INFO: usize = 80;
    /// First reserved byte of a header without file info; in general
    /// `[INFO + info_bytes, CRC)` is zero.
    pub const RESERVED: usize = INFO;
    // File-info fields, relative to INFO.
    pub const INFO_MODE: usize = 0; // u32
    pub const INFO_UID: usize = 4; // u32
    pub const INFO_GID: usize = 8; // u32
    pub const INFO_MTIME_NSEC: usize = 12; // u32
    pub const INFO_MTIME_SEC: usize = 16; // i64
    pub const INFO_DATA_BYTES: usize = 24; // u64
    pub const INFO_PATH_BYTES: usize = 32; // u16
    pub const INFO_FLAGS: usize = 34; // u16, INFO_FLAG_*
    pub const INFO_PATH: usize = 36; // path bytes, then the xattr area
    /// The path is cut short.
    pub const INFO_FLAG_PATH_TRUNCATED: u16 = 1;
    /// An xattr area follows the path (the file's first record).
    pub const INFO_FLAG_XATTRS: u16 = 2;
    /// Some of the file's xattrs did not fit and are left out.
    pub const INFO_FLAG_XATTRS_CUT: u16 = 4;
    pub const INFO_FLAGS_KNOWN: u16 = 7;
    /// Longest path the area holds; longer paths are truncated and flagged.
    pub const PATH_BYTES_MAX: usize = SEAL - INFO - INFO_PATH;
    /// The seal area (`--encrypt`, all zero otherwise): the run id (u64,
    /// never 0 when sealed), the file info's tag, the payload's tag, the
    /// cipher (u32: 0 none, 1 AES-256-GCM). The file-info area ends by it.
    pub const SEAL: usize = 4040;
    pub const SEAL_RUN_ID: usize = SEAL; // u64
    pub const SEAL_INFO_TAG: usize = 4048; // [u8; 16]
    pub const SEAL_PAYLOAD_TAG: usize = 4064; // [u8; 16]
    pub const SEAL_CIPHER: usize = 4080; // u32
    /// u32: how the payload is stored, `Codec::code` (0 raw, 1 zstd, 2 lz4).
    pub const CODEC: usize = 4084;
    /// u32: bytes of the payload on media when compressed, else 0.
    pub const STORED_BYTES: usize = 4088;
    pub const CRC: usize = block::CRC; // u32, CRC32C of [0, CRC)

    // Fields are contiguous, in this order, and end before the CRC.
    const _: () = assert!(KIND == VERSION + 4);
    const _: () = assert!(SET_ID == KIND + 4);
    const _: () = assert!(DEVICE_INDEX == SET_ID + 16);
    const _: () = assert!(PAYLOAD_BYTES == DEVICE_INDEX + 4);
    const _: () = assert!(SEQUENCE == PAYLOAD_BYTES + 4);
    const _: () = assert!(FILE_ID == SEQUENCE + 8);
    const _: () = assert!(SEGMENT_ID == FILE_ID + 4);
    const _: () = assert!(FILE_OFFSET == SEGMENT_ID + 4);
    const _: () = assert!(FILE_SIZE == FILE_OFFSET + 8);
    const _: () = assert!(PAYLOAD_CRC == FILE_SIZE + 8);
    const _: () = assert!(INFO_BYTES == PAYLOAD_CRC + 4);
    const _: () = assert!(INFO == INFO_BYTES + 4);
    const _: () = assert!(RESERVED <= SEAL);
    const _: () =
        assert!(SEAL_INFO_TAG == SEAL_RUN_ID + 8 && SEAL_PAYLOAD_TAG == SEAL_INFO_TAG + 16);
    const _: () = assert!(SEAL_CIPHER == SEAL_PAYLOAD_TAG + 16 && CODEC == SEAL_CIPHER + 4);
    const _: () = assert!(STORED_BYTES == CODEC + 4 && CRC == STORED_BYTES + 4);
    // Every u64 field is naturally aligned.
    const _: () = assert!(
        SEQUENCE.is_multiple_of(8) && FILE_OFFSET.is_multiple_of(8) && FILE_SIZE.is_multiple_of(8)
    );
}

impl RecordHeader {
    /// Encode into the first 4096 bytes of `out`, with the header CRC
    /// (panics if `out` is shorter: caller bug). Also panics if the header
    /// is invalid (`validate`), so that nothing a reader would reject is
    /// ever written.
    pub fn encode_into(&self, out: &mut [u8]) {
        self.encode_with_info(None, out)
    }

    /// As `encode_into`, with the file-info area (Data records only; a
    /// path longer than `layout::PATH_BYTES_MAX` is cut and flagged).
    pub fn encode_with_info(&self, info: Option<&FileInfo>, out: &mut [u8]) {
        if let Err(e) = self.validate() {
            panic!("RecordHeader::encode_into of an invalid header (caller bug): {e}");
        }
        assert!(
            info.is_none() || self.kind == RecordKind::Data,
            "file info on a non-data record (caller bug)"
        );
        let b: &mut Block = block::start(out, &RECORD_MAGIC, "record header");
        if let Some(info) = info {
            let (tail, flags) = info.tail();
            let area = layout::INFO_PATH + tail.len();
            let path_bytes = info.path.len().min(layout::PATH_BYTES_MAX);
            let a = &mut b[layout::INFO..layout::INFO + area];
            a[layout::INFO_MODE..][..4].copy_from_slice(&info.mode.to_le_bytes());
            a[layout::INFO_UID..][..4].copy_from_slice(&info.uid.to_le_bytes());
            a[layout::INFO_GID..][..4].copy_from_slice(&info.gid.to_le_bytes());
            a[layout::INFO_MTIME_NSEC..][..4].copy_from_slice(&info.mtime_nsec.to_le_bytes());
            a[layout::INFO_MTIME_SEC..][..8].copy_from_slice(&info.mtime_sec.to_le_bytes());
            a[layout::INFO_DATA_BYTES..][..8].copy_from_slice(&info.data_bytes.to_le_bytes());
            a[layout::INFO_PATH_BYTES..][..2].copy_from_slice(&(path_bytes as u16).to_le_bytes());
            a[layout::INFO_FLAGS..][..2].copy_from_slice(&flags.to_le_bytes());
            a[layout::INFO_PATH..].copy_from_slice(&tail);
            put_u32::<{ layout::INFO_BYTES }>(b, area as u32);
        }
        put_u32::<{ layout::KIND }>(b, self.kind.code());
        put::<{ layout::SET_ID }, { SetId::BYTES }>(b, self.set_id.0);
        put_u32::<{ layout::DEVICE_INDEX }>(b, self.device_index);
        put_u32::<{ layout::PAYLOAD_BYTES }>(b, self.payload_bytes);
        put_u64::<{ layout::SEQUENCE }>(b, self.sequence);
        put_u32::<{ layout::FILE_ID }>(b, self.file_id);
        put_u32::<{ layout::SEGMENT_ID }>(b, self.segment_id);
        put_u64::<{ layout::FILE_OFFSET }>(b, self.file_offset);
        put_u64::<{ layout::FILE_SIZE }>(b, self.file_size);
        put_u32::<{ layout::PAYLOAD_CRC }>(b, self.payload_crc);
        put_u32::<{ layout::CODEC }>(b, self.transform.codec.code());
        put_u32::<{ layout::STORED_BYTES }>(b, self.transform.stored_bytes);
        Self::put_seal(b, &self.transform.seal);
        block::seal(b);
    }

    fn put_seal(b: &mut Block, seal: &super::seal::RecordSeal) {
        if seal.is_sealed() {
            put_u64::<{ layout::SEAL_RUN_ID }>(b, seal.run_id);
            put::<{ layout::SEAL_INFO_TAG }, 16>(b, seal.info_tag);
            put::<{ layout::SEAL_PAYLOAD_TAG }, 16>(b, seal.payload_tag);
            put_u32::<{ layout::SEAL_CIPHER }>(b, super::seal::CIPHER_AES_256_GCM);
        }
    }

    /// A header block encoded (with its file info, in clear) whose
    /// worker-computed fields are now known: set `payload_crc`, `transform`
    /// (codec, stored bytes, seal) and the CRC, keeping the file-info area
    /// as it lies (sealed by then). `self` must be the header the block
    /// was encoded from with only those fields changed (caller bug else).
    pub fn finish_in_place(&self, out: &mut [u8]) {
        if let Err(e) = self.validate() {
            panic!("RecordHeader::finish_in_place of an invalid header (caller bug): {e}");
        }
        let b: &mut Block = out.first_chunk_mut().expect("a header block (caller bug)");
        put_u32::<{ layout::PAYLOAD_CRC }>(b, self.payload_crc);
        put_u32::<{ layout::CODEC }>(b, self.transform.codec.code());
        put_u32::<{ layout::STORED_BYTES }>(b, self.transform.stored_bytes);
        Self::put_seal(b, &self.transform.seal);
        block::seal(b);
    }

    /// The file-info area of an encoded header block, as bytes (sealed or
    /// not): `[INFO, INFO + info_bytes)`.
    pub fn info_area_mut(block: &mut [u8]) -> &mut [u8] {
        let b: &mut Block = block
            .first_chunk_mut()
            .expect("a header block (caller bug)");
        let n = (get_u32::<{ layout::INFO_BYTES }>(b) as usize).min(layout::SEAL - layout::INFO);
        &mut b[layout::INFO..layout::INFO + n]
    }

    /// Decode and check magic, version, header CRC and field ranges.
    pub fn decode(buf: &[u8]) -> Result<RecordHeader, FormatError> {
        let b = block::open(buf, &RECORD_MAGIC, "record header", layout::CRC)?;
        let info_bytes = get_u32::<{ layout::INFO_BYTES }>(b) as usize;
        let cipher = get_u32::<{ layout::SEAL_CIPHER }>(b);
        let sealed = cipher != 0;
        if sealed
            && (cipher != super::seal::CIPHER_AES_256_GCM
                || get_u32::<{ layout::KIND }>(b) != RecordKind::Data.code()
                || get_u64::<{ layout::SEAL_RUN_ID }>(b) == 0)
        {
            return Err(FormatError::Field {
                field: "record.cipher",
                value: cipher.into(),
            });
        }
        if sealed && info_bytes != 0 {
            // The area is sealed: only its length can be checked here.
            if !(layout::INFO_PATH + 1..=layout::SEAL - layout::INFO).contains(&info_bytes) {
                return Err(FormatError::Field {
                    field: "record.info_bytes",
                    value: info_bytes as u64,
                });
            }
        } else if info_bytes != 0 {
            let path_bytes =
                u16::from_le_bytes(get::<{ layout::INFO + layout::INFO_PATH_BYTES }, 2>(b))
                    as usize;
            let flags = u16::from_le_bytes(get::<{ layout::INFO + layout::INFO_FLAGS }, 2>(b));
            let xattrs_ok = || {
                let after_path = layout::INFO + layout::INFO_PATH + path_bytes;
                let end = layout::INFO + info_bytes;
                if flags & layout::INFO_FLAG_XATTRS == 0 {
                    info_bytes == layout::INFO_PATH + path_bytes
                } else {
                    after_path <= end && parse_info_xattrs(&b[after_path..end]).is_some()
                }
            };
            if get_u32::<{ layout::KIND }>(b) != RecordKind::Data.code()
                || info_bytes > layout::SEAL - layout::INFO
                || path_bytes > layout::PATH_BYTES_MAX
                || info_bytes < layout::INFO_PATH + path_bytes
                || path_bytes == 0
                || flags & !layout::INFO_FLAGS_KNOWN != 0
                || !xattrs_ok()
            {
                return Err(FormatError::Field {
                    field: "record.info_bytes",
                    value: info_bytes as u64,
                });
            }
        }
        let zero_until = if sealed { layout::SEAL } else { layout::CODEC };
        block::check_zero(&b[..zero_until], layout::INFO + info_bytes, "record header")?;
        let kind_code = get_u32::<{ layout::KIND }>(b);
        let kind = RecordKind::from_code(kind_code).ok_or(FormatError::Field {
            field: "record.kind",
            value: kind_code.into(),
        })?;
        let codec_code = get_u32::<{ layout::CODEC }>(b);
        let codec = Codec::from_code(codec_code).ok_or(FormatError::Field {
            field: "record.codec",
            value: codec_code.into(),
        })?;
        let header = RecordHeader {
            kind,
            set_id: SetId(get::<{ layout::SET_ID }, { SetId::BYTES }>(b)),
            device_index: get_u32::<{ layout::DEVICE_INDEX }>(b),
            sequence: get_u64::<{ layout::SEQUENCE }>(b),
            file_id: get_u32::<{ layout::FILE_ID }>(b),
            segment_id: get_u32::<{ layout::SEGMENT_ID }>(b),
            file_offset: get_u64::<{ layout::FILE_OFFSET }>(b),
            payload_bytes: get_u32::<{ layout::PAYLOAD_BYTES }>(b),
            file_size: get_u64::<{ layout::FILE_SIZE }>(b),
            payload_crc: get_u32::<{ layout::PAYLOAD_CRC }>(b),
            transform: Transform {
                codec,
                stored_bytes: get_u32::<{ layout::STORED_BYTES }>(b),
                seal: if sealed {
                    super::seal::RecordSeal {
                        run_id: get_u64::<{ layout::SEAL_RUN_ID }>(b),
                        info_tag: get::<{ layout::SEAL_INFO_TAG }, 16>(b),
                        payload_tag: get::<{ layout::SEAL_PAYLOAD_TAG }, 16>(b),
                    }
                } else {
                    super::seal::RecordSeal::NONE
                },
            },
        };
        header.validate()?;
        Ok(header)
    }

    /// The field rules a decoder enforces (docs/FORMAT.md, "Record header");
    /// the first rule broken, checked in the order the rules are listed there.
    pub fn validate(&self) -> Result<(), FormatError> {
        let bad = |field: &'static str, value: u64| Err(FormatError::Field { field, value });
        if self.payload_bytes > PAYLOAD_BYTES_MAX {
            return bad("record.payload_bytes", self.payload_bytes.into());
        }
        match self.kind {
            RecordKind::Data => {}
            RecordKind::Catalog => {
                if self.file_id != 0 {
                    return bad("catalog_record.file_id", self.file_id.into());
                }
                if self.segment_id != 0 {
                    return bad("catalog_record.segment_id", self.segment_id.into());
                }
                if self.payload_bytes == 0 {
                    return bad("catalog_record.payload_bytes", 0);
                }
            }
            RecordKind::End => {
                if self.payload_bytes != 0 {
                    return bad("end_record.payload_bytes", self.payload_bytes.into());
                }
                if self.file_id != 0 {
                    return bad("end_record.file_id", self.file_id.into());
                }
                if self.segment_id != 0 {
                    return bad("end_record.segment_id", self.segment_id.into());
                }
                if self.file_offset != 0 {
                    return bad("end_record.file_offset", self.file_offset);
                }
                if self.file_size != 0 {
                    return bad("end_record.file_size", self.file_size);
                }
            }
        }
        if self.transform.seal.is_sealed() && self.kind != RecordKind::Data {
            return bad("record.cipher", super::seal::CIPHER_AES_256_GCM.into());
        }
        // A compressed payload is a Data record's, and strictly shorter.
        let stored = self.transform.stored_bytes;
        match self.transform.codec {
            Codec::Raw if stored != 0 => return bad("record.stored_bytes", stored.into()),
            Codec::Raw => {}
            _ if self.kind != RecordKind::Data => {
                return bad("record.codec", self.transform.codec.code().into())
            }
            _ if stored == 0 || stored >= self.payload_bytes => {
                return bad("record.stored_bytes", stored.into())
            }
            _ => {}
        }
        // CRC32C of no bytes is 0.
        if self.payload_bytes == 0 && self.payload_crc != 0 {
            return bad("record.payload_crc", self.payload_crc.into());
        }
        match self.file_offset.checked_add(self.payload_bytes.into()) {
            Some(end) if end <= self.file_size => Ok(()),
            _ => bad("record.file_offset", self.file_offset),
        }
    }

    /// The file-info area of a header block that `decode` accepted.
    pub fn decode_info(buf: &[u8]) -> Option<FileInfo> {
        let b: &Block = buf.first_chunk()?;
        let area = get_u32::<{ layout::INFO_BYTES }>(b) as usize;
        if area < layout::INFO_PATH || layout::INFO + area > layout::SEAL {
            return None;
        }
        let a = &b[layout::INFO..layout::INFO + area];
        let u32_at = |o: usize| u32::from_le_bytes(a[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(a[o..o + 8].try_into().expect("8 bytes"));
        let flags = u16::from_le_bytes([a[layout::INFO_FLAGS], a[layout::INFO_FLAGS + 1]]);
        let path_bytes =
            u16::from_le_bytes([a[layout::INFO_PATH_BYTES], a[layout::INFO_PATH_BYTES + 1]])
                as usize;
        let path_end = (layout::INFO_PATH + path_bytes).min(area);
        let xattrs = if flags & layout::INFO_FLAG_XATTRS != 0 {
            Some(parse_info_xattrs(&a[path_end..])?)
        } else {
            None
        };
        Some(FileInfo {
            mode: u32_at(layout::INFO_MODE),
            uid: u32_at(layout::INFO_UID),
            gid: u32_at(layout::INFO_GID),
            mtime_nsec: u32_at(layout::INFO_MTIME_NSEC),
            mtime_sec: u64_at(layout::INFO_MTIME_SEC) as i64,
            data_bytes: u64_at(layout::INFO_DATA_BYTES),
            path: a[layout::INFO_PATH..path_end].to_vec(),
            path_truncated: flags & layout::INFO_FLAG_PATH_TRUNCATED != 0,
            xattrs,
            xattrs_cut: flags & layout::INFO_FLAG_XATTRS_CUT != 0,
        })
    }

    /// Bytes of the payload as stored on media (before its padding):
    /// `payload_bytes`, or `stored_bytes` when compressed.
    pub fn stored_len(&self) -> u32 {
        match self.transform.codec {
            Codec::Raw => self.payload_bytes,
            _ => self.transform.stored_bytes,
        }
    }

    /// Bytes this record occupies on media: header + stored payload
    /// rounded up to a block.
    pub fn media_bytes(&self) -> u64 {
        super::HEADER_BYTES as u64 + super::round_up_block(self.stored_len() as u64)
    }
}

#[cfg(test)]
mod tests;
