//! The backup run and its first two phases: labels (state Writing) on
//! every device, then the data through one ring per device.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::device::{Access, Device};
use crate::format::{Label, HEADER_BYTES};
use crate::media;

use super::after::{may_write_again, write_again};
use super::catalog::{
    build_catalog, complete_labels, device_end, device_reports, no_catalog, source_findings,
    write_catalog_records,
};
use super::parity::is_failure;
use super::{
    record_payload_bytes_max, BackupConfig, BackupError, BackupReport, DeviceEnd, Event,
    ParitySummary, SetInput,
};
use crate::engine::dispatch::{DeviceState as DispatchState, Dispatcher, WorkItem};
use crate::engine::ring::{self, Ring, RingConfig, RingEnd, RingError, RingOutcome, RingStats};

/// `--balance time` during the run: every quarter second, each device
/// that was writing the whole time has its rate updated from the bytes it
/// completed (a moving average), so that stealing follows the devices'
/// real speed rather than the probe's or the declared one.
pub(super) fn observe_rates(dispatcher: &Dispatcher, progress: &[AtomicU64], done: &AtomicBool) {
    const TICK: Duration = Duration::from_millis(250);
    let mut last: Vec<u64> = progress.iter().map(|p| p.load(Ordering::Relaxed)).collect();
    let mut last_at = Instant::now();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let now = Instant::now();
        let secs = (now - last_at).as_secs_f64();
        for (i, p) in progress.iter().enumerate() {
            let bytes = p.load(Ordering::Relaxed);
            dispatcher.set_written(i, bytes);
            let delta = bytes.saturating_sub(last[i]);
            last[i] = bytes;
            // Only a device still busy with its own work says how fast it is.
            if delta == 0 || dispatcher.state(i) != DispatchState::Working {
                continue;
            }
            let sample = (delta as f64 / secs) as u64;
            let old = dispatcher.rate(i);
            let new = if old == 0 {
                sample
            } else {
                (old * 7 + sample * 3) / 10
            };
            dispatcher.update_rate(i, new);
        }
        last_at = now;
    }
}

