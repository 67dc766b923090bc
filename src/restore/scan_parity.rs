//! `restore --scan` and `verify --scan` of a `--parity` set (issue 19):
//! with no catalog, the stripes are learnt from the parity records found
//! on the given devices (each names its stripe id, `k`, `M`, the members'
//! device indexes and every data record of the stripe: docs/FORMAT.md
//! 5.1), and the data records the given devices lack (on a device not
//! given, or damaged) are rebuilt from any `k` good members, as the
//! catalog restore does (`rebuild::rebuild_stripe`).
//!
//! Media are hostile: parity records are grouped by everything they say
//! about their stripe, so a stripe id reused with other members, another
//! `k` or other entries is another stripe, rebuilt (or not) on its own; a
//! record is used only on the device whose index it names; a stripe's
//! size is bounded before anything is allocated; and every rebuilt record
//! is checked as a record read (its header against its entry, the CRC of
//! its stored bytes, opened and decompressed), then taken by the scan's
//! own rules (its file's other records must agree with it). A rebuilt
//! record never replaces a range read from a device. What cannot be
//! rebuilt is named by file and range, never guessed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::rebuild::{member_pool, rebuild_stripe, ReadLost, RebuildSummary};
use super::scan::{DeviceScan, Held, Sink, Taken};
use super::transform::Inflate;
use super::RestoreError;
use crate::device::Device;
use crate::format::parity::{shard_bytes_for, ParityHeader};
use crate::format::{CatalogStripe, SetId, StripeRecord};
use crate::parity::Codec;

/// Most bytes one stripe's shards may take in memory (`k + M` shards of
/// `shard_bytes`): a parity record claiming more is not used (a real set
/// of 255 devices at a 1 MiB chunk takes 255 MiB). Also what the rebuild
/// threads hold together at most.
pub(super) const STRIPE_BYTES_MAX: u64 = 1 << 30;

/// The data records taken, by (device index, sequence): the device slot
/// they were read from and where they lie.
type HeldMap = HashMap<(u32, u64), (usize, Held)>;

/// Most devices a label's count lists as missing (a count beyond, from a
/// crafted label, lists only the stripes' members not given).
const LISTED_DEVICES_MAX: u32 = 4096;

/// A device index no device has: a stripe member not to be read.
const UNREADABLE: u32 = u32::MAX;

/// What the parity of a scanned set gave.
#[derive(Debug, Default)]
pub(super) struct ScanRebuild {
    pub(super) summary: RebuildSummary,
    /// Bad records (counted by the scan) that were rebuilt and taken.
    pub(super) healed: u64,
    /// Where those lie: (device slot, media offset).
    pub(super) healed_at: Vec<(usize, u64)>,
    /// Data records in stripes that could not be rebuilt, and not found
    /// elsewhere: (file id, offset, length, device index).
    pub(super) lost: Vec<(u32, u64, u64, u32)>,
    /// The file id -> path of the records rebuilt and taken.
    pub(super) names: HashMap<u32, Vec<u8>>,
}

/// Everything a parity record says about its stripe: records that say
/// the same are one stripe.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct StripeKey {
    stripe_id: u64,
    device_count: u32,
    shard_bytes: u32,
    members: Vec<u32>,
    /// Per data position: sequence, file id, offset, length, CRC.
    data: Vec<(u64, u32, u64, u32, u32)>,
}

impl StripeKey {
    fn of(h: &ParityHeader) -> StripeKey {
        StripeKey {
            stripe_id: h.stripe_id,
            device_count: h.device_count,
            shard_bytes: h.shard_bytes,
            members: h.members.clone(),
            data: h
                .data
                .iter()
                .map(|e| {
                    (
                        e.sequence,
                        e.file_id,
                        e.file_offset,
                        e.payload_bytes,
                        e.payload_crc,
                    )
                })
                .collect(),
        }
    }

    fn k(&self) -> usize {
        self.data.len()
    }
}

