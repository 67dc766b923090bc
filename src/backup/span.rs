//! Sets that span the cartridges of a tape library (`backup --changer`).
//!
//! Every cartridge of the set is one device of it, a *volume*: its label's
//! device index is its volume number, the device count the number of
//! volumes (docs/FORMAT.md, "Sets that span cartridges"). The plan places
//! the set on the volumes as on any devices (each with its cartridge's
//! capacity); the drives take the volumes in order. A drive's thread:
//!
//! 1. takes the next volume, loads its cartridge (the changer is one
//!    robot: its moves are serialized by a lock), opens the drive and
//!    writes the volume's label;
//! 2. runs the ring on it as on any device: its own work, then work handed
//!    back. A volume that reaches the end of its medium keeps its durable
//!    records and hands the rest back (the ring's `Full`), the record that
//!    hit ENOSPC included, and the volumes still to come take it; while
//!    volumes wait in their slots, a drive with nothing left does not wait
//!    for the others (dispatcher `Pending`), so the drives keep streaming;
//! 3. when volumes remain, closes the cartridge with a trailer (a filemark,
//!    an End record, a filemark: "continued, the catalog is on the set's
//!    last cartridges"), unloads it and takes the next.
//!
//! Work handed back after the planned volumes are all taken goes first to
//! the volumes still loaded that have room: a drive whose volume ran dry
//! (not full) keeps it and goes on writing on it (its ring continues
//! after its records), and a drive whose cartridge is full loads a spare
//! only when those volumes cannot take the work (their capacity, less
//! their early-warning zone, the catalog's reserve and what they hold).
//! A spare is a cartridge and a swap: loaded only when needed.
//!
//! Resuming (`backup --changer --resume`): a volume the interrupted run
//! closed with its records all kept stays in its slot (`Before::Closed`);
//! one it left open (or whose kept records end early) is loaded,
//! positioned after its kept records and written on (`Before::Open`, no
//! new label); the others are written as in any run. The catalog lists
//! the kept records in front of each volume's new ones.
//!
//! The catalog, built when every volume is written, names each volume by
//! its barcode, and its segments say which volume holds which records. It
//! is written on the volumes still in the drives; they are unloaded after.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::device::changer::Changer;
use crate::device::{self, Device, DeviceSpec, Mode};
use crate::format::{Label, HEADER_BYTES};
use crate::media::{self, MediaError};

use super::catalog::{
    build_catalog, device_end, device_reports, finish_device, no_catalog, source_findings,
};
use super::resume::{self, DeviceDurable};
use super::run::{new_dispatcher, ring_config, run_device, sparse_data};
use super::{BackupConfig, BackupError, BackupReport, DeviceEnd, SetInput};
use crate::engine::dispatch::{DeviceState, Dispatcher, WorkItem};
use crate::engine::ring::{self, RingConfig, RingEnd, RingOutcome, RingStats};

/// One cartridge of a spanning set, in volume order.
#[derive(Clone, Debug)]
pub struct Volume {
    /// The slot it is taken from (and goes back to).
    pub slot: u32,
    pub barcode: String,
    /// The room the volume has: the cartridge's capacity, less what the
    /// sets already on it take when the set is appended.
    pub capacity_bytes: u64,
    /// `backup --append`: the filemarks of the sets already on the
    /// cartridge, written after (0: the cartridge is written from its
    /// beginning).
    pub files_before: u32,
    /// The end of its capacity a volume cannot count on (its early-warning
    /// zone, where known; 0: not known).
    pub early_warning_bytes: u64,
}

/// What a volume holds of the set before this run (`backup --resume`).
#[derive(Debug)]
pub enum Before {
    /// Nothing: labelled, then written from its beginning.
    Blank,
    /// Closed by the interrupted run (its "continued" trailer) with every
    /// record kept: left in its slot, listed with its kept records.
    Closed(DeviceDurable),
    /// Its label and kept records stay; loaded, positioned after them
    /// and written on (what followed them on the tape is ended).
    Open(DeviceDurable),
}

