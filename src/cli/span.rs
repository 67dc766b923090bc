//! `pbio backup --changer C`: a set written on the scratch cartridges of a
//! tape library, through all its drives, spanning as many cartridges as it
//! needs (backup::span).
//!
//! Before anything is written: the drives are emptied (their cartridges
//! back to their slots), every cartridge in a storage slot goes through
//! the overwrite guard (blank, or anything with `--force`/`--overwrite`:
//! a scratch cartridge), the set is planned, and a set larger than the
//! scratch cartridges can hold is refused with the numbers. A cartridge
//! the library cannot read where it is (a real library, `vlib:...,inplace=0`)
//! is loaded into a drive to be judged, unless the label cache
//! (`changer::cache`) says it holds a set the backup may not overwrite;
//! what the label read after the load says decides, and goes to the cache.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use super::append::AppendPoint;
use super::backup::{
    backup_failed, check_devices_kept, finished_json, outcome, payload_per_device, print_report,
    with_progress, BackupArgs,
};
use super::progress::{DeviceInfo, Output};
use super::{prepare_on, CliResult, Failure};
use crate::backup;
use crate::backup::span::{self, Library, Volume};
use crate::device::changer::cache::{CachedSet, LabelCache, Seen};
use crate::device::changer::shelved::{DrivePool, Shelved};
use crate::device::changer::{self, Changer};
use crate::device::{Device, DeviceSpec, Mode};
use crate::format::{SetId, HEADER_BYTES};
use crate::media::guard::{Finding, Policy};
use crate::units::human_bytes;

/// Of a cartridge's usable bytes, the part a volume is planned to fill:
/// the rest absorbs what the estimate cannot know (the early-warning
/// zone, a drive that fills early); a volume that fills up anyway hands
/// its rest to the volumes after it.
const PLANNED_FILL_PERCENT: u64 = 90;

/// What a cartridge of unknown capacity is planned as, and the room a
/// drive writing one is given: more than any cartridge holds, so that
/// only its end of medium (ENOSPC at early warning) ends a volume.
const UNKNOWN_CARTRIDGE_BYTES: u64 = 1 << 50;

/// A scratch cartridge: its slot, barcode and capacity.
struct Scratch {
    slot: u32,
    barcode: String,
    /// None: unknown (a drive that reports no density code, as tgt's and
    /// scsi_debug's do, and no `--changer /dev/sgN,size=S`).
    capacity: Option<u64>,
    /// Its early-warning zone where known (an emulated tape's): the end
    /// of its capacity a volume cannot count on, since the write after the
    /// one that enters it fails (ENOSPC) and the volume ends there.
    early_warning: u64,
    /// `--append`: where the new set goes on it (after its sets).
    point: AppendPoint,
}

