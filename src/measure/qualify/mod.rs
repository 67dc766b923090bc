//! `pbio qualify`: a hardware qualification run of one device, ending in a
//! PASS/FAIL verdict per check and a versioned report a lab can archive and
//! compare between runs (`compare`).
//!
//! The run, in order (each step a check, or several):
//! 1. identity and geometry (`identity`): block sizes (BLKSSZGET,
//!    BLKPBSZGET), capacity, rotational, model/vendor/serial/firmware and
//!    the queue limits from sysfs; for a file device its filesystem;
//! 2. O_DIRECT limits found by trying (`alignment`): offset/length
//!    granularity, buffer alignment, the largest single I/O (bounded);
//! 3. a matrix of sequential writes and reads over block sizes and queue
//!    depths through pbio's own rings (`measure::bench`), with HDR latency
//!    percentiles;
//! 4. durability (`durability`): fsync latency after a write, RWF_DSYNC
//!    write latency, the write cache setting;
//! 5. the pattern check (`pattern`): offset-stamped blocks over extents
//!    spread across the device, written, made durable, read back.
//!
//! Every step runs whatever happened before it: an I/O error is the FAIL
//! of its check (with the operation, offset and errno), not the end of the
//! run. What the run decides (sizes, matrix, extents) is a pure function of
//! the options and the capacity (`plan`), tested alone.
//!
//! Device families: random-access devices (file, block) get the checks
//! above. Tapes (st drives, the `vtape:` emulator) get theirs (`tape`):
//! drive status, block limits, streaming throughput, variable-size blocks
//! read back one per read, filemarks, spacing, rewind, end of data. pmem
//! gets its own (`pmem`): the mapping, stores + persist, persist latency,
//! the pattern through the mapping, durability through a second mapping.
//! NBD exports get theirs (`nbd`): the handshake's flags and block sizes,
//! the matrix through the NBD pipe, NBD_CMD_FLUSH latency, the pattern by
//! synchronous requests, and durability through a second connection. No
//! O_DIRECT probing and no ioctls: the descriptor is a socket.
//! Every family reports in the same structure (checks, matrix, pattern),
//! so `--compare` and `--recheck` work alike.

pub mod alignment;
pub mod compare;
pub mod durability;
pub mod identity;
pub mod io;
pub mod nbd;
pub mod pattern;
pub mod pmem;
pub mod tape;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::device::{Device, Kind};
use crate::format::BLOCK_BYTES;
use crate::measure::bench::{self, BenchConfig, Rw};
use crate::units::human_bytes;
use identity::Identity;
use io::DevIo;
use pattern::PatternSpec;

/// Version of the report's JSON layout. Raise it when a field changes
/// meaning or goes away (adding fields keeps it).
pub const SCHEMA: u64 = 1;
/// Latencies above this are clamped (an hour: something is badly wrong).
pub const LATENCY_NS_MAX: u64 = 3_600_000_000_000;
/// The smallest device worth qualifying.
pub const CAPACITY_MIN_BYTES: u64 = 4 << 20;
/// Defaults of the pattern check: this fraction of the device...
pub const VERIFY_FRACTION_DEFAULT: f64 = 0.01;
/// ...at most this much (full run; `--quick`: a quarter)...
pub const VERIFY_BYTES_DEFAULT_MAX: u64 = 256 << 20;
/// ...and at least this much (or the whole of a smaller device).
pub const VERIFY_BYTES_MIN: u64 = 4 << 20;

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static histogram bounds are valid")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// Not applicable or not measurable here; the reason says which.
    Skip,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        }
    }
}

/// Which way a check's value improves (what `compare` calls a regression).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

impl Better {
    pub fn name(self) -> &'static str {
        match self {
            Better::Higher => "higher",
            Better::Lower => "lower",
        }
    }
}

/// One line of the verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    /// A number, a string, or null when there is nothing to show.
    pub value: Value,
    pub unit: &'static str,
    /// The reason for the verdict, in words.
    pub detail: String,
    pub better: Option<Better>,
    /// Structured extras (latency summaries, offsets), or null.
    pub data: Value,
}

