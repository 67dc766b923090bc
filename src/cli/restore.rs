//! `pbio restore` and `pbio verify`.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::{parse_dev, path_text, CliResult, Failure, EXIT_DATA, EXIT_OK};
use crate::device::DeviceSpec;
use crate::restore::{self, Action, OpenSet, Report};
use crate::units::human_bytes;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Devices of the set, in any order; any subset restores what it holds.
    #[arg(long = "dev", value_parser = parse_dev, required = true)]
    pub devs: Vec<DeviceSpec>,
    /// Directory to restore into (created if missing).
    #[arg(long)]
    pub to: PathBuf,
    /// Restore only these stored paths (and what is under them).
    #[arg(long)]
    pub only: Vec<PathBuf>,
    /// No catalog needed: read every record of the devices and restore each
    /// regular file that is complete on them (after a crash or a lost catalog).
    #[arg(long, conflicts_with = "only")]
    pub scan: bool,
    /// Machine-readable report: one JSON summary object (files, bytes, missing files with their byte ranges and devices, errors, ok).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Devices of the set, in any order; any subset verifies what it holds.
    #[arg(long = "dev", value_parser = parse_dev, required = true)]
    pub devs: Vec<DeviceSpec>,
    /// Machine-readable report: one JSON summary object (files, bytes, missing byte ranges, errors, ok).
    #[arg(long)]
    pub json: bool,
}

fn open(devs: &[DeviceSpec]) -> Result<OpenSet, Failure> {
    restore::open_set(devs).map_err(|e| match e {
        restore::RestoreError::Device(d) => Failure::Usage(d.to_string()),
        other => Failure::Data(other.to_string()),
    })
}

pub fn run_restore(args: RestoreArgs) -> CliResult {
    if args.scan {
        return run_scan_restore(&args);
    }
    let set = open(&args.devs)?;
    let only: Vec<Vec<u8>> = args
        .only
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    let report = restore::run(&set, Action::Restore { to: &args.to }, &only)
        .map_err(|e| Failure::Data(format!("restore failed: {e}")))?;
    Ok(print(&set, &report, "restored", args.json))
}

pub fn run_verify(args: VerifyArgs) -> CliResult {
    let set = open(&args.devs)?;
    let mut report = restore::run(&set, Action::Verify, &[])
        .map_err(|e| Failure::Data(format!("verify failed: {e}")))?;
    // Every device's own catalog must read back and agree, not only the one used.
    for (dev, label) in &set.devices {
        if label.state != crate::format::LabelState::Complete {
            continue;
        }
        match crate::engine::media::read_catalog(dev.as_ref(), label) {
            Ok(c) if c == set.catalog => {}
            Ok(_) => report.errors.push(format!(
                "device {}: its catalog differs from the set's",
                dev.path().display()
            )),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    Ok(print(&set, &report, "verified", args.json))
}

fn print(set: &OpenSet, report: &Report, verb: &str, as_json: bool) -> i32 {
    for why in &set.unreadable {
        eprintln!("pbio: left out an unreadable device: {why}");
    }
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let code = if report.ok() { EXIT_OK } else { EXIT_DATA };
    if as_json {
        let missing: Vec<_> = report
            .missing
            .iter()
            .map(|m| {
                json!({
                    "path": path_text(&m.path),
                    "ranges": m.ranges.iter().map(|&(o, l, d)| json!({"offset": o, "length": l, "device": (d != restore::NOWHERE).then_some(d)})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "event": "summary",
                "set_id": crate::engine::set_id_hex(&set.catalog.set_id),
                "files": report.files_restored,
                "payload_bytes": report.payload_bytes,
                "records": report.records,
                "seconds": secs,
                "mib_per_sec": report.payload_bytes as f64 / (1 << 20) as f64 / secs,
                "missing": missing,
                "errors": report.errors,
                "ok": report.ok(),
            })
        );
        return code;
    }
    println!(
        "set {}: {verb} {} entries, {} in {} records, {:.2} s ({:.1} MiB/s), from {} of {} devices",
        crate::engine::set_id_hex(&set.catalog.set_id),
        report.files_restored,
        human_bytes(report.payload_bytes),
        report.records,
        secs,
        report.payload_bytes as f64 / (1 << 20) as f64 / secs,
        set.devices.len(),
        set.catalog.devices.len(),
    );
    for m in &report.missing {
        let ranges: Vec<String> = m
            .ranges
            .iter()
            .map(|&(o, l, d)| match set.catalog.devices.get(d as usize) {
                Some(dev) => format!("{o}..{} on device {d} ({})", o + l, path_text(&dev.path)),
                None => format!(
                    "{o}..{} on no device (not written: the set is incomplete)",
                    o + l
                ),
            })
            .collect();
        eprintln!("missing: {}: {}", path_text(&m.path), ranges.join(", "));
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    if !report.missing.is_empty() {
        eprintln!(
            "{} files are incomplete on the given devices",
            report.missing.len()
        );
    }
    code
}

fn run_scan_restore(args: &RestoreArgs) -> CliResult {
    let mut devs = Vec::with_capacity(args.devs.len());
    for spec in &args.devs {
        devs.push(
            crate::device::open(spec, crate::device::Mode::Read)
                .map_err(|e| Failure::Usage(e.to_string()))?,
        );
    }
    let started = std::time::Instant::now();
    let report = restore::scan::restore_from_scan(&devs, &args.to)
        .map_err(|e| Failure::Data(format!("restore --scan failed: {e}")))?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let set = report
        .set_id
        .map(|s| crate::engine::set_id_hex(&s))
        .unwrap_or_else(|| "-".into());
    let code = if report.incomplete.is_empty() && report.bad_records == 0 {
        EXIT_OK
    } else {
        EXIT_DATA
    };
    if args.json {
        println!(
            "{}",
            json!({
                "event": "summary",
                "set_id": set,
                "files": report.restored.len(),
                "restored": report.restored.iter().map(|p| path_text(p)).collect::<Vec<_>>(),
                "payload_bytes": report.payload_bytes,
                "seconds": secs,
                "bad_records": report.bad_records,
                "incomplete": report.incomplete.iter().map(|i| json!({
                    "path": path_text(&i.path), "found_bytes": i.found_bytes,
                    "data_bytes": i.data_bytes, "why": i.why,
                })).collect::<Vec<_>>(),
                "ok": code == EXIT_OK,
            })
        );
        return Ok(code);
    }
    println!(
        "set {set}: restored {} complete files, {} from records alone, {:.2} s",
        report.restored.len(),
        human_bytes(report.payload_bytes),
        secs
    );
    for i in &report.incomplete {
        eprintln!(
            "incomplete: {}: {} of {} bytes found ({}); not restored",
            path_text(&i.path),
            i.found_bytes,
            i.data_bytes,
            i.why
        );
    }
    if report.bad_records > 0 {
        eprintln!("{} damaged records skipped", report.bad_records);
    }
    Ok(code)
}
