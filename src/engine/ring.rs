//! The device ring: one thread and one io_uring per device.
//!
//! For each record: a `ReadFixed` from the source straight into the payload
//! area of a registered buffer; on its completion the payload's CRC32C is
//! computed (one pass over bytes already in cache), the header is filled in
//! place in the 4 KiB in front of the payload, and one `WriteFixed` of
//! header+payload goes to the device. pbio never copies a payload byte on
//! this path: the bytes the kernel read are the bytes the kernel writes.
//! Read and write are not linked with IOSQE_IO_LINK because the CPU must run
//! between them (the header carries the payload CRC), and a short read at a
//! file's end would break the link anyway (IO-NOTES.md).
//!
//! The loop follows TigerBeetle's four steps: submit what is queued, copy
//! completions out, act on them, repeat. `user_data` is the slot index.
//!
//! Sequential devices (tape) take the same records with a different
//! schedule: every slot is a read ahead (a watermark buffer of
//! `queue_depth` records, mbuffer's idea), a record whose read completed
//! waits `Ready`, and exactly one block write is in flight, always the
//! next record in media order, at the offset the device's
//! `before_block_write` hands out. The moments the drive had nothing to
//! write while the sources still had data are counted as underruns.
//!
//! Memory-mapped devices take the same records without a write:
//! the read is a plain `Read` (not `ReadFixed`: the mapping is not a
//! registered buffer) from the source straight into the mapping at the
//! record's position, behind the 4 KiB where the header goes; on its
//! completion the CRC is computed and the header written in place, and the
//! device's `persist` makes the record's range durable (cache-line flushes
//! and a fence on DAX, msync otherwise). The payload's bytes land once, in
//! their final place on the device.
//!
//! When the device fills up or fails, the ring stops taking work, reaps
//! what is in flight, and works out exactly what is durable: the longest
//! prefix of its records (in media order) whose writes all completed. What
//! lies beyond goes back to the dispatcher. A full device keeps its prefix
//! (shortened, when the medium itself ran out of space, to leave room for
//! the catalog in blocks already written); a failed device's work all goes
//! back, and its prefix is only listed as a copy.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::dispatch::{DeviceState, Dispatcher, Next, WorkItem};
use super::SetInput;
use crate::device::{Access, BlockIo, DataPath, Device, ErrorClass, Mapping, Transport};
use crate::format::{round_up_block, FileInfo, RecordHeader, RecordKind, SetId, HEADER_BYTES};
use crate::io::{self, BufferPool, Lease, Sqe, Uring};

/// Most records in flight per device.
pub const QUEUE_DEPTH_MAX: usize = 256;
/// Retries of an operation that returned EINTR/EAGAIN before giving up.
const RETRIES_TRANSIENT_MAX: u32 = 1000;

/// A record that is durable on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordDone {
    pub file_id: u32,
    pub file_offset: u64,
    pub payload_bytes: u32,
    pub payload_crc: u32,
    /// BLAKE3 of the payload (the file digest's record entry).
    pub payload_hash: [u8; 32],
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
    pub elapsed: Duration,
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
/// alone (whoever reports it names the device).
#[derive(Debug, thiserror::Error)]
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
    Transport(String),
    /// The device's label could not be written: no ring ran.
    #[error("{0}")]
    Label(String),
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
            Fault::NoRoom { .. } | Fault::Transport(_) | Fault::Label(_) => None,
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
            Fault::Enter(_) | Fault::Transport(_) | Fault::Label(_) => None,
        }
    }
}

#[derive(Debug)]
pub struct RingOutcome {
    pub end: RingEnd,
    /// Durable records (for a failed device: the records of its copies).
    pub records: Vec<RecordDone>,
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
}

/// What `next_record` found.
enum Record {
    /// A record bound to this slot, ready to be read.
    Slot(usize),
    /// No work now; other devices may still hand some back.
    Wait,
    /// No more work for this device.
    Exhausted,
}

/// Why the loop stopped early.
enum Stop {
    /// The medium ran out of space (`physical`) or the device's usable
    /// capacity is used up (not physical: the catalog reserve is intact).
    Full {
        error: Fault,
        physical: bool,
    },
    Failed {
        error: Fault,
    },
    Source(RingError),
}

struct Source {
    file: std::fs::File,
    direct: bool,
    path: std::path::PathBuf,
    /// What every record of this file says about it.
    info: FileInfo,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Free,
    Reading,
    /// Sequential devices: read and checksummed, waiting for its turn.
    Ready,
    Writing,
}

struct Slot {
    /// The slot's buffer (a record's header and payload), registered.
    lease: Lease,
    phase: Phase,
    source: Option<Rc<Source>>,
    /// Index into `Ring::gens`.
    gen: usize,
    read_bytes: u32,
    written_bytes: u32,
    retries: u32,
    file_size: u64,
}

/// One generated record, in media order.
struct Gen {
    taken: u32,
    file_offset: u64,
    payload_bytes: u32,
    position: u64,
    payload_crc: u32,
    payload_hash: [u8; 32],
    /// `payload_hash` is set (false while the hasher has it).
    hashed: bool,
    done: bool,
}

/// A record's payload handed to the ring's hasher thread.
struct HashJob {
    gen: usize,
    payload: *const u8,
    payload_bytes: usize,
}

// SAFETY: the payload lies in the ring's buffer pool (or a device mapping),
// which outlives the hasher thread (joined at the end of `Ring::run`); the
// bytes are not written until the hash is back: a slot is freed for reuse
// only by `complete_record`, which waits for its hash, and `finish` (which
// reads into slot 0 again) runs after every hash is back.
unsafe impl Send for HashJob {}

/// The per-record BLAKE3 runs on a thread of its own, so that the ring
/// thread goes on submitting I/O meanwhile: payloads go out as jobs when
/// their header is filled, hashes come back by gen.
struct Hasher {
    jobs: crossbeam_channel::Sender<HashJob>,
    done: crossbeam_channel::Receiver<(usize, [u8; 32])>,
    pending: usize,
}

/// A work item this device took.
struct Taken {
    item: WorkItem,
    first_gen: usize,
    gens: u32,
    /// Position on media when it was opened.
    position: u64,
    /// File offset up to which records have been generated.
    generated_until: u64,
    /// Every record of the item has been generated.
    complete: bool,
}

