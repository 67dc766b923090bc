//! `pbio scrub --repair` (issue 19): the records a set should hold,
//! rebuilt from parity and written back.
//!
//! - `--replace OLD=NEW`: every record device `OLD` held is rebuilt from
//!   the other devices (OLD is not read) and written onto `NEW` **at the
//!   media offset the catalog names for it**, so the catalog stays what it
//!   is, byte for byte, on every device: nothing but `NEW` is written, and
//!   a repair that stops half-way leaves the other devices as they were.
//!   `NEW` gets a Writing label first, then the data and parity records,
//!   the catalog right after its last record, and last a Complete label
//!   (same set, same index), each step made durable before the next, as a
//!   backup writes a device.
//! - Bad records on given devices (a record whose header or CRC does not
//!   check, a parity record that does not match its data) are rewritten in
//!   place, at their own offset.
//!
//! A data record is rebuilt whole, header block included (parity is over
//! the records as stored, docs/FORMAT.md 5.1): the same bytes the writer
//! wrote, compressed or sealed as they were. A parity record's header is
//! made as the writer made it (its `sequence` the record's place among the
//! device's records in media order). An encrypted set's catalog is sealed
//! again with its data key for the replacement (the same bytes as on the
//! other devices), and the new labels' MACs keyed as the set's are.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::device::Device;
use crate::format::parity::{ParityHeader, StripeData};
use crate::format::{
    crc32c, round_up_block, CatalogStripe, DeviceState, Label, LabelState, MacKey, HEADER_BYTES,
};
use crate::io::buffers::BufferPool;
use crate::media::{self, MediaError};

use super::scrub::{pass, readers, Checked, ScrubReport, StripeSink};
use super::OpenSet;

/// The device that takes the place of device `index` of the set.
pub struct Replacement<'a> {
    pub index: u32,
    pub device: &'a dyn Device,
}

/// Why a repair could not start (nothing was written) or finish.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("--replace: the set has devices 0 to {}, not {index}", .count.saturating_sub(1))]
    NoSuchDevice { index: u32, count: usize },
    #[error("--replace: device {index} failed during the backup: the set does not need it (its data is on the others)")]
    FailedDevice { index: u32 },
    #[error("--replace: device {index} holds {records} data records that no stripe protects: they cannot be rebuilt")]
    Unprotected { index: u32, records: u64 },
    #[error("--replace: {device} has {capacity_bytes} bytes; device {index} of the set needs {needed_bytes} (its records and catalog at the offsets the catalog names)")]
    TooSmall {
        device: String,
        index: u32,
        capacity_bytes: u64,
        needed_bytes: u64,
    },
    #[error(
        "the set's catalog does not encode to the bytes its labels hash to: refusing to write it"
    )]
    CatalogImage,
    #[error("no given device has a complete label to copy the set's label from")]
    NoLabel,
    #[error(transparent)]
    Media(#[from] MediaError),
}

/// What a repair wrote.
#[derive(Clone, Debug, Default)]
pub struct RepairReport {
    /// The device index replaced and the device written for it.
    pub replaced: Option<(u32, String)>,
    /// Records written (on the replacement and in place) and their bytes
    /// on media.
    pub records_written: u64,
    pub media_bytes_written: u64,
    /// Records rewritten in place: (device index, device, offset).
    pub in_place: Vec<(u32, String, u64)>,
    /// Records that should have been written and were not, and why.
    pub errors: Vec<String>,
    /// The replacement's catalog and Complete label are durable.
    pub replacement_complete: bool,
}

