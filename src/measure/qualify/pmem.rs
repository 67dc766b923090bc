//! Qualification of persistent memory (`pmem:PATH`, `/dev/pmem*`): the
//! device is used as pbio's backup ring uses it, through its mapping
//! (`Device::store`, `Device::load`) and `Device::persist` (cache-line
//! flushes + fence on a DAX mapping, msync otherwise).
//!
//! The run, in order:
//! 1. `identity`: the mapping's length, DAX or not, the persist mechanism
//!    in use, and what is behind it (the namespace's sysfs, or the
//!    filesystem of an emulating file);
//! 2. the throughput matrix: stores of 4K..4M blocks into the mapping, each
//!    made durable with `persist` (timed together: what a record costs),
//!    then loads out of it; HDR latency percentiles per operation;
//! 3. `persist_latency_p99`: `persist` alone after a store of 64 B, 4 KiB
//!    and 64 KiB;
//! 4. `pattern_verify`: the offset-stamped pattern (as for disks) stored
//!    through the mapping over the configured fraction, persisted, loaded
//!    back and compared; a FAIL names the first bad offset;
//! 5. `durability`: the device opened and mapped again (a second mapping
//!    of the medium) and, where the kernel allows it, read with O_DIRECT
//!    past the page cache: the pattern must be there.

use std::time::Instant;

use serde_json::{json, Value};

use super::io::AlignedBuf;
use super::pattern::{self, PatternSpec};
use super::{
    histogram, size_text, CellPlan, CellResult, Check, Event, Latency, Options, Report, Verdict,
    LATENCY_NS_MAX,
};
use crate::device::{Device, Durability};
use crate::measure::bench::Rw;
use crate::units::human_bytes;

/// Sizes of `persist` alone.
pub const PERSIST_SIZES: [usize; 3] = [64, 4096, 65536];
/// Bytes of one pattern store (and load).
const IO_BYTES: usize = 1 << 20;

/// The mapping of a device, for stores and loads by offset (through the
/// device's `store` and `load`).
struct Map<'d> {
    device: &'d dyn Device,
    len: usize,
}