/// Generates the records of the current item.
struct Cursor {
    taken: u32,
    source: Rc<Source>,
    /// Data ranges of the item still to emit, as (start, end), ascending.
    ranges: Vec<(u64, u64)>,
    range_index: usize,
    next_offset: u64,
    file_size: u64,
}

pub struct RingConfig {
    pub device_index: u32,
    pub set_id: SetId,
    pub chunk_bytes: u32,
    /// Largest payload of one record on this device: `chunk_bytes`, or
    /// less where a record must fit one tape block. A power of two.
    pub record_payload_bytes_max: u32,
    /// Records in flight (random access), or records buffered ahead of
    /// the one write in flight (sequential).
    pub queue_depth: usize,
    /// Media bytes kept free at the end for the catalog and End record.
    pub reserve_bytes: u64,
    /// Resubmissions of a write that failed with a device error before
    /// the device is declared failed.
    pub write_retries: u32,
}

pub struct Ring<'a> {
    device: &'a dyn Device,
    config: &'a RingConfig,
    ring: Uring,
    slots: Vec<Slot>,
    gens: Vec<Gen>,
    taken: Vec<Taken>,
    /// Media offset of the next record.
    position: u64,
    /// Records may not end beyond this.
    usable_bytes: u64,
    stats: RingStats,
    progress: &'a AtomicU64,
    /// The device is written one block at a time, in media order.
    sequential: bool,
    /// Sequential: the gen whose block is written next.
    next_write: usize,
    /// Sequential: the slot whose write is in flight (or held).
    write_slot: Option<usize>,
    /// Sequential: a completed write that only counts from an instant on
    /// (the device's simulated speed): (slot, result, instant).
    held: Option<(usize, i32, Instant)>,
    /// Sequential: since when the device has had nothing to write.
    idle_since: Option<Instant>,
    /// Memory-mapped device: records are read into it in place.
    mapping: Option<Mapping>,
    /// Pipelined device: record writes are requests of its transport.
    transport: Option<Box<dyn Transport + 'a>>,
    /// Transport completions, reused.
    transport_done: Vec<(u64, i32)>,
    transport_sqes: Vec<Sqe>,
    /// Hashes payloads off the ring thread while `run` runs.
    hasher: Option<Hasher>,
}

