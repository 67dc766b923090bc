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
//! their final place on the device. With `--compress` or `--encrypt`
//! they cannot: the read goes to the slot's buffer as for any device, the
//! workers transform it there (plain text never reaches the device), and
//! the finished record is copied into the mapping and persisted.
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
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::dispatch::{DeviceState, Dispatcher, Next, WorkItem};
use super::SetInput;
use crate::device::{Access, BlockIo, DataPath, Device, ErrorClass, Mapping, Transport};
use crate::format::{round_up_block, FileInfo, RecordHeader, RecordKind, SetId, HEADER_BYTES};
use crate::io::{self, BufferPool, Lease, Sqe, Uring};

mod outcome;
mod read;
mod schedule;
mod settle;
mod stripe;
mod transform;
mod transport;
mod write;

pub use outcome::{
    DeviceFault, Fault, Placed, RecordDone, RingEnd, RingError, RingOutcome, RingStats,
};
pub use stripe::{ClosedStripe, Member, ParityDone, StripeSink};

/// Most records in flight per device.
pub const QUEUE_DEPTH_MAX: usize = 256;
/// Retries of an operation that returned EINTR/EAGAIN before giving up.
const RETRIES_TRANSIENT_MAX: u32 = 1000;

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
    /// What the file's first record (at `first_offset`) says: `info` and
    /// the file's extended attributes.
    first_info: FileInfo,
    /// The file's first data offset (0, or a sparse file's first data range).
    first_offset: u64,
}

