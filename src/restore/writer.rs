//! Restore's destination writes, queued on an io_uring so that the reader
//! goes on streaming the device while payloads are written to their files.
//!
//! The payloads are not copied: each write is submitted from the stream's
//! window itself, a typed lease (`Arc<Lease>`) the writer keeps until the
//! write is reaped, so the window cannot be read into meanwhile (the
//! stream takes it back with `Arc::get_mut`, after `Item::Reclaim`, when
//! the restore has called `finish`). A payload in a device's own mapping
//! (pmem) is written at once (`write_mapped`): it is memory already, and
//! the borrow of the mapping ends with the call.
//!
//! Small files (`tree::small`) are made by `create`: one linked chain
//! `OpenAt` + `Write` + `Close` per file on a direct descriptor slot. A
//! payload of up to `COPY_BYTES_MAX` is copied into the slot's own buffer
//! first, so that its chain does not hold the window: the reader goes on
//! with the next window while the files are made (`finish` waits only for
//! what holds a window; `drain` for everything).

use std::ffi::CString;
use std::fs::File;
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::io::{self, Lease, Uring};

/// Writes queued before the ring is submitted and reaped.
const RING_ENTRIES: u32 = 256;
/// Direct descriptor slots of the writer's ring: small files in flight at once.
const FILE_SLOTS: u32 = 64;
/// A small file's payload up to this size is copied into its slot's
/// buffer (at most `FILE_SLOTS` of them: 16 MiB); a larger one is written
/// from the window, which its chain then holds.
const COPY_BYTES_MAX: usize = 256 << 10;
/// `user_data` of a plain write: its index in `pending` * 4 + `STEP_WRITE`;
/// of a chain: `CHAIN` | slot * 4 + step (0 open, 1 write, 2 close).
const STEP_WRITE: u64 = 3;
const CHAIN: u64 = 1 << 62;

struct Pending {
    file: usize,
    /// Held until the write is reaped: the bytes stay put meanwhile.
    window: Arc<Lease>,
    /// What is left to write of the window.
    range: Range<usize>,
    offset: u64,
}

/// A small file made whole by one linked chain on the ring: `OpenAt`
/// (`O_CREAT | O_EXCL | O_NOFOLLOW`, relative to its directory's
/// descriptor, into a direct descriptor slot), `Write` of its one record,
/// `Close` of the slot.
struct Chain {
    /// The restored file (an index into the restored catalog).
    target: u32,
    /// Its directory, kept open by the caller until `drain` (`Staged`).
    dir: RawFd,
    /// Its name in `dir`: the `OpenAt` points into it until reaped.
    name: CString,
    /// The window written from (None: the slot's buffer), held until reaped.
    window: Option<Arc<Lease>>,
    len: usize,
    /// Completions of the chain reaped so far (open, write, close).
    results: [Option<i32>; 3],
}

/// What became of a small file's chain that did not complete.
#[derive(Debug)]
pub enum CreateFailure {
    /// The name could not be created (e.g. EEXIST: something stands
    /// there): nothing was written; the file alone is not restored.
    NotCreated(std::io::Error),
    /// Created, but its data could not be written (removed again): a
    /// failure of the destination, which stops the restore.
    NotWritten(String),
}

pub struct Writer {
    ring: Uring,
    /// Files with writes queued since the last `finish` (kept open until then).
    files: Vec<File>,
    pending: Vec<Pending>,
    /// Plain writes pushed and not reaped.
    writes_in_flight: usize,
    /// Chains by slot (None: the slot is free).
    chains: Vec<Option<Chain>>,
    /// Per slot, the buffer a copied payload is written from.
    buffers: Vec<Vec<u8>>,
    free: Vec<u32>,
    /// Chains in flight that hold a window.
    window_chains: usize,
    /// Whether the ring can make small files (None: not asked yet).
    creates: Option<bool>,
    /// Small files whose chain failed, by restored file.
    failures: Vec<(u32, CreateFailure)>,
    /// The first error, with the path of its file.
    error: Option<String>,
    names: Vec<String>,
}

