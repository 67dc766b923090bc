//! What a run reports: checks with their verdicts, latency summaries,
//! matrix cells, the whole report and its JSON (the archived layout,
//! versioned by `SCHEMA`).

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::identity::Identity;
use super::pattern::{self, PatternSpec};
use super::{Options, SCHEMA};
use crate::measure::bench::Rw;

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
    pub(super) fn new(
        name: &'static str,
        verdict: Verdict,
        value: Value,
        unit: &'static str,
    ) -> Check {
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

    pub(super) fn detail(mut self, detail: impl Into<String>) -> Check {
        self.detail = detail.into();
        self
    }

    pub(super) fn better(mut self, better: Better) -> Check {
        self.better = Some(better);
        self
    }

    pub(super) fn data(mut self, data: Value) -> Check {
        self.data = data;
        self
    }

    pub(super) fn skip(name: &'static str, unit: &'static str, why: impl Into<String>) -> Check {
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
    /// Add `check`, shown to `on` first.
    pub(super) fn add(&mut self, check: Check, on: &mut dyn FnMut(super::Event)) {
        on(super::Event::Check(&check));
        self.checks.push(check);
    }

    /// Add the checks `names` as not run: the identity check failed.
    pub(super) fn not_run(&mut self, names: &[&'static str], on: &mut dyn FnMut(super::Event)) {
        for name in names {
            self.add(super::not_run(name), on);
        }
    }

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

/// What is wrong with an earlier report (`--recheck`, `--compare`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReportError {
    #[error("its schema is {0}; this pbio reads schema {SCHEMA}")]
    Schema(u64),
    #[error("not a pbio qualify report (no \"schema\")")]
    NoSchema,
    #[error("not a pbio qualify report (no \"checks\" array)")]
    NoChecks,
    #[error("the report has no pattern (its pattern check did not run)")]
    NoPattern,
    #[error("pattern unit_bytes {0} is not {unit}", unit = pattern::UNIT_BYTES)]
    UnitBytes(Value),
    #[error("pattern nonce is not 16 hex digits")]
    Nonce,
    #[error("pattern extents is not an array")]
    ExtentsNotArray,
    #[error("pattern extent {0} is not [offset, length] in whole units")]
    Extent(Value),
    #[error("pattern has no extents")]
    NoExtents,
}

/// The pattern an earlier report says its run wrote.
pub fn pattern_of_report(report: &Value) -> Result<PatternSpec, ReportError> {
    let p = &report["pattern"];
    if p.is_null() {
        return Err(ReportError::NoPattern);
    }
    if p["unit_bytes"].as_u64() != Some(pattern::UNIT_BYTES as u64) {
        return Err(ReportError::UnitBytes(p["unit_bytes"].clone()));
    }
    let nonce = p["nonce"]
        .as_str()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or(ReportError::Nonce)?;
    let extents = p["extents"]
        .as_array()
        .ok_or(ReportError::ExtentsNotArray)?
        .iter()
        .map(|e| match (e[0].as_u64(), e[1].as_u64()) {
            (Some(o), Some(l))
                if o.is_multiple_of(pattern::UNIT_BYTES as u64)
                    && l.is_multiple_of(pattern::UNIT_BYTES as u64)
                    && l > 0 =>
            {
                Ok((o, l))
            }
            _ => Err(ReportError::Extent(e.clone())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if extents.is_empty() {
        return Err(ReportError::NoExtents);
    }
    Ok(PatternSpec { nonce, extents })
}
