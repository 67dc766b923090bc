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
//! against what the ring made durable; one reader thread per device reads
//! them back in stripe order, contiguous records in one large read, into
//! a bounded queue), and each
//! device's parity records are written after its data by a writer thread
//! of its own, in order, so each device streams its parity as it streamed
//! its data. A failed device takes no part: the survivors' records are
//! striped among the survivors, so a set whose device failed mid-run is
//! still protected against `M` more losses.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
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
use crate::engine::ring::{ClosedStripe, RecordDone, RingOutcome};

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
    /// Stripes written while the data was (every member durable).
    pub inline_stripes: usize,
    /// Data bytes read back for the stripes made after the data phase.
    pub read_back_bytes: u64,
    /// Data records left without parity (a stripe whose parity could not
    /// be written or computed), and why, for the report.
    pub unprotected_records: u64,
    pub warnings: Vec<ParityWarning>,
    /// Devices that failed while their parity records were written or
    /// their data read back (an I/O error other than ENOSPC), with the
    /// first error: the run treats each as failed (`backup::after`) and
    /// makes the parity again.
    pub failed: Vec<(usize, media::MediaError)>,
    /// The id of the next stripe: a later pass numbers its stripes from
    /// here, so that no two stripes on media share an id.
    pub next_id: u64,
}

