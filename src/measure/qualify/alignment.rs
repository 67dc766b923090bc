//! O_DIRECT limits found by trying: the smallest offset/length granularity
//! and buffer alignment the device accepts, and the largest single I/O.
//!
//! The kernel answers EINVAL to a direct I/O it will not do; anything else
//! is a real error. Every probe writes and then reads the same range (the
//! run is destructive anyway), so a limit holds for both directions.

use std::io;

use super::io::{AlignedBuf, DevIo};

/// Granularities tried, smallest first.
pub const CANDIDATES: [u64; 8] = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];
/// Buffers for the memory probe are aligned to this; candidates stay below it.
const BASE_ALIGN: usize = 65536;
/// The first size of the largest-I/O probe: pbio's default record (a
/// 4 KiB header and a 1 MiB payload); then 2 MiB, doubling.
pub const RECORD_BYTES: u64 = (1 << 20) + crate::format::BLOCK_BYTES as u64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaxIo {
    /// The largest single write and read accepted whole (0: none).
    pub accepted_bytes: u64,
    /// The largest size tried (the bound, or the device's capacity).
    pub bound_bytes: u64,
    /// Why the next size up was not accepted, when one failed.
    pub refused: Option<String>,
}

/// Whether a direct write and read of `buf` at `offset` are accepted:
/// Ok(false) on EINVAL, Err on any other error.
fn accepted(io: &DevIo, buf: &mut [u8], offset: u64) -> io::Result<bool> {
    let einval = |e: &io::Error| e.raw_os_error() == Some(libc::EINVAL);
    match io.pwrite(buf, offset) {
        Ok(n) if n == buf.len() => {}
        Ok(_) => return Ok(false),
        Err(e) if einval(&e) => return Ok(false),
        Err(e) => return Err(e),
    }
    match io.pread(buf, offset) {
        Ok(n) if n == buf.len() => Ok(true),
        Ok(_) => Ok(false),
        Err(e) if einval(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Smallest offset and length granularity: a write and read of `g` bytes at
/// offset `g`, from a buffer aligned far beyond any candidate.
pub fn offset_granularity(io: &DevIo, capacity_bytes: u64) -> io::Result<Option<u64>> {
    let mut buf = AlignedBuf::new(BASE_ALIGN, BASE_ALIGN);
    for g in CANDIDATES {
        if 2 * g > capacity_bytes {
            break;
        }
        let chunk = &mut buf.as_mut_slice()[..g as usize];
        chunk.fill(0x5A);
        if accepted(io, chunk, g)? {
            return Ok(Some(g));
        }
    }
    Ok(None)
}

/// Smallest buffer alignment: `granularity` bytes at offset `granularity`
/// from a buffer that starts exactly `a` bytes past a 64 KiB boundary (so
/// aligned to `a` and to nothing larger).
pub fn memory_alignment(io: &DevIo, granularity: u64) -> io::Result<Option<u64>> {
    let len = granularity as usize;
    let mut buf = AlignedBuf::new(2 * BASE_ALIGN + len, BASE_ALIGN);
    for a in CANDIDATES.iter().map(|&a| a as usize) {
        if a >= BASE_ALIGN {
            break;
        }
        let chunk = &mut buf.as_mut_slice()[a..a + len];
        debug_assert_eq!(chunk.as_ptr() as usize % a, 0);
        debug_assert_ne!(chunk.as_ptr() as usize % (2 * a), 0);
        chunk.fill(0xA5);
        if accepted(io, chunk, granularity)? {
            return Ok(Some(a as u64));
        }
    }
    // 64 KiB itself: the base of the buffer.
    let chunk = &mut buf.as_mut_slice()[..len];
    if accepted(io, chunk, granularity)? {
        return Ok(Some(BASE_ALIGN as u64));
    }
    Ok(None)
}

/// The largest single write and read accepted whole at offset 0: pbio's
/// default record, then 2 MiB doubling up to `bound_bytes` (and the capacity).
pub fn max_io(io: &DevIo, capacity_bytes: u64, bound_bytes: u64) -> io::Result<MaxIo> {
    let bound = bound_bytes.min(capacity_bytes / 4096 * 4096);
    let mut out = MaxIo {
        accepted_bytes: 0,
        bound_bytes: bound,
        refused: None,
    };
    let mut buf = AlignedBuf::new(bound as usize, 4096);
    buf.as_mut_slice().fill(0x3C);
    let sizes = std::iter::once(RECORD_BYTES)
        .chain(std::iter::successors(Some(2 << 20), |s: &u64| {
            s.checked_mul(2)
        }))
        .take_while(|&s| s <= bound);
    for size in sizes {
        let chunk = &mut buf.as_mut_slice()[..size as usize];
        let result = match io.pwrite(chunk, 0) {
            Ok(n) if n as u64 == size => match io.pread(chunk, 0) {
                Ok(n) if n as u64 == size => Ok(()),
                Ok(n) => Err(format!("a read of {size} bytes returned {n}")),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    Err(format!("a read of {size} bytes: {e}"))
                }
                Err(e) => return Err(e),
            },
            Ok(n) => Err(format!("a write of {size} bytes took {n}")),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                Err(format!("a write of {size} bytes: {e}"))
            }
            Err(e) => return Err(e),
        };
        match result {
            Ok(()) => out.accepted_bytes = size,
            Err(why) => {
                out.refused = Some(why);
                break;
            }
        }
    }
    Ok(out)
}
