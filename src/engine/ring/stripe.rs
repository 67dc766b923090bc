//! `--parity M` inside the data phase (issue 19, docs/DESIGN.md "Parity"):
//! the stripes are decided as the rings finalise their records, and each
//! stripe's parity is computed from the records' stored bytes while they
//! are still in the ring's slot, never read back.
//!
//! Each ring, when a data record is final (header filled, stored bytes and
//! CRC known, just before its write is submitted), hands `StripeSink::offer`
//! a copy of it as its shard (header block with the magic zeroed, stored
//! payload, zero padding: docs/FORMAT.md 5.1). The sink's
//! `plan::stripe::Assigner` puts it into a stripe; when a stripe closes,
//! its parity is encoded on the thread that closed it, after the sink's
//! lock is let go (the other rings go on offering meanwhile), straight
//! into the block-aligned buffer its record is written from (header block
//! left free), and each parity record is queued for the device that takes
//! it. A ring takes the parity records queued for it before new data
//! (`Ring::take_parity`), up to `PARITY_SLOTS` in flight, fills in the
//! header block (numbered as the next record of its stream), places it and
//! writes it from that buffer like a data record: parity bytes are never
//! copied. Memory: at most `window` open stripes of at most `k` shard
//! copies each, plus what is queued (buffers are kept for use again).
//!
//! A device that stops (full, failed) leaves: the open stripes holding one
//! of its records are dropped, and the parity queued for it is never
//! written. After the run, `backup::parity` keeps the stripes whose every
//! member is durable, and protects the other records with the
//! read-back fallback.

use std::collections::HashMap;
use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender};

use super::{io, Dispatcher, ErrorClass, Fault, Instant, Ring, Stop, RETRIES_TRANSIENT_MAX};
use crate::format::parity::{ParityHeader, StripeData};
use crate::format::{crc32c, SetId, HEADER_BYTES};
use crate::io::{BufferPool, Lease};
use crate::parity::Codec;
use crate::plan::stripe::{Assigner, Ended};

/// Open stripes at once, per device of the set (memory: this many
/// stripes of up to `k` records of one chunk each). A ring hands its
/// records over in bursts of up to its queue depth (32 by default), each
/// needing a stripe of its own: a window smaller than a burst closes
/// stripes narrow (more parity bytes: measured in PERF.md "#19 inline").
pub const WINDOW_PER_DEVICE: usize = 16;

/// A data record of a stripe: where it is (device, media offset) and
/// what it holds (its entry in the stripe's parity records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub device: u32,
    pub position: u64,
    pub data: StripeData,
}

/// A stripe the sink closed and encoded: its data records, the devices
/// taking its parity records (`parity[j]` takes record `j`), and each
/// parity record's payload CRC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedStripe {
    pub id: u64,
    pub data: Vec<Member>,
    pub parity: Vec<u32>,
    pub parity_crc: Vec<u32>,
    pub shard_bytes: u32,
}

/// A parity record a ring wrote and made durable (listed in its outcome).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParityDone {
    pub stripe: u64,
    pub index: usize,
    pub position: u64,
    pub sequence: u64,
}

/// A parity record queued for its device: the header (its `sequence` is
/// the ring's to set) and the buffer it is written from: the header block
/// (the ring's to fill), then the payload, `header.shard_bytes` long.
pub struct ParityRecord {
    pub header: ParityHeader,
    pub buffer: Lease,
}

impl ParityRecord {
    /// Bytes on media: header block and payload (a multiple of 4096).
    pub fn media_bytes(&self) -> usize {
        HEADER_BYTES + self.header.shard_bytes as usize
    }
}

/// Parity record buffers allocated at once when none is free.
const PARITY_BUFFERS_GROW: usize = 8;

