//! What a ring reports: the records it made durable, its statistics, how
//! it ended, and the typed fault of a device that filled up or failed.

use std::path::PathBuf;
use std::sync::Arc;

use crate::media::MediaError;
use std::time::Duration;

/// A record that is durable on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordDone {
    pub file_id: u32,
    pub file_offset: u64,
    pub payload_bytes: u32,
    pub payload_crc: u32,
    /// BLAKE3 of the payload (the file digest's record entry).
    pub payload_hash: [u8; 32],
    /// Media offset of the record's header (stripes of `--parity` name it).
    pub position: u64,
    /// Its `sequence` on the device (data and parity records are numbered
    /// in one count).
    pub sequence: u64,
    /// The payload's bytes as stored (compressed: fewer than
    /// `payload_bytes`; headers and padding not counted).
    pub stored_bytes: u32,
}

/// A file range that is durable on this device, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    pub file: u32,
    pub offset: u64,
    pub length: u64,
    /// Media offset of its first record (where it would be, for a range of holes).
    pub position: u64,
    pub records: u32,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct RingStats {
    pub payload_bytes: u64,
    pub media_bytes: u64,
    pub records: u64,
    pub short_reads: u64,
    pub short_writes: u64,
    pub retries: u64,
    /// Payload bytes written from the very buffer the source read landed in.
    pub payload_bytes_zero_copy: u64,
    /// Memory-mapped devices: payload bytes the source read put straight
    /// into the device's mapping (no buffer, no write of their own).
    pub payload_bytes_in_place: u64,
    /// Reads served with O_DIRECT vs buffered.
    pub reads_direct: u64,
    pub reads_buffered: u64,
    /// Sequential devices: times the device had nothing ready to write
    /// while the sources still had data, and how long it waited in all.
    pub underruns: u64,
    pub underrun_time: Duration,
    /// Network devices: lost connections that a reconnect repaired.
    pub reconnects: u32,
    /// Payload bytes written as zeros because the file had shrunk since
    /// the walk (the file is reported as changed).
    pub zero_filled_bytes: u64,
    /// `--compress`: CPU time the workers spent on this device's records
    /// (hash, compression, CRC), and the time the ring had nothing to do
    /// but wait for them (the device waiting for the CPU).
    pub transform_cpu: Duration,
    pub transform_wait: Duration,
    pub elapsed: Duration,
}

impl RingStats {
    /// Add what a later run on the same device did (a volume that took
    /// more work after its queue ran dry, `backup::span`).
    pub fn add(&mut self, later: &RingStats) {
        self.payload_bytes += later.payload_bytes;
        self.media_bytes += later.media_bytes;
        self.records += later.records;
        self.short_reads += later.short_reads;
        self.short_writes += later.short_writes;
        self.retries += later.retries;
        self.payload_bytes_zero_copy += later.payload_bytes_zero_copy;
        self.payload_bytes_in_place += later.payload_bytes_in_place;
        self.reads_direct += later.reads_direct;
        self.reads_buffered += later.reads_buffered;
        self.underruns += later.underruns;
        self.underrun_time += later.underrun_time;
        // The device's count so far, not the run's.
        self.reconnects = self.reconnects.max(later.reconnects);
        self.zero_filled_bytes += later.zero_filled_bytes;
        self.transform_cpu += later.transform_cpu;
        self.transform_wait += later.transform_wait;
        self.elapsed += later.elapsed;
    }
}

/// How the device ended its run.
#[derive(Debug)]
pub enum RingEnd {
    Complete,
    /// Filled up: `error` says how (ENOSPC, or no room left in its capacity).
    Full {
        error: DeviceFault,
    },
    /// Failed: not to be trusted.
    Failed {
        error: DeviceFault,
    },
}

/// What stopped a device: the fault, on which device. Shown as the fault
/// alone (whoever reports it names the device). Cloned into the run's
/// events (`backup::Event`) and kept in its outcome.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{fault}")]
pub struct DeviceFault {
    pub device: PathBuf,
    pub fault: Fault,
}

/// Why a device stopped taking records.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// A record write failed (ENOSPC: the medium is full).
    #[error("write at offset {offset}: {error}")]
    Write { offset: u64, error: std::io::Error },
    /// A record write still failed after `retries` resubmissions.
    #[error("write at offset {offset}: {error} (after {retries} retries)")]
    WriteRetried {
        offset: u64,
        error: std::io::Error,
        retries: u32,
    },
    /// The device's usable capacity (its catalog reserve kept) is used up.
    #[error("no room left for a {record_bytes}-byte record at offset {offset} (usable capacity {usable_bytes} bytes)")]
    NoRoom {
        record_bytes: u64,
        offset: u64,
        usable_bytes: u64,
    },
    /// A mapped device could not make a record durable.
    #[error("persist at offset {offset} ({bytes} bytes): {error}")]
    Persist {
        offset: u64,
        bytes: u64,
        error: std::io::Error,
    },
    /// A sequential device's block was cut short: the end of the medium.
    #[error("block {block}: short write ({written} of {total} bytes): end of medium")]
    ShortBlock {
        block: u64,
        written: u32,
        total: u32,
    },
    /// A sequential device's block write failed.
    #[error("block {block}: {error}")]
    Block { block: u64, error: std::io::Error },
    /// The ring itself failed.
    #[error("io_uring_enter: {0}")]
    Enter(std::io::Error),
    /// The device's pipelined connection is beyond saving.
    #[error("{0}")]
    Transport(crate::device::TransportError),
    /// The device's label could not be written: no ring ran.
    #[error("{0}")]
    Label(Arc<MediaError>),
    /// The device failed after its data was written: a parity record, the
    /// read-back of its data for a stripe, or its catalog (`--parity`:
    /// its data is written again on the survivors).
    #[error("after its data: {0}")]
    After(Arc<MediaError>),
}