impl Check {
    fn new(name: &'static str, verdict: Verdict, value: Value, unit: &'static str) -> Check {
        Check {
            name,
            verdict,
            value,
            unit,
            detail: String::new(),
            better: None,
            data: Value::Null,
        }
    }

    fn detail(mut self, detail: impl Into<String>) -> Check {
        self.detail = detail.into();
        self
    }

    fn better(mut self, better: Better) -> Check {
        self.better = Some(better);
        self
    }

    fn data(mut self, data: Value) -> Check {
        self.data = data;
        self
    }

    fn skip(name: &'static str, unit: &'static str, why: impl Into<String>) -> Check {
        Check::new(name, Verdict::Skip, Value::Null, unit).detail(why)
    }

    pub fn to_json(&self) -> Value {
        let mut j = json!({
            "name": self.name,
            "verdict": self.verdict.name(),
            "value": self.value,
            "unit": self.unit,
            "detail": self.detail,
        });
        if let Some(b) = self.better {
            j["better"] = json!(b.name());
        }
        if !self.data.is_null() {
            j["data"] = self.data.clone();
        }
        j
    }
}

/// Percentiles of a latency histogram, nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub min_ns: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            count: h.len(),
            min_ns: h.min(),
            mean_ns: h.mean(),
            p50_ns: h.value_at_quantile(0.5),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
        }
    }

    pub fn p99_us(&self) -> f64 {
        us(self.p99_ns)
    }

    /// Microseconds, as `pbio bench --json` gives them.
    pub fn to_json(&self) -> Value {
        json!({
            "count": self.count,
            "min": us(self.min_ns),
            "mean": self.mean_ns / 1000.0,
            "p50": us(self.p50_ns),
            "p99": us(self.p99_ns),
            "p999": us(self.p999_ns),
            "max": us(self.max_ns),
        })
    }

    pub fn text(&self) -> String {
        format!(
            "p50 {:.0} p99 {:.0} p99.9 {:.0} max {:.0} us",
            us(self.p50_ns),
            us(self.p99_ns),
            us(self.p999_ns),
            us(self.max_ns)
        )
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn mib_per_sec(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs.max(1e-9)
}

/// One cell of the throughput matrix as planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CellPlan {
    pub rw: Rw,
    pub block_bytes: usize,
    pub queue_depth: usize,
    /// Bytes to move, from offset 0.
    pub size_bytes: u64,
}

/// What one cell measured.
#[derive(Clone, Debug, PartialEq)]
pub struct CellResult {
    pub bytes: u64,
    pub ios: u64,
    pub seconds: f64,
    pub latency: Latency,
    pub short_ios: u64,
    pub retries: u64,
    pub ring_setup: &'static str,
}

impl CellResult {
    pub fn mib_per_sec(&self) -> f64 {
        mib_per_sec(self.bytes, self.seconds)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub plan: CellPlan,
    pub outcome: Result<CellResult, String>,
}

impl Cell {
    pub fn label(&self) -> String {
        format!(
            "{} bs={} qd={}",
            self.plan.rw.name(),
            size_text(self.plan.block_bytes as u64),
            self.plan.queue_depth
        )
    }