/// Run a backup: label (writing) on every device, data through one ring per
/// device, then the catalog on every device that is not failed, sync, label
/// (complete), sync. A device that fills up or fails mid-run hands its
/// unwritten work (failed: all its work) to the others (claims 13-15).
pub fn run_backup(
    input: &SetInput,
    devices: &[Box<dyn Device>],
    config: &BackupConfig,
    progress: &[AtomicU64],
) -> Result<BackupReport, BackupError> {
    assert_eq!(
        devices.len(),
        progress.len(),
        "one progress counter per device"
    );
    let started = Instant::now();
    let dispatcher = new_dispatcher(input, devices.len(), config);
    let label_errors = write_labels(devices, config, &dispatcher);
    // `--parity`: stripes decided and encoded while the data is written.
    let sink = (config.parity > 0 && devices.len() > config.parity).then(|| {
        ring::StripeSink::new(
            devices.len(),
            config.parity,
            config.set_id,
            config.chunk_bytes,
        )
    });
    let (rings, mut outcomes) = run_rings(
        input,
        devices,
        config,
        &dispatcher,
        label_errors
            .into_iter()
            .map(|e| e.map_or(Start::From(None), Start::Failed))
            .collect(),
        progress,
        sink.as_ref(),
    )?;
    let mut sources = source_findings(input, &dispatcher);
    let mut ends: Vec<DeviceEnd> = outcomes.iter().map(|o| device_end(&o.end)).collect();
    let inline = sink.map_or_else(Vec::new, ring::StripeSink::into_stripes);
    let named = named_devices(devices);
    // A device that fails after its data (its parity, the read-back of
    // its data, its catalog) is failed as in the data phase: its ranges
    // written again on the survivors (`backup::after`), then the parity
    // and catalogs made again, until a pass ends with none failing.
    let (mut first_id, mut read_back_bytes, mut rounds) = (None, 0, 0);
    // The time of the parity passes only (not of the catalogs).
    let mut parity_elapsed = std::time::Duration::ZERO;
    let (parity, stripes, segments, finished) = loop {
        let parity_started = Instant::now();
        let mut parity =
            super::parity::write_parity(devices, &outcomes, &ends, config, (&inline, first_id));
        parity_elapsed += parity_started.elapsed();
        read_back_bytes += parity.read_back_bytes;
        first_id = Some(parity.next_id);
        let again = may_write_again(devices, &ends, config, rounds);
        let failed = if again && !parity.failed.is_empty() {
            std::mem::take(&mut parity.failed)
        } else {
            let section = parity.section.take();
            let stripes = section.as_ref().map_or(0, |p| p.stripes.len());
            // `build_catalog` takes the outcomes' records and placed ranges
            // (nothing after the catalog needs them, issue 23); a catalog
            // phase that may run again (a device failing in it) keeps a copy
            // to put back for the next round.
            let kept: Option<Vec<_>> = again.then(|| {
                let copy = |o: &ring::RingOutcome| (o.records.clone(), o.placed.clone());
                outcomes.iter().map(copy).collect()
            });
            let (encoded, segments) =
                build_catalog(input, &named, &mut outcomes, &ends, config, section)?;
            let written =
                write_catalog_records(devices, &ends, &encoded, &rings, config, &parity.after);
            let failing = |w: &Option<Result<u64, crate::media::MediaError>>| {
                again && matches!(w, Some(Err(e)) if is_failure(e))
            };
            if !written.iter().any(failing) {
                let after = &parity.after;
                let finished =
                    complete_labels(devices, &outcomes, &encoded, config, after, written);
                break (parity, stripes, segments, finished);
            }
            for (o, (records, placed)) in outcomes.iter_mut().zip(kept.into_iter().flatten()) {
                (o.records, o.placed) = (records, placed);
            }
            written
                .into_iter()
                .enumerate()
                .filter(|(_, w)| failing(w))
                .filter_map(|(d, w)| Some((d, w?.err()?)))
                .collect()
        };
        rounds += 1;
        let run = (&mut outcomes[..], &mut ends[..]);
        write_again(input, devices, config, progress, run, failed, &mut sources)?;
    };
    let summary = ParitySummary {
        m: config.parity,
        stripes,
        records: parity.records,
        payload_bytes: parity.payload_bytes,
        inline_stripes: parity.inline_stripes,
        read_back_bytes,
        warnings: parity.warnings,
        elapsed: parity_elapsed,
    };
    let reports = device_reports(&named, outcomes, &ends, finished);
    if reports.iter().all(|r| r.catalog_end.is_none()) {
        return Err(no_catalog(reports));
    }
    Ok(BackupReport::of_run(
        config.set_id,
        reports,
        input.entries.len(),
        segments,
        sources,
        summary,
        started,
    ))
}

/// Device `index`'s label as the labels phase writes it (state Writing,
/// no catalog yet); the finish phase completes a copy of it.
pub(super) fn backup_label(
    devices: &[Box<dyn Device>],
    config: &BackupConfig,
    index: u32,
) -> Label {
    writing_label(
        config,
        index,
        devices.len() as u32,
        devices[index as usize].block_bytes(),
    )
}

/// The label of device (or volume) `index` of `count` while the set is
/// being written, sealed with the set's key.
pub(super) fn writing_label(
    config: &BackupConfig,
    index: u32,
    count: u32,
    block_bytes: u32,
) -> Label {
    let seal = config
        .encryption
        .as_ref()
        .map_or(crate::format::seal::LabelSeal::NONE, |e| e.label);
    Label::new_writing(
        config.set_id,
        config.created_unix_ns,
        config.chunk_bytes,
        seal,
        index,
        count,
        block_bytes,
    )
    .sealed(config.mac_key.as_ref())
}

/// Hand `event` to the run's event sink, if it has one. A sink that went
/// away (the display ended) does not stop the backup.
pub(super) fn send(config: &BackupConfig, event: Event) {
    if let Some(tx) = &config.events {
        let _ = tx.send(event);
    }
}

/// The dispatcher, holding every planned segment as work for its device
/// (and with `--balance time`, the rates it steals work by; with
/// `--parity`, cut into pieces the devices share so they end together).
pub(super) fn new_dispatcher(
    input: &SetInput,
    device_count: usize,
    config: &BackupConfig,
) -> Dispatcher {
    let dispatcher = Dispatcher::with_data(
        device_count,
        config.chunk_bytes as u64,
        input.plan.segments.iter().map(|s| {
            (
                s.device,
                WorkItem {
                    file: s.file,
                    offset: s.offset,
                    length: s.length,
                },
            )
        }),
        sparse_data(input),
    );
    if let Some(rates) = &config.steal_work {
        dispatcher.enable_stealing(rates);
    }
    dispatcher
}

