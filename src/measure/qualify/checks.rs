//! The checks of a random-access device (file, block) and the verdict
//! helpers every family shares: identity, alignment, the matrix,
//! durability, the pattern.

use serde_json::{json, Value};

use super::identity::Identity;
use super::io::DevIo;
use super::pattern::{self, PatternSpec};
use super::{
    alignment, durability, size_text, Better, Cell, CellPlan, CellResult, Check, Latency, Plan,
    Verdict, CAPACITY_MIN_BYTES,
};
use crate::device::Device;
use crate::format::BLOCK_BYTES;
use crate::measure::bench::{self, BenchConfig, Rw};
use crate::units::human_bytes;

/// The identity check: pbio can use the device as it describes itself.
pub(super) fn identity_check(id: &Identity) -> Check {
    let mut parts = vec![format!("{} {}", id.kind, human_bytes(id.capacity_bytes))];
    if let (Some(l), Some(p)) = (id.logical_block_bytes, id.physical_block_bytes) {
        parts.push(format!("logical block {l} B, physical {p} B"));
    }
    if let Some(s) = &id.sysfs {
        parts.push(format!("disk {}", s.name));
    }
    if let Some(r) = id.rotational {
        parts.push(if r { "rotational" } else { "non-rotational" }.into());
    }
    for key in ["vendor", "model", "serial", "firmware"] {
        if let Some(v) = id.id(key) {
            parts.push(format!("{key} {v}"));
        }
    }
    if let Some(fs) = &id.filesystem {
        parts.push(format!("on {} (block {} B)", fs.kind, fs.block_bytes));
    }
    if !id.direct_io && matches!(id.kind, "file" | "block") {
        parts.push("no O_DIRECT here: buffered I/O".into());
    }
    let mut problems = Vec::new();
    if id.kind == "block" {
        match id.logical_block_bytes {
            None => problems.push("BLKSSZGET failed".into()),
            Some(l) if !l.is_power_of_two() || l as usize > BLOCK_BYTES => problems.push(format!(
                "logical block {l} B: pbio needs a power of two up to {BLOCK_BYTES}"
            )),
            Some(l) => {
                if let Some(p) = id.physical_block_bytes {
                    if p < l {
                        problems.push(format!("physical block {p} B below logical {l} B"));
                    }
                }
            }
        }
    }
    identity_verdict(id.capacity_bytes, problems, &parts)
}

/// A check of a family that did not run because the device failed its
/// identity check.
pub(super) fn not_run(name: &'static str) -> Check {
    Check::new(name, Verdict::Fail, Value::Null, "").detail("not run: the identity check failed")
}

