//! `pbio scrub`: read every stripe of a parity set, check every record
//! and the parity against the data, report per device; with `--repair`,
//! rewrite bad records in place and, with `--replace OLD=NEW`, rebuild a
//! lost device onto a new one (README "Parity").

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use super::{parse_dev, CliResult, Failure, Outcome};
use crate::device::{self, Device, DeviceSpec, Mode};
use crate::media::guard::Policy;
use crate::restore::repair::{repair, RepairReport, Replacement};
use crate::restore::scrub::{scrub, Member, ScrubReport};
use crate::restore::{self, OpenSet};

#[derive(Args, Debug)]
pub struct ScrubArgs {
    /// Devices of the set (any subset: what is not given counts as missing).
    #[arg(long = "dev", value_parser = parse_dev, required = true)]
    pub devs: Vec<DeviceSpec>,
    /// Rebuild what is bad or missing and write it: bad records of given devices in place; with --replace, every record of a lost device onto a new one.
    #[arg(long)]
    pub repair: bool,
    /// With --repair: OLD=NEW, OLD a device index of the set or the path given for it with --dev, NEW a blank device (PATH[,size=N]) that becomes device OLD of the set.
    #[arg(long, value_name = "OLD=NEW", requires = "repair")]
    pub replace: Option<String>,
    /// With --replace: write NEW even if it holds data (a pbio set, a filesystem).
    #[arg(long, requires = "replace")]
    pub force: bool,
    /// The key the set was written with (`backup --key`, or `--encrypt --key-file`): MACs are checked, an encrypted set is opened, and a repair seals the new label with it.
    #[arg(long, visible_alias = "key-file", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The passphrase of a set written with `backup --encrypt --passphrase-file`: the file's contents (one trailing newline dropped).
    #[arg(long = "passphrase-file", value_name = "FILE", conflicts_with = "key")]
    pub passphrase_file: Option<PathBuf>,
    /// Machine-readable report: one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ScrubArgs) -> CliResult {
    let key = super::key::load_optional(args.key.as_deref())?;
    super::key::load_passphrase(args.passphrase_file.as_deref())?;
    let set = restore::open_set(&args.devs, key.as_ref()).map_err(|error| Failure::Restore {
        doing: "scrub: ",
        error,
    })?;
    for (dev, _) in &set.devices {
        super::show_notes(dev.as_ref());
    }
    for e in &set.unreadable {
        crate::cli::stderr_line(format_args!("pbio: {e}"));
    }
    if set.catalog.parity.is_none() {
        return Err(Failure::Usage(format!(
            "set {} was written without --parity: scrub checks parity sets (use `pbio verify`)",
            set.catalog.set_id
        )));
    }
    // An encrypted set's MACs are keyed by its data key, opened above.
    let sealed = set.devices.iter().any(|(_, l)| l.seal.is_sealed());
    if set.keyed && key.is_none() && !sealed && args.repair {
        return Err(Failure::Usage(
            "the set is authenticated: give --key to repair it (the new records and label are sealed with it)".into(),
        ));
    }
    // The replacement is checked and opened before anything is read.
    let replacement = match &args.replace {
        None => None,
        Some(text) => Some(replacement(&set, &args, text)?),
    };
    let report = scrub(&set);
    if !args.repair {
        print(&report, None, args.json);
        return Ok(outcome(&report));
    }
    // In place: the given devices with bad records they can take back.
    let mut opened: Vec<(u32, Box<dyn Device>)> = Vec::new();
    for (dev, label) in &set.devices {
        let has_bad = report
            .bad
            .iter()
            .any(|b| b.device == label.device_index && b.rebuildable);
        let replaced = replacement
            .as_ref()
            .is_some_and(|r| r.0 == label.device_index);
        if has_bad && !replaced {
            let spec = spec_for(&args.devs, dev.path());
            let w = device::open(&spec, Mode::Write).map_err(Failure::DeviceToWrite)?;
            opened.push((label.device_index, w));
        }
    }
    let writable: HashMap<u32, &dyn Device> =
        opened.iter().map(|(i, d)| (*i, d.as_ref())).collect();
    let replace = replacement.as_ref().map(|(index, dev)| Replacement {
        index: *index,
        device: dev.as_ref(),
    });
    let (after, repaired) =
        repair(&set, &report, replace, &writable, key.as_ref()).map_err(|e| match e {
            restore::repair::RepairError::Media(m) => Failure::Data(format!("repair: {m}")),
            other => Failure::Usage(other.to_string()),
        })?;
    print(&report, Some((&after, &repaired)), args.json);
    // What is still bad after the repair: not on the replaced device, not
    // rewritten in place (a device not given, say).
    let left: Vec<_> = report
        .bad
        .iter()
        .filter(|b| {
            replacement.as_ref().is_none_or(|r| r.0 != b.device)
                && !repaired
                    .in_place
                    .iter()
                    .any(|p| p.0 == b.device && p.2 == b.offset)
        })
        .collect();
    let written = repaired.errors.is_empty()
        && after.stripes_lost == 0
        && replacement.is_none_or(|_| repaired.replacement_complete);
    Ok(if written && left.is_empty() {
        Outcome::Done
    } else if written && left.iter().all(|b| b.rebuildable) {
        Outcome::Degraded
    } else {
        Outcome::Incomplete
    })
}

