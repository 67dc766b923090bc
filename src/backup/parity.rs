//! The parity phase of a backup with `--parity M` (issue 19,
//! docs/DESIGN.md "Parity"): after the data phase, before the catalog.
//!
//! The data phase is unchanged: every device streams its data records.
//! Then the records that are durable on the devices that completed are
//! grouped into stripes (`plan::stripe::over_written`: one record per data
//! member, the parity on the members with the least data), the parity of
//! each stripe is computed on worker threads over the data records **as
//! stored** (docs/FORMAT.md 5.1: each read back from its device, header
//! block and stored payload, compressed and/or sealed as written, checked
//! against what the ring made durable), and each
//! device's parity records are written after its data by a writer thread
//! of its own, in order, so each device streams its parity as it streamed
//! its data. A failed device takes no part: the survivors' records are
//! striped among the survivors, so a set whose device failed mid-run is
//! still protected against `M` more losses.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::device::{Access, Device, Kind};
use crate::format::parity::{shard_bytes_for, ParityHeader, StripeData};
use crate::format::{
    crc32c, round_up_block, CatalogParity, CatalogStripe, StripeRecord, HEADER_BYTES,
};
use crate::io::buffers::BufferPool;
use crate::media;
use crate::parity::Codec;
use crate::plan::stripe;

use super::{BackupConfig, DeviceEnd};
use crate::engine::ring::{RecordDone, RingOutcome};

/// Whether a device of this kind can hold parity: it must be readable at
/// any record's offset (a restore reads the members of a stripe by offset).
pub fn parity_capable(dev: &dyn Device) -> bool {
    dev.access() == Access::Random && matches!(dev.kind(), Kind::File | Kind::Block | Kind::Nbd)
}

/// What the parity phase did.
#[derive(Debug, Default)]
pub struct ParityOutcome {
    /// The catalog's parity section (None without `--parity`).
    pub section: Option<CatalogParity>,
    /// Per device: where its catalog goes (after its parity records) and
    /// the sequence number of its next record.
    pub after: Vec<(u64, u64)>,
    /// Parity records and their payload bytes written, in all.
    pub records: u64,
    pub payload_bytes: u64,
    /// Data records left without parity (a stripe whose parity could not
    /// be written or computed), and why, for the report.
    pub unprotected_records: u64,
    pub warnings: Vec<ParityWarning>,
}

/// Why a set's data is not all covered by parity (the run goes on).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParityWarning {
    /// The written records make no stripe layout.
    #[error("no parity written: {0}")]
    NoLayout(stripe::StripeError),
    /// Stripes short of parity records.
    #[error(
        "{records} data records have fewer than {m} parity records (no room, or a write failed)"
    )]
    Unprotected { records: u64, m: usize },
}

/// One parity record to write: (stripe, parity index) with its bytes
/// (header block and payload padded to a block).
struct Encoded {
    stripe: usize,
    parity: usize,
    bytes: Vec<u8>,
    /// CRC32C of the parity payload (as in its header).
    crc: u32,
}

