//! `pbio scan`: recover the records of a device with no usable catalog.
//! A device on which no record of a set is found at all (random bytes,
//! zeros, another program's data) is a failure (exit 3) naming it.

use clap::Args;
use serde_json::json;

use super::{parse_dev, CliResult, Failure, Outcome};
use crate::device::{self, DeviceSpec, Mode};
use crate::format::RecordKind;

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// The device to read record by record (its label and catalog may be missing or damaged).
    #[arg(long = "dev", value_parser = parse_dev)]
    pub dev: DeviceSpec,
    /// One JSON object per record, then a summary object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ScanArgs) -> CliResult {
    let dev = device::open(&args.dev, Mode::Read).map_err(Failure::DeviceToRead)?;
    super::show_notes(dev.as_ref());
    let set_id = crate::media::read_label(dev.as_ref())
        .ok()
        .map(|l| l.set_id);
    let report = crate::media::scan::scan(dev.as_ref(), set_id).map_err(|e| Failure::Restore {
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
        if args.json {
            outln!(
                "{}",
                json!({
                    "position": f.position, "kind": format!("{:?}", h.kind).to_lowercase(),
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
                format!("{:?}", h.kind).to_lowercase(),
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
        if args.json {
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
    if args.json {
        outln!(
            "{}",
            json!({"event": "summary", "set_id": set, "records": report.records.len(), "data_records": data,
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
            args.dev.path.display(),
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
