//! A backup run: labels, data (the engine's dispatcher and rings),
//! parity, catalog, finish; sets that span a library's cartridges; the
//! set's catalog composition and the run's report.

mod after;
mod catalog;
pub mod parity;
mod report;
pub mod resume;
mod run;
mod set;
pub mod span;

use crate::device::{Access, Device};
use crate::engine::ring::DeviceFault;
use crate::format::{MacKey, SetId, HEADER_BYTES};

pub use crate::engine::SetInput;
pub use report::{
    BackupError, BackupReport, DeviceEnd, DeviceReport, NoCatalogOn, NoCatalogWhy, ParitySummary,
};
pub use run::run_backup;
pub use set::{catalog_file, catalog_for, catalog_head, file_items, plan_set, PlanSetError};

/// Default tape block limit (`--tape-block`): header and payload of a
/// record within 1 MiB, inside st's default scatter/gather limit.
pub const TAPE_BLOCK_BYTES_DEFAULT: u32 = crate::device::tape::TAPE_BLOCK_BYTES_DEFAULT;
/// Smallest tape block pbio writes: a header and one 4 KiB payload block.
pub const TAPE_BLOCK_BYTES_MIN: u32 = 2 * HEADER_BYTES as u32;
/// Default records buffered ahead of a tape's one write (`--tape-buffer`).
pub const TAPE_BUFFER_RECORDS_DEFAULT: usize = 64;

/// The largest payload of one record on `dev`: the chunk, or on a device
/// with a block limit (tape: `tape_block_bytes` and the drive's own limit)
/// the largest power of two that fits one block together with its
/// header, so that records split on the same boundaries as the chunk.
pub fn record_payload_bytes_max(dev: &dyn Device, chunk_bytes: u32, tape_block_bytes: u32) -> u32 {
    if dev.access() == Access::Random {
        return chunk_bytes;
    }
    let block = tape_block_bytes
        .min(dev.block_bytes_max().unwrap_or(u32::MAX))
        .max(TAPE_BLOCK_BYTES_MIN);
    let room = block - HEADER_BYTES as u32;
    let payload = 1u32 << (31 - room.leading_zeros());
    payload.min(chunk_bytes)
}

pub struct BackupConfig {
    pub set_id: SetId,
    pub created_unix_ns: u64,
    pub chunk_bytes: u32,
    pub queue_depth: usize,
    /// Largest tape block (header + payload) to write (`--tape-block`).
    pub tape_block_bytes: u32,
    /// Records buffered ahead of each tape's write (`--tape-buffer`).
    pub tape_buffer_records: usize,
    /// Media bytes kept free on each device for the catalog (from `plan_set`).
    pub reserve_bytes: u64,
    /// Resubmissions of a failed write before the device is declared failed.
    pub write_retries: u32,
    /// Where device events go (progress display, `--json`); None: nowhere.
    pub events: Option<crossbeam_channel::Sender<Event>>,
    /// Idle devices take planned work from the busiest (`--balance time`),
    /// weighed by these rates (bytes per second per device; 0: unknown),
    /// which are then updated from what the devices write.
    pub steal_work: Option<Vec<u64>>,
    /// The set's MAC key (`--key`): labels and catalog carry keyed MACs
    /// (docs/FORMAT.md, "MAC"). None: the MACs are zero.
    pub mac_key: Option<MacKey>,
    /// `--compress`: each record's payload compressed on worker threads
    /// (stored raw where it does not shrink). None: raw.
    pub compression: Option<crate::format::codec::Compression>,
    /// `--encrypt`: the set's data key and label envelope; records and the
    /// catalog are sealed (docs/FORMAT.md, "amendment (encryption)").
    pub encryption: Option<crate::format::seal::SetEncryption>,
    /// `--parity M`: parity records per stripe (0: none), written after
    /// the data (`backup::parity`).
    pub parity: usize,
    /// Microseconds the devices have waited for the compression and
    /// encryption workers so far, added to live (`RingConfig::cpu_wait_us`).
    pub cpu_wait_us: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Something a harness or the progress display should hear about while
/// the run goes on. Byte counts are payload bytes.
#[derive(Clone, Debug)]
pub enum Event {
    /// The device filled up (ENOSPC, end of medium): it is healthy, what
    /// reached it stays, the rest of its work goes to the others.
    DeviceFull {
        device: u32,
        /// How it filled up (ENOSPC, no room left in its capacity), with
        /// its offset and errno; rendered to text only by the CLI.
        error: DeviceFault,
        durable_bytes: u64,
        redirected_bytes: u64,
    },
    /// The device failed (EIO, vanished): everything assigned to it is
    /// written again on the survivors.
    DeviceFailed {
        device: u32,
        /// What failed (a write, the label, the transport), typed.
        error: DeviceFault,
        redirected_bytes: u64,
    },
}