/// Run the parity phase (see the module doc). `reserve_bytes` of each
/// device stay free for its catalog.
pub(super) fn write_parity(
    devices: &[Box<dyn Device>],
    outcomes: &[RingOutcome],
    ends: &[DeviceEnd],
    config: &BackupConfig,
) -> ParityOutcome {
    let mut out = ParityOutcome {
        after: outcomes
            .iter()
            .map(|o| (o.data_end, o.stats.records))
            .collect(),
        ..ParityOutcome::default()
    };
    let m = config.parity;
    if m == 0 {
        return out;
    }
    let records: Vec<Option<u64>> = outcomes
        .iter()
        .zip(ends)
        .map(|(o, e)| (*e == DeviceEnd::Complete).then_some(o.records.len() as u64))
        .collect();
    let layout = match stripe::over_written(&records, m) {
        Ok(layout) => layout,
        Err(e) => {
            out.warnings.push(ParityWarning::NoLayout(e));
            out.unprotected_records = outcomes.iter().map(|o| o.records.len() as u64).sum();
            out.section = Some(CatalogParity {
                m: m as u32,
                stripes: Vec::new(),
            });
            return out;
        }
    };
    // Each stripe's data records, in data order.
    let mut next: Vec<usize> = vec![0; devices.len()];
    // A data record's sequence is its place among its device's records.
    let mut sequences: Vec<Vec<u64>> = Vec::with_capacity(layout.len());
    let mut stripes: Vec<CatalogStripe> = Vec::with_capacity(layout.len());
    for s in &layout {
        let mut seq = Vec::with_capacity(s.data.len());
        let mut data = Vec::with_capacity(s.data.len());
        for &d in &s.data {
            let d = d as usize;
            let r: &RecordDone = &outcomes[d].records[next[d]];
            seq.push(next[d] as u64);
            next[d] += 1;
            data.push(StripeRecord {
                device: d as u32,
                position: r.position,
                file_id: r.file_id,
                file_offset: r.file_offset,
                payload_bytes: r.payload_bytes,
                payload_crc: r.payload_crc,
            });
        }
        sequences.push(seq);
        stripes.push(CatalogStripe {
            data,
            parity: Vec::new(),
        });
    }
    // Where each parity record goes: after the device's data, in stripe
    // order, while the device keeps room for its catalog.
    let mut placed: Vec<Vec<Option<(u64, u64)>>> = Vec::with_capacity(layout.len());
    for (s, st) in layout.iter().zip(&stripes) {
        let media_bytes = HEADER_BYTES as u64 + round_up_block(st.shard_bytes().into());
        placed.push(
            s.parity
                .iter()
                .map(|&d| {
                    let d = d as usize;
                    let (at, seq) = out.after[d];
                    let room = devices[d]
                        .capacity_bytes()
                        .saturating_sub(config.reserve_bytes);
                    (at + media_bytes <= room).then(|| {
                        out.after[d] = (at + media_bytes, seq + 1);
                        (at, seq)
                    })
                })
                .collect(),
        );
    }
    let written = encode_and_write(devices, config, &layout, &stripes, &sequences, &placed);
    for (si, (s, st)) in layout.iter().zip(stripes.iter_mut()).enumerate() {
        // Parity record j is shard k + j: only a prefix is listed (a
        // record after one that is not durable cannot be placed).
        for (j, &d) in s.parity.iter().enumerate() {
            let (Some((position, _)), Some(crc)) = (placed[si][j], written[si][j]) else {
                break;
            };
            {
                st.parity.push(StripeRecord {
                    device: d,
                    position,
                    file_id: 0,
                    file_offset: 0,
                    payload_bytes: st.shard_bytes(),
                    payload_crc: crc,
                });
                out.records += 1;
                out.payload_bytes += u64::from(st.shard_bytes());
            }
        }
        if st.parity.len() < m {
            out.unprotected_records += st.data.len() as u64;
        }
    }
    if out.unprotected_records > 0 {
        out.warnings.push(ParityWarning::Unprotected {
            records: out.unprotected_records,
            m,
        });
    }
    out.section = Some(CatalogParity {
        m: m as u32,
        stripes,
    });
    out
}

/// Parity records queued per device (bounded memory).
const QUEUE_PER_DEVICE: usize = 8;
/// Most bytes of contiguous parity records written at once.
const BATCH_BYTES_MAX: usize = 8 << 20;

/// Contiguous parity records of one device gathered into one aligned
/// buffer, written with one positioned write.
struct Batch {
    pool: BufferPool,
    start: u64,
    len: usize,
    /// (stripe, parity index, payload CRC) of the records in it.
    records: Vec<(usize, usize, u32)>,
}

impl Batch {
    fn new(record_bytes_max: usize) -> Batch {
        Batch {
            pool: BufferPool::new(1, BATCH_BYTES_MAX.max(record_bytes_max)),
            start: 0,
            len: 0,
            records: Vec::new(),
        }
    }

    /// Whether a record of `bytes` at `position` can join the batch.
    fn fits(&self, position: u64, bytes: usize) -> bool {
        self.len == 0
            || (position == self.start + self.len as u64
                && self.len + bytes <= self.pool.slot_bytes())
    }

