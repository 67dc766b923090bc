//! Raw device throughput and latency through pbio's own io_uring path
//! (`pbio bench`): what the devices can do with pbio's rings, registered
//! buffers and O_DIRECT, without sources, records or checksums. It is the
//! yardstick between fio and `pbio backup`/`restore`: fio vs `bench`
//! measures the ring mechanics, `bench` vs `backup` the engine's own cost.
//!
//! One thread and one ring per device, like the backup ring. Each device
//! gets `queue_depth` registered, aligned buffers of `block_bytes`; every
//! buffer is one operation in flight, at the next sequential offset. The
//! loop is fio's: push what is ready, one `io_uring_enter` that submits and
//! waits for at least one completion, copy the completions out, act on them
//! (latency, resubmit), repeat. Latency is from the submit call that carried
//! the operation to the reap that saw it, recorded in an HDR histogram.

use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::device::{DataPath, Device, ErrorClass, Transport};
use crate::format::BLOCK_BYTES;
use crate::io::{self, BufferPool, Lease, Uring};
use hdrhistogram::Histogram;

/// Most operations in flight per device (buffer indexes are u16; the pool
/// is queue_depth * block_bytes of locked memory).
pub const QUEUE_DEPTH_MAX: usize = 256;
/// Largest I/O size.
pub const BLOCK_BYTES_MAX: usize = 64 << 20;
/// Retries of one operation that returned EINTR/EAGAIN.
const RETRIES_MAX: u32 = 1000;
/// Latencies above this are clamped (an hour: something is badly wrong).
const LATENCY_NS_MAX: u64 = 3_600_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rw {
    Write,
    Read,
}

impl Rw {
    pub fn name(self) -> &'static str {
        match self {
            Rw::Write => "write",
            Rw::Read => "read",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct BenchConfig {
    pub rw: Rw,
    /// Bytes per operation (a multiple of 4096).
    pub block_bytes: usize,
    pub queue_depth: usize,
    /// Bytes to transfer on each device, from offset 0 (a multiple of 4096).
    pub size_bytes: u64,
}

impl BenchConfig {
    /// Check the limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.block_bytes == 0
            || !self.block_bytes.is_multiple_of(BLOCK_BYTES)
            || self.block_bytes > BLOCK_BYTES_MAX
        {
            return Err(ConfigError::BlockBytes(self.block_bytes));
        }
        if !(1..=QUEUE_DEPTH_MAX).contains(&self.queue_depth) {
            return Err(ConfigError::QueueDepth(self.queue_depth));
        }
        if self.size_bytes == 0 || !self.size_bytes.is_multiple_of(BLOCK_BYTES as u64) {
            return Err(ConfigError::SizeBytes(self.size_bytes));
        }
        Ok(())
    }
}

/// A `BenchConfig` outside the limits (the option it names is the
/// user's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--bs {0} must be a multiple of {BLOCK_BYTES} and at most {BLOCK_BYTES_MAX}")]
    BlockBytes(usize),
    #[error("--qd {0} must be between 1 and {QUEUE_DEPTH_MAX}")]
    QueueDepth(usize),
    #[error("--size {0} must be a positive multiple of {BLOCK_BYTES}")]
    SizeBytes(u64),
}

/// Which io_uring setup flags the ring got (`io::Uring::new` chooses).
pub use crate::io::RingSetup;

/// One device's figures.
pub struct DeviceBench {
    pub path: String,
    pub direct_io: bool,
    pub ring_setup: RingSetup,
    pub bytes: u64,
    pub ios: u64,
    pub short_ios: u64,
    pub retries: u64,
    /// From the common start to this device's last completion.
    pub elapsed: Duration,
    /// Per-operation latency, nanoseconds.
    pub latency_ns: Histogram<u64>,
    /// CPU time of this device's thread (user + system).
    pub cpu: Duration,
}

pub struct BenchReport {
    pub devices: Vec<DeviceBench>,
    /// From the common start to the last device's last completion.
    pub elapsed: Duration,
    /// Every device's latencies together.
    pub latency_ns: Histogram<u64>,
}

impl BenchReport {
    pub fn bytes(&self) -> u64 {
        self.devices.iter().map(|d| d.bytes).sum()
    }
    pub fn cpu(&self) -> Duration {
        self.devices.iter().map(|d| d.cpu).sum()
    }
}

