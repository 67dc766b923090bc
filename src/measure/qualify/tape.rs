//! Qualification of tape drives: an st drive (`/dev/nst*`) or the `vtape:`
//! emulator, through the `Device` trait's block and tape operations only
//! (`write_block`, `read_block`, `tape_op`, `tape_status`): the same calls
//! pbio's backup and restore make, so a PASS here is about the path pbio
//! uses. No ioctl is issued here (they live in `device::tape`).
//!
//! The run, in order:
//! 1. `identity`: MTIOCGET (online, write protection, density, block size
//!    mode, position) and, for a drive, vendor/model/firmware from sysfs;
//! 2. `block_limits`: the drive's largest block (READ BLOCK LIMITS);
//! 3. the throughput matrix: from BOT, one tape file per cell, one block
//!    per write (one operation in flight, as pbio writes tapes), each cell
//!    ended by a filemark (the drive's buffer written out, in the time);
//!    then read back file by file, each read one whole block; latency
//!    percentiles per block from an HDR histogram;
//! 4. the layout the remaining checks work on, written from BOT:
//!    tape file 0 the pattern blocks (variable sizes), a filemark, file 1
//!    three blocks, a filemark, file 2 two blocks, a filemark. Blocks of
//!    files 1 and 2 have lengths found nowhere else on the layout, so
//!    the length of the block read after a positioning says where the head
//!    was, even on a drive that keeps no payload;
//! 5. `rewind` (BOT after MTREW), `pattern_verify` (every block of file 0
//!    read back as exactly one block of its length, its bytes compared),
//!    `filemarks` (positions after each MTWEOF; a read returns 0 at each),
//!    `space` (MTFSF, MTFSR, MTBSF land where the layout says, checked with
//!    MTIOCGET/MTIOCPOS and the block read next), `end_of_data` (MTEOM lands
//!    after the last filemark, with end of data reported).
//!
//! The cartridge ends holding the layout: `--recheck` reads file 0 again.
//!
//! Positions: file and block numbers as st counts them (-1: unknown, which
//! st reports after MTBSF); logical objects (blocks and filemarks from BOT,
//! MTIOCPOS) are compared wherever the drive reports them.

use std::time::Instant;

use serde_json::{json, Value};

use super::io::AlignedBuf;
use super::pattern::{self, PatternSpec, VerifyOutcome};
use super::{
    histogram, size_text, Cell, CellPlan, CellResult, Check, Event, Latency, Options, Report,
    Verdict, LATENCY_NS_MAX,
};
use crate::device::tape::TAPE_BLOCK_BYTES_DEFAULT;
use crate::device::{read_block, write_block, Device, TapeOp, TapeStatus};
use crate::measure::bench::Rw;
use crate::units::human_bytes;

/// The largest block the checks write: pbio's own tape block (a record of
/// a backup is at most this), so a PASS says pbio's blocks go through.
pub const BLOCK_BYTES_MAX: u32 = TAPE_BLOCK_BYTES_DEFAULT;
/// File 0's block sizes, written twice in this order (capped at the
/// drive's limit). 12800 is not a multiple of 4096: variable-block mode
/// takes any length.
pub const PATTERN_SIZES: [u32; 4] = [4096, 12800, 65536, 1 << 20];
/// Rounds of `PATTERN_SIZES` in file 0.
pub const PATTERN_ROUNDS: usize = 2;
/// Files 1 and 2: lengths that occur nowhere else on the layout.
pub const FILE1_SIZES: [u32; 3] = [8704, 9216, 9728];
pub const FILE2_SIZES: [u32; 2] = [10752, 11264];
/// Block sizes of the throughput matrix (capped at the drive's limit).
pub const MATRIX_SIZES: [u32; 2] = [256 << 10, 1 << 20];
/// Bytes per matrix cell (full run; `--quick`: 16 MiB), at most 1/8 of
/// the cartridge.
pub const CELL_BYTES: u64 = 256 << 20;
pub const CELL_BYTES_QUICK: u64 = 16 << 20;

/// The largest block this run writes on a drive with limit `limit`.
pub fn block_cap(limit: Option<u32>) -> u32 {
    limit.unwrap_or(BLOCK_BYTES_MAX).min(BLOCK_BYTES_MAX)
}

/// File 0's block lengths.
pub fn pattern_sizes(cap: u32) -> Vec<u32> {
    let one: Vec<u32> = PATTERN_SIZES
        .iter()
        .copied()
        .filter(|&s| s <= cap)
        .collect();
    one.iter()
        .copied()
        .cycle()
        .take(one.len() * PATTERN_ROUNDS)
        .collect()
}