    fn push(&mut self, position: u64, bytes: &[u8], record: (usize, usize, u32)) {
        assert!(self.fits(position, bytes.len()));
        if self.len == 0 {
            self.start = position;
        }
        self.pool.slot_mut(0)[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        self.records.push(record);
    }

    /// Write the batch; the records made durable (once the device syncs),
    /// none after a failed write (and none after it: `failed`).
    fn flush(&mut self, dev: &dyn Device, failed: &mut bool) -> Vec<(usize, usize, u32)> {
        let records = std::mem::take(&mut self.records);
        let len = std::mem::take(&mut self.len);
        if len == 0 || *failed {
            return Vec::new();
        }
        if media::write_all_at(dev, &self.pool.slot(0)[..len], self.start).is_err() {
            *failed = true;
            return Vec::new();
        }
        records
    }
}

/// Encode every stripe's parity on worker threads and write each device's
/// parity records on a thread of its own, in stripe order. Per stripe and
/// parity index: the payload CRC of a record that is durable, else None.
fn encode_and_write(
    devices: &[Box<dyn Device>],
    config: &BackupConfig,
    layout: &[stripe::WrittenStripe],
    stripes: &[CatalogStripe],
    sequences: &[Vec<u64>],
    placed: &[Vec<Option<(u64, u64)>>],
) -> Vec<Vec<Option<u32>>> {
    let result: Mutex<Vec<Vec<Option<u32>>>> =
        Mutex::new(layout.iter().map(|s| vec![None; s.parity.len()]).collect());
    let next_stripe = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    // Writers take the records of their device in stripe order: a worker
    // hands over its stripe's records when all earlier stripes' are.
    let handed = Mutex::new(0usize);
    let turn = std::sync::Condvar::new();
    std::thread::scope(|scope| {
        let mut senders = Vec::new();
        for (d, dev) in devices.iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded::<Encoded>(QUEUE_PER_DEVICE);
            senders.push(tx);
            let (dev, result) = (dev.as_ref(), &result);
            let pool_bytes = HEADER_BYTES + shard_bytes_for(config.chunk_bytes) as usize;
            scope.spawn(move || {
                let mut batch = Batch::new(pool_bytes);
                let mut failed = false;
                let flush = |batch: &mut Batch, failed: &mut bool| {
                    let done = batch.flush(dev, failed);
                    let mut r = result.lock().expect("parity result");
                    for (s, j, crc) in done {
                        r[s][j] = Some(crc);
                    }
                };
                loop {
                    // Records of one device are contiguous on it: gather
                    // what has arrived into one large write.
                    let e = match rx.try_recv() {
                        Ok(e) => e,
                        Err(crossbeam_channel::TryRecvError::Empty) => {
                            flush(&mut batch, &mut failed);
                            match rx.recv() {
                                Ok(e) => e,
                                Err(_) => break,
                            }
                        }
                        Err(crossbeam_channel::TryRecvError::Disconnected) => break,
                    };
                    let Some((position, _)) = placed[e.stripe][e.parity] else {
                        continue;
                    };
                    if failed {
                        continue;
                    }
                    if !batch.fits(position, e.bytes.len()) {
                        flush(&mut batch, &mut failed);
                    }
                    batch.push(position, &e.bytes, (e.stripe, e.parity, e.crc));
                }
                flush(&mut batch, &mut failed);
                if !failed && dev.sync().is_err() {
                    let mut r = result.lock().expect("parity result");
                    for (s, row) in r.iter_mut().enumerate() {
                        for (j, crc) in row.iter_mut().enumerate() {
                            if layout[s].parity[j] as usize == d {
                                *crc = None;
                            }
                        }
                    }
                }
            });
        }
        let (handed, turn, next_stripe) = (&handed, &turn, &next_stripe);
        for _ in 0..workers {
            let senders = senders.clone();
            scope.spawn(move || {
                let mut codecs: Vec<Option<Codec>> = Vec::new();
                let mut shards: Vec<Vec<u8>> = Vec::new();
                // Aligned for a device opened with O_DIRECT.
                let mut read = BufferPool::new(1, shard_bytes_for(config.chunk_bytes) as usize);
                loop {
                    let s = next_stripe.fetch_add(1, Ordering::Relaxed);
                    if s >= layout.len() {
                        break;
                    }
                    let encoded = encode_stripe(
                        devices,
                        config,
                        (&layout[s], &stripes[s], &sequences[s]),
                        placed,
                        s,
                        (&mut codecs, &mut shards, &mut read),
                    );
                    let mut at = handed.lock().expect("parity turn");
                    while *at != s {
                        at = turn.wait(at).expect("parity turn");
                    }
                    for e in encoded {
                        let d = layout[s].parity[e.parity] as usize;
                        let _ = senders[d].send(e);
                    }
                    *at += 1;
                    turn.notify_all();
                }
            });
        }
        // The writers end when every sender is dropped: the workers' own
        // copies when they end, these here.
        drop(senders);
    });
    result.into_inner().expect("parity result")
}

