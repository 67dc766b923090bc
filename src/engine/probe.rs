//! The throughput probe of `--balance time`: a device given without
//! `rate=` is measured before planning, by writing to it for a moment the
//! way the backup will (1 MiB blocks, several in flight, through an
//! io_uring: `Write` on its descriptor, or NBD write requests through the
//! device's pipe), flushed at the end so that a write-back cache does not
//! flatter it. The bytes go where the set's records will go anyway (after
//! the label), on a device the overwrite guard has already cleared.
//!
//! During the run the measured rates are not trusted blindly: under
//! `--balance time` a device that runs out of work takes whole segments
//! from the busiest device's queue (the dispatcher's stealing), so a link
//! that turns slower than its probe said hands work to the others.

use std::time::{Duration, Instant};

use io_uring::{opcode, types, IoUring};

use crate::device::nbd::{pipe::Pipe, proto};
use crate::device::{Access, Device};
use crate::io::buffers::BufferPool;

/// Where the probe writes: from 1 MiB (past the label) on.
const PROBE_OFFSET: u64 = 1 << 20;
const PROBE_BLOCK: u32 = 1 << 20;

/// How long and how much a probe writes at most.
#[derive(Clone, Copy, Debug)]
pub struct ProbeLimits {
    pub time: Duration,
    pub bytes: u64,
}

impl Default for ProbeLimits {
    fn default() -> ProbeLimits {
        ProbeLimits {
            time: Duration::from_millis(500),
            bytes: 256 << 20,
        }
    }
}

/// The measured rate and what it took.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    pub bytes_per_sec: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Measure `dev`'s write throughput. Random-access devices only (a tape
/// is positioned and written in order: it is declared with `rate=`).
pub fn write_rate(dev: &dyn Device, limits: ProbeLimits) -> std::io::Result<Measured> {
    if dev.access() != Access::Random || dev.mapping().is_some() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "no write probe for this kind of device: give rate=",
        ));
    }
    let end = dev.capacity_bytes().min(PROBE_OFFSET + limits.bytes) / PROBE_BLOCK as u64
        * PROBE_BLOCK as u64;
    if end <= PROBE_OFFSET {
        return Err(std::io::Error::other(
            "the device is too small to probe (give rate=)",
        ));
    }
    let depth: usize = match dev.nbd() {
        Some(nbd) => nbd.records_in_flight(PROBE_BLOCK as u64, 4, 64),
        None => 8,
    };
    let mut pool = BufferPool::new(depth, PROBE_BLOCK as usize);
    // Not zeros: a server that detects zero writes must not flatter the link.
    for b in 0..depth {
        for (i, byte) in pool.slot_mut(b).iter_mut().enumerate() {
            *byte = (i as u8) ^ 0xa5;
        }
    }
    let started = Instant::now();
    let written = match dev.nbd() {
        Some(nbd) => probe_nbd(nbd, &pool, end, started, limits.time)?,
        None => probe_fd(dev, &pool, end, started, limits.time)?,
    };
    dev.sync()?;
    let elapsed = started.elapsed();
    Ok(Measured {
        bytes_per_sec: ((written as f64 / elapsed.as_secs_f64().max(1e-6)) as u64).max(1),
        bytes: written,
        elapsed,
    })
}

fn probe_fd(
    dev: &dyn Device,
    pool: &BufferPool,
    end: u64,
    started: Instant,
    time: Duration,
) -> std::io::Result<u64> {
    let mut ring = IoUring::new(pool.count().next_power_of_two() as u32)?;
    let mut next = PROBE_OFFSET;
    let mut in_flight = 0usize;
    let mut free: Vec<usize> = (0..pool.count()).collect();
    let mut written = 0u64;
    let mut error = None;
    loop {
        while error.is_none() && next < end && started.elapsed() < time {
            let Some(b) = free.pop() else { break };
            let entry = opcode::Write::new(types::Fd(dev.fd()), pool.ptr(b), PROBE_BLOCK)
                .offset(next)
                .build()
                .user_data(b as u64);
            // SAFETY: slot b of `pool` is not used by any other operation
            // and the pool outlives the ring's use of it (every write is
            // reaped before this returns); the device fd stays open.
            unsafe { ring.submission().push(&entry) }.expect("a free slot has room in the ring");
            next += PROBE_BLOCK as u64;
            in_flight += 1;
        }
        if in_flight == 0 {
            break;
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        for c in ring.completion() {
            in_flight -= 1;
            free.push(c.user_data() as usize);
            if c.result() < 0 {
                error.get_or_insert(std::io::Error::from_raw_os_error(-c.result()));
            } else {
                written += c.result() as u64;
            }
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(written),
    }
}

fn probe_nbd(
    nbd: &crate::device::nbd::NbdDevice,
    pool: &BufferPool,
    end: u64,
    started: Instant,
    time: Duration,
) -> std::io::Result<u64> {
    let mut ring = IoUring::new(8)?;
    let mut pipe = Pipe::new(nbd);
    let mut next = PROBE_OFFSET;
    let mut free: Vec<usize> = (0..pool.count()).collect();
    let mut written = 0u64;
    let mut failure: Option<String> = None;
    let mut done = Vec::new();
    loop {
        while failure.is_none() && next < end && started.elapsed() < time {
            let Some(b) = free.pop() else { break };
            pipe.submit(b as u64, proto::CMD_WRITE, pool.ptr(b), PROBE_BLOCK, next);
            next += PROBE_BLOCK as u64;
        }
        let waiting = failure.is_none() && pipe.outstanding() > 0;
        if !waiting && pipe.ops_in_flight() == 0 {
            break;
        }
        if let Some(e) = pipe.turn(&mut ring, &mut done)? {
            failure.get_or_insert(e);
        }
        for (b, result) in done.drain(..) {
            free.push(b as usize);
            if result < 0 {
                failure.get_or_insert(format!(
                    "write: {}",
                    std::io::Error::from_raw_os_error(-result)
                ));
                pipe.abort("probe failed");
            } else {
                written += result as u64;
            }
        }
    }
    match failure {
        Some(e) => Err(std::io::Error::other(e)),
        None => Ok(written),
    }
}