struct State {
    assigner: Assigner,
    /// Open stripes by key: their records so far and each one's shard.
    open: HashMap<u64, Vec<(Member, Vec<u8>)>>,
    senders: Vec<Option<Sender<ParityRecord>>>,
    /// Devices still producing data (neither done nor gone).
    active: usize,
    closed: Vec<ClosedStripe>,
    codecs: Vec<Option<std::sync::Arc<Codec>>>,
}

/// A closed stripe to encode: its records and shards, its parity devices
/// and their queues.
struct Job {
    id: u64,
    records: Vec<(Member, Vec<u8>)>,
    parity: Vec<u32>,
    senders: Vec<Option<Sender<ParityRecord>>>,
}

/// The stripes of one backup run, shared by its rings (see the module doc).
pub struct StripeSink {
    m: usize,
    set_id: SetId,
    device_count: u32,
    state: Mutex<State>,
    receivers: Vec<Receiver<ParityRecord>>,
    /// Shard buffers to use again: a record-sized allocation per record
    /// would map and fault in fresh pages each time (measured: the kernel
    /// time of a run doubled). All are kept: never more than were in use
    /// at once.
    free: Mutex<Vec<Vec<u8>>>,
    /// Block-aligned buffers of one parity record each (header block and
    /// the largest shard), in pools that grow when every buffer is out; a
    /// buffer goes back when its ring drops the record's lease, written.
    parity_pools: Mutex<Vec<BufferPool>>,
    parity_record_bytes: usize,
}

