//! `pbio qualify --compare OLD.json`: the deltas of a run against an
//! earlier report, and which of them are regressions.
//!
//! Checks are matched by name. A check that says which way is better
//! (`"better": "higher"` for throughput, `"lower"` for latency) is a
//! regression when it moved the wrong way by more than the threshold for
//! its kind; those make the `compare` check FAIL. Everything else that
//! changed (capacity, alignment, the write cache setting, a verdict) is
//! listed as a change, not judged. Matrix cells are matched by (rw, bs, qd)
//! and their deltas listed and marked, but only the headline checks decide
//! the verdict: one cell is noisier than the best of all of them.
//!
//! Pure: JSON in, JSON and a check out.

use serde_json::{json, Value};

use super::{Better, Check, ReportError, Verdict, SCHEMA};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// A higher-is-better value (throughput) may drop by this many percent.
    pub drop_pct: f64,
    /// A lower-is-better value (latency) may rise by this many percent.
    pub rise_pct: f64,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            drop_pct: 20.0,
            rise_pct: 50.0,
        }
    }
}

/// One compared value.
#[derive(Clone, Debug, PartialEq)]
pub struct Delta {
    pub name: String,
    pub unit: String,
    pub old: Value,
    pub new: Value,
    /// Percent change, when both are numbers and the old one is not 0.
    pub delta_pct: Option<f64>,
    pub better: Option<Better>,
    /// Beyond the threshold in the wrong direction.
    pub regression: bool,
    /// A value without a direction that is not what it was.
    pub changed: bool,
}

impl Delta {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "unit": self.unit,
            "old": self.old,
            "new": self.new,
            "delta_pct": self.delta_pct.map(round1),
            "better": self.better.map(Better::name),
            "regression": self.regression,
            "changed": self.changed,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The old report's path.
    pub against: String,
    pub thresholds: Thresholds,
    pub checks: Vec<Delta>,
    /// Matrix cells: `write bs=1M qd=16 MiB/s`, `... p99 us`.
    pub matrix: Vec<Delta>,
    /// Differences that make the comparison less like for like.
    pub notes: Vec<String>,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn better_of(text: &Value) -> Option<Better> {
    match text.as_str() {
        Some("higher") => Some(Better::Higher),
        Some("lower") => Some(Better::Lower),
        _ => None,
    }
}

/// Check that `old` is a report this version can compare with.
pub fn validate_old(old: &Value) -> Result<(), ReportError> {
    match old["schema"].as_u64() {
        Some(SCHEMA) => {}
        Some(other) => return Err(ReportError::Schema(other)),
        None => return Err(ReportError::NoSchema),
    }
    if !old["checks"].is_array() {
        return Err(ReportError::NoChecks);
    }
    Ok(())
}

fn delta(
    name: String,
    unit: &str,
    old: &Value,
    new: &Value,
    better: Option<Better>,
    t: Thresholds,
) -> Delta {
    let pct = match (old.as_f64(), new.as_f64()) {
        (Some(o), Some(n)) if o != 0.0 => Some((n - o) / o.abs() * 100.0),
        _ => None,
    };
    let regression = match (better, pct) {
        (Some(Better::Higher), Some(p)) => p < -t.drop_pct,
        (Some(Better::Lower), Some(p)) => p > t.rise_pct,
        _ => false,
    };
    Delta {
        name,
        unit: unit.to_string(),
        old: old.clone(),
        new: new.clone(),
        delta_pct: pct,
        better,
        regression,
        changed: better.is_none() && old != new,
    }
}

/// Compare report `new` with the earlier report `old` (both as JSON).
pub fn compare(old: &Value, new: &Value, against: &str, t: Thresholds) -> Comparison {
    let mut out = Comparison {
        against: against.to_string(),
        thresholds: t,
        checks: Vec::new(),
        matrix: Vec::new(),
        notes: Vec::new(),
    };
    let empty = Vec::new();
    let old_checks = old["checks"].as_array().unwrap_or(&empty);
    for check in new["checks"].as_array().unwrap_or(&empty) {
        let name = check["name"].as_str().unwrap_or_default();
        if name == "compare" {
            continue;
        }
        let Some(before) = old_checks.iter().find(|c| c["name"] == check["name"]) else {
            out.notes.push(format!("{name}: not in the old report"));
            continue;
        };
        if before["verdict"] != check["verdict"] {
            out.notes.push(format!(
                "{name}: verdict {} -> {}",
                before["verdict"].as_str().unwrap_or("?"),
                check["verdict"].as_str().unwrap_or("?")
            ));
        }
        out.checks.push(delta(
            name.to_string(),
            check["unit"].as_str().unwrap_or_default(),
            &before["value"],
            &check["value"],
            better_of(&check["better"]),
            t,
        ));
    }
    let empty_cells = Vec::new();
    let old_cells = old["matrix"].as_array().unwrap_or(&empty_cells);
    for cell in new["matrix"].as_array().unwrap_or(&empty_cells) {
        let key = |c: &Value| (c["rw"].clone(), c["bs"].clone(), c["qd"].clone());
        let Some(before) = old_cells.iter().find(|c| key(c) == key(cell)) else {
            continue;
        };
        let label = format!(
            "{} bs={} qd={}",
            cell["rw"].as_str().unwrap_or("?"),
            cell["bs"]
                .as_u64()
                .map(super::size_text)
                .unwrap_or_else(|| "?".into()),
            cell["qd"]
        );
        out.matrix.push(delta(
            format!("{label} throughput"),
            "MiB/s",
            &before["mib_per_sec"],
            &cell["mib_per_sec"],
            Some(Better::Higher),
            t,
        ));
        out.matrix.push(delta(
            format!("{label} p99"),
            "us",
            &before["lat_us"]["p99"],
            &cell["lat_us"]["p99"],
            Some(Better::Lower),
            t,
        ));
    }
    let (od, nd) = (&old["device"], &new["device"]);
    for key in ["kind", "capacity_bytes", "model", "serial", "firmware"] {
        if od[key] != nd[key] {
            out.notes.push(format!(
                "device {key} differs: {} then, {} now",
                od[key], nd[key]
            ));
        }
    }
    if od["path"] != nd["path"] {
        out.notes.push(format!(
            "device path differs: {} then, {} now",
            od["path"], nd["path"]
        ));
    }
    if old["options"]["quick"] != new["options"]["quick"] {
        out.notes.push(
            "one run is --quick and the other is not: the matrices differ, so the best throughput is not like for like"
                .into(),
        );
    }
    out
}

impl Comparison {
    pub fn regressions(&self) -> impl Iterator<Item = &Delta> {
        self.checks.iter().filter(|d| d.regression)
    }