fn enter_error(e: std::io::Error) -> String {
    format!("io_uring_enter: {e}")
}

impl Writer {
    pub fn new() -> std::io::Result<Writer> {
        Ok(Writer {
            ring: Uring::new(RING_ENTRIES)?,
            files: Vec::new(),
            pending: Vec::new(),
            writes_in_flight: 0,
            chains: Vec::new(),
            buffers: Vec::new(),
            free: Vec::new(),
            window_chains: 0,
            creates: None,
            failures: Vec::new(),
            error: None,
            names: Vec::new(),
        })
    }

    /// Keep `file` open for writes until the next `finish`; returns its handle.
    pub fn add_file(&mut self, file: File, name: String) -> usize {
        self.files.push(file);
        self.names.push(name);
        self.files.len() - 1
    }

    pub fn open_files(&self) -> usize {
        self.files.len()
    }

    /// Queue a write of `range` of `window` at `offset` of file `handle`;
    /// the window is kept until `finish` has reaped the write.
    pub fn write(
        &mut self,
        handle: usize,
        window: Arc<Lease>,
        range: Range<usize>,
        offset: u64,
    ) -> Result<(), String> {
        self.pending.push(Pending {
            file: handle,
            window,
            range,
            offset,
        });
        self.submit(self.pending.len() - 1)
    }

    /// Write `data` (a slice of a device's mapping) at `offset` of file
    /// `handle` now, before returning.
    pub fn write_mapped(&mut self, handle: usize, data: &[u8], offset: u64) -> Result<(), String> {
        self.files[handle]
            .write_all_at(data, offset)
            .map_err(|e| format!("write {} at offset {offset}: {e}", self.names[handle]))
    }

    /// Whether the ring can make small files (`create`): it has the
    /// operations (`io::FILE_OPS`) and took the direct descriptor slots.
    pub fn can_create(&mut self) -> bool {
        if self.creates.is_none() {
            let ready = self.ring.supports(&io::FILE_OPS)
                && self.ring.register_file_slots(FILE_SLOTS).is_ok();
            if ready {
                self.chains = (0..FILE_SLOTS).map(|_| None).collect();
                self.buffers = vec![Vec::new(); FILE_SLOTS as usize];
                self.free = (0..FILE_SLOTS).rev().collect();
            }
            self.creates = Some(ready);
        }
        self.creates == Some(true)
    }

    /// Queue a small file, whole: created as `name` in `dir` (`O_EXCL |
    /// O_NOFOLLOW`, mode `mode` less umask), `range` of `window` written
    /// at offset 0 (copied first when small: `COPY_BYTES_MAX`), closed;
    /// one linked chain. `can_create` must have said yes. `dir` must stay
    /// open until `drain`. What failed is in `take_failures` after
    /// `finish` or `drain`.
    pub fn create(
        &mut self,
        target: u32,
        dir: RawFd,
        name: &[u8],
        mode: u32,
        window: &Arc<Lease>,
        range: Range<usize>,
    ) -> Result<(), String> {
        assert_eq!(self.creates, Some(true), "create without can_create");
        let name = CString::new(name).map_err(|_| "a name with a NUL byte".to_string())?;
        let slot = loop {
            if let Some(slot) = self.free.pop() {
                break slot;
            }
            self.ring.submit_and_wait(1).map_err(enter_error)?;
            self.reap()?;
        };
        let len = range.len();
        let base = CHAIN | (u64::from(slot) * 4);
        // No O_CLOEXEC: a direct descriptor is no process descriptor (EINVAL).
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        // SAFETY: the name is kept in `self.chains[slot]` (a CString's
        // bytes do not move with it) until the chain is reaped; the
        // caller keeps `dir` open until `drain`.
        let open = unsafe { io::open_direct(dir, name.as_ptr(), flags, mode, slot) };
        let (write, window) = if len <= COPY_BYTES_MAX {
            let buffer = &mut self.buffers[slot as usize];
            buffer.clear();
            buffer.extend_from_slice(&window.bytes()[range]);
            // SAFETY: the slot's buffer is neither touched nor resized
            // until the chain's completions are reaped (`chain_done` frees
            // the slot); the writer outlives its ring's operations (Drop
            // drains them).
            let write = unsafe { io::write_direct_from(slot, buffer.as_ptr(), len as u32, 0) };
            (write, None)
        } else {
            self.window_chains += 1;
            (
                io::write_direct(slot, window, range, 0),
                Some(window.clone()),
            )
        };
        self.chains[slot as usize] = Some(Chain {
            target,
            dir,
            name,
            window,
            len,
            results: [None; 3],
        });
        let mut chain = vec![
            open.user_data(base).linked(),
            write.user_data(base + 1).linked(),
            io::close_direct(slot).user_data(base + 2),
        ];
        self.ring.push_all(&mut chain).map_err(enter_error)
    }