impl StripeSink {
    /// The stripes of `device_count` devices with `m` parity records each,
    /// of records of at most `chunk_bytes` of payload.
    pub fn new(device_count: usize, m: usize, set_id: SetId, chunk_bytes: u32) -> StripeSink {
        assert!(m >= 1 && device_count > m);
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..device_count)
            .map(|_| {
                let (tx, rx) = crossbeam_channel::unbounded();
                (Some(tx), rx)
            })
            .unzip();
        StripeSink {
            m,
            set_id,
            device_count: device_count as u32,
            state: Mutex::new(State {
                assigner: Assigner::new(device_count, m, WINDOW_PER_DEVICE * device_count),
                open: HashMap::new(),
                senders,
                active: device_count,
                closed: Vec::new(),
                codecs: Vec::new(),
            }),
            receivers,
            free: Mutex::new(Vec::new()),
            parity_pools: Mutex::new(Vec::new()),
            parity_record_bytes: HEADER_BYTES
                + crate::format::parity::shard_bytes_for(chunk_bytes) as usize,
        }
    }

    /// A free parity record buffer (its bytes as last used).
    fn parity_buffer(&self) -> Lease {
        let mut pools = self.parity_pools.lock().expect("parity buffers");
        if let Some(lease) = pools.iter().find_map(BufferPool::lease) {
            return lease;
        }
        let pool = BufferPool::new(PARITY_BUFFERS_GROW, self.parity_record_bytes);
        let lease = pool.lease().expect("a new pool has free buffers");
        pools.push(pool);
        lease
    }

    /// A buffer of `len` bytes, zeros or not.
    fn buffer(&self, len: usize) -> Vec<u8> {
        let mut b = self
            .free
            .lock()
            .expect("stripe buffers")
            .pop()
            .unwrap_or_default();
        b.resize(len, 0);
        b
    }

    /// `record` (a record's bytes as they go to media: header block,
    /// stored payload, padding) copied as its shard: the magic zeroed.
    pub fn shard_of(&self, record: &[u8]) -> Vec<u8> {
        let mut shard = self.buffer(0);
        shard.extend_from_slice(record);
        crate::format::parity::record_to_shard(&mut shard);
        shard
    }

    /// A shard buffer back for use again.
    fn recycle(&self, buffer: Vec<u8>) {
        self.free.lock().expect("stripe buffers").push(buffer);
    }

    /// Parity records per stripe.
    pub fn m(&self) -> usize {
        self.m
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("stripe sink")
    }

    /// The parity records queued for `device`; disconnected once no more
    /// can come (every device done or gone).
    pub fn queue(&self, device: u32) -> &Receiver<ParityRecord> {
        &self.receivers[device as usize]
    }

    /// Device `member.device`'s record, final, with its shard (the record
    /// as it goes to media, magic zeroed). A record no stripe can take
    /// (too few devices left) stays unprotected here.
    pub fn offer(&self, member: Member, shard: Vec<u8>) {
        let mut st = self.lock();
        let (joined, ended) = st.assigner.offer(member.device, shard.len() as u64);
        if let Some(j) = joined {
            let records = st.open.entry(j.key).or_default();
            debug_assert_eq!(records.len(), j.index);
            records.push((member, shard));
        }
        let jobs = self.end(&mut st, ended);
        drop(st);
        self.encode_all(jobs);
    }

    /// `device` has written all its data (it still takes parity).
    pub fn done(&self, device: u32) {
        let mut st = self.lock();
        let ended = st.assigner.done(device);
        st.active -= 1;
        let jobs = self.end(&mut st, ended);
        self.disconnect_when_over(&mut st);
        drop(st);
        self.encode_all(jobs);
    }

    /// `device` stopped (full or failed): it takes no more part, and the
    /// open stripes holding its records are dropped. `producing`: it had
    /// not called `done`.
    pub fn leave(&self, device: u32, producing: bool) {
        let mut st = self.lock();
        let ended = st.assigner.leave(device);
        if producing {
            st.active -= 1;
        }
        st.senders[device as usize] = None;
        let jobs = self.end(&mut st, ended);
        self.disconnect_when_over(&mut st);
        drop(st);
        self.encode_all(jobs);
        // What was queued for it is never written.
        while self.receivers[device as usize].try_recv().is_ok() {}
    }

    fn disconnect_when_over(&self, st: &mut State) {
        if st.active == 0 {
            assert_eq!(st.assigner.open_stripes(), 0, "every stripe ended");
            st.senders.iter_mut().for_each(|s| *s = None);
        }
    }

    /// The stripes closed, by id (after the run).
    pub fn into_stripes(self) -> Vec<ClosedStripe> {
        let StripeSink {
            state,
            free,
            parity_pools,
            ..
        } = self;
        // The shard and parity buffers (a few hundred MiB at 4 devices)
        // are unmapped on a thread of their own: it took 0.1-0.2 s of the
        // run's wall after the data (PERF.md "2026-12-03, wt-19u").
        std::thread::spawn(move || drop((free, parity_pools)));
        let mut closed = state.into_inner().expect("stripe sink").closed;
        closed.sort_by_key(|s| s.id);
        if std::env::var_os("PBIO_DEBUG_STRIPES").is_some() {
            eprintln!("{}", stripe_histogram(&closed));
        }
        closed
    }

    /// The stripes that ended, to encode once the lock is let go (the
    /// other rings go on offering meanwhile). Each takes a clone of the
    /// senders of its parity devices: a queue stays open until what is
    /// being encoded for it is sent.
    fn end(&self, st: &mut State, ended: Vec<Ended>) -> Vec<Job> {
        let mut jobs = Vec::new();
        for e in ended {
            let records = st.open.remove(&e.key()).unwrap_or_default();
            let Ended::Closed {
                id, data, parity, ..
            } = e
            else {
                for (_, b) in records {
                    self.recycle(b);
                }
                continue;
            };
            debug_assert!(records
                .iter()
                .map(|(r, _)| r.device)
                .eq(data.iter().copied()));
            let senders = parity
                .iter()
                .map(|&d| st.senders[d as usize].clone())
                .collect();
            jobs.push(Job {
                id,
                records,
                parity,
                senders,
            });
        }
        jobs
    }

    fn encode_all(&self, jobs: Vec<Job>) {
        for job in jobs {
            self.encode(job);
        }
    }

    /// The codec of `k` data and `m` parity shards (made once).
    fn codec(&self, k: usize, m: usize) -> Option<std::sync::Arc<Codec>> {
        let mut st = self.lock();
        if st.codecs.len() <= k {
            st.codecs.resize_with(k + 1, || None);
        }
        if st.codecs[k].is_none() {
            st.codecs[k] = Codec::new(k, m).ok().map(std::sync::Arc::new);
        }
        st.codecs[k].clone()
    }

    /// Encode a closed stripe and queue its parity records.
    fn encode(&self, job: Job) {
        let Job {
            id,
            records,
            parity,
            senders,
        } = job;
        let k = records.len();
        let m = parity.len();
        let largest = records
            .iter()
            .map(|(r, _)| r.data.payload_bytes)
            .max()
            .unwrap_or(0);
        let shard_bytes = crate::format::parity::shard_bytes_for(largest);
        let shard = shard_bytes as usize;
        let Some(codec) = self.codec(k, m) else {
            return;
        };
        let mut members = Vec::with_capacity(k);
        let mut shards = Vec::with_capacity(k);
        for (r, mut bytes) in records {
            assert!(bytes.len() <= shard, "a record fits its stripe's shard");
            bytes.resize(shard, 0);
            members.push(r);
            shards.push(bytes);
        }
        // The codec writes every byte of its outputs.
        let mut buffers: Vec<Lease> = (0..m).map(|_| self.parity_buffer()).collect();
        let payload = HEADER_BYTES..HEADER_BYTES + shard;
        {
            let refs: Vec<&[u8]> = shards.iter().map(|s| &s[..]).collect();
            let mut outs: Vec<&mut [u8]> = buffers
                .iter_mut()
                .map(|b| &mut b.bytes_mut()[payload.clone()])
                .collect();
            if codec.encode(&refs, &mut outs).is_err() {
                return;
            }
        }
        for b in shards {
            self.recycle(b);
        }
        let all: Vec<u32> = members
            .iter()
            .map(|r| r.device)
            .chain(parity.iter().copied())
            .collect();
        let entries: Vec<StripeData> = members.iter().map(|r| r.data).collect();
        let mut crcs = Vec::with_capacity(m);
        for (j, buffer) in buffers.into_iter().enumerate() {
            let crc = crc32c(&buffer.bytes()[payload.clone()]);
            crcs.push(crc);
            let header = ParityHeader {
                set_id: self.set_id,
                device_index: parity[j],
                device_count: self.device_count,
                sequence: 0,
                stripe_id: id,
                position: (k + j) as u8,
                shard_bytes,
                payload_crc: crc,
                members: all.clone(),
                data: entries.clone(),
            };
            if let Some(tx) = &senders[j] {
                let _ = tx.send(ParityRecord { header, buffer });
            }
        }
        self.lock().closed.push(ClosedStripe {
            id,
            data: members,
            parity,
            parity_crc: crcs,
            shard_bytes,
        });
    }
}

