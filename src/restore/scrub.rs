//! `pbio scrub` (issue 19): every stripe of a parity set read and checked.
//!
//! Each stripe's members are read by offset from the given devices with
//! the rebuild's own reader (`rebuild::read_member`: header against the
//! catalog, payload CRC), on a few worker threads. A stripe whose data
//! records all check has its parity computed again and compared with the
//! parity records on media; one with data records missing or bad is
//! rebuilt from any `k` good members (parity is over the records as
//! stored, docs/FORMAT.md 5.1: compressed and sealed records are checked
//! as stored), each rebuilt record checked against the catalog
//! (header, CRC of its stored bytes), and its parity then compared the
//! same way. What is
//! found is reported per device (records checked, bad or missing records
//! with device, offset and stripe) and per stripe: whole, damaged but
//! rebuildable, or lost (fewer than `k` good members). `repair` (in
//! `restore::repair`) takes the same pass with a writer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::device::Device;
use crate::format::parity::{check_data_shard, shard_to_record};
use crate::format::{CatalogStripe, DeviceState, Label, SetId, HEADER_BYTES};
use crate::io::buffers::BufferPool;
use crate::parity::{Codec, Rebuild};

use super::rebuild::{member_pool, read_member};
use super::OpenSet;

/// What a member of a stripe holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Member {
    Data,
    Parity,
}

/// A record of a stripe that is missing or does not check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRecord {
    /// Device index in the set.
    pub device: u32,
    /// The device as given, or its path at backup time when not given.
    pub device_path: String,
    /// Media offset of the record's header.
    pub offset: u64,
    pub stripe: u64,
    pub member: Member,
    pub why: String,
    /// Its stripe has `k` good members: the record can be rebuilt.
    pub rebuildable: bool,
}

/// What the scrub found on one device of the set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceScrub {
    pub index: u32,
    /// Its path at backup time (the catalog's).
    pub path: String,
    /// The device as given (None: not given, or its label unreadable).
    pub given: Option<String>,
    /// Striped records of this device read and checked.
    pub data_records: u64,
    pub parity_records: u64,
    /// Of those, or of the ones it should hold, missing or bad.
    pub bad_records: u64,
    /// Data records the catalog lists on it that are in no stripe (not
    /// protected by parity; a device that failed during the backup).
    pub unprotected_records: u64,
}

/// The outcome of a scrub.
#[derive(Clone, Debug, Default)]
pub struct ScrubReport {
    pub set_id: String,
    pub m: u32,
    pub stripes: u64,
    /// Stripes with a bad or missing member, all rebuildable.
    pub stripes_damaged: u64,
    /// Stripes with fewer than `k` good members (or whose rebuilt data
    /// does not match its CRC): what they hold cannot be rebuilt.
    pub stripes_lost: u64,
    /// Stripes with fewer than `M` parity records (written without room).
    pub stripes_short: u64,
    pub devices: Vec<DeviceScrub>,
    pub bad: Vec<BadRecord>,
    pub bytes_read: u64,
    pub elapsed: Duration,
}

impl ScrubReport {
    /// Every record of every stripe is there and checks.
    pub fn whole(&self) -> bool {
        self.bad.is_empty() && self.stripes_short == 0 && self.unprotected_missing() == 0
    }

    /// Everything missing or bad can be rebuilt.
    pub fn rebuildable(&self) -> bool {
        self.stripes_lost == 0 && self.unprotected_missing() == 0
    }

    /// Unprotected data records on devices not given: lost.
    pub fn unprotected_missing(&self) -> u64 {
        self.devices
            .iter()
            .filter(|d| d.given.is_none())
            .map(|d| d.unprotected_records)
            .sum()
    }
}

/// One stripe checked: its bad members (position, why), whether it is
/// lost, and with `keep` its records as they should be (data `0..k`, each
/// the whole record as stored on media, header block included, then its
/// listed parity records' payloads).
pub(super) struct Checked {
    pub(super) bad: Vec<(usize, String)>,
    pub(super) lost: bool,
    pub(super) bytes_read: u64,
    pub(super) payloads: Vec<Vec<u8>>,
}

/// The devices read: index -> (device, label).
pub(super) type Readers<'a> = HashMap<u32, (&'a dyn Device, &'a Label)>;

