//! `pbio changer status|load|unload|inventory --changer C`: a tape
//! library's slots, drives and barcodes, moving cartridges, and what sets
//! each cartridge holds (read from its label).
//!
//! The changer is a SCSI medium changer (`/dev/sgN`) or an emulated library
//! (`vlib:DIR[,slots=N][,drives=D][,size=S]`, created on first use, whose
//! drives are `vtape:DIR/drive0`, ...). Slots count from 1, drives from 0,
//! as mtx(1) counts them.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::span::{in_drive, seen_on, wait_ready};
use super::{parse_dev, CliResult, Failure, Outcome};
use crate::device::changer::cache::{LabelCache, Seen};
use crate::device::changer::{self, Changer, Status};
use crate::device::{Access, DeviceSpec};
use crate::format::{Label, LabelState};
use crate::units::shown_name;

#[derive(Subcommand, Debug)]
pub enum ChangerCommand {
    /// Slots, drives and barcodes.
    Status(CommonArgs),
    /// Move the cartridge in SLOT into DRIVE.
    Load {
        /// The slot (from 1).
        slot: u32,
        /// The drive (from 0).
        drive: u32,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Move the cartridge in DRIVE back to the slot it came from (or the first empty one).
    Unload {
        /// The drive (from 0).
        drive: u32,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Rescan the library, then read every cartridge's label: which sets it holds. A cartridge that cannot be read where it is gets loaded into an empty drive and unloaded again; what was read goes to the label cache.
    Inventory(InventoryArgs),
}

#[derive(Args, Debug)]
pub struct CommonArgs {
    /// The library: a SCSI medium changer's generic node (/dev/sgN), or an emulated library vlib:DIR[,slots=N][,drives=D][,size=S][,move_ms=T] (created on first use; size= is then required).
    #[arg(long, value_name = "CHANGER")]
    pub changer: String,
    /// Machine-readable output: one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InventoryArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The tape node of drive 0, 1, ... in order (a real library; default: drives matched to /dev/nstN by serial number).
    #[arg(long = "dev", value_parser = parse_dev)]
    pub devs: Vec<DeviceSpec>,
    /// How long a drive may take to become ready after a load.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub ready_timeout: u64,
    /// Show what the label cache remembers of a cartridge that cannot be read in its slot instead of loading it (a cartridge the cache does not know is loaded).
    #[arg(long)]
    pub cached: bool,
}

pub fn run(command: ChangerCommand) -> CliResult {
    match command {
        ChangerCommand::Status(c) => {
            let mut changer = open(&c)?;
            let status = changer.status().map_err(Failure::Changer)?;
            show(changer.as_ref(), &status, None, c.json);
        }
        ChangerCommand::Load {
            slot,
            drive,
            common,
        } => {
            let mut changer = open(&common)?;
            changer.load(slot, drive).map_err(Failure::Changer)?;
            let status = changer.status().map_err(Failure::Changer)?;
            let d = status.drive(drive);
            let barcode = d.and_then(|d| d.barcode.clone());
            // Loaded by hand, it may be written through the drive: what
            // the cache says of it is no longer known.
            if let Some(b) = &barcode {
                let mut cache = LabelCache::load_unchecked(changer.name());
                cache.forget(b);
                let _ = cache.save();
            }
            if common.json {
                outln!(
                    "{}",
                    json!({"loaded": {"slot": slot, "drive": drive, "barcode": barcode,
                        "device": d.and_then(|d| d.device.as_ref()).map(|s| s.path.display().to_string())}})
                );
            } else {
                outln!(
                    "slot {slot} -> drive {drive}{}{}",
                    barcode
                        .map(|b| format!(": {}", shown_name(b.as_bytes())))
                        .unwrap_or_default(),
                    d.and_then(|d| d.device.as_ref())
                        .map(|s| format!(" (--dev {})", s.path.display()))
                        .unwrap_or_default()
                );
            }
        }
        ChangerCommand::Unload { drive, common } => {
            let mut changer = open(&common)?;
            let before = changer.status().map_err(Failure::Changer)?;
            let barcode = before.drive(drive).and_then(|d| d.barcode.clone());
            let slot = changer.unload(drive).map_err(Failure::Changer)?;
            if common.json {
                outln!(
                    "{}",
                    json!({"unloaded": {"drive": drive, "slot": slot, "barcode": barcode}})
                );
            } else {
                outln!(
                    "drive {drive} -> slot {slot}{}",
                    barcode
                        .map(|b| format!(": {}", shown_name(b.as_bytes())))
                        .unwrap_or_default()
                );
            }
        }
        ChangerCommand::Inventory(a) => inventory(a)?,
    }
    Ok(Outcome::Done)
}

fn open(c: &CommonArgs) -> Result<Box<dyn Changer>, Failure> {
    changer::open(&c.changer).map_err(Failure::Changer)
}

/// What a cartridge's label says.
enum Contents {
    Blank,
    /// A pbio label, and the set's catalog on the cartridge (entries and
    /// bytes) or why it is not there (the set was never finished).
    Set {
        label: Box<Label>,
        /// Err: why not, and whether it is a volume continued on the next.
        catalog: Result<(usize, u64), (String, bool)>,
    },
    /// Not a pbio cartridge, or unreadable: why.
    Unreadable(String),
    /// Not read (why).
    NotRead(String),
    /// Not read: what the label cache remembers (`inventory --cached`).
    Cached(Seen),
}

impl Contents {
    fn text(&self) -> String {
        match self {
            Contents::Blank => "blank".into(),
            Contents::Set { label, catalog } => format!(
                "set {} (device {} of {}, {})",
                label.set_id,
                label.device_index,
                label.device_count,
                match catalog {
                    Ok((entries, bytes)) => format!(
                        "complete: {entries} entries, {}",
                        crate::units::human_bytes(*bytes)
                    ),
                    Err((_, true)) =>
                        "continued: its catalog is on the set's last cartridges".into(),
                    Err((_, false)) => "incomplete: no catalog".into(),
                }
            ),
            Contents::Unreadable(why) => format!("no pbio label ({why})"),
            Contents::NotRead(why) => format!("not read: {why}"),
            Contents::Cached(seen) => format!("cached: {}", seen.summary()),
        }
    }

    fn json(&self) -> Value {
        match self {
            Contents::Blank => json!({"blank": true, "sets": []}),
            Contents::Set { label, catalog } => json!({"blank": false, "sets": [{
                "set_id": label.set_id.to_string(),
                "device_index": label.device_index,
                "device_count": label.device_count,
                "complete": catalog.is_ok(),
                "entries": catalog.as_ref().ok().map(|c| c.0),
                "size_bytes": catalog.as_ref().ok().map(|c| c.1),
                "catalog_error": catalog.as_ref().err().map(|e| &e.0),
                "continued": catalog.as_ref().err().is_some_and(|e| e.1),
                "created_unix_ns": label.created_unix_ns,
            }]}),
            Contents::Unreadable(why) => json!({"blank": false, "sets": [], "label_error": why}),
            Contents::NotRead(why) => json!({"sets": null, "not_read": why}),
            Contents::Cached(seen) => json!({"cached": true, "blank": *seen == Seen::Blank,
            "sets": match seen {
                Seen::Sets(sets) => sets.iter().map(|s| json!({"set_id": s.set_id.to_string(),
                    "complete": s.complete, "created_unix_ns": s.created_unix_ns})).collect(),
                _ => Vec::new(),
            }}),
        }
    }
}

/// The label of the cartridge `spec` reads, waiting up to `ready` for a
/// drive that was just loaded.
fn read_contents(spec: &DeviceSpec, ready: Duration) -> Contents {
    let dev = match wait_ready(spec, ready) {
        Ok(dev) => dev,
        Err(why) => return Contents::Unreadable(why),
    };
    if let Ok(st) = dev.tape_status() {
        if st.at_bot && st.at_eod {
            return Contents::Blank;
        }
    }
    let label = match crate::media::read_label(dev.as_ref()) {
        Ok(label) => label,
        Err(e) => return Contents::Unreadable(e.to_string()),
    };
    // A tape's label stays Writing (never rewritten): its catalog in tape
    // file 1 says the set is complete. A disk's label says so itself.
    let catalog = if dev.access() == Access::Random && label.state != LabelState::Complete {
        Err((
            "the label says the set is still being written".into(),
            false,
        ))
    } else {
        crate::media::read_catalog(dev.as_ref(), &label)
            .map(|c| {
                let c = c.catalog;
                (c.files.len(), c.files.iter().map(|f| f.size_bytes).sum())
            })
            .map_err(|e| {
                let continued = matches!(e, crate::media::MediaError::Continued { .. });
                (e.to_string(), continued)
            })
    };
    Contents::Set {
        label: Box::new(label),
        catalog,
    }
}

fn inventory(a: InventoryArgs) -> Result<(), Failure> {
    let mut changer = open(&a.common)?;
    let mut status = changer.inventory().map_err(Failure::Changer)?;
    for (d, spec) in status.drives.iter_mut().zip(&a.devs) {
        d.device = Some(spec.clone());
    }
    let ready = Duration::from_secs(a.ready_timeout);
    let mut cache = LabelCache::load(changer.name(), &status);
    // The label, and what goes to the cache.
    let read = |spec: &DeviceSpec| (read_contents(spec, ready), seen_on(spec));
    let mut slots = Vec::new();
    for s in &status.slots {
        if !s.full {
            slots.push(None);
            continue;
        }
        let cached = s.barcode.as_deref().and_then(|b| cache.get(b)).cloned();
        let free = status.drives.iter().find(|d| !d.full && d.device.is_some());
        let (contents, seen) = match (changer.cartridge_in_slot(s.number), cached, free) {
            (Some(spec), _, _) => read(&spec),
            (None, Some(seen), _) if a.cached => (Contents::Cached(seen), None),
            (None, _, Some(d)) => {
                let drive = (d.number, d.device.clone().expect("found with one"));
                in_drive(changer.as_mut(), s.number, &drive, ready, read)?
            }
            (None, _, None) => (
                Contents::NotRead(
                    "no empty drive with a known tape node (give --dev for each drive)".into(),
                ),
                None,
            ),
        };
        if let (Some(b), Some(seen)) = (&s.barcode, seen) {
            cache.observed(b, seen);
        }
        slots.push(Some(contents));
    }
    let drives = status
        .drives
        .iter()
        .map(|d| match (&d.device, d.full) {
            (_, false) => None,
            (Some(spec), true) => {
                let (contents, seen) = read(spec);
                if let (Some(b), Some(seen)) = (&d.barcode, seen) {
                    cache.observed(b, seen);
                }
                Some(contents)
            }
            (None, true) => Some(Contents::NotRead(
                "its tape node is not known (give --dev for each drive)".into(),
            )),
        })
        .collect::<Vec<_>>();
    if let Err(e) = cache.save() {
        errln!(
            "pbio: changer {}: label cache not saved: {e}",
            changer.name()
        );
    }
    show(
        changer.as_ref(),
        &status,
        Some((&slots, &drives)),
        a.common.json,
    );
    Ok(())
}

type Found<'a> = (&'a [Option<Contents>], &'a [Option<Contents>]);

fn show(changer: &dyn Changer, status: &Status, contents: Option<Found<'_>>, as_json: bool) {
    if as_json {
        let slots: Vec<Value> = status
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut v = json!({"slot": s.number, "full": s.full, "barcode": s.barcode, "import_export": s.import_export});
                if let Some(c) = of(contents.map(|c| c.0), i) {
                    merge(&mut v, c.json());
                }
                v
            })
            .collect();
        let drives: Vec<Value> = status
            .drives
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut v = json!({"drive": d.number, "full": d.full, "barcode": d.barcode,
                    "source_slot": d.source_slot, "serial": d.serial,
                    "device": d.device.as_ref().map(|s| s.path.display().to_string())});
                if let Some(c) = of(contents.map(|c| c.1), i) {
                    merge(&mut v, c.json());
                }
                v
            })
            .collect();
        outln!(
            "{}",
            json!({"changer": changer.name(), "description": status.description,
                "cartridges": status.cartridges(), "slots": slots, "drives": drives})
        );
        return;
    }
    outln!(
        "{} ({}): {} slots, {} drives, {} cartridges",
        changer.name(),
        status.description,
        status.slots.len(),
        status.drives.len(),
        status.cartridges()
    );
    let barcode = |full: bool, b: &Option<String>| match (full, b) {
        (false, _) => "empty".to_string(),
        (true, Some(b)) => shown_name(b.as_bytes()),
        (true, None) => "full (no barcode)".to_string(),
    };
    for (i, d) in status.drives.iter().enumerate() {
        let mut line = format!("drive {:>3}  {:<18}", d.number, barcode(d.full, &d.barcode));
        if let Some(from) = d.source_slot {
            line += &format!(" from slot {from}");
        }
        if let Some(dev) = &d.device {
            line += &format!("  --dev {}", dev.path.display());
        }
        if let Some(c) = of(contents.map(|c| c.1), i) {
            line += &format!("  {}", c.text());
        }
        outln!("{}", line.trim_end());
    }
    for (i, s) in status.slots.iter().enumerate() {
        let kind = if s.import_export { "mail" } else { "slot" };
        let mut line = format!(
            "{kind}  {:>3}  {:<18}",
            s.number,
            barcode(s.full, &s.barcode)
        );
        if let Some(c) = of(contents.map(|c| c.0), i) {
            line += &format!("  {}", c.text());
        }
        outln!("{}", line.trim_end());
    }
}

fn of(list: Option<&[Option<Contents>]>, i: usize) -> Option<&Contents> {
    list.and_then(|l| l.get(i)).and_then(Option::as_ref)
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}