    /// The small files whose chain failed since the last call.
    pub fn take_failures(&mut self) -> Vec<(u32, CreateFailure)> {
        std::mem::take(&mut self.failures)
    }

    fn submit(&mut self, index: usize) -> Result<(), String> {
        let p = &self.pending[index];
        // The fd is kept open in `self.files` until `finish` has reaped
        // every write; the lease keeps its bytes.
        let entry = io::write_at(
            self.files[p.file].as_raw_fd(),
            &p.window,
            p.range.clone(),
            p.offset,
        );
        if self.ring.room() == 0 {
            // Full: submit what is queued and make room.
            self.ring.submit_and_wait(1).map_err(enter_error)?;
            self.reap()?;
        }
        self.ring
            .push(entry.user_data(index as u64 * 4 + STEP_WRITE))
            .map_err(enter_error)?;
        self.writes_in_flight += 1;
        Ok(())
    }

    fn reap(&mut self) -> Result<(), String> {
        let mut done = Vec::new();
        self.ring.reap(&mut done);
        for (user_data, result) in done {
            if user_data & CHAIN != 0 {
                let at = user_data & !CHAIN;
                self.chain_done((at / 4) as usize, (at % 4) as usize, result);
                continue;
            }
            debug_assert_eq!(user_data % 4, STEP_WRITE);
            self.writes_in_flight -= 1;
            let index = (user_data / 4) as usize;
            let p = &self.pending[index];
            let (file, len, offset) = (p.file, p.range.len(), p.offset);
            if result < 0 && (-result == libc::EINTR || -result == libc::EAGAIN) {
                self.submit(index)?;
            } else if result < 0 || (result == 0 && len > 0) {
                let why = if result < 0 {
                    std::io::Error::from_raw_os_error(-result).to_string()
                } else {
                    "no progress".to_string()
                };
                let name = &self.names[file];
                self.error
                    .get_or_insert_with(|| format!("write {name} at offset {offset}: {why}"));
            } else if (result as usize) < len {
                // Short write: the rest, from where it stopped.
                let n = result as usize;
                let p = &mut self.pending[index];
                p.range.start += n;
                p.offset += n as u64;
                self.submit(index)?;
            }
        }
        Ok(())
    }

