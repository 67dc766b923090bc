//! The data path: ring worker, dispatcher, and the backup run
//! that ties them together (label, data, catalog, durable, complete).

pub mod dispatch;
pub mod probe;
pub mod ring;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::device::{Access, Device};
use crate::format::{
    Catalog, CatalogDevice, CatalogFile, CatalogSegment, DeviceState, DigestRecord, FileKind,
    Label, LabelState, MacKey, SetId, HEADER_BYTES,
};
use crate::media;
use crate::plan::{self, DeviceSlot, FileItem, Plan};
use crate::source::incremental::Increment;
use crate::source::{Entry, EntryKind};
use dispatch::{DeviceState as DispatchState, Dispatcher, WorkItem};
use ring::{RecordDone, Ring, RingConfig, RingEnd, RingError, RingOutcome, RingStats};

/// Everything a backup run reads: the walked entries (file id = index),
/// the plan, and for an incremental set what it refers to instead of storing.
pub struct SetInput {
    pub entries: Vec<Entry>,
    pub plan: Plan,
    pub since: Option<Increment>,
}

/// Planner inputs derived from walked entries: one item per entry (size 0
/// for everything that has no data to store here: directories, links, and
/// in an incremental set the files whose data is in an earlier set), so
/// plan file ids are entry indexes. A sparse file brings its data ranges,
/// so the planner balances the bytes it stores.
pub fn file_items<'a>(entries: &'a [Entry], since: Option<&Increment>) -> Vec<FileItem<'a>> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| match &e.kind {
            EntryKind::File { .. } if since.and_then(|s| s.origin(i)).is_some() => {
                FileItem::dense(0)
            }
            EntryKind::File { size_bytes, data } => FileItem {
                size_bytes: *size_bytes,
                data: data.as_deref(),
            },
            _ => FileItem::dense(0),
        })
        .collect()
}

/// The catalog for `entries` with the given segment placements; digests
/// of the data stored in this set are filled by the caller once it is
/// written (those of data in earlier sets come from `since`).
pub fn catalog_for(
    set_id: SetId,
    created_unix_ns: u64,
    chunk_bytes: u32,
    devices: &[CatalogDevice],
    entries: &[Entry],
    since: Option<&Increment>,
    segments: Vec<CatalogSegment>,
) -> Catalog {
    let files = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let (kind, size_bytes, link_target, hardlink_to) = match &e.kind {
                EntryKind::File { size_bytes, .. } if e.is_block_device() => {
                    (FileKind::BlockDevice, *size_bytes, Vec::new(), 0)
                }
                EntryKind::File { size_bytes, .. } => {
                    (FileKind::Regular, *size_bytes, Vec::new(), 0)
                }
                EntryKind::Dir => (FileKind::Directory, 0, Vec::new(), 0),
                EntryKind::Symlink { target } => (FileKind::Symlink, 0, target.clone(), 0),
                EntryKind::HardLink { target } => (FileKind::HardLink, 0, Vec::new(), *target),
            };
            let origin = since.and_then(|s| s.origin(i));
            CatalogFile {
                path: e.path.clone(),
                kind,
                mode: e.meta.mode,
                uid: e.meta.uid,
                gid: e.meta.gid,
                mtime_sec: e.meta.mtime_sec,
                mtime_nsec: e.meta.mtime_nsec,
                ctime_sec: e.meta.ctime_sec,
                ctime_nsec: e.meta.ctime_nsec,
                dev: e.meta.dev,
                ino: e.meta.ino,
                size_bytes,
                link_target,
                hardlink_to,
                digest: origin.map(|o| o.digest).unwrap_or([0; 32]),
                origin: origin.map(|o| o.ancestor).unwrap_or(0),
                origin_file_id: origin.map(|o| o.file_id).unwrap_or(0),
            }
        })
        .collect();
    let (ancestors, removed, renamed) = match since {
        None => (Vec::new(), Vec::new(), Vec::new()),
        Some(s) => (
            s.ancestors.clone(),
            s.removed.clone(),
            s.renamed
                .iter()
                .map(|(file_id, from)| crate::format::Renamed {
                    file_id: *file_id,
                    from: from.clone(),
                })
                .collect(),
        ),
    };
    Catalog {
        set_id,
        created_unix_ns,
        chunk_bytes,
        devices: devices.to_vec(),
        files,
        segments,
        ancestors,
        removed,
        renamed,
        mac: [0; 32],
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanSetError {
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error("device {device}: too small to hold even the label and catalog ({capacity_bytes} bytes, need {reserve_bytes})")]
    TooSmall {
        device: String,
        capacity_bytes: u64,
        reserve_bytes: u64,
    },
}