/// A copy of an I/O error that keeps what callers look at: the errno (and
/// so its kind and text) or, without one, the kind and the message.
fn copy_io(error: &std::io::Error) -> std::io::Error {
    match error.raw_os_error() {
        Some(errno) => std::io::Error::from_raw_os_error(errno),
        None => std::io::Error::new(error.kind(), error.to_string()),
    }
}

impl Clone for Fault {
    fn clone(&self) -> Fault {
        match self {
            Fault::Write { offset, error } => Fault::Write {
                offset: *offset,
                error: copy_io(error),
            },
            Fault::WriteRetried {
                offset,
                error,
                retries,
            } => Fault::WriteRetried {
                offset: *offset,
                error: copy_io(error),
                retries: *retries,
            },
            Fault::NoRoom {
                record_bytes,
                offset,
                usable_bytes,
            } => Fault::NoRoom {
                record_bytes: *record_bytes,
                offset: *offset,
                usable_bytes: *usable_bytes,
            },
            Fault::Persist {
                offset,
                bytes,
                error,
            } => Fault::Persist {
                offset: *offset,
                bytes: *bytes,
                error: copy_io(error),
            },
            Fault::ShortBlock {
                block,
                written,
                total,
            } => Fault::ShortBlock {
                block: *block,
                written: *written,
                total: *total,
            },
            Fault::Block { block, error } => Fault::Block {
                block: *block,
                error: copy_io(error),
            },
            Fault::Enter(error) => Fault::Enter(copy_io(error)),
            Fault::Transport(why) => Fault::Transport(why.clone()),
            Fault::Label(error) => Fault::Label(Arc::clone(error)),
            Fault::After(error) => Fault::After(Arc::clone(error)),
        }
    }
}

impl Fault {
    /// The errno of the failed operation, where one is known.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Fault::Write { error, .. }
            | Fault::WriteRetried { error, .. }
            | Fault::Persist { error, .. }
            | Fault::Block { error, .. }
            | Fault::Enter(error) => error.raw_os_error(),
            Fault::ShortBlock { .. } => Some(libc::ENOSPC),
            Fault::Label(error) | Fault::After(error) => match error.as_ref() {
                MediaError::Io { error, .. } => error.raw_os_error(),
                _ => None,
            },
            Fault::NoRoom { .. } | Fault::Transport(_) => None,
        }
    }

    /// The media offset (a sequential device: the block number) where it happened.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Fault::Write { offset, .. }
            | Fault::WriteRetried { offset, .. }
            | Fault::NoRoom { offset, .. }
            | Fault::Persist { offset, .. } => Some(*offset),
            Fault::ShortBlock { block, .. } | Fault::Block { block, .. } => Some(*block),
            Fault::Label(error) | Fault::After(error) => match error.as_ref() {
                MediaError::Io { offset, .. } | MediaError::Format { offset, .. } => Some(*offset),
                _ => None,
            },
            Fault::Enter(_) | Fault::Transport(_) => None,
        }
    }
}

#[derive(Debug)]
pub struct RingOutcome {
    pub end: RingEnd,
    /// Durable records (for a failed device: the records of its copies).
    pub records: Vec<RecordDone>,
    /// `--parity`: the parity records durable on it, in media order
    /// (before `data_end`, among its data records).
    pub parity: Vec<super::ParityDone>,
    pub placed: Vec<Placed>,
    /// Media offset just past the last durable record.
    pub data_end: u64,
    /// Payload bytes handed back to the dispatcher.
    pub redirected_bytes: u64,
    pub stats: RingStats,
}

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("device {device}: {op}: {error}")]
    Setup {
        device: String,
        op: &'static str,
        error: std::io::Error,
    },
    #[error("source {path}: {op} at offset {offset}: {error}")]
    Source {
        /// Escaped for the terminal (`units::shown_path`).
        path: String,
        op: &'static str,
        offset: u64,
        error: std::io::Error,
    },
    /// The walk's entries could not be read back from their temporary file.
    #[error(transparent)]
    Entries(#[from] crate::source::spill::ReadBackError),
}
