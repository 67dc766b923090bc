//! `backup --resume`: finish a set whose run was interrupted (kill -9,
//! power loss, a cable), writing only what is not durable yet.
//!
//! 1. `durable`: every device's label must be of one set written with the
//!    same options (chunk, key; compressed records need `--compress`),
//!    each device at its index; a blank device joins at its index. Each
//!    device's records are walked from the label as `scan` walks them
//!    (CRCs checked, payloads hashed for the file digests) to the first
//!    record that breaks the stream (torn, unwritten, out of sequence) or
//!    belongs to a file that changed since (size, mtime, mode, owner, as
//!    the record's own file info says): that record and what follows it
//!    on that device are written again.
//! 2. `plan`: every range of every file no kept record holds, given to the
//!    devices least filled.
//! 3. `resume_backup`: each device goes on where its kept stream ends (a
//!    disk: the media offset after it; a tape: positioned after its last
//!    kept block, so the next write ends what was recorded after it, as a
//!    drive does), its records numbered on; then the catalog of kept and
//!    new records on every device and the Complete labels, as any run
//!    ends. The set is then what an uninterrupted run writes.

mod durable;
mod work;

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use crate::device::{Access, Device, TapeOp};
use crate::engine::dispatch::{Dispatcher, WorkItem};
use crate::engine::ring::{RecordDone, RingOutcome};
use crate::format::{LabelState, HEADER_BYTES};
use crate::media::{self, MediaError};
use crate::source::EntryKind;

use super::catalog::{
    build_catalog, device_end, device_reports, no_catalog, source_findings, write_catalogs,
};
use super::run::{backup_label, named_devices, run_rings, sparse_data, Start};
use super::{BackupConfig, BackupError, BackupReport, DeviceEnd, ParitySummary, SetInput};

pub use durable::{
    assemble, check_volume_label, durable, walk, DeviceDurable, Durable, Kept, ResumeError,
    StreamEnd,
};

/// What a resumed run did beside what any run reports.
#[derive(Debug)]
pub struct ResumeReport {
    pub backup: BackupReport,
    /// Files written again because they changed since the interrupted run
    /// wrote part of them (stored paths).
    pub changed: Vec<Vec<u8>>,
    /// Records and payload bytes of the interrupted run kept in the set.
    pub kept_records: u64,
    pub kept_payload_bytes: u64,
    /// Payload bytes this run wrote.
    pub written_payload_bytes: u64,
}

/// The work still to write, per device: (device, range), ranges of a
/// device in file order.
pub fn plan(input: &SetInput, durable: &Durable, config: &BackupConfig) -> Vec<(u32, WorkItem)> {
    let items = missing(input, durable);
    let filled: Vec<u64> = durable
        .devices
        .iter()
        .map(|d| {
            d.records
                .iter()
                .map(|k| k.record.payload_bytes as u64)
                .sum()
        })
        .collect();
    let usable = vec![true; filled.len()];
    work::assign(&items, &filled, &usable, config.chunk_bytes as u64)
}

/// The work still to write over volumes in volume order (`backup
/// --changer --resume`): each volume up to `rooms[v]` payload bytes (None:
/// it takes none). Returns (volume, range) per volume in file order, and
/// the payload bytes no volume has room for.
pub fn plan_volumes(
    input: &SetInput,
    durable: &Durable,
    rooms: &[Option<u64>],
    config: &BackupConfig,
) -> (Vec<(u32, WorkItem)>, u64) {
    assert_eq!(rooms.len(), durable.devices.len());
    work::fill(&missing(input, durable), rooms, config.chunk_bytes as u64)
}

/// Every range of every file with data in the set that no kept record
/// holds, in file order.
fn missing(input: &SetInput, durable: &Durable) -> Vec<WorkItem> {
    let sizes: Vec<Option<u64>> = input
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| match e.kind {
            EntryKind::File { size_bytes, .. }
                if input.since.as_ref().and_then(|s| s.origin(i)).is_none() =>
            {
                Some(size_bytes)
            }
            _ => None,
        })
        .collect();
    let kept: Vec<&Kept> = durable.devices.iter().flat_map(|d| &d.records).collect();
    work::missing(&sizes, &kept)
}

