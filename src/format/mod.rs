//! The media format, pure: label, record header, catalog. Normative
//! description: docs/FORMAT.md. All integers little-endian, every structure
//! 4096-byte aligned, every header carries a CRC32C of itself.
//!
//! INTERFACE (fixed; the engine builds on it). Decoders never panic on any
//! input: they return `FormatError`.

pub mod block;
pub mod catalog;
pub mod codec;
pub mod label;
pub mod parity;
pub mod record;
pub mod seal;
pub mod set_id;
pub mod stat;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod seal_proptests;

pub use catalog::{
    check_xattrs, file_digest, payload_hash, Catalog, CatalogDevice, CatalogFile, CatalogParity,
    CatalogSegment, CatalogStripe, DeviceState, DigestRecord, FileKind, Renamed, StripeRecord,
    Xattr, XATTR_NAME_MAX, XATTR_VALUE_MAX,
};
pub use label::{Label, LabelState};
pub use record::{Codec, FileInfo, RecordHeader, RecordKind, Transform};
pub use set_id::{SetId, SetIdParseError};
pub use stat::Stat;

/// Current format version, written into label, headers and catalog.
pub const FORMAT_VERSION: u32 = 1;
/// Alignment of every on-media structure; the label and a record header are one block each.
pub const BLOCK_BYTES: usize = 4096;
/// Bytes of a record header on media.
pub const HEADER_BYTES: usize = 4096;
/// Largest record payload the format allows (a decoder rejects more).
pub const PAYLOAD_BYTES_MAX: u32 = 64 << 20;

/// Magic of the label block.
pub const LABEL_MAGIC: [u8; 8] = *b"PBIOLABL";
/// Magic of a record header block.
pub const RECORD_MAGIC: [u8; 8] = *b"PBIORECD";
/// Magic of an encoded catalog.
pub const CATALOG_MAGIC: [u8; 8] = *b"PBIOCATL";

/// Smallest chunk size (record payload size) a label or catalog may declare.
pub const CHUNK_BYTES_MIN: u32 = BLOCK_BYTES as u32;
/// Smallest device logical block size a label may declare.
pub const DEVICE_BLOCK_BYTES_MIN: u32 = 512;
/// Largest device logical block size a label may declare.
pub const DEVICE_BLOCK_BYTES_MAX: u32 = 65536;

const _: () = assert!(HEADER_BYTES == BLOCK_BYTES);
const _: () = assert!(BLOCK_BYTES.is_power_of_two());
const _: () = assert!((PAYLOAD_BYTES_MAX as usize).is_multiple_of(BLOCK_BYTES));
const _: () = assert!(PAYLOAD_BYTES_MAX.is_power_of_two() && CHUNK_BYTES_MIN <= PAYLOAD_BYTES_MAX);

/// The key of a set's MACs (label `mac`, catalog `mac`): keyed BLAKE3.
pub type MacKey = [u8; 32];
/// Bytes of a MAC, a catalog digest and a per-record payload hash (BLAKE3).
pub const HASH_BYTES: usize = 32;
/// Fewest bytes a key file (`--key FILE`) must hold.
pub const KEY_FILE_BYTES_MIN: usize = 32;
/// The BLAKE3 `derive_key` context of a set's MAC key.
pub const MAC_KEY_CONTEXT: &str = "pbio 2026-12 set authentication v1";

/// The MAC key derived from a key file's contents (docs/FORMAT.md, "MAC").
/// The caller checks the length (`KEY_FILE_BYTES_MIN`).
pub fn mac_key(contents: &[u8]) -> MacKey {
    blake3::derive_key(MAC_KEY_CONTEXT, contents)
}

/// Keyed BLAKE3 of `bytes`.
pub fn mac(key: &MacKey, bytes: &[u8]) -> [u8; HASH_BYTES] {
    *blake3::keyed_hash(key, bytes).as_bytes()
}

/// Compare two MACs or digests in constant time.
pub fn hash_eq(a: &[u8; HASH_BYTES], b: &[u8; HASH_BYTES]) -> bool {
    blake3::Hash::from(*a) == blake3::Hash::from(*b)
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("buffer too short: {have} bytes, need {need}")]
    Short { have: usize, need: usize },
    #[error("bad magic (not a pbio {what})")]
    BadMagic { what: &'static str },
    #[error("unsupported format version {0}")]
    Version(u32),
    #[error("{what} checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        what: &'static str,
        stored: u32,
        computed: u32,
    },
    #[error("invalid field {field}: {value}")]
    Field { field: &'static str, value: u64 },
    #[error("catalog malformed: {0}")]
    Catalog(&'static str),
    /// A reserved byte of a label or header block is not zero (a block
    /// written by an incompatible writer, or a bug).
    #[error("{what} reserved byte at offset {offset} is not zero")]
    Reserved { what: &'static str, offset: usize },
    /// One entry of a catalog table is invalid.
    #[error("catalog {table} entry {index}: {why}")]
    CatalogEntry {
        table: &'static str,
        index: u64,
        why: &'static str,
    },
    /// Sealed bytes (`--encrypt`) that do not open.
    #[error("{0}")]
    Sealed(#[from] seal::SealError),
    /// The temporary file a large catalog is read through
    /// (`catalog::Spilled`) could not be read back: `errno`.
    #[error("catalog spill file: read at offset {offset}: {}", std::io::Error::from_raw_os_error(*.errno))]
    Spill { offset: u64, errno: i32 },
}

/// CRC32C (Castagnoli), hardware accelerated where the CPU has it.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Round `n` up to a multiple of `BLOCK_BYTES`.
pub const fn round_up_block(n: u64) -> u64 {
    n.div_ceil(BLOCK_BYTES as u64) * BLOCK_BYTES as u64
}

/// Whether `n` is a multiple of `BLOCK_BYTES`.
pub const fn is_block_aligned(n: u64) -> bool {
    n.is_multiple_of(BLOCK_BYTES as u64)
}

/// The chunk size rule shared by label and catalog: a power of two in
/// `CHUNK_BYTES_MIN..=PAYLOAD_BYTES_MAX`.
pub const fn chunk_bytes_valid(chunk_bytes: u32) -> bool {
    chunk_bytes.is_power_of_two()
        && chunk_bytes >= CHUNK_BYTES_MIN
        && chunk_bytes <= PAYLOAD_BYTES_MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRC is CRC-32C (Castagnoli, reflected 0x82F63B78, init and final
    /// xor 0xFFFFFFFF): its standard check value, and the empty input.
    #[test]
    fn crc32c_is_castagnoli() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn helpers() {
        assert_eq!(round_up_block(0), 0);
        assert_eq!(round_up_block(1), 4096);
        assert_eq!(round_up_block(4096), 4096);
        assert_eq!(round_up_block(4097), 8192);
        assert!(is_block_aligned(0) && is_block_aligned(8192) && !is_block_aligned(512));
        assert!(
            chunk_bytes_valid(4096) && chunk_bytes_valid(1 << 20) && chunk_bytes_valid(64 << 20)
        );
        assert!(!chunk_bytes_valid(0) && !chunk_bytes_valid(2048) && !chunk_bytes_valid(128 << 20));
        assert!(!chunk_bytes_valid(3 << 20));
    }
}
