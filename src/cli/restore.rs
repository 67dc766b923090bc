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
    let report = restore::run(&set, Action::Verify, &[])
        .map_err(|e| Failure::Data(format!("verify failed: {e}")))?;
    Ok(print(&set, &report, "verified", args.json))
}

fn print(set: &OpenSet, report: &Report, verb: &str, as_json: bool) -> i32 {
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let code = if report.ok() { EXIT_OK } else { EXIT_DATA };
    if as_json {
        let missing: Vec<_> = report
            .missing
            .iter()
            .map(|m| {
                json!({
                    "path": path_text(&m.path),
                    "ranges": m.ranges.iter().map(|(o, l, d)| json!({"offset": o, "length": l, "device": d})).collect::<Vec<_>>(),
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
            .map(|(o, l, d)| {
                format!(
                    "{o}..{} on device {d} ({})",
                    o + l,
                    path_text(&set.catalog.devices[*d as usize].path)
                )
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
