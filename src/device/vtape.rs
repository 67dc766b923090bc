//! `vtape:DIR` devices: a tape drive emulator with the st driver's
//! semantics, for tests and for rehearsing a tape setup without a drive.
//!
//! The cartridge is a directory: `vtape.data` holds the bytes of every
//! block back to back, `vtape.index` one 16-byte entry per tape object
//! (a block: its offset in `vtape.data` and length; or a filemark), and
//! `vtape.conf` the cartridge's physical length and early-warning zone.
//! The drive, like st in variable-block mode, writes and reads one block
//! per operation, refuses blocks above its block limit and reads into a
//! buffer larger than that limit (EINVAL, before moving), returns
//! 0 for a filemark, ENOMEM for a block larger than the read buffer, and
//! at the end of the medium behaves as st does (IO-NOTES.md):
//!
//! - the write that ends inside the early-warning zone succeeds;
//! - the next write fails with ENOSPC and writes nothing; the one after
//!   is allowed, and so on, alternating (room for filemarks and a
//!   catalog); a filemark write clears the state;
//! - a block that would pass the physical end fails with ENOSPC.
//!
//! Writing at a position discards everything after it, as on tape.
//! `rate=` simulates the drive's speed: an operation only completes when
//! the drive would have moved its bytes (`BlockDone::complete_at`).
//!
//! The engine cannot tell this from a real drive: the data goes through
//! the same io_uring ring as a real tape's, to the data file at the
//! offsets `before_block_write`/`before_block_read` hand out, and the
//! positioning operations are the same `TapeOp`s.
//!
//! No memory mapping (memmap2) here: the data must go through the ring's
//! reads and writes on a descriptor, as a drive's do, and the index is
//! read once at open and then only appended to (a mapping would have to
//! be remade as it grows).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{
    Access, BlockDone, BlockIo, Device, DeviceError, DeviceSpec, Kind, Mode, Probe, TapeOp,
    TapeStatus,
};
use crate::format::BLOCK_BYTES;

/// Prefix of an emulated tape's device name.
pub const PREFIX: &str = "vtape:";
/// The emulated drive's block limit (a modern LTO drive reports 8 MiB).
pub const BLOCK_BYTES_MAX: u32 = 8 << 20;
/// The emulated drive's data buffer (real LTO drives have 1-2 GiB; a
/// small one makes a host that cannot keep up visible quickly).
pub const DRIVE_BUFFER_BYTES: u64 = 8 << 20;
/// Smallest early-warning zone chosen when `ew=` is not given.
pub const EARLY_WARNING_BYTES_MIN: u64 = 4 << 20;

const DATA: &str = "vtape.data";
const INDEX: &str = "vtape.index";
const CONF: &str = "vtape.conf";
const ENTRY_BYTES: u64 = 16;
const KIND_BLOCK: u32 = 1;
const KIND_FILEMARK: u32 = 2;

/// The directory of `vtape:DIR`, if `path` names an emulated tape.
pub fn dir_of(path: &Path) -> Option<PathBuf> {
    path.to_str()
        .and_then(|p| p.strip_prefix(PREFIX))
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// Early-warning zone when not given: 1/32 of the tape, at least 4 MiB,
/// at most half of it.
pub fn default_early_warning_bytes(size_bytes: u64) -> u64 {
    (size_bytes / 32)
        .max(EARLY_WARNING_BYTES_MIN)
        .min(size_bytes / 2)
}

/// The cartridge's geometry, as stored in `vtape.conf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    size_bytes: u64,
    early_warning_bytes: u64,
}

impl Geometry {
    fn parse(text: &str) -> Option<Geometry> {
        let mut size = None;
        let mut ew = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("size", v)) => size = v.trim().parse().ok(),
                Some(("ew", v)) => ew = v.trim().parse().ok(),
                _ => {}
            }
        }
        let g = Geometry {
            size_bytes: size?,
            early_warning_bytes: ew?,
        };
        (g.early_warning_bytes < g.size_bytes).then_some(g)
    }

    fn text(&self) -> String {
        format!(
            "size={}\new={}\n",
            self.size_bytes, self.early_warning_bytes
        )
    }

    fn early_warning_at(&self) -> u64 {
        self.size_bytes - self.early_warning_bytes
    }
}

fn read_geometry(dir: &Path) -> Option<Geometry> {
    Geometry::parse(&std::fs::read_to_string(dir.join(CONF)).ok()?)
}

