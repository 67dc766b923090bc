//! Backup devices: one small ops table (`Device`), one file per kind.
//!
//! The engine asks capabilities (alignment, capacity, access pattern, how an
//! errno maps to full/failed), never kind names — as fio's engines do.

pub mod block;
pub mod changer;
pub mod file;
pub mod nbd;
mod open;
pub mod persist;
pub mod pmem;
mod sg;
pub mod tape;
pub mod vtape;

pub(crate) use open::hash_path;
pub use open::{backing, dio_align, open, open_maybe_direct, probe, Backing, Mode, Probe};
pub use persist::Durability;

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::units::parse_size;

/// `--dev PATH[,size=N][,rate=N][,ew=N]` as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    pub path: PathBuf,
    /// Capacity for a file device (required when the file does not exist
    /// yet); a tape's native capacity; an emulated tape's physical length.
    pub size_bytes: Option<u64>,
    /// Declared bandwidth for `--balance time` (an emulated tape also runs at it).
    pub rate_bytes_per_sec: Option<u64>,
    /// Emulated tape (`vtape:DIR`) only: where early warning starts, in
    /// bytes before the physical end.
    pub early_warning_bytes: Option<u64>,
    /// NBD devices only: seconds without progress before the connection
    /// counts as lost.
    pub timeout_secs: Option<u64>,
}

/// A `--dev` text that does not parse: the text as given and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--dev '{text}': {why}")]
pub struct SpecError {
    pub text: String,
    pub why: BadSpec,
}

/// What is wrong with a `--dev` text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadSpec {
    #[error("empty device path")]
    EmptyPath,
    #[error("option '{0}' is not key=value")]
    NotKeyValue(String),
    #[error("{key}: {error}")]
    Size { key: String, error: String },
    #[error("rate must be positive")]
    ZeroRate,
    #[error("ew= is an option of emulated tapes (vtape:DIR) only")]
    EarlyWarningNotVtape,
    #[error("timeout= is a number of seconds (1 or more)")]
    Timeout,
    #[error("timeout= is an option of nbd:// devices only")]
    TimeoutNotNbd,
    #[error("unknown option '{0}' (known: size, rate, ew, timeout)")]
    Unknown(String),
}

/// For callers that carry a refusal as text (the library emulator's
/// `refused`).
impl From<SpecError> for String {
    fn from(e: SpecError) -> String {
        e.to_string()
    }
}

impl DeviceSpec {
    /// Parse `PATH[,size=N][,rate=N][,ew=N]`. Sizes are powers of 1024
    /// (K/M/G/T); a rate is bytes per second with the same suffixes.
    pub fn parse(text: &str) -> Result<DeviceSpec, SpecError> {
        let bad = |why| SpecError {
            text: text.to_string(),
            why,
        };
        let mut parts = text.split(',');
        let path = parts.next().unwrap_or_default();
        if path.is_empty() {
            return Err(bad(BadSpec::EmptyPath));
        }
        let mut spec = DeviceSpec {
            path: PathBuf::from(path),
            size_bytes: None,
            rate_bytes_per_sec: None,
            early_warning_bytes: None,
            timeout_secs: None,
        };
        for option in parts {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| bad(BadSpec::NotKeyValue(option.to_string())))?;
            let parsed = if key == "timeout" {
                0
            } else {
                parse_size(value).map_err(|error| {
                    let key = key.to_string();
                    bad(BadSpec::Size { key, error })
                })?
            };
            match key {
                "size" => spec.size_bytes = Some(parsed),
                "rate" => {
                    if parsed == 0 {
                        return Err(bad(BadSpec::ZeroRate));
                    }
                    spec.rate_bytes_per_sec = Some(parsed)
                }
                "ew" if vtape::dir_of(&spec.path).is_some() => {
                    spec.early_warning_bytes = Some(parsed)
                }
                "ew" => return Err(bad(BadSpec::EarlyWarningNotVtape)),
                "timeout" if nbd::is_nbd(&spec.path) => {
                    let secs = value
                        .parse::<u64>()
                        .ok()
                        .filter(|&s| s > 0)
                        .ok_or_else(|| bad(BadSpec::Timeout))?;
                    spec.timeout_secs = Some(secs)
                }
                "timeout" => return Err(bad(BadSpec::TimeoutNotNbd)),
                _ => return Err(bad(BadSpec::Unknown(key.to_string()))),
            }
        }
        Ok(spec)
    }
}

