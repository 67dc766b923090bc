//! The media layer: the one place that reads and writes pbio's on-media
//! structures on a device (label, catalog, record streams), used by backup,
//! restore, the overwrite guard and the scanner.
//!
//! - this file: the label and the catalog, written once per device per
//!   set outside the hot path, so plain pread/pwrite from an aligned buffer;
//! - `stream`: a device's records in media order (restore, verify, scan);
//! - `scan`: the record scanner (`pbio scan`, `restore --scan`'s set);
//! - `guard`: what is on a device before backup writes to it.
//!
//! On a sequential device (tape) the same structures are tape blocks: the
//! label is block 0 of tape file 0 (written once, never rewritten), the
//! catalog is tape file 1, closed by an End record and a filemark
//! (docs/FORMAT.md, "Tape layout"). Positions there are logical object
//! numbers: blocks and filemarks counted from the beginning of the tape.

pub mod guard;
pub mod scan;
pub mod stream;

use crate::device::{self, Access, Device, TapeOp};
use crate::format::{
    round_up_block, Catalog, FormatError, Label, RecordHeader, RecordKind, SetId, BLOCK_BYTES,
    HEADER_BYTES,
};
use crate::io::buffers::BufferPool;

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
                return Err(MediaError::Io {
                    device: name(dev),
                    op: "write",
                    offset: offset + done as u64,
                    error: std::io::Error::from_raw_os_error(libc::ENOSPC),
                })
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(MediaError::Io {
                    device: name(dev),
                    op: "write",
                    offset: offset + done as u64,
                    error: e,
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
        match dev.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(MediaError::Io {
                    device: name(dev),
                    op: "read",
                    offset: offset + done as u64,
                    error: e,
                })
            }
        }
    }
    Ok(done)
}

/// Write the label at offset 0. On a tape: rewind and write it as block 0,
/// which ends everything recorded on the tape before.
pub fn write_label(dev: &dyn Device, label: &Label) -> Result<(), MediaError> {
    let mut pool = BufferPool::new(1, BLOCK_BYTES);
    let buf = pool.slot_mut(0);
    label.encode_into(buf);
    if dev.access() == Access::Sequential {
        tape_op(dev, TapeOp::Rewind, 0)?;
        return write_tape_block(dev, buf, 0);
    }
    write_all_at(dev, buf, 0)
}

