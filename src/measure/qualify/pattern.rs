//! The pattern check: write a known pattern over extents spread across the
//! whole device, make it durable, read it all back and compare.
//!
//! Every 512-byte unit carries its own device offset and the run's nonce
//! ahead of pseudo-random bytes derived from both, so a read-back tells
//! apart a unit that holds the wrong bytes, a unit written for another
//! offset (a misplaced write, or a device that wraps around at less than
//! its claimed capacity: extents reach its last block, and all are
//! written before any is read), and a unit left from an earlier run.

use std::io;

use super::io::{AlignedBuf, DevIo};

/// The granularity of the stamps: the smallest logical block there is.
pub const UNIT_BYTES: usize = 512;
/// The first bytes of every unit.
pub const MAGIC: [u8; 8] = *b"PBIOQUAL";
/// Most extents the pattern is spread over.
pub const EXTENTS_MAX: u64 = 64;
/// An extent is at least this long (unless the device is smaller).
pub const EXTENT_BYTES_MIN: u64 = 1 << 20;
/// Bytes per read or write of the pattern.
const IO_BYTES: usize = 1 << 20;

const _: () = assert!(IO_BYTES.is_multiple_of(UNIT_BYTES));

/// What a run wrote: enough to check it again later (`--recheck`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternSpec {
    pub nonce: u64,
    /// (offset, length) in bytes, ascending, disjoint, unit-aligned.
    pub extents: Vec<(u64, u64)>,
}

impl PatternSpec {
    pub fn bytes(&self) -> u64 {
        self.extents.iter().map(|e| e.1).sum()
    }
}

/// `total_bytes` split into at most `EXTENTS_MAX` extents, each a multiple
/// of `align_bytes` long and placed at a multiple of it, spread evenly from
/// offset 0 to the end of the device (the last extent ends at the last
/// aligned byte). The whole device when `total_bytes` covers it.
pub fn plan_extents(capacity_bytes: u64, total_bytes: u64, align_bytes: u64) -> Vec<(u64, u64)> {
    assert!(align_bytes.is_power_of_two() && align_bytes >= UNIT_BYTES as u64);
    let usable = capacity_bytes / align_bytes * align_bytes;
    if usable == 0 {
        return Vec::new();
    }
    let total = total_bytes.clamp(align_bytes, usable);
    let count = (total / EXTENT_BYTES_MIN).clamp(1, EXTENTS_MAX);
    let extent = total.div_ceil(count).div_ceil(align_bytes) * align_bytes;
    if count == 1 || count * extent >= usable {
        return vec![(0, total.div_ceil(align_bytes) * align_bytes)];
    }
    // stride >= extent because usable >= count * extent.
    let stride = (usable - extent) / (count - 1) / align_bytes * align_bytes;
    let mut out: Vec<(u64, u64)> = (0..count - 1).map(|i| (i * stride, extent)).collect();
    out.push((usable - extent, extent));
    out
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Fill `unit` (UNIT_BYTES) with the pattern for device offset `offset`.
fn fill_unit(unit: &mut [u8], offset: u64, nonce: u64) {
    debug_assert_eq!(unit.len(), UNIT_BYTES);
    unit[0..8].copy_from_slice(&MAGIC);
    unit[8..16].copy_from_slice(&offset.to_le_bytes());
    unit[16..24].copy_from_slice(&nonce.to_le_bytes());
    let mut x = (offset ^ nonce.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for word in unit[24..].chunks_exact_mut(8) {
        word.copy_from_slice(&xorshift(&mut x).to_le_bytes());
    }
}

/// Fill `buf` with the pattern of the device bytes starting at `offset`.
pub fn fill(buf: &mut [u8], offset: u64, nonce: u64) {
    assert!(buf.len().is_multiple_of(UNIT_BYTES) && offset.is_multiple_of(UNIT_BYTES as u64));
    for (i, unit) in buf.chunks_exact_mut(UNIT_BYTES).enumerate() {
        fill_unit(unit, offset + (i * UNIT_BYTES) as u64, nonce);
    }
}

/// What a unit that does not match holds instead (its display: what the
/// check reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Found {
    /// All zeros: never written (or trimmed).
    #[error("zeros (never written, or the write was lost)")]
    Zeros,
    /// This run's pattern for another offset: a misplaced write.
    #[error(
        "this run's data for offset {written_for} (a misplaced write, or the device wraps around)"
    )]
    Misplaced { written_for: u64 },
    /// The pattern of another run (the expected write never reached the medium).
    #[error("the pattern of another run (nonce {nonce:016x}, for offset {written_for}): the expected write is not on the medium")]
    Stale { nonce: u64, written_for: u64 },
    /// The right stamp but wrong bytes after it: corruption inside the unit.
    #[error("the right stamp but wrong bytes after it (corruption)")]
    Corrupt,
    /// Anything else.
    #[error("unrelated bytes")]
    Other,
}