/// A report of `stripes` for measurement (`PBIO_DEBUG_STRIPES=1` prints
/// it at the end of the data phase): how many of each width `k`, and how
/// many whose parity bytes are within each share of their data bytes.
pub fn stripe_histogram(stripes: &[ClosedStripe]) -> String {
    use std::collections::BTreeMap;
    let mut widths: BTreeMap<usize, (usize, u64, u64)> = BTreeMap::new();
    let mut shares: BTreeMap<u64, usize> = BTreeMap::new();
    for s in stripes {
        let data: u64 = s.data.iter().map(|r| u64::from(r.data.payload_bytes)).sum();
        let parity = s.parity.len() as u64 * u64::from(s.shard_bytes);
        let w = widths.entry(s.data.len()).or_default();
        *w = (w.0 + 1, w.1 + data, w.2 + parity);
        // Parity per data byte, in tenths rounded up (1 = up to 10 %).
        *shares
            .entry((parity * 10).div_ceil(data.max(1)))
            .or_default() += 1;
    }
    let mut out = String::from("stripes by k (count, data MiB, parity MiB):");
    for (k, (n, d, p)) in &widths {
        out += &format!(" k={k}: {n} {} {};", d >> 20, p >> 20);
    }
    out += " by parity/data (up to):";
    for (tenths, n) in &shares {
        out += &format!(" {}%: {n};", tenths * 10);
    }
    out
}

