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

mod error;
mod layout;
mod matrix;

use serde_json::{json, Value};

use super::io::AlignedBuf;
use super::pattern::PatternSpec;
use super::{size_text, CellPlan, Check, Event, Options, Report, Verdict};
use crate::device::tape::TAPE_BLOCK_BYTES_DEFAULT;
use crate::device::{Device, TapeOp, TapeStatus};
use crate::measure::bench::Rw;
use crate::units::human_bytes;
pub use layout::pattern_check;
use layout::{
    eod_checks, fail, position, read_expect, read_filemarks, rewind, space_checks, write_layout,
    Layout,
};
use matrix::run_matrix;

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
    // A movement over the written layout, as the check `name`.
    type Movement = fn(&dyn Device, &Layout, &mut [u8]) -> Result<String, String>;
    let mut moved = |name: &'static str, movement: Movement| {
        let (verdict, detail) = match &write_error {
            Some(_) => (Verdict::Fail, "the layout was not written".to_string()),
            None => match movement(device, &layout, buf.as_mut_slice()) {
                Ok(d) => (Verdict::Pass, d),
                Err(e) => (Verdict::Fail, e),
            },
        };
        Check::new(name, verdict, Value::Null, "").detail(detail)
    };
    let space = moved("space", space_checks);
    let eod = moved("end_of_data", eod_checks);
    let rewind_last = rewind(device, "from the end of data").and_then(|d| {
        read_expect(
            device,
            buf.as_mut_slice(),
            layout.file0[0] as usize,
            "after MTREW",
        )
        .map(|_| format!("{d}, and the next read is file 0's first block"))
        .map_err(String::from)
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
    use crate::measure::qualify::pattern;

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