    /// One completion of a small file's chain; when all three are in,
    /// its slot is free again and a failure is noted.
    fn chain_done(&mut self, slot: usize, step: usize, result: i32) {
        let c = self.chains[slot].as_mut().expect("a chain in flight");
        c.results[step] = Some(result);
        let [Some(open), Some(write), Some(close)] = c.results else {
            return;
        };
        let c = self.chains[slot].take().expect("a chain in flight");
        if c.window.is_some() {
            self.window_chains -= 1;
        }
        let errno = |r: i32| std::io::Error::from_raw_os_error(-r);
        let failure = if open < 0 {
            Some(CreateFailure::NotCreated(errno(open)))
        } else if write < 0 || write as usize != c.len || close < 0 {
            // A short write severs the chain: the close was cancelled and
            // the file is still in its slot.
            let mut why = match write {
                w if w < 0 => format!("write: {}", errno(w)),
                w if w as usize != c.len => format!("write: {w} of {} bytes written", c.len),
                _ => format!("close: {}", errno(close)),
            };
            if close < 0 {
                if let Err(e) = self.ring.clear_file_slot(slot as u32) {
                    why.push_str(&format!("; closing it: {e}"));
                }
            }
            // Nothing unproven or partial stays under the name.
            // SAFETY: `dir` is open until `drain` (the caller's promise).
            let dir = unsafe { BorrowedFd::borrow_raw(c.dir) };
            if let Err(e) = super::at::remove_in(dir, c.name.as_bytes()) {
                why.push_str(&format!("; removing it: {e}"));
            }
            Some(CreateFailure::NotWritten(why))
        } else {
            None
        };
        if let Some(f) = failure {
            self.failures.push((c.target, f));
        }
        self.free.push(slot as u32);
    }

    /// Wait for every queued write and every small file's chain that
    /// holds a window, and let go of the windows written from.
    pub fn finish(&mut self) -> Result<(), String> {
        self.wait_until(|w| w.writes_in_flight == 0 && w.window_chains == 0)
    }

    /// `finish`, and wait for every small file's chain too.
    pub fn drain(&mut self) -> Result<(), String> {
        self.wait_until(|w| w.ring.in_flight() == 0)
    }

    fn wait_until(&mut self, done: impl Fn(&Writer) -> bool) -> Result<(), String> {
        while !done(self) {
            self.ring.submit_and_wait(1).map_err(enter_error)?;
            self.reap()?;
        }
        self.pending.clear();
        self.files.clear();
        self.names.clear();
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Reap every queued write and chain before its file, name or
        // buffer goes.
        let _ = self.drain();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::BufferPool;
    use std::os::fd::AsFd;

    #[test]
    fn a_small_file_is_created_written_and_closed_once_and_never_over_an_existing_name() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = File::open(tmp.path()).unwrap();
        std::fs::write(tmp.path().join("taken"), b"old").unwrap();
        let pool = BufferPool::new(1, 1 << 20);
        let mut lease = pool.lease_all().pop().unwrap();
        for (i, b) in lease.bytes_mut().iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let window = Arc::new(lease);
        let mut w = Writer::new().unwrap();
        assert!(
            w.can_create(),
            "kernel without OpenAt/Close on direct descriptors"
        );
        let fd = dir.as_fd().as_raw_fd();
        // Copied (small) and from the window (above COPY_BYTES_MAX).
        w.create(1, fd, b"small", 0o640, &window, 10..4106).unwrap();
        w.create(2, fd, b"large", 0o600, &window, 0..COPY_BYTES_MAX + 1)
            .unwrap();
        w.create(3, fd, b"taken", 0o644, &window, 0..3).unwrap();
        w.finish().unwrap();
        assert_eq!(
            w.window_chains, 0,
            "finish waits for chains that hold a window"
        );
        w.drain().unwrap();
        let small = std::fs::read(tmp.path().join("small")).unwrap();
        assert_eq!(small, window.bytes()[10..4106]);
        let large = std::fs::read(tmp.path().join("large")).unwrap();
        assert_eq!(large, window.bytes()[..COPY_BYTES_MAX + 1]);
        assert_eq!(std::fs::read(tmp.path().join("taken")).unwrap(), b"old");
        let failures = w.take_failures();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures[0].0, 3);
        let CreateFailure::NotCreated(e) = &failures[0].1 else {
            panic!("{failures:?}")
        };
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(w.free.len(), FILE_SLOTS as usize, "every slot free again");
        // Far more files than slots: each waits for a free slot.
        for i in 0..(FILE_SLOTS * 3) {
            let name = format!("f{i}");
            w.create(10 + i, fd, name.as_bytes(), 0o644, &window, 0..100)
                .unwrap();
        }
        w.drain().unwrap();
        assert!(w.take_failures().is_empty());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 3 + 3 * 64);
    }
}