fn geometry_of(spec: &DeviceSpec, dir: &Path) -> Result<Geometry, DeviceError> {
    let path = &spec.path;
    let stored = read_geometry(dir);
    let size_bytes = match (spec.size_bytes, stored) {
        (Some(size), _) => size,
        (None, Some(g)) => g.size_bytes,
        (None, None) => {
            return Err(DeviceError::unusable(
                path,
                "no emulated tape there (give ,size=N to create one)",
            ))
        }
    };
    let early_warning_bytes = match (spec.early_warning_bytes, stored) {
        (Some(ew), _) => ew,
        (None, Some(g)) if spec.size_bytes.is_none() => g.early_warning_bytes,
        _ => default_early_warning_bytes(size_bytes),
    };
    if early_warning_bytes >= size_bytes || size_bytes < 2 * BLOCK_BYTES as u64 {
        return Err(DeviceError::unusable(
            path,
            format!("ew={early_warning_bytes} must be smaller than size={size_bytes}"),
        ));
    }
    Ok(Geometry {
        size_bytes,
        early_warning_bytes,
    })
}

/// The early-warning zone of the emulated tape `spec` names (None: not
/// an emulated tape, or none there): the bytes at its end a writer cannot
/// count on, since the write after the one that enters it fails.
pub fn early_warning_bytes(spec: &DeviceSpec) -> Option<u64> {
    let dir = dir_of(&spec.path)?;
    geometry_of(spec, &dir).ok().map(|g| g.early_warning_bytes)
}

/// Capacity and identity of an emulated tape without writing to it.
pub fn probe(spec: &DeviceSpec, dir: &Path) -> Result<Probe, DeviceError> {
    if dir.exists() && !dir.is_dir() {
        return Err(DeviceError::unusable(&spec.path, "is not a directory"));
    }
    let g = geometry_of(spec, dir)?;
    let canonical = std::fs::canonicalize(dir)
        .unwrap_or_else(|_| std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()));
    Ok(Probe {
        kind: Kind::VirtualTape,
        capacity_bytes: g.size_bytes,
        identity: (u64::MAX - 1, super::hash_path(&canonical)),
    })
}

/// One object on the tape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Object {
    /// Where its bytes start in `vtape.data` (a filemark: where the next block's will).
    offset: u64,
    bytes: u32,
    filemark: bool,
}

impl Object {
    fn end(&self) -> u64 {
        self.offset + self.bytes as u64
    }

    fn encode(&self) -> [u8; ENTRY_BYTES as usize] {
        let mut e = [0u8; ENTRY_BYTES as usize];
        e[..8].copy_from_slice(&self.offset.to_le_bytes());
        e[8..12].copy_from_slice(&self.bytes.to_le_bytes());
        let kind = if self.filemark {
            KIND_FILEMARK
        } else {
            KIND_BLOCK
        };
        e[12..].copy_from_slice(&kind.to_le_bytes());
        e
    }

    fn decode(e: &[u8]) -> Option<Object> {
        let offset = u64::from_le_bytes(e[..8].try_into().ok()?);
        let bytes = u32::from_le_bytes(e[8..12].try_into().ok()?);
        let filemark = match u32::from_le_bytes(e[12..16].try_into().ok()?) {
            KIND_BLOCK => false,
            KIND_FILEMARK if bytes == 0 => true,
            _ => return None,
        };
        Some(Object {
            offset,
            bytes,
            filemark,
        })
    }
}

/// st's end-of-medium state for writes (its `eof` values ST_NOEOF,
/// ST_EOM_OK, ST_EOD_1 as far as writes see them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Eom {
    Normal,
    /// Early warning was reported: the next write fails with ENOSPC.
    Warned,
    /// That ENOSPC was returned: the next write is let through.
    Allowed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    None,
    Write {
        offset: u64,
        bytes: u32,
        started: Instant,
    },
    Read {
        /// Bytes asked of the data file.
        bytes: u32,
        /// The block's length, as the drive reports it.
        block: u32,
        started: Instant,
    },
}

struct State {
    objects: Vec<Object>,
    /// The head is in front of `objects[head]`.
    head: usize,
    eom: Eom,
    /// Reads at the end of data since the last positioning (st returns 0 once, then EIO).
    eod_reads: u32,
    pending: Pending,
    /// The simulated drive is busy moving bytes until then.
    busy_until: Instant,
}

impl State {
    fn data_end_before(&self, head: usize) -> u64 {
        head.checked_sub(1)
            .map(|i| self.objects[i].end())
            .unwrap_or(0)
    }
}

pub struct VirtualTape {
    path: PathBuf,
    data: File,
    index: File,
    geometry: Geometry,
    rate_bytes_per_sec: Option<u64>,
    writable: bool,
    /// Emulate tgt's lost tail (`losing_residual_tails`).
    residual_tail_lost: bool,
    state: Mutex<State>,
}