/// Rebuild and write (see the module doc). `scrubbed` is the scrub of
/// `set` with every given device; `writable` the given devices that may
/// be rewritten in place (opened for writing). Returns the scrub of the
/// stripes rewritten (with OLD not read) and what was written.
pub fn repair(
    set: &OpenSet,
    scrubbed: &ScrubReport,
    replace: Option<Replacement<'_>>,
    writable: &HashMap<u32, &dyn Device>,
    key: Option<&MacKey>,
) -> Result<(ScrubReport, RepairReport), RepairError> {
    let catalog = &set.catalog;
    let Some(parity) = &catalog.parity else {
        return Ok((scrubbed.clone(), RepairReport::default()));
    };
    let sequences = sequences(&parity.stripes);
    let mut prepared = None;
    if let Some(r) = &replace {
        prepared = Some(prepare(set, scrubbed, r, key)?);
    }
    let old = replace.as_ref().map(|r| r.index);
    let bad: HashSet<(u32, u64)> = scrubbed
        .bad
        .iter()
        .filter(|b| b.rebuildable && writable.contains_key(&b.device))
        .map(|b| (b.device, b.offset))
        .collect();
    let jobs: Vec<usize> = parity
        .stripes
        .iter()
        .enumerate()
        .filter(|(_, st)| {
            st.data
                .iter()
                .chain(&st.parity)
                .any(|r| Some(r.device) == old || bad.contains(&(r.device, r.position)))
        })
        .map(|(s, _)| s)
        .collect();
    let writer = Writer {
        set,
        m: parity.m as usize,
        replace: replace.as_ref().map(|r| (r.index, r.device)),
        writable,
        bad,
        sequences,
        out: Mutex::new(RepairReport {
            replaced: replace
                .as_ref()
                .map(|r| (r.index, r.device.path().display().to_string())),
            ..RepairReport::default()
        }),
    };
    let checked = pass(set, &readers(set, old), Some(&jobs), Some(&writer));
    let mut out = writer.out.into_inner().expect("repair");
    for (index, dev) in writable {
        if out.in_place.iter().any(|p| p.0 == *index) {
            if let Err(error) = dev.sync() {
                out.errors.push(sync_error(*dev, error).to_string());
            }
        }
    }
    if let (Some(r), Some(p)) = (&replace, prepared) {
        let lost_on_old = checked
            .bad
            .iter()
            .any(|b| b.device == r.index && !b.rebuildable);
        if lost_on_old {
            out.errors.push(format!(
                "device {}: some of its records cannot be rebuilt (too few good records in their stripes): its label is left Writing",
                r.index
            ));
        }
        let failed_write = out.errors.iter().any(|e| e.contains(&p.device_name));
        if !lost_on_old && !failed_write {
            finish(r.device, &p, catalog.chunk_bytes)?;
            out.replacement_complete = true;
        }
    }
    Ok((checked, out))
}

/// A replacement's label, catalog image and places, checked before
/// anything is written; its Writing label written.
struct Prepared {
    device_name: String,
    label: Label,
    /// The catalog as written on media (sealed for an encrypted set).
    encoded: Vec<u8>,
    catalog_at: u64,
    sequence: u64,
    /// The key of the set's label MACs.
    key: Option<MacKey>,
}