    pub fn to_json(&self) -> Value {
        let mut j = json!({
            "rw": self.plan.rw.name(),
            "bs": self.plan.block_bytes,
            "qd": self.plan.queue_depth,
            "size_bytes": self.plan.size_bytes,
        });
        match &self.outcome {
            Ok(r) => {
                j["bytes"] = json!(r.bytes);
                j["ios"] = json!(r.ios);
                j["seconds"] = json!(r.seconds);
                j["mib_per_sec"] = json!(r.mib_per_sec());
                j["iops"] = json!(r.ios as f64 / r.seconds.max(1e-9));
                j["lat_us"] = r.latency.to_json();
                j["short_ios"] = json!(r.short_ios);
                j["retries"] = json!(r.retries);
                j["ring_setup"] = json!(r.ring_setup);
                j["error"] = Value::Null;
            }
            Err(e) => j["error"] = json!(e),
        }
        j
    }
}

/// `4K`, `1M`: block sizes as people write them.
pub fn size_text(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b.is_multiple_of(1 << 20) => format!("{}M", b >> 20),
        b if b >= 1 << 10 && b.is_multiple_of(1 << 10) => format!("{}K", b >> 10),
        b => b.to_string(),
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// A small matrix and smaller bounds (a minute or less on most disks).
    pub quick: bool,
    /// The fraction of the device the pattern check covers; None: the
    /// default (1%, at least 4 MiB, at most 256 MiB / 64 MiB quick).
    pub verify_fraction: Option<f64>,
}

impl Options {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(f) = self.verify_fraction {
            if !(f > 0.0 && f <= 1.0) {
                return Err(format!(
                    "--verify-fraction {f} must be above 0 and at most 1 (or a percentage up to 100%)"
                ));
            }
        }
        Ok(())
    }
}

/// Everything the run will do, from the options and the capacity.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Writes first (every read cell reads what a write cell wrote).
    pub matrix: Vec<CellPlan>,
    /// The largest single I/O tried.
    pub max_io_bound_bytes: u64,
    /// Durable writes of each kind (fsync, RWF_DSYNC).
    pub sync_rounds: u32,
    /// Bytes the pattern check covers.
    pub verify_bytes: u64,
}

/// Block sizes and queue depths of the matrix.
pub fn matrix_axes(quick: bool) -> (&'static [usize], &'static [usize]) {
    if quick {
        (&[4 << 10, 1 << 20], &[1, 16])
    } else {
        (&[4 << 10, 64 << 10, 1 << 20, 4 << 20], &[1, 4, 16, 32])
    }
}

pub fn plan(options: &Options, capacity_bytes: u64) -> Plan {
    let (sizes, depths) = matrix_axes(options.quick);
    // Each cell moves a bounded number of operations and bytes.
    let (ios_max, cell_bytes_max): (u64, u64) = if options.quick {
        (1024, 16 << 20)
    } else {
        (4096, 256 << 20)
    };
    let usable = capacity_bytes / BLOCK_BYTES as u64 * BLOCK_BYTES as u64;
    let mut matrix = Vec::with_capacity(2 * sizes.len() * depths.len());
    for rw in [Rw::Write, Rw::Read] {
        for &bs in sizes {
            for &qd in depths {
                let size = (bs as u64 * ios_max).min(cell_bytes_max).min(usable);
                matrix.push(CellPlan {
                    rw,
                    block_bytes: bs,
                    queue_depth: qd,
                    size_bytes: size,
                });
            }
        }
    }
    let verify_bytes = match options.verify_fraction {
        Some(f) => ((capacity_bytes as f64 * f) as u64).max(pattern::UNIT_BYTES as u64),
        None => {
            let cap = if options.quick {
                VERIFY_BYTES_DEFAULT_MAX / 4
            } else {
                VERIFY_BYTES_DEFAULT_MAX
            };
            ((capacity_bytes as f64 * VERIFY_FRACTION_DEFAULT) as u64).clamp(VERIFY_BYTES_MIN, cap)
        }
    }
    .min(usable);
    Plan {
        matrix,
        max_io_bound_bytes: if options.quick { 16 << 20 } else { 64 << 20 },
        sync_rounds: if options.quick { 16 } else { 128 },
        verify_bytes,
    }
}

/// The whole outcome of a run.
#[derive(Clone, Debug)]
pub struct Report {
    pub started_unix_secs: u64,
    pub seconds: f64,
    pub options: Options,
    pub identity: Identity,
    pub checks: Vec<Check>,
    pub matrix: Vec<Cell>,
    /// What the pattern check wrote (for `--recheck`), when it ran.
    pub pattern: Option<PatternSpec>,
    /// A pattern checked again from an earlier report: that report's path.
    pub recheck_of: Option<String>,
    /// Set by the caller after `compare`.
    pub compare: Option<Value>,
}