/// Parity records a ring has in hand (in flight) at once, each written
/// from the sink's buffer (not a registered one: plain writes). Parity is
/// a quarter of a device's bytes at 4 devices and M = 1: with 2 the queues
/// held 50-100 records while the data went 32 deep, and most parity was
/// written after the data (PERF.md "2026-12-03, wt-19u").
pub(super) const PARITY_SLOTS: usize = 32;

/// One parity record this ring took, in the order taken (media order).
struct ParityGen {
    stripe: u64,
    index: usize,
    sequence: u64,
    /// Media offset (`transform::UNPLACED` until placed).
    position: u64,
    /// Data records generated before it was taken: with the workers,
    /// it is placed once they all are (media order = sequence order).
    before_gen: usize,
    slot: usize,
    media_bytes: u32,
    written_bytes: u32,
    retries: u32,
    done: bool,
}

/// A ring's parity slots and the parity records it took.
#[derive(Default)]
pub(super) struct ParityRecords {
    /// The buffer of the record in slot `j` while it is in hand;
    /// `busy[j]`: which record that is.
    slots: Vec<Option<Lease>>,
    busy: Vec<Option<usize>>,
    records: Vec<ParityGen>,
    /// Taken, waiting for the data records numbered before them to be
    /// placed (with the workers).
    waiting: std::collections::VecDeque<usize>,
}

impl ParityRecords {
    pub(super) fn new() -> ParityRecords {
        ParityRecords {
            slots: (0..PARITY_SLOTS).map(|_| None).collect(),
            busy: vec![None; PARITY_SLOTS],
            records: Vec::new(),
            waiting: Default::default(),
        }
    }

    /// No parity record in hand (none taken and not yet durable).
    pub(super) fn idle(&self) -> bool {
        self.busy.iter().all(Option::is_none)
    }

    fn free_slot(&self) -> Option<usize> {
        self.busy.iter().position(Option::is_none)
    }

    /// Slot `j`'s record is over (written, or not to be): its buffer goes
    /// back to the sink.
    fn release(&mut self, j: usize) {
        self.busy[j] = None;
        self.slots[j] = None;
    }

    /// Where the records that are durable end, as far as the parity
    /// records go: the first one placed whose write did not complete.
    fn first_not_done(&self) -> Option<u64> {
        self.records
            .iter()
            .filter(|p| p.position != super::transform::UNPLACED && !p.done)
            .map(|p| p.position)
            .min()
    }

    /// The parity records durable before `end`.
    pub(super) fn kept(&self, end: u64) -> Vec<ParityDone> {
        self.records
            .iter()
            .filter(|p| p.done && p.position < end)
            .map(|p| ParityDone {
                stripe: p.stripe,
                index: p.index,
                position: p.position,
                sequence: p.sequence,
            })
            .collect()
    }
}

impl<'a> Ring<'a> {
    /// Media offset up to which every record placed, data or parity, has
    /// its write completed (the durable prefix's end).
    pub(super) fn durable_end(&self) -> u64 {
        let data = self
            .gens
            .iter()
            .find(|g| !g.done)
            .map_or(self.position, |g| g.position);
        self.parity.first_not_done().map_or(data, |p| p.min(data))
    }

