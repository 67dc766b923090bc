//! Rebuilding missing data records from parity (`backup --parity M`,
//! issue 19; docs/DESIGN.md "Parity").
//!
//! Before any device is read (`plan`), each stripe of the set's catalog
//! whose data records are on devices not given is checked: with at least
//! `k` of its `k + M` records on given devices it can be rebuilt, and the
//! ranges its missing records hold count as covered; the others stay
//! missing (and name the file with those ranges). After the devices are
//! read (`run`), the rebuildable stripes are read by offset from the given
//! devices on a few worker threads: every record's header and CRC are
//! checked against the catalog first (a damaged or altered record counts
//! as missing), then the missing data is rebuilt, checked against the CRC
//! the catalog holds for it, hashed for the file digest like any record
//! read, and written to its file. A stripe with fewer than `k` good
//! records rebuilds nothing: the file's digest then fails and it is named,
//! never restored with wrong bytes.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::device::Device;
use crate::format::parity::{check_data_shard, shard_to_record, ParityHeader};
use crate::format::{
    crc32c, payload_hash, CatalogStripe, RecordHeader, SetId, StripeRecord, HEADER_BYTES,
};
use crate::io::buffers::BufferPool;
use crate::media;
use crate::parity::{Codec, Rebuild};
use crate::units::shown_name;

use super::problem::Problem;
use super::read::{Destination, DeviceRead, Reader};
use super::select::{uncovered, NO_TARGET};
use super::transform::Inflate;
use super::{OpenSet, RestoreError};

/// Missing byte ranges of one file: (offset, length, device index).
type Ranges = Vec<(u64, u64, u32)>;
/// Per (device, file): its striped data records (start, end, rebuildable).
type Striped = HashMap<(u32, u32), Vec<(u64, u64, bool)>>;

/// What a restore rebuilt from parity (all zero for a set without it,
/// or with every device given).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RebuildSummary {
    /// Devices of the set not given (or not read): (index, path at backup).
    pub missing_devices: Vec<(u32, Vec<u8>)>,
    /// Data records and payload bytes rebuilt and proven by their CRC.
    pub records: u64,
    pub bytes: u64,
    /// Members of stripes that did not check but were not needed (the
    /// stripe was rebuilt from the others): device, offset, why.
    pub damaged: Vec<String>,
}

/// The stripes of one set to rebuild: indexes into its catalog's
/// stripes, each with the data positions whose device is absent.
#[derive(Debug, Default)]
pub(super) struct Plan {
    jobs: Vec<(usize, Vec<usize>)>,
    /// The absent devices of the set.
    pub(super) absent: Vec<u32>,
}