pub fn read_label(dev: &dyn Device) -> Result<Label, MediaError> {
    let mut pool = BufferPool::new(1, BLOCK_BYTES);
    let buf = pool.slot_mut(0);
    let got = if dev.access() == Access::Sequential {
        tape_op(dev, TapeOp::Rewind, 0)?;
        read_tape_block(dev, buf, 0)?
    } else {
        read_at(dev, buf, 0)?
    };
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
        let header = catalog_record_header(
            kind,
            (set_id, device_index, sequence),
            file_offset,
            payload,
            catalog.len(),
        );
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

/// The header of a Catalog record (a slice of the encoded catalog at
/// `file_offset`) or of the End record (empty payload).
fn catalog_record_header(
    kind: RecordKind,
    (set_id, device_index, sequence): (SetId, u32, u64),
    file_offset: u64,
    payload: &[u8],
    catalog_bytes: usize,
) -> RecordHeader {
    RecordHeader {
        kind,
        set_id,
        device_index,
        sequence,
        file_id: 0,
        segment_id: 0,
        file_offset,
        payload_bytes: payload.len() as u32,
        file_size: if kind == RecordKind::Catalog {
            catalog_bytes as u64
        } else {
            0
        },
        payload_crc: crate::format::crc32c(payload),
    }
}

/// Media bytes the catalog and End record take.
pub fn catalog_media_bytes(catalog_bytes: u64, chunk_bytes: u32) -> u64 {
    let records = catalog_bytes.div_ceil(chunk_bytes as u64);
    records * HEADER_BYTES as u64 + round_up_block(catalog_bytes) + HEADER_BYTES as u64
}

/// A catalog read from a device, and the BLAKE3 of its encoding as read
/// (what a Complete label's `catalog_digest` must equal).
#[derive(Debug)]
pub struct CatalogRead {
    pub catalog: Catalog,
    pub digest: [u8; 32],
}

fn decoded(bytes: &[u8]) -> Result<CatalogRead, FormatError> {
    Ok(CatalogRead {
        catalog: Catalog::decode(bytes)?,
        digest: *blake3::hash(bytes).as_bytes(),
    })
}

/// Read and decode the catalog a Complete label points to. On a tape,
/// the catalog is tape file 1, found by spacing over the data file.
pub fn read_catalog(dev: &dyn Device, label: &Label) -> Result<CatalogRead, MediaError> {
    if dev.access() == Access::Sequential {
        return read_tape_catalog(dev, label);
    }
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
    decoded(&bytes).map_err(|e| format_err("catalog", label.catalog_offset, e))
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

fn tape_op(dev: &dyn Device, op: TapeOp, position: u64) -> Result<(), MediaError> {
    dev.tape_op(op).map_err(|error| MediaError::Io {
        device: name(dev),
        op: match op {
            TapeOp::Rewind => "rewind (MTREW)",
            TapeOp::ForwardFiles(_) => "space forward over filemarks (MTFSF)",
            TapeOp::BackFiles(_) => "space back over filemarks (MTBSF)",
            TapeOp::ForwardBlocks(_) => "space forward over blocks (MTFSR)",
            TapeOp::EndOfData => "space to end of data (MTEOM)",
            TapeOp::WriteFilemarks(_) => "write filemark (MTWEOF)",
        },
        offset: position,
        error,
    })
}

/// Write one tape block. In the early-warning zone st alternates: a write
/// succeeds, the next fails with ENOSPC having written nothing, the one
/// after succeeds (IO-NOTES.md). So ENOSPC is tried once more; two in a
/// row mean the physical end of the medium.
fn write_tape_block(dev: &dyn Device, buf: &[u8], position: u64) -> Result<(), MediaError> {
    let io_err = |error| MediaError::Io {
        device: name(dev),
        op: "write tape block",
        offset: position,
        error,
    };
    let mut enospc = 0;
    loop {
        match device::write_block(dev, buf) {
            Ok(n) if n == buf.len() => return Ok(()),
            Ok(n) => {
                return Err(io_err(std::io::Error::other(format!(
                    "short block: {n} of {} bytes written (end of medium)",
                    buf.len()
                ))))
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && enospc == 0 => enospc += 1,
            Err(e) => return Err(io_err(e)),
        }
    }
}

/// Read one tape block; 0 is a filemark.
fn read_tape_block(dev: &dyn Device, buf: &mut [u8], position: u64) -> Result<usize, MediaError> {
    loop {
        match device::read_block(dev, buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(error) => {
                return Err(MediaError::Io {
                    device: name(dev),
                    op: "read tape block",
                    offset: position,
                    error,
                })
            }
        }
    }
}

/// Close the data file of a tape and write the catalog as tape file 1:
/// a filemark at `data_end` (the object after the last data record), the
/// catalog records (slices of at most `payload_bytes_max`), the End
/// record, a filemark. The filemarks are written without the immediate
/// bit, so the drive has everything on the medium when this returns.
/// Returns the object number just past the closing filemark.
pub fn write_tape_catalog(
    dev: &dyn Device,
    set_id: SetId,
    device_index: u32,
    mut sequence: u64,
    data_end: u64,
    catalog: &[u8],
    payload_bytes_max: u32,
) -> Result<u64, MediaError> {
    assert_eq!(dev.access(), Access::Sequential);
    let mut pool = BufferPool::new(1, HEADER_BYTES + payload_bytes_max as usize);
    let mut position = data_end;
    tape_op(dev, TapeOp::WriteFilemarks(1), position)?;
    position += 1;
    let mut emit = |kind: RecordKind, payload: &[u8], file_offset: u64, position: u64| {
        let buf = pool.slot_mut(0);
        let total = encode_record(
            buf,
            catalog_record_header(
                kind,
                (set_id, device_index, sequence),
                file_offset,
                payload,
                catalog.len(),
            ),
            payload,
        );
        sequence += 1;
        write_tape_block(dev, &buf[..total], position)
    };
    let mut written = 0usize;
    while written < catalog.len() {
        let n = (catalog.len() - written).min(payload_bytes_max as usize);
        emit(
            RecordKind::Catalog,
            &catalog[written..written + n],
            written as u64,
            position,
        )?;
        position += 1;
        written += n;
    }
    emit(RecordKind::End, &[], 0, position)?;
    position += 1;
    tape_op(dev, TapeOp::WriteFilemarks(1), position)?;
    Ok(position + 1)
}

/// A record image in `buf`: header block, payload, zero padding to a
/// block. Returns its length in bytes.
fn encode_record(buf: &mut [u8], header: RecordHeader, payload: &[u8]) -> usize {
    let padded = round_up_block(payload.len() as u64) as usize;
    let (head, body) = buf.split_at_mut(HEADER_BYTES);
    body[..payload.len()].copy_from_slice(payload);
    body[payload.len()..padded].fill(0);
    header.encode_into(head);
    HEADER_BYTES + padded
}

/// The catalog of a tape: space over tape file 0 (label and data) with
/// MTFSF, then read catalog records up to the End record, which must be
/// followed by a filemark. That End record and filemark are what makes a
/// tape complete: its label cannot be rewritten.
fn read_tape_catalog(dev: &dyn Device, label: &Label) -> Result<CatalogRead, MediaError> {
    let chunk = label.chunk_bytes as usize;
    let mut pool = BufferPool::new(1, HEADER_BYTES + chunk);
    let invalid = |why: String| MediaError::Invalid {
        device: name(dev),
        why,
    };
    let format_err = |what, position, error| MediaError::Format {
        device: name(dev),
        what,
        offset: position,
        error,
    };
    tape_op(dev, TapeOp::Rewind, 0)?;
    tape_op(dev, TapeOp::ForwardFiles(1), 0)?;
    // The object number of the first catalog block is only known from the
    // catalog itself (data_end + 1); block numbers within file 1 are used
    // in messages until then.
    let mut block = 0u64;
    let mut bytes: Vec<u8> = Vec::new();
    let mut catalog_bytes: Option<u64> = None;
    loop {
        let buf = pool.slot_mut(0);
        let got = read_tape_block(dev, buf, block)?;
        if got == 0 {
            return Err(invalid(format!(
                "tape file 1 ends at its block {block} without an End record: the catalog is incomplete (interrupted run?): use `pbio scan`"
            )));
        }
        let header = RecordHeader::decode(&buf[..got])
            .map_err(|e| format_err("catalog record header (tape file 1)", block, e))?;
        if header.set_id != label.set_id {
            return Err(invalid(format!(
                "tape file 1 block {block} belongs to another set"
            )));
        }
        if header.kind == RecordKind::End {
            break;
        }
        let expected_size = *catalog_bytes.get_or_insert(header.file_size);
        if header.kind != RecordKind::Catalog
            || header.file_offset != bytes.len() as u64
            || header.file_size != expected_size
            || got != header.media_bytes() as usize
        {
            return Err(invalid(format!(
                "tape file 1 block {block} is not the next record of this set's catalog"
            )));
        }
        let end = HEADER_BYTES + header.payload_bytes as usize;
        let payload = &buf[HEADER_BYTES..end];
        let crc = crate::format::crc32c(payload);
        if crc != header.payload_crc {
            return Err(format_err(
                "catalog payload (tape file 1)",
                block,
                FormatError::Checksum {
                    what: "payload",
                    stored: header.payload_crc,
                    computed: crc,
                },
            ));
        }
        if buf[end..got].iter().any(|&b| b != 0) {
            return Err(invalid(format!(
                "tape file 1 block {block}: damaged padding after the catalog slice"
            )));
        }
        bytes.extend_from_slice(payload);
        block += 1;
    }
    if catalog_bytes != Some(bytes.len() as u64) {
        return Err(invalid(format!(
            "tape file 1: End record after {} of {} catalog bytes",
            bytes.len(),
            catalog_bytes.unwrap_or(0)
        )));
    }
    let buf = pool.slot_mut(0);
    if read_tape_block(dev, buf, block + 1)? != 0 {
        return Err(invalid(
            "tape file 1: no filemark after the End record".to_string(),
        ));
    }
    decoded(&bytes).map_err(|e| format_err("catalog (tape file 1)", 0, e))
}