pub fn run(args: BackupArgs) -> CliResult {
    let text = args.set.changer.clone().expect("run only with --changer");
    let policy = Policy {
        force: args.force,
        overwrite: args.overwrite.clone(),
    };
    let mac_key = super::key::load_optional(args.key.as_deref())?;
    let mut changer = changer::open(&text).map_err(Failure::Changer)?;
    let mut drives = empty_drives(changer.as_mut())?;
    let scratch = scratch_cartridges(changer.as_mut(), &drives, &policy, &args)?;
    let unknown = unknown_capacity(&text, &scratch);
    if let Some(note) = &unknown {
        errln!("pbio: {note}");
        // Written until their end of medium.
        for (_, spec) in &mut drives {
            spec.size_bytes.get_or_insert(UNKNOWN_CARTRIDGE_BYTES);
        }
    }
    // Planned over every scratch cartridge first, for the bytes it needs.
    let mut set = args.set.clone();
    set.changer = None;
    set.devs = Vec::new();
    let cartridges = scratch
        .iter()
        .map(|s| {
            let capacity = s.capacity.unwrap_or(UNKNOWN_CARTRIDGE_BYTES);
            (s.barcode.clone(), capacity, None)
        })
        .collect();
    let mut prepared = prepare_on(&set, Some(cartridges)).map_err(|e| too_large(e, &scratch))?;
    super::key::check_since_encrypted(args.encrypt, prepared.since.as_ref())?;
    // An appended cartridge has the room its sets leave.
    let appended = scratch.iter().any(|s| s.point.used_bytes > 0);
    for (device, s) in prepared.devices.iter_mut().zip(&scratch) {
        device.1 = device.1.saturating_sub(s.point.used_bytes);
    }
    let needed = match unknown {
        // Nothing to count the cartridges it needs with: one a drive
        // (all streaming), the others spares taken at end of medium.
        Some(_) => drives.len().min(scratch.len()),
        None => volumes_needed(&args, &prepared, &scratch)?,
    };
    if needed < scratch.len() || appended {
        prepared.devices.truncate(needed);
        let (plan, reserve) = backup::plan_set(
            &prepared.entries,
            prepared.since.as_ref(),
            &prepared.devices,
            &set.options(),
        )
        .map_err(Failure::Plan)?;
        prepared.plan = plan;
        prepared.reserve_bytes = reserve;
    }
    // Every other scratch cartridge is a spare, taken in turn only when a
    // volume reaches the end of its medium before its planned work: a set
    // that fits the scratch cartridges never ends incomplete while one is
    // left (issue 20: one spare per drive did not always suffice).
    let spares = scratch.len() - needed;
    let volumes: Vec<Volume> = scratch[..needed + spares]
        .iter()
        .map(|s| Volume {
            slot: s.slot,
            barcode: s.barcode.clone(),
            // 0 in the catalog: not known.
            capacity_bytes: s
                .capacity
                .map_or(0, |c| c.saturating_sub(s.point.used_bytes)),
            files_before: s.point.files_before,
            early_warning_bytes: s.early_warning,
        })
        .collect();
    let (events_tx, events_rx) = crossbeam_channel::unbounded();
    // Volumes wait in their slots: nothing to steal from them. (`run`
    // refused --parity with --changer, so the config's parity is 0.)
    let config =
        super::backup::backup_config(&args, prepared.reserve_bytes, events_tx, mac_key, None);
    let mut payload = payload_per_device(&prepared.entries, &prepared.plan);
    payload.resize(volumes.len(), 0);
    let infos: Vec<DeviceInfo> = volumes
        .iter()
        .zip(payload)
        .map(|(v, planned_bytes)| DeviceInfo {
            path: v.barcode.clone(),
            planned_bytes,
            capacity_bytes: v.capacity_bytes,
            rate_bytes_per_sec: None,
        })
        .collect();
    let (input, reporter) = super::progress::start_run(
        prepared,
        Output::choose(args.set.json, args.json_interval),
        infos,
        &config,
    );
    let changer = Mutex::new(changer);
    let library = Library {
        changer: &changer,
        drives,
        volumes,
        planned: needed,
        before: (0..needed + spares).map(|_| span::Before::Blank).collect(),
    };
    let progress: Vec<AtomicU64> = library.volumes.iter().map(|_| AtomicU64::new(0)).collect();
    let result = with_progress(reporter, &progress, events_rx, |progress| {
        span::run_spanning(&input, &library, &config, None, progress)
    });
    let json = args.set.json;
    let written = result
        .as_ref()
        .ok()
        .map(|(report, spanned)| (outcome(report), spanned.drive_of.as_slice()));
    remember_written(&changer, &library.volumes, written, &config);
    match result {
        Err(e) => Err(backup_failed(e, json)),
        Ok((report, spanned)) => {
            let outcome = outcome(&report);
            let used: Vec<&str> = library
                .volumes
                .iter()
                .zip(&spanned.drive_of)
                .filter(|(_, drive)| drive.is_some())
                .map(|(v, _)| v.barcode.as_str())
                .collect();
            if json {
                let mut finished = finished_json(&report, outcome);
                finished["cartridges"] = json!(used);
                finished["loads"] = json!(spanned.loads);
                finished["swap_seconds"] = json!(spanned.swap_time.as_secs_f64());
                outln!("{finished}");
            } else {
                outln!(
                    "changer {text}: {} cartridges ({}), {} loads, {:.1} s between cartridges over {} drives",
                    used.len(),
                    used.join(" "),
                    spanned.loads,
                    spanned.swap_time.as_secs_f64(),
                    library.drives.len()
                );
            }
            print_report(&report, json);
            Ok(outcome)
        }
    }
}

