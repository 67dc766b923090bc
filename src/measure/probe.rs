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

use crate::device::{Access, DataPath, Device, Transport};
use crate::io::{self, BufferPool, Lease, Uring};

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
    let transport = match dev.data_path() {
        DataPath::Mapped(_) => None,
        DataPath::Descriptor => Some(None),
        DataPath::Pipelined(t) => Some(Some(t)),
    };
    let Some(transport) = transport.filter(|_| dev.access() == Access::Random) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "no write probe for this kind of device: give rate=",
        ));
    };
    let end = dev.capacity_bytes().min(PROBE_OFFSET + limits.bytes) / PROBE_BLOCK as u64
        * PROBE_BLOCK as u64;
    if end <= PROBE_OFFSET {
        return Err(std::io::Error::other(
            "the device is too small to probe (give rate=)",
        ));
    }
    let depth: usize = match transport {
        Some(_) => dev.records_in_flight(PROBE_BLOCK as u64, 4, 64),
        None => 8,
    };
    let pool = BufferPool::new(depth, PROBE_BLOCK as usize);
    let mut free = pool.lease_all();
    // Not zeros: a server that detects zero writes must not flatter the link.
    for lease in free.iter_mut() {
        for (i, byte) in lease.bytes_mut().iter_mut().enumerate() {
            *byte = (i as u8) ^ 0xa5;
        }
    }
    let started = Instant::now();
    let written = match transport {
        Some(t) => probe_transport(t, free, end, started, limits.time)?,
        None => probe_fd(dev, free, end, started, limits.time)?,
    };
    dev.sync()?;
    let elapsed = started.elapsed();
    Ok(Measured {
        bytes_per_sec: ((written as f64 / elapsed.as_secs_f64().max(1e-6)) as u64).max(1),
        bytes: written,
        elapsed,
    })
}

/// Slots by handle while their write is in flight.
fn lend(busy: &mut [Option<Lease>], lease: Lease) -> (usize, &Lease) {
    let handle = busy
        .iter()
        .position(Option::is_none)
        .expect("a handle per lease");
    (handle, busy[handle].insert(lease))
}

fn probe_fd(
    dev: &dyn Device,
    mut free: Vec<Lease>,
    end: u64,
    started: Instant,
    time: Duration,
) -> std::io::Result<u64> {
    let mut ring = Uring::new(free.len() as u32)?;
    let mut busy: Vec<Option<Lease>> = (0..free.len()).map(|_| None).collect();
    let mut next = PROBE_OFFSET;
    let mut written = 0u64;
    let mut error = None;
    let mut completions = Vec::new();
    loop {
        while error.is_none() && next < end && started.elapsed() < time {
            let Some(lease) = free.pop() else { break };
            let (handle, lease) = lend(&mut busy, lease);
            // The lease is not touched until its write is reaped (every
            // write is reaped before this returns); the device fd stays open.
            let entry = io::write_at(dev.fd(), lease, 0..PROBE_BLOCK as usize, next);
            ring.push(entry.user_data(handle as u64))?;
            next += PROBE_BLOCK as u64;
        }
        if ring.in_flight() == 0 {
            break;
        }
        ring.turn(&mut completions)?;
        for &(handle, result) in &completions {
            free.push(busy[handle as usize].take().expect("a lease in flight"));
            if result < 0 {
                error.get_or_insert(std::io::Error::from_raw_os_error(-result));
            } else {
                written += result as u64;
            }
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(written),
    }
}

fn probe_transport(
    mut pipe: Box<dyn Transport + '_>,
    mut free: Vec<Lease>,
    end: u64,
    started: Instant,
    time: Duration,
) -> std::io::Result<u64> {
    let mut ring = Uring::new(8)?;
    let mut busy: Vec<Option<Lease>> = (0..free.len()).map(|_| None).collect();
    let mut next = PROBE_OFFSET;
    let mut written = 0u64;
    let mut failure: Option<String> = None;
    let mut done = Vec::new();
    loop {
        while failure.is_none() && next < end && started.elapsed() < time {
            let Some(lease) = free.pop() else { break };
            let (handle, lease) = lend(&mut busy, lease);
            pipe.submit_write(handle as u64, lease, PROBE_BLOCK, next);
            next += PROBE_BLOCK as u64;
        }
        let waiting = failure.is_none() && pipe.outstanding() > 0;
        if !waiting && pipe.ops_in_flight() == 0 {
            break;
        }
        if let Some(e) = pipe.turn(&mut ring, &mut done)? {
            failure.get_or_insert(e.to_string());
        }
        for (handle, result) in done.drain(..) {
            free.push(busy[handle as usize].take().expect("a lease in flight"));
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