/// How `unit`, read at `offset`, differs from the pattern; None when it matches.
fn check_unit(unit: &[u8], offset: u64, nonce: u64, expect: &mut [u8]) -> Option<Found> {
    fill_unit(expect, offset, nonce);
    if unit == expect {
        return None;
    }
    if unit.iter().all(|&b| b == 0) {
        return Some(Found::Zeros);
    }
    if unit[0..8] != MAGIC {
        return Some(Found::Other);
    }
    let le = |at: usize| u64::from_le_bytes(unit[at..at + 8].try_into().expect("8 bytes"));
    let (written_for, their_nonce) = (le(8), le(16));
    Some(if their_nonce != nonce {
        Found::Stale {
            nonce: their_nonce,
            written_for,
        }
    } else if written_for != offset {
        Found::Misplaced { written_for }
    } else {
        Found::Corrupt
    })
}

/// The outcome of reading the pattern back (nothing checked yet: default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyOutcome {
    pub bytes_checked: u64,
    pub bad_units: u64,
    /// The first unit that does not match: (device offset, what it holds).
    pub first_bad: Option<(u64, Found)>,
    /// The last one, to show the extent of the damage.
    pub last_bad: Option<u64>,
}

/// Compare `buf`, read at `offset`, with the pattern; adds to `out`.
pub fn check(buf: &[u8], offset: u64, nonce: u64, out: &mut VerifyOutcome) {
    let mut expect = [0u8; UNIT_BYTES];
    for (i, unit) in buf.chunks_exact(UNIT_BYTES).enumerate() {
        let at = offset + (i * UNIT_BYTES) as u64;
        if let Some(found) = check_unit(unit, at, nonce, &mut expect) {
            out.bad_units += 1;
            if out.first_bad.is_none() {
                out.first_bad = Some((at, found));
            }
            out.last_bad = Some(at);
        }
    }
    out.bytes_checked += buf.len() as u64;
}

/// Write the pattern over every extent (does not sync).
pub fn write(io: &DevIo, spec: &PatternSpec) -> Result<(), (u64, io::Error)> {
    write_with(spec, |chunk, at| io.write_all_at(chunk, at))
}

