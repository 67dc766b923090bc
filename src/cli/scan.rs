//! `pbio scan`: recover the records of a device with no usable catalog.
//! A device on which no record of a set is found at all (random bytes,
//! zeros, another program's data) is a failure (exit 3) naming it.

use clap::Args;
use serde_json::json;

use super::{parse_dev, CliResult, Failure, Outcome};
use crate::device::{self, Access, Device, DeviceSpec, Mode};
use crate::format::RecordKind;

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// The device to read record by record (its label and catalog may be missing or damaged). A tape holding several sets (`backup --append`) is scanned set by set.
    #[arg(long = "dev", value_parser = parse_dev, required_unless_present = "changer")]
    pub dev: Option<DeviceSpec>,
    #[command(flatten)]
    pub library: super::LibraryArgs,
    /// One JSON object per record, then a summary object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ScanArgs) -> CliResult {
    let devices = match (&args.dev, &args.library.changer) {
        (Some(spec), _) => {
            let dev = device::open(spec, Mode::Read).map_err(Failure::DeviceToRead)?;
            super::show_notes(dev.as_ref());
            vec![dev]
        }
        (None, Some(text)) => super::span::library_cartridges(text, &args.library.drives)?,
        (None, None) => unreachable!("clap requires --dev or --changer"),
    };
    let mut worst = Outcome::Done;
    for dev in devices {
        let name = dev.path().display().to_string();
        dev.attach().map_err(|error| {
            Failure::Data(format!(
                "{name}: cannot load the cartridge to scan it: {error}"
            ))
        })?;
        if args.library.changer.is_some() && blank(dev.as_ref()) {
            errln!("pbio: {name}: blank, nothing to scan");
            dev.detach();
            continue;
        }
        let scanned = scan_sets(dev.as_ref(), &name, args.json);
        dev.detach();
        let outcome = scanned?;
        if outcome.code() > worst.code() {
            worst = outcome;
        }
    }
    Ok(worst)
}

/// A cartridge with nothing recorded: its first read finds the end of
/// data (st reads 0 bytes, or reports the blank check as an error).
fn blank(dev: &dyn Device) -> bool {
    use crate::format::FormatError;
    use crate::media::MediaError;
    matches!(
        crate::media::read_label(dev),
        Err(MediaError::Io { .. })
            | Err(MediaError::Format {
                error: FormatError::Short { have: 0, .. },
                ..
            })
    )
}

/// Scan `dev`: a tape holding several sets set by set (each through its
/// view, positions from its label), anything else from its start.
fn scan_sets(dev: &dyn Device, name: &str, json: bool) -> CliResult {
    let starts: Vec<u32> = if dev.access() == Access::Sequential {
        crate::media::sets::sets_on_tape(dev)
            .ok()
            .map(|sets| sets.iter().map(|s| s.files_before).collect())
            .filter(|v: &Vec<u32>| !v.is_empty())
            .unwrap_or_else(|| vec![0])
    } else {
        vec![0]
    };
    let mut worst = Outcome::Done;
    for files_before in starts {
        if !json {
            outln!("{name}:");
        }
        let view = crate::media::sets::SetOnTape::new(dev, files_before);
        let outcome = scan_one(if files_before == 0 { dev } else { &view }, name, json)?;
        if outcome.code() > worst.code() {
            worst = outcome;
        }
    }
    Ok(worst)
}

/// Scan one set's records on `dev` (from its label on).
fn scan_one(dev: &dyn Device, name: &str, json: bool) -> CliResult {
    let set_id = crate::media::read_label(dev).ok().map(|l| l.set_id);
    let report = crate::media::scan::scan(dev, set_id).map_err(|e| Failure::Restore {
        doing: "",
        error: e.into(),
    })?;
    let mut data = 0u64;
    let mut bad_payloads = 0u64;
    for f in &report.records {
        let h = &f.header;
        if h.kind == RecordKind::Data {
            data += 1;
        }
        if !f.payload_ok {
            bad_payloads += 1;
        }
        let kind = format!("{:?}", h.kind).to_lowercase();
        if json {
            outln!(
                "{}",
                json!({
                    "position": f.position, "kind": kind,
                    "sequence": h.sequence, "file_id": h.file_id, "segment_id": h.segment_id,
                    "file_offset": h.file_offset, "payload_bytes": h.payload_bytes,
                    "file_size": h.file_size, "payload_ok": f.payload_ok,
                    "codec": format!("{:?}", h.transform.codec).to_lowercase(),
                    "stored_bytes": h.stored_len(),
                })
            );
        } else {
            outln!(
                "{:>12} {:<7} seq {:>8} file {:>8} offset {:>12} len {:>8}{}",
                f.position,
                kind,
                h.sequence,
                h.file_id,
                h.file_offset,
                h.payload_bytes,
                if f.payload_ok {
                    ""
                } else {
                    "  PAYLOAD CRC MISMATCH"
                }
            );
        }
    }
    // Parity records (`--parity`): listed and counted, never data.
    let mut bad_parity = 0u64;
    for p in &report.parity {
        let h = &p.header;
        if !p.payload_ok {
            bad_parity += 1;
        }
        if json {
            outln!(
                "{}",
                json!({
                    "position": p.position, "kind": "parity", "sequence": h.sequence,
                    "stripe_id": h.stripe_id, "stripe_position": h.position, "k": h.k(), "m": h.m(),
                    "members": h.members, "shard_bytes": h.shard_bytes, "payload_ok": p.payload_ok,
                })
            );
        } else {
            outln!(
                "{:>12} {:<7} seq {:>8} stripe {:>8} position {}/{}+{} len {:>8}{}",
                p.position,
                "parity",
                h.sequence,
                h.stripe_id,
                h.position,
                h.k(),
                h.m(),
                h.shard_bytes,
                if p.payload_ok {
                    ""
                } else {
                    "  PAYLOAD CRC MISMATCH"
                }
            );
        }
    }
    let set = report
        .set_id
        .map(|s| s.to_string())
        .unwrap_or_else(|| "-".into());
    if json {
        outln!(
            "{}",
            json!({"event": "summary", "device": name, "set_id": set, "records": report.records.len(), "data_records": data,
                   "parity_records": report.parity.len(), "bad_parity_payloads": bad_parity,
                   "bad_payloads": bad_payloads, "bad_blocks": report.bad_blocks, "end_found": report.end_found})
        );
    } else {
        outln!(
            "set {set}: {} records ({data} data), {bad_payloads} with bad payloads, {} parity records ({bad_parity} with bad payloads), {} unreadable blocks skipped, end record {}",
            report.records.len(),
            report.parity.len(),
            report.bad_blocks,
            if report.end_found { "found" } else { "not found" }
        );
    }
    if report.records.is_empty() && report.parity.is_empty() && !report.end_found {
        return Err(Failure::Data(format!(
            "no pbio record found on {}: {} blocks read{}",
            name,
            report.bad_blocks,
            if set_id.is_some() {
                format!(" (its label names set {set}, but no record of it follows)")
            } else {
                String::new()
            }
        )));
    }
    Ok(if bad_payloads == 0 && bad_parity == 0 {
        Outcome::Done
    } else {
        Outcome::Incomplete
    })
}