/// Which stripes of `set` can be rebuilt from the devices `reading`, and
/// the missing ranges that leaves (`coverage` made smaller in place: a
/// range on an absent device whose records are all in rebuildable stripes
/// is covered; of one with records in stripes that cannot be rebuilt,
/// those records' ranges stay missing).
pub(super) fn plan(set: &OpenSet, reading: &[u32], coverage: &mut [Option<Ranges>]) -> Plan {
    let Some(parity) = &set.catalog.parity else {
        return Plan::default();
    };
    let absent: Vec<u32> = (0..set.catalog.devices.len() as u32)
        .filter(|d| !reading.contains(d))
        .collect();
    let mut out = Plan {
        jobs: Vec::new(),
        absent: absent.clone(),
    };
    if absent.is_empty() {
        return out;
    }
    // Per (device, file): the device's striped data records, rebuildable or not.
    let mut records: Striped = HashMap::new();
    let mut striped = vec![false; set.catalog.devices.len()];
    for (i, s) in parity.stripes.iter().enumerate() {
        let given = s
            .data
            .iter()
            .chain(&s.parity)
            .filter(|r| reading.contains(&r.device))
            .count();
        let lost: Vec<usize> = (0..s.data.len())
            .filter(|&j| !reading.contains(&s.data[j].device))
            .collect();
        let can = given >= s.data.len();
        for r in &s.data {
            striped[r.device as usize] = true;
            records.entry((r.device, r.file_id)).or_default().push((
                r.file_offset,
                r.file_offset + u64::from(r.payload_bytes),
                can,
            ));
        }
        if !lost.is_empty() && can {
            out.jobs.push((i, lost));
        }
    }
    for list in records.values_mut() {
        list.sort_unstable();
    }
    // Per file: the segments on absent devices whose records are striped.
    let mut segments: HashMap<u32, Vec<(u64, u64, u32)>> = HashMap::new();
    for seg in &set.catalog.segments {
        let d = seg.device;
        if absent.contains(&d) && striped.get(d as usize) == Some(&true) {
            let range = (seg.offset, seg.offset + seg.length, d);
            segments.entry(seg.file_id).or_default().push(range);
        }
    }
    let none = Vec::new();
    for (file, ranges) in coverage.iter_mut().enumerate() {
        let Some(list) = ranges.take() else {
            continue;
        };
        let file = file as u32;
        let mut left: Ranges = Vec::new();
        for (start, length, device) in list {
            let end = start + length;
            // What the absent devices' segments over it give back: their
            // range less their records in stripes that cannot be rebuilt
            // (a range held twice, a failed device's copy and a survivor's,
            // is covered by either).
            let mut back: Vec<(u64, u64)> = Vec::new();
            for &(s, e, d) in segments.get(&file).unwrap_or(&none) {
                let (s, e) = (s.max(start), e.min(end));
                if s >= e {
                    continue;
                }
                let lost: Vec<(u64, u64)> = records
                    .get(&(d, file))
                    .unwrap_or(&Vec::new())
                    .iter()
                    .filter(|r| !r.2)
                    .map(|r| (r.0, r.1))
                    .collect();
                back.extend(uncovered(s, e, &lost));
            }
            back.sort_unstable();
            for (s, e) in uncovered(start, end, &back) {
                left.push((s, e - s, device));
            }
        }
        if !left.is_empty() {
            *ranges = Some(left);
        }
    }
    out
}