    fn limit_text(&self, d: &Delta) -> String {
        match d.better {
            Some(Better::Higher) => format!("limit -{}%", self.thresholds.drop_pct),
            Some(Better::Lower) => format!("limit +{}%", self.thresholds.rise_pct),
            None => String::new(),
        }
    }

    /// The `compare` check: FAIL when a headline value regressed.
    pub fn check(&self) -> Check {
        let regressions: Vec<String> = self
            .regressions()
            .map(|d| {
                format!(
                    "{} {:+.1}% ({})",
                    d.name,
                    d.delta_pct.unwrap_or(0.0),
                    self.limit_text(d)
                )
            })
            .collect();
        let verdict = if regressions.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        let mut detail = if regressions.is_empty() {
            format!(
                "no regression beyond -{}% throughput or +{}% latency against {}",
                self.thresholds.drop_pct, self.thresholds.rise_pct, self.against
            )
        } else {
            format!(
                "{} regression(s) against {}: {}",
                regressions.len(),
                self.against,
                regressions.join(", ")
            )
        };
        if !self.notes.is_empty() {
            detail.push_str(&format!("; notes: {}", self.notes.join("; ")));
        }
        let mut check = Check::new("compare", verdict, json!(regressions.len()), "regressions");
        check.detail = detail;
        check
    }

