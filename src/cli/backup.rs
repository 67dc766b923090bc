//! `pbio backup`: walk, plan, write through one ring per device, catalog everywhere.

use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::json;

use super::{prepare, CliResult, Failure, SetArgs, EXIT_OK};
use crate::device::{self, Mode};
use crate::engine::{self, ring::QUEUE_DEPTH_MAX, BackupConfig, DeviceEnd, SetInput};
use crate::units::human_bytes;

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub set: SetArgs,
    /// Records in flight per device.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=QUEUE_DEPTH_MAX as i64))]
    pub qd: u16,
    /// Resubmissions of a write that failed with a device error (EIO) before
    /// the device is declared failed and its work goes to the others.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub retries: u32,
    /// Largest tape block (record header + payload) written to a tape; the
    /// drive's own limit applies too. A record's payload on tape is the
    /// largest power of two that fits (512K with the default 1M).
    #[arg(long, default_value = "1M", value_parser = parse_tape_block)]
    pub tape_block: u64,
    /// Records read ahead of each tape's one write (a watermark buffer, so
    /// the drive keeps streaming while sources are slow).
    #[arg(long, default_value_t = engine::TAPE_BUFFER_RECORDS_DEFAULT as u16, value_parser = clap::value_parser!(u16).range(1..=QUEUE_DEPTH_MAX as i64))]
    pub tape_buffer: u16,
}

fn parse_tape_block(text: &str) -> Result<u64, String> {
    let n = crate::units::parse_size(text)?;
    let max = crate::format::PAYLOAD_BYTES_MAX as u64 + crate::format::HEADER_BYTES as u64;
    if n < engine::TAPE_BLOCK_BYTES_MIN as u64 || n > max || n % 4096 != 0 {
        return Err(format!(
            "tape block '{text}' must be a multiple of 4K between 8K and 64M+4K"
        ));
    }
    Ok(n)
}

pub fn run(args: BackupArgs) -> CliResult {
    let prepared = prepare(&args.set)?;
    let mut devices = Vec::with_capacity(args.set.devs.len());
    for spec in &args.set.devs {
        devices.push(device::open(spec, Mode::Write).map_err(|e| Failure::Usage(e.to_string()))?);
    }
    let config = BackupConfig {
        set_id: engine::new_set_id(),
        created_unix_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        chunk_bytes: args.set.chunk as u32,
        queue_depth: args.qd as usize,
        tape_block_bytes: args.tape_block as u32,
        tape_buffer_records: args.tape_buffer as usize,
        reserve_bytes: prepared.reserve_bytes,
        write_retries: args.retries,
        events: None,
    };
    let input = SetInput {
        entries: prepared.entries,
        plan: prepared.plan,
    };
    let progress: Vec<AtomicU64> = devices.iter().map(|_| AtomicU64::new(0)).collect();
    let report = engine::run_backup(&input, &devices, &config, &progress)
        .map_err(|e| Failure::Data(format!("backup failed: {e}")))?;
    print_report(&report, args.set.json);
    Ok(exit_code(&report))
}

/// 3 when part of the set is not on any device, 1 when a device failed
/// (the survivors hold everything), 0 otherwise.
pub fn exit_code(report: &engine::BackupReport) -> i32 {
    if !report.unplaced.is_empty() {
        super::EXIT_DATA
    } else if report.degraded() {
        super::EXIT_DEGRADED
    } else {
        EXIT_OK
    }
}

fn state_name(end: DeviceEnd) -> &'static str {
    match end {
        DeviceEnd::Complete => "complete",
        DeviceEnd::Full => "full",
        DeviceEnd::Failed => "failed",
    }
}

/// Failures, full devices and missing data go to stderr in every output mode.
fn print_warnings(report: &engine::BackupReport) {
    for d in &report.devices {
        if let Some(error) = &d.error {
            eprintln!(
                "pbio: device {} {}: {error}; {} of its work went to the other devices",
                d.path,
                state_name(d.end),
                human_bytes(d.redirected_bytes)
            );
        }
        if let Some(error) = &d.catalog_error {
            eprintln!("pbio: device {}: no catalog written: {error}", d.path);
        }
    }
    if !report.unplaced.is_empty() {
        eprintln!(
            "pbio: the set is INCOMPLETE: {} bytes could not be written to any device (not enough surviving capacity):",
            report.missing_bytes()
        );
        for (path, offset, length) in report.unplaced.iter().take(20) {
            eprintln!("  {path}: bytes {offset}..{}", offset + length);
        }
        if report.unplaced.len() > 20 {
            eprintln!("  ... and {} more ranges", report.unplaced.len() - 20);
        }
    } else if report.degraded() {
        eprintln!("pbio: set complete on the surviving devices (degraded)");
    }
}

pub fn print_report(report: &engine::BackupReport, as_json: bool) {
    print_warnings(report);
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let total: u64 = report.devices.iter().map(|d| d.stats.payload_bytes).sum();
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
                    "mib_per_sec": s.payload_bytes as f64 / (1 << 20) as f64 / s.elapsed.as_secs_f64().max(1e-9),
                    "payload_bytes_zero_copy": s.payload_bytes_zero_copy,
                    "reads_direct": s.reads_direct,
                    "reads_buffered": s.reads_buffered,
                    "short_reads": s.short_reads,
                    "short_writes": s.short_writes,
                    "retries": s.retries,
                    "underruns": s.underruns,
                    "underrun_ms": s.underrun_time.as_secs_f64() * 1000.0,
                    "data_end": d.data_end,
                    "catalog_end": d.catalog_end,
                    "catalog_error": d.catalog_error,
                    "state": state_name(d.end),
                    "error": d.error,
                    "redirected_bytes": d.redirected_bytes,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "event": "summary",
                "set_id": engine::set_id_hex(&report.set_id),
                "files": report.files,
                "segments": report.segments,
                "payload_bytes": total,
                "seconds": secs,
                "mib_per_sec": total as f64 / (1 << 20) as f64 / secs,
                "devices": devices,
                "missing_bytes": report.missing_bytes(),
                "unplaced": report.unplaced.iter().map(|(p, o, l)| json!({"path": p, "offset": o, "length": l})).collect::<Vec<_>>(),
                "exit_code": exit_code(report),
            })
        );
        return;
    }
    println!(
        "set {}: {} entries, {} segments, {} in {:.2} s ({:.1} MiB/s)",
        engine::set_id_hex(&report.set_id),
        report.files,
        report.segments,
        human_bytes(total),
        secs,
        total as f64 / (1 << 20) as f64 / secs
    );
    for (i, d) in report.devices.iter().enumerate() {
        let s = &d.stats;
        println!(
            "  dev {i} {}: {} in {} records, {:.2} s, {:.1} MiB/s, {}",
            d.path,
            human_bytes(s.payload_bytes),
            s.records,
            s.elapsed.as_secs_f64(),
            s.payload_bytes as f64 / (1 << 20) as f64 / s.elapsed.as_secs_f64().max(1e-9),
            state_name(d.end)
        );
    }
}
