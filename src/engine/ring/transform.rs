//! `--compress`: each record's payload compressed on worker threads, never
//! on the ring thread, so that compression never makes a device wait for
//! the CPU of its own ring (it may wait for the workers: that wait is
//! counted, `RingStats::transform_wait`, and the summary says so).
//!
//! A record whose read completed goes to the workers (`Phase::Transforming`):
//! a worker hashes the payload (BLAKE3, the file digest's), compresses it
//! into its own scratch buffer and, when it shrank, copies the compressed
//! bytes back over the payload in the slot's buffer and computes their
//! CRC32C. The ring thread then only fills the header.
//!
//! A record's place on media depends on its stored length, known only
//! once compressed, so records get their media offsets in media (gen)
//! order as they come back (`place_ready`), as a tape's blocks are
//! written: a record compressed early waits `Ready` for the ones before it.
//! Memory-mapped devices take transformed records the same way: read
//! into the slot, transformed there, then copied into the mapping at
//! their place (`copy_in_place`) instead of written.

use super::*;
use crate::format::codec::{Compression, Compressor};
use crate::format::{Codec, Transform};

/// A record's payload (in a slot of the ring's pool) for the workers.
pub(super) struct TransformJob {
    slot: usize,
    gen: usize,
    payload: *mut u8,
    payload_bytes: usize,
    /// With `--encrypt`: the header block in front of the payload, encoded
    /// with its file info in clear, and the header it holds; the worker
    /// seals the info and payload and finishes the block.
    head: *mut u8,
    header: Option<RecordHeader>,
}

// SAFETY: the payload lies in the ring's buffer pool, which outlives the
// workers (joined at the end of `Ring::run`'s scope, after
// `await_all_transforms`); while a job is out its slot is `Transforming`:
// no I/O is queued on it and the ring thread does not touch its bytes
// until the job is back (`on_transformed`), and the slot is not reused
// before every job is back.
unsafe impl Send for TransformJob {}

/// What a worker made of a record.
pub(super) struct TransformDone {
    slot: usize,
    gen: usize,
    hash: [u8; 32],
    crc: u32,
    transform: Transform,
    cpu: Duration,
}

/// The ring's side of its workers.
pub(super) struct Workers {
    jobs: crossbeam_channel::Sender<TransformJob>,
    done: crossbeam_channel::Receiver<TransformDone>,
    pub(super) pending: usize,
}

/// Unassigned media offset of a record generated but not yet placed.
pub(super) const UNPLACED: u64 = u64::MAX;

