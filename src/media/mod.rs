//! The media layer: the one place that reads and writes pbio's on-media
//! structures on a device (label, catalog, record streams), used by backup,
//! restore, the overwrite guard and the scanner.
//!
//! - `label`, `catalog`: the small structures around the data, written
//!   once per device per set outside the hot path, so plain pread/pwrite
//!   from an aligned buffer; `tape`: the same on a sequential device;
//! - `stream`: a device's records in media order (restore, verify, scan);
//! - `scan`: the record scanner (`pbio scan`, `restore --scan`'s set);
//! - `shard`: a data record of a parity stripe read as its shard;
//! - `guard`: what is on a device before backup writes to it.
//!
//! On a sequential device (tape) the same structures are tape blocks: the
//! label is block 0 of tape file 0 (written once, never rewritten), the
//! catalog is tape file 1, closed by an End record and a filemark
//! (docs/FORMAT.md, "Tape layout"). Positions there are logical object
//! numbers: blocks and filemarks counted from the beginning of the tape.

mod catalog;
pub mod guard;
mod label;
pub mod scan;
pub mod sets;
pub mod shard;
pub mod stream;
mod tape;

pub use catalog::{
    catalog_digest, catalog_media_bytes, opened_catalog_bytes, read_catalog, read_catalog_bytes,
    spill_catalog_bytes, write_catalog, CatalogRead,
};
pub use label::{read_label, write_label};
pub use tape::write_tape_catalog;

use crate::device::{Access, Device};
use crate::format::{FormatError, SetId, HEADER_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("device {device}: {op} at offset {offset}: {error}")]
    Io {
        device: String,
        op: &'static str,
        offset: u64,
        error: std::io::Error,
    },
    #[error("device {device}: {what} at offset {offset}: {error}")]
    Format {
        device: String,
        what: &'static str,
        offset: u64,
        error: FormatError,
    },
    #[error("device {device}: {why}")]
    Invalid { device: String, why: String },
    /// A volume of a set that spans cartridges, closed before the catalog
    /// existed: its tape file 1 is only an End record (FORMAT.md, "Sets
    /// that span cartridges"). The catalog is on the set's last volumes.
    #[error("device {device}: volume {volume} of {volumes} of a set that spans cartridges: its catalog is on the set's last cartridges")]
    Continued {
        device: String,
        volume: u32,
        volumes: u32,
    },
}

impl MediaError {
    /// `op` on `dev` failed at `offset`.
    fn io(dev: &dyn Device, op: &'static str, offset: u64, error: std::io::Error) -> MediaError {
        MediaError::Io {
            device: name(dev),
            op,
            offset,
            error,
        }
    }
}

fn name(dev: &dyn Device) -> String {
    dev.path().display().to_string()
}

/// A new set id: 128 random bits from the kernel.
pub fn new_set_id() -> SetId {
    let mut id = SetId::default();
    fill_random(&mut id.0);
    id
}

/// Fill `buf` with random bytes from the kernel (getrandom, blocking until
/// the pool is initialized).
pub fn fill_random(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: getrandom writes at most len bytes into the live buffer.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        }
    }
}

/// pwrite all of `buf` at `offset`.
pub fn write_all_at(dev: &dyn Device, buf: &[u8], offset: u64) -> Result<(), MediaError> {
    let mut done = 0usize;
    while done < buf.len() {
        match dev.write_at(&buf[done..], offset + done as u64) {
            Ok(0) => {
                let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
                return Err(MediaError::io(dev, "write", offset + done as u64, full));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(MediaError::io(dev, "write", offset + done as u64, e)),
        }
    }
    Ok(())
}

/// pread exactly `buf.len()` bytes at `offset` (short only at the device's end).
pub fn read_at(dev: &dyn Device, buf: &mut [u8], offset: u64) -> Result<usize, MediaError> {
    let mut done = 0usize;
    while done < buf.len() {
        match dev.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(MediaError::io(dev, "read", offset + done as u64, e)),
        }
    }
    Ok(done)
}

/// Where a device's first record is: the media offset after the label, or
/// on a tape the object after the label block.
pub fn data_start(dev: &dyn Device) -> u64 {
    match dev.access() {
        Access::Random => HEADER_BYTES as u64,
        Access::Sequential => 1,
    }
}

/// Where a scan of a device with no catalog stops at the latest: the
/// device's end, or on a tape its end of recorded data.
pub fn scan_end(dev: &dyn Device) -> u64 {
    match dev.access() {
        Access::Random => dev.capacity_bytes(),
        Access::Sequential => u64::MAX,
    }
}