/// What a device kind is. Only `open` and `probe` look at it: the engine
/// asks the capabilities of the ops table instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Block,
    /// A Linux st tape drive (`/dev/nst*`).
    Tape,
    /// The tape emulator (`vtape:DIR`).
    VirtualTape,
    /// Persistent memory, mapped (`pmem:PATH`, `/dev/pmem*`, `/dev/dax*`).
    Pmem,
    /// An export of an NBD server (`nbd://HOST:PORT/EXPORT`, `nbd+unix://`).
    Nbd,
}

/// A device's medium mapped into memory (the "memory-mapped" capability):
/// `len` bytes from `base` are the device's bytes from offset 0. Stores
/// through it become durable once `Device::persist` covered them.
#[derive(Clone, Copy, Debug)]
pub struct Mapping {
    pub base: *mut u8,
    pub len: usize,
}

/// A network export as its handshake described it, for qualify and
/// reports: a description, not the client.
#[derive(Clone, Debug)]
pub struct ExportIdentity {
    pub address: nbd::Address,
    pub export: String,
    /// Size, transmission flags and block size constraints.
    pub info: nbd::proto::ExportInfo,
    pub structured_replies: bool,
    /// The largest request pbio sends it.
    pub request_bytes_max: u32,
    /// Round trip measured at connect.
    pub rtt: std::time::Duration,
    /// No progress for this long is a lost connection.
    pub timeout: std::time::Duration,
}

/// How a ring moves a device's data (the device's choice, made at open;
/// the ring acts on the capability, never on the kind).
pub enum DataPath<'d> {
    /// Reads and writes on `fd()` (O_DIRECT when `direct_io()`); a
    /// sequential device through its block hooks.
    Descriptor,
    /// The medium is mapped: sources are read straight into it, and
    /// `Device::persist` makes a range durable. No writes through `fd()`.
    Mapped(Mapping),
    /// Requests over a pipelined connection that shares the ring: the
    /// transport builds its own entries (`user_data` with
    /// `io::USER_DATA_TRANSPORT` set) and reports requests as done.
    Pipelined(Box<dyn Transport + 'd>),
}

/// A pipelined transport sharing a ring with its caller (an NBD
/// connection): requests go in with a handle (below `HANDLES_MAX`) and a
/// lease the caller keeps untouched until the request completes; the
/// transport's entries are pushed together (`sqes`), its completions
/// handed back (`on_cqe`), and completed requests come out as
/// `(handle, result)`, result being the length or `-errno` as a read or
/// write entry would have it. An error is fatal for the connection: the
/// caller then aborts it and reaps its entries until `ops_in_flight` is 0.
pub trait Transport {
    /// Ring entries the transport may have in flight at once.
    fn entries_max(&self) -> u32;
    fn submit_write(&mut self, handle: u64, lease: &crate::io::Lease, len: u32, offset: u64);
    fn submit_read(&mut self, handle: u64, lease: &mut crate::io::Lease, len: u32, offset: u64);
    /// A read request into `range` of `lease` (pieces of one buffer read
    /// together).
    fn submit_read_into(
        &mut self,
        handle: u64,
        lease: &mut crate::io::Lease,
        range: std::ops::Range<usize>,
        offset: u64,
    );
    /// The largest request the other end takes.
    fn request_bytes_max(&self) -> u32;
    /// The entries to push now, in order, in one submit.
    fn sqes(&mut self, out: &mut Vec<crate::io::Sqe>) -> Result<(), TransportError>;
    fn on_cqe(
        &mut self,
        user_data: u64,
        result: i32,
        done: &mut Vec<(u64, i32)>,
    ) -> Result<(), TransportError>;
    /// Requests without their final reply.
    fn outstanding(&self) -> usize;
    /// Not failed for good.
    fn alive(&self) -> bool;
    /// Entries of the transport not yet reaped.
    fn ops_in_flight(&self) -> usize;
    /// Stop: end the connection's operations; requests without replies
    /// stay incomplete.
    fn abort(&mut self, why: &str);
    /// A turn of a transport alone on `ring`: push, wait, act.
    fn turn(
        &mut self,
        ring: &mut crate::io::Uring,
        done: &mut Vec<(u64, i32)>,
    ) -> std::io::Result<Option<TransportError>>;
}

