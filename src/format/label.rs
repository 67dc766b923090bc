//! The label: block 0 of every random-access device (first tape block on tape).

use super::{FormatError, SetId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelState {
    /// Data is being written; the catalog position is not valid yet.
    Writing,
    /// Data and catalog are durable; `catalog_offset`/`catalog_bytes` are valid.
    Complete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label {
    pub set_id: SetId,
    pub device_index: u32,
    pub device_count: u32,
    pub chunk_bytes: u32,
    /// Device logical block size at backup time.
    pub block_bytes: u32,
    pub created_unix_ns: u64,
    pub state: LabelState,
    /// Media offset of the first catalog record (Complete only).
    pub catalog_offset: u64,
    /// Length of the encoded catalog in bytes (Complete only).
    pub catalog_bytes: u64,
    /// Media offset just past the last data record (Complete only).
    pub data_end: u64,
}

impl Label {
    /// Encode into the first 4096 bytes of `out` (panics if `out` is shorter: caller bug).
    pub fn encode_into(&self, out: &mut [u8]) {
        let _ = out;
        unimplemented!()
    }

    pub fn decode(buf: &[u8]) -> Result<Label, FormatError> {
        let _ = buf;
        unimplemented!()
    }
}