impl VirtualTape {
    pub fn open(spec: &DeviceSpec, mode: Mode) -> Result<VirtualTape, DeviceError> {
        let path = &spec.path;
        let dir = dir_of(path)
            .ok_or_else(|| DeviceError::unusable(path, "not a vtape:DIR device name"))?;
        let geometry = geometry_of(spec, &dir)?;
        let writable = mode == Mode::Write;
        if writable {
            std::fs::create_dir_all(&dir)
                .map_err(|e| DeviceError::io(path, "create directory", e))?;
            std::fs::write(dir.join(CONF), geometry.text())
                .map_err(|e| DeviceError::io(path, "write vtape.conf", e))?;
        }
        let mut options = OpenOptions::new();
        options.read(true);
        if writable {
            options.write(true).create(true).truncate(false);
        }
        let open = |name: &str| {
            options
                .open(dir.join(name))
                .map_err(|e| DeviceError::io(path, "open", e))
        };
        let data = open(DATA)?;
        let index = open(INDEX)?;
        let objects = load_index(&index, &data).map_err(|why| DeviceError::unusable(path, why))?;
        Ok(VirtualTape {
            path: path.clone(),
            data,
            index,
            geometry,
            rate_bytes_per_sec: spec.rate_bytes_per_sec,
            writable,
            state: Mutex::new(State {
                objects,
                head: 0,
                eom: Eom::Normal,
                eod_reads: 0,
                pending: Pending::None,
                busy_until: Instant::now(),
            }),
            residual_tail_lost: false,
        })
    }