impl<'d> Map<'d> {
    /// None: the device is not mapped.
    fn of(device: &'d dyn Device) -> Option<Map<'d>> {
        let len = device.mapped()?.len();
        Some(Map { device, len })
    }

    fn check(&self, offset: u64, len: usize) {
        assert!(
            offset
                .checked_add(len as u64)
                .is_some_and(|end| end <= self.len as u64),
            "{offset}+{len} beyond the mapping of {} bytes",
            self.len
        );
    }

    /// Copy `src` into the mapping at `offset`.
    fn store(&self, offset: u64, src: &[u8]) {
        self.check(offset, src.len());
        self.device
            .store(offset, src)
            .expect("a store within a mapping opened for writing");
    }

    /// Copy from the mapping at `offset` into `dst`.
    fn load(&self, offset: u64, dst: &mut [u8]) {
        self.check(offset, dst.len());
        self.device
            .load(offset, dst)
            .expect("a load within the mapping");
    }
}

/// The matrix: stores+persist, then loads; queue depth 1 (one CPU). A
/// cell is bounded as a disk's is: at most 1024 operations and 16 MiB
/// (`--quick`), 4096 operations and 256 MiB (full).
pub fn matrix_plan(quick: bool, capacity_bytes: u64) -> Vec<CellPlan> {
    let (sizes, ios_max, cell_max): (&[usize], u64, u64) = if quick {
        (&[4 << 10, 1 << 20], 1024, 16 << 20)
    } else {
        (&[4 << 10, 64 << 10, 1 << 20, 4 << 20], 4096, 256 << 20)
    };
    let mut out = Vec::with_capacity(2 * sizes.len());
    for rw in [Rw::Write, Rw::Read] {
        for &bs in sizes {
            let bs64 = bs as u64;
            if bs64 > capacity_bytes {
                continue;
            }
            out.push(CellPlan {
                rw,
                block_bytes: bs,
                queue_depth: 1,
                size_bytes: (bs64 * ios_max).min(cell_max).min(capacity_bytes) / bs64 * bs64,
            });
        }
    }
    out
}

fn record_ns(h: &mut hdrhistogram::Histogram<u64>, started: Instant) {
    let ns = started.elapsed().as_nanos() as u64;
    h.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
}

fn mechanism(d: Option<Durability>) -> (Option<bool>, String) {
    match d {
        Some(Durability::Flush(f)) => (Some(true), format!("{} + sfence", f.name())),
        Some(Durability::Msync) => (Some(false), "msync(MS_SYNC)".into()),
        None => (None, "none".into()),
    }
}

/// Run the pmem checks; `report` holds the identity and gets the rest.
pub fn run(device: &dyn Device, options: &Options, report: &mut Report, on: &mut dyn FnMut(Event)) {
    let push = Report::add;
    let (dax, how) = mechanism(device.durability_mechanism());
    let mapping = Map::of(device);
    report.identity.pmem = Some(json!({
        "mapping_bytes": mapping.as_ref().map(|m| m.len),
        "dax": dax,
        "persist": how,
    }));
    let id_check = identity_check(
        &report.identity,
        mapping.as_ref().map(|m| m.len),
        device.durability_mechanism(),
    );
    let usable = id_check.verdict == Verdict::Pass;
    push(report, id_check, on);
    let Some(map) = mapping.filter(|_| usable) else {
        let later = [
            "write_throughput",
            "read_throughput",
            "persist_latency_p99",
            "pattern_verify",
            "durability",
        ];
        report.not_run(&later, on);
        return;
    };
    let plan = super::plan(options, map.len as u64);

    on(Event::Step(
        "throughput: stores + persist, loads, through the mapping",
    ));
    for cell_plan in matrix_plan(options.quick, map.len as u64) {
        let outcome = run_cell(device, &map, &cell_plan);
        let cell = super::Cell {
            plan: cell_plan,
            outcome,
        };
        on(Event::Cell(&cell));
        report.matrix.push(cell);
    }
    let note = format!(" (through the mapping, {how})");
    for check in super::matrix_checks(&report.matrix, &note) {
        push(report, check, on);
    }

    on(Event::Step("persist latency"));
    push(
        report,
        persist_check(device, &map, plan.sync_rounds, &how),
        on,
    );

    on(Event::Step("pattern store, persist, load and verify"));
    let spec = PatternSpec {
        nonce: super::new_nonce(),
        extents: pattern::plan_extents(map.len as u64, plan.verify_bytes, 4096),
    };
    let check = pattern_check("pattern_verify", device, &map, &spec, true);
    let written = check.verdict == Verdict::Pass;
    push(report, check, on);
    report.pattern = Some(spec.clone());

    on(Event::Step("durability: a new mapping, O_DIRECT"));
    let check = if written {
        let in_memory = report
            .identity
            .filesystem
            .as_ref()
            .is_some_and(|fs| fs.kind == "tmpfs" || fs.kind == "ramfs");
        durability_check(device, &spec, &how, in_memory)
    } else {
        Check::new("durability", Verdict::Fail, json!(0), "bytes")
            .detail("not run: the pattern did not read back through the first mapping")
    };
    push(report, check, on);
}

fn identity_check(
    id: &super::identity::Identity,
    mapping: Option<usize>,
    durability: Option<Durability>,
) -> Check {
    let mut parts = vec![format!(
        "pmem, mapping of {}",
        human_bytes(id.capacity_bytes)
    )];
    let mut problems = Vec::new();
    match durability {
        Some(Durability::Flush(f)) => parts.push(format!(
            "DAX: stores made durable by {} per 64-byte line + sfence",
            f.name()
        )),
        Some(Durability::Msync) => parts.push(
            "not DAX (MAP_SYNC refused or a namespace through the page cache): stores made durable by msync(MS_SYNC)"
                .into(),
        ),
        None => problems.push("the device reports no persist mechanism".into()),
    }
    if mapping.is_none() {
        problems.push("the device is not mapped".into());
    }
    if let Some(s) = &id.sysfs {
        let dax = s
            .queue
            .get("dax")
            .map(|d| format!(", queue/dax {d}"))
            .unwrap_or_default();
        parts.push(format!("namespace {}{dax}", s.name));
    }
    if let (Some(l), Some(p)) = (id.logical_block_bytes, id.physical_block_bytes) {
        parts.push(format!("logical block {l} B, physical {p} B"));
    }
    if let Some(fs) = &id.filesystem {
        let volatile = if fs.kind == "tmpfs" || fs.kind == "ramfs" {
            ": an emulation in memory, nothing survives a reboot"
        } else {
            ""
        };
        parts.push(format!("a file on {}{volatile}", fs.kind));
    }
    super::identity_verdict(id.capacity_bytes, problems, &parts)
}

fn run_cell(device: &dyn Device, map: &Map, plan: &CellPlan) -> Result<CellResult, String> {
    let bs = plan.block_bytes;
    let mut buf = AlignedBuf::new(bs, 4096);
    pattern::fill(buf.as_mut_slice(), 0, super::new_nonce());
    let slots = map.len as u64 / bs as u64;
    let ios = plan.size_bytes / bs as u64;
    let mut h = histogram();
    let mut sink = 0u8;
    let started = Instant::now();
    for i in 0..ios {
        let offset = (i % slots) * bs as u64;
        let t = Instant::now();
        match plan.rw {
            Rw::Write => {
                map.store(offset, buf.as_slice());
                device
                    .persist(offset, bs as u64)
                    .map_err(|e| format!("persist of {bs} B at offset {offset}: {e}"))?;
            }
            Rw::Read => {
                map.load(offset, buf.as_mut_slice());
                sink ^= std::hint::black_box(buf.as_slice()[bs - 1]);
            }
        }
        record_ns(&mut h, t);
    }
    std::hint::black_box(sink);
    Ok(CellResult {
        bytes: ios * bs as u64,
        ios,
        seconds: started.elapsed().as_secs_f64(),
        latency: Latency::of(&h),
        short_ios: 0,
        retries: 0,
        ring_setup: "mapping, one CPU",
    })
}

fn persist_check(device: &dyn Device, map: &Map, rounds: u32, how: &str) -> Check {
    let name = "persist_latency_p99";
    let mut by_size = serde_json::Map::new();
    let mut texts = Vec::with_capacity(PERSIST_SIZES.len());
    let mut value = Value::Null;
    for &size in &PERSIST_SIZES {
        let slots = (map.len / size).min(256) as u64;
        let src = vec![0x5au8; size];
        let mut h = histogram();
        for i in 0..u64::from(rounds) {
            let offset = (i % slots) * size as u64;
            map.store(offset, &src);
            let t = Instant::now();
            if let Err(e) = device.persist(offset, size as u64) {
                return Check::new(name, Verdict::Fail, Value::Null, "us")
                    .better(super::Better::Lower)
                    .detail(format!(
                        "persist ({how}) of {size} B at offset {offset}: {e}"
                    ));
            }
            record_ns(&mut h, t);
        }
        let lat = Latency::of(&h);
        if size == 4096 {
            value = json!(lat.p99_us());
        }
        texts.push(format!("{}: {}", size_text(size as u64), lat.text()));
        by_size.insert(size.to_string(), lat.to_json());
    }
    Check::new(name, Verdict::Pass, value, "us")
        .better(super::Better::Lower)
        .detail(format!(
            "{how} after a store, {rounds} times per size (the value: 4K); {}",
            texts.join("; ")
        ))
        .data(json!({"lat_us_by_bytes": by_size}))
}

/// Store (when `write`) and persist the pattern, then load it back from
/// `map` and compare; FAIL with the first bad offset.
fn pattern_check(
    name: &'static str,
    device: &dyn Device,
    map: &Map,
    spec: &PatternSpec,
    write: bool,
) -> Check {
    if spec.extents.is_empty() {
        return Check::new(name, Verdict::Fail, json!(0), "bytes").detail("no extents to check");
    }
    let end = spec.extents.iter().map(|&(o, l)| o + l).max().unwrap_or(0);
    if end > map.len as u64 {
        return Check::new(name, Verdict::Fail, json!(0), "bytes").detail(format!(
            "the pattern reaches offset {end}, beyond this mapping's {} bytes: not the device it was written on",
            map.len
        ));
    }
    let mut buf = AlignedBuf::new(IO_BYTES, 4096);
    if write {
        for &(start, len) in &spec.extents {
            let mut at = start;
            while at < start + len {
                let n = (start + len - at).min(IO_BYTES as u64) as usize;
                let chunk = &mut buf.as_mut_slice()[..n];
                pattern::fill(chunk, at, spec.nonce);
                map.store(at, chunk);
                at += n as u64;
            }
            if let Err(e) = device.persist(start, len) {
                return Check::new(name, Verdict::Fail, json!(0), "bytes")
                    .detail(format!("persist of the pattern at offset {start}: {e}"));
            }
        }
    }
    let out = pattern::verify_with(spec, &mut buf, |at, chunk| {
        map.load(at, chunk);
        Ok(())
    });
    super::outcome_check(
        name,
        spec,
        out,
        if write {
            "stored, persisted and loaded back intact"
        } else {
            "loaded back intact"
        },
    )
}

/// The pattern, persisted, through a second open and mapping of the
/// device and (where allowed) O_DIRECT reads of what is behind it.
fn durability_check(device: &dyn Device, spec: &PatternSpec, how: &str, in_memory: bool) -> Check {
    let name = "durability";
    let failed = |detail: String| Check::new(name, Verdict::Fail, json!(0), "bytes").detail(detail);
    let path = device.path();
    let again = match super::reopen(device) {
        Ok(d) => d,
        Err(e) => return failed(format!("opening the device again: {e}")),
    };
    let Some(map) = Map::of(again.as_ref()) else {
        return failed("the device opened again is not mapped".into());
    };
    let mut c = pattern_check(name, again.as_ref(), &map, spec, false);
    if c.verdict != Verdict::Pass {
        c.detail = format!("through a new mapping after {how}: {}", c.detail);
        return c;
    }
    drop(again);
    // Past the page cache: O_DIRECT on the file or namespace behind it.
    let target = crate::device::backing(path)
        .mapped_file()
        .unwrap_or_else(|| path.to_path_buf());
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    let direct = match crate::device::open_maybe_direct(&options, &target) {
        Ok((file, true)) => {
            let mut buf = AlignedBuf::new(IO_BYTES, 4096);
            let out = pattern::verify_with(spec, &mut buf, |at, chunk| {
                use std::os::unix::fs::FileExt;
                file.read_exact_at(chunk, at)
            });
            let d = super::outcome_check(name, spec, out, "read back with O_DIRECT");
            if d.verdict != Verdict::Pass {
                let mut d = d;
                d.detail = format!(
                    "intact through a new mapping, but read with O_DIRECT (past the page cache) after {how}: {}",
                    d.detail
                );
                return d;
            }
            if in_memory {
                "; read again with O_DIRECT: intact (on tmpfs that is the same memory: no medium behind it)".to_string()
            } else {
                "; read again with O_DIRECT, past the page cache: intact".to_string()
            }
        }
        Ok((_, false)) => format!(
            "; O_DIRECT is refused on {} (the new mapping may share the page cache with the first)",
            target.display()
        ),
        Err(e) => return failed(format!("opening {} for O_DIRECT: {e}", target.display())),
    };
    c.detail = format!(
        "{} persisted ({how}), then the device opened and mapped again: intact{direct}",
        human_bytes(spec.bytes())
    );
    c
}

/// Load the pattern an earlier run left (writes nothing).
pub fn recheck(device: &dyn Device, spec: &PatternSpec) -> Check {
    match Map::of(device) {
        None => Check::new("pattern_recheck", Verdict::Fail, json!(0), "bytes")
            .detail("the device is not mapped"),
        Some(map) => pattern_check("pattern_recheck", device, &map, spec, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_fits_the_mapping() {
        let m = matrix_plan(true, 64 << 20);
        assert_eq!(m.len(), 4);
        assert!(m.iter().all(|c| c.queue_depth == 1));
        let bytes: Vec<u64> = m.iter().map(|c| c.size_bytes).collect();
        assert_eq!(bytes, [4 << 20, 16 << 20, 4 << 20, 16 << 20]);
        let m = matrix_plan(false, 6 << 20);
        assert_eq!(m.len(), 8);
        assert!(m
            .iter()
            .all(|c| c.size_bytes <= 6 << 20 && c.size_bytes > 0));
        assert_eq!(m[3].size_bytes, 4 << 20);
    }
}