impl<'a> Ring<'a> {
    pub fn new(
        device: &'a dyn Device,
        config: &'a RingConfig,
        progress: &'a AtomicU64,
    ) -> Result<Ring<'a>, RingError> {
        assert!((1..=QUEUE_DEPTH_MAX).contains(&config.queue_depth));
        assert!((config.chunk_bytes as usize).is_multiple_of(HEADER_BYTES));
        assert!(config.record_payload_bytes_max.is_power_of_two());
        assert!((config.record_payload_bytes_max as usize).is_multiple_of(HEADER_BYTES));
        assert!(config.record_payload_bytes_max <= config.chunk_bytes);
        let setup_err = |op, error| RingError::Setup {
            device: device.path().display().to_string(),
            op,
            error,
        };
        let (mapping, transport) = match device.data_path() {
            DataPath::Descriptor => (None, None),
            DataPath::Mapped(m) => (Some(m), None),
            DataPath::Pipelined(t) => (None, Some(t)),
        };
        assert!(
            mapping.is_none() || device.access() == Access::Random,
            "a memory-mapped device is random access"
        );
        let entries = config.queue_depth as u32 + transport.as_ref().map_or(0, |t| t.entries_max());
        let mut ring = Uring::new(entries).map_err(|e| setup_err("io_uring setup", e))?;
        let pool = BufferPool::new(
            config.queue_depth,
            HEADER_BYTES + config.record_payload_bytes_max as usize,
        );
        ring.register_buffers(&pool)
            .map_err(|e| setup_err("register buffers", e))?;
        let slots = pool
            .lease_all()
            .into_iter()
            .map(|lease| Slot {
                lease,
                phase: Phase::Free,
                source: None,
                gen: 0,
                read_bytes: 0,
                written_bytes: 0,
                retries: 0,
                file_size: 0,
            })
            .collect();
        Ok(Ring {
            device,
            config,
            ring,
            slots,
            gens: Vec::new(),
            taken: Vec::new(),
            position: HEADER_BYTES as u64,
            usable_bytes: device.capacity_bytes().saturating_sub(config.reserve_bytes),
            stats: RingStats::default(),
            progress,
            sequential: device.access() == Access::Sequential,
            next_write: 0,
            write_slot: None,
            held: None,
            idle_since: None,
            mapping,
            transport,
            transport_done: Vec::new(),
            transport_sqes: Vec::new(),
            hasher: None,
        })
    }

    /// Set `gens[gen].payload_hash` from the hasher, waiting for it.
    fn await_hash(&mut self, gen: usize) {
        while !self.gens[gen].hashed {
            self.receive_hash();
        }
    }

    /// Wait for every hash still with the hasher.
    fn await_all_hashes(&mut self) {
        while self.hasher.as_ref().is_some_and(|h| h.pending > 0) {
            self.receive_hash();
        }
    }

    fn receive_hash(&mut self) {
        let h = self
            .hasher
            .as_mut()
            .expect("a hash is pending only with a hasher");
        let (gen, hash) = h
            .done
            .recv()
            .expect("the hasher thread lives as long as the ring runs");
        h.pending -= 1;
        self.gens[gen].payload_hash = hash;
        self.gens[gen].hashed = true;
    }

    /// Payload bytes that still fit (a conservative estimate: every record
    /// pays a header and block rounding).
    fn room_bytes(&self) -> u64 {
        let media = self.usable_bytes.saturating_sub(self.position);
        let chunk = self.config.record_payload_bytes_max as u64;
        let per_record = chunk + HEADER_BYTES as u64;
        (media / per_record) * chunk + (media % per_record).saturating_sub(2 * HEADER_BYTES as u64)
    }

    /// Write the work the dispatcher gives this device, from offset 4096
    /// (after the label). Full and failed devices are outcomes, not errors;
    /// an error is a source that cannot be read, or a ring that cannot be set up.
    pub fn run(
        mut self,
        input: &SetInput,
        dispatcher: &Dispatcher,
    ) -> Result<RingOutcome, RingError> {
        let started = Instant::now();
        let index = self.config.device_index as usize;
        let stop = std::thread::scope(|scope| {
            let (jobs, job_queue) = crossbeam_channel::unbounded::<HashJob>();
            let (done_tx, done) = crossbeam_channel::unbounded();
            let hasher = std::thread::Builder::new()
                .name(format!("pbio-hash{index}"))
                .spawn_scoped(scope, move || {
                    for job in job_queue {
                        // SAFETY: see `HashJob`: the bytes stay as they are
                        // until this hash is received.
                        let payload =
                            unsafe { std::slice::from_raw_parts(job.payload, job.payload_bytes) };
                        if done_tx
                            .send((job.gen, crate::format::payload_hash(payload)))
                            .is_err()
                        {
                            break;
                        }
                    }
                });
            // Without a thread (it could not be started) hashing is inline.
            if hasher.is_ok() {
                self.hasher = Some(Hasher {
                    jobs,
                    done,
                    pending: 0,
                });
            }
            let stop = if self.sequential {
                self.run_loop_sequential(input, dispatcher)
            } else {
                self.run_loop(input, dispatcher)
            };
            let stop = match stop {
                Ok(()) => None,
                Err(stop) => {
                    self.drain();
                    Some(stop)
                }
            };
            // Every payload hashed before the buffers are reused (`finish`
            // reads records back) and before the outcome is built; the
            // hasher ends when its queue is dropped.
            self.await_all_hashes();
            self.hasher = None;
            stop
        });
        let device = self.device.path().to_path_buf();
        let outcome = match stop {
            None => {
                dispatcher.finish(index);
                self.finish(RingEnd::Complete, None, dispatcher, false)
            }
            Some(Stop::Full { error, physical }) => {
                let end = RingEnd::Full {
                    error: DeviceFault {
                        device,
                        fault: error,
                    },
                };
                self.finish(end, Some(DeviceState::Full), dispatcher, physical)
            }
            Some(Stop::Failed { error }) => {
                let end = RingEnd::Failed {
                    error: DeviceFault {
                        device,
                        fault: error,
                    },
                };
                self.finish(end, Some(DeviceState::Failed), dispatcher, false)
            }
            Some(Stop::Source(e)) => {
                // The set cannot be complete: stop everyone.
                dispatcher.abort();
                dispatcher.finish(index);
                return Err(e);
            }
        };
        let mut outcome = outcome;
        outcome.stats.elapsed = started.elapsed();
        outcome.stats.reconnects = self.device.reconnects();
        Ok(outcome)
    }

    /// Work out what is durable, hand the rest back, and build the outcome.
    fn finish(
        &mut self,
        end: RingEnd,
        retire: Option<DeviceState>,
        dispatcher: &Dispatcher,
        physical_full: bool,
    ) -> RingOutcome {
        let failed = retire == Some(DeviceState::Failed);
        // The durable prefix.
        let mut prefix = self
            .gens
            .iter()
            .position(|g| !g.done)
            .unwrap_or(self.gens.len());
        // A sequential device wrote one block at a time: the write that
        // hit the end of the medium wrote nothing, and its catalog goes
        // into the room after early warning, so nothing is read back or
        // given up here.
        let random_full = physical_full && !self.sequential;
        if random_full {
            prefix = self.verified_prefix(prefix);
        }
        let pos_of = |k: usize, gens: &[Gen], position: u64| {
            gens.get(k).map(|g| g.position).unwrap_or(position)
        };
        let prefix_end = pos_of(prefix, &self.gens, self.position);
        // The medium itself is full: give back records at the tail so the
        // catalog fits in blocks that are already allocated.
        let kept = if random_full {
            (0..=prefix)
                .rev()
                .find(|&k| {
                    pos_of(k, &self.gens, self.position) + self.config.reserve_bytes <= prefix_end
                })
                .unwrap_or(0)
        } else {
            prefix
        };
        let data_end_bytes = pos_of(kept, &self.gens, self.position);
        // The stats describe what stays on the device.
        self.stats.records = kept as u64;
        self.stats.payload_bytes = self.gens[..kept]
            .iter()
            .map(|g| g.payload_bytes as u64)
            .sum();
        self.stats.media_bytes = data_end_bytes - HEADER_BYTES as u64;
        // Positions as the catalog gives them: media offsets, or on a
        // sequential device logical object numbers (the label is object
        // 0, record k is object k + 1, the filemark after the data is
        // object `data_end`).
        let data_end = if self.sequential {
            kept as u64 + 1
        } else {
            data_end_bytes
        };
        let mut placed = Vec::with_capacity(self.taken.len());
        let mut give_back = Vec::new();
        for t in &self.taken {
            let first_released = (t.first_gen..t.first_gen + t.gens as usize).find(|&g| g >= kept);
            let done_until = match first_released {
                Some(g) => self.gens[g].file_offset,
                None if t.complete => t.item.end(),
                None => t.generated_until,
            };
            let kept_records = match first_released {
                Some(g) => (g - t.first_gen) as u32,
                None => t.gens,
            };
            let position = if self.sequential {
                (t.first_gen as u64 + 1).min(data_end)
            } else if t.gens > 0 {
                self.gens[t.first_gen].position
            } else {
                t.position.min(data_end)
            };
            if done_until > t.item.offset {
                placed.push(Placed {
                    file: t.item.file,
                    offset: t.item.offset,
                    length: done_until - t.item.offset,
                    position,
                    records: kept_records,
                });
            }
            let rest_from = if failed { t.item.offset } else { done_until };
            if rest_from < t.item.end() {
                give_back.push(WorkItem {
                    file: t.item.file,
                    offset: rest_from,
                    length: t.item.end() - rest_from,
                });
            }
        }
        let mut redirected_bytes: u64 = give_back.iter().map(|i| i.length).sum();
        if let Some(state) = retire {
            dispatcher.give_back(&give_back);
            redirected_bytes +=
                dispatcher.retire(self.config.device_index as usize, state, redirected_bytes);
        }
        let records = self.gens[..kept]
            .iter()
            .map(|g| RecordDone {
                file_id: self.taken[g.taken as usize].item.file,
                file_offset: g.file_offset,
                payload_bytes: g.payload_bytes,
                payload_crc: g.payload_crc,
                payload_hash: g.payload_hash,
            })
            .collect();
        RingOutcome {
            end,
            records,
            placed,
            data_end,
            redirected_bytes,
            stats: self.stats,
        }
    }

    /// When the medium ran out of space, a write that crossed the point
    /// where it filled may have been reported complete with its tail lost
    /// (the loop driver does this over a full tmpfs). Any of the writes in
    /// flight around that moment may be such a write, so read back the
    /// records of the last `queue_depth` record sizes before the end of
    /// the prefix and keep the prefix only up to the first that does not check.
    fn verified_prefix(&mut self, prefix: usize) -> usize {
        let window =
            self.config.queue_depth as u64 * (HEADER_BYTES as u64 + self.config.chunk_bytes as u64);
        let end = self
            .gens
            .get(prefix)
            .map(|g| g.position)
            .unwrap_or(self.position);
        let from = self.gens[..prefix].partition_point(|g| g.position + window < end);
        for k in from..prefix {
            let (position, payload_bytes, crc) = {
                let g = &self.gens[k];
                (g.position, g.payload_bytes, g.payload_crc)
            };
            let media = HEADER_BYTES + round_up_block(payload_bytes as u64) as usize;
            let buffer = &mut self.slots[0].lease.bytes_mut()[..media];
            let good = match crate::media::read_at(self.device, buffer, position) {
                Ok(n) if n == media => {
                    RecordHeader::decode(&buffer[..HEADER_BYTES]).is_ok()
                        && crate::format::crc32c(
                            &buffer[HEADER_BYTES..HEADER_BYTES + payload_bytes as usize],
                        ) == crc
                }
                _ => false,
            };
            if !good {
                return k;
            }
        }
        prefix
    }

    /// After a stop: reap every operation still in flight (so that no
    /// kernel access to the pool outlives it), noting writes that completed.
    fn drain(&mut self) {
        let mut completions = Vec::new();
        while self.ring.in_flight() > 0 || self.transport_waiting() {
            if self.transport_waiting() {
                if let Err(stop) = self.pump_transport() {
                    // The transport cannot go on: its requests stay without
                    // replies, and what it has in flight is reaped below.
                    let why = match stop {
                        Stop::Failed { error } => error.to_string(),
                        _ => "stopped".to_string(),
                    };
                    if let Some(transport) = self.transport.as_mut() {
                        transport.abort(&why);
                    }
                    continue;
                }
            }
            if self.ring.in_flight() == 0 {
                // Nothing of ours in flight, and the transport is not waiting.
                break;
            }
            // The ring itself is broken: nothing more can be reaped.
            if self.ring.turn(&mut completions).is_err() {
                return;
            }
            for &(user_data, result) in &completions {
                if user_data & io::USER_DATA_TRANSPORT != 0 {
                    let mut done = Vec::new();
                    // A failing transport is aborted by on_transport_cqe; reaping goes on.
                    let _ = self.on_transport_cqe(user_data, result, &mut done);
                    for (slot, result) in done {
                        let slot = slot as usize;
                        if result == self.record_media_bytes(slot) as i32 {
                            self.complete_record(slot);
                        }
                        self.slots[slot].phase = Phase::Free;
                        self.slots[slot].source = None;
                    }
                    continue;
                }
                let slot = user_data as usize;
                if self.sequential && self.slots[slot].phase == Phase::Writing {
                    // Through the device's hook like any block write; its
                    // simulated time no longer matters.
                    let done = self.device.after_block_write(result);
                    self.held = Some((slot, done.result, Instant::now()));
                    continue;
                }
                let s = &mut self.slots[slot];
                if s.phase == Phase::Writing && result > 0 {
                    s.written_bytes += result as u32;
                    let total = self.record_media_bytes(slot);
                    if self.slots[slot].written_bytes == total {
                        self.complete_record(slot);
                    }
                }
                self.slots[slot].phase = Phase::Free;
                self.slots[slot].source = None;
            }
        }
        if let Some((slot, result, _)) = self.held.take() {
            self.write_slot = None;
            if result == self.record_media_bytes(slot) as i32 {
                self.complete_record(slot);
                self.next_write += 1;
            }
        }
        for s in self.slots.iter_mut() {
            if s.phase != Phase::Reading {
                s.phase = Phase::Free;
                s.source = None;
            }
        }
    }

    /// Whether the transport still expects replies it can get.
    fn transport_waiting(&self) -> bool {
        self.transport
            .as_ref()
            .is_some_and(|t| t.outstanding() > 0 && t.alive())
    }

    /// Push the SQEs the transport wants submitted (a linked pair together).
    fn pump_transport(&mut self) -> Result<(), Stop> {
        let Some(transport) = self.transport.as_mut() else {
            return Ok(());
        };
        let mut sqes = std::mem::take(&mut self.transport_sqes);
        let wanted = transport.sqes(&mut sqes);
        let mut outcome = wanted.map_err(|error| Stop::Failed {
            error: Fault::Transport(error),
        });
        if let Err(e) = self.ring.push_all(&mut sqes) {
            outcome = outcome.and(Err(Stop::Failed {
                error: Fault::Enter(e),
            }));
        }
        sqes.clear();
        self.transport_sqes = sqes;
        outcome
    }

    /// A completion of the transport's; a connection beyond saving fails the device.
    fn on_transport_cqe(
        &mut self,
        user_data: u64,
        result: i32,
        done: &mut Vec<(u64, i32)>,
    ) -> Result<(), Stop> {
        let transport = self
            .transport
            .as_mut()
            .expect("transport completion without a transport");
        transport.on_cqe(user_data, result, done).map_err(|error| {
            transport.abort(&error);
            Stop::Failed {
                error: Fault::Transport(error),
            }
        })
    }

    fn record_media_bytes(&self, slot: usize) -> u32 {
        let g = &self.gens[self.slots[slot].gen];
        HEADER_BYTES as u32 + round_up_block(g.payload_bytes as u64) as u32
    }

    fn run_loop(&mut self, input: &SetInput, dispatcher: &Dispatcher) -> Result<(), Stop> {
        let mut cursor: Option<Cursor> = None;
        let mut exhausted = false;
        let mut inflight = 0usize;
        let mut completions: Vec<(u64, i32)> = Vec::with_capacity(self.slots.len());
        loop {
            // 1. Fill free slots with new records and queue their reads.
            // Only a ring with nothing in flight waits for shared work: one
            // with writes in flight must go on reaping them (one may find
            // the medium full and hand work back), and counts as working.
            while inflight < self.slots.len() && !exhausted {
                match self.next_record(&mut cursor, input, dispatcher, inflight == 0)? {
                    Record::Slot(slot) => {
                        self.submit_read(slot)?;
                        inflight += 1;
                    }
                    Record::Wait => break,
                    Record::Exhausted => exhausted = true,
                }
            }
            if inflight == 0 && self.ring.in_flight() == 0 {
                return Ok(());
            }
            self.pump_transport()?;
            // 2. Submit and wait for at least one completion; 3. copy
            // completions out before acting on them.
            self.ring.turn(&mut completions).map_err(|e| Stop::Failed {
                error: Fault::Enter(e),
            })?;
            // 4. Act.
            for &(user_data, result) in &completions {
                if user_data & io::USER_DATA_TRANSPORT != 0 {
                    let mut done = std::mem::take(&mut self.transport_done);
                    let acted = self.on_transport_cqe(user_data, result, &mut done);
                    let mut outcome = acted;
                    for &(slot, result) in &done {
                        if outcome.is_ok() {
                            match self.on_write(slot as usize, result) {
                                Ok(true) => inflight -= 1,
                                Ok(false) => {}
                                Err(stop) => outcome = Err(stop),
                            }
                        }
                    }
                    done.clear();
                    self.transport_done = done;
                    outcome?;
                    continue;
                }
                let slot = user_data as usize;
                match self.slots[slot].phase {
                    Phase::Reading => {
                        if self.on_read(slot, result)? {
                            inflight -= 1;
                        }
                    }
                    Phase::Writing => {
                        if self.on_write(slot, result)? {
                            inflight -= 1;
                        }
                    }
                    Phase::Free | Phase::Ready => {
                        unreachable!("completion for a slot with nothing in flight {slot}")
                    }
                }
            }
        }
    }

    /// The loop of a sequential device: reads ahead into every free slot,
    /// one block write in flight, in media order.
    fn run_loop_sequential(
        &mut self,
        input: &SetInput,
        dispatcher: &Dispatcher,
    ) -> Result<(), Stop> {
        let mut cursor: Option<Cursor> = None;
        let mut exhausted = false;
        let mut waiting_for_work;
        let mut completions: Vec<(u64, i32)> = Vec::with_capacity(self.slots.len());
        loop {
            // A held write completion whose time has come counts now (and
            // frees its slot for the read ahead below).
            if let Some((slot, result, at)) = self.held {
                if Instant::now() >= at {
                    self.held = None;
                    self.finish_block_write(slot, result)?;
                }
            }
            // 1. Read ahead into every free slot. Only a device with
            // nothing at all to write may block waiting for shared work.
            waiting_for_work = false;
            while !exhausted && self.slots.iter().any(|s| s.phase == Phase::Free) {
                let idle = self.slots.iter().all(|s| s.phase == Phase::Free) && self.held.is_none();
                match self.next_record(&mut cursor, input, dispatcher, idle)? {
                    Record::Slot(slot) => self.submit_read(slot)?,
                    Record::Wait => {
                        waiting_for_work = true;
                        break;
                    }
                    Record::Exhausted => exhausted = true,
                }
            }
            self.pump()?;
            let more_to_write = !exhausted || self.next_write < self.gens.len();
            if !more_to_write {
                debug_assert!(self.write_slot.is_none() && self.ring.in_flight() == 0);
                return Ok(());
            }
            // The device is idle while its sources still have data for it:
            // an underrun (not before the first block, when the buffer is
            // filling; not while it waits for work other devices hand back).
            if self.write_slot.is_none()
                && self.held.is_none()
                && self.next_write > 0
                && !waiting_for_work
                && self.idle_since.is_none()
            {
                self.idle_since = Some(Instant::now());
            }
            // 2. Submit, and wait for a completion or the held write's time.
            let wait = self
                .held
                .map(|(_, _, at)| at.saturating_duration_since(Instant::now()));
            if self.ring.in_flight() == 0 {
                match wait {
                    Some(wait) => std::thread::sleep(wait),
                    // Waiting for work handed back while still writing.
                    None if waiting_for_work => std::thread::sleep(Duration::from_millis(1)),
                    None => unreachable!("sequential ring: work left, nothing in flight"),
                }
                continue;
            }
            let entered = match wait {
                None => self.ring.submit_and_wait(1),
                Some(wait) => self.ring.submit_and_wait_timeout(1, wait),
            };
            entered.map_err(|e| Stop::Failed {
                error: Fault::Enter(e),
            })?;
            // 3. Copy completions out before acting on them.
            completions.clear();
            self.ring.reap(&mut completions);
            // 4. Act.
            for &(user_data, result) in &completions {
                let slot = user_data as usize;
                match self.slots[slot].phase {
                    Phase::Reading => {
                        self.on_read(slot, result)?;
                    }
                    Phase::Writing => self.on_block_write(slot, result)?,
                    Phase::Free | Phase::Ready => {
                        unreachable!("completion for a slot with nothing in flight {slot}")
                    }
                }
            }
        }
    }

    /// Sequential: submit the next block write in media order if the
    /// device is free and the record is ready.
    fn pump(&mut self) -> Result<(), Stop> {
        while self.write_slot.is_none() && self.held.is_none() {
            let gen = self.next_write;
            let Some(slot) = self
                .slots
                .iter()
                .position(|s| s.phase == Phase::Ready && s.gen == gen)
            else {
                return Ok(());
            };
            if let Some(since) = self.idle_since.take() {
                self.stats.underruns += 1;
                self.stats.underrun_time += since.elapsed();
            }
            let total = self.record_media_bytes(slot);
            self.slots[slot].phase = Phase::Writing;
            self.write_slot = Some(slot);
            match self.device.before_block_write(total) {
                BlockIo::Submit { sqe_offset, bytes } => {
                    assert_eq!(bytes, total, "a device may not change a block's length");
                    let lease = &self.slots[slot].lease;
                    let entry =
                        io::write_fixed(self.device.fd(), lease, 0..total as usize, sqe_offset);
                    return self.push(entry.user_data(slot as u64));
                }
                // Completed without being tried (an emulator's end of medium).
                BlockIo::Done { result } => self.finish_block_write(slot, result)?,
            }
        }
        Ok(())
    }

    /// Sequential: a block write's completion, through the device's hook.
    fn on_block_write(&mut self, slot: usize, result: i32) -> Result<(), Stop> {
        let done = self.device.after_block_write(result);
        match done.complete_at {
            Some(at) if at > Instant::now() => {
                self.held = Some((slot, done.result, at));
                Ok(())
            }
            _ => self.finish_block_write(slot, done.result),
        }
    }

    /// Sequential: whether the drive says the block of `slot` reached the
    /// tape although its write reported an error. The label is object 0
    /// and record g (in media order) object g + 1, so after record g the
    /// head is at object g + 2. Only the drive's own position (MTIOCPOS)
    /// is trusted: st's block counter does not count the failed write.
    fn block_was_written(&self, slot: usize) -> bool {
        let object_after = self.slots[slot].gen as i64 + 2;
        self.device.head_object() == Some(object_after)
    }

    /// Sequential: act on a block write's result. A tape block is written
    /// whole or not at all: a short write means the end of the medium cut
    /// it, and is not continued.
    fn finish_block_write(&mut self, slot: usize, result: i32) -> Result<(), Stop> {
        assert_eq!(self.write_slot, Some(slot));
        self.write_slot = None;
        let total = self.record_media_bytes(slot);
        if result == total as i32 {
            self.complete_record(slot);
            self.next_write += 1;
            return Ok(());
        }
        let block = self.next_write as u64 + 1;
        let errno = if result < 0 { -result } else { libc::ENOSPC };
        let error = if result >= 0 {
            Fault::ShortBlock {
                block,
                written: result as u32,
                total,
            }
        } else {
            Fault::Block {
                block,
                error: std::io::Error::from_raw_os_error(errno),
            }
        };
        if errno == libc::ENOSPC && result < 0 && self.block_was_written(slot) {
            // st in variable-block mode answers the write that reaches early
            // warning with ENOSPC after the block is on the tape (seen on
            // the real driver in the VM test bed): it counts as written.
            self.complete_record(slot);
            self.next_write += 1;
            return Err(Stop::Full {
                error,
                physical: true,
            });
        }
        let s = &mut self.slots[slot];
        match self.device.classify(errno) {
            ErrorClass::Retry if s.retries < RETRIES_TRANSIENT_MAX => {
                s.retries += 1;
                s.phase = Phase::Ready;
                self.stats.retries += 1;
                Ok(())
            }
            ErrorClass::Full => Err(Stop::Full {
                error,
                physical: true,
            }),
            // No retries: after a failed tape write the position is unknown.
            _ => Err(Stop::Failed { error }),
        }
    }

    /// Take the next record from the cursor (pulling work from the
    /// dispatcher as needed, waiting for it when `blocking`), bind it to a
    /// free slot, return the slot.
    fn next_record(
        &mut self,
        cursor: &mut Option<Cursor>,
        input: &SetInput,
        dispatcher: &Dispatcher,
        blocking: bool,
    ) -> Result<Record, Stop> {
        loop {
            if cursor.is_none() {
                let index = self.config.device_index as usize;
                let next = if blocking {
                    dispatcher
                        .next(index, self.room_bytes())
                        .map_or(Next::Done, Next::Item)
                } else {
                    dispatcher.try_next(index, self.room_bytes())
                };
                let item = match next {
                    Next::Item(item) => item,
                    Next::Wait => return Ok(Record::Wait),
                    Next::Done => {
                        dispatcher.writing(index);
                        return Ok(Record::Exhausted);
                    }
                };
                match self.open_item(item, input) {
                    Ok(c) => *cursor = Some(c),
                    // Its source cannot be opened any more (removed since
                    // the walk, permissions changed): no device could; the
                    // rest of the set goes on without it, and it is named.
                    Err(RingError::Source { error, .. }) => {
                        dispatcher.skip(item, error.to_string());
                        continue;
                    }
                    Err(e) => return Err(Stop::Source(e)),
                }
            }
            let c = cursor.as_mut().expect("cursor set above");
            while c.range_index < c.ranges.len() {
                let (start, end) = c.ranges[c.range_index];
                let offset = c.next_offset.max(start);
                if offset >= end {
                    c.range_index += 1;
                    continue;
                }
                let chunk = self.config.record_payload_bytes_max as u64;
                let record_end = end.min((offset / chunk + 1) * chunk);
                let payload_bytes = (record_end - offset) as u32;
                let media = HEADER_BYTES as u64 + round_up_block(payload_bytes as u64);
                if self.position + media > self.usable_bytes {
                    return Err(Stop::Full {
                        error: Fault::NoRoom {
                            record_bytes: media,
                            offset: self.position,
                            usable_bytes: self.usable_bytes,
                        },
                        physical: false,
                    });
                }
                c.next_offset = record_end;
                let t = &mut self.taken[c.taken as usize];
                t.gens += 1;
                t.generated_until = record_end;
                let gen = self.gens.len();
                self.gens.push(Gen {
                    taken: c.taken,
                    file_offset: offset,
                    payload_bytes,
                    position: self.position,
                    payload_crc: 0,
                    payload_hash: [0; 32],
                    hashed: false,
                    done: false,
                });
                let slot = self
                    .slots
                    .iter()
                    .position(|s| s.phase == Phase::Free)
                    .expect("caller checked a slot is free");
                let s = &mut self.slots[slot];
                s.phase = Phase::Reading;
                s.source = Some(c.source.clone());
                s.gen = gen;
                s.read_bytes = 0;
                s.written_bytes = 0;
                s.retries = 0;
                s.file_size = c.file_size;
                self.position += media;
                return Ok(Record::Slot(slot));
            }
            self.taken[c.taken as usize].complete = true;
            *cursor = None;
        }
    }

    fn open_item(&mut self, item: WorkItem, input: &SetInput) -> Result<Cursor, RingError> {
        let entry = &input.entries[item.file as usize];
        let (size_bytes, data) = match &entry.kind {
            crate::source::EntryKind::File { size_bytes, data } => (*size_bytes, data.as_ref()),
            other => unreachable!("work item for a non-file entry {other:?}"),
        };
        let (file, direct) =
            crate::device::open_maybe_direct(OpenOptions::new().read(true), &entry.source)
                .map_err(|error| RingError::Source {
                    path: crate::units::shown_path(&entry.source),
                    op: "open",
                    offset: item.offset,
                    error,
                })?;
        let (start, end) = (item.offset, item.end());
        let ranges: Vec<(u64, u64)> = match data {
            None => vec![(start, end)],
            Some(extents) => extents
                .iter()
                .map(|&(o, l)| (o.max(start), (o + l).min(end)))
                .filter(|(s, e)| s < e)
                .collect(),
        };
        let taken = self.taken.len() as u32;
        self.taken.push(Taken {
            item,
            first_gen: self.gens.len(),
            gens: 0,
            position: self.position,
            generated_until: item.offset,
            complete: false,
        });
        Ok(Cursor {
            taken,
            source: Rc::new(Source {
                file,
                direct,
                path: entry.source.clone(),
                info: FileInfo {
                    mode: entry.meta.mode,
                    uid: entry.meta.uid,
                    gid: entry.meta.gid,
                    mtime_sec: entry.meta.mtime_sec,
                    mtime_nsec: entry.meta.mtime_nsec,
                    data_bytes: match data {
                        None => size_bytes,
                        Some(extents) => extents.iter().map(|e| e.1).sum(),
                    },
                    path: entry.path.clone(),
                    path_truncated: false,
                },
            }),
            ranges,
            range_index: 0,
            next_offset: start,
            file_size: size_bytes,
        })
    }

    /// Queue an entry of a slot whose phase says an operation is in
    /// flight: the CPU does not touch its lease (or its record's range of
    /// the mapping) until the completion is reaped; fds stay open
    /// (Rc<Source>, &Device) until then.
    fn push(&mut self, entry: Sqe) -> Result<(), Stop> {
        self.ring.push(entry).map_err(|e| Stop::Failed {
            error: Fault::Enter(e),
        })
    }

    fn submit_read(&mut self, slot: usize) -> Result<(), Stop> {
        let s = &mut self.slots[slot];
        let g = &self.gens[s.gen];
        let source = s.source.as_ref().expect("reading slot has a source");
        let remaining = g.payload_bytes - s.read_bytes;
        // O_DIRECT needs block-multiple lengths; a read past EOF is simply short.
        let len = if source.direct {
            round_up_block(remaining as u64) as u32
        } else {
            remaining
        };
        let entry = match self.mapping {
            Some(m) => {
                // Straight into the mapping, at the payload's final place.
                let at = g.position as usize + HEADER_BYTES + s.read_bytes as usize;
                // Never past the mapping (records end within the capacity,
                // so this only guards the block rounding).
                let len = len.min(m.len.saturating_sub(at) as u32);
                // SAFETY: at + len <= m.len (clamped above; the record's
                // position is within the capacity); the mapping lives as
                // long as the &Device, longer than the ring; this record's
                // range is used by this slot's read alone and the CPU does
                // not touch it until the read is reaped.
                unsafe {
                    io::read_into(
                        source.file.as_raw_fd(),
                        m.base.add(at),
                        len,
                        g.file_offset + s.read_bytes as u64,
                    )
                }
                .user_data(slot as u64)
            }
            None => {
                // HEADER_BYTES + read_bytes + len stays within the slot
                // (payload area is chunk_bytes, len <= round_up(chunk)).
                let at = HEADER_BYTES + s.read_bytes as usize;
                let fd = source.file.as_raw_fd();
                let offset = g.file_offset + s.read_bytes as u64;
                io::read_fixed(fd, &mut s.lease, at..at + len as usize, offset)
                    .user_data(slot as u64)
            }
        };
        let direct = source.direct;
        if direct {
            self.stats.reads_direct += 1;
        } else {
            self.stats.reads_buffered += 1;
        }
        self.push(entry)
    }

    /// Returns true when the record is complete and the slot free again
    /// (a memory-mapped device: nothing left to write).
    fn on_read(&mut self, slot: usize, result: i32) -> Result<bool, Stop> {
        let s = &mut self.slots[slot];
        let g = &self.gens[s.gen];
        let source = s.source.clone().expect("reading slot has a source");
        let source_error = |offset, error| {
            Stop::Source(RingError::Source {
                path: crate::units::shown_path(&source.path),
                op: "read",
                offset,
                error,
            })
        };
        if result < 0 {
            let errno = -result;
            if (errno == libc::EINTR || errno == libc::EAGAIN) && s.retries < RETRIES_TRANSIENT_MAX
            {
                s.retries += 1;
                self.stats.retries += 1;
                return self.submit_read(slot).map(|()| false);
            }
            return Err(source_error(
                g.file_offset + s.read_bytes as u64,
                std::io::Error::from_raw_os_error(errno),
            ));
        }
        let got = result as u32;
        if got == 0 {
            // The file shrank since the walk: the rest of the record is
            // zeros (as GNU tar pads a file that shrank). The set stays
            // complete; the check after the run names the file as changed
            // (its size differs from the walk's) and the exit code is 1.
            let (from, to) = (s.read_bytes as usize, g.payload_bytes as usize);
            let position = g.position as usize;
            match self.mapping {
                // SAFETY: the record's payload range lies within the
                // mapping and belongs to this slot alone; its read has
                // completed (nothing else accesses it).
                Some(m) => unsafe {
                    std::ptr::write_bytes(m.base.add(position + HEADER_BYTES + from), 0, to - from)
                },
                None => self.slots[slot].lease.bytes_mut()[HEADER_BYTES + from..HEADER_BYTES + to]
                    .fill(0),
            }
            let s = &mut self.slots[slot];
            s.read_bytes = g.payload_bytes;
            self.stats.zero_filled_bytes += (to - from) as u64;
            return self.after_read(slot);
        }
        s.read_bytes = (s.read_bytes + got).min(g.payload_bytes);
        if s.read_bytes < g.payload_bytes {
            self.stats.short_reads += 1;
            return self.submit_read(slot).map(|()| false);
        }
        self.after_read(slot)
    }

    /// The record's payload is complete: write it (or make it durable in
    /// place). Returns true when the slot is free again.
    fn after_read(&mut self, slot: usize) -> Result<bool, Stop> {
        let s = &self.slots[slot];
        if self.sequential {
            // Records are numbered in media order, which on a sequential
            // device is gen order.
            let gen = s.gen;
            self.fill_record(slot, gen as u64);
            let s = &mut self.slots[slot];
            s.phase = Phase::Ready;
            s.retries = 0;
            return self.pump().map(|()| false);
        }
        if self.mapping.is_some() {
            return self.persist_in_place(slot).map(|()| true);
        }
        self.submit_write(slot).map(|()| false)
    }

    /// Memory-mapped device: the payload is in place; write the header in
    /// front of it, make the record durable, and count it done.
    fn persist_in_place(&mut self, slot: usize) -> Result<(), Stop> {
        let sequence = self.slots[slot].gen as u64;
        self.fill_record(slot, sequence);
        let position = self.gens[self.slots[slot].gen].position;
        let media = self.record_media_bytes(slot) as u64;
        if let Err(error) = self.device.persist(position, media) {
            return Err(Stop::Failed {
                error: Fault::Persist {
                    offset: position,
                    bytes: media,
                    error,
                },
            });
        }
        self.stats.payload_bytes_in_place += self.gens[self.slots[slot].gen].payload_bytes as u64;
        self.complete_record(slot);
        Ok(())
    }

    fn submit_write(&mut self, slot: usize) -> Result<(), Stop> {
        // A record's sequence number is its place in media order: its gen
        // index (reads complete in any order; the number must not follow them).
        let sequence = self.slots[slot].gen as u64;
        self.fill_record(slot, sequence);
        let s = &mut self.slots[slot];
        s.phase = Phase::Writing;
        s.retries = 0;
        self.submit_write_rest(slot)
    }

    /// Fill the header in front of the payload a read put in `slot`: the
    /// payload's CRC and BLAKE3 (passes over bytes in cache), file info,
    /// padding.
    fn fill_record(&mut self, slot: usize, sequence: u64) {
        let s = &mut self.slots[slot];
        let g = &self.gens[s.gen];
        let payload_bytes = g.payload_bytes as usize;
        let padded = round_up_block(payload_bytes as u64) as usize;
        let header = RecordHeader {
            kind: RecordKind::Data,
            set_id: self.config.set_id,
            device_index: self.config.device_index,
            sequence,
            file_id: self.taken[g.taken as usize].item.file,
            segment_id: g.taken,
            file_offset: g.file_offset,
            payload_bytes: g.payload_bytes,
            file_size: s.file_size,
            payload_crc: 0,
        };
        let gen = s.gen;
        let media = HEADER_BYTES + padded;
        let buffer: &mut [u8] = match self.mapping {
            // SAFETY: the record's range [position, position + media) lies
            // within the mapping (records end within the capacity), is
            // disjoint from every other record's, and its read has
            // completed: nothing else accesses it now.
            Some(m) => unsafe {
                std::slice::from_raw_parts_mut(m.base.add(g.position as usize), media)
            },
            None => &mut s.lease.bytes_mut()[..media],
        };
        // The payload is where the read put it; only the padding and the
        // header are written by the CPU.
        let (head, payload) = buffer.split_at_mut(HEADER_BYTES);
        payload[payload_bytes..padded].fill(0);
        let header = RecordHeader {
            payload_crc: crate::format::crc32c(&payload[..payload_bytes]),
            ..header
        };
        let info = &s.source.as_ref().expect("writing slot has a source").info;
        header.encode_with_info(Some(info), head);
        debug_assert_eq!(RecordHeader::decode(head), Ok(header));
        self.gens[gen].payload_crc = header.payload_crc;
        // The BLAKE3 of the payload (the file digest's) on the hasher
        // thread, or here when there is none.
        match self.hasher.as_mut() {
            Some(h) => {
                let job = HashJob {
                    gen,
                    payload: payload.as_ptr(),
                    payload_bytes,
                };
                if h.jobs.send(job).is_ok() {
                    h.pending += 1;
                } else {
                    self.gens[gen].payload_hash =
                        crate::format::payload_hash(&payload[..payload_bytes]);
                    self.gens[gen].hashed = true;
                }
            }
            None => {
                self.gens[gen].payload_hash =
                    crate::format::payload_hash(&payload[..payload_bytes]);
                self.gens[gen].hashed = true;
            }
        }
        self.stats.payload_bytes_zero_copy += payload_bytes as u64;
    }

    fn submit_write_rest(&mut self, slot: usize) -> Result<(), Stop> {
        let s = &self.slots[slot];
        let g = &self.gens[s.gen];
        let total = self.record_media_bytes(slot);
        if let Some(transport) = self.transport.as_mut() {
            // One request writing the whole record, answered whole or not
            // at all: no partial progress to continue from.
            debug_assert_eq!(s.written_bytes, 0);
            transport.submit_write(slot as u64, &s.lease, total, g.position);
            return Ok(());
        }
        // written_bytes < total <= slot size.
        let range = s.written_bytes as usize..total as usize;
        let offset = g.position + s.written_bytes as u64;
        let entry = io::write_fixed(self.device.fd(), &s.lease, range, offset);
        self.push(entry.user_data(slot as u64))
    }

    fn complete_record(&mut self, slot: usize) {
        // The slot's buffer is reused once it is free: its hash first.
        self.await_hash(self.slots[slot].gen);
        let s = &mut self.slots[slot];
        s.phase = Phase::Free;
        s.source = None;
        let g = &mut self.gens[s.gen];
        g.done = true;
        let payload = g.payload_bytes as u64;
        self.stats.payload_bytes += payload;
        self.stats.media_bytes += HEADER_BYTES as u64 + round_up_block(payload);
        self.stats.records += 1;
        self.progress.fetch_add(payload, Ordering::Relaxed);
    }

    /// Returns true when the record is complete and the slot free again.
    fn on_write(&mut self, slot: usize, result: i32) -> Result<bool, Stop> {
        let total = self.record_media_bytes(slot);
        let position = self.gens[self.slots[slot].gen].position;
        let s = &mut self.slots[slot];
        let offset = position + s.written_bytes as u64;
        let errno = match result {
            r if r < 0 => -r,
            0 => libc::ENOSPC,
            r => {
                s.written_bytes += r as u32;
                if s.written_bytes < total {
                    self.stats.short_writes += 1;
                    self.submit_write_rest(slot)?;
                    return Ok(false);
                }
                self.complete_record(slot);
                return Ok(true);
            }
        };
        let error = std::io::Error::from_raw_os_error(errno);
        match self.device.classify(errno) {
            ErrorClass::Retry if s.retries < RETRIES_TRANSIENT_MAX => {
                s.retries += 1;
                self.stats.retries += 1;
                self.submit_write_rest(slot)?;
                Ok(false)
            }
            ErrorClass::Full => Err(Stop::Full {
                error: Fault::Write { offset, error },
                physical: true,
            }),
            _ if s.retries < self.config.write_retries => {
                s.retries += 1;
                self.stats.retries += 1;
                self.submit_write_rest(slot)?;
                Ok(false)
            }
            _ => Err(Stop::Failed {
                error: Fault::WriteRetried {
                    offset,
                    error,
                    retries: s.retries,
                },
            }),
        }
    }
}
