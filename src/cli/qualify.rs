//! `pbio qualify`: a hardware qualification run of one device (see
//! `measure::qualify`), shown as it goes or as one JSON report, optionally
//! compared with an earlier report.
//!
//! Destructive: the run writes across the device. A block device needs
//! `--force`, and so does a tape drive (the cartridge is overwritten from
//! its beginning) and a pmem namespace (`/dev/pmem*`); so does a file,
//! a pmem file or an emulated tape that holds anything (a recognised
//! format, a pbio set, or any non-zero data), except, for files, the
//! leftovers of an earlier qualification (its pattern at offset 0). What
//! the overwrite guard refuses for `backup` because the device is in use
//! (mounted, swap, a loop device's backing file) is refused even with
//! `--force`. `--recheck` reads only.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::Value;

use super::{parse_dev, CliResult, Failure, Outcome};
use crate::device::{self, DeviceSpec, Kind, Mode};
use crate::measure::qualify::{self, compare, pattern, Check, Event, Options, Report, Verdict};
use crate::media::guard::Policy;
use crate::units::human_bytes;

/// Bytes of a file's data scanned for non-zero content before it is
/// declared to hold data without having been read to the end.
const SCAN_BYTES_MAX: u64 = 64 << 20;

/// Hardware qualification of one device (file, block device, tape, pmem): geometry, O_DIRECT limits, throughput and latency, durability, a pattern check, tape operations; PASS/FAIL per check (destroys the device's data).
#[derive(Args, Debug)]
pub struct QualifyArgs {
    /// The device: PATH[,size=N] (a file device is created with size=N). Everything on it is overwritten.
    #[arg(long = "dev", value_parser = parse_dev)]
    pub dev: DeviceSpec,
    /// Print the report as one JSON object (schema 1; see the README) instead of text.
    #[arg(long)]
    pub json: bool,
    /// An earlier report (`--json` output) to compare with: per-check deltas; a throughput or latency regression beyond the limits FAILs.
    #[arg(long, value_name = "OLD.json")]
    pub compare: Option<PathBuf>,
    /// A small matrix (4K and 1M blocks at queue depths 1 and 16) and smaller bounds.
    #[arg(long)]
    pub quick: bool,
    /// Qualify a block device, a tape drive, a pmem namespace, or a file or emulated tape that holds data (never a device in use).
    #[arg(long)]
    pub force: bool,
    /// Fraction of the device the pattern check covers, as 0.05 or 5% (default 1%, at least 4 MiB, at most 256 MiB, 64 MiB with --quick; a given fraction is not capped).
    #[arg(long, value_name = "F", value_parser = parse_fraction)]
    pub verify_fraction: Option<f64>,
    /// With --compare: the throughput drop, in percent, beyond which a check is a regression.
    #[arg(long, value_name = "PCT", default_value_t = 20.0, value_parser = parse_percent)]
    pub max_throughput_drop: f64,
    /// With --compare: the latency rise, in percent, beyond which a check is a regression.
    #[arg(long, value_name = "PCT", default_value_t = 50.0, value_parser = parse_percent)]
    pub max_latency_rise: f64,
    /// Instead of a run: read back the pattern that the run of REPORT.json left on the device (after a power cut, for instance). Writes nothing.
    #[arg(long, value_name = "REPORT.json", conflicts_with_all = ["compare", "quick", "verify_fraction", "force"])]
    pub recheck: Option<PathBuf>,
}

/// `0.05`, `5%`.
fn parse_fraction(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let value = match t.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|p| p / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("'{text}' is not a fraction (e.g. 0.05 or 5%)"))?;
    if !(value > 0.0 && value <= 1.0) {
        return Err(format!(
            "'{text}': give a fraction above 0 and at most 1 (100%)"
        ));
    }
    Ok(value)
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("'{text}' is not a percentage"))?;
    if !(0.0..=100_000.0).contains(&value) {
        return Err(format!("'{text}': give a percentage from 0 to 100000"));
    }
    Ok(value)
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

/// An earlier report, checked to be one this pbio can read.
fn read_report(path: &Path, option: &str) -> Result<Value, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("{option} {}: {e}", path.display())))?;
    let report: Value = serde_json::from_str(&text)
        .map_err(|e| usage(format!("{option} {}: not JSON: {e}", path.display())))?;
    compare::validate_old(&report)
        .map_err(|why| usage(format!("{option} {}: {why}", path.display())))?;
    Ok(report)
}