/// One stripe to rebuild: its members as the catalog path takes them,
/// its `M`, and the data positions to rebuild.
struct Job {
    stripe: CatalogStripe,
    m: usize,
    lost: Vec<usize>,
    /// (device index, sequence) of each lost position.
    keys: Vec<(u32, u64)>,
}

/// Rebuild what the parity records found on `devs` (scanned: `scans`, None
/// for a device whose reading broke off) can give back, handing every
/// rebuilt record to `sink` (see the module doc). `chunk_max`: the largest
/// payload the scan reads.
pub(super) fn rebuild(
    (set_id, chunk_max): (SetId, u32),
    devs: &[Box<dyn Device>],
    scans: &[Option<DeviceScan>],
    sink: Sink<'_>,
) -> Result<ScanRebuild, RestoreError> {
    let mut out = ScanRebuild::default();
    // The device read for each index: the first given device of it.
    let mut by_index: HashMap<u32, usize> = HashMap::new();
    for (slot, scan) in scans.iter().enumerate() {
        if let Some(i) = scan.as_ref().and_then(|s| s.index) {
            by_index.entry(i).or_insert(slot);
        }
    }
    let label = scans.iter().flatten().find_map(|s| s.label);
    // The largest shard a stripe of this set can have: the labels' chunk,
    // else the largest record found (else the largest the scan reads).
    let chunk = label.map(|l| l.1).unwrap_or_else(|| {
        let found = scans
            .iter()
            .flatten()
            .flat_map(|s| s.held.iter().filter(|h| h.taken))
            .map(|h| h.payload_bytes)
            .max();
        found.unwrap_or(chunk_max)
    });
    let chunk = chunk.min(chunk_max);
    // Data records taken, by (device index, sequence), and by what they hold.
    let mut held: HeldMap = HashMap::new();
    let mut have: HashSet<(u32, u64, u32)> = HashSet::new();
    for (slot, scan) in scans.iter().enumerate() {
        let Some(scan) = scan else { continue };
        for h in &scan.held {
            if h.taken {
                have.insert((h.file_id, h.file_offset, h.payload_bytes));
            }
            if by_index.get(&h.index) == Some(&slot) {
                held.entry((h.index, h.sequence)).or_insert((slot, *h));
            }
        }
    }
    // Parity records on the device whose index they name, grouped.
    let mut stripes: BTreeMap<StripeKey, Vec<(u64, &ParityHeader)>> = BTreeMap::new();
    for (slot, scan) in scans.iter().enumerate() {
        let Some(scan) = scan else { continue };
        for (position, h) in &scan.parity {
            if by_index.get(&h.device_index) != Some(&slot) {
                continue;
            }
            stripes
                .entry(StripeKey::of(h))
                .or_default()
                .push((*position, h));
        }
    }
    // Devices of the set not given: by the labels' count, and every
    // member the stripes name.
    let mut missing: std::collections::BTreeSet<u32> = match label {
        Some((count, _)) if count <= LISTED_DEVICES_MAX => {
            (0..count).filter(|i| !by_index.contains_key(i)).collect()
        }
        _ => Default::default(),
    };
    let mut jobs = Vec::new();
    for (key, records) in &stripes {
        let k = key.k();
        let m = key.members.len() - k;
        for &d in &key.members {
            if !by_index.contains_key(&d) {
                missing.insert(d);
            }
        }
        let Positions {
            lost,
            keys,
            present,
        } = lost_positions(key, &held, &have);
        if lost.is_empty() {
            continue;
        }
        let entry_of = |pos: usize| {
            let (_, file_id, offset, length, _) = key.data[pos];
            (file_id, offset, u64::from(length), key.members[pos])
        };
        let too_big = label.is_some_and(|(count, _)| count != key.device_count)
            || key.shard_bytes > shard_bytes_for(chunk)
            || (k + m) as u64 * u64::from(key.shard_bytes) > STRIPE_BYTES_MAX
            || Codec::new(k, m).is_err();
        let parity: Vec<StripeRecord> = (k..k + m)
            .map(|pos| {
                let found = records
                    .iter()
                    .find(|(_, h)| usize::from(h.position) == pos)
                    .filter(|_| !too_big);
                StripeRecord {
                    device: found.map_or(UNREADABLE, |_| key.members[pos]),
                    position: found.map_or(0, |f| f.0),
                    file_id: 0,
                    file_offset: 0,
                    payload_bytes: key.shard_bytes,
                    payload_crc: found.map_or(0, |f| f.1.payload_crc),
                }
            })
            .collect();
        let usable = present.len() + parity.iter().filter(|r| r.device != UNREADABLE).count();
        if too_big || usable < k {
            out.lost.extend(lost.iter().map(|&p| entry_of(p)));
            continue;
        }
        let data = (0..k)
            .map(|pos| {
                let (_, file_id, file_offset, payload_bytes, payload_crc) = key.data[pos];
                let (device, position) = match present.iter().find(|p| p.0 == pos) {
                    Some(&(_, position)) => (key.members[pos], position),
                    None if lost.contains(&pos) => (key.members[pos], 0),
                    // Neither read nor needed (found elsewhere).
                    None => (UNREADABLE, 0),
                };
                StripeRecord {
                    device,
                    position,
                    file_id,
                    file_offset,
                    payload_bytes,
                    payload_crc,
                }
            })
            .collect();
        jobs.push(Job {
            stripe: CatalogStripe { data, parity },
            m,
            lost,
            keys,
        });
    }
    // (A set without parity rebuilds nothing: its devices not given are
    // not reported here, as the catalog restore does not.)
    if !stripes.is_empty() {
        out.summary.missing_devices = missing.into_iter().map(|i| (i, Vec::new())).collect();
    }
    if jobs.is_empty() {
        out.lost.sort_unstable();
        out.lost.dedup();
        return Ok(out);
    }
    run(
        set_id,
        chunk,
        devs,
        &by_index,
        &jobs,
        (&held, sink),
        &mut out,
    )?;
    // A range lost in one stripe may have come back from another (a stripe
    // id reused): only what no stripe gave back is lost.
    out.lost.sort_unstable();
    out.lost.dedup();
    Ok(out)
}

