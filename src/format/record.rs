//! The record header: one 4096-byte block in front of every payload.

use super::{FormatError, SetId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Data,
    Catalog,
    /// Marks the end of a device's records (after the catalog). No payload.
    End,
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
    pub payload_crc: u32,
}

impl RecordHeader {
    /// Encode into the first 4096 bytes of `out`, with the header CRC
    /// (panics if `out` is shorter: caller bug).
    pub fn encode_into(&self, out: &mut [u8]) {
        let _ = out;
        unimplemented!()
    }

    /// Decode and check magic, version, header CRC and field ranges.
    pub fn decode(buf: &[u8]) -> Result<RecordHeader, FormatError> {
        let _ = buf;
        unimplemented!()
    }

    /// Bytes this record occupies on media: header + payload rounded up to a block.
    pub fn media_bytes(&self) -> u64 {
        super::HEADER_BYTES as u64 + super::round_up_block(self.payload_bytes as u64)
    }
}