/// The first non-zero byte of a regular file's data, if any, reading at
/// most SCAN_BYTES_MAX of it (holes are skipped with SEEK_DATA). The
/// pattern of an earlier qualification at offset 0 counts as nothing.
fn file_data(path: &Path) -> std::io::Result<Option<String>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut head = vec![0u8; pattern::UNIT_BYTES.min(len as usize)];
    file.read_exact_at(&mut head, 0)?;
    if pattern::is_pattern_head(&head) {
        return Ok(None);
    }
    let fd = file.as_raw_fd();
    let mut buf = vec![0u8; 1 << 20];
    let (mut pos, mut scanned) = (0u64, 0u64);
    while pos < len {
        let start = match nix::unistd::lseek(fd, pos as i64, nix::unistd::Whence::SeekData) {
            Ok(s) => s as u64,
            Err(nix::errno::Errno::ENXIO) => return Ok(None),
            // No SEEK_DATA here: everything is data.
            Err(nix::errno::Errno::EINVAL) => pos,
            Err(e) => return Err(e.into()),
        };
        let end = nix::unistd::lseek(fd, start as i64, nix::unistd::Whence::SeekHole)
            .map(|e| e as u64)
            .unwrap_or(len)
            .min(len);
        let mut at = start;
        while at < end {
            if scanned >= SCAN_BYTES_MAX {
                return Ok(Some(format!(
                    "holds {} of data not all zero-checked (the first {} are zeros)",
                    human_bytes(len),
                    human_bytes(SCAN_BYTES_MAX)
                )));
            }
            let n = (end - at).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], at)?;
            if let Some(i) = buf[..n].iter().position(|&b| b != 0) {
                return Ok(Some(format!(
                    "holds data (a non-zero byte at offset {})",
                    at + i as u64
                )));
            }
            at += n as u64;
            scanned += n as u64;
        }
        pos = end.max(start + 1);
    }
    Ok(None)
}

/// Refuse to write what the user has not allowed: the overwrite guard as
/// `backup` runs it, then block devices and files with data without --force.
fn check_destructive(spec: &DeviceSpec, probe: &device::Probe, force: bool) -> Result<(), Failure> {
    super::backup::check_devices(
        std::slice::from_ref(spec),
        &Policy {
            force,
            overwrite: Vec::new(),
        },
    )?;
    if force {
        return Ok(());
    }
    let path = spec.path.display();
    // What is behind a pmem device: its namespace or its file.
    let pmem_target = device::backing(&spec.path)
        .mapped_file()
        .filter(|_| probe.kind == Kind::Pmem);
    let pmem_block = pmem_target
        .as_ref()
        .and_then(|t| std::fs::metadata(t).ok())
        .is_some_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_block_device()
        });
    if probe.kind == Kind::Block || pmem_block {
        return Err(usage(format!(
            "refusing to qualify {path} (nothing was written): qualify writes across the whole device; give --force to qualify a block device"
        )));
    }
    if probe.kind == Kind::Nbd {
        return Err(usage(format!(
            "refusing to qualify {path} (nothing was written): qualify writes across the whole export; give --force to qualify an NBD export"
        )));
    }
    if probe.kind == Kind::Tape {
        return Err(usage(format!(
            "refusing to qualify {path} (nothing was written): qualify overwrites the cartridge from its beginning; give --force to qualify a tape drive"
        )));
    }
    let file = match probe.kind {
        Kind::File => Some(spec.path.clone()),
        Kind::Pmem => pmem_target,
        _ => None,
    };
    if let Some(file) = file.filter(|f| f.exists()) {
        let found = file_data(&file)
            .map_err(|e| usage(format!("device {path}: reading it to check for data: {e}")))?;
        if let Some(what) = found {
            return Err(usage(format!(
                "refusing to qualify {path} (nothing was written): it {what}; qualify overwrites it, give --force to allow that"
            )));
        }
    }
    Ok(())
}

fn value_text(check: &Check) -> String {
    match (&check.value, check.unit) {
        (Value::Null, _) => "-".into(),
        (Value::Number(n), "bytes") => match n.as_u64() {
            Some(b) if b < 1 << 20 => format!("{b} B"),
            Some(b) => human_bytes(b),
            None => n.to_string(),
        },
        (Value::Number(n), unit) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 => format!("{f:.1} {unit}"),
            _ => format!("{n} {unit}"),
        },
        (Value::String(s), _) => s.clone(),
        (other, _) => other.to_string(),
    }
}

fn check_line(check: &Check) -> String {
    format!(
        "  {} {:<24} {:>12}  {}",
        check.verdict.name(),
        check.name,
        value_text(check),
        check.detail
    )
}

