//! How a backup ended, shown: the exit outcome from the report, the
//! per-device table (or the JSON summary), warnings and compression.

use serde_json::json;

use super::{path_text, Outcome};
use crate::backup::{self, DeviceEnd};
use crate::units::{human_bytes, shown_line, shown_name};

/// Incomplete (3) when part of the set is not on any device, or a device that did not
/// fail has no durable catalog or final label (the set is incomplete); 1
/// Degraded (1) when a device failed (the survivors hold everything) or a file changed
/// while it was read (the set is complete, but that file's copy may be
/// inconsistent); Done (0) otherwise.
pub fn outcome(report: &backup::BackupReport) -> Outcome {
    if !report.complete() {
        Outcome::Incomplete
    } else if report.degraded() || !report.changed.is_empty() {
        Outcome::Degraded
    } else {
        Outcome::Done
    }
}

/// The `--json` line that ends a backup: `finished`, with the outcome,
/// the set id, the payload and missing bytes and the time taken.
pub fn finished_json(report: &backup::BackupReport, outcome: Outcome) -> serde_json::Value {
    let total: u64 = report.devices.iter().map(|d| d.stats.payload_bytes).sum();
    json!({
        "event": "finished",
        "ok": report.complete(),
        "exit_code": outcome.code(),
        "set_id": report.set_id.to_string(),
        "payload_bytes": total,
        "missing_bytes": report.missing_bytes(),
        "seconds": report.elapsed.as_secs_f64(),
    })
}

fn state_name(end: DeviceEnd) -> &'static str {
    match end {
        DeviceEnd::Complete => "complete",
        DeviceEnd::Full => "full",
        DeviceEnd::Failed => "failed",
    }
}

/// How a device ended, as the summary shows it: never "complete" (nor
/// "full") when its catalog or final label is not durable.
fn device_state(d: &backup::DeviceReport) -> &'static str {
    if d.catalog_missing() {
        "incomplete"
    } else {
        state_name(d.end)
    }
}

/// Failures, full devices and missing data go to stderr in every output mode.
fn print_warnings(report: &backup::BackupReport) {
    for d in &report.devices {
        if let Some(error) = &d.error {
            errln!(
                "pbio: device {} {}: {}; {} of its work went to the other devices",
                d.path,
                state_name(d.end),
                shown_line(&error.to_string()),
                human_bytes(d.redirected_bytes)
            );
        }
        if let Some(error) = &d.catalog_error {
            errln!(
                "pbio: device {}: its catalog and final label are not durably written: {}",
                d.path,
                shown_line(&error.to_string())
            );
        }
    }
    let no_catalog = report.catalogs_missing();
    if !no_catalog.is_empty() {
        let names: Vec<&str> = no_catalog.iter().map(|d| d.path.as_str()).collect();
        errln!(
            "pbio: the set is INCOMPLETE: {} without a durable catalog (its label is not complete; a restore needs another device's catalog)",
            names.join(", ")
        );
    }
    for (path, why) in &report.unreadable {
        errln!(
            "pbio: source {} could not be opened when its turn came ({}): its data is not in the set",
            shown_name(path),
            shown_line(&why.to_string())
        );
    }
    if !report.unplaced.is_empty() {
        let short_of_room = report
            .unplaced
            .iter()
            .any(|(path, _, _)| !report.unreadable.iter().any(|(p, _)| p == path));
        let why = match (report.unreadable.is_empty(), short_of_room) {
            (true, _) => "not enough surviving capacity",
            (false, false) => "sources that could not be opened",
            (false, true) => "sources that could not be opened, and not enough surviving capacity",
        };
        errln!(
            "pbio: the set is INCOMPLETE: {} bytes could not be written to any device ({why}):",
            report.missing_bytes()
        );
        for (path, offset, length) in report.unplaced.iter().take(20) {
            errln!(
                "  {}: bytes {offset}..{}",
                shown_name(path),
                offset + length
            );
        }
        if report.unplaced.len() > 20 {
            errln!("  ... and {} more ranges", report.unplaced.len() - 20);
        }
    } else if report.degraded() && no_catalog.is_empty() {
        errln!("pbio: set complete on the surviving devices (degraded)");
    }
    for warning in &report.parity.warnings {
        errln!("pbio: warning: --parity {}: {warning}", report.parity.m);
    }
    for (path, what) in &report.changed {
        errln!(
            "pbio: warning: {} changed while it was being backed up ({}): its copy may be inconsistent",
            shown_name(path),
            shown_line(&what.to_string())
        );
    }
}