impl Report {
    /// FAIL when any check failed.
    pub fn verdict(&self) -> Verdict {
        if self.checks.iter().any(|c| c.verdict == Verdict::Fail) {
            Verdict::Fail
        } else {
            Verdict::Pass
        }
    }

    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The report object (schema `SCHEMA`).
    pub fn to_json(&self) -> Value {
        let mut j = json!({
            "schema": SCHEMA,
            "tool": {"name": "pbio", "version": env!("CARGO_PKG_VERSION")},
            "started_unix_secs": self.started_unix_secs,
            "seconds": self.seconds,
            "options": {
                "quick": self.options.quick,
                "verify_fraction": self.options.verify_fraction,
            },
            "device": self.identity.to_json(),
            "checks": self.checks.iter().map(Check::to_json).collect::<Vec<_>>(),
            "matrix": self.matrix.iter().map(Cell::to_json).collect::<Vec<_>>(),
            "pattern": self.pattern.as_ref().map(|p| json!({
                "unit_bytes": pattern::UNIT_BYTES,
                "nonce": format!("{:016x}", p.nonce),
                "bytes": p.bytes(),
                "extents": p.extents.iter().map(|&(o, l)| json!([o, l])).collect::<Vec<_>>(),
            })),
            "verdict": self.verdict().name(),
        });
        if let Some(path) = &self.recheck_of {
            j["recheck_of"] = json!(path);
        }
        if let Some(c) = &self.compare {
            j["compare"] = c.clone();
        }
        j
    }
}