/// Finish the interrupted set `durable` (from `durable()`): `config` must
/// carry its set id and creation time, `work` is `plan()`'s.
pub fn resume_backup(
    input: &SetInput,
    devices: &[Box<dyn Device>],
    config: &BackupConfig,
    durable: &Durable,
    work: Vec<(u32, WorkItem)>,
    progress: &[AtomicU64],
) -> Result<ResumeReport, BackupError> {
    assert_eq!(config.set_id, durable.set_id, "the set being resumed");
    assert_eq!(devices.len(), durable.devices.len());
    assert_eq!(devices.len(), progress.len());
    let started = Instant::now();
    for (i, (dev, d)) in devices.iter().zip(&durable.devices).enumerate() {
        go_on_from(dev.as_ref(), d, config, devices, i as u32)?;
    }
    let dispatcher = Dispatcher::with_data(
        devices.len(),
        config.chunk_bytes as u64,
        work,
        sparse_data(input),
    );
    if let Some(rates) = &config.steal_work {
        dispatcher.enable_stealing(rates);
    }
    let (rings, outcomes) = run_rings(
        input,
        devices,
        config,
        &dispatcher,
        durable
            .devices
            .iter()
            .map(|d| {
                Start::From(Some((
                    HEADER_BYTES as u64 + d.media_bytes(),
                    d.records.len() as u64,
                )))
            })
            .collect(),
        progress,
        None,
    )?;
    let written_payload_bytes = outcomes.iter().map(|o| o.stats.payload_bytes).sum();
    let sources = source_findings(input, &dispatcher);
    let ends: Vec<DeviceEnd> = outcomes.iter().map(|o| device_end(&o.end)).collect();
    // The kept records and ranges first: the catalog lists both runs'.
    let merged: Vec<RingOutcome> = outcomes
        .into_iter()
        .zip(&durable.devices)
        .map(|(o, d)| with_kept(o, d))
        .collect();
    let after: Vec<(u64, u64)> = merged
        .iter()
        .map(|o| (o.data_end, o.records.len() as u64))
        .collect();
    let named = named_devices(devices);
    let (encoded, segments) = build_catalog(input, &named, &merged, &ends, config, None)?;
    let finished = write_catalogs(devices, &merged, &ends, &encoded, &rings, config, &after);
    let kept_records = durable.devices.iter().map(|d| d.records.len() as u64).sum();
    let kept_payload_bytes = durable
        .devices
        .iter()
        .flat_map(|d| &d.records)
        .map(|k| k.record.payload_bytes as u64)
        .sum();
    let reports = device_reports(&named, merged, &ends, finished);
    if reports.iter().all(|r| r.catalog_end.is_none()) {
        return Err(no_catalog(reports));
    }
    let changed = durable
        .changed
        .iter()
        .map(|&f| input.entries.at(f as usize).path)
        .collect();
    Ok(ResumeReport {
        backup: BackupReport {
            set_id: config.set_id,
            devices: reports,
            files: input.entries.len(),
            segments,
            unplaced: sources.unplaced,
            unreadable: sources.unreadable,
            changed: sources.changed,
            parity: ParitySummary::default(),
            elapsed: started.elapsed(),
        },
        changed,
        kept_records,
        kept_payload_bytes,
        written_payload_bytes,
    })
}

/// Make device `index` ready to take records after its kept stream: a
/// blank device gets the set's label (Writing); a disk whose label says
/// Complete (a run stopped while finishing) is set back to Writing until
/// its new catalog is durable; a tape is positioned after its last kept
/// block (label and records: object `records + 1`).
fn go_on_from(
    dev: &dyn Device,
    durable: &DeviceDurable,
    config: &BackupConfig,
    devices: &[Box<dyn Device>],
    index: u32,
) -> Result<(), MediaError> {
    let rewrite = match &durable.label {
        None => true,
        Some(l) => l.state == LabelState::Complete && dev.access() == Access::Random,
    };
    if rewrite {
        media::write_label(dev, &backup_label(devices, config, index))?;
        if dev.access() == Access::Random {
            dev.sync().map_err(|error| MediaError::Io {
                device: dev.path().display().to_string(),
                op: "sync",
                offset: 0,
                error,
            })?;
        }
    }
    if dev.access() == Access::Sequential {
        space_after_kept(dev, durable.records.len() as u64)?;
    }
    Ok(())
}

/// Position a tape after its label and its first `records` blocks (the
/// kept records: object `records + 1`), so that the next write ends
/// everything recorded after them.
pub fn space_after_kept(dev: &dyn Device, records: u64) -> Result<(), MediaError> {
    let blocks = records + 1;
    let position = |op, error| MediaError::Io {
        device: dev.path().display().to_string(),
        op,
        offset: blocks,
        error,
    };
    dev.tape_op(TapeOp::Rewind)
        .map_err(|e| position("rewind", e))?;
    let mut left = blocks;
    while left > 0 {
        let n = left.min(u32::MAX as u64) as u32;
        dev.tape_op(TapeOp::ForwardBlocks(n))
            .map_err(|e| position("space forward to the end of the kept records", e))?;
        left -= n as u64;
    }
    Ok(())
}

/// A device's outcome with the interrupted run's kept records in front.
pub fn with_kept(mut o: RingOutcome, d: &DeviceDurable) -> RingOutcome {
    let mut records: Vec<RecordDone> = d.records.iter().map(|k| k.record).collect();
    records.append(&mut o.records);
    o.records = records;
    let mut placed = work::placed(&d.records);
    placed.append(&mut o.placed);
    o.placed = placed;
    o
}