/// Every family's identity check: the device as described by `parts`,
/// FAIL with its `problems` first when it has any (a capacity below
/// CAPACITY_MIN_BYTES is one for every family).
pub(crate) fn identity_verdict(
    capacity_bytes: u64,
    mut problems: Vec<String>,
    parts: &[String],
) -> Check {
    if capacity_bytes < CAPACITY_MIN_BYTES {
        problems.push(format!(
            "smaller than {} (the least qualify needs)",
            human_bytes(CAPACITY_MIN_BYTES)
        ));
    }
    let (verdict, detail) = if problems.is_empty() {
        (Verdict::Pass, parts.join(", "))
    } else {
        (
            Verdict::Fail,
            format!("{}; {}", problems.join("; "), parts.join(", ")),
        )
    };
    Check::new("identity", verdict, json!(capacity_bytes), "bytes").detail(detail)
}
/// alignment_offset, alignment_memory, max_io; each with the granularity
/// it found (the first one's is the one used afterwards).
pub(super) fn alignment_checks(
    device: &dyn Device,
    io: &DevIo,
    id: &Identity,
    plan: &Plan,
) -> Vec<(Check, Option<u64>)> {
    const NAMES: [(&str, &str); 3] = [
        ("alignment_offset", "bytes"),
        ("alignment_memory", "bytes"),
        ("max_io", "bytes"),
    ];
    if !device.direct_io() {
        return NAMES
            .iter()
            .map(|&(name, unit)| {
                (
                    Check::skip(
                        name,
                        unit,
                        "the filesystem refuses O_DIRECT: pbio uses buffered I/O here, which has no alignment limits",
                    ),
                    None,
                )
            })
            .collect();
    }
    let kernel = id
        .kernel_dio_align
        .map(|(m, o)| format!("; the kernel (statx) says memory {m} B, offset {o} B"))
        .unwrap_or_default();
    let mut out = Vec::with_capacity(3);
    let capacity = device.capacity_bytes();
    let (offset_check, granularity) = match alignment::offset_granularity(io, capacity) {
        Err(e) => (
            Check::new("alignment_offset", Verdict::Fail, Value::Null, "bytes")
                .detail(format!("direct I/O probe failed: {}", e)),
            None,
        ),
        Ok(None) => (
            Check::new("alignment_offset", Verdict::Fail, Value::Null, "bytes").detail(format!(
                "no direct write and read of {}..{} bytes at a matching offset was accepted{kernel}",
                alignment::CANDIDATES[0],
                alignment::CANDIDATES[alignment::CANDIDATES.len() - 1]
            )),
            None,
        ),
        Ok(Some(g)) => {
            let mut detail = format!("smallest offset and length accepted: {g} B");
            if g == alignment::CANDIDATES[0] {
                detail.push_str(" (the smallest tried)");
            }
            if let Some(l) = id.logical_block_bytes {
                if u64::from(l) == g {
                    detail.push_str(", the logical block size");
                } else {
                    detail.push_str(&format!(", while the logical block size is {l} B"));
                }
            }
            detail.push_str(&kernel);
            let verdict = if g as usize <= BLOCK_BYTES {
                detail.push_str(&format!("; pbio writes at multiples of {BLOCK_BYTES}"));
                Verdict::Pass
            } else {
                detail.push_str(&format!(
                    "; pbio writes at multiples of {BLOCK_BYTES}, which this device refuses"
                ));
                Verdict::Fail
            };
            (
                Check::new("alignment_offset", verdict, json!(g), "bytes").detail(detail),
                Some(g),
            )
        }
    };
    out.push((offset_check, granularity));

    let memory_check = match granularity {
        None => Check::skip(
            "alignment_memory",
            "bytes",
            "no offset granularity was found to probe with",
        ),
        Some(g) => match alignment::memory_alignment(io, g) {
            Err(e) => Check::new("alignment_memory", Verdict::Fail, Value::Null, "bytes")
                .detail(format!("direct I/O probe failed: {}", e)),
            Ok(None) => Check::new("alignment_memory", Verdict::Fail, Value::Null, "bytes")
                .detail("no buffer alignment up to 64 KiB was accepted"),
            Ok(Some(a)) => {
                let dma = id
                    .sysfs
                    .as_ref()
                    .and_then(|s| s.queue_u64("dma_alignment"))
                    .map(|d| format!(" (sysfs dma_alignment {d}: {} B)", d + 1))
                    .unwrap_or_default();
                let smallest = if a == alignment::CANDIDATES[0] {
                    " (the smallest tried)"
                } else {
                    ""
                };
                let ok = a as usize <= BLOCK_BYTES;
                Check::new(
                    "alignment_memory",
                    if ok { Verdict::Pass } else { Verdict::Fail },
                    json!(a),
                    "bytes",
                )
                .detail(format!(
                    "smallest buffer alignment accepted: {a} B{smallest}{dma}; pbio's buffers are aligned to {BLOCK_BYTES}{}",
                    if ok { "" } else { ", which this device refuses" }
                ))
            }
        },
    };
    out.push((memory_check, None));

    let max_io_check = match alignment::max_io(io, capacity, plan.max_io_bound_bytes) {
        Err(e) => Check::new("max_io", Verdict::Fail, Value::Null, "bytes")
            .detail(format!("direct I/O probe failed: {}", e)),
        Ok(m) => {
            let kernel_split = id
                .sysfs
                .as_ref()
                .and_then(|s| s.queue_u64("max_sectors_kb"))
                .map(|kb| {
                    format!("; the kernel splits requests to the disk at {kb} KiB (max_sectors_kb)")
                })
                .unwrap_or_default();
            let refused = m
                .refused
                .as_ref()
                .map(|r| format!("; refused: {r}"))
                .unwrap_or_else(|| format!(" (the bound: {})", human_bytes(m.bound_bytes)));
            let ok = m.accepted_bytes >= alignment::RECORD_BYTES;
            Check::new(
                "max_io",
                if ok { Verdict::Pass } else { Verdict::Fail },
                json!(m.accepted_bytes),
                "bytes",
            )
            .detail(format!(
                "largest single direct write and read accepted whole: {}{refused}{kernel_split}; pbio's default record is {} B{}",
                human_bytes(m.accepted_bytes),
                alignment::RECORD_BYTES,
                if ok { "" } else { ", which does not go through in one I/O" }
            ))
            .data(json!({"bound_bytes": m.bound_bytes}))
        }
    };
    out.push((max_io_check, None));
    out
}

pub(super) fn run_cell(device: &dyn Device, plan: CellPlan) -> Cell {
    let config = BenchConfig {
        rw: plan.rw,
        block_bytes: plan.block_bytes,
        queue_depth: plan.queue_depth,
        size_bytes: plan.size_bytes,
    };
    let outcome = match bench::run(&[device], config) {
        Ok(report) => {
            let d = &report.devices[0];
            Ok(CellResult {
                bytes: d.bytes,
                ios: d.ios,
                seconds: d.elapsed.as_secs_f64(),
                latency: Latency::of(&d.latency_ns),
                short_ios: d.short_ios,
                retries: d.retries,
                ring_setup: d.ring_setup.name(),
            })
        }
        Err(e) => Err(e.to_string()),
    };
    Cell { plan, outcome }
}