/// Write the pattern over every extent with `write` (any transport), in
/// pieces of at most `IO_BYTES`; the error names the piece's offset.
pub fn write_with(
    spec: &PatternSpec,
    mut write: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> Result<(), (u64, io::Error)> {
    let mut buf = AlignedBuf::new(IO_BYTES, 4096);
    for &(start, len) in &spec.extents {
        let mut at = start;
        while at < start + len {
            let n = (start + len - at).min(IO_BYTES as u64) as usize;
            let chunk = &mut buf.as_mut_slice()[..n];
            fill(chunk, at, spec.nonce);
            write(chunk, at).map_err(|e| (at, e))?;
            at += n as u64;
        }
    }
    Ok(())
}

/// Read every extent back and compare.
pub fn verify(io: &DevIo, spec: &PatternSpec) -> Result<VerifyOutcome, (u64, io::Error)> {
    let mut buf = AlignedBuf::new(IO_BYTES, 4096);
    verify_with(spec, &mut buf, |at, chunk| io.read_exact_at(chunk, at))
}

/// Whether `head` (the first bytes of a device) starts with a pattern unit
/// written for offset 0: what a finished qualification run leaves behind.
pub fn is_pattern_head(head: &[u8]) -> bool {
    head.len() >= UNIT_BYTES && {
        let nonce = u64::from_le_bytes(head[16..24].try_into().expect("8 bytes"));
        let mut expect = [0u8; UNIT_BYTES];
        fill_unit(&mut expect, 0, nonce);
        head[..UNIT_BYTES] == expect
    }
}

/// Read every extent with `read` (any transport: a mapping, NBD
/// requests) into `buf` and compare.
pub fn verify_with(
    spec: &PatternSpec,
    buf: &mut AlignedBuf,
    mut read: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
) -> Result<VerifyOutcome, (u64, io::Error)> {
    let mut out = VerifyOutcome::default();
    for &(start, len) in &spec.extents {
        let mut at = start;
        while at < start + len {
            let n = (start + len - at).min(buf.len() as u64) as usize;
            let chunk = &mut buf.as_mut_slice()[..n];
            read(at, chunk).map_err(|e| (at, e))?;
            check(chunk, at, spec.nonce, &mut out);
            at += n as u64;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn check_plan(capacity: u64, total: u64, align: u64) -> Vec<(u64, u64)> {
        let ext = plan_extents(capacity, total, align);
        assert!(!ext.is_empty());
        assert!(ext.len() as u64 <= EXTENTS_MAX);
        for w in ext.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "overlap: {ext:?}");
        }
        for &(o, l) in &ext {
            assert_eq!(o % align, 0);
            assert_eq!(l % align, 0);
            assert!(o + l <= capacity, "{ext:?} beyond {capacity}");
        }
        let bytes: u64 = ext.iter().map(|e| e.1).sum();
        assert!(
            bytes >= total.min(capacity / align * align),
            "{bytes} < {total}"
        );
        ext
    }

    #[test]
    fn extents_spread_to_the_end() {
        let cap = 1000 * MIB + 12345;
        let ext = check_plan(cap, 10 * MIB, 4096);
        assert_eq!(ext.len(), 10);
        assert_eq!(ext[0].0, 0);
        let last = ext.last().unwrap();
        assert_eq!(last.0 + last.1, cap / 4096 * 4096, "reaches the end");
        // Many extents are capped at EXTENTS_MAX.
        let ext = check_plan(1 << 40, 256 * MIB, 4096);
        assert_eq!(ext.len() as u64, EXTENTS_MAX);
        assert_eq!(ext.last().unwrap().0 + ext.last().unwrap().1, 1 << 40);
    }

    #[test]
    fn extents_small_and_whole_devices() {
        // Less than one extent: one extent at 0.
        assert_eq!(check_plan(64 * MIB, 1000, 4096), [(0, 4096)]);
        // The whole device.
        assert_eq!(check_plan(64 * MIB, 64 * MIB, 4096), [(0, 64 * MIB)]);
        assert_eq!(check_plan(64 * MIB, 100 * MIB, 4096), [(0, 64 * MIB)]);
        // Nearly the whole device: spread, still disjoint, to the end.
        let ext = check_plan(7 * MIB + 4096, 7 * MIB, 4096);
        assert_eq!(
            ext.last().unwrap().0 + ext.last().unwrap().1,
            7 * MIB + 4096
        );
        // Larger alignment.
        check_plan(300 * MIB + 512, 30 * MIB, 65536);
        assert!(plan_extents(100, 100, 4096).is_empty());
    }

    #[test]
    fn every_kind_of_damage_is_told_apart() {
        let nonce = 0x1234_5678_9abc_def0;
        let base = 1 << 20;
        let mut buf = vec![0u8; 8 * UNIT_BYTES];
        fill(&mut buf, base, nonce);
        let mut out = VerifyOutcome::default();
        check(&buf, base, nonce, &mut out);
        assert_eq!(out.bad_units, 0);
        assert_eq!(out.bytes_checked, buf.len() as u64);

        let unit = |i: usize| i * UNIT_BYTES..(i + 1) * UNIT_BYTES;
        let mut damaged = buf.clone();
        damaged[unit(1)].fill(0); // zeros
        let moved = damaged[unit(5)].to_vec();
        damaged[unit(2)].copy_from_slice(&moved); // misplaced
        fill(
            &mut damaged[unit(3)],
            base + 3 * UNIT_BYTES as u64,
            nonce ^ 1,
        ); // stale
        damaged[4 * UNIT_BYTES + 100] ^= 0x40; // corrupt
        damaged[unit(6)].fill(0xAB); // other
        let one = |i: usize| {
            let mut out = VerifyOutcome::default();
            let at = base + (i * UNIT_BYTES) as u64;
            check(&damaged[unit(i)], at, nonce, &mut out);
            out.first_bad.map(|(o, f)| {
                assert_eq!(o, at);
                f
            })
        };
        assert_eq!(one(0), None);
        assert_eq!(one(1), Some(Found::Zeros));
        assert_eq!(
            one(2),
            Some(Found::Misplaced {
                written_for: base + 5 * UNIT_BYTES as u64
            })
        );
        assert_eq!(
            one(3),
            Some(Found::Stale {
                nonce: nonce ^ 1,
                written_for: base + 3 * UNIT_BYTES as u64
            })
        );
        assert_eq!(one(4), Some(Found::Corrupt));
        assert_eq!(one(6), Some(Found::Other));

        let mut out = VerifyOutcome::default();
        check(&damaged, base, nonce, &mut out);
        assert_eq!(out.bad_units, 5);
        assert_eq!(
            out.first_bad,
            Some((base + UNIT_BYTES as u64, Found::Zeros))
        );
        assert_eq!(out.last_bad, Some(base + 6 * UNIT_BYTES as u64));
    }

    #[test]
    fn the_head_of_a_qualified_device_is_recognised() {
        let mut buf = vec![0u8; 4096];
        fill(&mut buf, 0, 42);
        assert!(is_pattern_head(&buf));
        let mut other = vec![0u8; 4096];
        fill(&mut other, 4096, 42);
        assert!(!is_pattern_head(&other), "offset 4096's unit is not a head");
        assert!(!is_pattern_head(&[0u8; 4096]));
        assert!(!is_pattern_head(&buf[..100]));
    }
}