    /// Hand the data record in `slot`, final, to the stripes.
    pub(super) fn offer_record(&self, sink: &StripeSink, slot: usize) {
        let s = &self.slots[slot];
        let g = &self.gens[s.gen];
        let media = self.record_media_bytes(slot) as usize;
        let member = Member {
            device: self.config.device_index,
            position: g.position,
            data: StripeData {
                sequence: g.sequence,
                file_id: self.taken[g.taken as usize].item.file,
                file_offset: g.file_offset,
                payload_bytes: g.payload_bytes,
                payload_crc: g.payload_crc,
            },
        };
        sink.offer(member, sink.shard_of(&s.lease.bytes()[..media]));
    }

    /// Take the parity records queued for this device while a parity
    /// slot is free: each numbered as the next record, and placed and
    /// written as soon as the data records numbered before it are placed.
    pub(super) fn take_parity(&mut self) -> Result<(), Stop> {
        let Some(sink) = self.stripes else {
            return Ok(());
        };
        while let Some(j) = self.parity.free_slot() {
            let Ok(record) = sink.queue(self.config.device_index).try_recv() else {
                break;
            };
            self.accept_parity(j, record)?;
        }
        self.place_waiting_parity(self.next_write_gen())
    }

    /// The first data record not placed yet (all are, without workers).
    fn next_write_gen(&self) -> usize {
        if self.transforming() {
            self.next_write
        } else {
            self.gens.len()
        }
    }

    fn accept_parity(&mut self, j: usize, record: ParityRecord) -> Result<(), Stop> {
        let media_bytes = record.media_bytes();
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let header = ParityHeader {
            sequence,
            ..record.header
        };
        let mut buffer = record.buffer;
        header.encode_into(&mut buffer.bytes_mut()[..HEADER_BYTES]);
        self.parity.slots[j] = Some(buffer);
        let p = self.parity.records.len();
        self.parity.records.push(ParityGen {
            stripe: header.stripe_id,
            index: header.position as usize - header.k(),
            sequence,
            position: super::transform::UNPLACED,
            before_gen: self.gens.len(),
            slot: j,
            media_bytes: media_bytes as u32,
            written_bytes: 0,
            retries: 0,
            done: false,
        });
        self.parity.busy[j] = Some(p);
        self.parity.waiting.push_back(p);
        Ok(())
    }

    /// Place and write the parity records waiting whose data records
    /// before them are all placed (`gen`: the first not placed).
    pub(super) fn place_waiting_parity(&mut self, gen: usize) -> Result<(), Stop> {
        while let Some(&p) = self.parity.waiting.front() {
            if self.parity.records[p].before_gen > gen {
                break;
            }
            self.parity.waiting.pop_front();
            let media = self.parity.records[p].media_bytes as u64;
            if self.position + media > self.usable_bytes {
                // No room: not written (its stripe is protected after the
                // data, or reported, by `backup::parity`).
                self.parity.release(self.parity.records[p].slot);
                continue;
            }
            self.parity.records[p].position = self.position;
            self.position += media;
            self.submit_parity_write(p)?;
        }
        Ok(())
    }

    fn submit_parity_write(&mut self, p: usize) -> Result<(), Stop> {
        let r = &self.parity.records[p];
        let user_data = (self.slots.len() + r.slot) as u64;
        let lease = self.parity.slots[r.slot]
            .as_ref()
            .expect("a parity record in hand has its buffer");
        if let Some(transport) = self.transport.as_mut() {
            debug_assert_eq!(r.written_bytes, 0);
            transport.submit_write(user_data, lease, r.media_bytes, r.position);
            return Ok(());
        }
        let range = r.written_bytes as usize..r.media_bytes as usize;
        let offset = r.position + r.written_bytes as u64;
        let entry = io::write_at(self.device.fd(), lease, range, offset);
        self.push(entry.user_data(user_data))
    }