/// The given devices of `set` (all but `except`).
pub(super) fn readers(set: &OpenSet, except: Option<u32>) -> Readers<'_> {
    set.devices
        .iter()
        .filter(|(_, l)| Some(l.device_index) != except)
        .map(|(d, l)| (l.device_index, (d.as_ref(), l)))
        .collect()
}

/// Check one stripe (see the module doc).
pub(super) fn check_stripe(
    (st, m, set_id): (&CatalogStripe, usize, SetId),
    devices: &Readers<'_>,
    pool: &mut BufferPool,
    codecs: &mut HashMap<usize, Codec>,
    keep: bool,
) -> Checked {
    let k = st.data.len();
    let p = st.parity.len().min(m);
    let shard = st.shard_bytes() as usize;
    let mut shards: Vec<Vec<u8>> = vec![vec![0u8; shard]; k + m];
    let mut present = vec![false; k + m];
    // Each data record's length on media (its shard's meaningful prefix).
    let mut lens = vec![0usize; k];
    let mut out = Checked {
        bad: Vec::new(),
        lost: false,
        bytes_read: 0,
        payloads: Vec::new(),
    };
    for (i, r) in st.data.iter().chain(st.parity.iter().take(p)).enumerate() {
        let Some(&(dev, label)) = devices.get(&r.device) else {
            out.bad
                .push((i, "its device is not given (or unreadable)".into()));
            continue;
        };
        match read_member(dev, (label.set_id, label.device_index), st, i, r, pool) {
            Ok(bytes) => {
                // A data shard is its whole record; a parity record's
                // header comes on top of its shard.
                let header = if i < k { 0 } else { HEADER_BYTES };
                out.bytes_read += (header + bytes.len()) as u64;
                shards[i][..bytes.len()].copy_from_slice(bytes);
                present[i] = true;
                if i < k {
                    lens[i] = bytes.len();
                }
            }
            Err(why) => out.bad.push((i, why)),
        }
    }
    let good = present.iter().filter(|&&p| p).count();
    let codec = match codecs.entry(k) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => match Codec::new(k, m) {
            Ok(c) => v.insert(c),
            Err(_) => {
                out.lost = true;
                return out;
            }
        },
    };
    if good < k {
        out.lost = true;
        return out;
    }
    let missing: Vec<usize> = (0..k).filter(|&i| !present[i]).collect();
    if !missing.is_empty() {
        let mut refs: Vec<&mut [u8]> = shards.iter_mut().map(|s| &mut s[..]).collect();
        if codec
            .reconstruct(&mut refs, &present, Rebuild::DataOnly)
            .is_err()
        {
            out.lost = true;
            return out;
        }
        for &i in &missing {
            // The rebuilt record must be the one written (a parity record
            // with a good CRC but other bytes would rebuild others).
            match check_data_shard(&shards[i], set_id, &st.data[i]) {
                Ok((_, len)) => lens[i] = len,
                Err(_) => {
                    out.lost = true;
                    return out;
                }
            }
        }
    }
    // The parity computed again from the data, compared with the media's.
    let mut computed: Vec<Vec<u8>> = vec![vec![0u8; shard]; m];
    {
        let data: Vec<&[u8]> = shards[..k].iter().map(|s| &s[..]).collect();
        let mut parity: Vec<&mut [u8]> = computed.iter_mut().map(|s| &mut s[..]).collect();
        if codec.encode(&data, &mut parity).is_err() {
            out.lost = true;
            return out;
        }
    }
    for (j, parity) in computed.iter().enumerate().take(p) {
        let i = k + j;
        if present[i] && shards[i] != *parity {
            out.bad.push((
                i,
                "parity record does not match the parity computed from its stripe's data".into(),
            ));
        }
    }
    if keep {
        for (s, len) in shards.into_iter().take(k).zip(lens) {
            let mut s = s;
            s.truncate(len);
            shard_to_record(&mut s);
            out.payloads.push(s);
        }
        out.payloads.extend(computed.into_iter().take(p));
    }
    out
}

/// Something that takes each checked stripe's payloads (the repair).
pub(super) trait StripeSink: Sync {
    /// Whether this stripe's payloads are wanted.
    fn wants(&self, stripe: usize, checked: &Checked) -> bool;
    fn take(&self, stripe: usize, checked: &Checked, pool: &mut BufferPool);
}