/// The data ranges of the sparse files, by plan file id, so the
/// dispatcher counts stored bytes as the planner does.
pub(super) fn sparse_data(input: &SetInput) -> std::collections::HashMap<u32, Box<[(u64, u64)]>> {
    input
        .entries
        .sparse_files()
        .map(|(i, data)| (i, data.into()))
        .collect()
}

/// Labels phase: a label (state Writing) on every device before any data.
/// Invariant: a device whose label cannot be written has failed before it
/// started: it is retired (its work goes to the others), reported as a
/// `DeviceFailed` event, and its error returned at its index.
fn write_labels(
    devices: &[Box<dyn Device>],
    config: &BackupConfig,
    dispatcher: &Dispatcher,
) -> Vec<Option<ring::DeviceFault>> {
    let mut label_errors: Vec<Option<ring::DeviceFault>> = vec![None; devices.len()];
    for (i, dev) in devices.iter().enumerate() {
        let label = backup_label(devices, config, i as u32);
        if let Err(e) = media::write_label(dev.as_ref(), &label) {
            let redirected = dispatcher.retire(i, DispatchState::Failed, 0);
            let error = ring::DeviceFault {
                device: dev.path().to_path_buf(),
                fault: ring::Fault::Label(std::sync::Arc::new(e)),
            };
            send(
                config,
                Event::DeviceFailed {
                    device: i as u32,
                    error: error.clone(),
                    redirected_bytes: redirected,
                },
            );
            label_errors[i] = Some(error);
        }
    }
    label_errors
}

/// One ring configuration per device: its record size limit and how many
/// records it keeps in flight (a remote device: enough to cover its round
/// trip; a tape: its buffer of records ahead of the one write).
fn ring_configs(devices: &[Box<dyn Device>], config: &BackupConfig) -> Vec<RingConfig> {
    devices
        .iter()
        .enumerate()
        .map(|(i, dev)| ring_config(dev.as_ref(), i as u32, config))
        .collect()
}

/// Device `index`'s ring configuration (see `ring_configs`).
pub(super) fn ring_config(dev: &dyn Device, index: u32, config: &BackupConfig) -> RingConfig {
    let payload_max = record_payload_bytes_max(dev, config.chunk_bytes, config.tape_block_bytes);
    RingConfig {
        device_index: index,
        set_id: config.set_id,
        chunk_bytes: config.chunk_bytes,
        record_payload_bytes_max: payload_max,
        queue_depth: match dev.access() {
            // A remote device: enough records in flight to cover its
            // measured round trip at its bandwidth (never fewer than --qd).
            Access::Random => dev.records_in_flight(
                (HEADER_BYTES as u64) + payload_max as u64,
                config.queue_depth,
                ring::QUEUE_DEPTH_MAX,
            ),
            Access::Sequential => config.tape_buffer_records,
        },
        reserve_bytes: config.reserve_bytes,
        write_retries: config.write_retries,
        compression: config.compression,
        encryption: config.encryption.clone(),
        cpu_wait_us: config.cpu_wait_us.clone(),
    }
}

/// How a device's ring starts in the data phase.
pub(super) enum Start {
    /// From the first record after the label, or (`backup --resume`) after
    /// what the device already holds: media offset and records.
    From(Option<(u64, u64)>),
    /// Not at all: the device failed before (its label could not be written).
    Failed(ring::DeviceFault),
    /// Not at all, and nothing to say: it takes no part in this ring run
    /// (`backup::after`: a device that failed or filled up before); its
    /// outcome is empty and Complete, for the caller to ignore.
    Skip,
}