/// Why a benchmark could not run or finish. The CLI maps the kinds to
/// exit codes (`Unusable`: nothing was measured, the input does not fit;
/// `Io`: the device failed).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An operation failed at `offset` of `device` (0: while setting up).
    #[error("device {}: {op} at offset {offset}: {error}", device.display())]
    Io {
        device: PathBuf,
        op: &'static str,
        offset: u64,
        class: ErrorClass,
        error: std::io::Error,
    },
    /// The configuration does not fit `device` ("(all)": any device).
    #[error("device {}: {why}", device.display())]
    Unusable { device: PathBuf, why: Unusable },
}

/// Why a configuration does not fit.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--bs {block_bytes} is not a multiple of its block size {device_block_bytes}")]
    BlockBytes {
        block_bytes: usize,
        device_block_bytes: usize,
    },
    #[error("--size {size_bytes} is larger than the device ({capacity_bytes} bytes)")]
    Size {
        size_bytes: u64,
        capacity_bytes: u64,
    },
}

impl BenchError {
    /// A failure of the ring or the transport, not of one operation.
    fn failed(device: &dyn Device, op: &'static str, offset: u64, error: std::io::Error) -> Self {
        BenchError::Io {
            device: device.path().to_path_buf(),
            op,
            offset,
            class: ErrorClass::Failed,
            error,
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static histogram bounds are valid")
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the pointer, which points to
    // a live, zeroed local; RUSAGE_THREAD is supported on Linux >= 2.6.26.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    if rc != 0 {
        return Duration::ZERO;
    }
    // SAFETY: initialised by the successful call (and zeroed before).
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Fill `buf` with a fixed xorshift pattern: written data is neither zeros
/// nor trivially compressible, in case the storage below notices.
fn fill_pattern(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

#[derive(Clone, Copy)]
struct Op {
    /// Device offset of the operation's first byte.
    offset: u64,
    len: u32,
    /// Bytes of it done so far (short transfers continue).
    done: u32,
    retries: u32,
    /// When the submit that carried it was made.
    submitted: Instant,
}

/// One device's ring (it keeps the leases' memory alive while registered).
struct BenchRing<'a> {
    device: &'a dyn Device,
    config: BenchConfig,
    ring: Uring,
    /// A pipelined device: its operations are requests of its transport
    /// (the same one a backup uses), handle = slot.
    pipe: Option<Box<dyn Transport + 'a>>,
    /// Slot `i`'s buffer.
    leases: Vec<Lease>,
    ops: Vec<Op>,
    /// Slots whose (re)submission is queued for the next enter.
    ready: Vec<usize>,
    in_flight: usize,
    next_offset: u64,
    out: DeviceBench,
}

impl<'a> BenchRing<'a> {
    fn new(device: &'a dyn Device, config: BenchConfig) -> Result<BenchRing<'a>, BenchError> {
        let name = device.path().display().to_string();
        let unusable = |why| BenchError::Unusable {
            device: device.path().to_path_buf(),
            why,
        };
        let block = device.block_bytes() as usize;
        if !config.block_bytes.is_multiple_of(block) {
            return Err(unusable(Unusable::BlockBytes {
                block_bytes: config.block_bytes,
                device_block_bytes: block,
            }));
        }
        if config.size_bytes > device.capacity_bytes() {
            return Err(unusable(Unusable::Size {
                size_bytes: config.size_bytes,
                capacity_bytes: device.capacity_bytes(),
            }));
        }
        let err = |op, error| BenchError::failed(device, op, 0, error);
        // A mapped device is benchmarked through its descriptor.
        let pipe = match device.data_path() {
            DataPath::Pipelined(t) => Some(t),
            DataPath::Descriptor | DataPath::Mapped(_) => None,
        };
        let extra = pipe.as_ref().map_or(0, |t| t.entries_max());
        let mut ring =
            Uring::new(config.queue_depth as u32 + extra).map_err(|e| err("io_uring setup", e))?;
        let ring_setup = ring.setup();
        let pool = BufferPool::new(config.queue_depth, config.block_bytes);
        ring.register_buffers(&pool)
            .map_err(|e| err("register buffers", e))?;
        let mut leases = pool.lease_all();
        if config.rw == Rw::Write {
            for (slot, lease) in leases.iter_mut().enumerate() {
                fill_pattern(lease.bytes_mut(), 0x9e37_79b9 ^ slot as u64);
            }
        }
        let now = Instant::now();
        Ok(BenchRing {
            device,
            config,
            ring,
            pipe,
            leases,
            ops: vec![
                Op {
                    offset: 0,
                    len: 0,
                    done: 0,
                    retries: 0,
                    submitted: now,
                };
                config.queue_depth
            ],
            ready: Vec::with_capacity(config.queue_depth),
            in_flight: 0,
            next_offset: 0,
            out: DeviceBench {
                path: name,
                direct_io: device.direct_io(),
                ring_setup,
                bytes: 0,
                ios: 0,
                short_ios: 0,
                retries: 0,
                elapsed: Duration::ZERO,
                latency_ns: histogram(),
                cpu: Duration::ZERO,
            },
        })
    }

    fn io_error(&self, op: &'static str, offset: u64, errno: i32) -> BenchError {
        BenchError::Io {
            device: self.device.path().to_path_buf(),
            op,
            offset,
            class: self.device.classify(errno),
            error: std::io::Error::from_raw_os_error(errno),
        }
    }

    /// Give slot `slot` the next sequential range; false when there is none.
    fn assign(&mut self, slot: usize) -> bool {
        if self.next_offset >= self.config.size_bytes {
            return false;
        }
        let len = (self.config.size_bytes - self.next_offset).min(self.config.block_bytes as u64);
        self.ops[slot] = Op {
            offset: self.next_offset,
            len: len as u32,
            done: 0,
            retries: 0,
            submitted: self.ops[slot].submitted,
        };
        self.next_offset += len;
        self.ready.push(slot);
        true
    }

    /// Push every ready slot's SQE (the ring has room for all of them: at
    /// most queue_depth operations exist and the SQ has >= queue_depth entries).
    fn push_ready(&mut self, now: Instant) -> Result<(), BenchError> {
        if let Some(pipe) = self.pipe.as_mut() {
            for &slot in &self.ready {
                let op = &mut self.ops[slot];
                op.submitted = now;
                // A request moves all of it or nothing: done is 0.
                match self.config.rw {
                    Rw::Write => {
                        pipe.submit_write(slot as u64, &self.leases[slot], op.len, op.offset)
                    }
                    Rw::Read => {
                        pipe.submit_read(slot as u64, &mut self.leases[slot], op.len, op.offset)
                    }
                }
            }
            self.in_flight += self.ready.len();
            self.ready.clear();
            let mut sqes = Vec::new();
            if let Err(why) = pipe.sqes(&mut sqes) {
                pipe.abort(&why.to_string());
                return Err(self.failed("nbd", std::io::Error::other(why)));
            }
            // The pipe's entries point into its own state and the leases
            // of its requests, kept until they are reaped (run and drain
            // reap until nothing is in flight).
            if let Err(e) = self.ring.push_all(&mut sqes) {
                return Err(self.enter_error(e));
            }
            return Ok(());
        }
        let fd = self.device.fd();
        for &slot in &self.ready {
            let op = &mut self.ops[slot];
            op.submitted = now;
            // done < len <= slot_bytes. The slot has exactly this one
            // operation in flight until its completion is reaped, and the
            // CPU does not touch its lease meanwhile.
            let range = op.done as usize..op.len as usize;
            let at = op.offset + op.done as u64;
            let entry = match self.config.rw {
                Rw::Write => io::write_fixed(fd, &self.leases[slot], range, at),
                Rw::Read => io::read_fixed(fd, &mut self.leases[slot], range, at),
            };
            if let Err(e) = self.ring.push(entry.user_data(slot as u64)) {
                return Err(self.enter_error(e));
            }
        }
        self.in_flight += self.ready.len();
        self.ready.clear();
        Ok(())
    }

    fn enter_error(&self, error: std::io::Error) -> BenchError {
        self.failed("io_uring_enter", error)
    }

    /// The ring or the transport failed with the next offset not issued.
    fn failed(&self, op: &'static str, error: std::io::Error) -> BenchError {
        BenchError::failed(self.device, op, self.next_offset, error)
    }

    /// Operations in flight: the slots' own, and a pipe's sends, receives
    /// and timeouts.
    fn ops_in_flight(&self) -> usize {
        match &self.pipe {
            Some(pipe) => pipe.ops_in_flight(),
            None => self.in_flight,
        }
    }

    fn run(&mut self, start: &Barrier) -> Result<(), BenchError> {
        let op_name = self.config.rw.name();
        for slot in 0..self.config.queue_depth {
            if !self.assign(slot) {
                break;
            }
        }
        let mut completions: Vec<(usize, i32)> = Vec::with_capacity(self.config.queue_depth);
        let mut cqes: Vec<io::Completion> = Vec::with_capacity(self.config.queue_depth);
        start.wait();
        let started = Instant::now();
        let cpu_started = thread_cpu();
        let result = loop {
            // 1. Push what is ready, submit it and wait for one completion.
            if let Err(e) = self.push_ready(Instant::now()) {
                break Err(e);
            }
            if self.in_flight == 0 && self.ops_in_flight() == 0 {
                break Ok(());
            }
            if let Err(e) = self.ring.submit_and_wait(1) {
                break Err(self.enter_error(e));
            }
            // 2. Copy completions out.
            let reaped_at = Instant::now();
            completions.clear();
            cqes.clear();
            self.ring.reap(&mut cqes);
            let mut pipe_failed = None;
            for &(user_data, result) in &cqes {
                match self.pipe.as_mut() {
                    Some(pipe) => {
                        let mut done = Vec::new();
                        if let Err(why) = pipe.on_cqe(user_data, result, &mut done) {
                            pipe.abort(&why.to_string());
                            pipe_failed.get_or_insert(why);
                        }
                        completions.extend(done.into_iter().map(|(h, r)| (h as usize, r)));
                    }
                    None => completions.push((user_data as usize, result)),
                }
            }
            self.in_flight -= completions.len();
            if let Some(why) = pipe_failed {
                break Err(self.failed("nbd", std::io::Error::other(why)));
            }
            // 3. Act on them.
            let mut failed = None;
            for &(slot, result) in &completions {
                if let Err(e) = self.complete(slot, result, reaped_at, op_name) {
                    failed = Some(e);
                    break;
                }
            }
            if let Some(e) = failed {
                break Err(e);
            }
        };
        self.out.elapsed = started.elapsed();
        self.out.cpu = thread_cpu().saturating_sub(cpu_started);
        if result.is_err() {
            self.drain();
        }
        result
    }

    fn complete(
        &mut self,
        slot: usize,
        result: i32,
        reaped_at: Instant,
        op_name: &'static str,
    ) -> Result<(), BenchError> {
        let op = self.ops[slot];
        if result < 0 {
            let errno = -result;
            if self.device.classify(errno) == ErrorClass::Retry && op.retries < RETRIES_MAX {
                self.ops[slot].retries += 1;
                self.out.retries += 1;
                self.ready.push(slot);
                return Ok(());
            }
            return Err(self.io_error(op_name, op.offset + op.done as u64, errno));
        }
        if result == 0 {
            // A write that moves nothing is a full device; a read that reads
            // nothing is the device's end (smaller than it claimed).
            let errno = match self.config.rw {
                Rw::Write => libc::ENOSPC,
                Rw::Read => libc::EIO,
            };
            return Err(self.io_error(op_name, op.offset + op.done as u64, errno));
        }
        let done = op.done + result as u32;
        assert!(done <= op.len, "the kernel transferred more than asked");
        if done < op.len {
            self.ops[slot].done = done;
            self.out.short_ios += 1;
            self.ready.push(slot);
            return Ok(());
        }
        let latency = reaped_at.saturating_duration_since(op.submitted).as_nanos() as u64;
        self.out
            .latency_ns
            .saturating_record(latency.clamp(1, LATENCY_NS_MAX));
        self.out.bytes += op.len as u64;
        self.out.ios += 1;
        self.assign(slot);
        Ok(())
    }

    /// After an error: reap every operation in flight before the pool can go.
    fn drain(&mut self) {
        self.ready.clear();
        if let Some(pipe) = self.pipe.as_mut() {
            // Its requests are given up: shut the connection, reap the ops.
            pipe.abort("benchmark stopped");
            let mut cqes = Vec::new();
            while pipe.ops_in_flight() > 0 {
                if self.ring.turn(&mut cqes).is_err() {
                    return;
                }
                for &(user_data, result) in &cqes {
                    let _ = pipe.on_cqe(user_data, result, &mut Vec::new());
                }
            }
            return;
        }
        let mut cqes = Vec::new();
        while self.in_flight > 0 {
            match self.ring.turn(&mut cqes) {
                Ok(n) => self.in_flight -= n,
                Err(_) => return,
            }
        }
    }
}

/// Run the benchmark on every device at once (one thread and ring each),
/// all starting together once every ring and buffer pool is set up.
pub fn run(devices: &[&dyn Device], config: BenchConfig) -> Result<BenchReport, BenchError> {
    config.validate().map_err(|e| BenchError::Unusable {
        device: PathBuf::from("(all)"),
        why: e.into(),
    })?;
    assert!(!devices.is_empty());
    // Every thread waits here, set up or failed, so nobody waits forever.
    let start = Barrier::new(devices.len() + 1);
    let (results, elapsed) = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(i, &dev)| {
                let start = &start;
                std::thread::Builder::new()
                    .name(format!("pbio-bench{i}"))
                    .spawn_scoped(scope, move || {
                        // The ring is created (and its buffers registered) on
                        // the thread that uses it: SINGLE_ISSUER wants that.
                        let mut ring = match BenchRing::new(dev, config) {
                            Ok(ring) => ring,
                            Err(e) => {
                                start.wait();
                                return Err(e);
                            }
                        };
                        ring.run(start)?;
                        Ok(ring.out)
                    })
                    .expect("spawn bench thread")
            })
            .collect();
        start.wait();
        let started = Instant::now();
        let results: Vec<Result<DeviceBench, BenchError>> = handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .collect();
        (results, started.elapsed())
    });
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        out.push(r?);
    }
    let mut latency_ns = histogram();
    for d in &out {
        latency_ns
            .add(&d.latency_ns)
            .expect("histograms with the same bounds add");
    }
    // The wall time is the slowest device's (the joins above add thread
    // exit time; the devices' own clocks do not).
    let elapsed = out
        .iter()
        .map(|d| d.elapsed)
        .max()
        .unwrap_or(elapsed)
        .min(elapsed);
    Ok(BenchReport {
        devices: out,
        elapsed,
        latency_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{self, DeviceSpec, Mode};

    fn config(rw: Rw, size_bytes: u64) -> BenchConfig {
        BenchConfig {
            rw,
            block_bytes: 64 << 10,
            queue_depth: 4,
            size_bytes,
        }
    }

    #[test]
    fn limits_are_checked() {
        assert!(config(Rw::Write, 1 << 20).validate().is_ok());
        assert!(config(Rw::Write, 0).validate().is_err());
        assert!(config(Rw::Write, 1000).validate().is_err());
        let mut c = config(Rw::Read, 1 << 20);
        c.block_bytes = 4097;
        assert!(c.validate().is_err());
        c.block_bytes = 4096;
        c.queue_depth = 0;
        assert!(c.validate().is_err());
        c.queue_depth = QUEUE_DEPTH_MAX + 1;
        assert!(c.validate().is_err());
    }

    #[test]
    fn limit_errors_name_the_option() {
        let mut c = config(Rw::Read, 1000);
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "--size 1000 must be a positive multiple of 4096"
        );
        c.block_bytes = 4097;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "--bs 4097 must be a multiple of 4096 and at most 67108864"
        );
        c.block_bytes = 4096;
        c.queue_depth = 0;
        let e = BenchError::Unusable {
            device: PathBuf::from("(all)"),
            why: c.validate().unwrap_err().into(),
        };
        assert_eq!(
            e.to_string(),
            "device (all): --qd 0 must be between 1 and 256"
        );
    }

    #[test]
    fn writes_then_reads_a_file_device() {
        let dir = tempfile::tempdir().unwrap();
        let spec =
            DeviceSpec::parse(&format!("{},size=4M", dir.path().join("d.img").display())).unwrap();
        // 1M + 12K: the last operation is shorter than --bs.
        let size = (1 << 20) + (12 << 10);
        {
            let dev = device::open(&spec, Mode::Write).unwrap();
            let report = run(&[dev.as_ref()], config(Rw::Write, size)).unwrap();
            let d = &report.devices[0];
            assert_eq!(d.bytes, size);
            assert_eq!(d.ios, 17);
            assert_eq!(d.latency_ns.len(), 17);
            assert!(d.latency_ns.value_at_quantile(0.5) <= d.latency_ns.max());
        }
        let dev = device::open(&spec, Mode::Read).unwrap();
        let report = run(&[dev.as_ref()], config(Rw::Read, size)).unwrap();
        assert_eq!(report.bytes(), size);
        // What was read is the pattern that was written.
        let data = std::fs::read(dir.path().join("d.img")).unwrap();
        let mut expect = vec![0u8; 64 << 10];
        fill_pattern(&mut expect, 0x9e37_79b9);
        assert_eq!(&data[..64 << 10], &expect[..]);
        assert!(data[size as usize..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_size_beyond_the_device_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spec =
            DeviceSpec::parse(&format!("{},size=1M", dir.path().join("d.img").display())).unwrap();
        let dev = device::open(&spec, Mode::Write).unwrap();
        let e = match run(&[dev.as_ref()], config(Rw::Write, 2 << 20)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a 2 MiB run on a 1 MiB device must fail"),
        };
        assert!(e.contains("larger than the device"), "{e}");
    }
}
