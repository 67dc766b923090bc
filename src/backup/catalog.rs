//! The last two phases of a backup run: the catalog of where every range
//! landed, then on every device that did not fail the catalog, sync, label
//! (complete), sync.

use crate::device::{Access, Device};
use crate::format::{
    CatalogDevice, CatalogSegment, DeviceState, DigestRecord, Label, LabelState, SetId,
};
use crate::media;

use super::report::{NoCatalogOn, NoCatalogWhy};
use super::run::backup_label;
use super::{
    catalog_file, catalog_head, BackupConfig, BackupError, DeviceEnd, DeviceReport, SetInput,
};
use crate::engine::dispatch::Dispatcher;
use crate::engine::ring::{RecordDone, RingConfig, RingEnd, RingOutcome};

/// What the data phase found about the sources, for the report.
pub(super) struct SourceFindings {
    /// Files that changed while they were read: (path, what changed).
    pub(super) changed: Vec<(Vec<u8>, crate::source::Changed)>,
    /// Sources that could not be opened: (path, error), each once.
    pub(super) unreadable: Vec<(Vec<u8>, std::io::Error)>,
    /// Ranges not in the set: (path, offset, length).
    pub(super) unplaced: Vec<(Vec<u8>, u64, u64)>,
}

/// After the data phase: every file whose data was read is looked at again
/// (a change since the walk may have torn its copy), and the work that is
/// not in the set (no device could take it, or its source could not be
/// opened) is named by path.
pub(super) fn source_findings(input: &SetInput, dispatcher: &Dispatcher) -> SourceFindings {
    let changed = input
        .entries
        .iter()
        .enumerate()
        .filter(|(i, _)| input.since.as_ref().and_then(|s| s.origin(*i)).is_none())
        .filter_map(|(_, e)| crate::source::changed_since_walk(&e).map(|what| (e.path, what)))
        .collect();
    let skipped = dispatcher.skipped();
    let mut unreadable: Vec<(Vec<u8>, std::io::Error)> = Vec::new();
    let mut skipped_items = Vec::with_capacity(skipped.len());
    for (w, why) in skipped {
        let path = input.entries.at(w.file as usize).path;
        if unreadable.last().is_none_or(|(p, _)| *p != path) {
            unreadable.push((path, why));
        }
        skipped_items.push(w);
    }
    let unplaced = dispatcher
        .unplaced()
        .into_iter()
        .chain(skipped_items)
        .map(|w| {
            let path = input.entries.at(w.file as usize).path;
            (path, w.offset, w.length)
        })
        .collect();
    SourceFindings {
        changed,
        unreadable,
        unplaced,
    }
}

pub(super) fn device_end(end: &RingEnd) -> DeviceEnd {
    match end {
        RingEnd::Complete => DeviceEnd::Complete,
        RingEnd::Full { .. } => DeviceEnd::Full,
        RingEnd::Failed { .. } => DeviceEnd::Failed,
    }
}