/// The data positions of a stripe.
#[derive(Default)]
struct Positions {
    /// To rebuild: their records neither taken from their device nor
    /// found elsewhere; with their (device index, sequence).
    lost: Vec<usize>,
    keys: Vec<(u32, u64)>,
    /// Read good: (position, media offset).
    present: Vec<(usize, u64)>,
}

/// The data positions of stripe `key`.
fn lost_positions(key: &StripeKey, held: &HeldMap, have: &HashSet<(u32, u64, u32)>) -> Positions {
    let mut out = Positions::default();
    for (pos, &(sequence, file_id, offset, length, crc)) in key.data.iter().enumerate() {
        let device = key.members[pos];
        let found = held.get(&(device, sequence)).filter(|(_, h)| {
            h.taken
                && (h.file_id, h.file_offset, h.payload_bytes, h.payload_crc)
                    == (file_id, offset, length, crc)
        });
        match found {
            Some((_, h)) => out.present.push((pos, h.position)),
            None if have.contains(&(file_id, offset, length)) => {}
            None => {
                out.lost.push(pos);
                out.keys.push((device, sequence));
            }
        }
    }
    out
}

/// Rebuild `jobs` on a few threads, each rebuilt record taken by a clone
/// of `sink`'s way of taking records; `out` gets the counts, the damaged
/// members and what stayed lost.
fn run(
    set_id: SetId,
    chunk: u32,
    devs: &[Box<dyn Device>],
    by_index: &HashMap<u32, usize>,
    jobs: &[Job],
    (held, sink): (&HeldMap, Sink<'_>),
    out: &mut ScanRebuild,
) -> Result<(), RestoreError> {
    let devices: HashMap<u32, &dyn Device> = by_index
        .iter()
        .map(|(&i, &slot)| (i, devs[slot].as_ref()))
        .collect();
    let next = AtomicUsize::new(0);
    let result = Mutex::new((ScanRebuild::default(), None::<RestoreError>));
    // At most `STRIPE_BYTES_MAX` of shards in memory at once, all workers
    // together (a stripe's shards are allocated while it is rebuilt).
    let largest = jobs
        .iter()
        .map(|j| (j.stripe.data.len() + j.m) as u64 * u64::from(j.stripe.shard_bytes()))
        .max()
        .unwrap_or(1)
        .max(1);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4)
        .min(jobs.len())
        .min((STRIPE_BYTES_MAX / largest).max(1) as usize);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (next, result, devices) = (&next, &result, &devices);
            let mut sink = Sink::new(sink.root, sink.seen, sink.name.clone());
            scope.spawn(move || {
                let mut pool = member_pool(chunk);
                let mut codecs: HashMap<(usize, usize), Codec> = HashMap::new();
                let mut inflate = Inflate::default();
                let mut mine = ScanRebuild::default();
                while let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let mut errors = Vec::new();
                    let got = rebuild_stripe(
                        (&job.stripe, job.m, set_id),
                        (&job.lost, ReadLost::No),
                        devices,
                        &mut pool,
                        &mut codecs,
                        &mut inflate,
                        (&mut errors, &mut mine.summary.damaged),
                    );
                    let mut taken = Vec::new();
                    for r in &got {
                        let why = match inflate.file_info(&r.header, &r.header_block) {
                            None => "its file info does not open".to_string(),
                            Some(info) => {
                                let in_range = r
                                    .header
                                    .file_offset
                                    .checked_add(r.header.payload_bytes.into())
                                    .is_some_and(|end| end <= r.header.file_size);
                                match sink.take(&r.header, &info, &r.payload, in_range, true) {
                                    Ok(Taken::Yes) => {
                                        mine.summary.records += 1;
                                        mine.summary.bytes += r.payload.len() as u64;
                                        taken.push(r.position);
                                        mine.names.entry(r.header.file_id).or_insert(info.path);
                                        continue;
                                    }
                                    Ok(Taken::No) => continue,
                                    Ok(Taken::Bad) => {
                                        "it disagrees with its file's other records".to_string()
                                    }
                                    Err(e) => {
                                        result.lock().expect("rebuild").1.get_or_insert(e);
                                        return;
                                    }
                                }
                            }
                        };
                        mine.summary.damaged.push(format!(
                            "a record of stripe position {} rebuilt from parity is not used: {why}",
                            r.position
                        ));
                    }
                    for (i, &pos) in job.lost.iter().enumerate() {
                        let r = &job.stripe.data[pos];
                        if taken.contains(&pos) {
                            let (index, sequence) = job.keys[i];
                            // A bad record the scan counted, now rebuilt.
                            if let Some((slot, h)) =
                                held.get(&(index, sequence)).filter(|(_, h)| !h.taken)
                            {
                                mine.healed += 1;
                                mine.healed_at.push((*slot, h.position));
                                mine.summary.damaged.push(format!(
                                    "device {}: offset {}: damaged record",
                                    devs[*slot].path().display(),
                                    h.position
                                ));
                            }
                        } else if !got.iter().any(|g| g.position == pos) {
                            let length = u64::from(r.payload_bytes);
                            mine.lost.push((r.file_id, r.file_offset, length, r.device));
                        }
                    }
                }
                let mut all = result.lock().expect("rebuild");
                all.0.summary.records += mine.summary.records;
                all.0.summary.bytes += mine.summary.bytes;
                all.0.summary.damaged.extend(mine.summary.damaged);
                all.0.healed += mine.healed;
                all.0.healed_at.extend(mine.healed_at);
                all.0.lost.extend(mine.lost);
                all.0.names.extend(mine.names);
            });
        }
    });
    let (mine, failed) = result.into_inner().expect("rebuild");
    if let Some(e) = failed {
        return Err(e);
    }
    out.summary.records += mine.summary.records;
    out.summary.bytes += mine.summary.bytes;
    out.summary.damaged.extend(mine.summary.damaged);
    out.healed += mine.healed;
    out.healed_at.extend(mine.healed_at);
    out.lost.extend(mine.lost);
    out.names.extend(mine.names);
    Ok(())
}