    pub fn to_json(&self) -> Value {
        json!({
            "against": self.against,
            "thresholds": {
                "throughput_drop_pct": self.thresholds.drop_pct,
                "latency_rise_pct": self.thresholds.rise_pct,
            },
            "checks": self.checks.iter().map(Delta::to_json).collect::<Vec<_>>(),
            "matrix": self.matrix.iter().map(Delta::to_json).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }

    /// Lines for people: every delta, regressions marked.
    pub fn lines(&self) -> Vec<String> {
        let value = |v: &Value| match v {
            Value::Null => "-".to_string(),
            Value::String(s) => s.clone(),
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.fract() != 0.0 => format!("{f:.1}"),
                _ => n.to_string(),
            },
            other => other.to_string(),
        };
        let line = |d: &Delta| {
            let pct = d.delta_pct.map(|p| format!("{p:+.1}%")).unwrap_or_default();
            let mark = if d.regression {
                format!("  REGRESSION ({})", self.limit_text(d))
            } else if d.changed {
                "  changed".into()
            } else {
                String::new()
            };
            format!(
                "  {:<28} {:>12} -> {:<12} {:<6} {:>8}{mark}",
                d.name,
                value(&d.old),
                value(&d.new),
                d.unit,
                pct
            )
        };
        let mut out = vec![format!("compared with {}:", self.against)];
        out.extend(self.checks.iter().map(line));
        if !self.matrix.is_empty() {
            out.push("  matrix cells (shown, not judged):".into());
            out.extend(self.matrix.iter().map(line));
        }
        for note in &self.notes {
            out.push(format!("  note: {note}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `new` compared with `old` within the default limits.
    fn against_defaults(old: &Value, new: Value) -> Comparison {
        compare(old, &new, "o", Thresholds::default())
    }

    fn report(write_mibs: f64, p99: f64, cache: &str) -> Value {
        json!({
            "schema": SCHEMA,
            "device": {"kind": "block", "capacity_bytes": 100, "path": "/dev/x"},
            "options": {"quick": true},
            "checks": [
                {"name": "identity", "verdict": "PASS", "value": 100, "unit": "bytes"},
                {"name": "write_throughput", "verdict": "PASS", "value": write_mibs, "unit": "MiB/s", "better": "higher"},
                {"name": "write_latency_p99", "verdict": "PASS", "value": p99, "unit": "us", "better": "lower"},
                {"name": "write_cache", "verdict": "PASS", "value": cache, "unit": ""},
            ],
            "matrix": [
                {"rw": "write", "bs": 4096, "qd": 1, "mib_per_sec": write_mibs, "lat_us": {"p99": p99}},
            ],
        })
    }

    #[test]
    fn the_same_numbers_pass() {
        let r = report(100.0, 50.0, "write back");
        let c = compare(&r, &r, "old.json", Thresholds::default());
        assert_eq!(c.regressions().count(), 0);
        assert_eq!(c.check().verdict, Verdict::Pass);
        assert_eq!(c.checks.len(), 4);
        assert_eq!(c.matrix.len(), 2);
        assert!(c.notes.is_empty(), "{:?}", c.notes);
    }

    #[test]
    fn regressions_beyond_the_limits_fail() {
        let old = report(1000.0, 50.0, "write back");
        // -15% throughput, +40% latency: inside the limits.
        let c = against_defaults(&old, report(850.0, 70.0, "write back"));
        assert_eq!(c.check().verdict, Verdict::Pass);
        // -90%: the old report claimed 10x.
        let c = against_defaults(&old, report(100.0, 50.0, "write back"));
        let check = c.check();
        assert_eq!(check.verdict, Verdict::Fail);
        assert_eq!(check.value, json!(1));
        assert!(
            check.detail.contains("write_throughput -90.0%"),
            "{}",
            check.detail
        );
        assert!(c.matrix[0].regression, "cells are marked too");
        // +60% latency.
        let c = against_defaults(&old, report(1000.0, 80.0, "write back"));
        assert!(c.check().detail.contains("write_latency_p99 +60.0%"));
        // Wider limits let both through.
        let wide = Thresholds {
            drop_pct: 95.0,
            rise_pct: 100.0,
        };
        let c = compare(&old, &report(100.0, 80.0, "write back"), "o", wide);
        assert_eq!(c.check().verdict, Verdict::Pass);
        // Faster is never a regression.
        let c = against_defaults(&old, report(5000.0, 1.0, "write back"));
        assert_eq!(c.check().verdict, Verdict::Pass);
    }

    #[test]
    fn changes_without_a_direction_are_listed_not_judged() {
        let old = report(100.0, 50.0, "write back");
        let mut new = report(100.0, 50.0, "write through");
        new["device"]["capacity_bytes"] = json!(200);
        new["options"]["quick"] = json!(false);
        let c = compare(&old, &new, "o", Thresholds::default());
        assert_eq!(c.check().verdict, Verdict::Pass);
        let cache = c.checks.iter().find(|d| d.name == "write_cache").unwrap();
        assert!(cache.changed);
        assert!(c.notes.iter().any(|n| n.contains("capacity_bytes")));
        assert!(c.notes.iter().any(|n| n.contains("--quick")));
        assert!(c.lines().iter().any(|l| l.contains("changed")));
    }

    #[test]
    fn only_reports_of_this_schema_are_read() {
        assert!(validate_old(&report(1.0, 1.0, "x")).is_ok());
        assert!(validate_old(&json!({"schema": 2, "checks": []})).is_err());
        assert!(validate_old(&json!({"checks": []})).is_err());
        assert!(validate_old(&json!({"schema": 1})).is_err());
    }
}