/// Catalog phase: where every range landed, on every device (a failed
/// device's ranges are listed as copies), and per-file digests over the
/// durable records of the devices that did not fail; sealed with the
/// set's key. Invariant: the digest of a file stored in this set covers
/// each of its records once. Returns the encoded catalog and its segment
/// count, or the error of an entry that could not be read back from the
/// walk's temporary file (at any time in the run: the catalog would not
/// list it as it is, so none is written).
///
/// Per file, only its digest (32 bytes) is held beside the entries: the
/// catalog is encoded file by file (`Catalog::encode_streamed`), never
/// held decoded (issue 23, PERF.md "#23 memory").
pub(super) fn build_catalog(
    input: &SetInput,
    devices: &[(Vec<u8>, u64)],
    outcomes: &[RingOutcome],
    ends: &[DeviceEnd],
    config: &BackupConfig,
    parity: Option<crate::format::CatalogParity>,
) -> Result<(Vec<u8>, usize), BackupError> {
    let segments = placements(outcomes);
    let (digests, stored_bytes) = digests(outcomes, ends, input.entries.len());
    let catalog_devices: Vec<CatalogDevice> = devices
        .iter()
        .zip(outcomes)
        .zip(ends)
        .map(|(((name, capacity_bytes), o), end)| CatalogDevice {
            path: name.clone(),
            capacity_bytes: *capacity_bytes,
            state: match end {
                DeviceEnd::Complete => DeviceState::Complete,
                DeviceEnd::Full => DeviceState::Full,
                DeviceEnd::Failed => DeviceState::Failed,
            },
            data_end: o.data_end,
        })
        .collect();
    let segment_count = segments.len();
    let since = input.since.as_ref();
    let mut head = catalog_head(
        config.set_id,
        config.created_unix_ns,
        config.chunk_bytes,
        &catalog_devices,
        since,
        segments,
    );
    head.parity = parity;
    // Written only with files (one encoding per catalog).
    if !input.entries.is_empty() {
        head.stored_bytes = stored_bytes;
    }
    let file = |i: usize| {
        let mut file = catalog_file(&input.entries, i, since);
        if file.kind.has_data() && file.origin == 0 {
            file.digest = digests[i];
        }
        file
    };
    let encoded = head.encode_streamed(input.entries.len(), &file, config.mac_key.as_ref());
    // `--encrypt`: what goes on media (and what the label's digest covers)
    // is the sealed catalog.
    let encoded = match &config.encryption {
        Some(e) => e.seal_catalog(&encoded),
        None => encoded,
    };
    input.entries.check()?;
    Ok((encoded, segment_count))
}

/// The catalog segments of every device's placed ranges (sorted by file,
/// offset, device).
pub(super) fn placements(outcomes: &[RingOutcome]) -> Vec<CatalogSegment> {
    let mut segments: Vec<CatalogSegment> = Vec::new();
    for (device, outcome) in outcomes.iter().enumerate() {
        segments.extend(outcome.placed.iter().map(|p| CatalogSegment {
            file_id: p.file,
            offset: p.offset,
            length: p.length,
            device: device as u32,
            position: p.position,
            records: p.records,
        }));
    }
    segments.sort_by_key(|s| (s.file_id, s.offset, s.device));
    segments
}

/// Per file, the digest (`format::file_digest`) of the durable records of
/// the devices that did not fail, each record offset once (the digest of
/// no records for a file with none), and the bytes those records take as
/// stored (the catalog's stored section; empty when every record is
/// stored at its payload length). The records are gathered in one
/// list sorted by file (not a list per file: most files of a large tree
/// have one record or none).
pub(super) fn digests(
    outcomes: &[RingOutcome],
    ends: &[DeviceEnd],
    file_count: usize,
) -> (Vec<[u8; 32]>, Vec<u64>) {
    let mut records: Vec<(u32, DigestRecord, u32)> = outcomes
        .iter()
        .zip(ends)
        .filter(|(_, end)| **end != DeviceEnd::Failed)
        .flat_map(|(outcome, _)| {
            outcome.records.iter().map(|r: &RecordDone| {
                let digested = (r.file_offset, r.payload_bytes, r.payload_hash);
                (r.file_id, digested, r.stored_bytes)
            })
        })
        .collect();
    records.sort_unstable();
    // Two copies of one record (a range written again) count once.
    records.dedup_by_key(|(file, (offset, _, _), _)| (*file, *offset));
    let mut digests = vec![crate::format::file_digest(&mut []); file_count];
    let mut stored = vec![0u64; file_count];
    let mut at = 0;
    while at < records.len() {
        let file = records[at].0;
        let end = at + records[at..].partition_point(|r| r.0 == file);
        let mut mine: Vec<DigestRecord> = records[at..end].iter().map(|r| r.1).collect();
        digests[file as usize] = crate::format::file_digest(&mut mine);
        stored[file as usize] = records[at..end].iter().map(|r| u64::from(r.2)).sum();
        at = end;
    }
    // The stored section only where it says something: a set none of
    // whose records is stored shorter than its payload (not compressed)
    // has none, and a reader of many files holds nothing for it.
    if records.iter().all(|r| r.2 == r.1 .1) {
        stored = Vec::new();
    }
    (digests, stored)
}