    /// A drive behind a transport that loses the tail of a block read
    /// with a larger request, as tgt's virtual tape drives do (tgt 1.0.85,
    /// `ssc.c` `resp_var_read` gives the residue where the transferred
    /// length belongs): of a block of B bytes read with a request of R > B
    /// bytes only min(B, R - B) bytes arrive, while B is reported; the
    /// rest of the buffer keeps what it held. For tests of the readers.
    pub fn losing_residual_tails(mut self) -> VirtualTape {
        self.residual_tail_lost = true;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent state (every
        // update is a few assignments), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When an operation of `bytes` handed to the drive at `started`
    /// completes. The drive moves bytes at `rate`, one block after the
    /// other; like a real drive it has a buffer (`DRIVE_BUFFER_BYTES`), so
    /// a write completes once its block is in that buffer, which is when
    /// the drive has no more than a buffer's worth left to put on tape.
    /// A host that keeps the buffer from running empty keeps the drive
    /// streaming.
    fn transfer(&self, st: &mut State, started: Instant, bytes: u32) -> Option<Instant> {
        let rate = self.rate_bytes_per_sec? as u128;
        let nanos = |b: u64| Duration::from_nanos((b as u128 * 1_000_000_000 / rate) as u64);
        let start = st.busy_until.max(started);
        st.busy_until = start + nanos(bytes as u64);
        Some(st.busy_until - nanos(DRIVE_BUFFER_BYTES).min(st.busy_until - started))
    }

    /// Make `objects[from..]` the index file's tail. Entries after `from`
    /// (objects a write at that position ended) go first, so that a
    /// process killed in between leaves an index that ends at `from`
    /// (the new objects not written, as a torn write), never new entries
    /// followed by old ones that no longer chain.
    fn persist(&self, st: &State, from: usize) -> std::io::Result<()> {
        self.index.set_len(from as u64 * ENTRY_BYTES)?;
        let mut bytes = Vec::with_capacity((st.objects.len() - from) * ENTRY_BYTES as usize);
        for o in &st.objects[from..] {
            bytes.extend_from_slice(&o.encode());
        }
        self.index.write_all_at(&bytes, from as u64 * ENTRY_BYTES)?;
        self.index.set_len(st.objects.len() as u64 * ENTRY_BYTES)
    }

    fn write_filemarks(&self, st: &mut State, count: u32) -> std::io::Result<()> {
        if !self.writable {
            return Err(std::io::Error::from_raw_os_error(libc::EBADF));
        }
        if count == 0 {
            return self.sync();
        }
        let at = st.data_end_before(st.head);
        if at >= self.geometry.size_bytes {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let from = st.head;
        st.objects.truncate(from);
        for _ in 0..count {
            st.objects.push(Object {
                offset: at,
                bytes: 0,
                filemark: true,
            });
        }
        st.head = st.objects.len();
        st.eom = Eom::Normal;
        self.persist(st, from)?;
        // A filemark written without the immediate bit flushes the drive.
        self.sync()
    }
}

/// Bytes recorded on the emulated cartridge in `dir` (where its end of
/// data is), read from its index without opening the drive: what the
/// sets already on it take (`backup --append` plans the rest). A
/// cartridge not created yet has none.
pub fn recorded_bytes(dir: &Path) -> Result<u64, String> {
    if !dir.join(INDEX).exists() {
        return Ok(0);
    }
    let open = |name: &str| File::open(dir.join(name)).map_err(|e| format!("open {name}: {e}"));
    let objects = load_index(&open(INDEX)?, &open(DATA)?)?;
    Ok(objects.last().map_or(0, Object::end))
}

/// Read and check the index: objects back to back in the data file.
fn load_index(index: &File, data: &File) -> Result<Vec<Object>, String> {
    let len = index
        .metadata()
        .map_err(|e| format!("stat vtape.index: {e}"))?
        .len();
    if len % ENTRY_BYTES != 0 {
        return Err(format!(
            "vtape.index is damaged ({len} bytes, not a multiple of {ENTRY_BYTES})"
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    index
        .read_exact_at(&mut bytes, 0)
        .map_err(|e| format!("read vtape.index: {e}"))?;
    let mut objects = Vec::with_capacity(bytes.len() / ENTRY_BYTES as usize);
    let mut end = 0u64;
    for (i, e) in bytes.chunks_exact(ENTRY_BYTES as usize).enumerate() {
        let o = Object::decode(e)
            .filter(|o| o.offset == end)
            .ok_or_else(|| format!("vtape.index is damaged at entry {i}"))?;
        end = o.end();
        objects.push(o);
    }
    let data_bytes = data
        .metadata()
        .map_err(|e| format!("stat vtape.data: {e}"))?
        .len();
    if data_bytes < end {
        return Err(format!(
            "vtape.data is shorter ({data_bytes} bytes) than its index says ({end})"
        ));
    }
    Ok(objects)
}

fn errno(e: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(e)
}

impl Device for VirtualTape {
    super::path_and_kind!(Kind::VirtualTape);
    fn fd(&self) -> RawFd {
        self.data.as_raw_fd()
    }
    fn capacity_bytes(&self) -> u64 {
        self.geometry.size_bytes
    }
    fn block_bytes(&self) -> u32 {
        BLOCK_BYTES as u32
    }
    fn sync(&self) -> std::io::Result<()> {
        self.data.sync_all()?;
        self.index.sync_all()
    }
    fn access(&self) -> Access {
        Access::Sequential
    }
    fn block_bytes_max(&self) -> Option<u32> {
        Some(BLOCK_BYTES_MAX)
    }

    fn before_block_write(&self, bytes: u32) -> BlockIo {
        let mut st = self.lock();
        assert_eq!(st.pending, Pending::None, "vtape: one operation at a time");
        let done = |e: i32| BlockIo::Done { result: -e };
        if !self.writable {
            return done(libc::EBADF);
        }
        if bytes == 0 || bytes > BLOCK_BYTES_MAX {
            return done(libc::EINVAL);
        }
        match st.eom {
            Eom::Warned => {
                st.eom = Eom::Allowed;
                return done(libc::ENOSPC);
            }
            Eom::Normal | Eom::Allowed => {}
        }
        let offset = st.data_end_before(st.head);
        if offset + bytes as u64 > self.geometry.size_bytes {
            // Volume overflow: nothing is written.
            st.eom = Eom::Warned;
            return done(libc::ENOSPC);
        }
        st.pending = Pending::Write {
            offset,
            bytes,
            started: Instant::now(),
        };
        BlockIo::Submit {
            sqe_offset: offset,
            bytes,
        }
    }

    fn after_block_write(&self, result: i32) -> BlockDone {
        let mut st = self.lock();
        let Pending::Write {
            offset,
            bytes,
            started,
        } = std::mem::replace(&mut st.pending, Pending::None)
        else {
            panic!("vtape: a write completed that was not begun");
        };
        if result != bytes as i32 {
            // The host file failed us: to the engine, the drive failed.
            return BlockDone::now(-libc::EIO);
        }
        let head = st.head;
        st.objects.truncate(head);
        st.objects.push(Object {
            offset,
            bytes,
            filemark: false,
        });
        st.head += 1;
        let from = st.head - 1;
        if self.persist(&st, from).is_err() {
            return BlockDone::now(-libc::EIO);
        }
        let in_early_warning = offset + bytes as u64 > self.geometry.early_warning_at();
        st.eom = if in_early_warning || st.eom == Eom::Allowed {
            Eom::Warned
        } else {
            Eom::Normal
        };
        let complete_at = self.transfer(&mut st, started, bytes);
        BlockDone {
            result,
            complete_at,
        }
    }

    fn before_block_read(&self, buffer_bytes: u32) -> BlockIo {
        let mut st = self.lock();
        assert_eq!(st.pending, Pending::None, "vtape: one operation at a time");
        // st refuses a read larger than the drive's block limit before
        // the tape moves, whatever the block there (rw_checks).
        if buffer_bytes > BLOCK_BYTES_MAX {
            return BlockIo::Done {
                result: -libc::EINVAL,
            };
        }
        let head = st.head;
        let Some(&o) = st.objects.get(head) else {
            // End of data: st returns 0 once (blank check), then EIO.
            st.eod_reads += 1;
            let result = if st.eod_reads == 1 { 0 } else { -libc::EIO };
            return BlockIo::Done { result };
        };
        st.head += 1;
        if o.filemark {
            return BlockIo::Done { result: 0 };
        }
        if o.bytes > buffer_bytes {
            return BlockIo::Done {
                result: -libc::ENOMEM,
            };
        }
        let sent = if self.residual_tail_lost && buffer_bytes > o.bytes {
            o.bytes.min(buffer_bytes - o.bytes)
        } else {
            o.bytes
        };
        st.pending = Pending::Read {
            bytes: sent,
            block: o.bytes,
            started: Instant::now(),
        };
        BlockIo::Submit {
            sqe_offset: o.offset,
            bytes: sent,
        }
    }

    fn after_block_read(&self, result: i32) -> BlockDone {
        let mut st = self.lock();
        let Pending::Read {
            bytes,
            block,
            started,
        } = std::mem::replace(&mut st.pending, Pending::None)
        else {
            panic!("vtape: a read completed that was not begun");
        };
        if result != bytes as i32 {
            return BlockDone::now(-libc::EIO);
        }
        let complete_at = self.transfer(&mut st, started, bytes);
        BlockDone {
            result: block as i32,
            complete_at,
        }
    }

    fn tape_op(&self, op: TapeOp) -> std::io::Result<()> {
        let mut st = self.lock();
        assert_eq!(
            st.pending,
            Pending::None,
            "vtape: no tape op with I/O in flight"
        );
        st.eod_reads = 0;
        if !matches!(op, TapeOp::WriteFilemarks(_)) {
            st.eom = Eom::Normal;
        }
        match op {
            TapeOp::Rewind => st.head = 0,
            TapeOp::EndOfData => st.head = st.objects.len(),
            TapeOp::ForwardFiles(n) => {
                for _ in 0..n {
                    loop {
                        let Some(o) = st.objects.get(st.head).copied() else {
                            return Err(errno(libc::EIO));
                        };
                        st.head += 1;
                        if o.filemark {
                            break;
                        }
                    }
                }
            }
            TapeOp::BackFiles(n) => {
                for _ in 0..n {
                    let found = st.objects[..st.head].iter().rposition(|o| o.filemark);
                    match found {
                        Some(j) => st.head = j,
                        None => {
                            st.head = 0;
                            return Err(errno(libc::EIO));
                        }
                    }
                }
            }
            TapeOp::ForwardBlocks(n) => {
                for _ in 0..n {
                    let Some(o) = st.objects.get(st.head).copied() else {
                        return Err(errno(libc::EIO));
                    };
                    st.head += 1;
                    if o.filemark {
                        return Err(errno(libc::EIO));
                    }
                }
            }
            TapeOp::BackBlocks(n) => {
                for _ in 0..n {
                    let Some(before) = st.head.checked_sub(1) else {
                        return Err(errno(libc::EIO));
                    };
                    if st.objects[before].filemark {
                        return Err(errno(libc::EIO));
                    }
                    st.head = before;
                }
            }
            TapeOp::WriteFilemarks(n) => self.write_filemarks(&mut st, n)?,
        }
        Ok(())
    }

    fn tape_status(&self) -> std::io::Result<TapeStatus> {
        let st = self.lock();
        let before = &st.objects[..st.head];
        let last_mark = before.iter().rposition(|o| o.filemark);
        Ok(TapeStatus {
            file_number: before.iter().filter(|o| o.filemark).count() as i64,
            block_number: (st.head - last_mark.map(|j| j + 1).unwrap_or(0)) as i64,
            logical_object: st.head as i64,
            at_bot: st.head == 0,
            at_eot: st.data_end_before(st.head) > self.geometry.early_warning_at(),
            at_eod: st.head == st.objects.len(),
            write_protected: !self.writable,
            online: true,
            density_code: 0,
            block_size_bytes: 0,
        })
    }
}

#[cfg(test)]
mod tests;