/// Rebuild the planned stripes of set `s` (see the module doc), on a few
/// threads. `targets[file]`: the restored file a record of the set's file
/// goes to, or `NO_TARGET`. Returns one reader result like a device's,
/// and what was rebuilt; `healed` gets the media extents (device, start,
/// end) of the data records rebuilt, `unrebuilt` the records of absent
/// devices that could not be (too few good members after all: a damaged
/// one): (restored file, offset, length, device).
pub(super) fn run(
    set: &OpenSet,
    s: usize,
    plan: &Plan,
    targets: &[u32],
    restored: &crate::format::Catalog,
    destination: Destination<'_>,
    (summary, healed, unrebuilt): (
        &mut RebuildSummary,
        &mut Vec<(u32, u64, u64)>,
        &mut Unrebuilt,
    ),
) -> Option<(Reader, Result<DeviceRead, RestoreError>)> {
    for &d in &plan.absent {
        let path = set.catalog.devices[d as usize].path.clone();
        if !summary
            .missing_devices
            .iter()
            .any(|(i, p)| *i == d && *p == path)
        {
            summary.missing_devices.push((d, path));
        }
    }
    let parity = set.catalog.parity.as_ref()?;
    if plan.jobs.is_empty() {
        return None;
    }
    let devices: HashMap<u32, &dyn Device> = set
        .devices
        .iter()
        .map(|(d, l)| (l.device_index, d.as_ref()))
        .collect();
    let next = AtomicUsize::new(0);
    let out = Mutex::new(DeviceRead {
        records: Vec::new(),
        records_read: 0,
        payload_bytes: 0,
        errors: Vec::new(),
    });
    let failed: Mutex<Option<RestoreError>> = Mutex::new(None);
    let rebuilt = Mutex::new((0u64, 0u64, Vec::new(), Vec::new()));
    let lost_here: Mutex<Vec<(u32, u64, u64, u32)>> = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 4);
    let chunk = set.catalog.chunk_bytes;
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (next, out, failed, rebuilt, devices) = (&next, &out, &failed, &rebuilt, &devices);
            let lost_here = &lost_here;
            scope.spawn(move || {
                let mut pool = member_pool(chunk);
                let mut files: HashMap<u32, File> = HashMap::new();
                let mut codecs: HashMap<(usize, usize), Codec> = HashMap::new();
                let mut inflate = Inflate::default();
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some((stripe, lost)) = plan.jobs.get(j) else {
                        break;
                    };
                    let st = &parity.stripes[*stripe];
                    let mut local = Vec::new();
                    let mut errors = Vec::new();
                    let mut damaged = Vec::new();
                    let m = parity.m as usize;
                    let got = rebuild_stripe(
                        (st, m, set.catalog.set_id),
                        (lost, ReadLost::Yes),
                        devices,
                        &mut pool,
                        &mut codecs,
                        &mut inflate,
                        (&mut errors, &mut damaged),
                    );
                    // A damaged member on a given device not rebuilt:
                    // its file and range named (an absent device's are
                    // named as missing ranges by `plan`).
                    for &pos in lost.iter().filter(|p| !got.iter().any(|g| g.position == **p)) {
                        let r = &st.data[pos];
                        let Some(&dev) = devices.get(&r.device) else {
                            // On an absent device: its range is missing.
                            let target = targets.get(r.file_id as usize).copied();
                            if let Some(target) = target.filter(|&t| t != NO_TARGET) {
                                let length = u64::from(r.payload_bytes);
                                let range = (target, r.file_offset, length, r.device);
                                lost_here.lock().expect("rebuild").push(range);
                            }
                            continue;
                        };
                        let path = set
                            .catalog
                            .files
                            .get(r.file_id as usize)
                            .map_or_else(|| format!("file id {}", r.file_id), |f| shown_name(&f.path));
                        errors.push(Problem::Rebuild {
                            device: dev.path().display().to_string(),
                            offset: r.position,
                            why: format!(
                                "the damaged data record of {path} at file offset {}, {} bytes, is not rebuilt: too few other records of its stripe check",
                                r.file_offset, r.payload_bytes
                            ),
                        });
                    }
                    let mut extents = Vec::new();
                    for got in got {
                        let r = st.data[got.position];
                        extents.push((r.device, r.position, r.position + got.media_bytes));
                        local.push((r, got.payload));
                    }
                    let mut done = (0u64, 0u64);
                    for (r, payload) in &local {
                        let target = targets
                            .get(r.file_id as usize)
                            .copied()
                            .unwrap_or(NO_TARGET);
                        if target == NO_TARGET {
                            continue;
                        }
                        done.0 += 1;
                        done.1 += payload.len() as u64;
                        let record = (r.file_offset, r.payload_bytes, payload_hash(payload));
                        if let Err(e) = write(
                            destination,
                            restored,
                            target,
                            &mut files,
                            r.file_offset,
                            payload,
                        ) {
                            *failed.lock().expect("rebuild") = Some(e);
                            return;
                        }
                        out.lock().expect("rebuild").records.push((target, record));
                    }
                    {
                        let mut o = out.lock().expect("rebuild");
                        o.errors.extend(errors);
                    }
                    let mut r = rebuilt.lock().expect("rebuild");
                    r.0 += done.0;
                    r.1 += done.1;
                    r.2.extend(damaged);
                    r.3.extend(extents);
                }
            });
        }
    });
    let (records, bytes, damaged, extents) = rebuilt.into_inner().expect("rebuild");
    healed.extend(extents);
    unrebuilt.extend(
        lost_here
            .into_inner()
            .expect("rebuild")
            .into_iter()
            .map(|(t, o, l, d)| (s, t, o, l, d)),
    );
    summary.records += records;
    summary.bytes += bytes;
    summary.damaged.extend(damaged);
    let reader: Reader = (s, u32::MAX, "parity rebuild".to_string());
    if let Some(e) = failed.into_inner().expect("rebuild") {
        return Some((reader, Err(e)));
    }
    Some((reader, Ok(out.into_inner().expect("rebuild"))))
}

