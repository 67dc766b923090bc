//! What a restore or verify finds wrong without stopping (`Report::errors`):
//! typed, each naming the device, the file and the offset involved; the
//! CLI shows them as they display.

use crate::format::{FormatError, SetId};
use crate::media::MediaError;
use crate::units::shown_name;

use super::{tree, RestoreError};

/// One thing a restore or verify found wrong and went on past.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// A record on a device that is damaged or may not be written.
    #[error("device {device}: offset {offset}: {why}")]
    Record {
        device: String,
        offset: u64,
        why: RecordProblem,
    },
    /// The catalogs of a chain disagree on where a file's data is.
    #[error("file {}: set {set} does not hold its data as file id {file_id} (the catalogs of the chain disagree)", shown_name(.path))]
    ChainDisagrees {
        path: Vec<u8>,
        set: SetId,
        file_id: u32,
    },
    /// A file whose records do not hash to the catalog's digest.
    #[error("file {}: content digest mismatch (records missing, altered, substituted or duplicated on the devices: {})", shown_name(.path), .devices.join(", "))]
    Digest { path: Vec<u8>, devices: Vec<String> },
    /// A file with data on devices whose reading broke off.
    #[error("file {}: not restored completely: part of it is on {}, which could not be read (above)", shown_name(.path), .devices.join(", "))]
    OnUnread { path: Vec<u8>, devices: Vec<String> },
    /// A device whose reading broke off (what it held is missing).
    #[error(transparent)]
    Unread(RestoreError),
    /// An entry of the tree that could not be restored.
    #[error(transparent)]
    Tree(tree::TreeError),
    /// verify: a device's own catalog differs from the set's.
    #[error("device {device}: its catalog differs from the set's")]
    CatalogDiffers { device: String },
    /// verify: a device's own catalog cannot be read.
    #[error(transparent)]
    Catalog(MediaError),
    /// `--parity`: a stripe whose missing data could not be rebuilt,
    /// because this member of it did not check (damaged, altered, unread)
    /// and too few others did.
    #[error("device {device}: offset {offset}: cannot rebuild from parity: {why}")]
    Rebuild {
        device: String,
        offset: u64,
        why: String,
    },
}

/// What is wrong with one record read from a device.
#[derive(Debug, thiserror::Error)]
pub enum RecordProblem {
    #[error("damaged padding after the payload of the record at file offset {file_offset}")]
    Padding { file_offset: u64 },
    #[error("damaged record header: {0}")]
    Header(FormatError),
    #[error("record does not belong to this set's data")]
    NotThisSet,
    #[error("{0}: not written")]
    Refused(Refusal),
    #[error("file {} at file offset {file_offset}: payload checksum mismatch (stored {stored:#010x}, computed {computed:#010x})", shown_name(.path))]
    Checksum {
        path: Vec<u8>,
        file_offset: u64,
        stored: u32,
        computed: u32,
    },
    /// A compressed record whose stored bytes (good CRC) do not
    /// decompress to exactly its payload: a forgery or a writer bug.
    #[error("file {} at file offset {file_offset}: {why}: not written", shown_name(.path))]
    Decompress {
        path: Vec<u8>,
        file_offset: u64,
        why: crate::format::codec::DecompressError,
    },
    #[error("record of file {} at file offset {file_offset} ({payload_bytes} bytes) lies beyond the end of the restore target ({target_bytes} bytes): not written", shown_name(.path))]
    BeyondTarget {
        path: Vec<u8>,
        file_offset: u64,
        payload_bytes: u32,
        target_bytes: u64,
    },
}

/// Why a Data record of a set may not be written, checked against the
/// device's label and the set's catalog (`read::record_refusal`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("record says it is on device {record}, but this device's label says device {label}")]
    OtherDevice { record: u32, label: u32 },
    #[error("record payload of {payload_bytes} bytes is larger than the set's chunk ({chunk_bytes} bytes)")]
    LargerThanChunk {
        payload_bytes: u32,
        chunk_bytes: u32,
    },
    #[error("record names file id {file_id} not in the catalog")]
    UnknownFile { file_id: u32 },
    #[error("record of {} (file id {file_id}), which has no data in this set", shown_name(.path))]
    NoDataHere { path: Vec<u8>, file_id: u32 },
    #[error("record of file {} says the file has {record_bytes} bytes, the catalog {catalog_bytes}", shown_name(.path))]
    SizeDiffers {
        path: Vec<u8>,
        record_bytes: u64,
        catalog_bytes: u64,
    },
    #[error("record of file {} at file offset {file_offset} ({payload_bytes} bytes) lies outside the segments the catalog assigns to this device", shown_name(.path))]
    OutsideSegments {
        path: Vec<u8>,
        file_offset: u64,
        payload_bytes: u32,
    },
}
