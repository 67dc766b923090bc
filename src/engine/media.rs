//! Synchronous media helpers for the small structures around the data:
//! the label and the catalog. These are written once per device per set,
//! outside the hot path, so plain pread/pwrite from an aligned buffer.

use std::os::fd::BorrowedFd;

use super::buffers::BufferPool;
use crate::device::Device;
use crate::format::{
    round_up_block, Catalog, FormatError, Label, RecordHeader, RecordKind, SetId, BLOCK_BYTES,
    HEADER_BYTES,
};

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
}

fn name(dev: &dyn Device) -> String {
    dev.path().display().to_string()
}

fn fd(dev: &dyn Device) -> BorrowedFd<'_> {
    // SAFETY: the device owns the descriptor and outlives the borrow.
    unsafe { BorrowedFd::borrow_raw(dev.fd()) }
}

/// pwrite all of `buf` at `offset`.
pub fn write_all_at(dev: &dyn Device, buf: &[u8], offset: u64) -> Result<(), MediaError> {
    let mut done = 0usize;
    while done < buf.len() {
        match nix::sys::uio::pwrite(fd(dev), &buf[done..], (offset + done as u64) as i64) {
            Ok(0) => {
                return Err(MediaError::Io {
                    device: name(dev),
                    op: "write",
                    offset: offset + done as u64,
                    error: std::io::Error::from_raw_os_error(libc::ENOSPC),
                })
            }
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(MediaError::Io {
                    device: name(dev),
                    op: "write",
                    offset: offset + done as u64,
                    error: e.into(),
                })
            }
        }
    }
    Ok(())
}

/// pread exactly `buf.len()` bytes at `offset` (short only at the device's end).
pub fn read_at(dev: &dyn Device, buf: &mut [u8], offset: u64) -> Result<usize, MediaError> {
    let mut done = 0usize;
    while done < buf.len() {
        match nix::sys::uio::pread(fd(dev), &mut buf[done..], (offset + done as u64) as i64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(MediaError::Io {
                    device: name(dev),
                    op: "read",
                    offset: offset + done as u64,
                    error: e.into(),
                })
            }
        }
    }
    Ok(done)
}

pub fn write_label(dev: &dyn Device, label: &Label) -> Result<(), MediaError> {
    let mut pool = BufferPool::new(1, BLOCK_BYTES);
    let buf = pool.slot_mut(0);
    label.encode_into(buf);
    write_all_at(dev, buf, 0)
}

pub fn read_label(dev: &dyn Device) -> Result<Label, MediaError> {
    let mut pool = BufferPool::new(1, BLOCK_BYTES);
    let buf = pool.slot_mut(0);
    let got = read_at(dev, buf, 0)?;
    Label::decode(&buf[..got]).map_err(|error| MediaError::Format {
        device: name(dev),
        what: "label",
        offset: 0,
        error,
    })
}

/// Write the encoded catalog as Catalog records starting at `position`,
/// then one End record. Returns the offset just past the End record.
pub fn write_catalog(
    dev: &dyn Device,
    set_id: SetId,
    device_index: u32,
    mut sequence: u64,
    position: u64,
    catalog: &[u8],
    chunk_bytes: u32,
) -> Result<u64, MediaError> {
    let mut pool = BufferPool::new(1, HEADER_BYTES + chunk_bytes as usize);
    let mut offset = position;
    let mut written = 0usize;
    let mut emit = |kind: RecordKind, payload: &[u8], file_offset: u64, offset: &mut u64| {
        let buf = pool.slot_mut(0);
        let padded = round_up_block(payload.len() as u64) as usize;
        let (head, body) = buf.split_at_mut(HEADER_BYTES);
        body[..payload.len()].copy_from_slice(payload);
        body[payload.len()..padded].fill(0);
        let header = RecordHeader {
            kind,
            set_id,
            device_index,
            sequence,
            file_id: 0,
            segment_id: 0,
            file_offset,
            payload_bytes: payload.len() as u32,
            file_size: if kind == RecordKind::Catalog {
                catalog.len() as u64
            } else {
                0
            },
            payload_crc: crate::format::crc32c(payload),
        };
        header.encode_into(head);
        sequence += 1;
        let total = HEADER_BYTES + padded;
        if *offset + total as u64 > dev.capacity_bytes() {
            return Err(MediaError::Invalid {
                device: name(dev),
                why: format!("no room for the catalog at offset {}", *offset),
            });
        }
        write_all_at(dev, &buf[..total], *offset)?;
        *offset += total as u64;
        Ok(())
    };
    while written < catalog.len() {
        let n = (catalog.len() - written).min(chunk_bytes as usize);
        emit(
            RecordKind::Catalog,
            &catalog[written..written + n],
            written as u64,
            &mut offset,
        )?;
        written += n;
    }
    emit(RecordKind::End, &[], 0, &mut offset)?;
    Ok(offset)
}