/// Write a rebuilt payload to its restored file (or an image target).
fn write(
    destination: Destination<'_>,
    restored: &crate::format::Catalog,
    target: u32,
    files: &mut HashMap<u32, File>,
    offset: u64,
    payload: &[u8],
) -> Result<(), RestoreError> {
    let path = || shown_name(&restored.files[target as usize].path);
    let file = match files.entry(target) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => {
            let opened = match destination {
                Destination::Nowhere => return Ok(()),
                Destination::Tree(staged) => staged.open_for_write(target as usize),
                Destination::Device(f) => f.try_clone(),
            };
            v.insert(opened.map_err(|error| RestoreError::Open {
                path: path(),
                error,
            })?)
        }
    };
    file.write_all_at(payload, offset)
        .map_err(|error| RestoreError::Write {
            device: "parity rebuild".to_string(),
            why: format!("write {} at offset {offset}: {error}", path()),
        })
}

/// One data record rebuilt from parity and proven (header against its
/// stripe entry, CRC of its stored bytes, opened and decompressed).
pub(super) struct Rebuilt {
    /// Its data position in the stripe.
    pub(super) position: usize,
    /// Its header, and its header block as rebuilt (magic put back: the
    /// file info, sealed or not, for a reader with no catalog).
    pub(super) header: RecordHeader,
    pub(super) header_block: Vec<u8>,
    /// Its payload, opened and decompressed.
    pub(super) payload: Vec<u8>,
    /// The record's length on media.
    pub(super) media_bytes: u64,
}

/// Whether `rebuild_stripe` reads the lost members that are on given
/// devices (a catalog restore: its reader said they are bad, and the
/// rebuild names why) or leaves them unread (a scan, which may not know
/// where a damaged record lies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadLost {
    Yes,
    No,
}

/// The stripe's lost data records rebuilt, each record checked against
/// the catalog and its payload opened and decompressed like a record
/// read. Nothing when fewer than `k` of the stripe's records on the given
/// devices (`devices`: index -> device) check.
#[allow(clippy::too_many_arguments)]
pub(super) fn rebuild_stripe(
    (st, m, set_id): (&CatalogStripe, usize, SetId),
    (lost, read_lost): (&[usize], ReadLost),
    devices: &HashMap<u32, &dyn Device>,
    pool: &mut BufferPool,
    codecs: &mut HashMap<(usize, usize), Codec>,
    inflate: &mut Inflate,
    (errors, damaged): (&mut Vec<Problem>, &mut Vec<String>),
) -> Vec<Rebuilt> {
    // The code is the set's k + M even when fewer parity records were
    // written (they are a prefix: parity record j is shard k + j).
    let k = st.data.len();
    let shard = st.shard_bytes() as usize;
    let mut shards: Vec<Vec<u8>> = vec![vec![0u8; shard]; k + m];
    let mut present = vec![false; k + m];
    let mut good = 0;
    let mut bad: Vec<Problem> = Vec::new();
    for (i, r) in st.data.iter().chain(st.parity.iter().take(m)).enumerate() {
        if good >= k {
            break;
        }
        if read_lost == ReadLost::No && lost.contains(&i) {
            continue;
        }
        let Some(&dev) = devices.get(&r.device) else {
            continue;
        };
        match read_member(dev, (set_id, r.device), st, i, r, pool) {
            Ok(bytes) => {
                shards[i][..bytes.len()].copy_from_slice(bytes);
                present[i] = true;
                good += 1;
            }
            Err(why) => bad.push(Problem::Rebuild {
                device: dev.path().display().to_string(),
                offset: r.position,
                why,
            }),
        }
    }
    if good < k {
        errors.extend(bad);
        return Vec::new();
    }
    damaged.extend(bad.iter().map(|p| match p {
        Problem::Rebuild {
            device,
            offset,
            why,
        } => {
            format!("device {device}: offset {offset}: damaged record: {why}")
        }
        other => other.to_string(),
    }));
    let codec = match codecs.entry((k, m)) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => match Codec::new(k, m) {
            Ok(c) => v.insert(c),
            Err(_) => return Vec::new(),
        },
    };
    {
        let mut refs: Vec<&mut [u8]> = shards.iter_mut().map(|s| &mut s[..]).collect();
        if codec
            .reconstruct(&mut refs, &present, Rebuild::DataOnly)
            .is_err()
        {
            return Vec::new();
        }
    }
    // Each rebuilt record goes through what a record read from its device
    // goes through: header and stored bytes against the catalog, then
    // opened (AEAD) and decompressed into exactly its payload.
    let mut out = Vec::new();
    for &pos in lost {
        let r = &st.data[pos];
        let shard = &mut shards[pos];
        let why = match check_data_shard(shard, set_id, r) {
            Ok((h, media)) => {
                shard_to_record(shard);
                let stored = &shard[HEADER_BYTES..HEADER_BYTES + h.stored_len() as usize];
                match inflate.payload(&h, stored) {
                    Ok(payload) => {
                        out.push(Rebuilt {
                            position: pos,
                            header: h,
                            header_block: shard[..HEADER_BYTES].to_vec(),
                            payload: payload.to_vec(),
                            media_bytes: media as u64,
                        });
                        continue;
                    }
                    Err(e) => format!("the rebuilt record does not open: {e}"),
                }
            }
            Err(why) => format!("the rebuilt record does not check: {why}"),
        };
        if let Some(&dev) = devices.get(&r.device) {
            damaged.push(format!(
                "device {}: offset {}: {why}",
                dev.path().display(),
                r.position
            ));
        }
    }
    out
}

