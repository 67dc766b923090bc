//! `pbio scan`: recover the records of a device with no usable label or
//! catalog (a crashed run, an overwritten catalog), by reading every block
//! and keeping what decodes and checks (Bareos `bscan` / `bls` style).

use crate::device::Device;
use crate::engine::stream::{self, Flow, Item, StreamError};
use crate::format::{RecordHeader, RecordKind, SetId, HEADER_BYTES, PAYLOAD_BYTES_MAX};

/// One record found by a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub position: u64,
    pub header: RecordHeader,
    /// Whether the payload matches the CRC in its header.
    pub payload_ok: bool,
}

#[derive(Debug, Default)]
pub struct ScanReport {
    pub set_id: Option<SetId>,
    pub records: Vec<Found>,
    /// Blocks that did not decode as a record header (skipped one block at a time).
    pub bad_blocks: u64,
    /// Whether an End record of the set was found.
    pub end_found: bool,
}

/// Scan `dev` from the first record to its end (or to the set's End
/// record). `set_id` selects one set; when None, the first valid record's
/// set is taken and records of any other set are skipped.
pub fn scan(dev: &dyn Device, mut set_id: Option<SetId>) -> Result<ScanReport, StreamError> {
    let mut report = ScanReport::default();
    // Records of any chunk size this format allows: a window that holds the largest.
    let chunk_max = PAYLOAD_BYTES_MAX.min(16 << 20);
    stream::stream::<StreamError>(
        dev,
        HEADER_BYTES as u64,
        dev.capacity_bytes(),
        chunk_max,
        |item| {
            match item {
                Item::Bad { .. } => report.bad_blocks += 1,
                Item::Record {
                    position,
                    header,
                    payload,
                } => {
                    let wanted = *set_id.get_or_insert(header.set_id);
                    if header.set_id != wanted {
                        report.bad_blocks += 1;
                        return Ok(Flow::Continue);
                    }
                    if header.kind == RecordKind::End {
                        report.end_found = true;
                        return Ok(Flow::Stop);
                    }
                    report.records.push(Found {
                        position,
                        header,
                        payload_ok: crate::format::crc32c(payload) == header.payload_crc,
                    });
                }
            }
            Ok(Flow::Continue)
        },
    )?;
    report.set_id = set_id;
    Ok(report)
}
