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

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

use super::buffers::BufferPool;
use super::dispatch::{Dispatcher, SegmentIndex};
use super::SetInput;
use crate::device::{Device, ErrorClass};
use crate::format::{round_up_block, RecordHeader, RecordKind, SetId, HEADER_BYTES};

/// Most records in flight per device.
pub const QUEUE_DEPTH_MAX: usize = 256;
/// Retries of an operation that returned EINTR/EAGAIN before giving up.
const RETRIES_MAX: u32 = 1000;

/// A record that reached the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordDone {
    pub file_id: u32,
    pub file_offset: u64,
    pub payload_bytes: u32,
    pub payload_crc: u32,
}

/// Where a segment's records landed on this device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentPlaced {
    pub segment: SegmentIndex,
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
    /// Reads served with O_DIRECT vs buffered.
    pub reads_direct: u64,
    pub reads_buffered: u64,
    pub elapsed: Duration,
}

#[derive(Debug)]
pub struct RingOutcome {
    pub records: Vec<RecordDone>,
    pub placed: Vec<SegmentPlaced>,
    /// Media offset just past the last record.
    pub data_end: u64,
    pub stats: RingStats,
}

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("device {device}: {op} at offset {offset}: {error}")]
    Device {
        device: String,
        op: &'static str,
        offset: u64,
        class: ErrorClass,
        error: std::io::Error,
    },
    #[error("source {path}: {op} at offset {offset}: {error}")]
    Source {
        path: String,
        op: &'static str,
        offset: u64,
        error: std::io::Error,
    },
    #[error("device {device}: full at offset {offset}: the plan does not fit")]
    NoRoom { device: String, offset: u64 },
}

struct Source {
    file: std::fs::File,
    direct: bool,
    file_id: u32,
    path: std::path::PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Free,
    Reading,
    Writing,
}

struct Slot {
    phase: Phase,
    source: Option<Rc<Source>>,
    file_offset: u64,
    file_size: u64,
    payload_bytes: u32,
    /// Payload bytes read so far.
    read_bytes: u32,
    /// Device offset of the header.
    position: u64,
    /// Bytes of header+payload written so far.
    written_bytes: u32,
    segment_id: u32,
    payload_crc: u32,
    retries: u32,
}

/// Generates the records of this device's segments, in order.
struct Cursor {
    segment: SegmentIndex,
    source: Rc<Source>,
    /// Data ranges of the segment still to emit, as (start, end), ascending.
    ranges: Vec<(u64, u64)>,
    range_index: usize,
    next_offset: u64,
    file_size: u64,
}

pub struct Ring<'a> {
    device: &'a dyn Device,
    device_index: u32,
    set_id: SetId,
    chunk_bytes: u32,
    ring: IoUring,
    pool: BufferPool,
    slots: Vec<Slot>,
    position: u64,
    capacity_bytes: u64,
    sequence: u64,
    outcome: RingOutcome,
    progress: &'a AtomicU64,
    /// SQEs pushed and not yet reaped.
    ops_in_flight: usize,
}