/// Why a pipelined connection is beyond saving (its requests stay without
/// replies).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The other end broke the protocol (a reply that matches no request,
    /// a malformed chunk).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Lost once more than a connection is reconnected.
    #[error("connection lost ({why}) for the {episodes}th time")]
    LostAgain { why: String, episodes: u32 },
    /// Lost, and connecting again failed.
    #[error("connection lost ({why}); {error}")]
    Reconnect { why: String, error: String },
    /// Its user stopped it (`Transport::abort`), saying why.
    #[error("{0}")]
    Stopped(String),
}

/// Handles of a transport's requests are below this.
pub const TRANSPORT_HANDLES_MAX: u64 = nbd::pipe::HANDLES_MAX;

/// How the medium is addressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Any offset, any order, many operations in flight (files, disks).
    Random,
    /// One block after the other at the head's position, one operation in
    /// flight, variable-size blocks and filemarks (tape). A write SQE's
    /// offset comes from `before_block_write`; positions on such a device
    /// are logical object numbers (blocks and filemarks counted from the
    /// beginning of the tape, as SCSI READ POSITION counts them).
    Sequential,
}

/// `sqe_offset` meaning "at the file position" (io_uring's `-1`): the
/// device itself knows where the next block goes.
pub const STREAM_OFFSET: u64 = u64::MAX;

/// What a sequential device says about the block operation about to be
/// submitted (fio's `queue` answer: go ahead, or done already).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockIo {
    /// Submit it: `bytes` at `sqe_offset` of `fd()` (`STREAM_OFFSET`: the
    /// file position).
    Submit { sqe_offset: u64, bytes: u32 },
    /// Do not submit: the operation has completed with `result` (bytes
    /// moved, 0 for a filemark read, or `-errno`), as the driver would
    /// have reported it.
    Done { result: i32 },
}

/// A sequential device's view of a completed block operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockDone {
    /// The result as the driver reports it (bytes, 0, or `-errno`).
    pub result: i32,
    /// The operation only counts as complete at this instant (an
    /// emulator's simulated speed); None: now.
    pub complete_at: Option<std::time::Instant>,
}

impl BlockDone {
    /// An operation complete as soon as the driver reported `result`.
    pub fn now(result: i32) -> BlockDone {
        BlockDone {
            result,
            complete_at: None,
        }
    }
}

/// Tape positioning and filemark operations (st's MTIOCTOP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapeOp {
    /// MTREW: to the beginning of the tape.
    Rewind,
    /// MTFSF n: forward past the n-th filemark (to the first block of the file after it).
    ForwardFiles(u32),
    /// MTBSF n: backward to just before the n-th filemark (its beginning-of-tape side).
    BackFiles(u32),
    /// MTFSR n: forward over n blocks (an error if a filemark is met).
    ForwardBlocks(u32),
    /// MTBSR n: backward over n blocks (an error if a filemark is met).
    BackBlocks(u32),
    /// MTEOM: to the end of recorded data, where the next file would be appended.
    EndOfData,
    /// MTWEOF n: write n filemarks at the head; n = 0 flushes the drive's buffer.
    WriteFilemarks(u32),
}

/// Tape status (st's MTIOCGET).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapeStatus {
    /// Tape file number of the head (-1: unknown).
    pub file_number: i64,
    /// Block number within that file (-1: unknown).
    pub block_number: i64,
    /// Logical object number of the head from the start of the tape, blocks
    /// and filemarks counted (MTIOCPOS; -1: unknown). Survives the errors
    /// after which st forgets `block_number`.
    pub logical_object: i64,
    pub at_bot: bool,
    /// In the early-warning zone near the end of the medium.
    pub at_eot: bool,
    /// At the end of recorded data.
    pub at_eod: bool,
    pub write_protected: bool,
    pub online: bool,
    /// Density code (LTO generation) and block size (0: variable) from mt_dsreg.
    pub density_code: u8,
    pub block_size_bytes: u32,
}