/// The drives to write with (every drive whose device is known), emptied:
/// a cartridge left in one goes back to its slot.
pub(super) fn empty_drives(changer: &mut dyn Changer) -> Result<Vec<(u32, DeviceSpec)>, Failure> {
    let status = changer.status().map_err(Failure::Changer)?;
    for d in status.drives.iter().filter(|d| d.full) {
        changer.unload(d.number).map_err(Failure::Changer)?;
    }
    let drives: Vec<(u32, DeviceSpec)> = status
        .drives
        .iter()
        .filter_map(|d| d.device.clone().map(|spec| (d.number, spec)))
        .collect();
    if drives.is_empty() {
        return Err(Failure::Usage(format!(
            "changer {}: no drive whose tape node is known (a real library's drives are matched to /dev/nstN by serial number, and none matched: load cartridges with `pbio changer load` and give the drives with --dev)",
            changer.name()
        )));
    }
    Ok(drives)
}

/// The cartridges in storage slots that the overwrite guard lets pbio
/// write (blank ones; with `--force` or `--overwrite`, those too; with
/// `--retention`, those whose sets are all older than it), in slot
/// order; with `--append`, the cartridges whose sets are all complete
/// come first (the new set goes after their sets), then the blank ones.
/// The others are named on stderr.
fn scratch_cartridges(
    changer: &mut dyn Changer,
    drives: &[(u32, DeviceSpec)],
    policy: &Policy,
    args: &BackupArgs,
) -> Result<Vec<Scratch>, Failure> {
    let status = changer.status().map_err(Failure::Changer)?;
    let mut cache = LabelCache::load(changer.name(), &status);
    let mut scratch = Vec::new();
    for s in status.slots.iter().filter(|s| s.full && !s.import_export) {
        let barcode = s
            .barcode
            .clone()
            .unwrap_or_else(|| format!("slot{}", s.number));
        let judge = |spec: &DeviceSpec| {
            let capacity = crate::device::probe(spec).ok().map(|p| p.capacity_bytes);
            let point = usable(spec, capacity, policy, args);
            let early_warning = crate::device::vtape::early_warning_bytes(spec).unwrap_or(0);
            (
                point.map(|point| (point, capacity, early_warning)),
                seen_on(spec),
            )
        };
        let (usable, seen) = match changer.cartridge_in_slot(s.number) {
            Some(spec) => judge(&spec),
            None => match kept_by_cache(cache.get(&barcode), policy, args) {
                Some(why) => (Err(Failure::Usage(why)), None),
                None => in_drive(changer, s.number, &drives[0], READY, judge)?,
            },
        };
        if let Some(seen) = seen {
            cache.observed(&barcode, seen);
        }
        match usable {
            Ok((point, capacity, early_warning)) => scratch.push(Scratch {
                slot: s.number,
                barcode,
                capacity,
                early_warning,
                point,
            }),
            Err(why) => errln!(
                "pbio: slot {} ({barcode}) is not scratch, left alone: {}",
                s.number,
                why.to_string().replace('\n', " ")
            ),
        }
    }
    if let Err(e) = cache.save() {
        errln!(
            "pbio: changer {}: label cache not saved: {e}",
            changer.name()
        );
    }
    if scratch.is_empty() {
        return Err(Failure::Usage(format!(
            "changer {}: no scratch cartridge (blank, or any with --force)",
            changer.name()
        )));
    }
    // Appending: the cartridges that hold sets first (stable: slot order).
    scratch.sort_by_key(|s| s.point.sets_before == 0);
    Ok(scratch)
}

/// Where the new set goes on the cartridge `spec` reads (its capacity
/// `capacity`, None: unknown), or why it is not scratch.
fn usable(
    spec: &DeviceSpec,
    capacity: Option<u64>,
    policy: &Policy,
    args: &BackupArgs,
) -> Result<AppendPoint, Failure> {
    let point = if args.append {
        super::append::append_point(spec, false)
    } else {
        expired(spec, args.retention)
            .map(|()| AppendPoint::default())
            .or_else(|_| {
                check_devices_kept(std::slice::from_ref(spec), policy, args.retention)
                    .map(|()| AppendPoint::default())
            })
    }?;
    let Some(capacity) = capacity else {
        return Ok(point);
    };
    if point.used_bytes > capacity / 8 * 7 {
        return Err(Failure::Usage(format!(
            "--append: its sets leave {} of {}, less than an eighth",
            human_bytes(capacity.saturating_sub(point.used_bytes)),
            human_bytes(capacity)
        )));
    }
    Ok(point)
}