/// 0 whole, 1 damage that can all be rebuilt, 3 something that cannot.
fn outcome(report: &ScrubReport) -> Outcome {
    if report.whole() {
        Outcome::Done
    } else if report.rebuildable() {
        Outcome::Degraded
    } else {
        Outcome::Incomplete
    }
}

/// The spec given with --dev for the device opened at `path`.
fn spec_for(devs: &[DeviceSpec], path: &Path) -> DeviceSpec {
    devs.iter()
        .find(|d| d.path == path)
        .cloned()
        .unwrap_or_else(|| DeviceSpec {
            path: path.to_path_buf(),
            ..devs[0].clone()
        })
}

/// `--replace OLD=NEW`: the index OLD names and NEW, checked by the
/// overwrite guard, opened for writing.
fn replacement(
    set: &OpenSet,
    args: &ScrubArgs,
    text: &str,
) -> Result<(u32, Box<dyn Device>), Failure> {
    let Some((old, new)) = text.split_once('=') else {
        return Err(Failure::Usage(format!(
            "--replace '{text}': expected OLD=NEW (a device index or path, and the new device)"
        )));
    };
    let count = set.catalog.devices.len();
    let index = match old.parse::<u32>() {
        Ok(i) => i,
        Err(_) => index_of(set, &args.devs, Path::new(old))?,
    };
    if index as usize >= count {
        return Err(Failure::Usage(format!(
            "--replace: the set has devices 0 to {}, not {index}",
            count - 1
        )));
    }
    let spec = DeviceSpec::parse(new).map_err(|e| Failure::Usage(e.to_string()))?;
    let same = |a: &Path, b: &Path| matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(a), Ok(b)) if a == b);
    if let Some(given) = args.devs.iter().find(|d| same(&d.path, &spec.path)) {
        return Err(Failure::Usage(format!(
            "--replace: the new device {} is also given with --dev ({}): give a blank device",
            spec.path.display(),
            given.path.display()
        )));
    }
    let policy = Policy {
        force: args.force,
        overwrite: Vec::new(),
    };
    super::backup::check_devices(std::slice::from_ref(&spec), &policy)?;
    let dev = device::open(&spec, Mode::Write).map_err(Failure::DeviceToWrite)?;
    if !crate::backup::parity::parity_capable(dev.as_ref()) {
        return Err(Failure::Usage(format!(
            "--replace: {} cannot hold a parity set's device (it must be readable at any offset: a file, block device or NBD export)",
            spec.path.display()
        )));
    }
    Ok((index, dev))
}

/// The device index of OLD given as a path: a given device with a
/// readable label, else the device the catalog lists at that path, else
/// the one device of the set that none given stands for.
fn index_of(set: &OpenSet, devs: &[DeviceSpec], old: &Path) -> Result<u32, Failure> {
    if let Some((_, l)) = set.devices.iter().find(|(d, _)| d.path() == old) {
        return Ok(l.device_index);
    }
    let raw = old.as_os_str().as_encoded_bytes();
    if let Some(i) = set.catalog.devices.iter().position(|d| d.path == raw) {
        return Ok(i as u32);
    }
    let absent: Vec<u32> = (0..set.catalog.devices.len() as u32)
        .filter(|i| !set.devices.iter().any(|(_, l)| l.device_index == *i))
        .filter(|&i| set.catalog.devices[i as usize].state != crate::format::DeviceState::Failed)
        .collect();
    if devs.iter().any(|d| d.path == old) && absent.len() == 1 {
        return Ok(absent[0]);
    }
    Err(Failure::Usage(format!(
        "--replace: {} is not a device of the set; give its device index (0 to {})",
        old.display(),
        set.catalog.devices.len() - 1
    )))
}