fn prepare(
    set: &OpenSet,
    scrubbed: &ScrubReport,
    r: &Replacement<'_>,
    key: Option<&MacKey>,
) -> Result<Prepared, RepairError> {
    let catalog = &set.catalog;
    let count = catalog.devices.len();
    let Some(entry) = catalog.devices.get(r.index as usize) else {
        return Err(RepairError::NoSuchDevice {
            index: r.index,
            count,
        });
    };
    if entry.state == DeviceState::Failed {
        return Err(RepairError::FailedDevice { index: r.index });
    }
    let unprotected = scrubbed
        .devices
        .get(r.index as usize)
        .map_or(0, |d| d.unprotected_records);
    if unprotected > 0 {
        return Err(RepairError::Unprotected {
            index: r.index,
            records: unprotected,
        });
    }
    let template = set
        .devices
        .iter()
        .map(|(_, l)| l)
        .find(|l| l.state == LabelState::Complete)
        .ok_or(RepairError::NoLabel)?;
    // The catalog as the labels hash it: an encrypted set's sealed again
    // with its data key under the run id of the label copied (sealing is
    // deterministic: the same pages, nonces and key give the same bytes),
    // and its labels' MACs keyed by that data key (docs/FORMAT.md 5.2).
    let mut encoded = catalog.encode();
    let mut key = key.copied();
    if template.seal.is_sealed() {
        let data_key = crate::format::seal::keyring::open(catalog.set_id, &template.seal)
            .map_err(|_| RepairError::CatalogImage)?;
        encoded = data_key.seal_catalog(template.seal.run_id, &encoded);
        key = Some(data_key.mac_key());
    }
    if *blake3::hash(&encoded).as_bytes() != template.catalog_digest {
        return Err(RepairError::CatalogImage);
    }
    // Its records end where its catalog starts: after its last record.
    let mut catalog_at = entry.data_end.max(media::data_start(r.device));
    let mut records = 0u64;
    for st in catalog.parity.iter().flat_map(|p| &p.stripes) {
        for rec in st.data.iter().chain(&st.parity) {
            if rec.device == r.index {
                records += 1;
                let end =
                    rec.position + HEADER_BYTES as u64 + round_up_block(rec.payload_bytes.into());
                catalog_at = catalog_at.max(end);
            }
        }
    }
    let needed_bytes =
        catalog_at + media::catalog_media_bytes(encoded.len() as u64, catalog.chunk_bytes);
    let capacity_bytes = r.device.capacity_bytes();
    let device_name = r.device.path().display().to_string();
    if capacity_bytes < needed_bytes {
        return Err(RepairError::TooSmall {
            device: device_name,
            index: r.index,
            capacity_bytes,
            needed_bytes,
        });
    }
    let label = template
        .writing(r.index, r.device.block_bytes())
        .sealed(key.as_ref());
    media::write_label(r.device, &label)?;
    Ok(Prepared {
        device_name,
        label: Label {
            data_end: entry.data_end,
            ..label
        },
        encoded,
        catalog_at,
        sequence: records,
        key,
    })
}

/// The replacement's catalog after its records, sync, Complete label, sync.
fn finish(dev: &dyn Device, p: &Prepared, chunk_bytes: u32) -> Result<(), RepairError> {
    let sync = |dev: &dyn Device| dev.sync().map_err(|error| sync_error(dev, error));
    media::write_catalog(
        dev,
        p.label.set_id,
        p.label.device_index,
        p.sequence,
        p.catalog_at,
        &p.encoded,
        chunk_bytes,
    )?;
    sync(dev)?;
    let label = Label {
        state: LabelState::Complete,
        catalog_offset: p.catalog_at,
        catalog_bytes: p.encoded.len() as u64,
        catalog_digest: *blake3::hash(&p.encoded).as_bytes(),
        mac: [0; 32],
        ..p.label
    }
    .sealed(p.key.as_ref());
    media::write_label(dev, &label)?;
    sync(dev)?;
    Ok(())
}

/// Every striped record's `sequence`: its place among its device's
/// records in media order (data records, then parity records).
fn sequences(stripes: &[CatalogStripe]) -> HashMap<(u32, u64), u64> {
    let mut per: HashMap<u32, Vec<u64>> = HashMap::new();
    for st in stripes {
        for r in st.data.iter().chain(&st.parity) {
            per.entry(r.device).or_default().push(r.position);
        }
    }
    let mut out = HashMap::new();
    for (d, mut positions) in per {
        positions.sort_unstable();
        for (n, p) in positions.into_iter().enumerate() {
            out.insert((d, p), n as u64);
        }
    }
    out
}

struct Writer<'a> {
    set: &'a OpenSet,
    m: usize,
    replace: Option<(u32, &'a dyn Device)>,
    writable: &'a HashMap<u32, &'a dyn Device>,
    /// (device, offset) of the bad records on writable devices.
    bad: HashSet<(u32, u64)>,
    sequences: HashMap<(u32, u64), u64>,
    out: Mutex<RepairReport>,
}