/// The end-of-run summary: per device payload bytes, records, time, MiB/s
/// and how it ended; the total; the set id. Warnings (failed or full
/// devices, missing data) go to stderr first, in every mode.
pub fn print_report(report: &backup::BackupReport, as_json: bool) {
    print_warnings(report);
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let total: u64 = report.devices.iter().map(|d| d.stats.payload_bytes).sum();
    let records: u64 = report.devices.iter().map(|d| d.stats.records).sum();
    let mib_s = |bytes: u64, secs: f64| bytes as f64 / (1 << 20) as f64 / secs.max(1e-9);
    if as_json {
        let devices: Vec<_> = report
            .devices
            .iter()
            .map(|d| {
                let s = &d.stats;
                json!({
                    "path": d.path,
                    "payload_bytes": s.payload_bytes,
                    "media_bytes": s.media_bytes,
                    "records": s.records,
                    "seconds": s.elapsed.as_secs_f64(),
                    "mib_per_sec": mib_s(s.payload_bytes, s.elapsed.as_secs_f64()),
                    "payload_bytes_zero_copy": s.payload_bytes_zero_copy,
                    "payload_bytes_in_place": s.payload_bytes_in_place,
                    "reads_direct": s.reads_direct,
                    "reads_buffered": s.reads_buffered,
                    "short_reads": s.short_reads,
                    "short_writes": s.short_writes,
                    "retries": s.retries,
                    "underruns": s.underruns,
                    "reconnects": s.reconnects,
                    "zero_filled_bytes": s.zero_filled_bytes,
                    "underrun_ms": s.underrun_time.as_secs_f64() * 1000.0,
                    "compress_cpu_seconds": s.transform_cpu.as_secs_f64(),
                    "compress_wait_seconds": s.transform_wait.as_secs_f64(),
                    "data_end": d.data_end,
                    "catalog_end": d.catalog_end,
                    "catalog_error": d.catalog_error.as_ref().map(ToString::to_string),
                    "state": device_state(d),
                    "error": d.error.as_ref().map(ToString::to_string),
                    "redirected_bytes": d.redirected_bytes,
                })
            })
            .collect();
        outln!(
            "{}",
            json!({
                "event": "summary",
                "set_id": report.set_id.to_string(),
                "files": report.files,
                "segments": report.segments,
                "payload_bytes": total,
                "records": records,
                "seconds": secs,
                "mib_per_sec": mib_s(total, secs),
                "devices": devices,
                "missing_bytes": report.missing_bytes(),
                "complete": report.complete(),
                "devices_without_catalog": report.catalogs_missing().iter().map(|d| d.path.as_str()).collect::<Vec<_>>(),
                "changed": report.changed.iter().map(|(p, w)| json!({"path": path_text(p), "what": w.to_string()})).collect::<Vec<_>>(),
                "unplaced": report.unplaced.iter().map(|(p, o, l)| json!({"path": path_text(p), "offset": o, "length": l})).collect::<Vec<_>>(),
                "unreadable": report.unreadable.iter().map(|(p, e)| json!({"path": path_text(p), "error": e.to_string()})).collect::<Vec<_>>(),
                "parity": json!({
                    "m": report.parity.m,
                    "stripes": report.parity.stripes,
                    "records": report.parity.records,
                    "payload_bytes": report.parity.payload_bytes,
                    "inline_stripes": report.parity.inline_stripes,
                    "read_back_bytes": report.parity.read_back_bytes,
                    "warnings": report.parity.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "seconds": report.parity.elapsed.as_secs_f64(),
                }),
                "exit_code": outcome(report).code(),
            })
        );
        return;
    }
    outln!(
        "set {}: {} entries, {} segments",
        report.set_id,
        report.files,
        report.segments,
    );
    if report.parity.m > 0 {
        outln!(
            "  parity {}: {} stripes ({} while writing), {} parity records, {}, {} read back, {:.2} s after the data",
            report.parity.m,
            report.parity.stripes,
            report.parity.inline_stripes,
            report.parity.records,
            human_bytes(report.parity.payload_bytes),
            human_bytes(report.parity.read_back_bytes),
            report.parity.elapsed.as_secs_f64(),
        );
    }
    let devices_text = match report.devices.len() {
        1 => "1 device".to_string(),
        n => format!("{n} devices"),
    };
    let path_width = report
        .devices
        .iter()
        .map(|d| d.path.chars().count())
        .chain([devices_text.len()])
        .max()
        .unwrap_or(0)
        .min(48);
    outln!(
        "  {:>5}  {:<path_width$}  {:>12}  {:>8}  {:>8}  {:>9}  state",
        "dev",
        "path",
        "payload",
        "records",
        "time",
        "MiB/s"
    );
    for (i, d) in report.devices.iter().enumerate() {
        let s = &d.stats;
        let mut state = match (&d.error, &d.catalog_error) {
            (Some(e), _) => format!("{} ({})", device_state(d), shown_line(&e.to_string())),
            (None, Some(e)) => format!(
                "{} (no catalog: {})",
                device_state(d),
                shown_line(&e.to_string())
            ),
            (None, None) => device_state(d).to_string(),
        };
        if s.reconnects > 0 {
            state.push_str(&format!(
                " ({} reconnect{})",
                s.reconnects,
                if s.reconnects == 1 { "" } else { "s" }
            ));
        }
        outln!(
            "  {:>5}  {:<path_width$}  {:>12}  {:>8}  {:>6.2} s  {:>9.1}  {state}",
            i,
            d.path,
            human_bytes(s.payload_bytes),
            s.records,
            s.elapsed.as_secs_f64(),
            mib_s(s.payload_bytes, s.elapsed.as_secs_f64()),
        );
    }
    outln!(
        "  {:>5}  {:<path_width$}  {:>12}  {:>8}  {:>6.2} s  {:>9.1}",
        "total",
        devices_text,
        human_bytes(total),
        records,
        secs,
        mib_s(total, secs),
    );
    print_compression(report, total, secs);
    if !report.unplaced.is_empty() {
        outln!(
            "  INCOMPLETE: {} not on any device (see stderr)",
            human_bytes(report.missing_bytes())
        );
    }
    for d in report.catalogs_missing() {
        outln!(
            "  INCOMPLETE: device {} has no durable catalog (see stderr)",
            d.path
        );
    }
}