/// The pool a stripe reader needs for the largest member of a set with
/// `chunk_bytes`: a parity record (header and a shard of a whole data
/// record).
pub(super) fn member_pool(chunk_bytes: u32) -> BufferPool {
    BufferPool::new(
        1,
        HEADER_BYTES + crate::format::parity::shard_bytes_for(chunk_bytes) as usize,
    )
}

/// Read member `i` of a stripe (data `0..k`, parity after) from `dev`, the
/// device of index `device_index` of set `set_id`, and check it against
/// the catalog: header, kind, set, device, what it holds, CRC.
/// Its shard (a data record as stored with its magic zeroed,
/// `media::shard`, or a parity record's payload; at most the shard
/// length), or why it cannot be used.
pub(super) fn read_member<'p>(
    dev: &dyn Device,
    (set_id, device_index): (SetId, u32),
    st: &CatalogStripe,
    i: usize,
    r: &StripeRecord,
    pool: &'p mut BufferPool,
) -> Result<&'p [u8], String> {
    let shard = st.shard_bytes() as usize;
    // The catalog's rules keep a record within the chunk; checked again.
    if HEADER_BYTES + shard > pool.slot_bytes() {
        return Err(format!(
            "a stripe's shard of {shard} bytes is larger than the set's chunk"
        ));
    }
    if i < st.data.len() {
        let buf = &mut pool.slot_mut(0)[..shard];
        let len = media::shard::read_data_shard(dev, set_id, r, buf)?;
        return Ok(&pool.slot(0)[..len]);
    }
    let media_bytes = HEADER_BYTES + shard;
    let buf = &mut pool.slot_mut(0)[..media_bytes];
    match media::read_at(dev, buf, r.position) {
        Ok(n) if n == media_bytes => {}
        Ok(n) => return Err(format!("short read ({n} of {media_bytes} bytes)")),
        Err(e) => return Err(e.to_string()),
    }
    let (head, payload) = buf.split_at(HEADER_BYTES);
    let h = ParityHeader::decode(head).map_err(|e| format!("parity record header: {e}"))?;
    let same_data = h.data.len() == st.data.len()
        && h.data.iter().zip(&st.data).all(|(a, b)| {
            a.file_id == b.file_id
                && a.file_offset == b.file_offset
                && a.payload_bytes == b.payload_bytes
                && a.payload_crc == b.payload_crc
        });
    if h.set_id != set_id
        || h.device_index != device_index
        || h.shard_bytes != r.payload_bytes
        || h.payload_crc != r.payload_crc
        || usize::from(h.position) != i
        || !same_data
    {
        return Err("parity record is not the one the catalog lists in its stripe".into());
    }
    let crc = crc32c(payload);
    if crc != r.payload_crc {
        return Err(format!(
            "payload checksum mismatch (stored {:#010x}, computed {crc:#010x}): not used to rebuild",
            r.payload_crc
        ));
    }
    Ok(&pool.slot(0)[HEADER_BYTES..media_bytes])
}