impl Source {
    /// What the record at `file_offset` says about the file: the first one
    /// also carries its extended attributes.
    fn info_at(&self, file_offset: u64) -> &FileInfo {
        if file_offset == self.first_offset {
            &self.first_info
        } else {
            &self.info
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Free,
    Reading,
    /// Sequential devices: read and checksummed, waiting for its turn;
    /// with `--compress`, back from the workers and waiting for its place.
    Ready,
    /// With the compression workers (`transform.rs`).
    Transforming,
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
    /// Its `sequence` on the device (parity records are numbered in the
    /// same count, `stripe.rs`).
    sequence: u64,
    file_offset: u64,
    payload_bytes: u32,
    position: u64,
    payload_crc: u32,
    payload_hash: [u8; 32],
    /// `payload_hash` is set (false while the hasher has it).
    hashed: bool,
    done: bool,
    /// How the payload is stored, once `transformed` (else raw).
    transform: crate::format::Transform,
    /// The workers hashed and compressed it (`transform.rs`).
    transformed: bool,
}

impl Gen {
    /// Payload bytes as stored on media.
    fn stored_len(&self) -> u32 {
        match self.transform.codec {
            crate::format::Codec::Raw => self.payload_bytes,
            _ => self.transform.stored_bytes,
        }
    }
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
    /// `--compress`: each record's payload compressed on worker threads.
    pub compression: Option<crate::format::codec::Compression>,
    /// `--encrypt`: every record's file info and payload sealed on the
    /// worker threads (`transform.rs`).
    pub encryption: Option<crate::format::seal::SetEncryption>,
    /// Microseconds the run's rings have waited for their workers so far
    /// (every ring adds to it as it waits), read live by the progress
    /// display to say when the CPUs cannot keep up.
    pub cpu_wait_us: std::sync::Arc<AtomicU64>,
}

pub struct Ring<'a> {
    device: &'a dyn Device,
    config: &'a RingConfig,
    ring: Uring,
    slots: Vec<Slot>,
    /// The records generated and the items taken, less what is settled
    /// (`settle.rs`): indices count from the run's first.
    gens: settle::Window<Gen>,
    taken: settle::Window<Taken>,
    settled: settle::Settled,
    /// Media offset of the next record.
    position: u64,
    /// Where this run's first record goes, and its sequence number:
    /// offset 4096 and 0, or after what a resumed set already holds.
    start_position: u64,
    first_sequence: u64,
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
    /// Memory-mapped device: records are read into it in place (or, when
    /// transformed, copied into it from their slot: `copy_in_place`).
    mapping: Option<Mapping>,
    /// Memory-mapped device with workers: records `copy_in_place` made
    /// durable since the loop last counted them (their slots are free).
    copied_in_place: usize,
    /// Pipelined device: record writes are requests of its transport.
    transport: Option<Box<dyn Transport + 'a>>,
    /// Transport completions, reused.
    transport_done: Vec<(u64, i32)>,
    transport_sqes: Vec<Sqe>,
    /// Hashes payloads off the ring thread while `run` runs.
    hasher: Option<Hasher>,
    /// Compress (and hash) payloads off the ring thread while `run` runs.
    workers: Option<transform::Workers>,
    /// The sequence number of the next record (data or parity).
    next_sequence: u64,
    /// `--parity`: the run's stripes, and this ring's parity records.
    stripes: Option<&'a StripeSink>,
    parity: stripe::ParityRecords,
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
        let entries = (config.queue_depth + stripe::PARITY_SLOTS) as u32
            + transport.as_ref().map_or(0, |t| t.entries_max());
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
            gens: settle::Window::default(),
            taken: settle::Window::default(),
            settled: settle::Settled::default(),
            position: HEADER_BYTES as u64,
            start_position: HEADER_BYTES as u64,
            first_sequence: 0,
            usable_bytes: device.capacity_bytes().saturating_sub(config.reserve_bytes),
            stats: RingStats::default(),
            progress,
            sequential: device.access() == Access::Sequential,
            next_write: 0,
            write_slot: None,
            held: None,
            idle_since: None,
            mapping,
            copied_in_place: 0,
            transport,
            transport_done: Vec::new(),
            transport_sqes: Vec::new(),
            hasher: None,
            workers: None,
            next_sequence: 0,
            stripes: None,
            parity: stripe::ParityRecords::default(),
        })
    }

    /// `backup --resume`: the device already holds `records` records of
    /// the set, ending at media offset `position` (a tape: that many
    /// blocks after the label, the head already after the last one, and
    /// `position` the bytes they take, for the room left). This run's
    /// records follow them, numbered on.
    pub fn continuing(mut self, position: u64, records: u64) -> Ring<'a> {
        assert_eq!(self.gens.len(), 0, "a ring continues before it runs");
        assert!(position >= HEADER_BYTES as u64 && position.is_multiple_of(HEADER_BYTES as u64));
        self.position = position;
        self.start_position = position;
        self.first_sequence = records;
        self.next_sequence = records;
        self
    }

    /// `--parity`: this ring's records join the run's stripes, and it
    /// writes the parity records the stripes give it (`stripe.rs`).
    pub fn with_stripes(mut self, sink: &'a StripeSink) -> Ring<'a> {
        assert!(
            !self.sequential && self.mapping.is_none(),
            "parity only on random-access devices written through the ring"
        );
        self.parity = stripe::ParityRecords::new();
        self.stripes = Some(sink);
        self
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

    /// The slot holding record `gen` once it is ready to be written.
    fn ready_slot(&self, gen: usize) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.phase == Phase::Ready && s.gen == gen)
    }

    /// A record of `media` bytes (header and padded payload) fits before
    /// the usable end; if not, the device stops as full (not a fault of the
    /// medium: `physical` false).
    fn check_room(&self, media: u64) -> Result<(), Stop> {
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
        Ok(())
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
            let (compression, encryption) =
                (self.config.compression, self.config.encryption.clone());
            if compression.is_some() || encryption.is_some() {
                let threads = std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .min(self.slots.len());
                self.workers =
                    transform::spawn_workers(scope, compression, encryption, threads, index);
            }
            // Without a thread (it could not be started) hashing is inline.
            if hasher.is_ok() {
                self.hasher = Some(Hasher {
                    jobs,
                    done,
                    pending: 0,
                });
            }
            let mut feed = schedule::Feed::new(input, dispatcher);
            let stop = if self.sequential {
                self.run_loop_sequential(&mut feed)
            } else {
                self.run_loop(&mut feed)
            };
            let stop = match stop {
                Ok(()) => self.parity_tail(dispatcher),
                Err(stop) => {
                    self.drain();
                    self.leave_stripes(true);
                    Some(stop)
                }
            };
            // Every payload hashed before the buffers are reused (`finish`
            // reads records back) and before the outcome is built; the
            // hasher ends when its queue is dropped.
            self.await_all_hashes();
            self.hasher = None;
            self.await_all_transforms();
            self.workers = None;
            self.settle_unplaced();
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
        // Its own time: not the time it waited, idle, for the others.
        outcome.stats.elapsed = started.elapsed().saturating_sub(dispatcher.waited(index));
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
        // The durable prefix: the records, data and parity, in media
        // order up to the first whose write did not complete.
        let cut = self.durable_end();
        let mut prefix = self.gens.partition_point(|g| g.position < cut);
        debug_assert!(self.gens.range(self.gens.base(), prefix).all(|g| g.done));
        // A sequential device wrote one block at a time: the write that
        // hit the end of the medium wrote nothing, and its catalog goes
        // into the room after early warning, so nothing is read back or
        // given up here.
        let random_full = physical_full && !self.sequential;
        if random_full {
            prefix = self.verified_prefix(prefix);
        }
        // Record k's media offset (settled or not), or where the next would go.
        let pos_of = |k: usize| {
            if k < self.gens.len() {
                self.gen_position(k)
            } else {
                self.position
            }
        };
        let prefix_end = pos_of(prefix).min(cut);
        // The medium itself is full: give back records at the tail so the
        // catalog fits in blocks that are already allocated.
        let kept = if random_full {
            (0..=prefix)
                .rev()
                .find(|&k| pos_of(k) + self.config.reserve_bytes <= prefix_end)
                .unwrap_or(0)
        } else {
            prefix
        };
        // What is settled was far enough behind the durable end to stay.
        debug_assert!(kept >= self.gens.base(), "a settled record given back");
        let kept = kept.max(self.gens.base());
        let data_end_bytes = if kept == prefix {
            prefix_end
        } else {
            pos_of(kept)
        };
        let parity = self.parity.kept(data_end_bytes);
        // The stats describe what stays on the device.
        self.stats.records = kept as u64;
        let settled = std::mem::take(&mut self.settled);
        self.stats.payload_bytes = settled
            .records
            .iter()
            .map(|r| r.payload_bytes as u64)
            .chain(
                self.gens
                    .range(self.gens.base(), kept)
                    .map(|g| g.payload_bytes as u64),
            )
            .sum();
        self.stats.media_bytes = data_end_bytes - self.start_position;
        // Positions as the catalog gives them: media offsets, or on a
        // sequential device logical object numbers (the label is object
        // 0, record k is object k + 1, the filemark after the data is
        // object `data_end`).
        let data_end = if self.sequential {
            kept as u64 + 1 + self.first_sequence
        } else {
            data_end_bytes
        };
        // A failed device's settled items go back whole, as the others.
        let mut give_back: Vec<WorkItem> = if failed {
            settled
                .placed
                .iter()
                .map(|p| WorkItem {
                    file: p.file,
                    offset: p.offset,
                    length: p.length,
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut placed = settled.placed;
        for t in self.taken.iter() {
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
                (t.first_gen as u64 + 1 + self.first_sequence).min(data_end)
            } else if t.gens > 0 {
                match settled.records.get(t.first_gen) {
                    Some(r) => r.position,
                    None => self.gens[t.first_gen].position,
                }
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
        let mut records = settled.records;
        records.reserve_exact(kept - records.len());
        for g in self.gens.range(self.gens.base(), kept) {
            records.push(self.record_done(g));
        }
        RingOutcome {
            end,
            records,
            parity,
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
        // Settled records lie further back than the window (`settle.rs`).
        let from = self
            .gens
            .partition_point(|g| g.position.saturating_add(window) < end)
            .min(prefix);
        for k in from..prefix {
            let (position, payload_bytes, crc) = {
                let g = &self.gens[k];
                (g.position, g.stored_len(), g.payload_crc)
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
                        if slot >= self.slots.len() {
                            self.parity_drained(slot - self.slots.len(), result);
                            continue;
                        }
                        if result == self.record_media_bytes(slot) as i32 {
                            self.complete_record(slot);
                        }
                        self.slots[slot].phase = Phase::Free;
                        self.slots[slot].source = None;
                    }
                    continue;
                }
                let slot = user_data as usize;
                if slot >= self.slots.len() {
                    self.parity_drained(slot - self.slots.len(), result);
                    continue;
                }
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
}
