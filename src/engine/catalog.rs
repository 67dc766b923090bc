//! The last two phases of a backup run: the catalog of where every range
//! landed, then on every device that did not fail the catalog, sync, label
//! (complete), sync.

use crate::device::{Access, Device};
use crate::format::{
    CatalogDevice, CatalogSegment, DeviceState, DigestRecord, Label, LabelState, SetId,
};
use crate::media;

use super::backup::backup_label;
use super::dispatch::Dispatcher;
use super::report::{NoCatalogOn, NoCatalogWhy};
use super::ring::{RecordDone, RingConfig, RingEnd, RingOutcome};
use super::{catalog_for, BackupConfig, BackupError, DeviceEnd, DeviceReport, SetInput};

/// What the data phase found about the sources, for the report.
pub(super) struct SourceFindings {
    /// Files that changed while they were read: (path, what changed).
    pub(super) changed: Vec<(Vec<u8>, crate::source::Changed)>,
    /// Sources that could not be opened: (path, error), each once.
    pub(super) unreadable: Vec<(Vec<u8>, String)>,
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
        .filter_map(|(_, e)| {
            crate::source::changed_since_walk(e).map(|what| (e.path.clone(), what))
        })
        .collect();
    let skipped = dispatcher.skipped();
    let mut unreadable: Vec<(Vec<u8>, String)> = Vec::new();
    for (w, why) in &skipped {
        let path = &input.entries[w.file as usize].path;
        if unreadable.last().is_none_or(|(p, _)| p != path) {
            unreadable.push((path.clone(), why.clone()));
        }
    }
    let unplaced = dispatcher
        .unplaced()
        .into_iter()
        .chain(skipped.into_iter().map(|(w, _)| w))
        .map(|w| {
            let path = input.entries[w.file as usize].path.clone();
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
/// count.
pub(super) fn build_catalog(
    input: &SetInput,
    devices: &[(Vec<u8>, u64)],
    outcomes: &[RingOutcome],
    ends: &[DeviceEnd],
    config: &BackupConfig,
) -> (Vec<u8>, usize) {
    let (segments, mut per_file) = placements(outcomes, ends, input.entries.len());
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
    let mut catalog = catalog_for(
        config.set_id,
        config.created_unix_ns,
        config.chunk_bytes,
        &catalog_devices,
        &input.entries,
        input.since.as_ref(),
        segments,
    );
    for (file, records) in catalog.files.iter_mut().zip(per_file.iter_mut()) {
        if file.kind.has_data() && file.origin == 0 {
            records.sort_unstable();
            records.dedup_by_key(|r| r.0);
            file.digest = crate::format::file_digest(records);
        }
    }
    catalog.seal(config.mac_key.as_ref());
    (catalog.encode(), segment_count)
}

/// The catalog segments of every device's placed ranges (sorted by file,
/// offset, device) and, per file, the durable records of the devices that
/// did not fail, for its digest.
pub(super) fn placements(
    outcomes: &[RingOutcome],
    ends: &[DeviceEnd],
    file_count: usize,
) -> (Vec<CatalogSegment>, Vec<Vec<DigestRecord>>) {
    let mut segments: Vec<CatalogSegment> = Vec::new();
    let mut per_file: Vec<Vec<DigestRecord>> = vec![Vec::new(); file_count];
    for (device, outcome) in outcomes.iter().enumerate() {
        segments.extend(outcome.placed.iter().map(|p| CatalogSegment {
            file_id: p.file,
            offset: p.offset,
            length: p.length,
            device: device as u32,
            position: p.position,
            records: p.records,
        }));
        if ends[device] == DeviceEnd::Failed {
            continue;
        }
        for &RecordDone {
            file_id,
            file_offset,
            payload_bytes,
            payload_hash,
            ..
        } in &outcome.records
        {
            per_file[file_id as usize].push((file_offset, payload_bytes, payload_hash));
        }
    }
    segments.sort_by_key(|s| (s.file_id, s.offset, s.device));
    (segments, per_file)
}

/// Finish phase: catalog, sync, label (complete), sync, on every device
/// that did not fail, all at once. Invariant: a device's label says
/// Complete only once its catalog is durable. Per device: None for a
/// failed device, else where its catalog ends or why it could not be
/// written.
pub(super) fn write_catalogs(
    devices: &[Box<dyn Device>],
    outcomes: &[RingOutcome],
    ends: &[DeviceEnd],
    encoded: &[u8],
    rings: &[RingConfig],
    config: &BackupConfig,
) -> Vec<Option<Result<u64, media::MediaError>>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .zip(outcomes)
            .enumerate()
            .map(|(i, (dev, outcome))| {
                let label = backup_label(devices, config, i as u32);
                let failed = ends[i] == DeviceEnd::Failed;
                let payload_max = rings[i].record_payload_bytes_max;
                scope.spawn(move || {
                    (!failed).then(|| {
                        finish_device(dev.as_ref(), &label, outcome, encoded, payload_max, config)
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
        label.device_index,
        outcome.stats.records,
        outcome.data_end,
        encoded,
        record_bytes,
    )?;
    if sequential {
        return Ok(catalog_end);
    }
    let sync = |dev: &dyn Device| {
        dev.sync().map_err(|error| media::MediaError::Io {
            device: dev.path().display().to_string(),
            op: "sync",
            offset: 0,
            error,
        })
    };
    sync(dev)?;
    let label = Label {
        state: LabelState::Complete,
        catalog_offset: outcome.data_end,
        catalog_bytes: encoded.len() as u64,
        data_end: outcome.data_end,
        catalog_digest: *blake3::hash(encoded).as_bytes(),
        ..*label
    }
    .sealed(config.mac_key.as_ref());
    media::write_label(dev, &label)?;
    sync(dev)?;
    Ok(catalog_end)
}
