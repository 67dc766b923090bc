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

use std::ffi::CString;
use std::fs::File;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::io::{self, Lease, Uring};

/// Writes queued before the ring is submitted and reaped.
const RING_ENTRIES: u32 = 256;

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
/// descriptor, into a direct descriptor slot), `Write` of its one record
/// from the window, `Close` of the slot.
struct Create {
    /// The restored file (an index into the restored catalog).
    target: u32,
    /// Its directory, kept open by the caller until `finish` (`Staged`).
    dir: RawFd,
    /// Its name in `dir`: the `OpenAt` points into it until reaped.
    name: CString,
    /// Held, not read: the bytes stay put until the chain is reaped.
    #[allow(dead_code)]
    window: Arc<Lease>,
    range: Range<usize>,
    slot: u32,
    /// Completions of the chain reaped so far (open, write, close).
    results: [Option<i32>; 3],
}

enum Op {
    Write(Pending),
    Create(Create),
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

/// Direct descriptor slots of the writer's ring: small files in flight at once.
const FILE_SLOTS: u32 = 64;
/// `user_data` = op index * 4 + step: 0..=2 a chain's open, write,
/// close; `STEP_WRITE` a plain write.
const STEP_WRITE: u64 = 3;

pub struct Writer {
    ring: Uring,
    /// Files with writes queued since the last `finish` (kept open until then).
    files: Vec<File>,
    pending: Vec<Op>,
    /// Free direct descriptor slots (None: not registered yet).
    slots: Option<Vec<u32>>,
    /// Whether `can_create` found the ring able to make small files.
    creates: bool,
    /// Small files whose chain failed, by restored file.
    failures: Vec<(u32, CreateFailure)>,
    /// The first error, with the path of its file.
    error: Option<String>,
    names: Vec<String>,
}

impl Writer {
    pub fn new() -> std::io::Result<Writer> {
        Ok(Writer {
            ring: Uring::new(RING_ENTRIES)?,
            files: Vec::new(),
            pending: Vec::new(),
            slots: None,
            creates: false,
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
        self.pending.push(Op::Write(Pending {
            file: handle,
            window,
            range,
            offset,
        }));
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
    /// Asked once per ring, before the first `create`.
    pub fn can_create(&mut self) -> bool {
        if self.slots.is_none() {
            let ready = self.ring.supports(&io::FILE_OPS)
                && self.ring.register_file_slots(FILE_SLOTS).is_ok();
            self.slots = Some(if ready {
                (0..FILE_SLOTS).rev().collect()
            } else {
                Vec::new()
            });
            self.creates = ready;
        }
        self.creates
    }

    /// Queue a small file, whole: created as `name` in `dir` (`O_EXCL |
    /// O_NOFOLLOW`, mode `mode` less umask), `range` of `window` written
    /// at offset 0, closed; one linked chain. `can_create` must have said
    /// yes. `dir` must stay open until `finish`. What failed is in
    /// `take_failures` after `finish`.
    pub fn create(
        &mut self,
        target: u32,
        dir: RawFd,
        name: &[u8],
        mode: u32,
        window: Arc<Lease>,
        range: Range<usize>,
    ) -> Result<(), String> {
        let name = CString::new(name).map_err(|_| "a name with a NUL byte".to_string())?;
        let slot = loop {
            if let Some(slot) = self.slots.as_mut().and_then(Vec::pop) {
                break slot;
            }
            assert!(self.ring.in_flight() > 0, "create without can_create");
            self.ring
                .submit_and_wait(1)
                .map_err(|e| format!("io_uring_enter: {e}"))?;
            self.reap()?;
        };
        let index = self.pending.len() as u64;
        // No O_CLOEXEC: a direct descriptor is no process descriptor (EINVAL).
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        // SAFETY: the name is kept in `self.pending` (a CString's bytes do
        // not move with it) until `finish` has reaped the chain; the
        // caller keeps `dir` open until then.
        let open = unsafe { io::open_direct(dir, name.as_ptr(), flags, mode, slot) };
        let mut chain = vec![
            open.user_data(index * 4).linked(),
            io::write_direct(slot, &window, range.clone(), 0)
                .user_data(index * 4 + 1)
                .linked(),
            io::close_direct(slot).user_data(index * 4 + 2),
        ];
        self.pending.push(Op::Create(Create {
            target,
            dir,
            name,
            window,
            range,
            slot,
            results: [None; 3],
        }));
        self.ring
            .push_all(&mut chain)
            .map_err(|e| format!("io_uring_enter: {e}"))
    }

    /// The small files whose chain failed since the last call.
    pub fn take_failures(&mut self) -> Vec<(u32, CreateFailure)> {
        std::mem::take(&mut self.failures)
    }

    fn submit(&mut self, index: usize) -> Result<(), String> {
        let Op::Write(p) = &self.pending[index] else {
            unreachable!("submit of a plain write")
        };
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
            self.ring
                .submit_and_wait(1)
                .map_err(|e| format!("io_uring_enter: {e}"))?;
            self.reap()?;
        }
        self.ring
            .push(entry.user_data(index as u64 * 4 + STEP_WRITE))
            .map_err(|e| format!("io_uring_enter: {e}"))
    }

    fn reap(&mut self) -> Result<(), String> {
        let mut done = Vec::new();
        self.ring.reap(&mut done);
        for (user_data, result) in done {
            let index = (user_data / 4) as usize;
            let step = user_data % 4;
            if step != STEP_WRITE {
                self.chain_done(index, step as usize, result);
                continue;
            }
            let Op::Write(p) = &self.pending[index] else {
                unreachable!("a plain write's completion")
            };
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
                let Op::Write(p) = &mut self.pending[index] else {
                    unreachable!("a plain write's completion")
                };
                p.range.start += n;
                p.offset += n as u64;
                self.submit(index)?;
            }
        }
        Ok(())
    }

    /// One completion of a small file's chain; when all three are in,
    /// its slot is free again and a failure is noted.
    fn chain_done(&mut self, index: usize, step: usize, result: i32) {
        let Op::Create(c) = &mut self.pending[index] else {
            unreachable!("a chain's completion")
        };
        c.results[step] = Some(result);
        let [Some(open), Some(write), Some(close)] = c.results else {
            return;
        };
        let (target, slot, len) = (c.target, c.slot, c.range.len());
        let errno = |r: i32| std::io::Error::from_raw_os_error(-r);
        let failure = if open < 0 {
            Some(CreateFailure::NotCreated(errno(open)))
        } else if write < 0 || write as usize != len || close < 0 {
            // A short write severs the chain: the close was cancelled and
            // the file is still in its slot.
            let (dir, name) = (c.dir, c.name.clone());
            let mut why = match write {
                w if w < 0 => format!("write: {}", errno(w)),
                w if w as usize != len => format!("write: {w} of {len} bytes written"),
                _ => format!("close: {}", errno(close)),
            };
            if close < 0 {
                if let Err(e) = self.ring.clear_file_slot(slot) {
                    why.push_str(&format!("; closing it: {e}"));
                }
            }
            // Nothing unproven or partial stays under the name.
            // SAFETY: `dir` is open until `finish` (the caller's promise).
            let dir = unsafe { std::os::fd::BorrowedFd::borrow_raw(dir) };
            if let Err(e) = super::at::remove_in(dir, name.as_bytes()) {
                why.push_str(&format!("; removing it: {e}"));
            }
            Some(CreateFailure::NotWritten(why))
        } else {
            None
        };
        if let Some(f) = failure {
            self.failures.push((target, f));
        }
        self.slots.get_or_insert_with(Vec::new).push(slot);
    }

    /// Wait for every queued write, and let go of the windows written from.
    pub fn finish(&mut self) -> Result<(), String> {
        while self.ring.in_flight() > 0 {
            self.ring
                .submit_and_wait(1)
                .map_err(|e| format!("io_uring_enter: {e}"))?;
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
        // Reap every queued write before its file is closed.
        let _ = self.finish();
    }
}
