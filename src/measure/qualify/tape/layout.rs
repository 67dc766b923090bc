//! The layout checks 4-5 work on (pattern blocks, two short files, their
//! filemarks), written from BOT, and the checks that read and position
//! over it: rewind, pattern, filemarks, space, end of data.

use std::time::Instant;

use serde_json::json;

use super::error::TapeError;
use super::{FILE1_SIZES, FILE2_SIZES};
use crate::device::{read_block, write_block, Device, TapeOp, TapeStatus};
use crate::measure::qualify::io::AlignedBuf;
use crate::measure::qualify::pattern::{self, PatternSpec, VerifyOutcome};
use crate::measure::qualify::{size_text, Check, Verdict};
use crate::units::human_bytes;

/// The tape's position in words.
pub(super) fn position(s: &TapeStatus) -> String {
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
pub(super) fn expect_at(
    dev: &dyn Device,
    after: &str,
    file: i64,
    block: Option<i64>,
    object: i64,
) -> Result<TapeStatus, TapeError> {
    let s = dev.tape_status().map_err(|error| TapeError::Status {
        after: after.to_string(),
        error,
    })?;
    let file_ok = s.file_number == file;
    let block_ok = block.is_none_or(|b| s.block_number == b);
    let object_ok = s.logical_object < 0 || s.logical_object == object;
    if file_ok && block_ok && object_ok {
        Ok(s)
    } else {
        Err(TapeError::Misplaced {
            after: after.to_string(),
            at: s,
            file,
            block,
            object,
        })
    }
}

pub(super) fn op(dev: &dyn Device, op: TapeOp, what: &str) -> Result<(), TapeError> {
    dev.tape_op(op).map_err(|error| TapeError::Op {
        what: what.to_string(),
        error,
    })
}

/// Read one block; it must be exactly `len` bytes (0: a filemark).
pub(super) fn read_expect(
    dev: &dyn Device,
    buf: &mut [u8],
    len: usize,
    what: &str,
) -> Result<(), TapeError> {
    read_expect_with(dev, buf, len, || what.to_string())
}

/// `read_expect`, naming the read (`what`) only when it fails.
pub(super) fn read_expect_with(
    dev: &dyn Device,
    buf: &mut [u8],
    len: usize,
    what: impl FnOnce() -> String,
) -> Result<(), TapeError> {
    match read_block(dev, buf) {
        Ok(n) if n == len => Ok(()),
        Ok(0) => Err(TapeError::Filemark {
            what: what(),
            want: len,
        }),
        Ok(got) if len == 0 => Err(TapeError::NoFilemark { what: what(), got }),
        Ok(got) => Err(TapeError::Length {
            what: what(),
            got,
            want: len,
        }),
        Err(error) => Err(TapeError::Read {
            what: what(),
            error,
        }),
    }
}

/// Write one block, all of it; the write is named (`what`, and the
/// block's length in a failed write with `name_bytes`) only when it fails.
pub(super) fn write_expect(
    dev: &dyn Device,
    block: &[u8],
    name_bytes: bool,
    what: impl FnOnce() -> String,
) -> Result<(), TapeError> {
    match write_block(dev, block) {
        Ok(n) if n == block.len() => Ok(()),
        Ok(wrote) => Err(TapeError::ShortWrite {
            what: what(),
            wrote,
            want: block.len(),
        }),
        Err(error) => Err(TapeError::Write {
            what: what(),
            bytes: name_bytes.then_some(block.len()),
            error,
        }),
    }
}

/// The layout of checks 4-5, in logical objects from BOT.
pub(super) struct Layout {
    pub(super) file0: Vec<u32>,
}

impl Layout {
    /// Logical object of file 0's filemark.
    pub(super) fn fm0(&self) -> i64 {
        self.file0.len() as i64
    }
    pub(super) fn fm1(&self) -> i64 {
        self.fm0() + 1 + FILE1_SIZES.len() as i64
    }
    pub(super) fn fm2(&self) -> i64 {
        self.fm1() + 1 + FILE2_SIZES.len() as i64
    }
    /// Files 0 to 2 after file 0's pattern blocks: the blocks written
    /// there (none in file 0) and the logical object of the filemark
    /// ending each.
    fn files(&self) -> [(&'static [u32], i64); 3] {
        [
            (&[], self.fm0()),
            (&FILE1_SIZES, self.fm1()),
            (&FILE2_SIZES, self.fm2()),
        ]
    }
    pub(super) fn largest(&self) -> usize {
        self.file0.iter().copied().max().unwrap_or(4096) as usize
    }
    /// File 0's pattern: one extent per block, back to back from 0.
    pub(super) fn spec(&self, nonce: u64) -> PatternSpec {
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

/// MTREW, then BOT, file 0, block 0 (object 0).
pub(super) fn rewind(device: &dyn Device, from: &str) -> Result<String, String> {
    let t = Instant::now();
    op(device, TapeOp::Rewind, &format!("MTREW {from}"))?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let s = expect_at(device, &format!("MTREW {from}"), 0, Some(0), 0)?;
    if !s.at_bot {
        return Err(TapeError::NotAtBot {
            from: from.to_string(),
            at: s,
        }
        .into());
    }
    Ok(format!("MTREW {from}: BOT, file 0 block 0 in {ms:.1} ms"))
}

/// Write the layout from BOT; returns what each MTWEOF left.
pub(super) fn write_layout(
    device: &dyn Device,
    layout: &Layout,
    spec: &PatternSpec,
    buf: &mut AlignedBuf,
) -> Result<Vec<String>, String> {
    for (i, &(offset, len)) in spec.extents.iter().enumerate() {
        let chunk = &mut buf.as_mut_slice()[..len as usize];
        pattern::fill(chunk, offset, spec.nonce);
        write_expect(device, chunk, true, || format!("file 0 block {i}"))?;
    }
    let mut notes = Vec::with_capacity(3);
    for (file, (sizes, mark)) in layout.files().iter().enumerate() {
        for (i, &len) in sizes.iter().enumerate() {
            let chunk = &mut buf.as_mut_slice()[..len as usize];
            pattern::fill(chunk, u64::from(len) << 20, spec.nonce);
            write_expect(device, chunk, true, || format!("file {file} block {i}"))?;
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
    let mut out = VerifyOutcome::default();
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

pub(super) fn fail(name: &'static str, detail: String) -> Check {
    Check::new(name, Verdict::Fail, json!(0), "bytes").detail(detail)
}

/// From in front of file 0's filemark: read it (0), then files 1 and 2
/// and their filemarks; positions after each filemark.
pub(super) fn read_filemarks(
    device: &dyn Device,
    layout: &Layout,
    buf: &mut AlignedBuf,
) -> Result<String, String> {
    for (file, (sizes, mark)) in layout.files().iter().enumerate() {
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

/// One positioning of `step`.
type Move<'a> = (
    (TapeOp, &'a str),
    (&'a str, i64, Option<i64>, i64),
    (u32, &'a str),
);

/// One positioning: the tape operation (named `what`), the head where
/// the layout says (`after`: as the failure names it; file, block, logical
/// object as `expect_at` takes them), then the read there returns one
/// block of `len` bytes (0: a filemark; named `read`).
fn step(
    device: &dyn Device,
    buf: &mut [u8],
    ((tape_op, what), (after, file, block, object), (len, read)): Move,
) -> Result<(), TapeError> {
    op(device, tape_op, what)?;
    expect_at(device, after, file, block, object)?;
    read_expect(device, buf, len as usize, read)
}

/// MTFSF, MTFSR, MTBSF from BOT over the layout.
pub(super) fn space_checks(
    device: &dyn Device,
    layout: &Layout,
    b: &mut [u8],
) -> Result<String, String> {
    let from_bot: [Move; 4] = [
        (
            (TapeOp::ForwardFiles(1), "MTFSF 1 from BOT"),
            ("MTFSF 1 from BOT", 1, Some(0), layout.fm0() + 1),
            (FILE1_SIZES[0], "after MTFSF 1 from BOT (file 1 block 0)"),
        ),
        (
            (TapeOp::ForwardBlocks(1), "MTFSR 1 in file 1"),
            ("MTFSR 1 from file 1 block 1", 1, Some(2), layout.fm0() + 3),
            (FILE1_SIZES[2], "after MTFSR 1 (file 1 block 2)"),
        ),
        (
            (TapeOp::ForwardFiles(1), "MTFSF 1 from file 1 block 3"),
            ("MTFSF 1 from file 1", 2, Some(0), layout.fm1() + 1),
            (FILE2_SIZES[0], "after MTFSF 1 (file 2 block 0)"),
        ),
        (
            (TapeOp::BackFiles(1), "MTBSF 1 from file 2 block 1"),
            ("MTBSF 1 from file 2", 1, None, layout.fm1()),
            (0, "after MTBSF 1 (in front of file 1's filemark)"),
        ),
    ];
    op(device, TapeOp::Rewind, "MTREW")?;
    for m in from_bot {
        step(device, b, m)?;
    }
    expect_at(
        device,
        "reading file 1's filemark after MTBSF 1",
        2,
        Some(0),
        layout.fm1() + 1,
    )?;
    op(device, TapeOp::Rewind, "MTREW")?;
    step(
        device,
        b,
        (
            (TapeOp::ForwardFiles(2), "MTFSF 2 from BOT"),
            ("MTFSF 2 from BOT", 2, Some(0), layout.fm1() + 1),
            (FILE2_SIZES[0], "after MTFSF 2 from BOT (file 2 block 0)"),
        ),
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
pub(super) fn eod_checks(
    device: &dyn Device,
    layout: &Layout,
    b: &mut [u8],
) -> Result<String, String> {
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
