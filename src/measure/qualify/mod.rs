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
mod checks;
pub mod compare;
pub mod durability;
pub mod identity;
pub mod io;
pub mod nbd;
pub mod pattern;
mod plan;
pub mod pmem;
mod report;
pub mod tape;

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::json;

use crate::device::{Device, Kind};
use crate::format::BLOCK_BYTES;
use crate::measure::bench::Rw;
use io::DevIo;
use pattern::PatternSpec;

use checks::{
    alignment_checks, durability_checks, identity_check, matrix_checks, not_run, pattern_check,
    run_cell,
};
pub(crate) use checks::{identity_verdict, outcome_check};
pub use plan::{matrix_axes, plan, Options, OptionsError, Plan};
pub use report::{
    pattern_of_report, size_text, Better, Cell, CellPlan, CellResult, Check, Latency, Report,
    ReportError, Verdict,
};

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

/// What the run reports as it goes (the CLI shows it).
pub enum Event<'a> {
    /// A step starts (for a progress line).
    Step(&'a str),
    Check(&'a Check),
    Cell(&'a Cell),
}

/// Why a run did not start: nothing was written. (A device that fails
/// during the run fails its checks instead.)
#[derive(Debug, thiserror::Error)]
pub enum QualifyError {
    /// The device's kind has no checks.
    #[error("device {device}: {why}")]
    Unsupported { device: String, why: String },
    /// The options are outside their limits.
    #[error("device {}: {error}", device.display())]
    Options {
        device: PathBuf,
        error: OptionsError,
    },
    /// The device is too small to qualify (`detail`: its identity check).
    #[error("device {device}: {detail}")]
    TooSmall { device: String, detail: String },
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
        Kind::Nbd if device.export_identity().is_some() => Ok(Family::Nbd),
        other => Err(QualifyError::Unsupported {
            device: device.path().display().to_string(),
            why: format!(
                "qualify has no checks for {other:?} devices yet (files, block devices, tapes, pmem and NBD exports)"
            ),
        }),
    }
}

/// The device opened again by its name, for reading: another connection
/// to an export, another mapping of pmem (durability checks).
fn reopen(device: &dyn Device) -> Result<Box<dyn Device>, String> {
    let text = device.path().display().to_string();
    let spec = crate::device::DeviceSpec::parse(&text).map_err(|e| e.to_string())?;
    crate::device::open(&spec, crate::device::Mode::Read).map_err(|e| e.to_string())
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

/// Run the whole qualification on an open device (opened for writing).
pub fn run(
    device: &dyn Device,
    options: &Options,
    on: &mut dyn FnMut(Event),
) -> Result<Report, QualifyError> {
    let family = family(device)?;
    options.validate().map_err(|error| QualifyError::Options {
        device: device.path().to_path_buf(),
        error,
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
        return Err(QualifyError::TooSmall {
            device: identity.path.clone(),
            detail: id_check.detail,
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
    let push = Report::add;

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
        let dev = crate::measure::test_file_device(dir.path(), "8M");
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
        let pattern = report.pattern.as_ref().unwrap();
        let recheck_now = || recheck(dev.as_ref(), pattern, "r.json", &mut |_| {}).unwrap();
        let again = recheck_now();
        assert_eq!(again.verdict(), Verdict::Pass);
        let (at, _) = report.pattern.as_ref().unwrap().extents[1];
        let io = DevIo::new(dev.as_ref());
        let mut zeros = io::AlignedBuf::new(4096, 4096);
        zeros.as_mut_slice().fill(0);
        io.write_all_at(zeros.as_slice(), at + 8192).unwrap();
        let bad = recheck_now();
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