    /// A parity slot's write completed with `result`.
    pub(super) fn on_parity_write(&mut self, j: usize, result: i32) -> Result<(), Stop> {
        let p = self.parity.busy[j].expect("a completion for a parity slot in use");
        let r = &mut self.parity.records[p];
        let offset = r.position + r.written_bytes as u64;
        let errno = match result {
            e if e < 0 => -e,
            0 => libc::ENOSPC,
            n => {
                r.written_bytes += n as u32;
                if r.written_bytes < r.media_bytes {
                    self.stats.short_writes += 1;
                    return self.submit_parity_write(p);
                }
                r.done = true;
                self.parity.release(j);
                return Ok(());
            }
        };
        let error = std::io::Error::from_raw_os_error(errno);
        match self.device.classify(errno) {
            ErrorClass::Retry if r.retries < RETRIES_TRANSIENT_MAX => {
                r.retries += 1;
                self.stats.retries += 1;
                self.submit_parity_write(p)
            }
            ErrorClass::Full => Err(Stop::Full {
                error: Fault::Write { offset, error },
                physical: true,
            }),
            _ if r.retries < self.config.write_retries => {
                r.retries += 1;
                self.stats.retries += 1;
                self.submit_parity_write(p)
            }
            _ => Err(Stop::Failed {
                error: Fault::WriteRetried {
                    offset,
                    error,
                    retries: r.retries,
                },
            }),
        }
    }

    /// After a stop: a parity slot's completion reaped (`drain`).
    pub(super) fn parity_drained(&mut self, j: usize, result: i32) {
        let Some(p) = self.parity.busy[j] else {
            return;
        };
        let r = &mut self.parity.records[p];
        if result > 0 {
            r.written_bytes += result as u32;
            r.done = r.written_bytes == r.media_bytes;
        }
        self.parity.release(j);
    }

    /// A ring with `--parity` and nothing in flight, whose work is not
    /// over: idle for the dispatcher while it waits a moment for parity
    /// records or work.
    pub(super) fn wait_for_work(&mut self, dispatcher: &Dispatcher) -> Result<(), Stop> {
        let sink = self.stripes.expect("only a ring with stripes waits here");
        let index = self.config.device_index;
        let since = Instant::now();
        dispatcher.idle(index as usize);
        let got = sink.queue(index).recv_timeout(PARITY_POLL);
        dispatcher.waited_for(index as usize, since.elapsed());
        if let (Ok(record), Some(j)) = (got, self.parity.free_slot()) {
            self.accept_parity(j, record)?;
            self.place_waiting_parity(self.next_write_gen())?;
        }
        Ok(())
    }

    /// The device stops before its data is all written (full, failed):
    /// it leaves the stripes (`StripeSink::leave`).
    pub(super) fn leave_stripes(&mut self, producing: bool) {
        if let Some(sink) = self.stripes.take() {
            sink.leave(self.config.device_index, producing);
        }
    }

    /// The device's data is all written: it is finished for the
    /// dispatcher (it hands nothing back any more), its records are all
    /// offered, and it writes the parity records the stripes still give
    /// it until every device is done. A parity write that fails here
    /// leaves the data as it is (durable): only the stripes whose parity
    /// is not written lose it, and `backup::parity` protects them again.
    pub(super) fn parity_tail(&mut self, dispatcher: &Dispatcher) -> Option<Stop> {
        let sink = self.stripes?;
        let index = self.config.device_index;
        dispatcher.finish(index as usize);
        sink.done(index);
        let mut completions = Vec::new();
        let mut inflight = 0usize;
        let outcome = loop {
            if let Err(stop) = self.take_parity() {
                break Err(stop);
            }
            if self.parity.idle() {
                match sink.queue(index).recv() {
                    Ok(record) => {
                        let j = self.parity.free_slot().expect("idle: every slot free");
                        let placed = self
                            .accept_parity(j, record)
                            .and_then(|()| self.place_waiting_parity(self.gens.len()));
                        if let Err(stop) = placed {
                            break Err(stop);
                        }
                        continue;
                    }
                    Err(_) => break Ok(()),
                }
            }
            if let Err(stop) = self.pump_transport() {
                break Err(stop);
            }
            if self.ring.in_flight() == 0 {
                continue;
            }
            if let Err(e) = self.ring.turn(&mut completions) {
                break Err(Stop::Failed {
                    error: Fault::Enter(e),
                });
            }
            if let Err(stop) = self.act(&completions, &mut inflight) {
                break Err(stop);
            }
        };
        if outcome.is_err() {
            self.drain();
            self.leave_stripes(false);
        }
        self.stripes = None;
        None
    }
}