/// The matrix: writes first, one tape file per cell, queue depth 1.
pub fn matrix_plan(quick: bool, capacity_bytes: u64, cap: u32) -> Vec<CellPlan> {
    let mut sizes: Vec<u32> = MATRIX_SIZES.iter().map(|&s| s.min(cap)).collect();
    sizes.dedup();
    let cell = if quick { CELL_BYTES_QUICK } else { CELL_BYTES }.min(capacity_bytes / 8);
    let mut out = Vec::with_capacity(2 * sizes.len());
    for rw in [Rw::Write, Rw::Read] {
        for &bs in &sizes {
            let bs64 = u64::from(bs);
            out.push(CellPlan {
                rw,
                block_bytes: bs as usize,
                queue_depth: 1,
                size_bytes: (cell / bs64 * bs64).max(bs64),
            });
        }
    }
    out
}

/// The tape's position in words.
fn position(s: &TapeStatus) -> String {
    let mut t = format!("file {} block {}", s.file_number, s.block_number);
    if s.logical_object >= 0 {
        t.push_str(&format!(" (object {})", s.logical_object));
    }
    if s.at_bot {
        t.push_str(", BOT");
    }
    if s.at_eod {
        t.push_str(", EOD");
    }
    if s.at_eot {
        t.push_str(", EOT");
    }
    t
}

/// Whether the head is where the layout says: file number, block number
/// (None: not asserted; st does not know it after MTBSF) and logical
/// object (checked where the drive reports one).
fn expect_at(
    dev: &dyn Device,
    after: &str,
    file: i64,
    block: Option<i64>,
    object: i64,
) -> Result<TapeStatus, String> {
    let s = dev
        .tape_status()
        .map_err(|e| format!("MTIOCGET after {after}: {e}"))?;
    let file_ok = s.file_number == file;
    let block_ok = block.is_none_or(|b| s.block_number == b);
    let object_ok = s.logical_object < 0 || s.logical_object == object;
    if file_ok && block_ok && object_ok {
        Ok(s)
    } else {
        let want_block = block.map(|b| format!(" block {b}")).unwrap_or_default();
        Err(format!(
            "after {after}: at {}, expected file {file}{want_block} (object {object})",
            position(&s)
        ))
    }
}

fn op(dev: &dyn Device, op: TapeOp, what: &str) -> Result<(), String> {
    dev.tape_op(op).map_err(|e| format!("{what}: {e}"))
}

/// Read one block; it must be exactly `len` bytes (0: a filemark).
fn read_expect(dev: &dyn Device, buf: &mut [u8], len: usize, what: &str) -> Result<(), String> {
    match read_block(dev, buf) {
        Ok(n) if n == len => Ok(()),
        Ok(0) => Err(format!(
            "{what}: read a filemark, expected a {len}-byte block"
        )),
        Ok(n) if len == 0 => Err(format!(
            "{what}: read a {n}-byte block, expected a filemark"
        )),
        Ok(n) => Err(format!(
            "{what}: read returned {n} bytes, expected one {len}-byte block"
        )),
        Err(e) => Err(format!("{what}: read: {e}")),
    }
}

/// The layout of checks 4-5, in logical objects from BOT.
struct Layout {
    file0: Vec<u32>,
}

impl Layout {
    /// Logical object of file 0's filemark.
    fn fm0(&self) -> i64 {
        self.file0.len() as i64
    }
    fn fm1(&self) -> i64 {
        self.fm0() + 1 + FILE1_SIZES.len() as i64
    }
    fn fm2(&self) -> i64 {
        self.fm1() + 1 + FILE2_SIZES.len() as i64
    }
    fn largest(&self) -> usize {
        self.file0.iter().copied().max().unwrap_or(4096) as usize
    }
    /// File 0's pattern: one extent per block, back to back from 0.
    fn spec(&self, nonce: u64) -> PatternSpec {
        let mut at = 0u64;
        let extents = self
            .file0
            .iter()
            .map(|&len| {
                let e = (at, u64::from(len));
                at += u64::from(len);
                e
            })
            .collect();
        PatternSpec { nonce, extents }
    }
}