/// Start `threads` workers inside `scope`; None when none could start
/// (the records are then stored raw, hashed by the hasher).
pub(super) fn spawn_workers<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    setting: Option<Compression>,
    encryption: Option<crate::format::seal::SetEncryption>,
    threads: usize,
    device_index: usize,
) -> Option<Workers> {
    let (jobs, queue) = crossbeam_channel::unbounded::<TransformJob>();
    let (done_tx, done) = crossbeam_channel::unbounded::<TransformDone>();
    let mut started = 0;
    for w in 0..threads {
        let (queue, done_tx) = (queue.clone(), done_tx.clone());
        let encryption = encryption.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("pbio-z{device_index}.{w}"))
            .spawn_scoped(scope, move || {
                let mut compressor = setting.map(Compressor::new);
                let sealing = encryption.map(|e| e.record_key(device_index as u32));
                let mut scratch = Vec::new();
                for job in queue {
                    let started = Instant::now();
                    // SAFETY: see `TransformJob`: the slot's bytes are this
                    // job's alone until it is received back.
                    let payload =
                        unsafe { std::slice::from_raw_parts_mut(job.payload, job.payload_bytes) };
                    let hash = crate::format::payload_hash(payload);
                    let compressed = compressor
                        .as_mut()
                        .and_then(|c| Some((c.compress(payload, &mut scratch)?, c.codec())));
                    let mut transform = match compressed {
                        Some((n, codec)) => {
                            payload[..n].copy_from_slice(&scratch[..n]);
                            Transform {
                                codec,
                                stored_bytes: n as u32,
                                ..Transform::RAW
                            }
                        }
                        None => Transform::RAW,
                    };
                    let stored = match transform.codec {
                        Codec::Raw => job.payload_bytes,
                        _ => transform.stored_bytes as usize,
                    };
                    if let (Some(key), Some(header)) = (&sealing, job.header) {
                        // SAFETY: as the payload: the header block of
                        // this job's slot is the job's alone.
                        let head =
                            unsafe { std::slice::from_raw_parts_mut(job.head, HEADER_BYTES) };
                        let header = RecordHeader {
                            transform,
                            ..header
                        };
                        let info = RecordHeader::info_area_mut(head);
                        transform.seal = key.seal(&header, info, &mut payload[..stored]);
                    }
                    let crc = crate::format::crc32c(&payload[..stored]);
                    if let (Some(_), Some(header)) = (&sealing, job.header) {
                        // SAFETY: as above.
                        let head =
                            unsafe { std::slice::from_raw_parts_mut(job.head, HEADER_BYTES) };
                        RecordHeader {
                            payload_crc: crc,
                            transform,
                            ..header
                        }
                        .finish_in_place(head);
                    }
                    let done = TransformDone {
                        slot: job.slot,
                        gen: job.gen,
                        hash,
                        crc,
                        transform,
                        cpu: started.elapsed(),
                    };
                    if done_tx.send(done).is_err() {
                        break;
                    }
                }
            });
        started += usize::from(spawned.is_ok());
    }
    (started > 0).then_some(Workers {
        jobs,
        done,
        pending: 0,
    })
}

impl<'a> Ring<'a> {
    /// Records go through the workers (compression or encryption on).
    pub(super) fn transforming(&self) -> bool {
        self.workers.is_some()
    }

    /// Memory-mapped device whose records are read straight into their
    /// place (not transformed: the workers need them in a slot).
    pub(super) fn read_in_place(&self) -> Option<Mapping> {
        self.mapping.filter(|_| !self.transforming())
    }

    /// Hand a record whose read completed to the workers.
    pub(super) fn send_transform(&mut self, slot: usize) {
        // With `--encrypt` the header (its file info in clear) is encoded
        // now: the worker seals it with the payload. A record's sequence
        // number is its gen (`submit_write`).
        let header = self
            .config
            .encryption
            .as_ref()
            .map(|_| self.data_header(slot, self.gens[self.slots[slot].gen].sequence));
        let s = &mut self.slots[slot];
        let payload_bytes = self.gens[s.gen].payload_bytes as usize;
        if let Some(header) = &header {
            let source = s.source.as_ref().expect("a read slot has a source");
            let info = source.info_at(header.file_offset);
            header.encode_with_info(Some(info), &mut s.lease.bytes_mut()[..HEADER_BYTES]);
        }
        let bytes = s.lease.bytes_mut();
        let job = TransformJob {
            slot,
            gen: s.gen,
            payload: bytes[HEADER_BYTES..].as_mut_ptr(),
            payload_bytes,
            head: bytes.as_mut_ptr(),
            header,
        };
        s.phase = Phase::Transforming;
        let w = self.workers.as_mut().expect("transforming with workers");
        w.jobs
            .send(job)
            .expect("the workers live as long as the ring runs");
        w.pending += 1;
    }

    /// Take the records the workers are done with; wait for one when
    /// `block` (the time waited counts as the device waiting for the CPU).
    /// Each comes back `Ready`; then place what can be placed.
    pub(super) fn collect_transforms(&mut self, block: bool) -> Result<(), Stop> {
        let Some(w) = self.workers.as_mut() else {
            return Ok(());
        };
        let mut got = Vec::new();
        if block && w.pending > 0 {
            let waited = Instant::now();
            got.push(w.done.recv().expect("workers outlive the loop"));
            let waited = waited.elapsed();
            self.stats.transform_wait += waited;
            let us = waited.as_micros() as u64;
            self.config.cpu_wait_us.fetch_add(us, Ordering::Relaxed);
        }
        got.extend(w.done.try_iter());
        for done in got {
            self.on_transformed(done, true);
        }
        if self.sequential {
            self.pump()
        } else {
            self.place_ready()
        }
    }