/// The human form, as the run goes.
fn show(event: Event) {
    use std::io::Write;
    let line = match event {
        Event::Step(step) => format!("  -- {step}"),
        Event::Check(check) => check_line(check),
        Event::Cell(cell) => match &cell.outcome {
            Ok(r) => format!(
                "       {:<22} {:>9.1} MiB/s {:>8.0} IOPS  lat {}",
                cell.label(),
                r.mib_per_sec(),
                r.ios as f64 / r.seconds.max(1e-9),
                r.latency.text()
            ),
            Err(e) => format!("       {:<22} FAILED: {e}", cell.label()),
        },
    };
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn finish(report: &Report, json: bool) -> CliResult {
    let verdict = report.verdict();
    if json {
        outln!("{}", report.to_json());
    } else {
        let count = |v: Verdict| report.checks.iter().filter(|c| c.verdict == v).count();
        outln!(
            "verdict: {} ({} checks: {} PASS, {} FAIL, {} SKIP) in {:.1} s",
            verdict.name(),
            report.checks.len(),
            count(Verdict::Pass),
            count(Verdict::Fail),
            count(Verdict::Skip),
            report.seconds
        );
        for c in report.checks.iter().filter(|c| c.verdict == Verdict::Fail) {
            outln!("  FAIL {}: {}", c.name, c.detail);
        }
    }
    Ok(if verdict == Verdict::Pass {
        Outcome::Done
    } else {
        Outcome::Incomplete
    })
}

pub fn run(args: QualifyArgs) -> CliResult {
    let options = Options {
        quick: args.quick,
        verify_fraction: args.verify_fraction,
    };
    options.validate().map_err(Failure::QualifyOptions)?;
    let mut on_event = |event: Event| {
        if !args.json {
            show(event)
        }
    };

    if let Some(path) = &args.recheck {
        let old = read_report(path, "--recheck")?;
        let spec = qualify::pattern_of_report(&old)
            .map_err(|why| usage(format!("--recheck {}: {why}", path.display())))?;
        let dev = device::open(&args.dev, Mode::Read).map_err(|e| usage(e.to_string()))?;
        super::show_notes(dev.as_ref());
        if !args.json {
            outln!(
                "pbio qualify --recheck {}: reading back {} of pattern on {}",
                path.display(),
                human_bytes(spec.bytes()),
                args.dev.path.display()
            );
        }
        let report = qualify::recheck(
            dev.as_ref(),
            &spec,
            &path.display().to_string(),
            &mut on_event,
        )
        .map_err(Failure::Qualify)?;
        return finish(&report, args.json);
    }

    let old = match &args.compare {
        Some(path) => Some((path, read_report(path, "--compare")?)),
        None => None,
    };
    let probe = device::probe(&args.dev).map_err(|e| usage(e.to_string()))?;
    if probe.capacity_bytes < qualify::CAPACITY_MIN_BYTES {
        return Err(usage(format!(
            "device {}: {} is smaller than {}, the least qualify needs",
            args.dev.path.display(),
            human_bytes(probe.capacity_bytes),
            human_bytes(qualify::CAPACITY_MIN_BYTES)
        )));
    }
    check_destructive(&args.dev, &probe, args.force)?;
    let dev = device::open(&args.dev, Mode::Write).map_err(|e| usage(e.to_string()))?;
    super::show_notes(dev.as_ref());
    if !args.json {
        outln!(
            "pbio qualify {} ({}{}): writes across the device",
            args.dev.path.display(),
            human_bytes(dev.capacity_bytes()),
            if args.quick { ", quick" } else { "" }
        );
    }
    let mut report =
        qualify::run(dev.as_ref(), &options, &mut on_event).map_err(Failure::Qualify)?;
    drop(dev);

    if let Some((path, old)) = old {
        let thresholds = compare::Thresholds {
            drop_pct: args.max_throughput_drop,
            rise_pct: args.max_latency_rise,
        };
        let comparison = compare::compare(
            &old,
            &report.to_json(),
            &path.display().to_string(),
            thresholds,
        );
        let check = comparison.check();
        if !args.json {
            for line in comparison.lines() {
                outln!("{line}");
            }
            outln!("{}", check_line(&check));
        }
        report.checks.push(check);
        report.compare = Some(comparison.to_json());
    }
    finish(&report, args.json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_and_percentages() {
        assert_eq!(parse_fraction("0.05").unwrap(), 0.05);
        assert_eq!(parse_fraction("5%").unwrap(), 0.05);
        assert_eq!(parse_fraction("100%").unwrap(), 1.0);
        for bad in ["0", "1.5", "-1", "x", "%", "101%", "NaN"] {
            assert!(parse_fraction(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_percent("20").unwrap(), 20.0);
        assert_eq!(parse_percent("50%").unwrap(), 50.0);
        assert!(parse_percent("-1").is_err());
    }

    #[test]
    fn file_data_is_found_past_holes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        assert_eq!(file_data(&p).unwrap(), None, "sparse: nothing");
        f.write_all_at(&[0u8; 4096], 1 << 20).unwrap();
        assert_eq!(file_data(&p).unwrap(), None, "written zeros: nothing");
        f.write_all_at(b"x", (5 << 20) + 7).unwrap();
        let found = file_data(&p).unwrap().unwrap();
        assert!(
            found.contains(&format!("offset {}", (5 << 20) + 7)),
            "{found}"
        );
        // The leftovers of a qualification are not data to protect.
        let mut head = vec![0u8; 4096];
        pattern::fill(&mut head, 0, 99);
        f.write_all_at(&head, 0).unwrap();
        assert_eq!(file_data(&p).unwrap(), None);
        let empty = dir.path().join("empty");
        File::create(&empty).unwrap();
        assert_eq!(file_data(&empty).unwrap(), None);
    }
}