/// Finish phase: catalog, sync, label (complete), sync, on every device
/// that did not fail, all at once (`write_catalog_records`, then
/// `complete_labels`). Invariant: a device's label says Complete only
/// once its catalog is durable. Per device: None for a failed device,
/// else where its catalog ends or why it could not be written.
pub(super) fn write_catalogs(
    devices: &[Box<dyn Device>],
    outcomes: &[RingOutcome],
    ends: &[DeviceEnd],
    encoded: &[u8],
    rings: &[RingConfig],
    config: &BackupConfig,
    after: &[(u64, u64)],
) -> Vec<Option<Result<u64, media::MediaError>>> {
    let written = write_catalog_records(devices, ends, encoded, rings, config, after);
    complete_labels(devices, outcomes, encoded, config, after, written)
}

/// The finish phase's first half, on every device that did not fail, all
/// at once: the catalog (after the parity records, `after`) and, on a
/// random-access device, a sync; no label is written yet, so a device
/// that fails here leaves every label still saying Writing (`--parity`:
/// the run treats it as failed and writes its data again, `backup::after`).
/// Per device: None for a failed device, else where its catalog ends or
/// why it could not be written.
pub(super) fn write_catalog_records(
    devices: &[Box<dyn Device>],
    ends: &[DeviceEnd],
    encoded: &[u8],
    rings: &[RingConfig],
    config: &BackupConfig,
    after: &[(u64, u64)],
) -> Vec<Option<Result<u64, media::MediaError>>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(i, dev)| {
                let failed = ends[i] == DeviceEnd::Failed;
                let payload_max = rings[i].record_payload_bytes_max;
                let at = after[i];
                scope.spawn(move || {
                    (!failed).then(|| {
                        let dev = dev.as_ref();
                        write_device_catalog(dev, i as u32, at, encoded, payload_max, config)
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("finish thread panicked"))
            .collect()
    })
}

/// The finish phase's second half: label (complete) and sync, all at
/// once, on every device whose catalog `written` says is durable.
/// Returns `written` with each label's error in place of its catalog end.
pub(super) fn complete_labels(
    devices: &[Box<dyn Device>],
    outcomes: &[RingOutcome],
    encoded: &[u8],
    config: &BackupConfig,
    after: &[(u64, u64)],
    written: Vec<Option<Result<u64, media::MediaError>>>,
) -> Vec<Option<Result<u64, media::MediaError>>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = written
            .into_iter()
            .enumerate()
            .map(|(i, written)| {
                let label = backup_label(devices, config, i as u32);
                let (dev, data_end, at) = (devices[i].as_ref(), outcomes[i].data_end, after[i].0);
                scope.spawn(move || {
                    written.map(|w| {
                        let end = w?;
                        complete_label(dev, &label, (data_end, at), encoded, config)?;
                        Ok(end)
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("finish thread panicked"))
            .collect()
    })
}

/// One report per device: how its data phase ended and whether its
/// catalog was written.
pub(super) fn device_reports(
    devices: &[(Vec<u8>, u64)],
    outcomes: Vec<RingOutcome>,
    ends: &[DeviceEnd],
    finished: Vec<Option<Result<u64, media::MediaError>>>,
) -> Vec<DeviceReport> {
    let per_device = devices.iter().zip(outcomes).zip(finished);
    per_device
        .enumerate()
        .map(|(i, (((name, _), outcome), finish))| {
            let (catalog_end, catalog_error) = match finish {
                None => (None, None),
                Some(Ok(end)) => (Some(end), None),
                Some(Err(e)) => (None, Some(e)),
            };
            let error = match outcome.end {
                RingEnd::Complete => None,
                RingEnd::Full { error } | RingEnd::Failed { error } => Some(error),
            };
            DeviceReport {
                path: String::from_utf8_lossy(name).into_owned(),
                end: ends[i],
                error,
                redirected_bytes: outcome.redirected_bytes,
                stats: outcome.stats,
                data_end: outcome.data_end,
                catalog_end,
                catalog_error,
            }
        })
        .collect()
}

/// The error of a run where no device could take the catalog: every
/// device named with why (its catalog's error, or its data phase's).
pub(super) fn no_catalog(reports: Vec<DeviceReport>) -> BackupError {
    let devices = reports
        .into_iter()
        .map(|r| NoCatalogOn {
            device: r.path,
            why: match (r.catalog_error, r.error) {
                (Some(error), _) => NoCatalogWhy::Catalog(error),
                (None, Some(fault)) => NoCatalogWhy::Data(fault),
                (None, None) => NoCatalogWhy::Unknown,
            },
        })
        .collect();
    BackupError::NoCatalog { devices }
}

/// Catalog after the data, sync, label complete, sync. On a tape: a
/// filemark, the catalog as tape file 1, End record, filemark (the label
/// cannot be rewritten: the End record and filemark say "complete").
pub(super) fn finish_device(
    dev: &dyn Device,
    label: &Label,
    outcome: &RingOutcome,
    (catalog_at, sequence): (u64, u64),
    encoded: &[u8],
    payload_bytes_max: u32,
    config: &BackupConfig,
) -> Result<u64, media::MediaError> {
    let at = (catalog_at, sequence);
    let end = write_device_catalog(
        dev,
        label.device_index,
        at,
        encoded,
        payload_bytes_max,
        config,
    )?;
    complete_label(dev, label, (outcome.data_end, catalog_at), encoded, config)?;
    Ok(end)
}

/// A device's catalog at `catalog_at` (records from `sequence` on), then
/// on a random-access device a sync; on a tape the filemarks and End
/// record that close it (`finish_device`). Returns where it ends.
fn write_device_catalog(
    dev: &dyn Device,
    device_index: u32,
    (catalog_at, sequence): (u64, u64),
    encoded: &[u8],
    payload_bytes_max: u32,
    config: &BackupConfig,
) -> Result<u64, media::MediaError> {
    type WriteCatalog =
        fn(&dyn Device, SetId, u32, u64, u64, &[u8], u32) -> Result<u64, media::MediaError>;
    let sequential = dev.access() == Access::Sequential;
    let (write, record_bytes): (WriteCatalog, u32) = if sequential {
        (media::write_tape_catalog, payload_bytes_max)
    } else {
        (media::write_catalog, config.chunk_bytes)
    };
    let catalog_end = write(
        dev,
        config.set_id,
        device_index,
        sequence,
        catalog_at,
        encoded,
        record_bytes,
    )?;
    if !sequential {
        sync(dev)?;
    }
    Ok(catalog_end)
}

fn sync(dev: &dyn Device) -> Result<(), media::MediaError> {
    dev.sync().map_err(|error| media::MediaError::Io {
        device: dev.path().display().to_string(),
        op: "sync",
        offset: 0,
        error,
    })
}

/// Once the catalog at `catalog_at` is durable: the label (complete) and
/// a sync; nothing on a tape (its End record says complete).
fn complete_label(
    dev: &dyn Device,
    label: &Label,
    (data_end, catalog_at): (u64, u64),
    encoded: &[u8],
    config: &BackupConfig,
) -> Result<(), media::MediaError> {
    if dev.access() == Access::Sequential {
        return Ok(());
    }
    let label = Label {
        state: LabelState::Complete,
        // After the parity records (`--parity`), else right after the data.
        catalog_offset: catalog_at,
        catalog_bytes: encoded.len() as u64,
        data_end,
        catalog_digest: *blake3::hash(encoded).as_bytes(),
        ..*label
    }
    .sealed(config.mac_key.as_ref());
    media::write_label(dev, &label)?;
    sync(dev)
}