/// Whether `error` says the device failed (EIO, a dead transport), not
/// that it is full (ENOSPC): a full device is healthy.
pub(super) fn is_failure(error: &media::MediaError) -> bool {
    match error {
        media::MediaError::Io { error, .. } => error.raw_os_error() != Some(libc::ENOSPC),
        _ => false,
    }
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

/// The stripes the rings wrote while the data was written (`inline`,
/// `engine::ring::StripeSink`) whose every member is durable: each data
/// record among its device's durable records, each parity record among
/// its device's durable parity records, no member on a failed device.
/// Returns them as the catalog lists them, and the (device, position) of
/// every data record they cover.
fn durable_inline(
    outcomes: &[RingOutcome],
    ends: &[DeviceEnd],
    inline: &[ClosedStripe],
) -> (Vec<CatalogStripe>, HashSet<(u32, u64)>) {
    let data: HashSet<(u32, u64, u32)> = outcomes
        .iter()
        .enumerate()
        .filter(|(d, _)| ends[*d] != DeviceEnd::Failed)
        .flat_map(|(d, o)| {
            o.records
                .iter()
                .map(move |r| (d as u32, r.position, r.payload_crc))
        })
        .collect();
    let parity: HashMap<(u32, u64, usize), u64> = outcomes
        .iter()
        .enumerate()
        .filter(|(d, _)| ends[*d] != DeviceEnd::Failed)
        .flat_map(|(d, o)| {
            o.parity
                .iter()
                .map(move |p| ((d as u32, p.stripe, p.index), p.position))
        })
        .collect();
    let mut covered = HashSet::new();
    let mut stripes = Vec::new();
    for s in inline {
        let durable = s
            .data
            .iter()
            .all(|r| data.contains(&(r.device, r.position, r.data.payload_crc)));
        let positions: Option<Vec<u64>> = s
            .parity
            .iter()
            .enumerate()
            .map(|(j, &d)| parity.get(&(d, s.id, j)).copied())
            .collect();
        let (true, Some(positions)) = (durable, positions) else {
            continue;
        };
        covered.extend(s.data.iter().map(|r| (r.device, r.position)));
        stripes.push(CatalogStripe {
            data: s
                .data
                .iter()
                .map(|r| StripeRecord {
                    device: r.device,
                    position: r.position,
                    file_id: r.data.file_id,
                    file_offset: r.data.file_offset,
                    payload_bytes: r.data.payload_bytes,
                    payload_crc: r.data.payload_crc,
                })
                .collect(),
            parity: s
                .parity
                .iter()
                .zip(positions)
                .zip(&s.parity_crc)
                .map(|((&device, position), &crc)| StripeRecord {
                    device,
                    position,
                    file_id: 0,
                    file_offset: 0,
                    payload_bytes: s.shard_bytes,
                    payload_crc: crc,
                })
                .collect(),
        });
    }
    (stripes, covered)
}

/// The parity of a backup run (see the module doc): the stripes written
/// while the data was (`inline`) whose members are all durable, then the
/// records no such stripe covers, striped after the data phase from
/// records read back. `reserve_bytes` of each device stay free for its
/// catalog. `first_id`: where the stripes made here are numbered from
/// (None: after the inline stripes; a later pass after a device failed:
/// the earlier pass's `next_id`).
pub(super) fn write_parity(
    devices: &[Box<dyn Device>],
    outcomes: &[RingOutcome],
    ends: &[DeviceEnd],
    config: &BackupConfig,
    (inline, first_id): (&[ClosedStripe], Option<u64>),
) -> ParityOutcome {
    let mut out = ParityOutcome {
        after: outcomes
            .iter()
            .map(|o| (o.data_end, o.stats.records + o.parity.len() as u64))
            .collect(),
        ..ParityOutcome::default()
    };
    let m = config.parity;
    if m == 0 {
        return out;
    }
    // Stripe ids after the run's own (an inline stripe dropped for a lost
    // member may have left a parity record with its id on media).
    let first_id = first_id.unwrap_or_else(|| inline.iter().map(|s| s.id + 1).max().unwrap_or(0));
    out.next_id = first_id;
    let (mut stripes, covered) = durable_inline(outcomes, ends, inline);
    out.inline_stripes = stripes.len();
    for st in &stripes {
        out.records += st.parity.len() as u64;
        out.payload_bytes += st
            .parity
            .iter()
            .map(|p| u64::from(p.payload_bytes))
            .sum::<u64>();
    }
    // The records of the devices that completed that no inline stripe covers.
    let rest: Vec<Vec<&RecordDone>> = outcomes
        .iter()
        .enumerate()
        .map(|(d, o)| {
            o.records
                .iter()
                .filter(|r| !covered.contains(&(d as u32, r.position)))
                .collect()
        })
        .collect();
    let records: Vec<Option<u64>> = rest
        .iter()
        .zip(ends)
        .map(|(r, e)| (*e == DeviceEnd::Complete).then_some(r.len() as u64))
        .collect();
    let layout = match stripe::over_written(&records, m) {
        Ok(layout) => layout,
        Err(e) => {
            out.warnings.push(ParityWarning::NoLayout(e));
            out.unprotected_records = rest.iter().map(|r| r.len() as u64).sum();
            out.section = Some(CatalogParity {
                m: m as u32,
                stripes,
            });
            return out;
        }
    };
    // Each stripe's data records, in data order.
    let mut next: Vec<usize> = vec![0; devices.len()];
    let mut sequences: Vec<Vec<u64>> = Vec::with_capacity(layout.len());
    let mut after_data: Vec<CatalogStripe> = Vec::with_capacity(layout.len());
    for s in &layout {
        let mut seq = Vec::with_capacity(s.data.len());
        let mut data = Vec::with_capacity(s.data.len());
        for &d in &s.data {
            let d = d as usize;
            let r: &RecordDone = rest[d][next[d]];
            seq.push(r.sequence);
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
        after_data.push(CatalogStripe {
            data,
            parity: Vec::new(),
        });
    }
    // Where each parity record goes: after the device's data, in stripe
    // order, while the device keeps room for its catalog.
    let mut placed: Vec<Vec<Option<(u64, u64)>>> = Vec::with_capacity(layout.len());
    for (s, st) in layout.iter().zip(&after_data) {
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
    let read_back = AtomicU64::new(0);
    let plan = Plan {
        layout: &layout,
        stripes: &after_data,
        sequences: &sequences,
        placed: &placed,
        first_id,
        read_back: &read_back,
    };
    let (written, errors) = encode_and_write(devices, config, &plan);
    out.read_back_bytes = read_back.into_inner();
    out.next_id = first_id + layout.len() as u64;
    out.failed = errors
        .into_iter()
        .enumerate()
        .filter_map(|(d, e)| Some((d, e?)))
        .filter(|(_, e)| is_failure(e))
        .collect();
    for (si, (s, st)) in layout.iter().zip(after_data.iter_mut()).enumerate() {
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
    stripes.extend(after_data);
    out.section = Some(CatalogParity {
        m: m as u32,
        stripes,
    });
    out
}

/// The stripes made after the data phase, for `encode_and_write`.
struct Plan<'p> {
    layout: &'p [stripe::WrittenStripe],
    stripes: &'p [CatalogStripe],
    sequences: &'p [Vec<u64>],
    placed: &'p [Vec<Option<(u64, u64)>>],
    /// The id of `stripes[0]` (in its parity records' headers).
    first_id: u64,
    /// Data bytes read back, in all.
    read_back: &'p AtomicU64,
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
    /// none after a failed write (and none after it: `failed` holds the
    /// first write's error).
    fn flush(
        &mut self,
        dev: &dyn Device,
        failed: &mut Option<media::MediaError>,
    ) -> Vec<(usize, usize, u32)> {
        let records = std::mem::take(&mut self.records);
        let len = std::mem::take(&mut self.len);
        if len == 0 || failed.is_some() {
            return Vec::new();
        }
        if let Err(e) = media::write_all_at(dev, &self.pool.slot(0)[..len], self.start) {
            *failed = Some(e);
            return Vec::new();
        }
        records
    }
}

/// Encode every stripe's parity on worker threads and write each device's
/// parity records on a thread of its own, in stripe order. Per stripe and
/// parity index: the payload CRC of a record that is durable, else None;
/// per device: the first error of a write, its sync or a read back.
fn encode_and_write(
    devices: &[Box<dyn Device>],
    config: &BackupConfig,
    plan: &Plan<'_>,
) -> (Vec<Vec<Option<u32>>>, Vec<Option<media::MediaError>>) {
    let (layout, stripes, placed) = (plan.layout, plan.stripes, plan.placed);
    let result: Mutex<Vec<Vec<Option<u32>>>> =
        Mutex::new(layout.iter().map(|s| vec![None; s.parity.len()]).collect());
    let next_stripe = Mutex::new(0usize);
    let errors: Vec<Mutex<Option<media::MediaError>>> =
        devices.iter().map(|_| Mutex::new(None)).collect();
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    // Writers take the records of their device in stripe order: a worker
    // hands over its stripe's records when all earlier stripes' are.
    let handed = Mutex::new(0usize);
    let turn = std::sync::Condvar::new();
    // Each device's shards, from its reader to the encoders.
    let (shard_tx, shard_rx): (Vec<_>, Vec<_>) = devices
        .iter()
        .map(|_| crossbeam_channel::bounded::<Shard>(SHARDS_QUEUED_PER_DEVICE))
        .unzip();
    std::thread::scope(|scope| {
        let mut senders = Vec::new();
        for (d, dev) in devices.iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded::<Encoded>(QUEUE_PER_DEVICE);
            senders.push(tx);
            let (dev, result, error) = (dev.as_ref(), &result, &errors[d]);
            let pool_bytes = HEADER_BYTES + shard_bytes_for(config.chunk_bytes) as usize;
            scope.spawn(move || {
                let mut batch = Batch::new(pool_bytes);
                let mut failed = None;
                let flush = |batch: &mut Batch, failed: &mut Option<media::MediaError>| {
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
                    if failed.is_some() {
                        continue;
                    }
                    if !batch.fits(position, e.bytes.len()) {
                        flush(&mut batch, &mut failed);
                    }
                    batch.push(position, &e.bytes, (e.stripe, e.parity, e.crc));
                }
                flush(&mut batch, &mut failed);
                let synced = match failed {
                    Some(e) => Err(e),
                    None => dev.sync().map_err(|error| media::MediaError::Io {
                        device: dev.path().display().to_string(),
                        op: "sync",
                        offset: 0,
                        error,
                    }),
                };
                if let Err(e) = synced {
                    note_error(error, e);
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
        // One reader per device: its data records in order, in large
        // reads, each made its shard (bounded queue: bounded memory).
        let (free_tx, free_rx) = crossbeam_channel::unbounded::<Vec<u8>>();
        for ((d, dev), tx) in devices.iter().enumerate().zip(shard_tx) {
            let members: Vec<(&StripeRecord, usize)> = layout
                .iter()
                .zip(stripes)
                .flat_map(|(l, st)| {
                    l.data
                        .iter()
                        .zip(&st.data)
                        .filter(move |(member, _)| **member as usize == d)
                        .map(move |(_, r)| (r, st.shard_bytes() as usize))
                })
                .collect();
            let (dev, free_rx) = (dev.as_ref(), free_rx.clone());
            let (read_back, error) = (plan.read_back, &errors[d]);
            scope.spawn(move || {
                let read = read_shards(dev, config, &members, &tx, (&free_rx, read_back));
                if let Err(e) = read {
                    note_error(error, e);
                }
            });
        }
        let (handed, turn, next_stripe, shard_rx) = (&handed, &turn, &next_stripe, &shard_rx);
        for _ in 0..workers {
            let (senders, free_tx) = (senders.clone(), free_tx.clone());
            scope.spawn(move || {
                let mut codecs: Vec<Option<Codec>> = Vec::new();
                loop {
                    // Take the next stripe and its shards in stripe order
                    // (each reader sends its device's shards in that order).
                    let (s, data) = {
                        let mut next = next_stripe.lock().expect("parity stripes");
                        let s = *next;
                        if s >= layout.len() {
                            break;
                        }
                        *next += 1;
                        let data: Vec<Shard> = layout[s]
                            .data
                            .iter()
                            .map(|&d| shard_rx[d as usize].recv().ok().flatten())
                            .collect();
                        (s, data)
                    };
                    let encoded = if data.iter().all(Option::is_some) {
                        let data: Vec<Vec<u8>> = data.into_iter().flatten().collect();
                        let encoded = encode_stripe(devices, config, plan, s, (&mut codecs, &data));
                        for buf in data {
                            let _ = free_tx.send(buf);
                        }
                        encoded
                    } else {
                        Vec::new()
                    };
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
    let errors = errors
        .into_iter()
        .map(|e| e.into_inner().expect("parity errors"))
        .collect();
    (result.into_inner().expect("parity result"), errors)
}

/// Keep a device's first error.
fn note_error(slot: &Mutex<Option<media::MediaError>>, error: media::MediaError) {
    slot.lock().expect("parity errors").get_or_insert(error);
}

/// The parity records of stripe `s`, encoded (header and padded payload)
/// over its data records' shards `data` (as read back by `read_shards`);
/// none when the codec cannot encode them.
fn encode_stripe(
    devices: &[Box<dyn Device>],
    config: &BackupConfig,
    plan: &Plan<'_>,
    s: usize,
    (codecs, data): (&mut Vec<Option<Codec>>, &[Vec<u8>]),
) -> Vec<Encoded> {
    let (layout, stripe, sequences) = (&plan.layout[s], &plan.stripes[s], &plan.sequences[s]);
    let placed = plan.placed;
    let k = stripe.data.len();
    let m = layout.parity.len();
    let shard = stripe.shard_bytes() as usize;
    assert_eq!(data.len(), k, "one shard per data record");
    assert!(data.iter().all(|d| d.len() == shard), "shards padded");
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
                stripe_id: plan.first_id + s as u64,
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

/// Shards queued per device between its reader and the encoders.
const SHARDS_QUEUED_PER_DEVICE: usize = 8;
/// Most bytes of contiguous data records read back at once.
const READ_BYTES_MAX: usize = 8 << 20;

/// A data record's shard as read back, padded with zeros to its stripe's
/// shard length; None when it cannot be read back as it was written.
type Shard = Option<Vec<u8>>;

/// Read back the data records of `dev` that stripes take, `members`
/// (record, its stripe's shard length) in the order the stripes take
/// them, and send each one's shard, in that order, to `tx`. Contiguous
/// records are read with one positioned read of up to `READ_BYTES_MAX`
/// (the device streams them back as it streamed them out); a record that
/// read does not hold whole, or all of them when it fails, is read alone
/// (`media::shard::read_data_shard`). Shard buffers come from `free`
/// when the encoders have handed some back. Returns the first read
/// that failed (the device may have failed: `ParityOutcome::failed`).
fn read_shards(
    dev: &dyn Device,
    config: &BackupConfig,
    members: &[(&StripeRecord, usize)],
    tx: &crossbeam_channel::Sender<Shard>,
    (free, read_back): (&crossbeam_channel::Receiver<Vec<u8>>, &AtomicU64),
) -> Result<(), media::MediaError> {
    let mut failed = Ok(());
    if members.is_empty() {
        return failed;
    }
    let record_bytes_max = shard_bytes_for(config.chunk_bytes) as usize;
    let mut batch = BufferPool::new(1, READ_BYTES_MAX.max(record_bytes_max));
    let mut one = BufferPool::new(1, record_bytes_max);
    let most = |r: &StripeRecord| {
        (r.position + HEADER_BYTES as u64 + round_up_block(r.payload_bytes.into()))
            .min(dev.capacity_bytes())
    };
    let mut i = 0;
    while i < members.len() {
        // Records i..j: increasing positions, all within one read.
        let start = members[i].0.position;
        let mut end = most(members[i].0);
        let mut j = i + 1;
        while j < members.len() {
            let r = members[j].0;
            let to = end.max(most(r));
            if r.position <= members[j - 1].0.position || to - start > batch.slot_bytes() as u64 {
                break;
            }
            end = to;
            j += 1;
        }
        let read = (end.saturating_sub(start) as usize).min(batch.slot_bytes());
        let got = match media::read_at(dev, &mut batch.slot_mut(0)[..read], start) {
            Ok(got) => got,
            Err(e) => {
                if failed.is_ok() {
                    failed = Err(e);
                }
                0
            }
        };
        read_back.fetch_add(got as u64, Ordering::Relaxed);
        for &(r, shard) in &members[i..j] {
            let mut buf = free.try_recv().unwrap_or_default();
            buf.resize(shard, 0);
            let at = (r.position - start) as usize;
            let held = got.saturating_sub(at).min(shard);
            buf[..held].copy_from_slice(&batch.slot(0)[at..at + held]);
            let len = match media::shard::data_shard_in(&mut buf[..held], config.set_id, r) {
                Ok(Some(len)) => Some(len),
                // The read failed or stopped short: this record alone.
                _ if got < read => {
                    let slot = &mut one.slot_mut(0)[..shard];
                    media::shard::read_data_shard(dev, config.set_id, r, slot)
                        .ok()
                        .inspect(|&len| {
                            read_back.fetch_add(len as u64, Ordering::Relaxed);
                            buf[..len].copy_from_slice(&slot[..len]);
                        })
                }
                _ => None,
            };
            let out = len.map(|len| {
                buf[len..].fill(0);
                buf
            });
            if tx.send(out).is_err() {
                return failed;
            }
        }
        i = j;
    }
    failed
}