/// `--compress`: what the devices hold against the payload, the workers'
/// CPU time, and whether the devices waited for them (CPU-bound).
fn print_compression(report: &backup::BackupReport, total: u64, secs: f64) {
    let stats = || report.devices.iter().map(|d| &d.stats);
    let cpu: f64 = stats().map(|s| s.transform_cpu.as_secs_f64()).sum();
    if cpu == 0.0 {
        return;
    }
    let media: u64 = stats().map(|s| s.media_bytes).sum();
    let waited = stats()
        .map(|s| s.transform_wait.as_secs_f64())
        .fold(0.0, f64::max);
    let gib = total as f64 / (1u64 << 30) as f64;
    outln!(
        "  stored: {} of payload in {} of records on the devices ({:.2}x); {:.2} CPU s on the workers ({:.2} s/GiB)",
        human_bytes(total),
        human_bytes(media),
        total as f64 / media.max(1) as f64,
        cpu,
        cpu / gib.max(1e-9),
    );
    // A device that waited for the workers a tenth of the run or more.
    if waited >= secs / 10.0 && waited > 0.05 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        outln!(
            "  the workers were CPU-bound (compression, encryption): devices waited up to {:.2} s for them; the CPUs transform about {:.0} MiB/s at this setting",
            waited,
            total as f64 / (1 << 20) as f64 / (cpu / cores).max(1e-9),
        );
    }
}