/// Why a cartridge is left in its slot unread, when the label cache says
/// it holds what the backup may not overwrite (another program's data, or
/// a set younger than `--retention`, or any set without it); None: it is
/// loaded and its label decides. Only a reason to skip a cartridge, never
/// to write one: with `--force`, `--overwrite` or `--append` every
/// cartridge is loaded.
fn kept_by_cache(seen: Option<&Seen>, policy: &Policy, args: &BackupArgs) -> Option<String> {
    if args.append || policy.force || !policy.overwrite.is_empty() {
        return None;
    }
    let young = |set: &CachedSet| {
        args.retention.is_none_or(|r| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            now.saturating_sub(set.created_unix_ns) < r.as_nanos() as u64
        })
    };
    match seen? {
        Seen::Blank => None,
        Seen::Other => Some("the label cache says it holds data that is not a pbio set (`pbio changer inventory` reads it again)".into()),
        Seen::Sets(sets) => sets.iter().find(|s| young(s)).map(|s| {
            format!(
                "the label cache says it holds set {} created {}{} (`pbio changer inventory` reads it again)",
                s.set_id,
                crate::media::guard::utc_text(s.created_unix_ns / 1_000_000_000),
                if args.retention.is_some() { ", younger than --retention" } else { "" }
            )
        }),
    }
}

/// What the cartridge `spec` reads holds: blank, not a pbio set, or its
/// sets (each with the filemarks before it). None: it cannot be opened.
pub fn seen_on(spec: &DeviceSpec) -> Option<Seen> {
    let dev = crate::device::open(spec, Mode::Read).ok()?;
    if dev.access() != crate::device::Access::Sequential {
        return None;
    }
    if dev.tape_status().is_ok_and(|st| st.at_bot && st.at_eod) {
        return Some(Seen::Blank);
    }
    Some(match crate::media::sets::sets_on_tape(dev.as_ref()) {
        Ok(found) if !found.is_empty() => seen_of(&found),
        _ => Seen::Other,
    })
}

/// The sets found on a tape, as the label cache keeps them.
pub(super) fn seen_of(found: &[crate::media::sets::TapeSet]) -> Seen {
    Seen::Sets(
        found
            .iter()
            .map(|t| CachedSet {
                set_id: t.label.set_id,
                files_before: t.files_before,
                created_unix_ns: t.label.created_unix_ns,
                complete: t.complete(),
            })
            .collect(),
    )
}

/// How long a drive may take to become ready after a load when judging or
/// finding cartridges (as `changer inventory --ready-timeout`'s default).
pub(super) const READY: Duration = Duration::from_secs(300);