/// Media bytes the catalog and End record take.
pub fn catalog_media_bytes(catalog_bytes: u64, chunk_bytes: u32) -> u64 {
    let records = catalog_bytes.div_ceil(chunk_bytes as u64);
    records * HEADER_BYTES as u64 + round_up_block(catalog_bytes) + HEADER_BYTES as u64
}

/// Read and decode the catalog a Complete label points to.
pub fn read_catalog(dev: &dyn Device, label: &Label) -> Result<Catalog, MediaError> {
    let chunk = label.chunk_bytes as usize;
    let mut pool = BufferPool::new(1, HEADER_BYTES + chunk);
    let mut bytes = Vec::with_capacity(label.catalog_bytes.min(1 << 30) as usize);
    let mut offset = label.catalog_offset;
    let format_err = |what, offset, error| MediaError::Format {
        device: name(dev),
        what,
        offset,
        error,
    };
    while (bytes.len() as u64) < label.catalog_bytes {
        let buf = pool.slot_mut(0);
        let got = read_at(dev, buf, offset)?;
        let header = RecordHeader::decode(&buf[..got])
            .map_err(|e| format_err("catalog record header", offset, e))?;
        if header.kind != RecordKind::Catalog
            || header.set_id != label.set_id
            || header.file_offset != bytes.len() as u64
            || header.file_size != label.catalog_bytes
        {
            return Err(MediaError::Invalid {
                device: name(dev),
                why: format!(
                    "catalog record at offset {offset} does not belong to this set's catalog"
                ),
            });
        }
        let end = HEADER_BYTES + header.payload_bytes as usize;
        if got < end {
            return Err(MediaError::Invalid {
                device: name(dev),
                why: format!(
                    "catalog record at offset {offset} is cut short by the end of the device"
                ),
            });
        }
        let payload = &buf[HEADER_BYTES..end];
        let crc = crate::format::crc32c(payload);
        if crc != header.payload_crc {
            return Err(format_err(
                "catalog payload",
                offset,
                FormatError::Checksum {
                    what: "payload",
                    stored: header.payload_crc,
                    computed: crc,
                },
            ));
        }
        let padded = header.media_bytes() as usize;
        if buf[end..padded.min(got)].iter().any(|&b| b != 0) {
            return Err(MediaError::Invalid {
                device: name(dev),
                why: format!(
                    "catalog record at offset {offset}: damaged padding after the payload"
                ),
            });
        }
        bytes.extend_from_slice(payload);
        offset += header.media_bytes();
    }
    // The End record closes the device's records.
    let buf = pool.slot_mut(0);
    let got = read_at(dev, &mut buf[..HEADER_BYTES], offset)?;
    match RecordHeader::decode(&buf[..got]) {
        Ok(h) if h.kind == RecordKind::End && h.set_id == label.set_id => {}
        Ok(_) => {
            return Err(MediaError::Invalid {
                device: name(dev),
                why: format!("no End record after the catalog (offset {offset})"),
            })
        }
        Err(e) => return Err(format_err("End record", offset, e)),
    }
    Catalog::decode(&bytes).map_err(|e| format_err("catalog", label.catalog_offset, e))
}
