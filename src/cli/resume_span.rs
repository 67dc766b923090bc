//! `pbio backup --changer C --resume`: finish a set spanning cartridges
//! whose run was interrupted (backup::span with `Before`, backup::resume).
//!
//! 1. The drives are emptied and every cartridge's labels read (where it
//!    is when the library can, else loaded into the first drive): the
//!    interrupted set is the one with a volume not closed, or with no
//!    volume holding its catalog (exactly one; several are named).
//! 2. Each of its volumes is walked as `scan` walks a tape (backup::resume
//!    `walk`): its kept records, to the first that breaks the stream or
//!    belongs to a file changed since.
//! 3. A volume the interrupted run closed ("continued") whose records are
//!    all kept stays in its slot; any other volume of the set is written
//!    on after its kept records; the volumes no cartridge holds (blank when
//!    the run stopped) take scratch cartridges (blank, or every set on them
//!    older than `--retention`, or any with `--force`). What no kept
//!    record holds is planned over the volumes in order, each up to its
//!    planned fill; the rest of the scratch cartridges are spares.
//! 4. The spanning run writes it; the catalog lists kept and new records.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use serde_json::json;

use super::backup::{
    backup_config, backup_failed, outcome, print_report, with_progress, BackupArgs,
};
use super::progress::{DeviceInfo, Output, Reporter};
use super::span::{empty_drives, in_drive, remember_written, seen_of, READY};
use super::{prepare_on, CliResult, Failure};
use crate::backup::resume::{self, DeviceDurable, StreamEnd};
use crate::backup::span::{self, Before, Library, Volume};
use crate::backup::{BackupConfig, SetInput};
use crate::device::changer::cache::{LabelCache, Seen};
use crate::device::changer::{self, Changer};
use crate::device::{self, Device, DeviceSpec, Mode};
use crate::format::{SetId, HEADER_BYTES};
use crate::media::sets::{SetEnd, SetOnTape, TapeSet};
use crate::units::human_bytes;

/// Of a volume's usable bytes, the part the rest of the set is planned
/// to fill (as `backup --changer` plans a new set: the rest absorbs what
/// the estimate cannot know); the spares take what does not fit.
const PLANNED_FILL_PERCENT: u64 = 90;

/// What one cartridge holds, as read in its slot or through a drive.
#[derive(Debug)]
enum Holds {
    Blank,
    /// Not a pbio tape (or its first label cannot be read).
    Other,
    Sets(Vec<TapeSet>),
}

/// One cartridge in a storage slot.
#[derive(Debug)]
struct Cartridge {
    slot: u32,
    barcode: String,
    holds: Holds,
    /// None: not known (the drive reports no density code).
    capacity: Option<u64>,
    early_warning: u64,
}

/// What the cartridge `spec` reads holds, and its capacity.
fn look(spec: &DeviceSpec) -> (Holds, Option<u64>, u64) {
    let capacity = device::probe(spec).ok().map(|p| p.capacity_bytes);
    let early_warning = device::vtape::early_warning_bytes(spec).unwrap_or(0);
    let holds = match device::open(spec, Mode::Read) {
        Err(_) => Holds::Other,
        Ok(dev) if dev.tape_status().is_ok_and(|st| st.at_bot && st.at_eod) => Holds::Blank,
        Ok(dev) => match crate::media::sets::sets_on_tape(dev.as_ref()) {
            Ok(sets) if !sets.is_empty() => Holds::Sets(sets),
            _ => Holds::Other,
        },
    };
    (holds, capacity, early_warning)
}

/// Every cartridge in a storage slot, read where it is when the library
/// can, else through `drive`.
fn cartridges(
    changer: &mut dyn Changer,
    drive: &(u32, DeviceSpec),
) -> Result<Vec<Cartridge>, Failure> {
    let status = changer.status().map_err(Failure::Changer)?;
    let mut cache = LabelCache::load(changer.name(), &status);
    let mut out = Vec::new();
    for s in status.slots.iter().filter(|s| s.full && !s.import_export) {
        let barcode = s
            .barcode
            .clone()
            .unwrap_or_else(|| format!("slot{}", s.number));
        let (holds, capacity, early_warning) = match changer.cartridge_in_slot(s.number) {
            Some(spec) => look(&spec),
            None => in_drive(changer, s.number, drive, READY, look)?,
        };
        // What was read goes to the label cache (restore and verify read
        // it where the library cannot read labels in their slots).
        cache.observed(
            &barcode,
            match &holds {
                Holds::Blank => Seen::Blank,
                Holds::Other => Seen::Other,
                Holds::Sets(sets) => seen_of(sets),
            },
        );
        out.push(Cartridge {
            slot: s.number,
            barcode,
            holds,
            capacity,
            early_warning,
        });
    }
    if let Err(e) = cache.save() {
        errln!(
            "pbio: changer {}: label cache not saved: {e}",
            changer.name()
        );
    }
    Ok(out)
}

