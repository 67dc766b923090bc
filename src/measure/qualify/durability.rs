//! Flush and durability behaviour: how long making a write durable takes,
//! by the two ways pbio and other programs do it (a write then fsync; a
//! write with RWF_DSYNC), and what the disk says about its write cache.

use std::io;
use std::time::Instant;

use hdrhistogram::Histogram;

use super::io::{AlignedBuf, DevIo};
use super::{histogram, LATENCY_NS_MAX};
use crate::device::Device;

/// The durable writes go to this many distinct blocks at the start of the
/// device, in turn (overwritten later by the pattern check).
const SLOTS: u64 = 256;

/// Latencies of `rounds` operations; `first_error` ends the series.
pub struct Series {
    pub latency_ns: Histogram<u64>,
    pub error: Option<(u64, io::Error)>,
}

fn record(h: &mut Histogram<u64>, started: Instant) {
    let ns = started.elapsed().as_nanos() as u64;
    h.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
}

/// `rounds` times: write `write_bytes` (not timed), then fsync (timed).
pub fn fsync_series(device: &dyn Device, io: &DevIo, rounds: u32, write_bytes: u64) -> Series {
    series(
        rounds,
        write_bytes,
        |i| i as u8,
        |buf, offset| {
            io.write_all_at(buf, offset)?;
            let started = Instant::now();
            device.sync()?;
            Ok(started)
        },
    )
}

/// `rounds` writes of `write_bytes` with RWF_DSYNC, each timed.
pub fn dsync_series(io: &DevIo, rounds: u32, write_bytes: u64) -> Series {
    series(
        rounds,
        write_bytes,
        |i| !(i as u8),
        |buf, offset| {
            let started = Instant::now();
            match io.pwrite_dsync(buf, offset)? {
                n if n as u64 == write_bytes => Ok(started),
                n => Err(io::Error::other(format!(
                    "short durable write: {n} of {write_bytes} bytes"
                ))),
            }
        },
    )
}

/// `rounds` rounds over the slots: the buffer of `write_bytes` filled
/// with `fill(round)`, then `round(buffer, offset)`, which returns when
/// its timed part started; the latency is taken when it returns. The
/// first error ends the series.
fn series(
    rounds: u32,
    write_bytes: u64,
    fill: impl Fn(u64) -> u8,
    mut round: impl FnMut(&[u8], u64) -> io::Result<Instant>,
) -> Series {
    let mut buf = AlignedBuf::new(write_bytes as usize, 4096);
    let mut out = Series {
        latency_ns: histogram(),
        error: None,
    };
    for i in 0..rounds as u64 {
        let offset = (i % SLOTS) * write_bytes;
        buf.as_mut_slice().fill(fill(i));
        match round(buf.as_slice(), offset) {
            Ok(started) => record(&mut out.latency_ns, started),
            Err(e) => {
                out.error = Some((offset, e));
                break;
            }
        }
    }
    out
}

/// Bytes the durable-write series need at the start of the device.
pub fn region_bytes(write_bytes: u64) -> u64 {
    SLOTS * write_bytes
}

/// What the write cache setting means for durability, in words.
pub fn write_cache_meaning(write_cache: &str, fua: Option<bool>) -> String {
    match (write_cache, fua) {
        ("write back", Some(true)) => {
            "the disk caches writes; fsync and RWF_DSYNC reach the medium by cache flushes and FUA writes".into()
        }
        ("write back", _) => {
            "the disk caches writes; fsync and RWF_DSYNC reach the medium by cache flushes (no FUA)".into()
        }
        ("write through", _) => {
            "the disk reports no volatile cache: a completed write is on the medium, the kernel sends no flushes".into()
        }
        (other, _) => format!("unrecognised setting '{other}'"),
    }
}