/// Check the stripes `jobs` of `set` (every stripe when None) with the
/// devices `devices`, on a few threads; with `sink`, every stripe it
/// wants is checked with its payloads and handed to it.
pub(super) fn pass(
    set: &OpenSet,
    devices: &Readers<'_>,
    jobs: Option<&[usize]>,
    sink: Option<&dyn StripeSink>,
) -> ScrubReport {
    let started = Instant::now();
    let catalog = &set.catalog;
    let mut report = ScrubReport {
        set_id: catalog.set_id.to_string(),
        ..ScrubReport::default()
    };
    let Some(parity) = &catalog.parity else {
        return report;
    };
    report.m = parity.m;
    let m = parity.m as usize;
    let all: Vec<usize> = (0..parity.stripes.len()).collect();
    let jobs = jobs.unwrap_or(&all);
    report.stripes = jobs.len() as u64;
    let given: HashMap<u32, String> = devices
        .iter()
        .map(|(i, (d, _))| (*i, d.path().display().to_string()))
        .collect();
    report.devices = catalog
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| DeviceScrub {
            index: i as u32,
            path: crate::units::shown_name(&d.path),
            given: given.get(&(i as u32)).cloned(),
            ..DeviceScrub::default()
        })
        .collect();
    // Records the catalog lists per device that no stripe holds.
    let mut striped = vec![0u64; catalog.devices.len()];
    for st in &parity.stripes {
        for r in &st.data {
            if let Some(n) = striped.get_mut(r.device as usize) {
                *n += 1;
            }
        }
    }
    for seg in &catalog.segments {
        if let Some(d) = report.devices.get_mut(seg.device as usize) {
            if catalog.devices[seg.device as usize].state != DeviceState::Failed {
                d.unprotected_records += u64::from(seg.records);
            }
        }
    }
    for (d, n) in report.devices.iter_mut().zip(&striped) {
        d.unprotected_records = d.unprotected_records.saturating_sub(*n);
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Checked)>> = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 4);
    let chunk = catalog.chunk_bytes;
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (next, results) = (&next, &results);
            scope.spawn(move || {
                let mut pool = member_pool(chunk);
                let mut codecs = HashMap::new();
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&s) = jobs.get(j) else { break };
                    let Some(st) = parity.stripes.get(s) else {
                        continue;
                    };
                    let mut checked = check_stripe(
                        (st, m, catalog.set_id),
                        devices,
                        &mut pool,
                        &mut codecs,
                        sink.is_some(),
                    );
                    if let Some(sink) = sink {
                        if !checked.lost && sink.wants(s, &checked) {
                            sink.take(s, &checked, &mut pool);
                        }
                    }
                    checked.payloads = Vec::new();
                    results.lock().expect("scrub").push((s, checked));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("scrub");
    results.sort_by_key(|r| r.0);
    for (s, checked) in results {
        let st = &parity.stripes[s];
        let k = st.data.len();
        report.bytes_read += checked.bytes_read;
        if st.parity.len() < m {
            report.stripes_short += 1;
        }
        for (i, r) in st.data.iter().chain(st.parity.iter().take(m)).enumerate() {
            if let Some(d) = report.devices.get_mut(r.device as usize) {
                if i < k {
                    d.data_records += 1;
                } else {
                    d.parity_records += 1;
                }
            }
        }
        if checked.lost {
            report.stripes_lost += 1;
        } else if !checked.bad.is_empty() {
            report.stripes_damaged += 1;
        }
        for (i, why) in checked.bad {
            let r = if i < k {
                &st.data[i]
            } else {
                &st.parity[i - k]
            };
            let Some(d) = report.devices.get_mut(r.device as usize) else {
                continue;
            };
            d.bad_records += 1;
            report.bad.push(BadRecord {
                device: r.device,
                device_path: d.given.clone().unwrap_or_else(|| d.path.clone()),
                offset: r.position,
                stripe: s as u64,
                member: if i < k { Member::Data } else { Member::Parity },
                why,
                rebuildable: !checked.lost,
            });
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// `pbio scrub` without repair: every stripe of `set` checked with the
/// devices given.
pub fn scrub(set: &OpenSet) -> ScrubReport {
    pass(set, &readers(set, None), None, None)
}