impl Writer<'_> {
    /// Where member record `r` goes, if anywhere: the replacement, or its
    /// own device when it is bad there.
    fn target(&self, device: u32, position: u64) -> Option<(&dyn Device, bool)> {
        if let Some((old, dev)) = self.replace {
            if old == device {
                return Some((dev, false));
            }
        }
        if self.bad.contains(&(device, position)) {
            return self.writable.get(&device).map(|d| (*d, true));
        }
        None
    }

    /// The record of member `i` of stripe `s` encoded into `buf`: a data
    /// record is `bytes` (the record as stored, header block included, as
    /// checked or rebuilt); a parity record is its header, made as the
    /// writer made it, then its shard `bytes` padded. Its length.
    fn encode(
        &self,
        s: usize,
        st: &CatalogStripe,
        i: usize,
        bytes: &[u8],
        buf: &mut [u8],
    ) -> usize {
        let k = st.data.len();
        if i < k {
            buf[..bytes.len()].copy_from_slice(bytes);
            return bytes.len();
        }
        let catalog = &self.set.catalog;
        let padded = round_up_block(bytes.len() as u64) as usize;
        let (head, body) = buf.split_at_mut(HEADER_BYTES);
        body[..bytes.len()].copy_from_slice(bytes);
        body[bytes.len()..padded].fill(0);
        let seq = |device: u32, position: u64| {
            self.sequences
                .get(&(device, position))
                .copied()
                .unwrap_or(0)
        };
        let r = &st.parity[i - k];
        ParityHeader {
            set_id: catalog.set_id,
            device_index: r.device,
            device_count: catalog.devices.len() as u32,
            sequence: seq(r.device, r.position),
            stripe_id: s as u64,
            position: i as u8,
            shard_bytes: st.shard_bytes(),
            payload_crc: crc32c(bytes),
            members: st.data.iter().chain(&st.parity).map(|r| r.device).collect(),
            data: st
                .data
                .iter()
                .map(|d| StripeData {
                    sequence: seq(d.device, d.position),
                    file_id: d.file_id,
                    file_offset: d.file_offset,
                    payload_bytes: d.payload_bytes,
                    payload_crc: d.payload_crc,
                })
                .collect(),
        }
        .encode_into(head);
        HEADER_BYTES + padded
    }
}

impl StripeSink for Writer<'_> {
    fn wants(&self, _stripe: usize, _checked: &Checked) -> bool {
        true
    }

    fn take(&self, s: usize, checked: &Checked, pool: &mut BufferPool) {
        let Some(parity) = &self.set.catalog.parity else {
            return;
        };
        let st = &parity.stripes[s];
        let members = st.data.iter().chain(st.parity.iter().take(self.m));
        for (i, r) in members.enumerate() {
            let Some((dev, in_place)) = self.target(r.device, r.position) else {
                continue;
            };
            let Some(payload) = checked.payloads.get(i) else {
                continue;
            };
            // A parity record's payload is its stripe's shard; a data
            // record is the whole record, checked by `check_stripe`.
            let buf = pool.slot_mut(0);
            let len = self.encode(s, st, i, payload, buf);
            let written = media::write_all_at(dev, &buf[..len], r.position);
            let mut out = self.out.lock().expect("repair");
            match written {
                Ok(()) => {
                    out.records_written += 1;
                    out.media_bytes_written += len as u64;
                    if in_place {
                        out.in_place
                            .push((r.device, dev.path().display().to_string(), r.position));
                    }
                }
                Err(e) => out.errors.push(e.to_string()),
            }
        }
    }
}

fn sync_error(dev: &dyn Device, error: std::io::Error) -> MediaError {
    MediaError::Io {
        device: dev.path().display().to_string(),
        op: "sync",
        offset: 0,
        error,
    }
}
