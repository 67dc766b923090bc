//! The reading side of `--compress`: a record's stored bytes (checked
//! against their CRC32C first) back to its payload, in a buffer of
//! exactly the header's `payload_bytes` (`format::codec::decompress`
//! never writes past it: a record that would expand further is refused).

use crate::format::codec::{self, DecompressError};
use crate::format::{Codec, RecordHeader};

/// A reader's decompression buffer, kept across records.
#[derive(Default)]
pub(super) struct Inflate {
    buf: Vec<u8>,
}

impl Inflate {
    /// The payload of a record whose stored bytes are `stored`: `stored`
    /// itself when raw, else the decompressed bytes in this buffer.
    pub(super) fn payload<'b>(
        &'b mut self,
        header: &RecordHeader,
        stored: &'b [u8],
    ) -> Result<&'b [u8], DecompressError> {
        if header.transform.codec == Codec::Raw {
            return Ok(stored);
        }
        // `payload_bytes` is bounded by the header rules (64 MiB at most)
        // and by the label's chunk (checked before this).
        self.buf.resize(header.payload_bytes as usize, 0);
        codec::decompress(header.transform.codec, stored, &mut self.buf)?;
        Ok(&self.buf)
    }
}
