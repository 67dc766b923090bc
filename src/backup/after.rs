//! A device that fails after its data (issue 19, `--parity`): while the
//! parity records are written or read back (`backup::parity`), or while
//! the catalogs are (`catalog::write_catalog_records`, before any label
//! says Complete). It is treated as a device failing in the data phase
//! is: named failed, every range it holds written again on the survivors
//! (each ring continuing after its data, over the parity and catalog of
//! the pass that failed; the ranges spread by the dispatcher's
//! least-filled rule), and the caller makes the parity again, so that the
//! stripes that lost a member are re-encoded over the survivors.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::device::{Access, Device};
use crate::engine::dispatch::{DeviceState as DispatchState, Dispatcher, WorkItem};
use crate::engine::ring::{DeviceFault, Fault, RingEnd, RingOutcome};
use crate::media::MediaError;

use super::catalog::{device_end, source_findings, SourceFindings};
use super::run::{run_rings, send, sparse_data, Start};
use super::{BackupConfig, BackupError, DeviceEnd, Event, SetInput};

/// Whether the run may write a failed device's data again: `--parity`,
/// a round left (each round retires at least one device), and every
/// device still in the set random-access (a tape cannot go back over
/// the parity or catalog it wrote after its data).
pub(super) fn may_write_again(
    devices: &[Box<dyn Device>],
    ends: &[DeviceEnd],
    config: &BackupConfig,
    rounds: usize,
) -> bool {
    config.parity > 0
        && rounds < devices.len()
        && devices
            .iter()
            .zip(ends)
            .filter(|(_, e)| **e != DeviceEnd::Failed)
            .all(|(d, _)| d.access() == Access::Random)
}

/// The devices of `failed` (index, the error that says so) failed after
/// their data: each is marked failed in `outcomes` and `ends` (reported
/// as a `DeviceFailed` event), and every range it holds is written again
/// on the devices that completed, continuing after their data. A device
/// failing meanwhile hands its ranges on too; what no device can take is
/// added to `sources.unplaced` (the report names it missing).
pub(super) fn write_again(
    input: &SetInput,
    devices: &[Box<dyn Device>],
    config: &BackupConfig,
    progress: &[AtomicU64],
    (outcomes, ends): (&mut [RingOutcome], &mut [DeviceEnd]),
    failed: Vec<(usize, MediaError)>,
    sources: &mut SourceFindings,
) -> Result<(), BackupError> {
    let mut work: Vec<WorkItem> = Vec::new();
    for (d, error) in failed {
        let fault = DeviceFault {
            device: devices[d].path().to_path_buf(),
            fault: Fault::After(Arc::new(error)),
        };
        let held = held_ranges(&outcomes[d]);
        let redirected_bytes: u64 = held.iter().map(|w| w.length).sum();
        outcomes[d].end = RingEnd::Failed {
            error: fault.clone(),
        };
        outcomes[d].redirected_bytes += redirected_bytes;
        ends[d] = DeviceEnd::Failed;
        send(
            config,
            Event::DeviceFailed {
                device: d as u32,
                error: fault,
                redirected_bytes,
            },
        );
        work.extend(held);
    }
    while !work.is_empty() {
        let takes: Vec<bool> = devices
            .iter()
            .zip(ends.iter())
            .map(|(dev, e)| *e == DeviceEnd::Complete && dev.access() == Access::Random)
            .collect();
        if !takes.contains(&true) {
            sources.unplaced.extend(
                work.iter()
                    .map(|w| (input.entries.at(w.file as usize).path, w.offset, w.length)),
            );
            break;
        }
        let dispatcher = Dispatcher::with_data(
            devices.len(),
            config.chunk_bytes as u64,
            std::iter::empty(),
            sparse_data(input),
        );
        dispatcher.give_back(&work);
        let starts = takes
            .iter()
            .zip(outcomes.iter())
            .enumerate()
            .map(|(d, (&takes, o))| {
                if !takes {
                    dispatcher.retire(d, DispatchState::Failed, 0);
                    return Start::Skip;
                }
                Start::From(Some((o.data_end, o.stats.records + o.parity.len() as u64)))
            })
            .collect();
        let (_, again) = run_rings(input, devices, config, &dispatcher, starts, progress, None)?;
        let found = source_findings(input, &dispatcher);
        sources.unreadable.extend(found.unreadable);
        sources.unplaced.extend(found.unplaced);
        work.clear();
        for (d, later) in again.into_iter().enumerate() {
            if !takes[d] {
                continue;
            }
            // A device failing now: what it took now the dispatcher gave
            // to the others; what it held before goes round again.
            let earlier = held_ranges(&outcomes[d]);
            absorb(&mut outcomes[d], later);
            ends[d] = device_end(&outcomes[d].end);
            if ends[d] == DeviceEnd::Failed {
                work.extend(earlier);
            }
        }
    }
    Ok(())
}

/// The ranges a device holds (its placed ranges), as work.
fn held_ranges(outcome: &RingOutcome) -> Vec<WorkItem> {
    outcome
        .placed
        .iter()
        .filter(|p| p.length > 0)
        .map(|p| WorkItem {
            file: p.file,
            offset: p.offset,
            length: p.length,
        })
        .collect()
}

/// Add a later ring's outcome on the same device (continuing after its
/// data) to what it did before.
fn absorb(outcome: &mut RingOutcome, later: RingOutcome) {
    outcome.records.extend(later.records);
    outcome.placed.extend(later.placed);
    outcome.data_end = later.data_end;
    outcome.redirected_bytes += later.redirected_bytes;
    outcome.stats.add(&later.stats);
    if !matches!(later.end, RingEnd::Complete) {
        outcome.end = later.end;
    }
}