/// How an I/O error on a device is to be treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry the same operation (EINTR, EAGAIN).
    Retry,
    /// The medium is full: what reached it is good, the rest goes elsewhere.
    Full,
    /// The device is not to be trusted any more.
    Failed,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("device {path}: {what}: {error}")]
    Io {
        path: PathBuf,
        what: &'static str,
        error: std::io::Error,
    },
    #[error("device {path}: {why}")]
    Unusable { path: PathBuf, why: String },
}

impl DeviceError {
    pub fn io(path: &Path, what: &'static str, error: std::io::Error) -> DeviceError {
        DeviceError::Io {
            path: path.to_path_buf(),
            what,
            error,
        }
    }
    pub fn unusable(path: &Path, why: impl Into<String>) -> DeviceError {
        DeviceError::Unusable {
            path: path.to_path_buf(),
            why: why.into(),
        }
    }
}

fn unsupported(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!("{what} on a random-access device"),
    )
}

/// The ops table every device kind fills in (fio's `ioengine_ops`): the
/// engine asks these, never the kind. Random-access devices fill in the
/// first block and keep the defaults of the rest; sequential devices
/// (tapes) also answer the block hooks and the tape operations.
pub trait Device: Send + Sync {
    fn path(&self) -> &Path;
    fn kind(&self) -> Kind;
    /// The descriptor the ring submits to.
    fn fd(&self) -> RawFd;
    /// Usable bytes from offset 0 (a tape: its native capacity, for planning).
    fn capacity_bytes(&self) -> u64;
    /// Offsets and lengths of I/O must be multiples of this.
    fn block_bytes(&self) -> u32;
    /// Whether the descriptor was opened with O_DIRECT (by default not).
    fn direct_io(&self) -> bool {
        false
    }
    /// Make everything written so far durable.
    fn sync(&self) -> std::io::Result<()>;
    /// Map a failed operation's errno to what it means for the set.
    fn classify(&self, errno: i32) -> ErrorClass {
        classify_errno(errno)
    }
    /// How the medium is addressed.
    fn access(&self) -> Access {
        Access::Random
    }
    /// The largest single block the device takes or returns (a tape
    /// drive's block limit); None: no limit beyond the format's.
    fn block_bytes_max(&self) -> Option<u32> {
        None
    }
    /// Sequential devices: called just before a block write of `bytes` is
    /// submitted (in media order, one at a time). An emulator decides here
    /// where the block goes or that the write fails without being tried.
    fn before_block_write(&self, bytes: u32) -> BlockIo {
        BlockIo::Submit {
            sqe_offset: STREAM_OFFSET,
            bytes,
        }
    }
    /// Sequential devices: called with the result of the block write
    /// `before_block_write` let through.
    fn after_block_write(&self, result: i32) -> BlockDone {
        BlockDone::now(result)
    }
    /// Sequential devices: called before a block read into a buffer of
    /// `buffer_bytes`; the read returns exactly one block (or 0 at a filemark).
    fn before_block_read(&self, buffer_bytes: u32) -> BlockIo {
        BlockIo::Submit {
            sqe_offset: STREAM_OFFSET,
            bytes: buffer_bytes,
        }
    }
    fn after_block_read(&self, result: i32) -> BlockDone {
        BlockDone::now(result)
    }
    /// Positioning and filemarks (sequential devices; synchronous, only
    /// while no operation of the device is in flight).
    fn tape_op(&self, op: TapeOp) -> std::io::Result<()> {
        let _ = op;
        Err(unsupported("tape operation"))
    }
    fn tape_status(&self) -> std::io::Result<TapeStatus> {
        Err(unsupported("tape status"))
    }
    /// Memory-mapped devices: copy `src` into the mapping at `offset` (a
    /// store, durable once `persist` covered it). Others: unsupported.
    fn store(&self, offset: u64, src: &[u8]) -> std::io::Result<()> {
        let _ = (offset, src);
        Err(unsupported("store through a mapping"))
    }
    /// Memory-mapped devices: copy from the mapping at `offset` into `dst`.
    fn load(&self, offset: u64, dst: &mut [u8]) -> std::io::Result<()> {
        let _ = (offset, dst);
        Err(unsupported("load through a mapping"))
    }
    /// Memory-mapped devices: the medium's bytes, read in place without a
    /// copy (restore, verify and scan of pmem). Only while nothing writes
    /// to the device (it is open for reading). None: not mapped.
    fn mapped(&self) -> Option<&[u8]> {
        None
    }
    /// Memory-mapped devices: make the stores to `[offset, offset + len)`
    /// of the mapping durable (cache-line flushes + fence on DAX, msync
    /// otherwise). Others: nothing to do (their writes go through `fd()`).
    fn persist(&self, offset: u64, len: u64) -> std::io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
    /// Synchronous positioned read (label, catalog, read-backs): pread on
    /// `fd()`; short only at the end of the device.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        // SAFETY: the device owns the descriptor and outlives the borrow.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd()) };
        nix::sys::uio::pread(fd, buf, offset as i64).map_err(std::io::Error::from)
    }
    /// Synchronous positioned write: pwrite on `fd()`; may be short.
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<usize> {
        // SAFETY: as in read_at.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd()) };
        nix::sys::uio::pwrite(fd, buf, offset as i64).map_err(std::io::Error::from)
    }
    /// How a ring moves this device's data. Called once per ring.
    fn data_path(&self) -> DataPath<'_> {
        DataPath::Descriptor
    }
    /// Records to keep in flight for records of `record_bytes`: `floor`
    /// (the queue depth asked for), or more where the device's latency
    /// wants it (a remote device: its round trip at its bandwidth), at
    /// most `max`.
    fn records_in_flight(&self, record_bytes: u64, floor: usize, max: usize) -> usize {
        let _ = (record_bytes, max);
        floor
    }
    /// Lost connections that a reconnect repaired (network devices).
    fn reconnects(&self) -> u32 {
        0
    }
    /// Sequential devices: the logical object number of the head, by the
    /// drive's own position (MTIOCPOS); None: unknown.
    fn head_object(&self) -> Option<i64> {
        self.tape_status()
            .ok()
            .map(|st| st.logical_object)
            .filter(|&o| o >= 0)
    }
    /// Network devices: the export as the handshake described it. None:
    /// not a network export.
    fn export_identity(&self) -> Option<ExportIdentity> {
        None
    }
    /// Memory-mapped devices: how `persist` makes stores durable (DAX
    /// cache-line flushes, or msync). None: not mapped.
    fn durability_mechanism(&self) -> Option<Durability> {
        None
    }
    /// What the device said at open that is not an error (a fallback it
    /// took, how it is mapped), for the CLI to show: devices never print.
    fn notes(&self) -> &[DeviceNote] {
        &[]
    }
    /// Make the medium readable before it is read: a cartridge of a
    /// library (`changer::shelved`) takes a free drive (waiting for one)
    /// and is loaded into it. Other devices: nothing to do.
    fn attach(&self) -> std::io::Result<()> {
        Ok(())
    }
    /// The medium is not needed any more for now: a cartridge of a library
    /// goes back to its slot and frees its drive. Other devices: nothing.
    fn detach(&self) {}
}