impl<'a> Ring<'a> {
    pub fn new(
        device: &'a dyn Device,
        device_index: u32,
        set_id: SetId,
        chunk_bytes: u32,
        queue_depth: usize,
        progress: &'a AtomicU64,
    ) -> Result<Ring<'a>, RingError> {
        assert!((1..=QUEUE_DEPTH_MAX).contains(&queue_depth));
        assert!((chunk_bytes as usize).is_multiple_of(HEADER_BYTES));
        let dev_err = |op, error| RingError::Device {
            device: device.path().display().to_string(),
            op,
            offset: 0,
            class: ErrorClass::Failed,
            error,
        };
        let ring = IoUring::new((queue_depth as u32).next_power_of_two())
            .map_err(|e| dev_err("io_uring setup", e))?;
        let pool = BufferPool::new(queue_depth, HEADER_BYTES + chunk_bytes as usize);
        let iovecs = pool.iovecs();
        // SAFETY: the iovecs describe the pool's allocation, which lives as
        // long as this Ring; `ring` is declared before `pool` so it is dropped
        // (and the registration released) before the memory is freed.
        unsafe { ring.submitter().register_buffers(&iovecs) }
            .map_err(|e| dev_err("register buffers", e))?;
        let slots = (0..queue_depth)
            .map(|_| Slot {
                phase: Phase::Free,
                source: None,
                file_offset: 0,
                file_size: 0,
                payload_bytes: 0,
                read_bytes: 0,
                position: 0,
                written_bytes: 0,
                segment_id: 0,
                payload_crc: 0,
                retries: 0,
            })
            .collect();
        Ok(Ring {
            device,
            device_index,
            set_id,
            chunk_bytes,
            ring,
            pool,
            slots,
            position: HEADER_BYTES as u64,
            capacity_bytes: device.capacity_bytes(),
            sequence: 0,
            outcome: RingOutcome {
                records: Vec::new(),
                placed: Vec::new(),
                data_end: HEADER_BYTES as u64,
                stats: RingStats::default(),
            },
            progress,
            ops_in_flight: 0,
        })
    }

    fn device_error(&self, op: &'static str, offset: u64, error: std::io::Error) -> RingError {
        let class = error
            .raw_os_error()
            .map(|e| self.device.classify(e))
            .unwrap_or(ErrorClass::Failed);
        RingError::Device {
            device: self.device.path().display().to_string(),
            op,
            offset,
            class,
            error,
        }
    }

    /// Write every segment the dispatcher gives this device. Records start
    /// right after the label (offset 4096).
    pub fn run(
        mut self,
        input: &SetInput,
        dispatcher: &Dispatcher,
    ) -> Result<RingOutcome, RingError> {
        let started = Instant::now();
        if let Err(e) = self.run_loop(input, dispatcher) {
            self.drain();
            return Err(e);
        }
        self.outcome.data_end = self.position;
        self.outcome.stats.elapsed = started.elapsed();
        Ok(self.outcome)
    }

    /// After an error: reap every operation still in flight, so that no
    /// kernel write into or read from the pool outlives it.
    fn drain(&mut self) {
        while self.ops_in_flight > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // The ring itself is broken: nothing more can be reaped.
                Err(_) => return,
            }
            let reaped = self.ring.completion().count();
            self.ops_in_flight -= reaped;
        }
    }

    fn run_loop(&mut self, input: &SetInput, dispatcher: &Dispatcher) -> Result<(), RingError> {
        let mut cursor: Option<Cursor> = None;
        let mut exhausted = false;
        let mut inflight = 0usize;
        let mut completions: Vec<(u64, i32)> = Vec::with_capacity(self.slots.len());
        loop {
            // 1. Fill free slots with new records and queue their reads.
            while inflight < self.slots.len() && !exhausted {
                match self.next_record(&mut cursor, input, dispatcher)? {
                    Some(slot) => {
                        self.submit_read(slot)?;
                        inflight += 1;
                    }
                    None => exhausted = true,
                }
            }
            if inflight == 0 {
                break;
            }
            // 2. Submit and wait for at least one completion.
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(self.device_error("io_uring_enter", self.position, e)),
            }
            // 3. Copy completions out before acting on them.
            completions.clear();
            completions.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            self.ops_in_flight -= completions.len();
            // 4. Act.
            for &(user_data, result) in &completions {
                let slot = user_data as usize;
                match self.slots[slot].phase {
                    Phase::Reading => self.on_read(slot, result)?,
                    Phase::Writing => {
                        if self.on_write(slot, result)? {
                            inflight -= 1;
                        }
                    }
                    Phase::Free => unreachable!("completion for a free slot {slot}"),
                }
            }
        }
        Ok(())
    }

    /// Take the next record from the cursor (pulling segments from the
    /// dispatcher as needed), bind it to a free slot, return the slot.
    fn next_record(
        &mut self,
        cursor: &mut Option<Cursor>,
        input: &SetInput,
        dispatcher: &Dispatcher,
    ) -> Result<Option<usize>, RingError> {
        loop {
            if cursor.is_none() {
                let Some(index) = dispatcher.next(self.device_index as usize, |i| {
                    input.plan.segments[i as usize].length
                }) else {
                    return Ok(None);
                };
                *cursor = Some(self.open_segment(index, input)?);
            }
            let c = cursor.as_mut().expect("cursor set above");
            while c.range_index < c.ranges.len() {
                let (start, end) = c.ranges[c.range_index];
                let offset = c.next_offset.max(start);
                if offset >= end {
                    c.range_index += 1;
                    continue;
                }
                let chunk = self.chunk_bytes as u64;
                let record_end = end.min((offset / chunk + 1) * chunk);
                c.next_offset = record_end;
                let payload_bytes = (record_end - offset) as u32;
                let media = HEADER_BYTES as u64 + round_up_block(payload_bytes as u64);
                if self.position + media > self.capacity_bytes {
                    return Err(RingError::NoRoom {
                        device: self.device.path().display().to_string(),
                        offset: self.position,
                    });
                }
                let placed = self
                    .outcome
                    .placed
                    .last_mut()
                    .expect("segment placed on open");
                if placed.records == 0 {
                    placed.position = self.position;
                }
                placed.records += 1;
                let slot = self
                    .slots
                    .iter()
                    .position(|s| s.phase == Phase::Free)
                    .expect("caller checked a slot is free");
                let s = &mut self.slots[slot];
                s.phase = Phase::Reading;
                s.source = Some(c.source.clone());
                s.file_offset = offset;
                s.file_size = c.file_size;
                s.payload_bytes = payload_bytes;
                s.read_bytes = 0;
                s.position = self.position;
                s.written_bytes = 0;
                s.segment_id = c.segment;
                s.retries = 0;
                self.position += media;
                return Ok(Some(slot));
            }
            *cursor = None;
        }
    }

    fn open_segment(&mut self, index: SegmentIndex, input: &SetInput) -> Result<Cursor, RingError> {
        let segment = input.plan.segments[index as usize];
        let entry = &input.entries[segment.file as usize];
        let (size_bytes, data) = match &entry.kind {
            crate::source::EntryKind::File { size_bytes, data } => (*size_bytes, data.as_ref()),
            other => unreachable!("segment for a non-file entry {other:?}"),
        };
        let (file, direct) =
            crate::device::open_maybe_direct(OpenOptions::new().read(true), &entry.source)
                .map_err(|error| RingError::Source {
                    path: entry.source.display().to_string(),
                    op: "open",
                    offset: segment.offset,
                    error,
                })?;
        let (start, end) = (segment.offset, segment.offset + segment.length);
        let ranges: Vec<(u64, u64)> = match data {
            None => vec![(start, end)],
            Some(extents) => extents
                .iter()
                .map(|&(o, l)| (o.max(start), (o + l).min(end)))
                .filter(|(s, e)| s < e)
                .collect(),
        };
        self.outcome.placed.push(SegmentPlaced {
            segment: index,
            position: self.position,
            records: 0,
        });
        Ok(Cursor {
            segment: index,
            source: Rc::new(Source {
                file,
                direct,
                file_id: segment.file,
                path: entry.source.clone(),
            }),
            ranges,
            range_index: 0,
            next_offset: start,
            file_size: size_bytes,
        })
    }

    fn push(&mut self, entry: squeue::Entry) -> Result<(), RingError> {
        self.ops_in_flight += 1;
        // SAFETY: every SQE built by this ring points into `self.pool` (a
        // registered buffer that outlives the ring) at a slot whose phase says
        // an operation is in flight, so the CPU does not touch it until the
        // completion is reaped; fds stay open (Rc<Source>, &Device) until then.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            // Queue full: submit what is there and retry once.
            self.ring
                .submit()
                .map_err(|e| self.device_error("io_uring_enter", self.position, e))?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(&entry) }
                .expect("submission queue has room after submit");
        }
        Ok(())
    }

    fn submit_read(&mut self, slot: usize) -> Result<(), RingError> {
        let s = &self.slots[slot];
        let source = s.source.as_ref().expect("reading slot has a source");
        let remaining = s.payload_bytes - s.read_bytes;
        // O_DIRECT needs block-multiple lengths; a read past EOF is simply short.
        let len = if source.direct {
            round_up_block(remaining as u64) as u32
        } else {
            remaining
        };
        let ptr = self.pool.ptr(slot);
        // SAFETY (pointer arithmetic): HEADER_BYTES + read_bytes + len stays
        // within the slot (payload area is chunk_bytes, len <= round_up(chunk)).
        let dst = unsafe { ptr.add(HEADER_BYTES + s.read_bytes as usize) };
        let entry =
            opcode::ReadFixed::new(types::Fd(source.file.as_raw_fd()), dst, len, slot as u16)
                .offset(s.file_offset + s.read_bytes as u64)
                .build()
                .user_data(slot as u64);
        if source.direct {
            self.outcome.stats.reads_direct += 1;
        } else {
            self.outcome.stats.reads_buffered += 1;
        }
        self.push(entry)
    }

    fn on_read(&mut self, slot: usize, result: i32) -> Result<(), RingError> {
        let s = &mut self.slots[slot];
        let source = s.source.clone().expect("reading slot has a source");
        let source_error = |op, offset, error| RingError::Source {
            path: source.path.display().to_string(),
            op,
            offset,
            error,
        };
        if result < 0 {
            let errno = -result;
            if (errno == libc::EINTR || errno == libc::EAGAIN) && s.retries < RETRIES_MAX {
                s.retries += 1;
                self.outcome.stats.retries += 1;
                return self.submit_read(slot);
            }
            return Err(source_error(
                "read",
                s.file_offset + s.read_bytes as u64,
                std::io::Error::from_raw_os_error(errno),
            ));
        }
        let got = result as u32;
        if got == 0 {
            return Err(source_error(
                "read",
                s.file_offset + s.read_bytes as u64,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file shrank while being backed up",
                ),
            ));
        }
        s.read_bytes = (s.read_bytes + got).min(s.payload_bytes);
        if s.read_bytes < s.payload_bytes {
            self.outcome.stats.short_reads += 1;
            return self.submit_read(slot);
        }
        self.submit_write(slot)
    }

    fn submit_write(&mut self, slot: usize) -> Result<(), RingError> {
        let s = &mut self.slots[slot];
        let payload_bytes = s.payload_bytes as usize;
        let padded = round_up_block(payload_bytes as u64) as usize;
        let header = RecordHeader {
            kind: RecordKind::Data,
            set_id: self.set_id,
            device_index: self.device_index,
            sequence: self.sequence,
            file_id: s.source.as_ref().expect("source").file_id,
            segment_id: s.segment_id,
            file_offset: s.file_offset,
            payload_bytes: s.payload_bytes,
            file_size: s.file_size,
            payload_crc: 0,
        };
        self.sequence += 1;
        s.phase = Phase::Writing;
        s.retries = 0;
        let buffer = self.pool.slot_mut(slot);
        // The payload is where the read put it; only the padding and the
        // header are written by the CPU.
        let (head, payload) = buffer.split_at_mut(HEADER_BYTES);
        payload[payload_bytes..padded].fill(0);
        let header = RecordHeader {
            payload_crc: crate::format::crc32c(&payload[..payload_bytes]),
            ..header
        };
        header.encode_into(head);
        debug_assert_eq!(RecordHeader::decode(head), Ok(header));
        self.slots[slot].payload_crc = header.payload_crc;
        self.outcome.stats.payload_bytes_zero_copy += payload_bytes as u64;
        self.submit_write_rest(slot)
    }

    fn submit_write_rest(&mut self, slot: usize) -> Result<(), RingError> {
        let s = &self.slots[slot];
        let total = HEADER_BYTES as u32 + round_up_block(s.payload_bytes as u64) as u32;
        let ptr = self.pool.ptr(slot);
        // SAFETY: written_bytes < total <= slot size.
        let src = unsafe { ptr.add(s.written_bytes as usize) };
        let entry = opcode::WriteFixed::new(
            types::Fd(self.device.fd()),
            src,
            total - s.written_bytes,
            slot as u16,
        )
        .offset(s.position + s.written_bytes as u64)
        .build()
        .user_data(slot as u64);
        self.push(entry)
    }

    /// Returns true when the record is complete and the slot free again.
    fn on_write(&mut self, slot: usize, result: i32) -> Result<bool, RingError> {
        let s = &mut self.slots[slot];
        let total = HEADER_BYTES as u32 + round_up_block(s.payload_bytes as u64) as u32;
        if result < 0 {
            let errno = -result;
            let offset = s.position + s.written_bytes as u64;
            if self.device.classify(errno) == ErrorClass::Retry && s.retries < RETRIES_MAX {
                s.retries += 1;
                self.outcome.stats.retries += 1;
                self.submit_write_rest(slot)?;
                return Ok(false);
            }
            return Err(self.device_error(
                "write",
                offset,
                std::io::Error::from_raw_os_error(errno),
            ));
        }
        s.written_bytes += result as u32;
        if result == 0 {
            let offset = s.position + s.written_bytes as u64;
            return Err(self.device_error(
                "write",
                offset,
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        }
        if s.written_bytes < total {
            self.outcome.stats.short_writes += 1;
            self.submit_write_rest(slot)?;
            return Ok(false);
        }
        let payload = s.payload_bytes as u64;
        s.phase = Phase::Free;
        let source = s.source.take().expect("writing slot has a source");
        self.outcome.records.push(RecordDone {
            file_id: source.file_id,
            file_offset: s.file_offset,
            payload_bytes: s.payload_bytes,
            payload_crc: s.payload_crc,
        });
        let stats = &mut self.outcome.stats;
        stats.payload_bytes += payload;
        stats.media_bytes += total as u64;
        stats.records += 1;
        self.progress.fetch_add(payload, Ordering::Relaxed);
        Ok(true)
    }
}