/// How long an idle ring with `--parity` waits for a parity record
/// before it asks the dispatcher for work again.
const PARITY_POLL: std::time::Duration = std::time::Duration::from_millis(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn byte(device: u32, n: u64) -> u8 {
        (device as u64 * 37 + n * 11 + 5) as u8
    }

    fn member(device: u32, n: u64) -> Member {
        Member {
            device,
            position: 4096 + n * 8192,
            data: StripeData {
                sequence: n,
                file_id: device,
                file_offset: n * 4096,
                payload_bytes: 4096,
                payload_crc: 0,
            },
        }
    }

    #[test]
    fn parity_goes_to_the_device_outside_each_stripe() {
        let sink = StripeSink::new(4, 1, SetId([7; 16]), 4096);
        for n in 0..4u64 {
            for d in 0..4u32 {
                sink.offer(member(d, n), vec![byte(d, n); 8192]);
            }
        }
        for d in 0..4 {
            sink.done(d);
        }
        let (mut queued, mut full) = (0, 0);
        for d in 0..4u32 {
            for rec in sink.queue(d).try_iter() {
                assert_eq!(rec.header.device_index, d);
                let k = rec.header.k();
                full += usize::from(k == 3);
                assert!(!rec.header.members[..k].contains(&d));
                // The parity of the stripe's shards, as the codec computes it.
                let shards: Vec<Vec<u8>> = rec
                    .header
                    .data
                    .iter()
                    .zip(&rec.header.members)
                    .map(|(e, &d)| vec![byte(d, e.sequence); 8192])
                    .collect();
                let refs: Vec<&[u8]> = shards.iter().map(|v| &v[..]).collect();
                let mut want = vec![0u8; 8192];
                Codec::new(k, 1)
                    .unwrap()
                    .encode(&refs, &mut [&mut want[..]])
                    .unwrap();
                assert_eq!(rec.media_bytes(), HEADER_BYTES + 8192);
                assert_eq!(&rec.buffer.bytes()[HEADER_BYTES..rec.media_bytes()], want);
                queued += 1;
            }
            assert!(sink.queue(d).recv().is_err(), "disconnected at the end");
        }
        // The last records, offered after the others were done, make
        // narrower stripes: all but those are full width.
        assert!(full >= 3, "{full} full stripes of {queued}");
        let stripes = sink.into_stripes();
        assert_eq!(stripes.len(), queued);
        assert_eq!(stripes.iter().map(|s| s.data.len()).sum::<usize>(), 16);
        assert!(stripes.iter().enumerate().all(|(i, s)| s.id == i as u64));
    }

    #[test]
    fn a_device_that_leaves_loses_its_queue_and_open_stripes() {
        let sink = StripeSink::new(3, 1, SetId([7; 16]), 4096);
        sink.offer(member(0, 0), vec![1; 8192]);
        sink.leave(0, true);
        sink.offer(member(1, 0), vec![2; 8192]);
        sink.done(1);
        sink.done(2);
        assert!(sink.queue(0).recv().is_err());
        let stripes = sink.into_stripes();
        // Device 1's record alone: k = 1 with device 2 as parity.
        assert_eq!(stripes.len(), 1);
        assert_eq!(stripes[0].parity, [2]);
        assert_eq!(stripes[0].data[0].device, 1);
    }
}