    /// Note a worker's result; `act`: the slot becomes `Ready` (else the
    /// run has stopped and only the record's hash matters).
    fn on_transformed(&mut self, done: TransformDone, act: bool) {
        let w = self.workers.as_mut().expect("a result from the workers");
        w.pending -= 1;
        let g = &mut self.gens[done.gen];
        g.payload_hash = done.hash;
        g.hashed = true;
        g.payload_crc = done.crc;
        g.transform = done.transform;
        g.transformed = true;
        self.stats.transform_cpu += done.cpu;
        if act && self.slots[done.slot].phase == Phase::Transforming {
            let slot = done.slot;
            if self.sequential {
                self.fill_record(slot);
            }
            self.slots[slot].phase = Phase::Ready;
        }
    }

    /// Wait for every record still with the workers (before the buffers
    /// are reused or freed).
    pub(super) fn await_all_transforms(&mut self) {
        while let Some(w) = self.workers.as_mut().filter(|w| w.pending > 0) {
            let done = w.done.recv().expect("workers outlive the loop");
            self.on_transformed(done, false);
        }
    }

    /// Random access: give the records that are `Ready`, in media order,
    /// their media offsets and write them; a record that does not fit
    /// the usable capacity stops the device as full.
    pub(super) fn place_ready(&mut self) -> Result<(), Stop> {
        loop {
            let gen = self.next_write;
            self.place_waiting_parity(gen)?;
            let Some(slot) = self.ready_slot(gen) else {
                return Ok(());
            };
            self.place(gen)?;
            self.next_write += 1;
            self.submit_write(slot)?;
        }
    }

    /// Give record `gen` its media offset (the next one), if it has none.
    pub(super) fn place(&mut self, gen: usize) -> Result<(), Stop> {
        if self.gens[gen].position != UNPLACED {
            return Ok(());
        }
        let media = HEADER_BYTES as u64 + round_up_block(self.gens[gen].stored_len() as u64);
        self.check_room(media)?;
        self.gens[gen].position = self.position;
        self.position += media;
        Ok(())
    }

    /// After a stop: records never placed lie, for `finish`, where the
    /// next one would have gone.
    pub(super) fn settle_unplaced(&mut self) {
        for g in self.gens.iter_mut().filter(|g| g.position == UNPLACED) {
            g.position = self.position;
        }
    }

    /// The record in `slot` as the workers left it: fill its header from
    /// what they computed (CRC of the stored bytes, transform), pad.
    pub(super) fn fill_transformed(&mut self, slot: usize, header: RecordHeader) {
        let s = &mut self.slots[slot];
        let g = &self.gens[s.gen];
        let stored = g.stored_len() as usize;
        let padded = round_up_block(stored as u64) as usize;
        let buffer = &mut s.lease.bytes_mut()[..HEADER_BYTES + padded];
        let (head, payload) = buffer.split_at_mut(HEADER_BYTES);
        payload[stored..padded].fill(0);
        let header = RecordHeader {
            payload_crc: g.payload_crc,
            transform: g.transform,
            ..header
        };
        if g.transform.seal.is_sealed() {
            // The worker sealed and finished the header block.
            debug_assert_eq!(RecordHeader::decode(head), Ok(header));
            return;
        }
        let source = s.source.as_ref().expect("writing slot has a source");
        header.encode_with_info(Some(source.info_at(header.file_offset)), head);
        if g.transform.codec == Codec::Raw {
            self.stats.payload_bytes_zero_copy += g.payload_bytes as u64;
        }
    }
}