/// Throughput (best cell) and latency (qd 1, smallest block) per
/// direction; `buffered` is added to each detail (how the I/O was done).
pub(super) fn matrix_checks(matrix: &[Cell], buffered: &str) -> Vec<Check> {
    let mut out = Vec::with_capacity(4);
    let mut latency = Vec::with_capacity(2);
    for (rw, tp_name, lat_name) in [
        (Rw::Write, "write_throughput", "write_latency_p99"),
        (Rw::Read, "read_throughput", "read_latency_p99"),
    ] {
        let cells: Vec<&Cell> = matrix.iter().filter(|c| c.plan.rw == rw).collect();
        let failed: Vec<String> = cells
            .iter()
            .filter_map(|c| {
                c.outcome
                    .as_ref()
                    .err()
                    .map(|e| format!("{}: {e}", c.label()))
            })
            .collect();
        if !failed.is_empty() {
            out.push(
                Check::new(tp_name, Verdict::Fail, Value::Null, "MiB/s")
                    .better(Better::Higher)
                    .detail(failed.join("; ")),
            );
            latency.push(
                Check::new(lat_name, Verdict::Fail, Value::Null, "us")
                    .better(Better::Lower)
                    .detail(format!("the {} matrix failed", rw.name())),
            );
            continue;
        }
        let best = cells
            .iter()
            .filter_map(|c| c.outcome.as_ref().ok().map(|r| (c, r)))
            .max_by(|a, b| a.1.mib_per_sec().total_cmp(&b.1.mib_per_sec()));
        let Some((best_cell, best)) = best else {
            out.push(Check::skip(tp_name, "MiB/s", "no cells in the matrix"));
            latency.push(Check::skip(lat_name, "us", "no cells in the matrix"));
            continue;
        };
        out.push(
            Check::new(
                tp_name,
                Verdict::Pass,
                json!(round2(best.mib_per_sec())),
                "MiB/s",
            )
            .better(Better::Higher)
            .detail(format!(
                "best of {} cells: {:.1} MiB/s at bs={} qd={}{buffered}",
                cells.len(),
                best.mib_per_sec(),
                size_text(best_cell.plan.block_bytes as u64),
                best_cell.plan.queue_depth
            )),
        );
        let service = cells
            .iter()
            .filter(|c| c.plan.queue_depth == 1)
            .min_by_key(|c| c.plan.block_bytes)
            .and_then(|c| c.outcome.as_ref().ok().map(|r| (c, r)));
        latency.push(match service {
            None => Check::skip(lat_name, "us", "no queue depth 1 cell in the matrix"),
            Some((c, r)) => Check::new(lat_name, Verdict::Pass, json!(r.latency.p99_us()), "us")
                .better(Better::Lower)
                .detail(format!(
                    "{} at bs={} qd=1 ({} operations){buffered}",
                    r.latency.text(),
                    size_text(c.plan.block_bytes as u64),
                    r.latency.count
                ))
                .data(json!({"bs": c.plan.block_bytes, "qd": 1, "lat_us": r.latency.to_json()})),
        });
    }
    out.extend(latency);
    out
}

