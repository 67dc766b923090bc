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

use std::fs::File;
use std::ops::Range;
use std::os::fd::AsRawFd;
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
                (p.file, p.range.len(), p.offset)
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
                p.range.start += n;
                p.offset += n as u64;
                self.submit(index)?;
            }
        }
        Ok(())
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