/// The drive `spec` opened for reading, once it opens: a real drive
/// threads a cartridge for a while after a load. Up to `ready`; then why not.
pub fn wait_ready(spec: &DeviceSpec, ready: Duration) -> Result<Box<dyn Device>, String> {
    let started = Instant::now();
    loop {
        match crate::device::open(spec, Mode::Read) {
            Ok(dev) => return Ok(dev),
            Err(e) if started.elapsed() >= ready => return Err(e.to_string()),
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// Load the cartridge in `slot` into the empty `drive`, wait up to
/// `ready` for the drive, run `f` on the drive's device, and put the
/// cartridge back where it was.
pub fn in_drive<T>(
    changer: &mut dyn Changer,
    slot: u32,
    drive: &(u32, DeviceSpec),
    ready: Duration,
    f: impl FnOnce(&DeviceSpec) -> T,
) -> Result<T, Failure> {
    changer.load(slot, drive.0).map_err(Failure::Changer)?;
    // Not ready in time: `f` sees the drive as it is (and says why).
    drop(wait_ready(&drive.1, ready));
    let out = f(&drive.1);
    let back = changer.unload(drive.0).map_err(Failure::Changer)?;
    if back != slot {
        return Err(Failure::Data(format!(
            "changer {}: the cartridge of slot {slot} went back to slot {back}",
            changer.name()
        )));
    }
    Ok(out)
}

/// After a spanning backup: the cartridges written hold the new set after
/// the sets they held (`written`: the run's outcome and which volumes a
/// drive wrote); after a failed one, what they hold is not known.
pub(super) fn remember_written(
    changer: &Mutex<Box<dyn Changer>>,
    volumes: &[Volume],
    written: Option<(super::Outcome, &[Option<u32>])>,
    config: &backup::BackupConfig,
) {
    let mut changer = changer.lock().expect("no changer user panicked");
    let Ok(status) = changer.status() else {
        return;
    };
    let mut cache = LabelCache::load(changer.name(), &status);
    let whole = matches!(
        written,
        Some((super::Outcome::Done | super::Outcome::Degraded, _))
    );
    for (i, v) in volumes.iter().enumerate() {
        let used = written
            .as_ref()
            .is_none_or(|(_, drive_of)| drive_of.get(i).is_some_and(Option::is_some));
        if !used {
            continue;
        }
        let new = CachedSet {
            set_id: config.set_id,
            files_before: v.files_before,
            created_unix_ns: config.created_unix_ns,
            complete: true,
        };
        let before = match cache.get(&v.barcode) {
            Some(Seen::Sets(sets)) if v.files_before > 0 => Some(
                sets.iter()
                    .filter(|s| s.files_before < v.files_before)
                    .copied()
                    .collect::<Vec<_>>(),
            ),
            _ if v.files_before > 0 => None,
            _ => Some(Vec::new()),
        };
        match before.filter(|_| whole) {
            Some(mut sets) => {
                sets.push(new);
                cache.observed(&v.barcode, Seen::Sets(sets));
            }
            _ => cache.forget(&v.barcode),
        }
    }
    if let Err(e) = cache.save() {
        errln!(
            "pbio: changer {}: label cache not saved: {e}",
            changer.name()
        );
    }
}

/// A cartridge whose sets are all older than `retention`: scratch for
/// `--changer` without `--force` (Ok), or why not.
fn expired(spec: &DeviceSpec, retention: Option<std::time::Duration>) -> Result<(), ()> {
    let retention = retention.ok_or(())?;
    let inspection = crate::media::guard::inspect(spec).map_err(|_| ())?;
    let all_old = !inspection.findings.is_empty()
        && inspection.findings.iter().all(|f| match f {
            Finding::PbioSet { label } => super::append::younger_than(label, retention).is_none(),
            _ => false,
        });
    all_old.then_some(()).ok_or(())
}

/// The planner's "does not fit" over every scratch cartridge, with the
/// library's numbers.
fn too_large(failure: Failure, scratch: &[Scratch]) -> Failure {
    let Failure::Plan(backup::PlanSetError::Plan(crate::plan::PlanError::DoesNotFit {
        missing_bytes,
    })) = failure
    else {
        return failure;
    };
    let capacity = scratch.first().and_then(|s| s.capacity).unwrap_or(0);
    let all: u64 = scratch.iter().filter_map(|s| s.capacity).sum();
    Failure::Usage(format!(
        "the set needs {} more than the {} scratch cartridges hold together ({} each, {} in all, less each one's label and catalog): nothing was written",
        human_bytes(missing_bytes),
        scratch.len(),
        human_bytes(capacity),
        human_bytes(all)
    ))
}

/// When a scratch cartridge's capacity is unknown (its drive reports no
/// density code and the changer was given no `,size=`): the note saying
/// so. The set is then not checked against the cartridges before it is
/// written: each is written to its end of medium, and the set spans.
fn unknown_capacity(text: &str, scratch: &[Scratch]) -> Option<String> {
    let unknown: Vec<&str> = scratch
        .iter()
        .filter(|s| s.capacity.is_none())
        .map(|s| s.barcode.as_str())
        .collect();
    if unknown.is_empty() {
        return None;
    }
    Some(format!(
        "changer {text}: the capacity of {} of the {} scratch cartridges is unknown ({}: the drive reports no density code); give it as --changer {text},size=S to plan with it and to have a set larger than the cartridges refused before writing. Without it the set is not checked against the cartridges: each is written to its end of medium and the set spans onto the next",
        unknown.len(),
        scratch.len(),
        unknown.join(" ")
    ))
}

/// How many of the scratch cartridges the set needs: its stored bytes
/// with a record header per tape record, over each cartridge's usable
/// bytes (its capacity less the catalog's reserve) filled to
/// `PLANNED_FILL_PERCENT`. A set larger than all of them together, each
/// less its early-warning zone (where a volume may end), is refused
/// before anything is written.
fn volumes_needed(
    args: &BackupArgs,
    prepared: &super::Prepared,
    scratch: &[Scratch],
) -> Result<usize, Failure> {
    let stored: u64 = payload_per_device(&prepared.entries, &prepared.plan)
        .iter()
        .sum();
    let block = args.tape_block.max(2 * HEADER_BYTES as u64);
    let payload =
        (1u64 << (63 - (block - HEADER_BYTES as u64).leading_zeros())).min(args.set.chunk);
    let media = stored + stored.div_ceil(payload) * HEADER_BYTES as u64;
    let usable: Vec<u64> = prepared
        .devices
        .iter()
        .map(|(_, capacity, _)| capacity.saturating_sub(prepared.reserve_bytes))
        .collect();
    // What the cartridges hold for sure: each volume may end where its
    // early-warning zone starts.
    let sure: Vec<u64> = usable
        .iter()
        .zip(scratch)
        .map(|(bytes, s)| bytes.saturating_sub(s.early_warning))
        .collect();
    let all: u64 = sure.iter().sum();
    if media > all {
        return Err(Failure::Usage(format!(
            "the set needs {} on tape ({} of data), more than the {} scratch cartridges hold together ({} usable at most on one before its early-warning zone, {} in all): nothing was written",
            human_bytes(media),
            human_bytes(stored),
            scratch.len(),
            human_bytes(sure.iter().copied().max().unwrap_or(0)),
            human_bytes(all)
        )));
    }
    // The cartridges in order until their planned fill holds the set.
    let mut planned = 0u64;
    for (i, bytes) in usable.iter().enumerate() {
        planned += bytes * PLANNED_FILL_PERCENT / 100;
        if planned >= media {
            return Ok(i + 1);
        }
    }
    Ok(scratch.len())
}

/// Drives to read or write with: (drive number, its device).
type Drives = Vec<(u32, DeviceSpec)>;

/// The sets on a cartridge: each one's id and the filemarks before it.
type OnCartridge = Vec<(SetId, u32)>;

/// Restore, verify and list with `--changer`: every cartridge of the
/// library that holds a pbio set, as a device read through the drives
/// (`changer::shelved`): loaded when read, unloaded after. `wanted`: the
/// drives to read with (empty: all); `set`: only the cartridges of the
/// set whose id starts with it. Blank cartridges, cartridges without a
/// pbio label and those of other sets are left in their slots when the
/// library can read them where they are (an emulated library); otherwise
/// every cartridge is loaded once to read its label.
pub fn library_devices(
    text: &str,
    wanted: &[u32],
    set: Option<&str>,
) -> Result<Vec<crate::restore::Cartridge>, Failure> {
    let prefix = set.map(str::to_ascii_lowercase);
    let (changer, drives) = reading_drives(text, wanted)?;
    library_sets(text, changer, drives, set, prefix)
}

/// `scan --changer`: every cartridge in a storage slot, as a device read
/// through the drives `wanted` (empty: all), in slot order.
pub fn library_cartridges(text: &str, wanted: &[u32]) -> Result<Vec<Box<dyn Device>>, Failure> {
    let (mut changer, drives) = reading_drives(text, wanted)?;
    let status = changer.status().map_err(Failure::Changer)?;
    let pool = DrivePool::new(changer, drives);
    Ok(status
        .slots
        .iter()
        .filter(|s| s.full && !s.import_export)
        .map(|s| Box::new(Shelved::new(&pool, s.number, s.barcode.as_deref())) as Box<dyn Device>)
        .collect())
}

/// The library `text` opened, and the drives to read with (`wanted`,
/// empty: every drive with a known device), emptied.
fn reading_drives(text: &str, wanted: &[u32]) -> Result<(Box<dyn Changer>, Drives), Failure> {
    let mut changer = changer::open(text).map_err(Failure::Changer)?;
    let mut drives = empty_drives(changer.as_mut())?;
    for w in wanted {
        if !drives.iter().any(|(d, _)| d == w) {
            return Err(Failure::Usage(format!(
                "changer {text}: no drive {w} with a known device (drives: {})",
                drives
                    .iter()
                    .map(|(d, _)| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    if !wanted.is_empty() {
        drives.retain(|(d, _)| wanted.contains(d));
    }
    Ok((changer, drives))
}

/// The sets on one cartridge, each once (the first in tape order): a set
/// is written once on a cartridge, so its label seen again (a cache entry
/// or a walk that read the first one twice) is not another device of it.
fn once_each(sets: &[CachedSet]) -> OnCartridge {
    let mut on: OnCartridge = Vec::with_capacity(sets.len());
    for t in sets {
        if !on.iter().any(|(id, _)| *id == t.set_id) {
            on.push((t.set_id, t.files_before));
        }
    }
    on
}

/// The check of a cartridge chosen from the label cache: once loaded, its
/// label after `files_before` filemarks must be of the set `id`. When not,
/// the cache entry is replaced by what the cartridge holds and the
/// cartridge refused (a restore then names what is missing).
fn expect_set(
    changer: &str,
    barcode: &str,
    id: SetId,
    files_before: u32,
) -> crate::device::changer::shelved::Expectation {
    let (changer, barcode) = (changer.to_string(), barcode.to_string());
    Box::new(move |dev: &dyn Device| {
        let view = crate::media::sets::SetOnTape::new(dev, files_before);
        let found = crate::media::read_label(&view).map(|l| l.set_id);
        if found.as_ref().is_ok_and(|f| *f == id) {
            return Ok(());
        }
        let mut cache = LabelCache::load_unchecked(&changer);
        match crate::media::sets::sets_on_tape(dev) {
            Ok(sets) if !sets.is_empty() => {
                cache.observed(&barcode, seen_of(&sets));
            }
            _ => cache.forget(&barcode),
        }
        let _ = cache.save();
        Err(stale(id, &found))
    })
}

fn stale(id: SetId, found: &Result<SetId, crate::media::MediaError>) -> String {
    format!(
        "the label cache said it holds set {id}, but its label {}: the cache entry is corrected; run the command again (or `pbio changer inventory` to read every cartridge)",
        match found {
            Ok(other) => format!("is of set {other}"),
            Err(e) => format!("cannot be read ({e})"),
        }
    )
}

/// The cartridges holding the set `set` names (or the only set), each
/// seen as that set (`SetOnTape` where it follows other sets).
fn library_sets(
    text: &str,
    mut changer: Box<dyn Changer>,
    drives: Vec<(u32, DeviceSpec)>,
    set: Option<&str>,
    prefix: Option<String>,
) -> Result<Vec<crate::restore::Cartridge>, Failure> {
    let status = changer.status().map_err(Failure::Changer)?;
    let mut cache = LabelCache::load(changer.name(), &status);
    // Per cartridge: the sets on it, read where it is (an emulated
    // library), else as the label cache remembers them (checked when
    // loaded: `hinted`), else read through the first drive (and cached).
    let mut cartridges: Vec<(u32, Option<String>, Option<OnCartridge>)> = Vec::new();
    let mut hinted: Vec<u32> = Vec::new();
    for (i, s) in status.slots.iter().enumerate() {
        // One cartridge, one device of the set: a slot (or barcode) the
        // library reports twice is read once.
        let again = status.slots[..i]
            .iter()
            .any(|t| t.number == s.number || (t.barcode.is_some() && t.barcode == s.barcode));
        if !s.full || s.import_export || again {
            continue;
        }
        let cached = s.barcode.as_deref().and_then(|b| cache.get(b)).cloned();
        let seen = match (changer.cartridge_in_slot(s.number), cached) {
            (Some(spec), _) => seen_on(&spec),
            (None, Some(seen)) => {
                hinted.push(s.number);
                Some(seen)
            }
            (None, None) => {
                let seen = in_drive(changer.as_mut(), s.number, &drives[0], READY, seen_on)?;
                if let (Some(b), Some(seen)) = (&s.barcode, &seen) {
                    cache.observed(b, seen.clone());
                }
                seen
            }
        };
        let sets = match seen {
            Some(Seen::Sets(sets)) => once_each(&sets),
            // Unreadable: loaded again when read, its label then decides.
            None => {
                cartridges.push((s.number, s.barcode.clone(), None));
                continue;
            }
            Some(_) => Vec::new(),
        };
        cartridges.push((s.number, s.barcode.clone(), Some(sets)));
    }
    if let Err(e) = cache.save() {
        errln!("pbio: changer {text}: label cache not saved: {e}");
    }
    // What a refusal adds when the cache chose (it may be stale).
    let rehint = if hinted.is_empty() {
        String::new()
    } else {
        format!(
            " (the label cache was taken for {} cartridges: `pbio changer inventory --changer {text}` reads them again)",
            hinted.len()
        )
    };
    let ids: Vec<SetId> = cartridges
        .iter()
        .flat_map(|(_, _, sets)| sets.iter().flatten().map(|(id, _)| *id))
        .collect();
    // Which set: the one --set names (a unique prefix), or the only one.
    let chosen = if ids.is_empty() {
        None
    } else {
        Some(
            crate::media::sets::choose(&ids, prefix.as_deref()).map_err(|e| {
                // Each set named with the cartridges that hold it.
                let mut on: Vec<String> = Vec::new();
                for id in ids.iter().fold(Vec::new(), |mut d: Vec<SetId>, id| {
                    if !d.contains(id) {
                        d.push(*id);
                    }
                    d
                }) {
                    let slots: Vec<String> = cartridges
                        .iter()
                        .filter(|(_, _, sets)| sets.iter().flatten().any(|(i, _)| *i == id))
                        .map(|(slot, barcode, _)| match barcode {
                            Some(b) => format!("slot {slot} ({b})"),
                            None => format!("slot {slot}"),
                        })
                        .collect();
                    on.push(format!("set {id} on {}", slots.join(", ")));
                }
                Failure::Usage(format!(
                    "changer {text}: {e}{rehint}\n  {}",
                    on.join("\n  ")
                ))
            })?,
        )
    };
    let mut slots: Vec<(u32, Option<String>, u32)> = Vec::new();
    for (slot, barcode, sets) in cartridges {
        match sets {
            None => slots.push((slot, barcode, 0)),
            Some(sets) => slots.extend(
                sets.iter()
                    .filter(|(id, _)| Some(*id) == chosen)
                    .map(|(_, files_before)| (slot, barcode.clone(), *files_before)),
            ),
        }
    }
    if slots.is_empty() {
        return Err(Failure::Usage(format!(
            "changer {text}: no cartridge holds {}{rehint}",
            set.map_or("a pbio set".to_string(), |s| format!("set {s}"))
        )));
    }
    let pool = DrivePool::new(changer, drives);
    Ok(slots
        .iter()
        .map(|(slot, barcode, files_before)| {
            let mut shelved = Shelved::new(&pool, *slot, barcode.as_deref());
            if let (true, Some(id), Some(b)) = (hinted.contains(slot), chosen, barcode) {
                shelved = shelved.expecting(expect_set(text, b, id, *files_before));
            }
            let shelved = Box::new(shelved);
            let device = if *files_before == 0 {
                shelved as Box<dyn Device>
            } else {
                Box::new(crate::media::sets::SetOnTape::new(
                    shelved as Box<dyn Device>,
                    *files_before,
                ))
            };
            (device, barcode.clone())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(slot: u32, capacity: Option<u64>) -> Scratch {
        Scratch {
            slot,
            barcode: format!("PB{slot:04}L6"),
            capacity,
            early_warning: 0,
            point: AppendPoint::default(),
        }
    }

    #[test]
    fn an_unknown_capacity_is_said_not_counted_as_zero() {
        let known = [scratch(1, Some(40 << 20)), scratch(2, Some(40 << 20))];
        assert_eq!(unknown_capacity("/dev/sg1", &known), None);
        let mixed = [scratch(1, Some(40 << 20)), scratch(2, None)];
        let note = unknown_capacity("/dev/sg1", &mixed).expect("one is unknown");
        assert!(
            note.contains("1 of the 2 scratch cartridges is unknown (PB0002L6"),
            "{note}"
        );
        assert!(note.contains("--changer /dev/sg1,size=S"), "{note}");
        assert!(!note.contains("0 bytes"), "{note}");
        // The refusal with a size counts only the known capacities.
        let refused = too_large(
            Failure::Plan(backup::PlanSetError::Plan(
                crate::plan::PlanError::DoesNotFit {
                    missing_bytes: 1 << 20,
                },
            )),
            &known,
        );
        let text = refused.to_string();
        assert!(
            text.contains("2 scratch cartridges hold together (40.00 MiB each, 80.00 MiB in all"),
            "{text}"
        );
    }
}