/// The parity records of stripe `s`, encoded (header and padded payload);
/// none when a data record cannot be read back as it was written.
fn encode_stripe(
    devices: &[Box<dyn Device>],
    config: &BackupConfig,
    (layout, stripe, sequences): (&stripe::WrittenStripe, &CatalogStripe, &[u64]),
    placed: &[Vec<Option<(u64, u64)>>],
    s: usize,
    (codecs, data, read): (&mut Vec<Option<Codec>>, &mut Vec<Vec<u8>>, &mut BufferPool),
) -> Vec<Encoded> {
    let k = stripe.data.len();
    let m = layout.parity.len();
    let shard = stripe.shard_bytes() as usize;
    // The worker's shard buffers, kept from stripe to stripe (a fresh
    // 1 MiB allocation per shard costs its page faults every time).
    if data.len() < k {
        data.resize_with(k, Vec::new);
    }
    for (r, buf) in stripe.data.iter().zip(data.iter_mut()) {
        let dev = devices[r.device as usize].as_ref();
        let Ok(len) =
            media::shard::read_data_shard(dev, config.set_id, r, &mut read.slot_mut(0)[..shard])
        else {
            return Vec::new();
        };
        buf.resize(shard, 0);
        buf[..len].copy_from_slice(&read.slot(0)[..len]);
        buf[len..].fill(0);
    }
    let data = &data[..k];
    if codecs.len() <= k {
        codecs.resize_with(k + 1, || None);
    }
    if codecs[k].is_none() {
        codecs[k] = Codec::new(k, m).ok();
    }
    let Some(codec) = codecs[k].as_ref() else {
        return Vec::new();
    };
    let record_bytes = HEADER_BYTES + round_up_block(shard as u64) as usize;
    let mut out: Vec<Vec<u8>> = (0..m).map(|_| vec![0u8; record_bytes]).collect();
    {
        let refs: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
        let mut parity: Vec<&mut [u8]> = out
            .iter_mut()
            .map(|o| &mut o[HEADER_BYTES..HEADER_BYTES + shard])
            .collect();
        if codec.encode(&refs, &mut parity).is_err() {
            return Vec::new();
        }
    }
    let members: Vec<u32> = layout.data.iter().chain(&layout.parity).copied().collect();
    let entries: Vec<StripeData> = stripe
        .data
        .iter()
        .zip(sequences)
        .map(|(r, &sequence)| StripeData {
            sequence,
            file_id: r.file_id,
            file_offset: r.file_offset,
            payload_bytes: r.payload_bytes,
            payload_crc: r.payload_crc,
        })
        .collect();
    out.into_iter()
        .enumerate()
        .filter_map(|(j, mut bytes)| {
            let (_, sequence) = placed[s][j]?;
            let crc = crc32c(&bytes[HEADER_BYTES..HEADER_BYTES + shard]);
            let header = ParityHeader {
                set_id: config.set_id,
                device_index: layout.parity[j],
                device_count: devices.len() as u32,
                sequence,
                stripe_id: s as u64,
                position: (k + j) as u8,
                shard_bytes: shard as u32,
                payload_crc: crc,
                members: members.clone(),
                data: entries.clone(),
            };
            header.encode_into(&mut bytes[..HEADER_BYTES]);
            Some(Encoded {
                stripe: s,
                parity: j,
                bytes,
                crc,
            })
        })
        .collect()
}