/// The pattern an earlier report says its run wrote.
pub fn pattern_of_report(report: &Value) -> Result<PatternSpec, String> {
    let p = &report["pattern"];
    if p.is_null() {
        return Err("the report has no pattern (its pattern check did not run)".into());
    }
    if p["unit_bytes"].as_u64() != Some(pattern::UNIT_BYTES as u64) {
        return Err(format!(
            "pattern unit_bytes {} is not {}",
            p["unit_bytes"],
            pattern::UNIT_BYTES
        ));
    }
    let nonce = p["nonce"]
        .as_str()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or("pattern nonce is not 16 hex digits")?;
    let extents = p["extents"]
        .as_array()
        .ok_or("pattern extents is not an array")?
        .iter()
        .map(|e| match (e[0].as_u64(), e[1].as_u64()) {
            (Some(o), Some(l))
                if o.is_multiple_of(pattern::UNIT_BYTES as u64)
                    && l.is_multiple_of(pattern::UNIT_BYTES as u64)
                    && l > 0 =>
            {
                Ok((o, l))
            }
            _ => Err(format!(
                "pattern extent {e} is not [offset, length] in whole units"
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if extents.is_empty() {
        return Err("pattern has no extents".into());
    }
    Ok(PatternSpec { nonce, extents })
}

/// What the run reports as it goes (the CLI shows it).
pub enum Event<'a> {
    /// A step starts (for a progress line).
    Step(&'a str),
    Check(&'a Check),
    Cell(&'a Cell),
}

#[derive(Debug, thiserror::Error)]
pub enum QualifyError {
    #[error("device {device}: {why}")]
    Unsupported { device: String, why: String },
}

/// How a device family is qualified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// Offsets anywhere: file, block.
    RandomAccess,
    /// One block after the other, filemarks: st drives, the emulator.
    Tape,
    /// Mapped into memory, made durable by `persist`.
    Pmem,
    /// A remote export over NBD: requests on a socket, NBD_CMD_FLUSH.
    Nbd,
}

/// Which checks a device gets. Kinds without checks are refused, never
/// run through checks that do not fit them.
fn family(device: &dyn Device) -> Result<Family, QualifyError> {
    #[allow(unreachable_patterns)] // Kind grows: each needs its own arm.
    match device.kind() {
        Kind::File | Kind::Block => Ok(Family::RandomAccess),
        Kind::Tape | Kind::VirtualTape => Ok(Family::Tape),
        Kind::Pmem => Ok(Family::Pmem),
        Kind::Nbd if device.nbd().is_some() => Ok(Family::Nbd),
        other => Err(QualifyError::Unsupported {
            device: device.path().display().to_string(),
            why: format!(
                "qualify has no checks for {other:?} devices yet (files, block devices, tapes, pmem and NBD exports)"
            ),
        }),
    }
}

fn now_unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn new_nonce() -> u64 {
    let id = crate::media::new_set_id();
    u64::from_le_bytes(id.0[..8].try_into().expect("8 of 16 bytes"))
}

/// The identity check: pbio can use the device as it describes itself.
fn identity_check(id: &Identity) -> Check {
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

/// Run the whole qualification on an open device (opened for writing).
pub fn run(
    device: &dyn Device,
    options: &Options,
    on: &mut dyn FnMut(Event),
) -> Result<Report, QualifyError> {
    let family = family(device)?;
    options
        .validate()
        .map_err(|why| QualifyError::Unsupported {
            device: device.path().display().to_string(),
            why,
        })?;
    let started = Instant::now();
    let started_unix_secs = now_unix_secs();
    let identity = identity::identify(device);
    if family != Family::RandomAccess {
        let mut report = Report {
            started_unix_secs,
            seconds: 0.0,
            options: options.clone(),
            identity,
            checks: Vec::new(),
            matrix: Vec::new(),
            pattern: None,
            recheck_of: None,
            compare: None,
        };
        match family {
            Family::Tape => tape::run(device, options, &mut report, on),
            Family::Nbd => nbd::run(device, options, &mut report, on),
            _ => pmem::run(device, options, &mut report, on),
        }
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let id_check = identity_check(&identity);
    on(Event::Check(&id_check));
    if id_check.verdict == Verdict::Fail && identity.capacity_bytes < CAPACITY_MIN_BYTES {
        return Err(QualifyError::Unsupported {
            device: identity.path.clone(),
            why: id_check.detail,
        });
    }
    let plan = plan(options, identity.capacity_bytes);
    let io = DevIo::new(device);
    let mut report = Report {
        started_unix_secs,
        seconds: 0.0,
        options: options.clone(),
        identity,
        checks: vec![id_check],
        matrix: Vec::new(),
        pattern: None,
        recheck_of: None,
        compare: None,
    };
    let push = |report: &mut Report, check: Check, on: &mut dyn FnMut(Event)| {
        on(Event::Check(&check));
        report.checks.push(check);
    };

    // 2. O_DIRECT limits.
    on(Event::Step("O_DIRECT limits"));
    let granularity = alignment_checks(device, &io, &report.identity, &plan)
        .into_iter()
        .fold(None, |g, (check, found)| {
            push(&mut report, check, on);
            g.or(found)
        });

    // 3. The matrix, writes first.
    on(Event::Step("throughput matrix"));
    let mut reads_prepared = false;
    for cell_plan in &plan.matrix {
        if cell_plan.rw == Rw::Read && !reads_prepared {
            // Reads come from the medium, not from what a buffered file
            // device still has in memory. A failure here is not judged
            // here: the durability checks below fsync and report it.
            reads_prepared = true;
            let _ = device.sync();
            if !device.direct_io() {
                let _ = io.drop_cache();
            }
        }
        let cell = run_cell(device, *cell_plan);
        on(Event::Cell(&cell));
        report.matrix.push(cell);
    }
    let buffered = if device.direct_io() {
        ""
    } else {
        " (buffered I/O: the page cache, not only the device)"
    };
    for check in matrix_checks(&report.matrix, buffered) {
        push(&mut report, check, on);
    }

    // 4. Durability.
    on(Event::Step("durability"));
    let write_bytes = granularity.unwrap_or(0).max(BLOCK_BYTES as u64);
    for check in durability_checks(device, &io, &report.identity, &plan, write_bytes) {
        push(&mut report, check, on);
    }

    // 5. The pattern, last: the device ends holding it (and `--recheck`
    // can read it again later, after a power cut for instance).
    on(Event::Step("pattern write, read-back and verify"));
    let align = granularity
        .unwrap_or(BLOCK_BYTES as u64)
        .max(BLOCK_BYTES as u64);
    let spec = PatternSpec {
        nonce: new_nonce(),
        extents: pattern::plan_extents(report.identity.capacity_bytes, plan.verify_bytes, align),
    };
    let check = pattern_check("pattern_verify", device, &io, &spec, true);
    report.pattern = Some(spec);
    push(&mut report, check, on);

    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Read back the pattern an earlier run left (writes nothing).
pub fn recheck(
    device: &dyn Device,
    spec: &PatternSpec,
    report_path: &str,
    on: &mut dyn FnMut(Event),
) -> Result<Report, QualifyError> {
    let family = family(device)?;
    let started = Instant::now();
    let identity = identity::identify(device);
    let id_check = identity_check(&identity);
    on(Event::Check(&id_check));
    let mut checks = vec![id_check];
    let end = spec.extents.iter().map(|&(o, l)| o + l).max().unwrap_or(0);
    let check = if family == Family::Tape {
        tape::recheck(device, spec)
    } else if end > identity.capacity_bytes {
        Check::new("pattern_recheck", Verdict::Fail, json!(0), "bytes").detail(format!(
            "the report's pattern reaches offset {end}, beyond this device's {} bytes: not the device that report was made on",
            identity.capacity_bytes
        ))
    } else {
        if family == Family::Pmem {
            pmem::recheck(device, spec)
        } else if family == Family::Nbd {
            nbd::recheck(device, spec)
        } else {
            let io = DevIo::new(device);
            if !device.direct_io() {
                let _ = io.drop_cache();
            }
            pattern_check("pattern_recheck", device, &io, spec, false)
        }
    };
    on(Event::Check(&check));
    checks.push(check);
    Ok(Report {
        started_unix_secs: now_unix_secs(),
        seconds: started.elapsed().as_secs_f64(),
        options: Options {
            quick: false,
            verify_fraction: None,
        },
        identity,
        checks,
        matrix: Vec::new(),
        pattern: Some(spec.clone()),
        recheck_of: Some(report_path.to_string()),
        compare: None,
    })
}

/// alignment_offset, alignment_memory, max_io; each with the granularity
/// it found (the first one's is the one used afterwards).
fn alignment_checks(
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

fn run_cell(device: &dyn Device, plan: CellPlan) -> Cell {
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
fn matrix_checks(matrix: &[Cell], buffered: &str) -> Vec<Check> {
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

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn durability_checks(
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
fn pattern_check(
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn plans_are_bounded() {
        let quick = Options {
            quick: true,
            verify_fraction: None,
        };
        let p = plan(&quick, 64 * MIB);
        assert_eq!(p.matrix.len(), 8);
        assert!(p.matrix[..4].iter().all(|c| c.rw == Rw::Write));
        assert!(p.matrix[4..].iter().all(|c| c.rw == Rw::Read));
        for c in &p.matrix {
            assert!(c.size_bytes <= 16 * MIB && c.size_bytes.is_multiple_of(4096));
            assert!(c.size_bytes >= c.block_bytes as u64);
        }
        assert_eq!(
            p.verify_bytes, VERIFY_BYTES_MIN,
            "1% of 64M is below the floor"
        );

        let full = Options {
            quick: false,
            verify_fraction: None,
        };
        let p = plan(&full, 1 << 40);
        assert_eq!(p.matrix.len(), 32);
        let total: u64 = p.matrix.iter().map(|c| c.size_bytes).sum();
        assert!(total <= 8 << 30, "{total}");
        assert_eq!(p.verify_bytes, VERIFY_BYTES_DEFAULT_MAX);
        // An explicit fraction is not capped.
        let all = Options {
            quick: false,
            verify_fraction: Some(1.0),
        };
        assert_eq!(plan(&all, 1 << 40).verify_bytes, 1 << 40);
        // A small device bounds every cell.
        let p = plan(&full, 5 * MIB + 100);
        assert!(p.matrix.iter().all(|c| c.size_bytes == 5 * MIB));
    }

    #[test]
    fn fractions_are_checked() {
        for f in [0.0, -0.5, 1.5, f64::NAN] {
            let o = Options {
                quick: true,
                verify_fraction: Some(f),
            };
            assert!(o.validate().is_err(), "{f}");
        }
    }

    #[test]
    fn size_texts() {
        assert_eq!(size_text(4096), "4K");
        assert_eq!(size_text(1 << 20), "1M");
        assert_eq!(size_text(4 << 20), "4M");
        assert_eq!(size_text(1000), "1000");
    }

    #[test]
    fn a_report_round_trips_its_pattern() {
        let spec = PatternSpec {
            nonce: 0xdead_beef_0000_0001,
            extents: vec![(0, 4096), (1 << 20, 8192)],
        };
        let j = json!({"pattern": {
            "unit_bytes": 512,
            "nonce": format!("{:016x}", spec.nonce),
            "extents": [[0, 4096], [1 << 20, 8192]],
        }});
        assert_eq!(pattern_of_report(&j).unwrap(), spec);
        assert!(pattern_of_report(&json!({})).is_err());
        let bad = json!({"pattern": {"unit_bytes": 512, "nonce": "00", "extents": [[1, 2]]}});
        assert!(pattern_of_report(&bad).is_err());
    }

    #[test]
    fn qualifies_a_file_device() {
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::device::DeviceSpec::parse(&format!(
            "{},size=8M",
            dir.path().join("d.img").display()
        ))
        .unwrap();
        let dev = crate::device::open(&spec, crate::device::Mode::Write).unwrap();
        let options = Options {
            quick: true,
            verify_fraction: Some(0.5),
        };
        let mut events = 0;
        let report = run(dev.as_ref(), &options, &mut |_| events += 1).unwrap();
        assert!(events > report.checks.len());
        let names: Vec<&str> = report.checks.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "identity",
                "alignment_offset",
                "alignment_memory",
                "max_io",
                "write_throughput",
                "read_throughput",
                "write_latency_p99",
                "read_latency_p99",
                "fsync_latency_p99",
                "dsync_write_latency_p99",
                "write_cache",
                "pattern_verify",
            ]
        );
        let pv = report.check("pattern_verify").unwrap();
        assert_eq!(pv.verdict, Verdict::Pass, "{pv:?}");
        assert_eq!(pv.value, json!(4 * MIB));
        assert_eq!(report.verdict(), Verdict::Pass, "{:#?}", report.checks);
        let j = report.to_json();
        assert_eq!(j["schema"], SCHEMA);
        assert_eq!(
            pattern_of_report(&j).unwrap(),
            *report.pattern.as_ref().unwrap()
        );

        // Reading the pattern again passes; after damage it names the offset.
        let again = recheck(
            dev.as_ref(),
            report.pattern.as_ref().unwrap(),
            "r.json",
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(again.verdict(), Verdict::Pass);
        let (at, _) = report.pattern.as_ref().unwrap().extents[1];
        let io = DevIo::new(dev.as_ref());
        let mut zeros = io::AlignedBuf::new(4096, 4096);
        zeros.as_mut_slice().fill(0);
        io.write_all_at(zeros.as_slice(), at + 8192).unwrap();
        let bad = recheck(
            dev.as_ref(),
            report.pattern.as_ref().unwrap(),
            "r.json",
            &mut |_| {},
        )
        .unwrap();
        let c = bad.check("pattern_recheck").unwrap();
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(
            c.detail.contains(&format!("offset {}", at + 8192)),
            "{}",
            c.detail
        );
        assert_eq!(c.data["bad_units"], 8);
    }
}