/// The interrupted set: the one set with a volume not closed, or whose
/// catalog no cartridge holds; when none is, the newest set.
fn interrupted(changer: &str, found: &[Cartridge]) -> Result<SetId, Failure> {
    let sets = || {
        found.iter().flat_map(|c| match &c.holds {
            Holds::Sets(sets) => sets.as_slice(),
            _ => &[],
        })
    };
    let mut ids: Vec<SetId> = Vec::new();
    for t in sets() {
        let open = matches!(t.end, SetEnd::Incomplete(_))
            || !sets().any(|u| u.label.set_id == t.label.set_id && u.catalog().is_some());
        let sealed = matches!(t.end, SetEnd::Sealed(_));
        if open && !sealed && !ids.contains(&t.label.set_id) {
            ids.push(t.label.set_id);
        }
    }
    match ids.as_slice() {
        [id] => Ok(*id),
        // Killed after its catalogs were written (before the drives were
        // unloaded): the newest set is finished again, as a resume of a
        // tape whose set is complete is (its records checked, nothing
        // written but what changed and its catalog).
        [] => {
            let newest = sets()
                .filter(|t| t.catalog().is_some())
                .max_by_key(|t| t.label.created_unix_ns)
                .ok_or_else(|| {
                    Failure::Usage(format!(
                        "--resume: changer {changer}: no cartridge holds a pbio set: nothing to resume"
                    ))
                })?;
            errln!(
                "pbio: --resume: changer {changer}: no set is interrupted; the newest, {} (created {}), is checked and finished again",
                newest.label.set_id,
                crate::media::guard::utc_text(newest.label.created_unix_ns / 1_000_000_000)
            );
            Ok(newest.label.set_id)
        }
        _ => Err(Failure::Usage(format!(
            "--resume: changer {changer}: several interrupted sets ({}): resume one at a time, the cartridges of the others moved out of the library",
            ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// A cartridge that is a volume of the set: its index in `found`, its
/// set's place on it and how that set ends.
struct OnCartridge {
    cartridge: usize,
    set: TapeSet,
    /// Sets after it on the cartridge (a continued volume appended to).
    sets_after: usize,
}

/// The volumes of `id` (index = volume number; None: no cartridge holds
/// it), refusing two cartridges with one volume number.
fn volumes_of(
    changer: &str,
    id: SetId,
    found: &[Cartridge],
) -> Result<Vec<Option<OnCartridge>>, Failure> {
    let mut volumes: Vec<Option<OnCartridge>> = Vec::new();
    let mut count = None;
    for (i, c) in found.iter().enumerate() {
        let Holds::Sets(sets) = &c.holds else {
            continue;
        };
        let Some(at) = sets.iter().position(|t| t.label.set_id == id) else {
            continue;
        };
        let label = &sets[at].label;
        let n = *count.get_or_insert(label.device_count);
        if label.device_count != n || label.device_index >= n {
            return Err(Failure::Data(format!(
                "--resume: changer {changer}: slot {} ({}) says it is volume {} of {} of set {id}, another cartridge {n} volumes",
                c.slot, c.barcode, label.device_index, label.device_count
            )));
        }
        volumes.resize_with(n as usize, || None);
        let v = label.device_index as usize;
        if let Some(other) = &volumes[v] {
            let o = &found[other.cartridge];
            return Err(Failure::Data(format!(
                "--resume: changer {changer}: slot {} ({}) and slot {} ({}) both say they are volume {v} of set {id}: take the wrong one out of the library",
                o.slot, o.barcode, c.slot, c.barcode
            )));
        }
        volumes[v] = Some(OnCartridge {
            cartridge: i,
            set: sets[at].clone(),
            sets_after: sets.len() - at - 1,
        });
    }
    Ok(volumes)
}

/// Whether a cartridge that holds nothing of the set may take one of its
/// blank volumes: blank, or (with `--retention`) every set on it closed
/// and older than that, or anything with `--force`.
fn scratch(c: &Cartridge, args: &BackupArgs) -> bool {
    match &c.holds {
        Holds::Blank => true,
        _ if args.force => true,
        Holds::Other => false,
        Holds::Sets(sets) => args.retention.is_some_and(|r| {
            sets.iter()
                .all(|t| t.complete() && super::append::younger_than(&t.label, r).is_none())
        }),
    }
}

/// The walk of one volume's kept records, on `spec` (its cartridge).
fn walk_on(
    spec: &DeviceSpec,
    set: &TapeSet,
    input: &SetInput,
    config: &BackupConfig,
) -> Result<DeviceDurable, Failure> {
    let dev = device::open(spec, Mode::Read).map_err(Failure::DeviceToRead)?;
    let dev: Box<dyn Device> = if set.files_before > 0 {
        Box::new(SetOnTape::new(dev, set.files_before))
    } else {
        dev
    };
    resume::walk(dev.as_ref(), set.label, input, config).map_err(|e| Failure::Usage(e.to_string()))
}

/// The payload bytes a volume is planned to take: its usable bytes
/// (capacity less the catalog's reserve and what it holds) filled to
/// `fill_percent`, less a record header per record.
fn room(capacity: u64, reserve: u64, held: u64, fill_percent: u64, payload_max: u64) -> u64 {
    let media = (capacity.saturating_sub(reserve) * fill_percent / 100)
        .saturating_sub(HEADER_BYTES as u64 + held);
    media / (payload_max + HEADER_BYTES as u64) * payload_max
}

pub fn run(args: BackupArgs) -> CliResult {
    let text = args.set.changer.clone().expect("run only with --changer");
    let mac_key = super::key::load_optional(args.key.as_deref())?;
    let mut changer = changer::open(&text).map_err(Failure::Changer)?;
    let drives = empty_drives(changer.as_mut())?;
    let found = cartridges(changer.as_mut(), &drives[0])?;
    let id = interrupted(&text, &found)?;
    let on = volumes_of(&text, id, &found)?;
    let first = on.iter().flatten().next().expect("the set was found");
    let (created_unix_ns, count) = (first.set.label.created_unix_ns, on.len());
    // The set planned over its volumes (for the catalog's reserve and the
    // walk's view of the sources); what is written is what is missing.
    let volume_capacity = on
        .iter()
        .flatten()
        .find_map(|v| found[v.cartridge].capacity)
        .unwrap_or(u64::MAX >> 8);
    let mut set = args.set.clone();
    set.changer = None;
    set.devs = Vec::new();
    let planned_on = (0..count)
        .map(|v| (format!("volume{v}"), volume_capacity, None))
        .collect();
    let prepared = prepare_on(&set, Some(planned_on))?;
    super::key::check_since_encrypted(args.encrypt, prepared.since.as_ref())?;
    let (events_tx, events_rx) = crossbeam_channel::unbounded();
    let mut config = backup_config(&args, prepared.reserve_bytes, events_tx, mac_key, None);
    config.set_id = id;
    config.created_unix_ns = created_unix_ns;
    for v in on.iter().flatten() {
        let c = &found[v.cartridge];
        let name = format!("{} (slot {})", c.barcode, c.slot);
        resume::check_volume_label(&v.set.label, &config, id, &name)
            .map_err(|e| Failure::Usage(e.to_string()))?;
    }
    let input = SetInput {
        entries: prepared.entries,
        plan: prepared.plan,
        since: prepared.since,
    };
    // Each volume's kept records, walked where it is or in the first drive.
    let mut walked: Vec<DeviceDurable> = Vec::with_capacity(count);
    for v in &on {
        let Some(v) = v else {
            walked.push(DeviceDurable::blank());
            continue;
        };
        let c = &found[v.cartridge];
        let d = match changer.cartridge_in_slot(c.slot) {
            Some(spec) => walk_on(&spec, &v.set, &input, &config)?,
            None => in_drive(changer.as_mut(), c.slot, &drives[0], READY, |spec| {
                walk_on(spec, &v.set, &input, &config)
            })??,
        };
        walked.push(d);
    }
    let durable = resume::assemble(id, created_unix_ns, walked);
    // Closed volumes with every record kept stay; the others are written on.
    let mut before: Vec<Before> = Vec::with_capacity(count);
    for (v, d) in on.iter().zip(durable.devices.iter()) {
        let d = d.clone();
        before.push(match v {
            None => Before::Blank,
            Some(v) if matches!(v.set.end, SetEnd::Continued) && d.end == StreamEnd::Clean => {
                Before::Closed(d)
            }
            Some(v) if v.sets_after > 0 => {
                let c = &found[v.cartridge];
                return Err(Failure::Usage(format!(
                    "--resume: slot {} ({}): volume of set {id} must be written on, but {} later sets follow it on the cartridge: run the backup again with --overwrite {id}",
                    c.slot, c.barcode, v.sets_after
                )));
            }
            Some(_) => Before::Open(d),
        });
    }
    // Scratch cartridges for the volumes no cartridge holds, in slot order.
    let mut spare = found
        .iter()
        .enumerate()
        .filter(|(i, c)| !on.iter().flatten().any(|v| v.cartridge == *i) && scratch(c, &args));
    let mut volumes: Vec<Volume> = Vec::with_capacity(count);
    let mut capacities: Vec<Option<u64>> = Vec::with_capacity(count);
    for (v, b) in on.iter().zip(before.iter_mut()) {
        let c = match v {
            Some(v) => Some(&found[v.cartridge]),
            None => match spare.next() {
                Some((_, c)) => Some(c),
                None => {
                    // No cartridge left for it: listed empty, as a spare
                    // the run did not need.
                    *b = Before::Closed(DeviceDurable::blank());
                    None
                }
            },
        };
        capacities.push(c.and_then(|c| c.capacity));
        volumes.push(Volume {
            slot: c.map_or(0, |c| c.slot),
            barcode: c.map_or_else(|| "-".to_string(), |c| c.barcode.clone()),
            capacity_bytes: c.and_then(|c| c.capacity).unwrap_or(0),
            files_before: v.as_ref().map_or(0, |v| v.set.files_before),
            early_warning_bytes: c.map_or(0, |c| c.early_warning),
        });
    }
    // A set whose every byte is kept still needs its catalog written: on
    // its last volume, written on again.
    let work_left = resume::plan_volumes(&input, &durable, &vec![Some(u64::MAX); count], &config)
        .0
        .len();
    if work_left == 0 && !before.iter().any(|b| matches!(b, Before::Open(_))) {
        if let Some(last) = before
            .iter()
            .rposition(|b| matches!(b, Before::Closed(d) if d.label.is_some()))
        {
            let Before::Closed(d) = std::mem::replace(&mut before[last], Before::Blank) else {
                unreachable!("found above")
            };
            before[last] = Before::Open(d);
        }
    }
    let payload_max = (1u64 << 19).min(config.chunk_bytes as u64);
    // Each volume's capacity before its early-warning zone.
    let capacities: Vec<Option<u64>> = capacities
        .iter()
        .zip(&volumes)
        .map(|(c, v)| c.map(|c| c.saturating_sub(v.early_warning_bytes)))
        .collect();
    let rooms = |fill: u64| -> Vec<Option<u64>> {
        before
            .iter()
            .zip(&capacities)
            .map(|(b, capacity)| match b {
                Before::Closed(_) => None,
                Before::Open(d) => Some(capacity.map_or(u64::MAX, |c| {
                    room(c, config.reserve_bytes, d.media_bytes(), fill, payload_max)
                })),
                Before::Blank => Some(capacity.map_or(u64::MAX, |c| {
                    room(c, config.reserve_bytes, 0, fill, payload_max)
                })),
            })
            .collect()
    };
    let (mut work, mut unplaced) =
        resume::plan_volumes(&input, &durable, &rooms(PLANNED_FILL_PERCENT), &config);
    if unplaced > 0 {
        (work, unplaced) = resume::plan_volumes(&input, &durable, &rooms(100), &config);
    }
    if unplaced > 0 {
        return Err(Failure::Usage(format!(
            "--resume: changer {text}: the rest of set {id} needs {} more than its volumes and the scratch cartridges hold: nothing was written (add scratch cartridges)",
            human_bytes(unplaced)
        )));
    }
    // The volumes with work or to close come first; the blank ones after
    // them are spares.
    let planned = before
        .iter()
        .enumerate()
        .filter(|(v, b)| {
            matches!(b, Before::Open(_)) || work.iter().any(|(w, _)| *w as usize == *v)
        })
        .map(|(v, _)| v + 1)
        .max()
        .unwrap_or(0)
        .max(1);
    let json = args.set.json;
    let names: Vec<String> = volumes.iter().map(|v| v.barcode.clone()).collect();
    super::resume::show_durable(&input, &durable, &names, json);
    let infos: Vec<DeviceInfo> = volumes
        .iter()
        .enumerate()
        .map(|(i, v)| DeviceInfo {
            path: v.barcode.clone(),
            planned_bytes: work
                .iter()
                .filter(|(d, _)| *d as usize == i)
                .map(|(_, w)| w.length)
                .sum(),
            capacity_bytes: v.capacity_bytes,
            rate_bytes_per_sec: None,
        })
        .collect();
    let mut reporter = Reporter::new(
        Output::choose(json, args.json_interval),
        infos,
        std::io::stdout(),
    );
    reporter.start(&id.to_string(), input.entries.len(), work.len());
    let kept_records: u64 = durable.devices.iter().map(|d| d.records.len() as u64).sum();
    let kept_payload_bytes: u64 = durable
        .devices
        .iter()
        .flat_map(|d| &d.records)
        .map(|k| k.record.payload_bytes as u64)
        .sum();
    let changed: Vec<Vec<u8>> = durable
        .changed
        .iter()
        .map(|&f| input.entries.at(f as usize).path)
        .collect();
    let changer = Mutex::new(changer);
    let library = Library {
        changer: &changer,
        drives,
        volumes,
        planned,
        before,
    };
    let progress: Vec<AtomicU64> = library.volumes.iter().map(|_| AtomicU64::new(0)).collect();
    let result = with_progress(reporter, &progress, events_rx, |progress| {
        span::run_spanning(&input, &library, &config, Some(work), progress)
    });
    let written = result
        .as_ref()
        .ok()
        .map(|(report, spanned)| (outcome(report), spanned.drive_of.as_slice()));
    remember_written(&changer, &library.volumes, written, &config);
    let (backup, spanned) = result.map_err(|e| backup_failed(e, json))?;
    let outcome = outcome(&backup);
    let written_payload_bytes: u64 = backup.devices.iter().map(|d| d.stats.payload_bytes).sum();
    let r = resume::ResumeReport {
        backup,
        changed,
        kept_records,
        kept_payload_bytes,
        written_payload_bytes,
    };
    let used: Vec<&str> = library
        .volumes
        .iter()
        .zip(&library.before)
        .zip(&spanned.drive_of)
        .filter(|((_, b), drive)| {
            drive.is_some() || matches!(b, Before::Closed(d) if d.label.is_some())
        })
        .map(|((v, _), _)| v.barcode.as_str())
        .collect();
    if json {
        let mut finished = super::resume::finished_json(&r, outcome);
        finished["cartridges"] = json!(used);
        finished["loads"] = json!(spanned.loads);
        finished["swap_seconds"] = json!(spanned.swap_time.as_secs_f64());
        outln!("{finished}");
    } else {
        outln!("{}", super::resume::resumed_line(&r));
        outln!(
            "changer {text}: {} cartridges ({}), {} loads, {:.1} s between cartridges",
            used.len(),
            used.join(" "),
            spanned.loads,
            spanned.swap_time.as_secs_f64(),
        );
    }
    print_report(&r.backup, json);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_counts_reserve_fill_and_record_headers() {
        let mib = 1u64 << 20;
        // 40 MiB, 1 MiB reserve, 90 %: 35.1 MiB less the label, in
        // whole 512 KiB records each with its 4 KiB header.
        let r = room(40 * mib, mib, 0, 90, 512 << 10);
        assert_eq!(r % (512 << 10), 0);
        assert!(r <= 35 * mib && r >= 34 * mib, "{r}");
        // What a volume holds already comes off.
        assert_eq!(room(40 * mib, mib, 40 * mib, 90, 512 << 10), 0);
    }
}