/// `run` for every set read: the planned stripes (members on absent
/// devices) and the stripes with a data member on a given device that its
/// reader did not read good (damaged or altered: missing exactly like a
/// record on an absent device). Extends `results` with the rebuilds; a
/// reader's problems inside a record that was rebuilt are not errors
/// (the member is named in the summary's `damaged` instead).
/// Returns the records of absent devices that could not be rebuilt
/// (`Unrebuilt`): their files' missing ranges.
pub(super) fn run_all(
    sets: &[&OpenSet],
    selection: &super::select::Selection,
    results: &mut Vec<(Reader, Result<DeviceRead, RestoreError>)>,
    restored: &crate::format::Catalog,
    destination: Destination<'_>,
    summary: &mut RebuildSummary,
) -> Unrebuilt {
    let mut unrebuilt = Vec::new();
    let targets = super::select::targets(sets, selection);
    let mut extra = Vec::new();
    for (s, set) in sets.iter().enumerate() {
        let Some(parity) = &set.catalog.parity else {
            continue;
        };
        let planned = selection.rebuild.get(s);
        let mut jobs: std::collections::BTreeMap<usize, Vec<usize>> = planned
            .map(|p| p.jobs.iter().cloned().collect())
            .unwrap_or_default();
        // Per device read good: the (restored file, offset) of its records.
        let mut read: HashMap<u32, std::collections::HashSet<(u32, u64)>> = HashMap::new();
        for ((rs, device, _), result) in results.iter() {
            if let (true, Ok(r)) = (*rs == s, result) {
                let set = read.entry(*device).or_default();
                set.extend(r.records.iter().map(|(t, d)| (*t, d.0)));
            }
        }
        for (i, st) in parity.stripes.iter().enumerate() {
            for (pos, r) in st.data.iter().enumerate() {
                let Some(good) = read.get(&r.device) else {
                    continue;
                };
                let target = targets[s]
                    .get(r.file_id as usize)
                    .copied()
                    .unwrap_or(NO_TARGET);
                if target != NO_TARGET && !good.contains(&(target, r.file_offset)) {
                    let lost = jobs.entry(i).or_default();
                    if !lost.contains(&pos) {
                        lost.push(pos);
                    }
                }
            }
        }
        let plan = Plan {
            jobs: jobs.into_iter().collect(),
            absent: planned.map(|p| p.absent.clone()).unwrap_or_default(),
        };
        let mut healed = Vec::new();
        let got = run(
            set,
            s,
            &plan,
            &targets[s],
            restored,
            destination,
            (&mut *summary, &mut healed, &mut unrebuilt),
        );
        extra.extend(got);
        for ((rs, device, _), result) in results.iter_mut() {
            let Ok(r) = result else { continue };
            if *rs != s {
                continue;
            }
            r.errors.retain(|p| match p {
                Problem::Record { offset, .. } => !healed
                    .iter()
                    .any(|&(d, a, b)| d == *device && a <= *offset && *offset < b),
                _ => true,
            });
        }
    }
    results.extend(extra);
    unrebuilt
}

/// Records of absent devices that a planned rebuild could not make:
/// (set, restored file, file offset, length, device index in the set).
pub(super) type Unrebuilt = Vec<(usize, u32, u64, u64, u32)>;
