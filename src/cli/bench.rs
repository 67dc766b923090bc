//! `pbio bench`: fio-like raw throughput and latency of devices through
//! pbio's own rings (see `measure::bench`). Sequential, from offset 0, one
//! thread and ring per device, all devices at once.
//!
//! `--rw write` destroys what the devices hold. It is allowed on regular
//! files that do not hold a pbio set; a block device, or a file holding a
//! set, must be given with `--force`. (Block devices are still opened
//! O_EXCL, so a mounted disk is refused even then.)

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::{parse_dev, CliResult, Failure, Outcome};
use crate::device::{self, Device, DeviceSpec, Kind, Mode};
use crate::measure::bench::{self, BenchConfig, Rw, BLOCK_BYTES_MAX, QUEUE_DEPTH_MAX};
use crate::units::{human_bytes, parse_size};

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RwArg {
    /// Sequential reads (leaves the devices as they are).
    #[default]
    Read,
    /// Sequential writes (destroys what the devices hold).
    Write,
}

/// Raw device throughput and latency through pbio's rings (fio-like; --rw write destroys data).
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A device: PATH[,size=N] (repeat for each; all are run at once).
    #[arg(long = "dev", value_parser = parse_dev, required = true)]
    pub devs: Vec<DeviceSpec>,
    /// Sequential read or write.
    #[arg(long, value_enum, default_value_t)]
    pub rw: RwArg,
    /// Bytes per operation (a multiple of 4K).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub bs: u64,
    /// Operations in flight per device.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=QUEUE_DEPTH_MAX as i64))]
    pub qd: u16,
    /// Bytes per device, from offset 0 (default: the whole of the smallest device).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Allow writing to block devices and to files that hold a pbio set.
    #[arg(long)]
    pub force: bool,
    /// One JSON object (the summary, with every device in it).
    #[arg(long)]
    pub json: bool,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

/// Open the devices, refusing a destructive run on anything but a plain
/// file unless forced.
fn open_devices(args: &BenchArgs) -> Result<Vec<Box<dyn Device>>, Failure> {
    let mut identities = Vec::with_capacity(args.devs.len());
    let mut devices = Vec::with_capacity(args.devs.len());
    for spec in &args.devs {
        let probe = device::probe(spec).map_err(|e| usage(e.to_string()))?;
        if let Some(i) = identities.iter().position(|id| *id == probe.identity) {
            return Err(usage(format!(
                "device {} is given twice (also as {})",
                spec.path.display(),
                args.devs[i].path.display()
            )));
        }
        identities.push(probe.identity);
        if args.rw == RwArg::Write && matches!(probe.kind, Kind::Block | Kind::Nbd) && !args.force {
            return Err(usage(format!(
                "device {}: `bench --rw write` destroys the data on it; give --force to write to a block device or an NBD export",
                spec.path.display()
            )));
        }
        let mode = match args.rw {
            RwArg::Write => Mode::Write,
            RwArg::Read => Mode::Read,
        };
        let dev = device::open(spec, mode).map_err(|e| usage(e.to_string()))?;
        super::show_notes(dev.as_ref());
        if args.rw == RwArg::Write && !args.force {
            if let Ok(label) = crate::media::read_label(dev.as_ref()) {
                return Err(usage(format!(
                    "device {}: holds pbio set {}, which `bench --rw write` would destroy; give --force to write anyway",
                    spec.path.display(),
                    label.set_id
                )));
            }
        }
        devices.push(dev);
    }
    Ok(devices)
}

/// Latency summary in microseconds.
fn latency_json(h: &Histogram<u64>) -> Value {
    let us = |ns: u64| ns as f64 / 1000.0;
    json!({
        "min": us(h.min()),
        "mean": h.mean() / 1000.0,
        "p50": us(h.value_at_quantile(0.5)),
        "p99": us(h.value_at_quantile(0.99)),
        "p999": us(h.value_at_quantile(0.999)),
        "max": us(h.max()),
    })
}

fn latency_text(h: &Histogram<u64>) -> String {
    let us = |ns: u64| ns as f64 / 1000.0;
    format!(
        "lat us p50 {:.0} p99 {:.0} p99.9 {:.0} max {:.0}",
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max())
    )
}