/// Something a device says at open that is not an error. Its display is
/// the line the CLI prints after "pbio: ".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeviceNote {
    /// A tape drive that does not answer READ BLOCK LIMITS: `--tape-block`
    /// is the block limit.
    #[error("device {}: READ BLOCK LIMITS not available ({error}); using --tape-block as the block limit", .device.display())]
    NoBlockLimits { device: PathBuf, error: String },
    /// A pmem device mapped for writing, and how stores are made durable.
    #[error("pmem {}: {bytes} bytes mapped ({durability})", .device.display())]
    PmemMapped {
        device: PathBuf,
        bytes: usize,
        durability: String,
    },
    /// MAP_SYNC refused (not DAX, or an old kernel): MAP_SHARED + msync.
    #[error("MAP_SYNC refused ({error}): not a DAX mapping, falling back to MAP_SHARED + msync")]
    MapSyncRefused { error: String },
}

/// Write one block to a sequential device now, synchronously, through the
/// same hooks the ring uses (label, filemark-delimited catalog). Returns
/// the bytes written; an error is the errno the driver reported.
pub fn write_block(dev: &dyn Device, buf: &[u8]) -> std::io::Result<usize> {
    debug_assert_eq!(dev.access(), Access::Sequential);
    let bytes = u32::try_from(buf.len()).map_err(|_| errno_error(libc::EINVAL))?;
    let result = match dev.before_block_write(bytes) {
        BlockIo::Done { result } => return result_of(result),
        BlockIo::Submit { sqe_offset, bytes } => {
            let buf = &buf[..bytes as usize];
            // SAFETY: buf is a live slice of `bytes` bytes; fd is open.
            uninterrupted(|| unsafe {
                if sqe_offset == STREAM_OFFSET {
                    libc::write(dev.fd(), buf.as_ptr().cast(), buf.len())
                } else {
                    libc::pwrite(dev.fd(), buf.as_ptr().cast(), buf.len(), sqe_offset as i64)
                }
            })
        }
    };
    let done = dev.after_block_write(result);
    wait_until(done.complete_at);
    result_of(done.result)
}

