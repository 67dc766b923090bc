//! Restore's destination writes, queued on an io_uring so that the reader
//! goes on streaming the device while payloads are written to their files.
//!
//! The payloads are not copied: each write points into the stream's window
//! buffer, which the stream does not reuse or free before it has delivered
//! `Item::Reclaim`; the restore calls `finish` then, which reaps every
//! write. That is the contract the one `unsafe` push below relies on.

use std::fs::File;
use std::os::fd::AsRawFd;

use crate::io::{self, Uring};

/// Writes queued before the ring is submitted and reaped.
const RING_ENTRIES: u32 = 256;

struct Pending {
    file: usize,
    ptr: *const u8,
    len: usize,
    offset: u64,
}

pub struct Writer {
    ring: Uring,
    /// Files with writes queued since the last `finish` (kept open until then).
    files: Vec<File>,
    pending: Vec<Pending>,
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

    /// Queue a write of `data` at `offset` of file `handle`.
    ///
    /// # Safety
    /// `data` must stay valid and unchanged until `finish` returns (the
    /// stream guarantees this for payloads until it delivers Reclaim).
    pub unsafe fn write(&mut self, handle: usize, data: &[u8], offset: u64) -> Result<(), String> {
        self.pending.push(Pending {
            file: handle,
            ptr: data.as_ptr(),
            len: data.len(),
            offset,
        });
        self.submit(self.pending.len() - 1)
    }

    fn submit(&mut self, index: usize) -> Result<(), String> {
        let p = &self.pending[index];
        // SAFETY: the entry's buffer is valid and unchanged until `finish`
        // (caller's contract on `write`); its fd is kept open in
        // `self.files` until `finish` has reaped every write.
        let entry = unsafe {
            io::write_from(
                self.files[p.file].as_raw_fd(),
                p.ptr,
                p.len as u32,
                p.offset,
            )
        };
        if self.ring.room() == 0 {
            // Full: submit what is queued and make room.
            self.ring
                .submit_and_wait(1)
                .map_err(|e| format!("io_uring_enter: {e}"))?;
            self.reap()?;
        }
        self.ring
            .push(entry.user_data(index as u64))
            .map_err(|e| format!("io_uring_enter: {e}"))
    }

    fn reap(&mut self) -> Result<(), String> {
        let mut done = Vec::new();
        self.ring.reap(&mut done);
        for (user_data, result) in done {
            let index = user_data as usize;
            let (file, len, offset) = {
                let p = &self.pending[index];
                (p.file, p.len, p.offset)
            };
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
                // SAFETY: n < len, so the pointer stays inside the payload.
                p.ptr = unsafe { p.ptr.add(n) };
                p.len -= n;
                p.offset += n as u64;
                self.submit(index)?;
            }
        }
        Ok(())
    }

    /// Wait for every queued write; then the payload buffers may be reused.
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
        // Never let a queued write outlive the buffers it points into.
        let _ = self.finish();
    }
}