fn member(m: Member) -> &'static str {
    match m {
        Member::Data => "data",
        Member::Parity => "parity",
    }
}

fn print(report: &ScrubReport, repaired: Option<(&ScrubReport, &RepairReport)>, as_json: bool) {
    if as_json {
        let bad = |r: &ScrubReport| {
            r.bad
                .iter()
                .map(|b| {
                    json!({"device": b.device, "path": b.device_path, "offset": b.offset,
                    "stripe": b.stripe, "kind": member(b.member), "why": b.why,
                    "rebuildable": b.rebuildable})
                })
                .collect::<Vec<_>>()
        };
        let mut out = json!({
            "set": report.set_id,
            "m": report.m,
            "stripes": report.stripes,
            "stripes_damaged": report.stripes_damaged,
            "stripes_lost": report.stripes_lost,
            "stripes_short": report.stripes_short,
            "devices": report.devices.iter().map(|d| json!({
                "index": d.index, "path": d.path, "given": d.given,
                "data_records": d.data_records, "parity_records": d.parity_records,
                "bad_records": d.bad_records, "unprotected_records": d.unprotected_records,
            })).collect::<Vec<_>>(),
            "bad": bad(report),
            "bytes_read": report.bytes_read,
            "seconds": report.elapsed.as_secs_f64(),
            "whole": report.whole(),
            "rebuildable": report.rebuildable(),
        });
        if let Some((after, r)) = repaired {
            out["repair"] = json!({
                "replaced": r.replaced.as_ref().map(|(i, p)| json!({"index": i, "device": p})),
                "records_written": r.records_written,
                "media_bytes_written": r.media_bytes_written,
                "in_place": r.in_place.iter().map(|(i, p, o)| json!({"device": i, "path": p, "offset": o})).collect::<Vec<_>>(),
                "replacement_complete": r.replacement_complete,
                "errors": r.errors,
                "stripes": after.stripes,
                "stripes_lost": after.stripes_lost,
                "seconds": after.elapsed.as_secs_f64(),
            });
        }
        outln!("{out}");
        return;
    }
    outln!(
        "set {}: {} stripes (--parity {}), {} read in {:.1}s",
        report.set_id,
        report.stripes,
        report.m,
        crate::units::human_bytes(report.bytes_read),
        report.elapsed.as_secs_f64()
    );
    for d in &report.devices {
        outln!(
            "  device {} ({}): {} data + {} parity records, {} bad or missing{}{}",
            d.index,
            d.given.as_deref().unwrap_or("not given"),
            d.data_records,
            d.parity_records,
            d.bad_records,
            if d.unprotected_records > 0 {
                format!(", {} data records in no stripe", d.unprotected_records)
            } else {
                String::new()
            },
            if d.given.is_none() {
                format!(" (was {})", d.path)
            } else {
                String::new()
            }
        );
    }
    for b in report
        .bad
        .iter()
        .filter(|b| !b.why.starts_with("its device is not given"))
    {
        outln!(
            "  bad {} record: device {} ({}) offset {} stripe {}: {}{}",
            member(b.member),
            b.device,
            b.device_path,
            b.offset,
            b.stripe,
            b.why,
            if b.rebuildable {
                ""
            } else {
                " (cannot be rebuilt)"
            }
        );
    }
    let state = if report.whole() {
        "whole: every record checks".to_string()
    } else if report.rebuildable() {
        format!(
            "damaged but rebuildable: {} stripes with bad or missing records (pbio scrub --repair)",
            report.stripes_damaged
        )
    } else {
        format!(
            "NOT rebuildable: {} stripes have fewer good records than data records",
            report.stripes_lost
        )
    };
    outln!("set {}: {state}", report.set_id);
    if let Some((_, r)) = repaired {
        if let Some((i, p)) = &r.replaced {
            outln!(
                "repair: device {i} rebuilt onto {p}: {}",
                if r.replacement_complete {
                    "complete (catalog and label written)"
                } else {
                    "INCOMPLETE (label left Writing)"
                }
            );
        }
        outln!(
            "repair: {} records written ({}), {} in place",
            r.records_written,
            crate::units::human_bytes(r.media_bytes_written),
            r.in_place.len()
        );
        for e in &r.errors {
            errln!("pbio: repair: {e}");
        }
    }
}