/// Data phase: one thread and ring per device, all taking work from the
/// dispatcher until none is left (with `--balance time`, a thread that
/// keeps the rates current). Invariant: every device ends Complete, Full
/// or Failed, with its durable records listed; a ring that cannot even be
/// set up aborts the run (the error is returned). Returns each device's
/// ring configuration (`ring_configs`; the finish phase writes the
/// catalog with it) and outcome.
pub(super) fn run_rings(
    input: &SetInput,
    devices: &[Box<dyn Device>],
    config: &BackupConfig,
    dispatcher: &Dispatcher,
    starts: Vec<Start>,
    progress: &[AtomicU64],
    stripes: Option<&ring::StripeSink>,
) -> Result<(Vec<RingConfig>, Vec<RingOutcome>), BackupError> {
    let rings = ring_configs(devices, config);
    let rings_done = AtomicBool::new(false);
    let outcomes: Vec<Result<RingOutcome, RingError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = starts
            .into_iter()
            .enumerate()
            .map(|(i, start)| {
                let (dev, ring, progress) = (devices[i].as_ref(), &rings[i], &progress[i]);
                std::thread::Builder::new()
                    .name(format!("pbio-dev{i}"))
                    .spawn_scoped(scope, move || {
                        let end = match start {
                            Start::From(from) => {
                                let run = (ring, progress, from, stripes);
                                return run_device(input, dev, config, dispatcher, run);
                            }
                            Start::Failed(error) => RingEnd::Failed { error },
                            Start::Skip => RingEnd::Complete,
                        };
                        if let Some(sink) = stripes {
                            sink.leave(i as u32, true);
                        }
                        Ok(RingOutcome {
                            end,
                            records: Vec::new(),
                            parity: Vec::new(),
                            placed: Vec::new(),
                            data_end: media::data_start(dev),
                            redirected_bytes: 0,
                            stats: RingStats::default(),
                        })
                    })
                    .expect("spawn device thread")
            })
            .collect();
        if config.steal_work.is_some() {
            let rings_done = &rings_done;
            scope.spawn(move || observe_rates(dispatcher, progress, rings_done));
        }
        let outcomes = handles
            .into_iter()
            .map(|h| h.join().expect("device thread panicked"))
            .collect();
        rings_done.store(true, Ordering::Relaxed);
        outcomes
    });
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.map_err(BackupError::from))
        .collect::<Result<_, _>>()?;
    Ok((rings, outcomes))
}

/// One device's ring in the data phase: its configuration, progress
/// counter, where it starts (`run_device`), and the run's stripes.
pub(super) type DeviceRun<'r> = (
    &'r RingConfig,
    &'r AtomicU64,
    Option<(u64, u64)>,
    Option<&'r ring::StripeSink>,
);

/// Each device's path and capacity, as the catalog names them.
pub(super) fn named_devices(devices: &[Box<dyn Device>]) -> Vec<(Vec<u8>, u64)> {
    devices
        .iter()
        .map(|d| {
            let path = d.path().as_os_str().as_encoded_bytes().to_vec();
            (path, d.capacity_bytes())
        })
        .collect()
}

/// One device's thread of the data phase: its ring runs to the end of
/// the work, and a device that filled up or failed is reported as an event.
/// `from`: the ring starts after what the device already holds
/// (`backup --resume`: media offset and records, `Ring::continuing`).
/// `stripes` (`--parity`): its records join the run's stripes (a device
/// that cannot hold parity leaves them at once).
pub(super) fn run_device(
    input: &SetInput,
    dev: &dyn Device,
    config: &BackupConfig,
    dispatcher: &Dispatcher,
    (ring_config, progress, from, stripes): DeviceRun<'_>,
) -> Result<RingOutcome, RingError> {
    let i = ring_config.device_index;
    let ring = match Ring::new(dev, ring_config, progress) {
        Ok(ring) => match from {
            Some((position, records)) => ring.continuing(position, records),
            None => ring,
        },
        Err(e) => {
            if let Some(sink) = stripes {
                sink.leave(i, true);
            }
            dispatcher.abort();
            dispatcher.finish(i as usize);
            return Err(e);
        }
    };
    let ring = match stripes {
        Some(sink) if super::parity::parity_capable(dev) => ring.with_stripes(sink),
        Some(sink) => {
            sink.leave(i, true);
            ring
        }
        None => ring,
    };
    let outcome = ring.run(input, dispatcher)?;
    match &outcome.end {
        RingEnd::Complete => {}
        RingEnd::Full { error } => send(
            config,
            Event::DeviceFull {
                device: i,
                error: error.clone(),
                durable_bytes: outcome.records.iter().map(|r| r.payload_bytes as u64).sum(),
                redirected_bytes: outcome.redirected_bytes,
            },
        ),
        RingEnd::Failed { error } => send(
            config,
            Event::DeviceFailed {
                device: i,
                error: error.clone(),
                redirected_bytes: outcome.redirected_bytes,
            },
        ),
    }
    Ok(outcome)
}