/// Read one block from a sequential device now, synchronously. Ok(0) is a
/// filemark (the head is then past it).
pub fn read_block(dev: &dyn Device, buf: &mut [u8]) -> std::io::Result<usize> {
    debug_assert_eq!(dev.access(), Access::Sequential);
    let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    let result = match dev.before_block_read(len) {
        BlockIo::Done { result } => return result_of(result),
        BlockIo::Submit { sqe_offset, bytes } => {
            let buf = &mut buf[..bytes as usize];
            // SAFETY: buf is a live, writable slice of `bytes` bytes.
            uninterrupted(|| unsafe {
                if sqe_offset == STREAM_OFFSET {
                    libc::read(dev.fd(), buf.as_mut_ptr().cast(), buf.len())
                } else {
                    libc::pread(
                        dev.fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        sqe_offset as i64,
                    )
                }
            })
        }
    };
    let done = dev.after_block_read(result);
    wait_until(done.complete_at);
    result_of(done.result)
}

/// A read or write syscall, made again while it is interrupted (EINTR);
/// its return value as an io_uring style result (bytes or -errno).
fn uninterrupted(mut call: impl FnMut() -> isize) -> i32 {
    loop {
        let n = call();
        if n >= 0 {
            return n as i32;
        }
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if errno != libc::EINTR {
            return -errno;
        }
    }
}

fn result_of(result: i32) -> std::io::Result<usize> {
    if result < 0 {
        Err(errno_error(-result))
    } else {
        Ok(result as usize)
    }
}

fn errno_error(errno: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(errno)
}

fn wait_until(at: Option<std::time::Instant>) {
    if let Some(at) = at {
        let now = std::time::Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
    }
}

/// The common errno mapping of random-access devices.
pub fn classify_errno(errno: i32) -> ErrorClass {
    match errno {
        libc::EINTR | libc::EAGAIN => ErrorClass::Retry,
        libc::ENOSPC | libc::EFBIG | libc::EDQUOT => ErrorClass::Full,
        _ => ErrorClass::Failed,
    }
}

/// `Device::path` and `Device::kind` of a kind that keeps its path in a
/// field `path`.
macro_rules! path_and_kind {
    ($kind:expr) => {
        fn path(&self) -> &std::path::Path {
            &self.path
        }
        fn kind(&self) -> $crate::device::Kind {
            $kind
        }
    };
}
pub(crate) use path_and_kind;

pub(crate) fn raw(file: &File) -> RawFd {
    file.as_raw_fd()
}

#[cfg(test)]
mod tests;