impl Before {
    fn kept(&self) -> Option<&DeviceDurable> {
        match self {
            Before::Blank => None,
            Before::Closed(d) | Before::Open(d) => Some(d),
        }
    }
}

/// The library a spanning set is written with.
pub struct Library<'a> {
    pub changer: &'a Mutex<Box<dyn Changer>>,
    /// The drives to write with: (drive number, its device), all empty.
    pub drives: Vec<(u32, DeviceSpec)>,
    /// The planned volumes, then the spares.
    pub volumes: Vec<Volume>,
    /// Volumes with planned work (`volumes[..planned]`); the others are
    /// spares, loaded only when work handed back by a volume that reached
    /// the end of its medium is left for them.
    pub planned: usize,
    /// Per volume: what it holds of the set already (all `Blank` but
    /// for `--resume`).
    pub before: Vec<Before>,
}

/// What the library did during a spanning backup.
#[derive(Clone, Debug, Default)]
pub struct SpanReport {
    /// Cartridge loads (each volume's, once).
    pub loads: u32,
    /// Time the drives spent between two volumes (trailer, unload, load,
    /// open, label), summed over the drives.
    pub swap_time: Duration,
    /// Per volume: the drive that wrote it (None: a spare not needed).
    pub drive_of: Vec<Option<u32>>,
}

/// How long a drive waits between looks at whether a spare is needed.
const SPARE_POLL: Duration = Duration::from_millis(5);

/// A volume written by a drive, still loaded.
struct Loaded {
    drive: u32,
    volume: usize,
    dev: Box<dyn Device>,
    ring: RingConfig,
    /// The media offset after its records (where a ring that goes on
    /// writing on it starts, `Ring::continuing`).
    position: u64,
    /// Its queue ran dry before its medium ended: it can take more.
    room: bool,
}

/// What the drives share.
struct Shared<'a> {
    input: &'a SetInput,
    config: &'a BackupConfig,
    library: &'a Library<'a>,
    dispatcher: &'a Dispatcher,
    progress: &'a [AtomicU64],
    next: AtomicUsize,
    outcomes: Mutex<Vec<Option<RingOutcome>>>,
    /// Per volume: the trailer's end, or why it could not be written
    /// (None: not written, the volume is still loaded or failed).
    trailers: Mutex<Vec<Option<Result<u64, MediaError>>>>,
    report: Mutex<SpanReport>,
    /// Per volume: in a drive (or being loaded into one) and able to take
    /// more work (see `room_elsewhere`).
    open: Mutex<Vec<bool>>,
    /// The drives' largest record payload (0: no volume loaded yet), for
    /// the media bytes work takes.
    payload_max: AtomicU64,
}

/// The label of volume `index` of `count`.
fn volume_label(config: &BackupConfig, index: u32, count: u32, block_bytes: u32) -> Label {
    super::run::writing_label(config, index, count, block_bytes)
}