fn mib_per_sec(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs.max(1e-9)
}

pub fn run(args: BenchArgs) -> CliResult {
    if args.bs == 0 || !args.bs.is_multiple_of(4096) || args.bs > BLOCK_BYTES_MAX as u64 {
        return Err(usage(format!(
            "--bs {} must be a multiple of 4K and at most {}",
            args.bs,
            human_bytes(BLOCK_BYTES_MAX as u64)
        )));
    }
    let devices = open_devices(&args)?;
    let smallest = devices
        .iter()
        .map(|d| d.capacity_bytes())
        .min()
        .expect("at least one device (clap requires --dev)");
    let size_bytes = match args.size {
        Some(size) if size > smallest => {
            return Err(usage(format!(
                "--size {} is larger than the smallest device ({})",
                human_bytes(size),
                human_bytes(smallest)
            )))
        }
        Some(size) => size,
        None => smallest / 4096 * 4096,
    };
    let config = BenchConfig {
        rw: match args.rw {
            RwArg::Read => Rw::Read,
            RwArg::Write => Rw::Write,
        },
        block_bytes: args.bs as usize,
        queue_depth: args.qd as usize,
        size_bytes,
    };
    config.validate().map_err(Failure::BenchConfig)?;
    let refs: Vec<&dyn Device> = devices.iter().map(|d| d.as_ref()).collect();
    let report = bench::run(&refs, config).map_err(Failure::Bench)?;

    let secs = report.elapsed.as_secs_f64();
    let total = report.bytes();
    let cpu = report.cpu().as_secs_f64();
    let gib = total as f64 / (1u64 << 30) as f64;
    if args.json {
        let devices: Vec<Value> = report
            .devices
            .iter()
            .map(|d| {
                let s = d.elapsed.as_secs_f64();
                json!({
                    "path": d.path,
                    "bytes": d.bytes,
                    "ios": d.ios,
                    "seconds": s,
                    "mib_per_sec": mib_per_sec(d.bytes, s),
                    "iops": d.ios as f64 / s.max(1e-9),
                    "lat_us": latency_json(&d.latency_ns),
                    "cpu_seconds": d.cpu.as_secs_f64(),
                    "direct_io": d.direct_io,
                    "ring_setup": d.ring_setup.name(),
                    "short_ios": d.short_ios,
                    "retries": d.retries,
                })
            })
            .collect();
        outln!(
            "{}",
            json!({
                "event": "summary",
                "rw": config.rw.name(),
                "bs": config.block_bytes,
                "qd": config.queue_depth,
                "size_bytes": size_bytes,
                "bytes": total,
                "seconds": secs,
                "mib_per_sec": mib_per_sec(total, secs),
                "lat_us": latency_json(&report.latency_ns),
                "cpu_seconds": cpu,
                "cpu_seconds_per_gib": cpu / gib.max(1e-12),
                "devices": devices,
            })
        );
        return Ok(Outcome::Done);
    }
    outln!(
        "bench {} bs={} qd={} size={} per device, {} device(s)",
        config.rw.name(),
        human_bytes(config.block_bytes as u64),
        config.queue_depth,
        human_bytes(size_bytes),
        report.devices.len()
    );
    for (i, d) in report.devices.iter().enumerate() {
        let s = d.elapsed.as_secs_f64();
        outln!(
            "  dev {i} {}: {} in {} ios, {:.2} s, {:.1} MiB/s, {:.0} IOPS, {}{}",
            d.path,
            human_bytes(d.bytes),
            d.ios,
            s,
            mib_per_sec(d.bytes, s),
            d.ios as f64 / s.max(1e-9),
            latency_text(&d.latency_ns),
            if d.direct_io {
                ""
            } else {
                " (buffered: no O_DIRECT here)"
            }
        );
    }
    outln!(
        "aggregate: {} in {:.2} s, {:.1} MiB/s, {}, cpu {:.2} s ({:.3} s/GiB)",
        human_bytes(total),
        secs,
        mib_per_sec(total, secs),
        latency_text(&report.latency_ns),
        cpu,
        cpu / gib.max(1e-12)
    );
    Ok(Outcome::Done)
}
