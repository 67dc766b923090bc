//! The reading side of `--compress` and `--encrypt`: a record's stored
//! bytes (checked against their CRC32C first) opened with the set's data
//! key when sealed, then back to its payload, in a buffer of exactly the
//! header's `payload_bytes` (`format::codec::decompress` never writes past
//! it: a record that would expand further is refused).

use crate::format::codec::{self, DecompressError};
use crate::format::seal::{keyring, RecordKey, SealError};
use crate::format::{Codec, FileInfo, RecordHeader, SetId, BLOCK_BYTES};

/// A reader's decompression and opening buffers, kept across records.
#[derive(Default)]
pub(super) struct Inflate {
    buf: Vec<u8>,
    opened: Vec<u8>,
    /// The record key of the last sealed record's (set, run, device).
    key: Option<((SetId, u64, u32), RecordKey)>,
    /// Whether the last record's set is encrypted (its data key known).
    encrypted: Option<(SetId, bool)>,
}

impl Inflate {
    /// The record key that opens `header`'s record.
    fn key(&mut self, header: &RecordHeader) -> Result<&RecordKey, SealError> {
        let id = (
            header.set_id,
            header.transform.seal.run_id,
            header.device_index,
        );
        if self.key.as_ref().is_none_or(|(k, _)| *k != id) {
            let data = keyring::data_key(header.set_id).ok_or(SealError::WrongKey)?;
            self.key = Some((id, data.record_key(id.1, id.2)));
        }
        Ok(&self.key.as_ref().expect("set just above").1)
    }

    /// A record of an encrypted set must be sealed: one in clear was not
    /// written by pbio for that set.
    fn check_sealed(&mut self, header: &RecordHeader) -> Result<(), SealError> {
        if header.transform.seal.is_sealed() {
            return Ok(());
        }
        let set = header.set_id;
        let encrypted = match self.encrypted {
            Some((s, e)) if s == set => e,
            _ => {
                let e = keyring::data_key(set).is_some();
                self.encrypted = Some((set, e));
                e
            }
        };
        if encrypted {
            return Err(SealError::Authentication {
                what: "record in clear in an encrypted set",
            });
        }
        Ok(())
    }

    /// The payload of a record whose stored bytes are `stored`: `stored`
    /// itself when raw and not sealed, else the opened and decompressed
    /// bytes in this reader's buffers.
    pub(super) fn payload<'b>(
        &'b mut self,
        header: &RecordHeader,
        stored: &'b [u8],
    ) -> Result<&'b [u8], DecompressError> {
        self.check_sealed(header)?;
        let stored: &[u8] = if header.transform.seal.is_sealed() {
            let mut opened = std::mem::take(&mut self.opened);
            opened.clear();
            opened.extend_from_slice(stored);
            let result = self
                .key(header)
                .and_then(|k| k.open_payload(header, &mut opened));
            self.opened = opened;
            result?;
            &self.opened
        } else {
            stored
        };
        if header.transform.codec == Codec::Raw {
            return Ok(stored);
        }
        // `payload_bytes` is bounded by the header rules (64 MiB at most)
        // and by the label's chunk (checked before this).
        self.buf.resize(header.payload_bytes as usize, 0);
        codec::decompress(header.transform.codec, stored, &mut self.buf)?;
        Ok(&self.buf)
    }

    /// The file info of a header block `decode` accepted as `header`:
    /// opened first when sealed (None when it does not open).
    pub(super) fn file_info(&mut self, header: &RecordHeader, block: &[u8]) -> Option<FileInfo> {
        if !header.transform.seal.is_sealed() {
            self.check_sealed(header).ok()?;
            return RecordHeader::decode_info(block);
        }
        let mut copy = [0u8; BLOCK_BYTES];
        copy.copy_from_slice(block.get(..BLOCK_BYTES)?);
        let key = self.key(header).ok()?;
        key.open_info(header, RecordHeader::info_area_mut(&mut copy))
            .ok()?;
        RecordHeader::decode_info(&copy)
    }
}