/// Run the tape checks; `report` holds the identity and gets the rest.
pub fn run(device: &dyn Device, options: &Options, report: &mut Report, on: &mut dyn FnMut(Event)) {
    let push = |report: &mut Report, check: Check, on: &mut dyn FnMut(Event)| {
        on(Event::Check(&check));
        report.checks.push(check);
    };
    let limit = device.block_bytes_max();
    let cap = block_cap(limit);
    let status = device.tape_status();
    report.identity.tape = Some(match &status {
        Ok(s) => status_json(s, limit),
        Err(e) => json!({"error": e.to_string(), "block_bytes_max": limit}),
    });
    push(report, identity_check(&report.identity, &status), on);
    push(report, limits_check(limit), on);

    on(Event::Step(
        "throughput: one tape file per cell, one block per write",
    ));
    let matrix = matrix_plan(options.quick, report.identity.capacity_bytes, cap);
    for cell in run_matrix(device, &matrix, cap) {
        on(Event::Cell(&cell));
        report.matrix.push(cell);
    }
    for check in super::matrix_checks(
        &report.matrix,
        " (one block in flight, as pbio writes tapes)",
    ) {
        push(report, check, on);
    }

    on(Event::Step("tape layout: pattern, filemarks, positioning"));
    let layout = Layout {
        file0: pattern_sizes(cap),
    };
    let spec = layout.spec(super::new_nonce());
    let mut buf = AlignedBuf::new(layout.largest(), 4096);
    let rewind_first = rewind(device, "from the end of the throughput data");
    let written = rewind_first
        .as_ref()
        .map_err(|e| e.clone())
        .and_then(|_| write_layout(device, &layout, &spec, &mut buf));
    let (marks_written, write_error) = match written {
        Ok(notes) => (notes, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    report.pattern = Some(spec.clone());
    let (pattern, marks_read) = match &write_error {
        Some(e) => (
            Check::new("pattern_verify", Verdict::Fail, json!(0), "bytes")
                .detail(format!("writing the layout: {e}")),
            Err("the layout was not written".to_string()),
        ),
        None => {
            let _ = device.tape_op(TapeOp::Rewind);
            let p = pattern_check("pattern_verify", device, &spec, &mut buf, true);
            // The head is past file 0's blocks when they all read back.
            let marks = if p.1 {
                read_filemarks(device, &layout, &mut buf)
            } else {
                Err("file 0 did not read back block by block as written".into())
            };
            (p.0, marks)
        }
    };
    let rewind_check = |r: &Result<String, String>, r2: &Result<String, String>| match (r, r2) {
        (Ok(a), Ok(b)) => {
            Check::new("rewind", Verdict::Pass, Value::Null, "").detail(format!("{a}; {b}"))
        }
        (Err(e), _) | (_, Err(e)) => {
            Check::new("rewind", Verdict::Fail, Value::Null, "").detail(e.clone())
        }
    };
    let filemarks = match (&write_error, &marks_read) {
        (Some(e), _) => Check::new("filemarks", Verdict::Fail, Value::Null, "")
            .detail(format!("writing the layout: {e}")),
        (None, Err(e)) => Check::new("filemarks", Verdict::Fail, Value::Null, "").detail(e.clone()),
        (None, Ok(read)) => Check::new("filemarks", Verdict::Pass, json!(3), "filemarks")
            .detail(format!("{}; {read}", marks_written.join(", "))),
    };
    let space = if write_error.is_some() {
        Check::new("space", Verdict::Fail, Value::Null, "").detail("the layout was not written")
    } else {
        match space_checks(device, &layout, &mut buf) {
            Ok(d) => Check::new("space", Verdict::Pass, Value::Null, "").detail(d),
            Err(e) => Check::new("space", Verdict::Fail, Value::Null, "").detail(e),
        }
    };
    let eod = if write_error.is_some() {
        Check::new("end_of_data", Verdict::Fail, Value::Null, "")
            .detail("the layout was not written")
    } else {
        match eod_checks(device, &layout, &mut buf) {
            Ok(d) => Check::new("end_of_data", Verdict::Pass, Value::Null, "").detail(d),
            Err(e) => Check::new("end_of_data", Verdict::Fail, Value::Null, "").detail(e),
        }
    };
    let rewind_last = rewind(device, "from the end of data").and_then(|d| {
        read_expect(
            device,
            buf.as_mut_slice(),
            layout.file0[0] as usize,
            "after MTREW",
        )
        .map(|_| format!("{d}, and the next read is file 0's first block"))
    });
    push(report, rewind_check(&rewind_first, &rewind_last), on);
    push(report, pattern, on);
    push(report, filemarks, on);
    push(report, space, on);
    push(report, eod, on);
    // Leave the tape at BOT.
    let _ = device.tape_op(TapeOp::Rewind);
}

fn status_json(s: &TapeStatus, limit: Option<u32>) -> Value {
    json!({
        "online": s.online,
        "write_protected": s.write_protected,
        "density_code": format!("{:#04x}", s.density_code),
        "block_size_bytes": s.block_size_bytes,
        "file_number": s.file_number,
        "block_number": s.block_number,
        "logical_object": s.logical_object,
        "at_bot": s.at_bot,
        "at_eod": s.at_eod,
        "at_eot": s.at_eot,
        "block_bytes_max": limit,
    })
}

fn identity_check(id: &super::identity::Identity, status: &std::io::Result<TapeStatus>) -> Check {
    let mut parts = vec![format!("{} {}", id.kind, human_bytes(id.capacity_bytes))];
    for key in ["vendor", "model", "firmware", "serial"] {
        if let Some(v) = id.id(key) {
            parts.push(format!("{key} {v}"));
        }
    }
    let mut problems = Vec::new();
    match status {
        Err(e) => problems.push(format!("MTIOCGET failed: {e}")),
        Ok(s) => {
            parts.push(format!(
                "{}, {}, density code {:#04x}, {}, at {}",
                if s.online { "online" } else { "offline" },
                if s.write_protected {
                    "write-protected"
                } else {
                    "writable"
                },
                s.density_code,
                if s.block_size_bytes == 0 {
                    "variable-block mode".to_string()
                } else {
                    format!("fixed {}-byte blocks", s.block_size_bytes)
                },
                position(s)
            ));
            if !s.online {
                problems.push("the drive is offline (no tape loaded)".into());
            }
            if s.write_protected {
                problems.push("the tape is write-protected".into());
            }
            if s.block_size_bytes != 0 {
                problems.push(format!(
                    "the drive is in fixed-block mode ({} B) after MTSETBLK 0: pbio writes variable-size blocks",
                    s.block_size_bytes
                ));
            }
        }
    }
    super::identity_verdict(id.capacity_bytes, problems, &parts)
}

fn limits_check(limit: Option<u32>) -> Check {
    match limit {
        None => Check::skip(
            "block_limits",
            "bytes",
            format!(
                "the drive did not report its block limits (READ BLOCK LIMITS needs CAP_SYS_RAWIO): blocks up to {} are written below",
                size_text(u64::from(BLOCK_BYTES_MAX))
            ),
        ),
        Some(max) => {
            let ok = max >= BLOCK_BYTES_MAX;
            Check::new(
                "block_limits",
                if ok { Verdict::Pass } else { Verdict::Fail },
                json!(max),
                "bytes",
            )
            .detail(format!(
                "largest variable-length block {} ({max} B); pbio's tape block is {}{}",
                size_text(u64::from(max)),
                size_text(u64::from(BLOCK_BYTES_MAX)),
                if ok {
                    " (the largest block written below)".to_string()
                } else {
                    format!(
                        ", which this drive refuses: back up with --tape-block {} or less",
                        size_text(u64::from(max))
                    )
                }
            ))
        }
    }
}

fn record_ns(h: &mut hdrhistogram::Histogram<u64>, started: Instant) {
    let ns = started.elapsed().as_nanos() as u64;
    h.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
}

/// The matrix: write cells from BOT, one tape file each, then read them
/// back in the same order.
fn run_matrix(device: &dyn Device, plans: &[CellPlan], cap: u32) -> Vec<Cell> {
    let mut buf = AlignedBuf::new(cap as usize, 4096);
    // Pattern bytes (not checked on read: that is pattern_verify's job).
    pattern::fill(buf.as_mut_slice(), 0, super::new_nonce());
    let mut out = Vec::with_capacity(plans.len());
    let mut start_error = device
        .tape_op(TapeOp::Rewind)
        .err()
        .map(|e| format!("MTREW before the matrix: {e}"));
    let mut wrote_all = true;
    for (i, plan) in plans.iter().enumerate() {
        if plan.rw == Rw::Read && i > 0 && plans[i - 1].rw == Rw::Write {
            if !wrote_all {
                start_error = Some("a write cell failed: nothing to read back".into());
            } else if let Err(e) = device.tape_op(TapeOp::Rewind) {
                start_error = Some(format!("MTREW before reading: {e}"));
            }
        }
        let outcome = match &start_error {
            Some(e) => Err(e.clone()),
            None => match plan.rw {
                Rw::Write => write_cell(device, plan, buf.as_slice()),
                Rw::Read => read_cell(device, plan, buf.as_mut_slice()),
            },
        };
        if plan.rw == Rw::Write && outcome.is_err() {
            wrote_all = false;
        }
        out.push(Cell {
            plan: *plan,
            outcome,
        });
    }
    out
}

fn cell_blocks(plan: &CellPlan) -> u64 {
    plan.size_bytes / plan.block_bytes as u64
}

fn write_cell(device: &dyn Device, plan: &CellPlan, data: &[u8]) -> Result<CellResult, String> {
    let block = &data[..plan.block_bytes];
    let mut h = histogram();
    let started = Instant::now();
    for i in 0..cell_blocks(plan) {
        let t = Instant::now();
        match write_block(device, block) {
            Ok(n) if n == block.len() => record_ns(&mut h, t),
            Ok(n) => return Err(format!("block {i}: wrote {n} of {} bytes", block.len())),
            Err(e) => return Err(format!("block {i}: write: {e}")),
        }
    }
    // The filemark ends the file and writes out the drive's buffer: the
    // data is on tape when it returns, so it counts in the time.
    device
        .tape_op(TapeOp::WriteFilemarks(1))
        .map_err(|e| format!("MTWEOF after the cell: {e}"))?;
    Ok(CellResult {
        bytes: plan.size_bytes,
        ios: cell_blocks(plan),
        seconds: started.elapsed().as_secs_f64(),
        latency: Latency::of(&h),
        short_ios: 0,
        retries: 0,
        ring_setup: "sync, one block in flight",
    })
}

fn read_cell(device: &dyn Device, plan: &CellPlan, buf: &mut [u8]) -> Result<CellResult, String> {
    let mut h = histogram();
    let started = Instant::now();
    for i in 0..cell_blocks(plan) {
        let t = Instant::now();
        match read_block(device, buf) {
            Ok(n) if n == plan.block_bytes => record_ns(&mut h, t),
            Ok(0) => {
                return Err(format!(
                    "block {i}: read a filemark, expected a {}-byte block",
                    plan.block_bytes
                ))
            }
            Ok(n) => {
                return Err(format!(
                    "block {i}: read returned {n} bytes, expected one {}-byte block",
                    plan.block_bytes
                ))
            }
            Err(e) => return Err(format!("block {i}: read: {e}")),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    read_expect(device, buf, 0, "after the cell's blocks")?;
    Ok(CellResult {
        bytes: plan.size_bytes,
        ios: cell_blocks(plan),
        seconds,
        latency: Latency::of(&h),
        short_ios: 0,
        retries: 0,
        ring_setup: "sync, one block in flight",
    })
}

/// MTREW, then BOT, file 0, block 0 (object 0).
fn rewind(device: &dyn Device, from: &str) -> Result<String, String> {
    let t = Instant::now();
    op(device, TapeOp::Rewind, &format!("MTREW {from}"))?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let s = expect_at(device, &format!("MTREW {from}"), 0, Some(0), 0)?;
    if !s.at_bot {
        return Err(format!(
            "after MTREW {from}: at {} without BOT reported",
            position(&s)
        ));
    }
    Ok(format!("MTREW {from}: BOT, file 0 block 0 in {ms:.1} ms"))
}

/// Write the layout from BOT; returns what each MTWEOF left.
fn write_layout(
    device: &dyn Device,
    layout: &Layout,
    spec: &PatternSpec,
    buf: &mut AlignedBuf,
) -> Result<Vec<String>, String> {
    for (i, &(offset, len)) in spec.extents.iter().enumerate() {
        let chunk = &mut buf.as_mut_slice()[..len as usize];
        pattern::fill(chunk, offset, spec.nonce);
        match write_block(device, chunk) {
            Ok(n) if n as u64 == len => {}
            Ok(n) => return Err(format!("file 0 block {i}: wrote {n} of {len} bytes")),
            Err(e) => return Err(format!("file 0 block {i} ({len} B): write: {e}")),
        }
    }
    let mut notes = Vec::with_capacity(3);
    let files: [(&[u32], i64); 3] = [
        (&[], layout.fm0()),
        (&FILE1_SIZES, layout.fm1()),
        (&FILE2_SIZES, layout.fm2()),
    ];
    for (file, (sizes, mark)) in files.iter().enumerate() {
        for (i, &len) in sizes.iter().enumerate() {
            let chunk = &mut buf.as_mut_slice()[..len as usize];
            pattern::fill(chunk, u64::from(len) << 20, spec.nonce);
            match write_block(device, chunk) {
                Ok(n) if n == len as usize => {}
                Ok(n) => return Err(format!("file {file} block {i}: wrote {n} of {len} bytes")),
                Err(e) => return Err(format!("file {file} block {i} ({len} B): write: {e}")),
            }
        }
        op(
            device,
            TapeOp::WriteFilemarks(1),
            &format!("MTWEOF ending file {file}"),
        )?;
        let s = expect_at(
            device,
            &format!("MTWEOF ending file {file}"),
            file as i64 + 1,
            Some(0),
            mark + 1,
        )?;
        notes.push(format!("MTWEOF {}: {}", file + 1, position(&s)));
    }
    Ok(notes)
}

/// Read file 0's blocks (from BOT) and compare; the bool: every read
/// returned one block of the length written (the head is then in front of
/// file 0's filemark, whatever the bytes were).
pub fn pattern_check(
    name: &'static str,
    device: &dyn Device,
    spec: &PatternSpec,
    buf: &mut AlignedBuf,
    written: bool,
) -> (Check, bool) {
    let mut out = VerifyOutcome {
        bytes_checked: 0,
        bad_units: 0,
        first_bad: None,
        last_bad: None,
    };
    let mut expect = vec![0u8; buf.len()];
    let (mut bad_blocks, mut lengths_only) = (0u64, 0u64);
    let mut first_bad_block: Option<usize> = None;
    for (i, &(offset, len)) in spec.extents.iter().enumerate() {
        let len = len as usize;
        let got = match read_block(device, buf.as_mut_slice()) {
            Ok(n) => n,
            Err(e) => {
                return (
                    fail(
                        name,
                        format!("file 0 block {i} (tape byte {offset}, {len} B): read: {e}"),
                    ),
                    false,
                )
            }
        };
        if got != len {
            let what = if got == 0 {
                "a filemark".to_string()
            } else {
                format!("{got} bytes")
            };
            return (
                fail(
                    name,
                    format!(
                        "file 0 block {i} (tape byte {offset}): read returned {what}, expected exactly one {len}-byte block"
                    ),
                )
                .data(json!({"first_bad_block": i, "first_bad_offset": offset})),
                false,
            );
        }
        let block = &buf.as_slice()[..len];
        let before = out.bad_units;
        pattern::check(block, offset, spec.nonce, &mut out);
        if out.bad_units > before {
            bad_blocks += 1;
            first_bad_block.get_or_insert(i);
            let e = &mut expect[..len];
            pattern::fill(e, offset, spec.nonce);
            if block[..4] == e[..4] && block[4..].iter().all(|&b| b == 0) {
                lengths_only += 1;
            }
        }
    }
    let blocks = spec.extents.len();
    let bytes = spec.bytes();
    let data = json!({
        "blocks": blocks,
        "bad_blocks": bad_blocks,
        "bad_units": out.bad_units,
        "first_bad_block": first_bad_block,
        "first_bad_offset": out.first_bad.map(|f| f.0),
        "last_bad_offset": out.last_bad,
        "keeps_lengths_only": bad_blocks > 0 && lengths_only == blocks as u64,
    });
    let sizes = {
        let mut s: Vec<u64> = spec.extents.iter().map(|e| e.1).collect();
        s.sort_unstable();
        s.dedup();
        s.iter()
            .map(|&b| size_text(b))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match out.first_bad {
        None => (
            Check::new(name, Verdict::Pass, json!(out.bytes_checked), "bytes")
                .detail(format!(
                    "{blocks} blocks ({sizes}; {}){} read back one block per read, each its exact length and bytes (nonce {:016x})",
                    human_bytes(bytes),
                    if written { " written in variable-block mode and" } else { "" },
                    spec.nonce
                ))
                .data(data),
            true,
        ),
        Some((offset, found)) => {
            let block = first_bad_block.unwrap_or(0);
            let within = offset - spec.extents[block].0;
            let detail = if lengths_only == blocks as u64 {
                format!(
                    "every block read back with the right length but only its first 4 bytes, the rest zeros (first at file 0 block {block}, tape byte {offset}): this drive keeps only each block's length and first 4 bytes (scsi_debug's tape emulation does exactly that) and cannot hold data"
                )
            } else {
                format!(
                    "mismatch in file 0 block {block} at byte {within} of the block (tape byte {offset}): the {}-byte unit there holds {found}; {bad_blocks} of {blocks} blocks bad, {} bad units, the last at tape byte {}",
                    pattern::UNIT_BYTES,
                    out.bad_units,
                    out.last_bad.unwrap_or(offset)
                )
            };
            // Every block had its length: the head is where it should be.
            (
                Check::new(name, Verdict::Fail, json!(out.bytes_checked), "bytes")
                    .detail(detail)
                    .data(data),
                true,
            )
        }
    }
}

fn fail(name: &'static str, detail: String) -> Check {
    Check::new(name, Verdict::Fail, json!(0), "bytes").detail(detail)
}

/// From in front of file 0's filemark: read it (0), then files 1 and 2
/// and their filemarks; positions after each filemark.
fn read_filemarks(
    device: &dyn Device,
    layout: &Layout,
    buf: &mut AlignedBuf,
) -> Result<String, String> {
    let files: [(&[u32], i64); 3] = [
        (&[], layout.fm0()),
        (&FILE1_SIZES, layout.fm1()),
        (&FILE2_SIZES, layout.fm2()),
    ];
    for (file, (sizes, mark)) in files.iter().enumerate() {
        for (i, &len) in sizes.iter().enumerate() {
            read_expect(
                device,
                buf.as_mut_slice(),
                len as usize,
                &format!("file {file} block {i}"),
            )?;
        }
        read_expect(
            device,
            buf.as_mut_slice(),
            0,
            &format!("the filemark ending file {file}"),
        )?;
        expect_at(
            device,
            &format!("reading the filemark ending file {file}"),
            file as i64 + 1,
            Some(0),
            mark + 1,
        )?;
    }
    Ok(
        "reading from BOT: each read at a filemark returned 0 and moved to the next file (block 0)"
            .into(),
    )
}

/// MTFSF, MTFSR, MTBSF from BOT over the layout.
fn space_checks(
    device: &dyn Device,
    layout: &Layout,
    buf: &mut AlignedBuf,
) -> Result<String, String> {
    let b = buf.as_mut_slice();
    op(device, TapeOp::Rewind, "MTREW")?;
    op(device, TapeOp::ForwardFiles(1), "MTFSF 1 from BOT")?;
    expect_at(device, "MTFSF 1 from BOT", 1, Some(0), layout.fm0() + 1)?;
    read_expect(
        device,
        b,
        FILE1_SIZES[0] as usize,
        "after MTFSF 1 from BOT (file 1 block 0)",
    )?;
    op(device, TapeOp::ForwardBlocks(1), "MTFSR 1 in file 1")?;
    expect_at(
        device,
        "MTFSR 1 from file 1 block 1",
        1,
        Some(2),
        layout.fm0() + 3,
    )?;
    read_expect(
        device,
        b,
        FILE1_SIZES[2] as usize,
        "after MTFSR 1 (file 1 block 2)",
    )?;
    op(
        device,
        TapeOp::ForwardFiles(1),
        "MTFSF 1 from file 1 block 3",
    )?;
    expect_at(device, "MTFSF 1 from file 1", 2, Some(0), layout.fm1() + 1)?;
    read_expect(
        device,
        b,
        FILE2_SIZES[0] as usize,
        "after MTFSF 1 (file 2 block 0)",
    )?;
    op(device, TapeOp::BackFiles(1), "MTBSF 1 from file 2 block 1")?;
    expect_at(device, "MTBSF 1 from file 2", 1, None, layout.fm1())?;
    read_expect(
        device,
        b,
        0,
        "after MTBSF 1 (in front of file 1's filemark)",
    )?;
    expect_at(
        device,
        "reading file 1's filemark after MTBSF 1",
        2,
        Some(0),
        layout.fm1() + 1,
    )?;
    op(device, TapeOp::Rewind, "MTREW")?;
    op(device, TapeOp::ForwardFiles(2), "MTFSF 2 from BOT")?;
    expect_at(device, "MTFSF 2 from BOT", 2, Some(0), layout.fm1() + 1)?;
    read_expect(
        device,
        b,
        FILE2_SIZES[0] as usize,
        "after MTFSF 2 from BOT (file 2 block 0)",
    )?;
    Ok(format!(
        "MTFSF 1 from BOT to file 1 block 0, MTFSR 1 to file 1 block 2, MTFSF 1 to file 2 block 0, MTBSF 1 in front of file 1's filemark (object {}), MTFSF 2 from BOT to file 2: each position as MTIOCGET{} reports it and the block read next the one expected",
        layout.fm1(),
        if device.tape_status().is_ok_and(|s| s.logical_object >= 0) {
            " and MTIOCPOS"
        } else {
            ""
        }
    ))
}

/// MTEOM lands after the last filemark, with end of data reported.
fn eod_checks(
    device: &dyn Device,
    layout: &Layout,
    buf: &mut AlignedBuf,
) -> Result<String, String> {
    let b = buf.as_mut_slice();
    op(device, TapeOp::Rewind, "MTREW")?;
    op(device, TapeOp::EndOfData, "MTEOM from BOT")?;
    let s = expect_at(device, "MTEOM", 3, None, layout.fm2() + 1)?;
    if !s.at_eod {
        return Err(format!(
            "after MTEOM: at {} without end of data reported",
            position(&s)
        ));
    }
    let at = position(&s);
    let read = match read_block(device, b) {
        Ok(0) => "a read there returns 0 (no data)".to_string(),
        Ok(n) => {
            return Err(format!(
                "after MTEOM: a read returned a {n}-byte block: data after the end of data"
            ))
        }
        Err(e) => format!("a read there fails ({e}): no data"),
    };
    op(device, TapeOp::EndOfData, "MTEOM again")?;
    op(device, TapeOp::BackFiles(1), "MTBSF 1 from the end of data")?;
    expect_at(
        device,
        "MTBSF 1 from the end of data",
        2,
        None,
        layout.fm2(),
    )?;
    read_expect(device, b, 0, "after MTEOM + MTBSF 1 (the last filemark)")?;
    Ok(format!(
        "MTEOM: {at}, after the last of 3 filemarks; {read}; MTBSF 1 from there is in front of the last filemark (a read returns 0)"
    ))
}

/// Read file 0 again from BOT (writes nothing).
pub fn recheck(device: &dyn Device, spec: &PatternSpec) -> Check {
    let mut at = 0;
    for &(offset, len) in &spec.extents {
        if offset != at || len > u64::from(BLOCK_BYTES_MAX) {
            return fail(
                "pattern_recheck",
                "the report's pattern is not a tape's (one block per extent, back to back from 0, each at most 1M): not made on a tape".into(),
            );
        }
        at += len;
    }
    if let Err(e) = device.tape_op(TapeOp::Rewind) {
        return fail("pattern_recheck", format!("MTREW: {e}"));
    }
    let largest = spec.extents.iter().map(|e| e.1).max().unwrap_or(4096) as usize;
    let mut buf = AlignedBuf::new(largest, 4096);
    let (check, _) = pattern_check("pattern_recheck", device, spec, &mut buf, false);
    let _ = device.tape_op(TapeOp::Rewind);
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_sizes_are_distinct_and_capped() {
        let sizes = pattern_sizes(BLOCK_BYTES_MAX);
        assert_eq!(sizes.len(), PATTERN_SIZES.len() * PATTERN_ROUNDS);
        for s in FILE1_SIZES.iter().chain(&FILE2_SIZES) {
            assert!(!sizes.contains(s), "{s}");
            assert_eq!(*s as usize % pattern::UNIT_BYTES, 0);
        }
        assert!(pattern_sizes(65536).iter().all(|&s| s <= 65536));
        assert_eq!(block_cap(Some(8 << 20)), 1 << 20);
        assert_eq!(block_cap(Some(256 << 10)), 256 << 10);
        assert_eq!(block_cap(None), 1 << 20);
        let l = Layout { file0: sizes };
        assert_eq!((l.fm0(), l.fm1(), l.fm2()), (8, 12, 15));
        let spec = l.spec(1);
        assert_eq!(spec.extents[1], (4096, 12800));
        assert_eq!(spec.bytes(), 2 * (4096 + 12800 + 65536 + (1 << 20)));
    }

    /// A drive that keeps only each block's length and first 4 bytes (as
    /// scsi_debug's tape does) is told apart from one that corrupts data.
    #[test]
    fn a_drive_keeping_only_lengths_is_named() {
        use crate::device::{DeviceSpec, Mode};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("t");
        let spec = DeviceSpec::parse(&format!("vtape:{},size=64M", d.display())).unwrap();
        let dev = crate::device::open(&spec, Mode::Write).unwrap();
        let layout = Layout {
            file0: pattern_sizes(block_cap(dev.block_bytes_max())),
        };
        let p = layout.spec(7);
        let mut buf = AlignedBuf::new(layout.largest(), 4096);
        dev.tape_op(TapeOp::Rewind).unwrap();
        write_layout(dev.as_ref(), &layout, &p, &mut buf).unwrap();
        assert_eq!(recheck(dev.as_ref(), &p).verdict, Verdict::Pass);

        // One unit corrupted: named by block and byte.
        let data = d.join("vtape.data");
        let f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
        use std::os::unix::fs::FileExt;
        let at = p.extents[3].0 + 1000;
        f.write_all_at(&[0xEE], at).unwrap();
        let c = recheck(dev.as_ref(), &p);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(
            c.detail.contains("file 0 block 3 at byte 512"),
            "{}",
            c.detail
        );
        assert_eq!(c.data["first_bad_block"], 3);
        assert_eq!(c.data["keeps_lengths_only"], false);

        // Every block cut to its first 4 bytes, the rest zeros.
        for &(offset, len) in &p.extents {
            f.write_all_at(&vec![0u8; len as usize - 4], offset + 4)
                .unwrap();
        }
        let c = recheck(dev.as_ref(), &p);
        assert_eq!(c.verdict, Verdict::Fail);
        assert_eq!(c.data["keeps_lengths_only"], true, "{c:?}");
        assert!(
            c.detail.contains("keeps only each block's length"),
            "{}",
            c.detail
        );
    }

    #[test]
    fn matrix_is_bounded_by_the_cartridge() {
        let m = matrix_plan(true, 1 << 30, 1 << 20);
        assert_eq!(m.len(), 4);
        assert!(m[..2]
            .iter()
            .all(|c| c.rw == Rw::Write && c.queue_depth == 1));
        assert_eq!(m[0].size_bytes, 16 << 20);
        let m = matrix_plan(false, 64 << 20, 256 << 10);
        assert_eq!(m.len(), 2, "one block size when the limit is 256K");
        assert_eq!(m[0].size_bytes, 8 << 20);
    }
}