/// Run a backup over the volumes of `library` (planned in `input` as one
/// device per volume, or given as `work`: (volume, range), as a resume
/// gives what is left), its drives writing in parallel. `progress` has
/// one counter per volume.
pub fn run_spanning(
    input: &SetInput,
    library: &Library<'_>,
    config: &BackupConfig,
    work: Option<Vec<(u32, WorkItem)>>,
    progress: &[AtomicU64],
) -> Result<(BackupReport, SpanReport), BackupError> {
    let count = library.volumes.len();
    assert!(count > 0 && !library.drives.is_empty());
    assert_eq!(progress.len(), count, "one progress counter per volume");
    assert_eq!(library.before.len(), count, "what each volume holds");
    let started = Instant::now();
    let dispatcher = match work {
        None => new_dispatcher(input, count, config),
        Some(work) => {
            Dispatcher::with_data(count, config.chunk_bytes as u64, work, sparse_data(input))
        }
    };
    for volume in 0..count {
        dispatcher.hold(volume);
    }
    let mut outcomes: Vec<Option<RingOutcome>> = (0..count).map(|_| None).collect();
    let mut trailers: Vec<Option<Result<u64, MediaError>>> = (0..count).map(|_| None).collect();
    for (volume, before) in library.before.iter().enumerate() {
        if let Before::Closed(kept) = before {
            dispatcher.finish(volume);
            let outcome = with_kept(unused(volume), kept);
            // Its trailer: a filemark, the End record, a filemark.
            trailers[volume] = Some(Ok(outcome.data_end + 3));
            outcomes[volume] = Some(outcome);
        }
    }
    let shared = Shared {
        input,
        config,
        library,
        dispatcher: &dispatcher,
        progress,
        next: AtomicUsize::new(0),
        outcomes: Mutex::new(outcomes),
        trailers: Mutex::new(trailers),
        report: Mutex::new(SpanReport {
            drive_of: vec![None; count],
            ..SpanReport::default()
        }),
        open: Mutex::new(vec![false; count]),
        payload_max: AtomicU64::new(0),
    };
    let ran: Vec<Result<Option<Loaded>, BackupError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = library
            .drives
            .iter()
            .map(|(drive, spec)| {
                let shared = &shared;
                std::thread::Builder::new()
                    .name(format!("pbio-drive{drive}"))
                    .spawn_scoped(scope, move || {
                        let ran = drive_thread(shared, *drive, spec);
                        if ran.is_err() {
                            shared.dispatcher.abort();
                        }
                        ran
                    })
                    .expect("spawn drive thread")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("drive thread panicked"))
            .collect()
    });
    let mut loaded = Vec::new();
    let mut first_error = None;
    for r in ran {
        match r {
            Ok(l) => loaded.extend(l),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    if let Some(e) = first_error {
        unload_all(library, &loaded);
        return Err(e);
    }
    // The spares no drive took (the drives with room took the work
    // handed back): blank in their slots, listed with no records.
    let mut finished = shared.trailers.into_inner().expect("no panic");
    let outcomes: Vec<RingOutcome> = shared
        .outcomes
        .into_inner()
        .expect("no drive thread panicked")
        .into_iter()
        .enumerate()
        .map(|(volume, o)| {
            o.unwrap_or_else(|| {
                assert!(volume >= library.planned, "every planned volume ran");
                finished[volume] = Some(Ok(0));
                unused(volume)
            })
        })
        .collect();
    let sources = source_findings(input, &dispatcher);
    let ends: Vec<DeviceEnd> = outcomes.iter().map(|o| device_end(&o.end)).collect();
    let named: Vec<(Vec<u8>, u64)> = library
        .volumes
        .iter()
        .map(|v| (v.barcode.as_bytes().to_vec(), v.capacity_bytes))
        .collect();
    let (encoded, segments) = match build_catalog(input, &named, &outcomes, &ends, config, None) {
        Ok(built) => built,
        Err(e) => {
            unload_all(library, &loaded);
            return Err(e);
        }
    };
    // The catalog on the volumes still loaded, one thread per drive.
    let catalogs: Vec<(usize, Result<u64, MediaError>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = loaded
            .iter()
            .filter(|l| ends[l.volume] != DeviceEnd::Failed)
            .map(|l| {
                let label =
                    volume_label(config, l.volume as u32, count as u32, l.dev.block_bytes());
                let (outcome, encoded) = (&outcomes[l.volume], &encoded);
                scope.spawn(move || {
                    let payload_max = l.ring.record_payload_bytes_max;
                    // No parity on a library (cli refuses it): the catalog
                    // follows the data.
                    let at = (outcome.data_end, outcome.stats.records);
                    let end = finish_device(
                        l.dev.as_ref(),
                        &label,
                        outcome,
                        at,
                        encoded,
                        payload_max,
                        config,
                    );
                    (l.volume, end)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("catalog thread panicked"))
            .collect()
    });
    let catalog_written = catalogs.iter().any(|(_, r)| r.is_ok());
    for (volume, end) in catalogs {
        finished[volume] = Some(end);
    }
    unload_all(library, &loaded);
    let reports = device_reports(&named, outcomes, &ends, finished);
    if !catalog_written {
        return Err(no_catalog(reports));
    }
    let span = shared.report.into_inner().expect("no panic");
    let report = BackupReport::of_run(
        config.set_id,
        reports,
        input.entries.len(),
        segments,
        sources,
        Default::default(),
        started,
    );
    Ok((report, span))
}

/// Put the cartridges still in the drives back in their slots (best
/// effort: a library that cannot is reported by the next `changer status`).
fn unload_all(library: &Library<'_>, loaded: &[Loaded]) {
    let mut changer = library.changer.lock().expect("no changer user panicked");
    for l in loaded {
        let _ = changer.unload(l.drive);
    }
}

/// One drive's thread: volumes in turn until none is left; returns the
/// last one, still loaded, for the catalog.
fn drive_thread(
    shared: &Shared<'_>,
    drive: u32,
    spec: &DeviceSpec,
) -> Result<Option<Loaded>, BackupError> {
    let library = shared.library;
    let count = library.volumes.len();
    let mut loaded: Option<Loaded> = None;
    loop {
        let room = loaded.as_ref().is_some_and(|l| l.room);
        let Some(volume) = take_volume(shared, room) else {
            let Some(l) = loaded.as_mut().filter(|l| l.room) else {
                return Ok(loaded);
            };
            // Only spares are left: a volume that ran dry takes the work
            // handed back itself, instead of a spare.
            if !work_handed_back(shared.dispatcher, library.planned) {
                shared.open.lock().expect("no panic")[l.volume] = false;
                return Ok(loaded);
            }
            go_on(shared, l)?;
            continue;
        };
        if matches!(library.before[volume], Before::Closed(_)) {
            // Closed by the interrupted run: it stays in its slot.
            continue;
        }
        if volume >= library.planned && !spare_needed(shared, volume) {
            // Not needed: it stays blank in its slot, listed with no records.
            shared.dispatcher.finish(volume);
            shared.trailers.lock().expect("no panic")[volume] = Some(Ok(0));
            shared.outcomes.lock().expect("no panic")[volume] = Some(unused(volume));
            continue;
        }
        if volume < library.planned {
            shared.open.lock().expect("no panic")[volume] = true;
        }
        let swap_started = Instant::now();
        if let Some(done) = loaded.take() {
            close_volume(shared, done);
            library
                .changer
                .lock()
                .expect("no changer user panicked")
                .unload(drive)?;
        }
        let v = &library.volumes[volume];
        library
            .changer
            .lock()
            .expect("no changer user panicked")
            .load(v.slot, drive)?;
        let dev = device::open(spec, Mode::Write).map_err(|error| BackupError::Drive {
            drive,
            barcode: v.barcode.clone(),
            error,
        })?;
        // Appended: the volume is the set's view of the cartridge, its
        // label after the sets already there (FORMAT.md, "Tape layout").
        let dev: Box<dyn Device> = if v.files_before > 0 {
            Box::new(media::sets::SetOnTape::new(dev, v.files_before))
        } else {
            dev
        };
        let ring = ring_config(dev.as_ref(), volume as u32, shared.config);
        shared
            .payload_max
            .fetch_max(ring.record_payload_bytes_max as u64, Ordering::Relaxed);
        let kept = library.before[volume].kept();
        let labelled = match kept {
            // Its label is the set's already: after its kept records.
            Some(kept) => resume::space_after_kept(dev.as_ref(), kept.records.len() as u64),
            None => media::write_label(
                dev.as_ref(),
                &volume_label(
                    shared.config,
                    volume as u32,
                    count as u32,
                    dev.block_bytes(),
                ),
            ),
        };
        {
            let mut report = shared.report.lock().expect("no panic");
            report.loads += 1;
            report.drive_of[volume] = Some(drive);
            if volume >= library.drives.len() {
                report.swap_time += swap_started.elapsed();
            }
        }
        shared.dispatcher.start(volume);
        let outcome = match (labelled, kept) {
            (Ok(()), None) => run_device(
                shared.input,
                dev.as_ref(),
                shared.config,
                shared.dispatcher,
                (&ring, &shared.progress[volume], None, None),
            )?,
            (Ok(()), Some(kept)) => with_kept(
                run_device(
                    shared.input,
                    dev.as_ref(),
                    shared.config,
                    shared.dispatcher,
                    (
                        &ring,
                        &shared.progress[volume],
                        Some((
                            HEADER_BYTES as u64 + kept.media_bytes(),
                            kept.records.len() as u64,
                        )),
                        None,
                    ),
                )?,
                kept,
            ),
            (Err(e), None) => unlabelled(shared.dispatcher, dev.as_ref(), volume, e),
            // Its kept records cannot be written on: nothing else holds
            // them, the run stops (what is on the cartridges stays).
            (Err(e), Some(_)) => return Err(e.into()),
        };
        let room = matches!(outcome.end, RingEnd::Complete);
        shared.open.lock().expect("no panic")[volume] = room;
        let position = HEADER_BYTES as u64 + outcome.stats.media_bytes;
        shared.outcomes.lock().expect("no panic")[volume] = Some(outcome);
        loaded = Some(Loaded {
            drive,
            volume,
            dev,
            ring,
            position,
            room,
        });
    }
}

/// The next volume for a drive to load: a planned one, or a spare unless
/// `planned_only` (a drive whose volume has room). None: none of those
/// is left.
fn take_volume(shared: &Shared<'_>, planned_only: bool) -> Option<usize> {
    let library = shared.library;
    let end = if planned_only {
        library.planned
    } else {
        library.volumes.len()
    };
    let mut next = shared.next.load(Ordering::SeqCst);
    loop {
        if next >= end {
            return None;
        }
        match shared
            .next
            .compare_exchange(next, next + 1, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => return Some(next),
            Err(now) => next = now,
        }
    }
}

/// Write work handed back on the volume `l` still holds, after its
/// records; its outcome becomes both runs' (as one run's). A run that
/// wrote nothing (no room for a record) leaves the volume without room.
fn go_on(shared: &Shared<'_>, l: &mut Loaded) -> Result<(), BackupError> {
    let records = {
        let outcomes = shared.outcomes.lock().expect("no panic");
        outcomes[l.volume].as_ref().expect("ran").stats.records
    };
    shared.dispatcher.start(l.volume);
    let later = run_device(
        shared.input,
        l.dev.as_ref(),
        shared.config,
        shared.dispatcher,
        (
            &l.ring,
            &shared.progress[l.volume],
            Some((l.position, records)),
            None,
        ),
    )?;
    l.position += later.stats.media_bytes;
    l.room = matches!(later.end, RingEnd::Complete) && later.stats.records > 0;
    shared.open.lock().expect("no panic")[l.volume] = l.room;
    let mut outcomes = shared.outcomes.lock().expect("no panic");
    let first = outcomes[l.volume].take().expect("ran");
    outcomes[l.volume] = Some(followed_by(first, later));
    Ok(())
}

/// One volume's outcome of two runs on it, `first` then `later`.
fn followed_by(mut first: RingOutcome, mut later: RingOutcome) -> RingOutcome {
    first.records.append(&mut later.records);
    first.parity.append(&mut later.parity);
    first.placed.append(&mut later.placed);
    first.stats.add(&later.stats);
    RingOutcome {
        end: later.end,
        records: first.records,
        parity: first.parity,
        placed: first.placed,
        data_end: later.data_end,
        redirected_bytes: first.redirected_bytes + later.redirected_bytes,
        stats: first.stats,
    }
}

/// Whether work is handed back for a volume that ran dry: wait until some
/// is (yes) or no volume is still writing, so none can hand any back (no).
fn work_handed_back(dispatcher: &Dispatcher, planned: usize) -> bool {
    loop {
        if dispatcher.shared_pending_bytes() > 0 {
            return true;
        }
        if !dispatcher.may_give_back(0..planned) {
            return dispatcher.shared_pending_bytes() > 0;
        }
        std::thread::sleep(SPARE_POLL);
    }
}

/// Whether the spare `volume` must be loaded (by a drive whose cartridge
/// is full or failed, or that has none): wait until work is handed back
/// that the volumes loaded with room cannot take (yes: the spare counts
/// as loaded from then on, so that another drive deciding on a spare
/// counts its room), or no volume is still writing and none is handed
/// back, so none can be (no).
fn spare_needed(shared: &Shared<'_>, volume: usize) -> bool {
    let dispatcher = shared.dispatcher;
    loop {
        let pending = dispatcher.shared_pending_bytes();
        if pending > 0 {
            let mut open = shared.open.lock().expect("no panic");
            if !room_in(shared, &open, pending) {
                open[volume] = true;
                return true;
            }
        } else if !dispatcher.may_give_back(0..shared.library.planned) {
            return false;
        }
        std::thread::sleep(SPARE_POLL);
    }
}

/// Whether the `open` volumes (in the drives, able to take more work)
/// have room for `pending_bytes` of payload (with its record headers)
/// before their early-warning zones and the catalog's reserve. A volume
/// of unknown capacity counts as none: it is written to its end of
/// medium, and a full drive does not wait for it.
fn room_in(shared: &Shared<'_>, open: &[bool], pending_bytes: u64) -> bool {
    let payload_max = shared
        .payload_max
        .load(Ordering::Relaxed)
        .max(HEADER_BYTES as u64);
    let media = |payload: u64| payload + payload.div_ceil(payload_max) * HEADER_BYTES as u64;
    let room: u64 = open
        .iter()
        .enumerate()
        .filter(|(_, open)| **open)
        .map(|(volume, _)| {
            let v = &shared.library.volumes[volume];
            if v.capacity_bytes == 0 {
                return 0;
            }
            let kept = shared.library.before[volume]
                .kept()
                .map_or(0, DeviceDurable::media_bytes);
            let held = media(shared.dispatcher.filled_bytes(volume)) + kept;
            v.capacity_bytes
                .saturating_sub(HEADER_BYTES as u64 + shared.config.reserve_bytes)
                .saturating_sub(v.early_warning_bytes)
                .saturating_sub(held)
        })
        .sum();
    room >= media(pending_bytes)
}

/// A volume's outcome with the interrupted run's kept records in front:
/// its records numbered on after them, its media bytes counting them
/// (its payload bytes stay this run's).
fn with_kept(outcome: RingOutcome, kept: &DeviceDurable) -> RingOutcome {
    let mut o = resume::with_kept(outcome, kept);
    o.stats.records += kept.records.len() as u64;
    o.stats.media_bytes += kept.media_bytes();
    o.data_end = o.data_end.max(kept.records.len() as u64 + 1);
    o
}

/// The outcome of a spare that was not needed: nothing written.
fn unused(volume: usize) -> RingOutcome {
    let _ = volume;
    RingOutcome {
        end: RingEnd::Complete,
        records: Vec::new(),
        parity: Vec::new(),
        placed: Vec::new(),
        data_end: 1,
        redirected_bytes: 0,
        stats: RingStats::default(),
    }
}

/// A volume whose label could not be written: failed before it started
/// (its work goes to the others), as `write_labels` does for a device.
fn unlabelled(
    dispatcher: &Dispatcher,
    dev: &dyn Device,
    volume: usize,
    error: MediaError,
) -> RingOutcome {
    let redirected_bytes = dispatcher.retire(volume, DeviceState::Failed, 0);
    RingOutcome {
        end: RingEnd::Failed {
            error: ring::DeviceFault {
                device: dev.path().to_path_buf(),
                fault: ring::Fault::Label(std::sync::Arc::new(error)),
            },
        },
        records: Vec::new(),
        parity: Vec::new(),
        placed: Vec::new(),
        data_end: media::data_start(dev),
        redirected_bytes,
        stats: RingStats::default(),
    }
}

/// The trailer of a volume that is not the last of its drive: a filemark
/// after its data, an End record (no catalog records before it), a
/// filemark. A failed volume gets none (nothing on it is trusted).
fn close_volume(shared: &Shared<'_>, done: Loaded) {
    shared.open.lock().expect("no panic")[done.volume] = false;
    let outcomes = shared.outcomes.lock().expect("no panic");
    let outcome = outcomes[done.volume].as_ref().expect("ran");
    if matches!(outcome.end, RingEnd::Failed { .. }) {
        return;
    }
    let trailer = media::write_tape_catalog(
        done.dev.as_ref(),
        shared.config.set_id,
        done.volume as u32,
        outcome.stats.records,
        outcome.data_end,
        &[],
        done.ring.record_payload_bytes_max,
    );
    drop(outcomes);
    shared.trailers.lock().expect("no panic")[done.volume] = Some(trailer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::dispatch::tests::item;
    use crate::engine::dispatch::Next;

    const CHUNK: u64 = 4096;

    /// Volume 0 in a drive, volume 1 still in its slot: volume 0, out of
    /// work, does not wait for volume 1 (which would wait for a drive
    /// volume 0 holds); what volume 0 hands back at the end of its medium
    /// is volume 1's when it starts.
    #[test]
    fn a_volume_does_not_wait_for_volumes_in_their_slots() {
        let d = Dispatcher::new(
            2,
            CHUNK,
            [(0, item(0, 0, 2 * CHUNK)), (1, item(1, 0, CHUNK))],
        );
        d.hold(1);
        assert_eq!(d.next(0, u64::MAX), Some(item(0, 0, 2 * CHUNK)));
        assert_eq!(d.try_next(0, u64::MAX), Next::Done);
        assert_eq!(d.next(0, u64::MAX), None, "waited for a pending volume");
        // Its medium ended after the first chunk.
        let rest = item(0, CHUNK, CHUNK);
        d.give_back(&[rest]);
        d.retire(0, DeviceState::Full, rest.length);
        d.start(1);
        assert_eq!(d.next(1, u64::MAX), Some(item(1, 0, CHUNK)));
        assert_eq!(d.next(1, u64::MAX), Some(rest));
        assert_eq!(d.next(1, u64::MAX), None);
    }

    /// A volume that ran dry (or a spare) is wanted when work was handed
    /// back, not once no volume is writing or waiting to, and waits while
    /// one is.
    #[test]
    fn a_dry_volume_waits_only_for_work_handed_back() {
        let d = Dispatcher::new(3, CHUNK, [(0, item(0, 0, CHUNK))]);
        d.hold(1);
        d.hold(2);
        // Volume 0 (planned) still in its slot: may hand work back.
        assert!(d.may_give_back(0..1));
        d.start(0);
        assert_eq!(d.next(0, u64::MAX), Some(item(0, 0, CHUNK)));
        d.finish(0);
        // Only spares are pending: nothing can come back.
        assert!(!work_handed_back(&d, 1));
        d.give_back(&[item(0, 0, CHUNK)]);
        assert!(work_handed_back(&d, 1));
    }
}