pub(super) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub(super) fn durability_checks(
    device: &dyn Device,
    io: &DevIo,
    id: &Identity,
    plan: &Plan,
    write_bytes: u64,
) -> Vec<Check> {
    let mut out = Vec::with_capacity(3);
    if durability::region_bytes(write_bytes) > id.capacity_bytes {
        for (name, unit) in [
            ("fsync_latency_p99", "us"),
            ("dsync_write_latency_p99", "us"),
        ] {
            out.push(Check::skip(
                name,
                unit,
                "the device is too small for the durable-write region",
            ));
        }
    } else {
        let series = [
            (
                "fsync_latency_p99",
                "fsync after each",
                durability::fsync_series(device, io, plan.sync_rounds, write_bytes),
            ),
            (
                "dsync_write_latency_p99",
                "RWF_DSYNC",
                durability::dsync_series(io, plan.sync_rounds, write_bytes),
            ),
        ];
        for (name, how, s) in series {
            let lat = Latency::of(&s.latency_ns);
            out.push(match s.error {
                Some((offset, e)) => {
                    let unsupported = matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
                    ) && name == "dsync_write_latency_p99";
                    if unsupported {
                        Check::skip(
                            name,
                            "us",
                            format!("this kernel does not take RWF_DSYNC: {e}"),
                        )
                    } else {
                        Check::new(name, Verdict::Fail, Value::Null, "us")
                            .better(Better::Lower)
                            .detail(format!(
                                "{how} write of {write_bytes} B at offset {offset}: {e} (after {} good)",
                                lat.count
                            ))
                    }
                }
                None => Check::new(name, Verdict::Pass, json!(lat.p99_us()), "us")
                    .better(Better::Lower)
                    .detail(format!(
                        "{} writes of {write_bytes} B, {how}: {}",
                        lat.count,
                        lat.text()
                    ))
                    .data(json!({"write_bytes": write_bytes, "lat_us": lat.to_json()})),
            });
        }
    }
    let cache = id.sysfs.as_ref().and_then(|s| {
        s.queue.get("write_cache").map(|w| {
            (
                s.name.clone(),
                w.clone(),
                s.queue_u64("fua").map(|f| f != 0),
            )
        })
    });
    out.push(match cache {
        Some((disk, setting, fua)) => {
            let whose = if id.kind == "file" {
                format!("disk {disk} under the filesystem")
            } else {
                format!("disk {disk}")
            };
            Check::new("write_cache", Verdict::Pass, json!(setting), "")
                .detail(format!(
                    "{whose}: {setting}, fua {}: {}",
                    fua.map(|f| if f { "1" } else { "0" }).unwrap_or("unknown"),
                    durability::write_cache_meaning(&setting, fua)
                ))
                .data(json!({"fua": fua}))
        }
        None => Check::skip(
            "write_cache",
            "",
            match (&id.filesystem, &id.sysfs) {
                (Some(fs), None) if fs.kind == "tmpfs" || fs.kind == "ramfs" => format!(
                    "{} keeps files in memory only: nothing written here survives a reboot or power cut",
                    fs.kind
                ),
                (Some(fs), None) => format!(
                    "{} has no disk of its own in sysfs: durability is the filesystem's (fsync above)",
                    fs.kind
                ),
                _ => "sysfs reports no write cache setting for this device".into(),
            },
        ),
    });
    out
}

/// Write (when `write`) and read back `spec`; FAIL with the first bad offset.
pub(super) fn pattern_check(
    name: &'static str,
    device: &dyn Device,
    io: &DevIo,
    spec: &PatternSpec,
    write: bool,
) -> Check {
    let fail = |detail: String| Check::new(name, Verdict::Fail, json!(0), "bytes").detail(detail);
    if spec.extents.is_empty() {
        return fail("no extents to check".into());
    }
    if write {
        if let Err((offset, e)) = pattern::write(io, spec) {
            return fail(format!("pattern write at offset {offset}: {e}"));
        }
        if let Err(e) = device.sync() {
            return fail(format!("fsync after the pattern write: {e}"));
        }
        if !device.direct_io() {
            // Read back from the medium, not from the page cache.
            if let Err(e) = io.drop_cache() {
                return fail(format!("dropping cached pages before read-back: {e}"));
            }
        }
    }
    let outcome = match pattern::verify(io, spec) {
        Ok(o) => o,
        Err((offset, e)) => return fail(format!("pattern read-back at offset {offset}: {e}")),
    };
    let how = if write {
        "written, synced and read back intact"
    } else {
        "read back intact"
    };
    outcome_check(name, spec, Ok(outcome), how)
}

/// The verdict of a pattern read-back, for every family: PASS with what
/// was checked and `how`, or FAIL naming the first bad offset.
pub(crate) fn outcome_check(
    name: &'static str,
    spec: &PatternSpec,
    outcome: Result<pattern::VerifyOutcome, (u64, std::io::Error)>,
    how: &str,
) -> Check {
    let outcome = match outcome {
        Ok(o) => o,
        Err((offset, e)) => {
            return Check::new(name, Verdict::Fail, json!(0), "bytes")
                .detail(format!("read at offset {offset}: {e}"))
        }
    };
    let extents = spec.extents.len();
    let data = json!({
        "extents": extents,
        "bad_units": outcome.bad_units,
        "first_bad_offset": outcome.first_bad.map(|f| f.0),
        "last_bad_offset": outcome.last_bad,
    });
    match outcome.first_bad {
        None => Check::new(name, Verdict::Pass, json!(outcome.bytes_checked), "bytes")
            .detail(format!(
                "{} in {extents} extents across the device {how} (nonce {:016x})",
                human_bytes(spec.bytes()),
                spec.nonce
            ))
            .data(data),
        Some((offset, found)) => Check::new(name, Verdict::Fail, json!(outcome.bytes_checked), "bytes")
            .detail(format!(
                "mismatch at offset {offset}: the {}-byte block there holds {found}; {} bad blocks of {} checked, the last at offset {}",
                pattern::UNIT_BYTES,
                outcome.bad_units,
                outcome.bytes_checked / pattern::UNIT_BYTES as u64,
                outcome.last_bad.unwrap_or(offset)
            ))
            .data(data),
    }
}
