//! The media format, pure: label, record header, catalog. Normative
//! description: docs/FORMAT.md. All integers little-endian, every structure
//! 4096-byte aligned, every header carries a CRC32C of itself.
//!
//! INTERFACE (fixed; the engine builds on it). Decoders never panic on any
//! input: they return `FormatError`.

pub mod catalog;
pub mod label;
pub mod record;

pub use catalog::{file_digest, Catalog, CatalogDevice, CatalogFile, CatalogSegment, FileKind};
pub use label::{Label, LabelState};
pub use record::{RecordHeader, RecordKind};

/// Current format version, written into label, headers and catalog.
pub const FORMAT_VERSION: u32 = 1;
/// Alignment of every on-media structure; the label and a record header are one block each.
pub const BLOCK_BYTES: usize = 4096;
/// Bytes of a record header on media.
pub const HEADER_BYTES: usize = 4096;
/// Largest record payload the format allows (a decoder rejects more).
pub const PAYLOAD_BYTES_MAX: u32 = 64 << 20;

/// A set id: 128 random bits.
pub type SetId = [u8; 16];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
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
}

/// CRC32C (Castagnoli), hardware accelerated where the CPU has it.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Round `n` up to a multiple of `BLOCK_BYTES`.
pub const fn round_up_block(n: u64) -> u64 {
    n.div_ceil(BLOCK_BYTES as u64) * BLOCK_BYTES as u64
}