/// Plan a set over devices of the given capacities, reserving on each
/// device the label, the catalog and the End record. The catalog's size
/// depends on the plan (one entry per segment), so plan, measure, and plan
/// again with the measured reserve if the first guess was short.
pub fn plan_set(
    entries: &[Entry],
    since: Option<&Increment>,
    devices: &[(String, u64, Option<u64>)],
    options: &plan::Options,
) -> Result<(Plan, u64), PlanSetError> {
    let items = file_items(entries, since);
    let chunk = options.chunk_bytes as u32;
    let names: Vec<CatalogDevice> = devices
        .iter()
        .map(|(n, c, _)| CatalogDevice {
            path: n.as_bytes().to_vec(),
            capacity_bytes: *c,
            state: DeviceState::Complete,
            // The largest value it can take, so the size estimate is an upper bound.
            data_end: *c,
        })
        .collect();
    let mut catalog_guess =
        catalog_for(SetId([0; 16]), 0, chunk, &names, entries, since, Vec::new())
            .encode()
            .len() as u64
            + 64 * (entries.len() as u64 + 2 * devices.len() as u64)
            + 4096;
    for _ in 0..4 {
        let reserve = HEADER_BYTES as u64 + media::catalog_media_bytes(catalog_guess, chunk);
        let mut slots = Vec::with_capacity(devices.len());
        for (name, capacity, rate) in devices {
            if *capacity <= reserve {
                return Err(PlanSetError::TooSmall {
                    device: name.clone(),
                    capacity_bytes: *capacity,
                    reserve_bytes: reserve,
                });
            }
            slots.push(DeviceSlot {
                capacity_bytes: (*capacity - reserve) / HEADER_BYTES as u64 * HEADER_BYTES as u64,
                rate_bytes_per_sec: *rate,
            });
        }
        let plan = plan::plan(&items, &slots, options)?;
        let segments = plan
            .segments
            .iter()
            .map(|s| CatalogSegment {
                file_id: s.file,
                offset: s.offset,
                length: s.length,
                device: s.device,
                position: u64::MAX,
                records: u32::MAX,
            })
            .collect();
        let actual = catalog_for(
            SetId([0; 16]),
            u64::MAX,
            chunk,
            &names,
            entries,
            since,
            segments,
        )
        .encode()
        .len() as u64;
        if actual <= catalog_guess {
            return Ok((plan, reserve));
        }
        catalog_guess = actual + actual / 8;
    }
    unreachable!("catalog size estimate did not converge")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceEnd {
    Complete,
    Full,
    Failed,
}

#[derive(Debug)]
pub struct DeviceReport {
    pub path: String,
    pub end: DeviceEnd,
    /// What filled it up or made it fail.
    pub error: Option<String>,
    /// Payload bytes of its work handed to the other devices.
    pub redirected_bytes: u64,
    pub stats: RingStats,
    pub data_end: u64,
    /// Offset just past its End record; None where no catalog was written
    /// (a failed device, or one with no room left for it).
    pub catalog_end: Option<u64>,
    pub catalog_error: Option<String>,
}

#[derive(Debug)]
pub struct BackupReport {
    pub set_id: SetId,
    pub devices: Vec<DeviceReport>,
    pub files: usize,
    pub segments: usize,
    /// Work no surviving device could take: these ranges are not in the
    /// set. Paths are stored names as they are (print them with
    /// `units::shown_name`).
    pub unplaced: Vec<(Vec<u8>, u64, u64)>,
    /// Sources that could not be opened when their turn came (removed
    /// since the walk, permissions changed): (path, error). Their ranges
    /// are in `unplaced`.
    pub unreadable: Vec<(Vec<u8>, String)>,
    /// Files that changed while the backup read them (path, what changed):
    /// their copy in the set may mix old and new contents.
    pub changed: Vec<(Vec<u8>, String)>,
    pub elapsed: Duration,
}

impl DeviceReport {
    /// A device that did not fail but whose catalog or final label is not
    /// durably written: the set is incomplete.
    pub fn catalog_missing(&self) -> bool {
        self.end != DeviceEnd::Failed && self.catalog_end.is_none()
    }
}

impl BackupReport {
    pub fn missing_bytes(&self) -> u64 {
        self.unplaced.iter().map(|u| u.2).sum()
    }
    /// Devices (not failed) whose catalog or final label is not durable.
    pub fn catalogs_missing(&self) -> Vec<&DeviceReport> {
        self.devices
            .iter()
            .filter(|d| d.catalog_missing())
            .collect()
    }
    /// Everything is in the set and every device that did not fail is
    /// complete (catalog and label durable).
    pub fn complete(&self) -> bool {
        self.unplaced.is_empty() && self.catalogs_missing().is_empty()
    }
    pub fn degraded(&self) -> bool {
        self.devices.iter().any(|d| d.end == DeviceEnd::Failed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error(transparent)]
    Media(#[from] media::MediaError),
    #[error("no device could take the catalog: the set is not restorable ({0})")]
    NoCatalog(String),
}

/// Default tape block limit (`--tape-block`): header and payload of a
/// record within 1 MiB, inside st's default scatter/gather limit.
pub const TAPE_BLOCK_BYTES_DEFAULT: u32 = crate::device::tape::TAPE_BLOCK_BYTES_DEFAULT;
/// Smallest tape block pbio writes: a header and one 4 KiB payload block.
pub const TAPE_BLOCK_BYTES_MIN: u32 = 2 * HEADER_BYTES as u32;
/// Default records buffered ahead of a tape's one write (`--tape-buffer`).
pub const TAPE_BUFFER_RECORDS_DEFAULT: usize = 64;

/// The largest payload of one record on `dev`: the chunk, or on a device
/// with a block limit (tape: `tape_block_bytes` and the drive's own limit)
/// the largest power of two that fits one block together with its
/// header, so that records split on the same boundaries as the chunk.
pub fn record_payload_bytes_max(dev: &dyn Device, chunk_bytes: u32, tape_block_bytes: u32) -> u32 {
    if dev.access() == Access::Random {
        return chunk_bytes;
    }
    let block = tape_block_bytes
        .min(dev.block_bytes_max().unwrap_or(u32::MAX))
        .max(TAPE_BLOCK_BYTES_MIN);
    let room = block - HEADER_BYTES as u32;
    let payload = 1u32 << (31 - room.leading_zeros());
    payload.min(chunk_bytes)
}

pub struct BackupConfig {
    pub set_id: SetId,
    pub created_unix_ns: u64,
    pub chunk_bytes: u32,
    pub queue_depth: usize,
    /// Largest tape block (header + payload) to write (`--tape-block`).
    pub tape_block_bytes: u32,
    /// Records buffered ahead of each tape's write (`--tape-buffer`).
    pub tape_buffer_records: usize,
    /// Media bytes kept free on each device for the catalog (from `plan_set`).
    pub reserve_bytes: u64,
    /// Resubmissions of a failed write before the device is declared failed.
    pub write_retries: u32,
    /// Where device events go (progress display, `--json`); None: nowhere.
    pub events: Option<crossbeam_channel::Sender<Event>>,
    /// Idle devices take planned work from the busiest (`--balance time`),
    /// weighed by these rates (bytes per second per device; 0: unknown),
    /// which are then updated from what the devices write.
    pub steal_work: Option<Vec<u64>>,
    /// The set's MAC key (`--key`): labels and catalog carry keyed MACs
    /// (docs/FORMAT.md, "MAC"). None: the MACs are zero.
    pub mac_key: Option<MacKey>,
}

/// Something a harness or the progress display should hear about while
/// the run goes on. Byte counts are payload bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The device filled up (ENOSPC, end of medium): it is healthy, what
    /// reached it stays, the rest of its work goes to the others.
    DeviceFull {
        device: u32,
        error: String,
        durable_bytes: u64,
        redirected_bytes: u64,
    },
    /// The device failed (EIO, vanished): everything assigned to it is
    /// written again on the survivors.
    DeviceFailed {
        device: u32,
        error: String,
        redirected_bytes: u64,
    },
}

/// `--balance time` during the run: every quarter second, each device
/// that was writing the whole time has its rate updated from the bytes it
/// completed (a moving average), so that stealing follows the devices'
/// real speed rather than the probe's or the declared one.
fn observe_rates(dispatcher: &Dispatcher, progress: &[AtomicU64], done: &AtomicBool) {
    const TICK: Duration = Duration::from_millis(250);
    let mut last: Vec<u64> = progress.iter().map(|p| p.load(Ordering::Relaxed)).collect();
    let mut last_at = Instant::now();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let now = Instant::now();
        let secs = (now - last_at).as_secs_f64();
        for (i, p) in progress.iter().enumerate() {
            let bytes = p.load(Ordering::Relaxed);
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
    let rings = ring_configs(devices, config);
    let outcomes = run_rings(
        input,
        devices,
        config,
        &dispatcher,
        &rings,
        label_errors,
        progress,
    )?;
    let sources = source_findings(input, &dispatcher);
    let ends: Vec<DeviceEnd> = outcomes.iter().map(|o| device_end(&o.end)).collect();
    let (encoded, segments) = build_catalog(input, devices, &outcomes, &ends, config);
    let finished = write_catalogs(devices, &outcomes, &ends, &encoded, &rings, config);
    let reports = device_reports(devices, outcomes, &ends, finished);
    if reports.iter().all(|r| r.catalog_end.is_none()) {
        return Err(no_catalog(&reports));
    }
    Ok(BackupReport {
        set_id: config.set_id,
        devices: reports,
        files: input.entries.len(),
        segments,
        unplaced: sources.unplaced,
        unreadable: sources.unreadable,
        changed: sources.changed,
        elapsed: started.elapsed(),
    })
}

/// Device `index`'s label as the labels phase writes it (state Writing,
/// no catalog yet); the finish phase completes a copy of it.
fn backup_label(devices: &[Box<dyn Device>], config: &BackupConfig, index: u32) -> Label {
    Label {
        set_id: config.set_id,
        device_index: index,
        device_count: devices.len() as u32,
        chunk_bytes: config.chunk_bytes,
        block_bytes: devices[index as usize].block_bytes(),
        created_unix_ns: config.created_unix_ns,
        state: LabelState::Writing,
        catalog_offset: 0,
        catalog_bytes: 0,
        data_end: 0,
        catalog_digest: [0; 32],
        mac: [0; 32],
    }
    .sealed(config.mac_key.as_ref())
}

/// Hand `event` to the run's event sink, if it has one. A sink that went
/// away (the display ended) does not stop the backup.
fn send(config: &BackupConfig, event: Event) {
    if let Some(tx) = &config.events {
        let _ = tx.send(event);
    }
}

/// The dispatcher, holding every planned segment as work for its device
/// (and with `--balance time`, the rates it steals work by).
fn new_dispatcher(input: &SetInput, device_count: usize, config: &BackupConfig) -> Dispatcher {
    let dispatcher = Dispatcher::new(
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
    );
    if let Some(rates) = &config.steal_work {
        dispatcher.enable_stealing(rates);
    }
    dispatcher
}

/// Labels phase: a label (state Writing) on every device before any data.
/// Invariant: a device whose label cannot be written has failed before it
/// started: it is retired (its work goes to the others), reported as a
/// `DeviceFailed` event, and its error returned at its index.
fn write_labels(
    devices: &[Box<dyn Device>],
    config: &BackupConfig,
    dispatcher: &Dispatcher,
) -> Vec<Option<String>> {
    let mut label_errors: Vec<Option<String>> = vec![None; devices.len()];
    for (i, dev) in devices.iter().enumerate() {
        let label = backup_label(devices, config, i as u32);
        if let Err(e) = media::write_label(dev.as_ref(), &label) {
            let redirected = dispatcher.retire(i, DispatchState::Failed, 0);
            send(
                config,
                Event::DeviceFailed {
                    device: i as u32,
                    error: e.to_string(),
                    redirected_bytes: redirected,
                },
            );
            label_errors[i] = Some(e.to_string());
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
        .map(|(i, dev)| {
            let payload_max =
                record_payload_bytes_max(dev.as_ref(), config.chunk_bytes, config.tape_block_bytes);
            RingConfig {
                device_index: i as u32,
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
            }
        })
        .collect()
}

/// Data phase: one thread and ring per device, all taking work from the
/// dispatcher until none is left (with `--balance time`, a thread that
/// keeps the rates current). Invariant: every device ends Complete, Full
/// or Failed, with its durable records listed; a ring that cannot even be
/// set up aborts the run (the error is returned).
fn run_rings(
    input: &SetInput,
    devices: &[Box<dyn Device>],
    config: &BackupConfig,
    dispatcher: &Dispatcher,
    rings: &[RingConfig],
    label_errors: Vec<Option<String>>,
    progress: &[AtomicU64],
) -> Result<Vec<RingOutcome>, BackupError> {
    let rings_done = AtomicBool::new(false);
    let outcomes: Vec<Result<RingOutcome, RingError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = label_errors
            .into_iter()
            .enumerate()
            .map(|(i, label_error)| {
                let (dev, ring, progress) = (devices[i].as_ref(), &rings[i], &progress[i]);
                std::thread::Builder::new()
                    .name(format!("pbio-dev{i}"))
                    .spawn_scoped(scope, move || {
                        let Some(error) = label_error else {
                            return run_device(input, dev, config, dispatcher, ring, progress);
                        };
                        Ok(RingOutcome {
                            end: RingEnd::Failed {
                                error: ring::DeviceFault {
                                    device: dev.path().to_path_buf(),
                                    fault: ring::Fault::Label(error),
                                },
                            },
                            records: Vec::new(),
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
    outcomes
        .into_iter()
        .map(|o| o.map_err(BackupError::from))
        .collect()
}

/// One device's thread of the data phase: its ring runs to the end of
/// the work, and a device that filled up or failed is reported as an event.
fn run_device(
    input: &SetInput,
    dev: &dyn Device,
    config: &BackupConfig,
    dispatcher: &Dispatcher,
    ring_config: &RingConfig,
    progress: &AtomicU64,
) -> Result<RingOutcome, RingError> {
    let i = ring_config.device_index;
    let ring = match Ring::new(dev, ring_config, progress) {
        Ok(ring) => ring,
        Err(e) => {
            dispatcher.abort();
            dispatcher.finish(i as usize);
            return Err(e);
        }
    };
    let outcome = ring.run(input, dispatcher)?;
    match &outcome.end {
        RingEnd::Complete => {}
        RingEnd::Full { error } => send(
            config,
            Event::DeviceFull {
                device: i,
                error: error.to_string(),
                durable_bytes: outcome.records.iter().map(|r| r.payload_bytes as u64).sum(),
                redirected_bytes: outcome.redirected_bytes,
            },
        ),
        RingEnd::Failed { error } => send(
            config,
            Event::DeviceFailed {
                device: i,
                error: error.to_string(),
                redirected_bytes: outcome.redirected_bytes,
            },
        ),
    }
    Ok(outcome)
}

/// What the data phase found about the sources, for the report.
struct SourceFindings {
    /// Files that changed while they were read: (path, what changed).
    changed: Vec<(Vec<u8>, String)>,
    /// Sources that could not be opened: (path, error), each once.
    unreadable: Vec<(Vec<u8>, String)>,
    /// Ranges not in the set: (path, offset, length).
    unplaced: Vec<(Vec<u8>, u64, u64)>,
}

/// After the data phase: every file whose data was read is looked at again
/// (a change since the walk may have torn its copy), and the work that is
/// not in the set (no device could take it, or its source could not be
/// opened) is named by path.
fn source_findings(input: &SetInput, dispatcher: &Dispatcher) -> SourceFindings {
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

fn device_end(end: &RingEnd) -> DeviceEnd {
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
fn build_catalog(
    input: &SetInput,
    devices: &[Box<dyn Device>],
    outcomes: &[RingOutcome],
    ends: &[DeviceEnd],
    config: &BackupConfig,
) -> (Vec<u8>, usize) {
    let (segments, mut per_file) = placements(outcomes, ends, input.entries.len());
    let catalog_devices: Vec<CatalogDevice> = devices
        .iter()
        .zip(outcomes)
        .zip(ends)
        .map(|((d, o), end)| CatalogDevice {
            path: d.path().as_os_str().as_encoded_bytes().to_vec(),
            capacity_bytes: d.capacity_bytes(),
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
fn placements(
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
fn write_catalogs(
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
fn device_reports(
    devices: &[Box<dyn Device>],
    outcomes: Vec<RingOutcome>,
    ends: &[DeviceEnd],
    finished: Vec<Option<Result<u64, media::MediaError>>>,
) -> Vec<DeviceReport> {
    let per_device = devices.iter().zip(outcomes).zip(finished);
    per_device
        .enumerate()
        .map(|(i, ((dev, outcome), finish))| {
            let (catalog_end, catalog_error) = match finish {
                None => (None, None),
                Some(Ok(end)) => (Some(end), None),
                Some(Err(e)) => (None, Some(e.to_string())),
            };
            let error = match &outcome.end {
                RingEnd::Complete => None,
                RingEnd::Full { error } | RingEnd::Failed { error } => Some(error.to_string()),
            };
            DeviceReport {
                path: dev.path().display().to_string(),
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
fn no_catalog(reports: &[DeviceReport]) -> BackupError {
    let why: Vec<String> = reports
        .iter()
        .map(|r| {
            let error = r.catalog_error.as_deref().or(r.error.as_deref());
            format!("{}: {}", r.path, error.unwrap_or("-"))
        })
        .collect();
    BackupError::NoCatalog(why.join("; "))
}

/// Catalog after the data, sync, label complete, sync. On a tape: a
/// filemark, the catalog as tape file 1, End record, filemark (the label
/// cannot be rewritten: the End record and filemark say "complete").
fn finish_device(
    dev: &dyn Device,
    label: &Label,
    outcome: &RingOutcome,
    encoded: &[u8],
    payload_bytes_max: u32,
    config: &BackupConfig,
) -> Result<u64, media::MediaError> {
    if dev.access() == Access::Sequential {
        return media::write_tape_catalog(
            dev,
            config.set_id,
            label.device_index,
            outcome.stats.records,
            outcome.data_end,
            encoded,
            payload_bytes_max,
        );
    }
    let catalog_end = media::write_catalog(
        dev,
        config.set_id,
        label.device_index,
        outcome.stats.records,
        outcome.data_end,
        encoded,
        config.chunk_bytes,
    )?;
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
